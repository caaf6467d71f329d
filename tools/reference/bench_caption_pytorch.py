#!/usr/bin/env python3
"""Beam-5 caption generation (max 20 tokens, 50 regions, 10 tag tokens) the reference's way in
PyTorch — every step re-encodes `[CLS] w1 … wt [MASK]` + tags + regions under the seq2seq mask,
as Oscar's `_generate_beam_search` without its history cache — beside `oscar bench --workload
caption-beam` (oscar-rs with its key/value cache, and oscar-rs re-encoding), same shapes, same
machine, one run of this script.

Usage (from the repository root, after `cargo build --release -p oscar-cli`):
    python tools/reference/bench_caption_pytorch.py target/release/oscar [base|tiny] [images] [runs]
Prints JSON lines: PyTorch's time, ours, and the ratios. Weights are random on both sides (the
same shapes; every run decodes all 19 steps because random weights practically never emit [SEP]).
"""
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("mg", os.path.join(HERE, "make_model_goldens.py"))
mg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mg)

CLS, SEP, MASK = 101, 102, 103  # bert-base-uncased; the tiny vocabulary uses 2, 3, 4


@torch.no_grad()
def reencode_beam(m, vocab, tags, feats, nb=5, max_len=20, tag_start=40):
    b, lt = tags.shape
    r = feats.shape[1]
    rows = b * nb
    tags = tags.repeat_interleave(nb, 0)
    feats = feats.repeat_interleave(nb, 0)
    seqs = torch.full((rows, 1), CLS, dtype=torch.long)
    beam_scores = torch.zeros(b, nb)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    for _ in range(1, max_len):
        t = seqs.shape[1]
        ids = torch.cat([seqs, torch.full((rows, 1), MASK, dtype=torch.long), tags], 1)
        pos = torch.cat([torch.arange(t + 1), tag_start + torch.arange(lt)]).expand(rows, -1)
        types = torch.cat([torch.zeros(t + 1, dtype=torch.long), torch.ones(lt, dtype=torch.long)]).expand(rows, -1)
        n = t + 1 + lt + r
        mask = torch.zeros(n, n)
        mask[: t + 1, : t + 1] = torch.tril(torch.ones(t + 1, t + 1))
        mask[: t + 1, t + 1:] = 1
        mask[t + 1:, t + 1:] = 1
        seq, _ = m.bert(ids, types, mask.expand(rows, n, n), feats, position_ids=pos)
        logp = torch.log_softmax(m.cls.predictions(seq[:, t]), -1)
        scores = (logp + beam_scores[:, None]).view(b, nb * vocab)
        top, idx = scores.topk(2 * nb, 1)
        beam = idx // vocab
        tok = idx % vocab
        # Keep the best nb non-[SEP] candidates per image (finished hypotheses do not matter for timing).
        keep = torch.sort((tok != SEP).float(), dim=1, descending=True, stable=True).indices[:, :nb]
        beam = beam.gather(1, keep)
        tok = tok.gather(1, keep)
        beam_scores = top.gather(1, keep).view(-1)
        origin = (beam + torch.arange(b)[:, None] * nb).view(-1)
        seqs = torch.cat([seqs[origin], tok.view(-1, 1)], 1)
    return seqs


def main():
    oscar = sys.argv[1]
    size = sys.argv[2] if len(sys.argv) > 2 else "tiny"
    images = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg, oscar_cfg = mg.bench_configs(size, dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    global CLS, SEP, MASK
    if size != "base":
        CLS, SEP, MASK = 2, 3, 4
    m = mg.Captioning(cfg, oscar_cfg).eval()
    vocab = cfg.vocab_size
    lo = min(1000, vocab - 1)
    tags = torch.cat([torch.randint(lo, vocab, (images, 10)), torch.full((images, 1), SEP)], 1) if vocab > 1000 else torch.cat([torch.randint(5, vocab, (images, 10)), torch.full((images, 1), SEP)], 1)
    feats = torch.rand(images, 50, oscar_cfg["img_feature_dim"])
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        reencode_beam(m, vocab, tags, feats)
        best = min(best, time.perf_counter() - t0)
    py = {"side": "pytorch", "torch": torch.__version__, "size": size, "images": images, "reencode_s": best,
          "images_per_s": images / best, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(py))
    out = subprocess.run([oscar, "bench", "--workload", "caption-beam", "--size", size, "--batch", str(images), "--regions", "50", "--runs", str(runs)],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out.strip().splitlines()[-1])
    ours["side"] = "oscar-rs"
    print(json.dumps(ours))
    print(json.dumps({"size": size, "cached_vs_pytorch_reencode": py["reencode_s"] / ours["cached_s"],
                      "reencode_vs_pytorch_reencode": py["reencode_s"] / ours["reencode_s"], "cache_speedup": ours["speedup"]}))


if __name__ == "__main__":
    main()
