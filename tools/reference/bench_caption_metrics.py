#!/usr/bin/env python3
"""Side-by-side speed of caption evaluation: pycocoevalcap 1.2 against `oscar eval caption`,
on the same 5,000 images x 5 references, one run of each on the same machine.
Measured: PTB tokenization + BLEU-1..4 + ROUGE-L + CIDEr (pycocoevalcap's CIDEr is CIDEr-D with
the evaluated set's document frequencies); METEOR is excluded (both sides would run the same jar).

Usage (from the repository root, after `cargo build --release -p oscar-cli`):
    .venv-ref/bin/python tools/reference/bench_caption_metrics.py target/release/oscar [IMAGES]
Prints a JSON line with the timings and the ratio.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

R = random.Random(5)
SUBJ = ["a man", "a woman", "two dogs", "a cat", "the boy", "a little girl", "several people", "an elephant", "three zebras",
        "a brown horse", "the red bus", "a giraffe", "a surfer", "a skateboarder", "a baseball player", "a teddy bear"]
VERB = ["riding", "sitting on", "standing next to", "holding", "eating", "playing with", "walking across", "looking at", "lying on"]
OBJ = ["a wave", "a surfboard", "the beach", "a bench", "a pizza", "a frisbee", "the street", "a kite", "a bed", "the grass"]
PLACE = ["in a park", "on a sunny day", "near the water", "in the kitchen", "at night", "in a field", "", ""]


def sent():
    s = " ".join(x for x in [R.choice(SUBJ), R.choice(VERB), R.choice(OBJ), R.choice(PLACE)] if x)
    return (s[0].upper() + s[1:] if R.random() < 0.5 else s) + R.choice([".", "", " ."])


def main():
    oscar = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    refs = {str(i): [sent() for _ in range(5)] for i in range(n)}
    preds = {k: (v[0] if R.random() < 0.3 else sent()) for k, v in refs.items()}
    d = tempfile.mkdtemp()
    rp, pp = os.path.join(d, "refs.json"), os.path.join(d, "preds.json")
    json.dump({"annotations": [{"image_id": k, "caption": c} for k, v in refs.items() for c in v]}, open(rp, "w"))
    json.dump([{"image_id": k, "caption": v} for k, v in preds.items()], open(pp, "w"))

    def python_side():
        t0 = time.perf_counter()
        tok = PTBTokenizer()
        gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
        res = tok.tokenize({k: [{"caption": v}] for k, v in preds.items()})
        t1 = time.perf_counter()
        scores = {}
        for name, sc in [("bleu", Bleu(4)), ("rouge_l", Rouge()), ("cider", Cider())]:
            scores[name], _ = sc.compute_score(gts, res, verbose=0) if name == "bleu" else sc.compute_score(gts, res)
        return t1 - t0, time.perf_counter() - t1, scores

    def oscar_side():
        t = time.perf_counter()
        subprocess.run([oscar, "eval", "caption", "--refs", rp, "--preds", pp, "--no-meteor", "--json", os.path.join(d, "o.json")],
                       check=True, capture_output=True, text=True)
        return time.perf_counter() - t

    oscar_side()  # warm the page cache for the binary
    runs = 3
    py_runs = [python_side() for _ in range(runs)]
    py = py_runs[-1][2]
    med = lambda xs: sorted(xs)[len(xs) // 2]
    py_tok, py_met = med([r[0] for r in py_runs]), med([r[1] for r in py_runs])
    ours_s = med([oscar_side() for _ in range(runs)])
    ours = json.load(open(os.path.join(d, "o.json")))
    agree = all(abs(a - b) < 1e-9 for a, b in zip(ours["bleu"], py["bleu"])) and abs(ours["rouge_l"] - py["rouge_l"]) < 1e-9 \
        and abs(ours["cider"] - py["cider"]) < 1e-9
    print(json.dumps({
        "images": n, "references_per_image": 5, "runs": runs, "statistic": "median",
        "pycocoevalcap_tokenize_s": round(py_tok, 3), "pycocoevalcap_metrics_s": round(py_met, 3),
        "pycocoevalcap_total_s": round(py_tok + py_met, 3), "oscar_total_s": round(ours_s, 3),
        "speedup_total": round((py_tok + py_met) / ours_s, 1), "scores_agree_1e-9": bool(agree),
    }))


if __name__ == "__main__":
    main()
