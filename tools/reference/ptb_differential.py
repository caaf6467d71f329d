#!/usr/bin/env python3
"""Differential test of oscar-eval's native PTB tokenizer against the Stanford CoreNLP 3.4.1 jar,
run exactly as pycocoevalcap 1.2's PTBTokenizer runs it.

Regenerate the figures (from the repository root; Java and the pycocoevalcap venv needed):
    .venv-ref/bin/python tools/reference/ptb_differential.py --n 100000 --out target/ptb_differential/results.json
and the CI fixture (crates/oscar-eval/tests/fixtures/ptb_differential.json):
    .venv-ref/bin/python tools/reference/ptb_differential.py --n 100000 --out target/ptb_differential/results.json \\
        --fixture crates/oscar-eval/tests/fixtures/ptb_differential.json

How the jar is run: the captions (each caption's '\\n' replaced by ' ') joined by '\\n' into a file,
`java -Dfile.encoding=UTF-8 -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer
-preserveLines -lowerCase FILE`, stdout decoded as UTF-8 and split on '\\n', each line rstrip()ed,
split(' ') and filtered by PUNCTUATIONS: pycocoevalcap's invocation, with the JVM pinned to UTF-8
(pycocoevalcap itself does not pin it; its result then depends on the locale's default encoding;
the tokenizer reads and writes UTF-8 by default either way). `--check-pycocoevalcap` also calls
pycocoevalcap's own PTBTokenizer.tokenize on the same batch and checks it returns the same strings.

Batches: captions without line-breaking characters form one batch (one pycocoevalcap call).
Captions with them (\\r, U+2028, U+2029, VT, FF, NEL) would make the jar print extra lines and
misalign pycocoevalcap's zip, so they form a second batch in which each is followed by a
sentinel caption; the jar's lines between sentinels are that caption's lines (joined by ' ').
The native tokenizer gets exactly the same batches (sentinels included), through
`cargo run -p oscar-eval --example ptb_tokenize`.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptb_gen_captions  # noqa: E402

PUNCTUATIONS = ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
BREAKS = "\r\u2028\u2029\x0b\x0c\x85"
SENTINEL = "zqxsentinel"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_jar():
    try:
        import pycocoevalcap.tokenizer.ptbtokenizer as m
        return os.path.join(os.path.dirname(m.__file__), "stanford-corenlp-3.4.1.jar")
    except ImportError:
        return os.environ.get("OSCAR_PTB_JAR", "")


def jar_lines(jar, captions):
    """The jar's raw output lines for one pycocoevalcap batch."""
    sentences = "\n".join(c.replace("\n", " ") for c in captions)
    with tempfile.NamedTemporaryFile(delete=False, suffix=".txt") as f:
        f.write(sentences.encode())
        name = f.name
    try:
        cmd = ["java", "-Dfile.encoding=UTF-8", "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", name]
        out = subprocess.run(cmd, cwd=os.path.dirname(jar), stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    finally:
        os.remove(name)
    return out.stdout.decode().split("\n")


def post(line):
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def jar_batch(jar, captions):
    lines = jar_lines(jar, captions)
    if len(lines) != len(captions):
        raise SystemExit(f"jar printed {len(lines)} lines for {len(captions)} captions: a line break slipped into the plain batch")
    return [post(l) for l in lines]


def with_sentinels(captions):
    out = []
    for c in captions:
        out += [c, SENTINEL]
    return out


def jar_sentinel_batch(jar, captions):
    """Each caption's lines, found between sentinel lines."""
    lines = jar_lines(jar, with_sentinels(captions))
    res, cur = [], []
    for l in lines:
        if l.rstrip() == SENTINEL:
            res.append(" ".join(p for p in (post(x) for x in cur) if p))
            cur = []
        else:
            cur.append(l)
    if len(res) != len(captions):
        raise SystemExit(f"sentinel batch: found {len(res)} sentinels for {len(captions)} captions")
    return res


def native(batches):
    """Runs the Rust tokenizer (example binary) on the batches; returns (outputs, seconds)."""
    d = tempfile.mkdtemp()
    inp, outp = os.path.join(d, "in.json"), os.path.join(d, "out.json")
    with open(inp, "w", encoding="utf-8") as f:
        json.dump({"batches": batches}, f, ensure_ascii=False)
    subprocess.run(["cargo", "run", "--quiet", "-p", "oscar-eval", "--example", "ptb_tokenize", "--", inp, outp], cwd=ROOT, check=True)
    with open(outp, encoding="utf-8") as f:
        v = json.load(f)
    return v["batches"], v["seconds"]


def split_batches(caps):
    plain = [c for c in caps if not any(b in c["text"] for b in BREAKS)]
    broken = [c for c in caps if any(b in c["text"] for b in BREAKS)]
    return plain, broken


def run(jar, caps, check_pycoco):
    plain, broken = split_batches(caps)
    t0 = time.time()
    want_plain = jar_batch(jar, [c["text"] for c in plain])
    want_broken = jar_sentinel_batch(jar, [c["text"] for c in broken]) if broken else []
    jar_secs = time.time() - t0
    if check_pycoco:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
        res = PTBTokenizer().tokenize({i: [{"caption": c["text"]}] for i, c in enumerate(plain)})
        same = sum(res[i][0] == want_plain[i] for i in range(len(plain)))
        if same != len(plain):
            raise SystemExit(f"pycocoevalcap's own PTBTokenizer differs from the replicated invocation on {len(plain) - same} captions")
    (got_plain, got_broken_s), native_secs = native([[c["text"] for c in plain], with_sentinels([c["text"] for c in broken])])
    got_broken = got_broken_s[0::2]
    rows = []
    for c, w, g in zip(plain + broken, want_plain + want_broken, got_plain + got_broken):
        rows.append({"category": c["category"], "text": c["text"], "jar": w, "native": g})
    for i, r in enumerate(rows):
        r["batch"] = "plain" if i < len(plain) else "line_breaks"
    return rows, jar_secs, native_secs


def command_line():
    """The command that is running, as typed from the repository root."""
    py = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else "python3"
    return " ".join([py, os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--jar", default=default_jar())
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--check-pycocoevalcap", action="store_true", help="also run pycocoevalcap's own PTBTokenizer and compare")
    ap.add_argument("--fixture", help="write the CI fixture here")
    ap.add_argument("--per-category", type=int, default=180, help="fixture: stratified sample per category")
    a = ap.parse_args()
    caps = ptb_gen_captions.generate(a.n, a.seed)
    rows, jar_secs, native_secs = run(a.jar, caps, a.check_pycocoevalcap)
    diffs = [r for r in rows if r["jar"] != r["native"]]
    by_cat = collections.Counter(r["category"] for r in rows)
    diff_cat = collections.Counter(r["category"] for r in diffs)
    samples = collections.defaultdict(list)
    for r in diffs:
        if len(samples[r["category"]]) < 10:
            samples[r["category"]].append({"text": r["text"], "jar": r["jar"], "native": r["native"]})
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    # Every caption that ever differed is remembered (next to the results) for the fixture.
    seen_path = os.path.join(os.path.dirname(os.path.abspath(a.out)), "ever_differed.json")
    seen = json.load(open(seen_path, encoding="utf-8")) if os.path.exists(seen_path) else []
    known = {s["text"] for s in seen}
    seen += [{"category": r["category"], "text": r["text"]} for r in diffs if r["text"] not in known]
    json.dump(seen, open(seen_path, "w", encoding="utf-8"), ensure_ascii=False)
    result = {
        "command": command_line(),
        "jar": os.path.basename(a.jar), "jvm_encoding": "-Dfile.encoding=UTF-8", "seed": a.seed,
        "captions": len(rows), "differences": len(diffs), "jar_seconds": round(jar_secs, 3), "native_seconds": round(native_secs, 3),
        "per_category": {k: {"captions": by_cat[k], "differences": diff_cat.get(k, 0)} for k in sorted(by_cat)},
        "ever_differed": len(seen), "samples": samples,
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
    print(f"captions {len(rows)}  differences {len(diffs)}  jar {jar_secs:.1f} s  native {native_secs:.3f} s")
    for k in sorted(diff_cat, key=lambda k: -diff_cat[k]):
        print(f"  {k}: {diff_cat[k]} of {by_cat[k]}")
        for s in samples[k][:4]:
            print(f"     {s['text']!r}\n       jar:    {s['jar']!r}\n       native: {s['native']!r}")
    if a.fixture:
        write_fixture(a, caps, seen)


def write_fixture(a, caps, seen):
    """The hardest lines: every caption that ever differed plus a stratified sample per category,
    tokenized by the jar as fresh batches (the fixture's own order is the context)."""
    import random
    r = random.Random(a.seed + 1)
    bycat = collections.defaultdict(list)
    for c in caps:
        bycat[c["category"]].append(c)
    chosen, texts = [], set()
    for s in seen:
        if s["text"] not in texts:
            chosen.append(s)
            texts.add(s["text"])
    for k in sorted(bycat):
        for c in r.sample(bycat[k], min(a.per_category, len(bycat[k]))):
            if c["text"] not in texts:
                chosen.append(c)
                texts.add(c["text"])
    plain, broken = split_batches(chosen)
    fixture = {
        "generator": command_line(),
        "jar": os.path.basename(a.jar),
        "note": "batch `plain` is one pycocoevalcap call; batch `line_breaks` interleaves each caption with the sentinel caption "
                f"{SENTINEL!r}, and `tokens` holds the jar's lines between sentinels joined by ' '",
        "sentinel": SENTINEL,
        "plain": {"captions": [c["text"] for c in plain], "categories": [c["category"] for c in plain],
                  "tokens": jar_batch(a.jar, [c["text"] for c in plain])},
        "line_breaks": {"captions": [c["text"] for c in broken], "categories": [c["category"] for c in broken],
                        "tokens": jar_sentinel_batch(a.jar, [c["text"] for c in broken])},
    }
    with open(a.fixture, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=0)
    print("wrote", a.fixture, len(plain), "+", len(broken), "captions")


if __name__ == "__main__":
    main()
