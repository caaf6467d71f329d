#!/usr/bin/env python3
"""Matches `oscar detect`'s output for one image against the reference's detections dumped by
tools/reference/bench_detector.py --dump-detections (same weights, same image), and prints JSON:
counts, how many detections agree in order (IoU > 0.99 with the +1 convention, same label),
the largest score difference and the largest relative feature error.

    python3 tools/compare_detections.py REF.json OUT_DIR IMAGE_ID
"""
import base64
import json
import struct
import sys


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = w * h
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
    return inter / (area(a) + area(b) - inter)


def main():
    ref = json.load(open(sys.argv[1]))
    out, image_id = sys.argv[2], sys.argv[3]
    row = next(l for l in open(out + "/predictions.tsv") if l.split("\t", 1)[0] == image_id)
    objs = json.loads(row.split("\t", 1)[1])["objects"]
    frow = next(l for l in open(out + "/features.tsv") if l.split("\t", 1)[0] == image_id)
    _, n, b64 = frow.rstrip("\n").split("\t")
    raw = base64.b64decode(b64)
    vals = struct.unpack("<%df" % (len(raw) // 4), raw)
    dim = len(vals) // int(n)
    agree, worst_score, worst_feat = 0, 0.0, 0.0
    for i, (o, rb, rl, rs, rf) in enumerate(zip(objs, ref["boxes"], ref["labels"], ref["scores"],
                                                 ref["box_features"])):
        label = int(o["class"].replace("class", ""))
        if iou(o["rect"], rb) > 0.99 and label == rl:
            agree += 1
        worst_score = max(worst_score, abs(o["conf"] - rs))
        f = vals[i * dim:i * dim + len(rf)]
        scale = max(abs(x) for x in rf) or 1.0
        worst_feat = max(worst_feat, max(abs(x - y) for x, y in zip(f, rf)) / scale)
    print(json.dumps({"reference_detections": len(ref["labels"]), "oscar_detections": len(objs),
                      "agreeing_in_order": agree, "max_score_diff": worst_score,
                      "max_feature_rel_err": worst_feat}))


if __name__ == "__main__":
    main()
