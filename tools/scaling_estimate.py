#!/usr/bin/env python3
"""Expected data-parallel scaling of Oscar-B pre-training on GPUs, on paper (BENCHMARKS.md).

Every number below is an assumption, named; nothing here was measured on a GPU. The model:
a step is compute (the per-GPU batch's forward + backward) followed by one all-reduce of the
fp32 gradients (oscar-rs sums them after backward, without overlapping the two as PyTorch's
bucketed DDP does), timed as a ring: each GPU sends and receives 2(N-1)/N of the gradient bytes
at the collective's bus bandwidth.  python3 tools/scaling_estimate.py  prints a JSON table.
"""
import json

PARAMS = 111.1e6            # BERT-base with pooler 109.5M + 2054x768 region embedding 1.58M (+ heads)
NON_EMBEDDING = 86.0e6      # the encoder's matrices, what the FLOPs scale with
GRAD_BYTES = 4 * PARAMS     # fp32 gradients
TOKENS = 35 + 50            # Oscar's max_seq_length + max_img_seq_length
PER_GPU_BATCH = 32
FLOP_PER_STEP = 6 * NON_EMBEDDING * PER_GPU_BATCH * TOKENS   # forward + backward
A100_SUSTAINED = {"bf16 (40% of 312 TFLOP/s)": 0.40 * 312e12, "tf32 (40% of 156 TFLOP/s)": 0.40 * 156e12}
# NCCL all-reduce bus bandwidth (nccl-tests' busbw) commonly reported for DGX A100 systems.
FABRICS = {
    "8 GPUs, one node, NVLink/NVSwitch (busbw 230 GB/s)": (8, 230e9),
    "64 GPUs, 8 nodes, 8x200 Gb/s InfiniBand per node (busbw 180 GB/s)": (64, 180e9),
    "64 GPUs, 8 nodes, 1x200 Gb/s InfiniBand per node (busbw 23 GB/s)": (64, 23e9),
}

rows = []
for fabric, (n, busbw) in FABRICS.items():
    comm = 2 * (n - 1) / n * GRAD_BYTES / busbw
    for prec, flops in A100_SUSTAINED.items():
        compute = FLOP_PER_STEP / flops
        rows.append({
            "fabric": fabric, "gpus": n, "compute": prec,
            "compute_ms": round(1e3 * compute, 1), "allreduce_ms": round(1e3 * comm, 1),
            "scaling_efficiency": round(compute / (compute + comm), 2),
            "speedup_vs_1_gpu": round(n * compute / (compute + comm), 1),
        })
print(json.dumps({"grad_gb": round(GRAD_BYTES / 1e9, 3), "per_gpu_batch": PER_GPU_BATCH,
                  "tokens": TOKENS, "step_tflop": round(FLOP_PER_STEP / 1e12, 2), "rows": rows}, indent=1))
