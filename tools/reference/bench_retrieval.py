#!/usr/bin/env python3
"""Retrieval pair scoring (inference: BertImgModel + 2-way linear head + softmax) in oscar-rs
(`oscar bench --workload retrieval-score`), PyTorch (eager attention, as the reference's BERT)
and ONNX Runtime (the same PyTorch model exported to ONNX), same shapes, one run of this script.

Two ways of padding the same pairs: fixed (text padded to 70, as run_retrieval.py does) and
dynamic (the batch padded to its longest text; the lengths come from oscar-rs's run so both sides
see the same items). Regions: 50 per pair. Weights are random on each side (timing only).

Usage (repository root, after `cargo build --release -p oscar-cli`):
    python tools/reference/bench_retrieval.py target/release/oscar [base|tiny] [runs] [batch]
Needs torch, transformers, onnx and onnxruntime. Prints one JSON line per side and the ratios.
"""
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("mg", os.path.join(HERE, "make_model_goldens.py"))
mg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mg)


class Scorer(torch.nn.Module):
    """What `oscar eval retrieval` computes per pair: softmax over the matching head's logits."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ids, types, mask, feats):
        _, pooled = self.m.bert(ids, types, mask, feats)
        return torch.softmax(self.m.classifier(pooled), -1)


def timed(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], times[0]


def inputs(lengths, t, r, f, vocab, gen):
    b = len(lengths)
    ids = torch.zeros(b, t, dtype=torch.long)
    mask = torch.zeros(b, t + r)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, vocab, (n,), generator=gen)
        mask[i, :n] = 1
        mask[i, t:] = 1
    feats = torch.rand(b, r, f, generator=gen)
    return ids, torch.zeros(b, t, dtype=torch.long), mask, feats


def main():
    oscar = sys.argv[1]
    size = sys.argv[2] if len(sys.argv) > 2 else "tiny"
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    torch.set_num_threads(2)
    torch.manual_seed(0)
    out = subprocess.run([oscar, "bench", "--workload", "retrieval-score", "--size", size, "--runs", str(runs), "--batch", str(batch), "--text", "45"],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out.strip().splitlines()[-1])
    ours["side"] = "oscar-rs"
    print(json.dumps(ours))
    lengths, r = ours["dynamic_text_lengths"], ours["regions"]
    cfg, ocfg = mg.bench_configs(size, num_labels=2)
    model = Scorer(mg.SeqClassification(cfg, ocfg)).eval()
    gen = torch.Generator().manual_seed(0)
    f = ocfg["img_feature_dim"]
    fixed = inputs(lengths, ours["fixed_text"], r, f, cfg.vocab_size, gen)
    dynamic = inputs(lengths, ours["dynamic_padded_to"], r, f, cfg.vocab_size, gen)
    b = len(lengths)

    with torch.inference_mode():
        pt_fixed = timed(lambda: model(*fixed), runs)
        pt_dyn = timed(lambda: model(*dynamic), runs)
    pt = {"side": "pytorch", "torch": torch.__version__, "fixed_median_s": pt_fixed[0], "fixed_min_s": pt_fixed[1],
          "dynamic_median_s": pt_dyn[0], "dynamic_min_s": pt_dyn[1], "fixed_pairs_per_s": b / pt_fixed[0],
          "dynamic_pairs_per_s": b / pt_dyn[0], "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(pt))

    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "scorer.onnx")
        torch.onnx.export(model, fixed, path, input_names=["ids", "types", "mask", "feats"], output_names=["p"],
                          dynamic_axes={"ids": {0: "b", 1: "t"}, "types": {0: "b", 1: "t"}, "mask": {0: "b", 1: "l"}, "feats": {0: "b"}},
                          opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = lambda x: {k: v.numpy() for k, v in zip(["ids", "types", "mask", "feats"], x)}
        ff, fd = feed(fixed), feed(dynamic)
        with torch.inference_mode():
            want = model(*fixed).numpy()
        got = sess.run(None, ff)[0]
        ort_fixed = timed(lambda: sess.run(None, ff), runs)
        ort_dyn = timed(lambda: sess.run(None, fd), runs)
    ox = {"side": "onnxruntime", "onnxruntime": ort.__version__, "max_abs_diff_vs_pytorch": float(abs(want - got).max()),
          "fixed_median_s": ort_fixed[0], "fixed_min_s": ort_fixed[1], "dynamic_median_s": ort_dyn[0], "dynamic_min_s": ort_dyn[1],
          "fixed_pairs_per_s": b / ort_fixed[0], "dynamic_pairs_per_s": b / ort_dyn[0]}
    print(json.dumps(ox))
    print(json.dumps({
        "size": size, "batch": b,
        "fixed_vs_pytorch": pt["fixed_median_s"] / ours["fixed_median_s"],
        "fixed_vs_onnxruntime": ox["fixed_median_s"] / ours["fixed_median_s"],
        "dynamic_vs_pytorch_dynamic": pt["dynamic_median_s"] / ours["dynamic_median_s"],
        "dynamic_vs_onnxruntime_dynamic": ox["dynamic_median_s"] / ours["dynamic_median_s"],
        "ours_dynamic_vs_reference_fixed_pytorch": pt["fixed_median_s"] / ours["dynamic_median_s"],
    }))


if __name__ == "__main__":
    main()
