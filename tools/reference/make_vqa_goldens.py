#!/usr/bin/env python3
"""VQA accuracy goldens written by the official evaluation code itself.

The official `vqaEval.py` (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/) is read from a
snapshot of that repository whose path this script takes — a checkout or a bare git directory —
in two versions: master (rules since commit a013f00, "Fixed processing answers bug", March 2021)
and the file just before that commit. It is Python 2 code; it runs here under Python 3 with only
these in-memory changes, none of which touches a rule:
  * `print "..."` statements become `print("...")` calls;
  * its two regular expressions are recompiled with re.ASCII, because under Python 2 (str
    patterns without re.UNICODE) `\\d` matches ASCII digits only;
  * its progress bar goes to stderr.
`VQAEval` is driven as `vqaEvalDemo.py` drives it, with objects that hold what the official
`VQA.loadRes` builds (`qa`: question id -> annotation / result, `getQuesIds()`).

The questions are generated (seeded): answers as people type them — case, trailing `.`/`!`/`?`,
`yes!`, `the yes`, number words, `3 oclock` / `3 o'clock`, `dont` / `don't` / `don’t`, commas in
numbers, decimals, hyphens, slashes, brackets, quotes, tabs, newlines, doubled spaces,
non-breaking spaces, accents, emoji, non-Latin scripts, more than 32 periods — in the mixes real
annotations have: all ten identical, a majority with variants, two camps, scattered. A few
questions carry answer dicts without `answer_id` (equal dicts are then left out together).

Regenerate (from the repository root; GT-Vision-Lab/VQA fetched with the search tool's `fetch`):
    python3 tools/reference/make_vqa_goldens.py --vqa-repo /work/.mirror/GT-Vision-Lab+VQA/repo \\
        --out crates/oscar-eval/tests/fixtures/vqa
"""
import argparse
import io
import json
import os
import random
import re
import subprocess
import sys

VQA_EVAL_PATH = "PythonEvaluationTools/vqaEvaluation/vqaEval.py"
FIX_COMMIT = "a013f0043c1e2cdc995922dfe257f7149aa9af06"


def read_source(repo, rev):
    """vqaEval.py at `rev` ("HEAD" or a commit) from a git directory, or from a checkout for HEAD."""
    try:
        return subprocess.run(["git", "--git-dir", git_dir(repo), "show", f"{rev}:{VQA_EVAL_PATH}"], check=True,
                              capture_output=True, text=True, encoding="utf-8").stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        if rev == "HEAD" and os.path.exists(os.path.join(repo, VQA_EVAL_PATH)):
            return open(os.path.join(repo, VQA_EVAL_PATH), encoding="utf-8").read()
        sys.exit(f"{repo}: cannot read {VQA_EVAL_PATH} at {rev}: {e}")


def git_dir(repo):
    return os.path.join(repo, ".git") if os.path.isdir(os.path.join(repo, ".git")) else repo


def load_vqa_eval(source, name):
    """Executes the official module under Python 3 with print statements made calls."""
    fixed = re.sub(r'^(\s*)print\s+(?!\()(.*)$', r'\1print(\2)', source, flags=re.M)
    module = {"__name__": name}
    exec(compile(fixed, name, "exec"), module)
    return module["VQAEval"]


class Loaded:
    """What `VQA(...)` and `VQA.loadRes(...)` hold: `qa` by question id, `getQuesIds()`."""

    def __init__(self, items):
        self.qa = {x["question_id"]: x for x in items}

    def getQuesIds(self):
        return list(self.qa)


def run_official(VQAEval, anns, results):
    gts = Loaded(json.loads(json.dumps(anns)))  # the official code mutates answers in place
    res_items = json.loads(json.dumps(results))
    for r in res_items:  # loadRes copies these from the annotations
        a = gts.qa[r["question_id"]]
        r["image_id"], r["question_type"], r["answer_type"] = a["image_id"], a["question_type"], a["answer_type"]
    ev = VQAEval(gts, Loaded(res_items), n=2)
    ev.periodStrip = re.compile(ev.periodStrip.pattern, re.ASCII)
    ev.commaStrip = re.compile(ev.commaStrip.pattern, re.ASCII)
    # Unrounded figures: the per-question accuracies setEvalQA receives, averaged as setAccuracy does.
    per_q = {}
    ev.setEvalQA = lambda qid, acc: per_q.__setitem__(qid, acc)
    captured = {}
    ev.setAccuracy = lambda qa, qt, at: captured.update(qa=qa, qt=qt, at=at)
    stdout, sys.stdout = sys.stdout, io.StringIO()
    try:
        ev.evaluate()
    finally:
        sys.stdout = stdout
    pct = lambda d: {k: 100.0 * float(sum(v)) / len(v) for k, v in d.items()}
    return {
        "overall": 100.0 * float(sum(captured["qa"])) / len(captured["qa"]),
        "per_question_type": pct(captured["qt"]),
        "per_answer_type": pct(captured["at"]),
        "per_question": {str(k): 100.0 * v for k, v in per_q.items()},
    }


BASES = {
    "yes/no": ["yes", "no"],
    "number": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "12", "20", "100", "1000", "3.5", "1:30", "2 oclock"],
    "other": ["red", "white", "black and white", "dog", "cat", "tennis racket", "hot dog", "frisbee", "left", "on table",
              "man's hat", "t-shirt", "skateboarding", "don't know", "nothing", "it's raining", "coca cola", "new york",
              "stop sign", "u.s.", "st. louis", "10:30 am", "50%", "$5", "c++", "a lot", "the man", "an apple",
              "one way", "none", "i don't know", "can't tell", "wouldnt", "youre welcome", "café", "naïve", "東京", "🐶"],
}
NUMBER_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
                "8": "eight", "9": "nine", "10": "ten"}


def variant(rng, a):
    """One way a person might type `a`."""
    r = rng.random()
    if r < 0.30:
        return a
    choices = [
        lambda s: s.capitalize(), lambda s: s.upper(), lambda s: s + ".", lambda s: s + "!", lambda s: s + "?", lambda s: s + ",",
        lambda s: s + "..", lambda s: "the " + s, lambda s: "a " + s, lambda s: " " + s + " ", lambda s: s + "\n", lambda s: "\t" + s,
        lambda s: s.replace(" ", "  "), lambda s: s.replace(" ", "\u00a0"), lambda s: s.replace(" ", "-"), lambda s: s.replace(" ", "/"),
        lambda s: s.replace("'", ""), lambda s: s.replace("'", "\u2019"), lambda s: s.replace("o'clock", "oclock").replace("oclock", "o'clock"),
        lambda s: NUMBER_WORDS.get(s, s), lambda s: NUMBER_WORDS.get(s, s).capitalize(), lambda s: "(" + s + ")", lambda s: '"' + s + '"',
        lambda s: s + " :)", lambda s: s.replace("000", ",000"), lambda s: s + "." * rng.randint(30, 40), lambda s: "yes, " + s,
        lambda s: s + "; " + s, lambda s: s.replace("a", "á"), lambda s: s + " 🙂", lambda s: s + "\u3000", lambda s: "`" + s + "`",
        lambda s: s + "{}", lambda s: s.replace(" ", "_"), lambda s: s + "\x1c", lambda s: "it is " + s, lambda s: s + " <3",
        lambda s: "@" + s, lambda s: s + " = " + s, lambda s: s.replace(".", ""), lambda s: s + ".5", lambda s: s + ". " + s.title(),
    ]
    out = rng.choice(choices)(a)
    if rng.random() < 0.2:
        out = rng.choice(choices)(out)
    return out


def generate(rng, n):
    qtypes = ["what color is the", "how many", "is the", "what is", "where is the", "is there a", "what time", "what is the man doing",
              "are there", "none of the above"]
    anns, results = [], []
    for q in range(n):
        atype = rng.choice(list(BASES))
        base = rng.choice(BASES[atype])
        mode = rng.random()
        if mode < 0.25:  # all ten identical (as typed or a variant)
            answers = [variant(rng, base)] * 10
        elif mode < 0.60:  # a majority with variants
            answers = [base if rng.random() < 0.6 else variant(rng, base) for _ in range(10)]
        elif mode < 0.85:  # two camps
            other = rng.choice(BASES[rng.choice(list(BASES))])
            k = rng.randint(1, 9)
            answers = [variant(rng, base) if rng.random() < 0.3 else base for _ in range(k)] + [other] * (10 - k)
            rng.shuffle(answers)
        else:  # scattered
            answers = [variant(rng, rng.choice(BASES[atype])) for _ in range(10)]
        if rng.random() < 0.03:  # dicts without answer_id: equal ones are left out together
            dicts = [{"answer": a} for a in answers]
        else:
            dicts = [{"answer": a, "answer_confidence": rng.choice(["yes", "maybe", "no"]), "answer_id": i + 1} for i, a in enumerate(answers)]
        anns.append({"question_id": 5000 + q, "image_id": 100 + q // 3, "question_type": rng.choice(qtypes), "answer_type": atype,
                     "answers": dicts, "multiple_choice_answer": answers[0]})
        r = rng.random()
        if r < 0.45:
            pred = rng.choice(answers)
        elif r < 0.8:
            pred = variant(rng, base)
        else:
            pred = variant(rng, rng.choice(BASES[rng.choice(list(BASES))]))
        results.append({"question_id": 5000 + q, "answer": pred})
    return anns, results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vqa-repo", required=True, help="GT-Vision-Lab/VQA: a checkout or a bare git directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--questions", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=2021)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    anns, results = generate(random.Random(a.seed), a.questions)
    command = "python3 tools/reference/make_vqa_goldens.py --vqa-repo GT-Vision-Lab/VQA --out " + a.out + f" --questions {a.questions} --seed {a.seed}"
    json.dump({"annotations": anns, "data_subtype": "generated", "generator": command}, open(os.path.join(a.out, "annotations.json"), "w"),
              ensure_ascii=False)
    json.dump(results, open(os.path.join(a.out, "results.json"), "w"), ensure_ascii=False)
    for rules, rev in [("official", "HEAD"), ("pre-2021", FIX_COMMIT + "~1")]:
        VQAEval = load_vqa_eval(read_source(a.vqa_repo, rev), f"vqaEval_{rules}")
        g = run_official(VQAEval, anns, results)
        g["generator"] = command
        g["source"] = f"GT-Vision-Lab/VQA {VQA_EVAL_PATH} at {rev}"
        json.dump(g, open(os.path.join(a.out, f"goldens_{rules}.json"), "w"), indent=0, sort_keys=True)
        print(f"{rules}: overall {g['overall']:.4f} over {len(anns)} questions")
    old = os.path.join(a.out, "goldens.json")
    if os.path.exists(old):
        os.remove(old)


if __name__ == "__main__":
    main()
