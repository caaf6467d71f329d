#!/usr/bin/env bash
# The GPU check (issue 22): on a machine with an NVIDIA GPU, runs oscar's numerics on cuda:0
# against the CPU with the same binary, one short training run on the GPU, and the benchmarks.
# It needs only a release binary built with CUDA elsewhere, no cargo:
#
#   here:  . tools/gpu/cuda-env.sh && CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda,nccl -p oscar-cli
#          mkdir -p .devbin && strip -o .devbin/oscar-cuda target/cuda/release/oscar && gzip -f .devbin/oscar-cuda
#          (78 MB stripped, 22 MB gzipped: what the device machine's 64 MiB carry takes)
#   there: bash tools/gpu/check.sh .devbin/oscar-cuda.gz OUT_DIR
#
# Writes OUT_DIR/summary.json (every comparison with its largest difference and whether it is
# within tolerance) and the logs; exits 1 if any comparison fails. About 5 minutes on an H200.
set -uo pipefail
B=${1:?usage: check.sh OSCAR_CUDA_BINARY OUT_DIR}
O=${2:?usage: check.sh OSCAR_CUDA_BINARY OUT_DIR}
mkdir -p "$O"
if [[ $B == *.gz ]]; then gzip -dc "$B" > "$O/oscar" && chmod +x "$O/oscar" && B=$O/oscar; fi
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv | tee "$O/gpu.txt"
# The CUDA 13 runtime libraries from the machine's Python wheels (torch's), not the stub driver.
SP=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH=$SP/nvidia/cu13/lib:$SP/nvidia/nccl/lib:${LD_LIBRARY_PATH:-}
ldd "$B" | grep -E 'not found|libcuda|cublas|curand|cudart|nccl' | tee "$O/ldd.txt"
run() { echo "+ $*" >> "$O/log.txt"; "$@" >> "$O/log.txt" 2>&1; }
W=$O/world
run "$B" world generate --out "$W" --images 300 --feature-dim 64 --render 0
run "$B" train retrieval --data "$W" --out "$O/ret" --steps 60 --test-images 8
run "$B" train caption --data "$W" --out "$O/cap" --steps 60 --eval-images 4
run "$B" train vqa --data "$W" --out "$O/vqa" --steps 60
python3 - "$W" "$O" <<'PY'
import json, sys
w, o = sys.argv[1], sys.argv[2]
caps = json.load(open(f"{w}/captions/test_caption.json"))
ids = list(dict.fromkeys(c["image_id"] for c in caps))[:6]
json.dump([c for c in caps if c["image_id"] in ids], open(f"{o}/refs.json", "w"))
PY
F=$W/features/features.tsv L=$W/labels/predictions.tsv
for dev in cpu cuda:0; do
  tag=${dev%%:*}
  run "$B" eval retrieval --checkpoint "$O/ret" --data "$W" --images 8 --device "$dev" --shard 0/1 --json "$O/scores-$tag.json"
  run "$B" caption --checkpoint "$O/cap" --features "$F" --labels "$L" --refs "$O/refs.json" --device "$dev" --out "$O/captions-$tag.json"
  run "$B" answer --checkpoint "$O/vqa" --features "$F" --questions "$W/vqa/test.json" --device "$dev" --out "$O/answers-$tag.json"
  run "$B" train retrieval --data "$W" --out "$O/train-$tag" --steps 20 --test-images 4 --device "$dev"
done
# NCCL (two ranks, one GPU each) against one process on one GPU, same global batch: needs two
# GPUs (NCCL refuses two ranks on one) and mpirun; says skipped otherwise.
NGPU=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if [ "$NGPU" -ge 2 ] && command -v mpirun >/dev/null; then
  for np in 1 2; do
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 run mpirun -np $np "$B" train retrieval \
      --data "$W" --out "$O/nccl-$np" --steps 20 --batch-size 8 --test-images 4 --device cuda
  done
  echo "ran" > "$O/nccl.txt"
else
  echo "skipped: NCCL needs 2 GPUs and mpirun (GPUs: $NGPU, mpirun: $(command -v mpirun || echo none))" | tee "$O/nccl.txt"
fi
for w in pretrain-step retrieval-score caption-beam; do
  for size in tiny base; do
    "$B" bench --device cuda:0 --workload "$w" --size "$size" > "$O/bench-$w-$size-cuda.json" 2>> "$O/log.txt"
  done
done
python3 - "$O" <<'PY'
import json, sys
o = sys.argv[1]
out, ok = {}, True
def check(name, diff, tol):
    global ok
    out[name] = {"max_abs_diff": diff, "tolerance": tol, "ok": diff is not None and diff <= tol}
    ok &= out[name]["ok"]
def load(p):
    try:
        return json.load(open(p))
    except Exception as e:
        return None
s = [load(f"{o}/scores-{t}.json") for t in ("cpu", "cuda")]
if all(s):
    a = [v for row in s[0]["results"].values() for v in row]
    b = [v for row in s[1]["results"].values() for v in row]
    check("retrieval scores", max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else None, 1e-3)
else:
    check("retrieval scores", None, 1e-3)
c = [load(f"{o}/captions-{t}.json") for t in ("cpu", "cuda")]
same = sum(x["caption"] == y["caption"] for x, y in zip(*c)) if all(c) else 0
out["captions identical"] = {"same": same, "of": len(c[0]) if c[0] else 0}
q = [load(f"{o}/answers-{t}.json") for t in ("cpu", "cuda")]
same = sum(x["answer"] == y["answer"] for x, y in zip(*q)) if all(q) else 0
out["answers identical"] = {"same": same, "of": len(q[0]) if q[0] else 0}
def losses(t):
    try:
        d = t if t.startswith("nccl") else f"train-{t}"
        return [json.loads(l)["loss"] for l in open(f"{o}/{d}/metrics.jsonl") if '"loss"' in l]
    except Exception:
        return []
lc, lg = losses("cpu"), losses("cuda")
check("training losses (20 steps)", max(abs(x - y) for x, y in zip(lc, lg)) if lc and len(lc) == len(lg) else None, 1e-2)
if open(f"{o}/nccl.txt").read().startswith("ran"):
    l1, l2 = losses("nccl-1"), losses("nccl-2")
    check("NCCL 2 ranks vs 1 process (20 steps)", max(abs(x - y) for x, y in zip(l1, l2)) if l1 and len(l1) == len(l2) else None, 1e-3)
else:
    out["NCCL 2 ranks vs 1 process (20 steps)"] = open(f"{o}/nccl.txt").read().strip()
out["bench"] = {}
for w in ("pretrain-step", "retrieval-score", "caption-beam"):
    for size in ("tiny", "base"):
        out["bench"][f"{w}/{size}"] = load(f"{o}/bench-{w}-{size}-cuda.json")
out["all_ok"] = ok
json.dump(out, open(f"{o}/summary.json", "w"), indent=1)
print(json.dumps(out, indent=1)[:4000])
sys.exit(0 if ok else 1)
PY
