#!/usr/bin/env bash
# int8 against f32 on the world's trained models (issue 23's accuracy table): the models
# `oscar demo --out DEMO` saved (DEMO/models/{retrieval,caption,vqa}) on its world's test sets,
# each command run once with --quantize f32 and once with --quantize int8, same inputs.
#   tools/int8_accuracy.sh target/release/oscar DEMO OUT
# Writes OUT/{f32,int8}/{retrieval,caption,vqa}.json and OUT/summary.json.
set -euo pipefail
oscar=$1
demo=$2
out=$3
w=$demo/world
m=$demo/models
for p in f32 int8; do
  d=$out/$p
  mkdir -p "$d"
  t0=$(date +%s.%N)
  "$oscar" eval retrieval --quantize $p --checkpoint "$m/retrieval" --data "$w" --json "$d/retrieval.json" \
    --partial "$d/retrieval.partial.json" > "$d/retrieval.txt"
  t1=$(date +%s.%N)
  "$oscar" caption --quantize $p --checkpoint "$m/caption" --features "$w/features/features.tsv" \
    --labels "$w/labels/predictions.tsv" --refs "$w/captions/test_caption.json" \
    --out "$d/captions.json" > "$d/caption.json"
  t2=$(date +%s.%N)
  "$oscar" answer --quantize $p --checkpoint "$m/vqa" --features "$w/features/features.tsv" \
    --questions "$w/vqa/test.json" --out "$d/answers.json" > "$d/answer.txt"
  "$oscar" eval vqa --annotations "$w/vqa/test_annotations.json" --results "$d/answers.json" \
    --json "$d/vqa.json" > "$d/vqa.txt"
  t3=$(date +%s.%N)
  python3 -c "import json,sys; t=[float(x) for x in sys.argv[1:]]; print(json.dumps({'retrieval_s': t[1]-t[0], 'caption_s': t[2]-t[1], 'vqa_s': t[3]-t[2]}))" \
    "$t0" "$t1" "$t2" "$t3" > "$d/times.json"
done
python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
rows = {}
for p in ["f32", "int8"]:
    r = json.load(open(f"{out}/{p}/retrieval.json"))
    c = json.load(open(f"{out}/{p}/caption.json"))
    v = json.load(open(f"{out}/{p}/vqa.json"))
    full = r["full"]["recall"]
    rows[p] = {
        "retrieval_i2t_r1_r5_r10": full["i2t"], "retrieval_t2i_r1_r5_r10": full["t2i"],
        "caption_cider": c["cider"], "caption_bleu4": c["bleu4"],
        "vqa_accuracy": v["overall"],
        "seconds": json.load(open(f"{out}/{p}/times.json")),
    }
caps = [json.load(open(f"{out}/{p}/captions.json")) for p in ["f32", "int8"]]
same = sum(a["caption"] == b["caption"] for a, b in zip(*caps))
ans = [{a["question_id"]: a["answer"] for a in json.load(open(f"{out}/{p}/answers.json"))} for p in ["f32", "int8"]]
rows["same_captions"] = f"{same}/{len(caps[0])}"
rows["same_answers"] = f"{sum(ans[0][q] == ans[1].get(q) for q in ans[0])}/{len(ans[0])}"
json.dump(rows, open(f"{out}/summary.json", "w"), indent=1)
print(json.dumps(rows, indent=1))
EOF
