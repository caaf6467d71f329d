#!/usr/bin/env bash
# Data-parallel throughput on one machine: Oscar-B-shaped pre-training steps (hidden 768, 12
# layers, 12 heads, bert-base-uncased's 30,522-word vocabulary, so the gradient is Oscar-B's
# size) on a generated world, global batch B, one process with 1 thread, two MPI ranks with 1
# thread each, and one process with 2 threads; rounds interleaved. Prints one JSON object.
#   tools/distributed_bench.sh OSCAR_BINARY(built with --features mpi) OUT_DIR [ROUNDS] [STEPS] [BATCH]
set -euo pipefail
OSCAR=$(realpath "$1"); OUT=$2; ROUNDS=${3:-3}; STEPS=${4:-6}; BATCH=${5:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"; OUT=$(realpath "$OUT")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
[ -d "$OUT/world" ] || "$OSCAR" world generate --out "$OUT/world" --images 200 --feature-dim 8 --render 0 >/dev/null
cat > "$OUT/oscar-b.toml" <<TOML
dataset = "$OUT/world/pretrain/dataset.yaml"
vocab = "$ROOT/crates/oscar/tests/fixtures/tokenizer/bert-base-uncased-vocab.txt"
img_feature_dim = 14
batch_size = $BATCH
steps = $STEPS
warmup_steps = 1
lr = 0.0001
log_every = 1
eval_every = 0
eval_fraction = 0.0
progress = false
[model]
hidden_size = 768
num_hidden_layers = 12
num_attention_heads = 12
intermediate_size = 3072
use_img_layernorm = true
dropout = 0.1
initializer_range = 0.02
TOML
run() { # name, launcher...
  local name=$1; shift
  rm -rf "$OUT/$name"
  "$@" pretrain --config "$OUT/oscar-b.toml" --output-dir "$OUT/$name" --quiet >/dev/null
  cp "$OUT/$name/metrics.jsonl" "$OUT/$name.$r.jsonl"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  RAYON_NUM_THREADS=1 run one_rank_1_thread "$OSCAR"
  run two_ranks_1_thread mpirun -np 2 -x RAYON_NUM_THREADS=1 "$OSCAR"
  RAYON_NUM_THREADS=2 run one_rank_2_threads "$OSCAR"
done
python3 - "$OUT" "$ROUNDS" "$BATCH" <<'PY'
import json, statistics, sys
out, rounds, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {"batch": batch, "rounds": rounds, "note": "median over rounds of each run's median step (the first step, warm-up, left out)"}
for name in ["one_rank_1_thread", "two_ranks_1_thread", "one_rank_2_threads"]:
    step_s, ar_s = [], []
    for r in range(1, rounds + 1):
        recs = [json.loads(l) for l in open(f"{out}/{name}.{r}.jsonl") if '"step"' in l and '"eval"' not in l]
        recs = recs[1:]
        step_s.append(statistics.median(batch / x["examples_per_s"] for x in recs))
        if "allreduce_s" in recs[0]:
            ar_s.append(statistics.median(x["allreduce_s"] for x in recs))
    res[name] = {"step_s_median": statistics.median(step_s), "step_s_runs": step_s,
                 "examples_per_s": batch / statistics.median(step_s)}
    if ar_s:
        res[name]["allreduce_s_median"] = statistics.median(ar_s)
        res[name]["allreduce_share"] = statistics.median(ar_s) / statistics.median(step_s)
base = res["one_rank_1_thread"]["step_s_median"]
res["speedup_two_ranks_vs_one"] = base / res["two_ranks_1_thread"]["step_s_median"]
res["speedup_two_threads_vs_one"] = base / res["one_rank_2_threads"]["step_s_median"]
print(json.dumps(res, indent=1))
PY
