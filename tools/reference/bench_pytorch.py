#!/usr/bin/env python3
"""One pre-training step (forward, MLM + contrastive loss, backward, AdamW) of Oscar in PyTorch
and in oscar-rs (`oscar bench`), same shapes, same machine, one run of this script.

Usage (from the repository root, after `cargo build --release -p oscar-cli`):
    python tools/reference/bench_pytorch.py target/release/oscar [base|tiny] [runs]
Needs torch (PyPI's torch 2.x or Debian's python3-torch) and transformers. Prints JSON lines:
PyTorch's, ours, and the ratio of medians.
"""
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("mg", os.path.join(HERE, "make_model_goldens.py"))
mg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mg)


def training_step(size, b=8, t=35, r=50):
    """The reference's `PreTraining` modules and one step over random inputs (batch `b`, `t` text
    tokens + `r` regions): returns (step, model). Also bench_interleaved.py's training worker."""
    torch.manual_seed(0)
    cfg, oscar_cfg = mg.bench_configs(size, num_contrast_classes=2)
    m = mg.PreTraining(cfg, oscar_cfg)
    m.train()
    f = oscar_cfg["img_feature_dim"]
    ids = torch.randint(1, cfg.vocab_size, (b, t))
    feats = torch.rand(b, r, f)
    mask = torch.ones(b, t + r)
    types = torch.zeros(b, t, dtype=torch.long)
    labels = torch.full((b, t + r), -1, dtype=torch.long)
    sel = torch.rand(b, t) < 0.15
    labels[:, :t][sel] = ids[sel]
    con = torch.arange(b) % 2
    decay = [p for n, p in m.named_parameters() if not ("bias" in n or "LayerNorm.weight" in n)]
    no_decay = [p for n, p in m.named_parameters() if "bias" in n or "LayerNorm.weight" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-5)

    def step():
        opt.zero_grad()
        seq, pooled = m.bert(ids, types, mask, feats)
        loss = F.cross_entropy(m.cls.predictions(seq).view(-1, cfg.vocab_size), labels.view(-1), ignore_index=-1) + \
            F.cross_entropy(m.cls.seq_relationship(pooled), con)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    return step, m


def main():
    oscar = sys.argv[1]
    size = sys.argv[2] if len(sys.argv) > 2 else "tiny"
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(2)
    b = 8
    step, _ = training_step(size, b)
    times = []
    for run in range(runs + 1):
        t0 = time.perf_counter()
        step()
        if run > 0:
            times.append(time.perf_counter() - t0)
    times.sort()
    py = {"side": "pytorch", "torch": torch.__version__, "size": size, "median_s": times[len(times) // 2], "min_s": times[0],
          "items_per_s": b / times[len(times) // 2], "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(py))
    out = subprocess.run([oscar, "bench", "--size", size, "--runs", str(runs)], check=True, capture_output=True, text=True).stdout
    ours = json.loads(out.strip().splitlines()[-1])
    ours["side"] = "oscar-rs"
    print(json.dumps(ours))
    print(json.dumps({"size": size, "oscar_rs_speed_vs_pytorch": py["median_s"] / ours["median_s"],
                      "peak_rss_ratio": ours["peak_rss_mib"] / py["peak_rss_mib"]}))


if __name__ == "__main__":
    main()
