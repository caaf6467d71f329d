#!/usr/bin/env python3
"""Scoring Oscar-B pairs from Python (`oscar_rs`, the PyO3 bindings) against the same call in Rust
(`oscar bench --workload score-pairs`: `oscar::infer::Matching::score`), same model, same pairs,
one run of this script; the scores must agree.

Usage (repository root, with oscar_rs installed in the interpreter that runs this):
    python tools/bench_python.py target/release/oscar [runs] [pairs]
It writes a 48-image world with 2048-d detector features and an Oscar-B-shaped retrieval model
(1 training step from scratch: timing only) into a temporary directory. Prints one JSON line.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import oscar_rs


def run(oscar, *args):
    r = subprocess.run([oscar, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"oscar {' '.join(args)}: {r.stderr}")
    return r.stdout


def main():
    oscar = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    with tempfile.TemporaryDirectory() as d:
        w = os.path.join(d, "world")
        run(oscar, "world", "generate", "--out", w, "--images", "48", "--feature-dim", "2048", "--render", "0")
        small = os.path.join(d, "small")
        run(oscar, "train", "retrieval", "--data", w, "--out", small, "--steps", "1", "--batch-size", "2", "--test-images", "2")
        cfg = json.load(open(os.path.join(small, "config.json")))
        cfg.update(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        base_cfg = os.path.join(d, "base.json")
        json.dump(cfg, open(base_cfg, "w"))
        model = os.path.join(d, "base")
        run(oscar, "train", "retrieval", "--data", w, "--out", model, "--model-config", base_cfg,
            "--steps", "1", "--batch-size", "2", "--test-images", "2")
        feats = os.path.join(w, "features", "features.tsv")

        rust = json.loads(run(oscar, "bench", "--workload", "score-pairs", "--checkpoint", model,
                              "--features", feats, "--batch", str(pairs), "--runs", str(runs)))

        m = oscar_rs.load(model)
        store = oscar_rs.FeatureStore(feats, m.feature_dim)
        keys = sorted(store.keys())[:pairs]
        images = [store[k] for k in keys]
        texts = [f"a photo number {k}" for k in range(pairs)]
        scores = m.score(images, texts)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            scores = m.score(images, texts)
            times.append(time.perf_counter() - t0)
        agree = bool(np.allclose(scores[:4], rust["first_scores"], atol=1e-6))
        py = {"median_s": statistics.median(times), "min_s": min(times)}
        regions = sum(i.features.shape[0] for i in images) / len(images)
        print(json.dumps({
            "pairs": pairs, "runs": runs, "model": "Oscar-B shape (12 layers, hidden 768, 2054-d regions)",
            "mean_regions": regions,
            "rust_library": {"median_s": rust["median_s"], "min_s": rust["min_s"]},
            "python_oscar_rs": py,
            "python_over_rust_median": py["median_s"] / rust["median_s"],
            "scores_agree": agree,
        }))


if __name__ == "__main__":
    main()
