#!/usr/bin/env bash
# The figures of docs/first-stage.md: fits the learned first stage into a copy of a retrieval
# model, then runs the full protocol and two-stage searches (tags and learned, k = 1…20) on the
# first 100 and on all test images of the demo's world, and learned k = 5 in int8.
# Usage: tools/first_stage_figures.sh OSCAR_BINARY DEMO_DIR RETRIEVAL_MODEL OUT_DIR
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 OSCAR DEMO_DIR RETRIEVAL_MODEL OUT_DIR" >&2; exit 2; }
B=$1 D=$2 SRC=$3 O=$4
mkdir -p "$O"
M="$O/model"
rm -rf "$M" && cp -r "$SRC" "$M" && rm -f "$M"/first_stage.*
"$B" train first-stage --checkpoint "$M" --data "$D/world" > "$O/fit.txt"
all=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$D/world/retrieval/test_captions.json")
for imgs in 100 "$all"; do
  "$B" eval retrieval --checkpoint "$M" --data "$D/world" --images "$imgs" --json "$O/full_$imgs.json" > /dev/null
  for fs in learned tags; do
    for k in 1 2 3 5 10 20; do
      "$B" eval retrieval --checkpoint "$M" --data "$D/world" --images "$imgs" --two-stage-k "$k" \
        --first-stage "$fs" --two-stage-only --json "$O/${fs}_${k}_$imgs.json" > /dev/null
    done
  done
done
"$B" eval retrieval --checkpoint "$M" --data "$D/world" --two-stage-k 5 --first-stage learned \
  --two-stage-only --quantize int8 --json "$O/learned_5_${all}_int8.json" > /dev/null
echo "figures in $O"
