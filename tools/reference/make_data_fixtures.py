#!/usr/bin/env python3
"""Real-format data fixtures written the way the reference's tools write them (struct/base64,
json, torch.save, pickle), plus `expected.json` with the values a reader must return.

Regenerate (from the repository root):
    .venv-ref/bin/python tools/reference/make_data_fixtures.py crates/oscar/tests/fixtures/data
"""
import base64
import json
import os
import pickle
import sys

import numpy as np
import torch

DIM = 10  # 4 "detector" values + 6 box dims, to keep fixtures small


def b64(a):
    return base64.b64encode(np.asarray(a, dtype=np.float32).tobytes()).decode()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(3)
    feats = {k: rng.random((n, DIM)).astype(np.float32) * 3 for k, n in [("img_a", 3), ("img_b", 1), ("img_c", 5)]}
    expected = {"dim": DIM, "features": {k: v.reshape(-1).tolist() for k, v in feats.items()}}

    # VinVL features.tsv: id \t num_boxes \t base64, with .lineidx and imageid2idx.json.
    lines = [f"{k}\t{v.shape[0]}\t{b64(v)}\n" for k, v in feats.items()]
    with open(os.path.join(out, "features.tsv"), "w") as f:
        f.writelines(lines)
    offs, pos = [], 0
    for l in lines:
        offs.append(pos)
        pos += len(l.encode())
    with open(os.path.join(out, "features.lineidx"), "w") as f:
        f.write("".join(f"{o}\n" for o in offs))
    json.dump({k: i for i, k in enumerate(feats)}, open(os.path.join(out, "imageid2idx.json"), "w"))

    # Oscar captioning *.feature.tsv: id \t {"num_boxes", "features"} (no index: built by scan).
    with open(os.path.join(out, "train.feature.tsv"), "w") as f:
        for k, v in feats.items():
            f.write(f"{k}\t{json.dumps({'num_boxes': v.shape[0], 'features': b64(v)})}\n")

    # torch-pickle feature dicts with int keys (v1 *_img_frcnn_feats.pt), both serializations.
    td = {i + 100: torch.from_numpy(v) for i, v in enumerate(feats.values())}
    torch.save(td, os.path.join(out, "val_img_frcnn_feats.pt"))
    torch.save(td, os.path.join(out, "val_img_frcnn_feats_legacy.pt"), _use_new_zipfile_serialization=False)
    expected["torch_keys"] = {str(i + 100): k for i, k in enumerate(feats)}

    # *.label.tsv (bare list) and predictions.tsv (object form with detector features and boxes).
    labels = {"img_a": [{"class": "dog", "conf": 0.9, "rect": [1, 2, 3, 4]}, {"class": "frisbee", "conf": 0.15, "rect": [0, 0, 5, 5]},
                        {"class": "dog", "conf": 0.7, "rect": [2, 2, 8, 9]}],
              "img_b": [{"class": "man", "conf": 0.99, "rect": [0, 0, 10, 10]}]}
    with open(os.path.join(out, "train.label.tsv"), "w") as f:
        for k, v in labels.items():
            f.write(f"{k}\t{json.dumps(v)}\n")
    det = rng.random((2, 4)).astype(np.float32)
    pred = {"image_h": 480, "image_w": 640, "num_boxes": 2, "objects": [
        {"class": "surfboard", "conf": 0.8, "rect": [64.0, 48.0, 320.0, 240.0], "feature": b64(det[0])},
        {"class": "wave", "conf": 0.6, "rect": [0.0, 240.0, 640.0, 480.0], "feature": b64(det[1])}]}
    with open(os.path.join(out, "predictions.tsv"), "w") as f:
        f.write(f"img_sgb\t{json.dumps(pred)}\n")
    boxes = [[64 / 640, 48 / 480, 320 / 640, 240 / 480, 256 / 640, 192 / 480], [0, 240 / 480, 1, 1, 1, 240 / 480]]
    expected["sgb_regions"] = np.concatenate([det, np.asarray(boxes, dtype=np.float32)], axis=1).reshape(-1).tolist()
    expected["tags_img_a_conf0.2"] = "dog dog"
    expected["tags_img_a_dedup"] = "dog frisbee"

    # VQA / GQA / NLVR2 text and answer vocabularies.
    vqa = [{"q": "What is the dog catching?", "o": "dog;frisbee;grass", "an": [1, 2], "s": [1.0, 0.3], "img_id": "img_a", "q_id": 7},
           {"q": "Is there a man?", "o": "man", "an": [0], "s": [1.0], "img_id": "img_b", "q_id": "8"}]
    json.dump(vqa, open(os.path.join(out, "vqa_train.json"), "w"))
    nlvr = [{"q": "There are two dogs.", "o": {"left": "dog dog", "right": "cat"}, "img_id": {"left": "img_a", "right": "img_b"},
             "label": 1, "q_id": "dev-1"}]
    json.dump(nlvr, open(os.path.join(out, "nlvr2_dev.json"), "w"))
    ans2label = {"yes": 0, "frisbee": 1, "ball": 2}
    json.dump(ans2label, open(os.path.join(out, "ans2label.json"), "w"))
    pickle.dump(ans2label, open(os.path.join(out, "trainval_ans2label.pkl"), "wb"), protocol=2)
    pickle.dump(["yes", "frisbee", "ball"], open(os.path.join(out, "trainval_label2ans.pkl"), "wb"), protocol=3)
    pickle.dump(ans2label, open(os.path.join(out, "ans2label_protocol5.pkl"), "wb"), protocol=5)
    # Retrieval captions as torch.save'd dicts (int ids; one value JSON-encoded, as some releases have).
    caps = {391895: ["A man with a red helmet on a small moped.", "Man riding a motor bike on a dirt road."], 522418: json.dumps(["A woman cutting a cake."])}
    torch.save(caps, os.path.join(out, "test_captions.pt"))
    torch.save(caps, os.path.join(out, "test_captions_legacy.pt"), _use_new_zipfile_serialization=False)
    with open(os.path.join(out, "test_img_keys.tsv"), "w") as f:
        f.write("391895\n522418\n")
    expected["retrieval_captions"] = {"391895": caps[391895], "522418": ["A woman cutting a cake."]}
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"), indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
