#!/usr/bin/env python3
"""oscar-rs against PyTorch and ONNX Runtime, f32 and int8, timed interleaved (issue 23).

Every side is one warm process that runs a variant when asked (`oscar bench --driven`, or this
script with `--worker`), and the sides take turns: round 1 asks each side once, round 2 again,
and so on. So a minute when the machine is slow hits every side alike, and the ratios compare
medians taken over the same minutes. Sides:
  oscar-f32, oscar-int8                  `oscar bench --driven [--quantize int8]`
  oscar-f32-padded, oscar-int8-padded    the same with OSCAR_KEEP_PADDING=1 (scoring only): the
                                         padded positions computed as the reference and the
                                         other runtimes do, where by default they are dropped
  pytorch-f32, pytorch-int8              the reference's modules (make_model_goldens.py), and
                                         `torch.ao.quantization.quantize_dynamic` (qint8 Linear)
  onnxruntime-f32, onnxruntime-int8      the same PyTorch model exported (opset 17), and
                                         `onnxruntime.quantization.quantize_dynamic` (QInt8)
Workloads (the third argument, comma-separated; all by default):
  base        Oscar-B retrieval scoring of 32 pairs (text padded to 70 + 50 regions; and
              dynamically padded)
  caption     beam-5 captioning of 2 images (oscar-rs with its cache; PyTorch re-encoding, the
              reference's way; no ONNX Runtime side)
  tiny        tiny scoring
  train       one Oscar-B pre-training step (batch 8, 35 text + 50 regions: forward, MLM +
              contrastive loss, backward, clipping, AdamW; f32, dropout on; PyTorch's step is
              bench_pytorch.py's)
  train-tiny  the same at the tiny size
Weights are random (timing only); each side's peak memory and model size are reported.

Usage (repository root, after `cargo build --release -p oscar-cli`; an idle machine):
    .venv-ref/bin/python tools/reference/bench_interleaved.py target/release/oscar [rounds] [workloads] > out.jsonl
Needs torch, transformers, onnx and onnxruntime. Prints one JSON line per side and workload
(times of every round, median, min, max) and one line of ratios per workload.
"""
import importlib.util
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- worker (one side, warm)

def load_reference():
    spec = importlib.util.spec_from_file_location("mg", os.path.join(HERE, "make_model_goldens.py"))
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)
    return mg


def model_bytes(model):
    import torch
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def scoring_worker(side, size, setup):
    """Returns (variants, info): the scoring callables of `side` on the pairs `setup` describes."""
    import torch
    mg = load_reference()
    sys.path.insert(0, HERE)
    from bench_retrieval import Scorer, inputs
    cfg, ocfg = mg.bench_configs(size, num_labels=2)
    torch.manual_seed(0)
    model = Scorer(mg.SeqClassification(cfg, ocfg)).eval()
    gen = torch.Generator().manual_seed(0)
    lengths, r, f = setup["dynamic_text_lengths"], setup["regions"], ocfg["img_feature_dim"]
    fixed = inputs(lengths, setup["fixed_text"], r, f, cfg.vocab_size, gen)
    dynamic = inputs(lengths, setup["dynamic_padded_to"], r, f, cfg.vocab_size, gen)
    info = {}
    if side.startswith("pytorch"):
        if side == "pytorch-int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        info["model_mib"] = model_bytes(model) / 2**20

        def run(x):
            with torch.inference_mode():
                model(*x)
        return {"fixed": lambda: run(fixed), "dynamic": lambda: run(dynamic)}, info
    import onnxruntime as ort
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "scorer.onnx")
    torch.onnx.export(model, fixed, path, input_names=["ids", "types", "mask", "feats"], output_names=["p"],
                      dynamic_axes={"ids": {0: "b", 1: "t"}, "types": {0: "b", 1: "t"}, "mask": {0: "b", 1: "l"},
                                    "feats": {0: "b"}}, opset_version=17, dynamo=False)
    if side == "onnxruntime-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        qpath = os.path.join(tmp, "scorer.int8.onnx")
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        path = qpath
    info["model_mib"] = os.path.getsize(path) / 2**20
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = ["ids", "types", "mask", "feats"]
    ff = {k: v.numpy() for k, v in zip(names, fixed)}
    fd = {k: v.numpy() for k, v in zip(names, dynamic)}
    return {"fixed": lambda: sess.run(None, ff), "dynamic": lambda: sess.run(None, fd)}, info


def caption_worker(side, size, setup):
    import torch
    mg = load_reference()
    sys.path.insert(0, HERE)
    import bench_caption_pytorch as bc
    cfg, ocfg = mg.bench_configs(size, dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    torch.manual_seed(0)
    m = mg.Captioning(cfg, ocfg).eval()
    if side == "pytorch-int8":
        m = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
    images, vocab = setup["images"], cfg.vocab_size
    tags = torch.cat([torch.randint(1000, vocab, (images, 10)), torch.full((images, 1), bc.SEP)], 1)
    feats = torch.rand(images, setup["regions"], ocfg["img_feature_dim"])
    return {"reencode": lambda: bc.reencode_beam(m, vocab, tags, feats)}, {"model_mib": model_bytes(m) / 2**20}


def train_worker(side, size, setup):
    """One pre-training step of the reference's modules, bench_pytorch.py's."""
    sys.path.insert(0, HERE)
    from bench_pytorch import training_step
    step, m = training_step(size, setup["batch"], setup["text"], setup["regions"])
    return {"step": step}, {"model_mib": model_bytes(m) / 2**20}


def worker(side, workload, size):
    """The Python side's warm process: the protocol of `oscar bench --driven`."""
    import torch
    torch.set_num_threads(2)
    setup = json.loads(sys.stdin.readline())
    make = {"caption": caption_worker, "train": train_worker}.get(workload, scoring_worker)
    variants, info = make(side, size, setup)
    for f in variants.values():
        f()  # warm-up
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        t0 = time.perf_counter()
        variants[name]()
        print(json.dumps({"variant": name, "s": time.perf_counter() - t0}), flush=True)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


# ---------------------------------------------------------------- driver

class Side:
    def __init__(self, name, argv, setup=None, env=None):
        self.name = name
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                  env=None if env is None else {**os.environ, **env})
        if setup is not None:
            self.p.stdin.write(json.dumps(setup) + "\n")
        self.info = self.read()
        self.times = {}

    def read(self):
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} ended early (exit {self.p.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, variant):
        self.p.stdin.write(variant + "\n")
        t = self.read()["s"]
        self.times.setdefault(variant, []).append(t)
        return t

    def close(self):
        self.p.stdin.close()
        self.info.update(self.read())
        self.p.wait()


def summary(times):
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": times}


def compare(workload, sides, variants, rounds, ratio_pairs):
    for s in sides:
        for v in variants[s.name]:
            s.run(v)  # warm-up (oscar's first call; the Python workers warmed already)
            s.times[v] = []
    for r in range(rounds):
        for s in sides:
            for v in variants[s.name]:
                t = s.run(v)
                log(f"{workload} round {r + 1}/{rounds} {s.name} {v}: {t:.3f} s")
    for s in sides:
        s.close()
        print(json.dumps({**s.info, "workload": workload, "side": s.name,
                          **{v: summary(s.times[v]) for v in variants[s.name]}}), flush=True)
    med = {(s.name, v): statistics.median(s.times[v]) for s in sides for v in variants[s.name]}
    ratios = {f"{a[0]}:{a[1]} / {b[0]}:{b[1]}": med[b] / med[a] for a, b in ratio_pairs if a in med and b in med}
    print(json.dumps({"workload": workload, "speedup (time of the second / time of the first)": ratios}), flush=True)


def scoring(oscar, size, rounds, batch):
    base = [oscar, "bench", "--driven", "--workload", "retrieval-score", "--size", size, "--batch", str(batch), "--text", "45"]
    padded = {"OSCAR_KEEP_PADDING": "1"}
    ours = [Side("oscar-f32", base), Side("oscar-int8", base + ["--quantize", "int8"]),
            Side("oscar-f32-padded", base, env=padded),
            Side("oscar-int8-padded", base + ["--quantize", "int8"], env=padded)]
    setup = ours[0].info
    theirs = [Side(n, [sys.executable, __file__, "--worker", n, "scoring", size], setup)
              for n in ["pytorch-f32", "pytorch-int8", "onnxruntime-f32", "onnxruntime-int8"]]
    sides = [ours[0], theirs[0], ours[2], ours[1], theirs[1], ours[3], theirs[2], theirs[3]]
    variants = {s.name: ["fixed", "dynamic"] for s in sides}
    pairs = []
    for v in ["fixed", "dynamic"]:
        for pad in ["", "-padded"]:
            i8, f32 = ("oscar-int8" + pad, v), ("oscar-f32" + pad, v)
            pairs += [(i8, f32), (i8, ("onnxruntime-int8", v)), (i8, ("pytorch-int8", v)),
                      (f32, ("onnxruntime-f32", v)), (f32, ("pytorch-f32", v))]
        pairs += [(("onnxruntime-int8", v), ("onnxruntime-f32", v)), (("pytorch-int8", v), ("pytorch-f32", v))]
    compare(f"retrieval_score_{size}", sides, variants, rounds, pairs)


def captioning(oscar, rounds, images):
    base = [oscar, "bench", "--driven", "--workload", "caption-beam", "--size", "base", "--batch", str(images),
            "--regions", "50"]
    ours = [Side("oscar-f32", base), Side("oscar-int8", base + ["--quantize", "int8"])]
    setup = ours[0].info
    theirs = [Side(n, [sys.executable, __file__, "--worker", n, "caption", "base"], setup)
              for n in ["pytorch-f32", "pytorch-int8"]]
    sides = [ours[0], theirs[0], ours[1], theirs[1]]
    variants = {"oscar-f32": ["cached"], "oscar-int8": ["cached"], "pytorch-f32": ["reencode"], "pytorch-int8": ["reencode"]}
    pairs = [(("oscar-int8", "cached"), ("oscar-f32", "cached")), (("oscar-int8", "cached"), ("pytorch-int8", "reencode")),
             (("oscar-f32", "cached"), ("pytorch-f32", "reencode")), (("pytorch-int8", "reencode"), ("pytorch-f32", "reencode"))]
    compare("caption_beam5_base", sides, variants, rounds, pairs)


def training(oscar, size, rounds):
    ours = Side("oscar-f32", [oscar, "bench", "--driven", "--workload", "pretrain-step", "--size", size,
                              "--batch", "8", "--text", "35", "--regions", "50"])
    theirs = Side("pytorch-f32", [sys.executable, __file__, "--worker", "pytorch-f32", "train", size], ours.info)
    variants = {"oscar-f32": ["step"], "pytorch-f32": ["step"]}
    compare(f"pretrain_step_{size}", [ours, theirs], variants, rounds, [(("oscar-f32", "step"), ("pytorch-f32", "step"))])


WORKLOADS = ["base", "caption", "tiny", "train", "train-tiny"]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(*sys.argv[2:5])
    oscar = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    only = sys.argv[3].split(",") if len(sys.argv) > 3 else WORKLOADS
    if set(only) - set(WORKLOADS):
        sys.exit(f"unknown workloads {sorted(set(only) - set(WORKLOADS))}: expected some of {WORKLOADS}")
    if "base" in only:
        scoring(oscar, "base", rounds, 32)
    if "caption" in only:
        captioning(oscar, rounds, 2)
    if "tiny" in only:
        scoring(oscar, "tiny", rounds * 4, 32)
    if "train" in only:
        training(oscar, "base", rounds)
    if "train-tiny" in only:
        training(oscar, "tiny", rounds * 4)


if __name__ == "__main__":
    main()
