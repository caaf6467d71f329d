#!/usr/bin/env bash
# VQA and NLVR2 on a 10,000-image world, with and without pre-training (issue 8; README,
# "VQA, GQA, NLVR2"). About 35–40 minutes on two cores (38 min 45 s in the last run). Usage: tools/recipes/understanding.sh OUT
set -euo pipefail
OUT=${1:?usage: understanding.sh OUT}
HERE=$(cd "$(dirname "$0")" && pwd)
cargo build --release -q -p oscar-cli
B=$HERE/../../target/release/oscar
W=$OUT/world
$B world generate --out "$W" --images 10000 --feature-dim 64 --render 0
$B pretrain --config "$HERE/world_pretrain.toml" --dataset "$W/pretrain/dataset.yaml" --output-dir "$OUT/pretrain" --quiet
P=$OUT/pretrain/checkpoint-8000
# VQA: the MLP answer head; 50,000 steps (the per-type skills appear after ~20,000).
$B train vqa --data "$W" --out "$OUT/vqa-scratch" --classifier mlp --steps 50000 --lr 1e-3 --drop-out 0.1
$B train vqa --data "$W" --out "$OUT/vqa-pretrained" --init "$P" --classifier mlp --steps 50000 --lr 3e-4 --drop-out 0.1
$B train nlvr2 --data "$W" --out "$OUT/nlvr2-scratch" --steps 5000 --drop-out 0.1
$B train nlvr2 --data "$W" --out "$OUT/nlvr2-pretrained" --init "$P" --steps 5000 --lr 3e-4 --drop-out 0.1
