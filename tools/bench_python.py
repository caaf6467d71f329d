#!/usr/bin/env python3
"""Scoring Oscar-B pairs from Python (`oscar_rs`, the PyO3 bindings) against the same call in Rust
(`oscar bench --workload score-pairs`: `oscar::infer::Matching::score`) and against PyTorch +
transformers running the reference's modeling code (tools/reference/make_model_goldens.py:
Oscar's BertImgModel on transformers' BertEncoder, eager attention) with the same weights, inputs
laid out as run_retrieval.py does (text padded to 70, regions to 50); same model, same pairs, one
run of this script; the three sides' scores must agree. The PyTorch side runs when torch and
transformers import (else it says it was skipped).

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
        pt = pytorch_side(model, images, texts, scores, runs)
        regions = sum(i.features.shape[0] for i in images) / len(images)
        print(json.dumps({
            "pairs": pairs, "runs": runs, "model": "Oscar-B shape (12 layers, hidden 768, 2054-d regions)",
            "mean_regions": regions,
            "rust_library": {"median_s": rust["median_s"], "min_s": rust["min_s"]},
            "python_oscar_rs": py,
            "python_over_rust_median": py["median_s"] / rust["median_s"],
            "scores_agree": agree,
            "pytorch_reference": pt,
            "pytorch_over_python_median": pt["median_s"] / py["median_s"] if "median_s" in pt else None,
        }))


def pytorch_side(model_dir, images, texts, want, runs):
    """The reference's modeling code in PyTorch with the model's weights, inputs padded as
    run_retrieval.py pads them (70 text positions, 50 regions)."""
    try:
        import importlib.util
        import torch
        from safetensors.torch import load_file
        from transformers import BertTokenizer
    except ImportError as e:
        return {"skipped": f"no torch/transformers ({e})"}
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")
    spec = importlib.util.spec_from_file_location("mg", os.path.join(here, "make_model_goldens.py"))
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)
    c = json.load(open(os.path.join(model_dir, "config.json")))
    cfg = mg.bert_config(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
                         num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
                         max_position_embeddings=c["max_position_embeddings"], layer_norm_eps=c["layer_norm_eps"])
    ocfg = mg.oscar_config(img_feature_dim=c["img_feature_dim"], use_img_layernorm=int(c["use_img_layernorm"]),
                           img_layer_norm_eps=c["img_layer_norm_eps"], num_labels=2, classifier=c["classifier"])
    m = mg.SeqClassification(cfg, ocfg).eval()
    missing, unexpected = m.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")), strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        return {"skipped": f"the weights do not fit the reference model: missing {missing}, unexpected {unexpected}"}
    torch.set_num_threads(2)
    tok = BertTokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    T, R = 70, 50
    b = len(texts)
    ids = torch.zeros(b, T, dtype=torch.long)
    mask = torch.zeros(b, T + R)
    feats = torch.zeros(b, R, c["img_feature_dim"])
    for i, (im, t) in enumerate(zip(images, texts)):
        x = tok.encode(t, add_special_tokens=True)[:T]
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
        f = torch.from_numpy(np.ascontiguousarray(im.features[:R]))
        feats[i, :len(f)] = f
        mask[i, T:T + len(f)] = 1
    types = torch.zeros(b, T, dtype=torch.long)

    def score():
        _, pooled = m.bert(ids, types, mask, feats)
        return torch.softmax(m.classifier(pooled), -1)[:, 1]

    with torch.inference_mode():
        got = score().numpy()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            score()
            times.append(time.perf_counter() - t0)
    return {"torch": torch.__version__, "median_s": statistics.median(times), "min_s": min(times),
            "max_abs_diff_vs_oscar_rs": float(np.abs(got - want).max())}


if __name__ == "__main__":
    main()
