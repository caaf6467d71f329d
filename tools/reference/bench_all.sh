#!/usr/bin/env bash
# Every side-by-side benchmark of BENCHMARKS.md in one run: pre-training step (PyTorch),
# retrieval pair scoring (PyTorch, ONNX Runtime), beam-5 captioning (PyTorch), for Oscar-B and
# the tiny config. Writes JSON lines (each script's sides and ratios) to OUT.
#   tools/reference/bench_all.sh target/release/oscar PYTHON [OUT]
# PYTHON needs torch, transformers, onnx, onnxruntime. Run on an otherwise idle machine.
set -euo pipefail
oscar=$1
py=$2
out=${3:-bench_results.jsonl}
here=$(dirname "$0")
: > "$out"
run() { echo "## $*" >&2; "$py" "$@" 2>/dev/null | grep '^{' | tee -a "$out"; }
run "$here/bench_pytorch.py" "$oscar" base 3
run "$here/bench_pytorch.py" "$oscar" tiny 20
run "$here/bench_retrieval.py" "$oscar" base 3 32
run "$here/bench_retrieval.py" "$oscar" tiny 10 32
run "$here/bench_caption_pytorch.py" "$oscar" base 2 2
run "$here/bench_caption_pytorch.py" "$oscar" tiny 4 3
echo "wrote $out" >&2
