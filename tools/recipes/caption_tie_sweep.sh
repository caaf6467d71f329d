#!/usr/bin/env bash
# The demo's tags arm over seeds, captioning fine-tuned with the decoder untied (the script's
# default) and tied to the word embeddings (VinVL's --tie_weights, the demo's recipe 2): the
# same world, pre-training and captioning budget as `oscar demo --seed S`
# (2,000 images, 4,000 pre-training steps with tools/recipes/world_pretrain.toml, 800 captioning
# steps, beam 5 on 100 test images). Resumable: finished steps are skipped.
#
#   tools/recipes/caption_tie_sweep.sh OUT "0 1 2 3 4 5 6 7 8 9" [path/to/oscar]
#
# Writes OUT/summary.json (per seed: CIDEr untied, tied, nearest-neighbour caption, and the
# pre-training probe) and prints a table. One thread per process; run two sweeps side by side
# on two cores with disjoint seed lists. Built before commit 8751315, the untied decoder started
# from random numbers (the pre-training checkpoint holds no separate decoder); since, from the
# word embeddings, as the reference's checkpoints give it.
set -euo pipefail
out=${1:?usage: caption_tie_sweep.sh OUT "SEEDS" [OSCAR]}
seeds=${2:?usage: caption_tie_sweep.sh OUT "SEEDS" [OSCAR]}
here=$(cd "$(dirname "$0")" && pwd)
oscar=${3:-$here/../../target/release/oscar}
mkdir -p "$out"
export RAYON_NUM_THREADS=1
for s in $seeds; do
  w=$out/world-$s p=$out/pretrain-$s
  [ -d "$w" ] || "$oscar" world generate --out "$w" --images 2000 --feature-dim 64 --seed "$s" --render 0 >/dev/null
  [ -d "$p/checkpoint-4000" ] || "$oscar" pretrain --config "$here/world_pretrain.toml" \
    --dataset "$w/pretrain/dataset.yaml" --output-dir "$p" --steps 4000 --seed $((s + 1)) \
    --save-every 4000 --eval-every 4000 --quiet >"$out/pretrain-$s.log" 2>&1
  for tie in untied tied; do
    c=$out/caption-$s-$tie
    flag=(); [ $tie = tied ] && flag=(--tie-weights)
    [ -f "$c/eval.json" ] || "$oscar" train caption "${flag[@]}" --data "$w" --out "$c" \
      --init "$p/checkpoint-4000" --steps 800 --seed $((s + 2)) --drop-out 0.1 \
      --eval-images 100 >"$out/caption-$s-$tie.log" 2>&1
  done
  echo "seed $s done"
done
python3 - "$out" <<'PY'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
rows = []
for p in sorted(out.glob("caption-*-tied/eval.json")):
    s = int(re.match(r"caption-(\d+)-tied", p.parent.name).group(1))
    tied = json.load(open(p))
    untied = json.load(open(out / f"caption-{s}-untied/eval.json"))
    ev = [json.loads(l)["eval"] for l in open(out / f"pretrain-{s}/metrics.jsonl") if '"eval"' in l][-1]
    rows.append({"seed": s, "cider_untied": untied["model"]["cider"], "cider_tied": tied["model"]["cider"],
                 "cider_nearest_neighbour": tied["nearest_neighbour"]["cider"],
                 "probe_own_tags": ev["caption_accuracy_own_tags"], "probe_other_tags": ev["caption_accuracy_other_tags"]})
rows.sort(key=lambda r: r["seed"])
json.dump({"command": "tools/recipes/caption_tie_sweep.sh", "seeds": rows}, open(out / "summary.json", "w"), indent=1)
print("| seed | CIDEr untied | CIDEr tied | nearest-neighbour caption | probe own / other tags |")
for r in rows:
    print(f"| {r['seed']} | {r['cider_untied']:.3f} | {r['cider_tied']:.3f} | {r['cider_nearest_neighbour']:.3f} | {r['probe_own_tags']:.3f} / {r['probe_other_tags']:.3f} |")
for k in ("cider_untied", "cider_tied"):
    n = sum(r[k] > r["cider_nearest_neighbour"] for r in rows)
    print(f"{k}: above the nearest-neighbour caption on {n}/{len(rows)} seeds")
PY
