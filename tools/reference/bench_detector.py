#!/usr/bin/env python3
"""CPU timing of the reference detector at full size: SGB's AttrRCNN built from
sgg_configs/vgattr/vinvl_x152c4.yaml, unmodified, plus the official extraction command's
overrides (NMS_FILTER 1, SCORE_THRESH 0.2, IGNORE_BOX_REGRESSION True, OUTPUT_FEATURE True,
ATTRIBUTE_ON True), X152-32x8d C4, 1595 classes, 525 attributes; seeded random weights scaled
as in make_detector_goldens.py (FrozenBN statistics from the image's own activations, peaky
class and attribute softmax), so that the RPN, the per-class NMS and the attribute head do
realistic amounts of work.

Setup: as in make_detector_goldens.py (SGB snapshot + .venv-ref with yacs, torchvision
--no-deps, opencv-python-headless). Run, e.g.:

    .venv-ref/bin/python tools/reference/bench_detector.py /tmp/sgb-clone \
        --image crates/oscar-detect/tests/fixtures/detector/images/astronaut.jpg \
        --threads 2 --save-pth /tmp/vinvl_random_x152c4.pth

--image: any image; it is decoded as SGB's demo does (cv2.imread) and then, to time the
600x1000 case, padded/cropped to 5:3 landscape and scaled to 1000x600 before SGB's
transforms (which then keep 1000x600). Without --image a synthetic 1000x600 image is used.
--save-pth writes {"model": state_dict} (~600 MB) so the Rust side can load the same weights;
--dump-detections writes the detections so tools/compare_detections.py can match them with
what `oscar detect` finds in the same image with those weights.

Prints one JSON object: seconds_per_image (the N timed runs: transforms + model forward,
batch 1, no_grad), median, peak_rss_mb (ru_maxrss of the process, which includes building
and calibrating the model), num_detections, and the settings used.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgb_runtime as R  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sgb_path")
    ap.add_argument("--image", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-pth", default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dump-detections", default=None,
                    help="write the last run's detections (boxes in the 1000x600 image's pixels, "
                         "labels, scores) as JSON, to compare with oscar detect on the same image")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--nms", choices=("torchvision", "legacy"), default="torchvision",
                    help="torchvision: SGB@8e14944 as it runs (torchvision.ops.nms, compiled); "
                         "legacy: the pure-PyTorch +1 NMS of the goldens (slow: 1594 Python-loop "
                         "NMS calls per image under NMS_FILTER 1)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    t_start = time.time()

    sgb = R.import_sgb(args.sgb_path)
    import make_detector_goldens as G
    from maskrcnn_benchmark.data.transforms import build_transforms
    from maskrcnn_benchmark.structures.image_list import to_image_list
    if args.nms == "legacy":
        R.install_legacy_nms(suppress_on_equal=False)

    cfg = R.make_cfg(sgb, R.EXTRACTION_OPTS)
    transforms = build_transforms(cfg, is_train=False)

    if args.image:
        detect_utils = G.load_detect_utils(sgb)
        pil, _ = G.decode_sgb_demo(args.image, detect_utils)
        w, h = pil.size
        # centre crop to 5:3 landscape, then scale to 1000x600 (Pillow bilinear)
        if w * 3 >= h * 5:
            cw, ch = h * 5 // 3, h
        else:
            cw, ch = w, w * 3 // 5
        pil = pil.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
        pil = pil.resize((1000, 600), Image.BILINEAR)
    else:
        yy, xx = np.mgrid[0:600, 0:1000]
        a = np.stack([xx * 255 // 999, yy * 255 // 599, (xx + yy) * 255 // 1598], -1).astype(np.uint8)
        pil = Image.fromarray(a)
    tensor, _ = transforms(pil, None)
    assert tuple(tensor.shape[1:]) == (600, 1000), tensor.shape

    t0 = time.time()
    model = G.build_model(cfg)
    g = torch.Generator().manual_seed(args.seed)
    wstats = G.make_weights(model, [tensor.unsqueeze(0)], g)
    t_build = time.time() - t0
    if args.save_pth:
        torch.save({"model": model.state_dict()}, args.save_pth)

    def once():
        t = time.perf_counter()
        with torch.no_grad():
            x, _ = transforms(pil, None)
            pred = model(to_image_list(x))[0]
        return time.perf_counter() - t, pred

    warm, _ = once()
    times, pred = [], None
    for _ in range(args.runs):
        dt, pred = once()
        times.append(round(dt, 3))
    out = {
        "seconds_per_image": times,
        "median": round(statistics.median(times), 3),
        "warmup_seconds": round(warm, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "num_detections": int(len(pred)),
        "num_detections_score_ge_0.2": int((pred.get_field("scores") >= 0.2).sum()),
        "input_hw": [600, 1000],
        "threads": args.threads,
        "nms": "torchvision.ops.nms (SGB native)" if args.nms == "torchvision" else "legacy +1 (pure PyTorch)",
        "torch": torch.__version__,
        "sgb_commit": R.sgb_commit(sgb),
        "sgb_files_fingerprint": R.sgb_fingerprint(sgb)[0],
        "build_and_calibrate_seconds": round(t_build, 1),
        "weight_scales": wstats,
        "saved_pth": args.save_pth,
        "total_seconds": round(time.time() - t_start, 1),
    }
    if args.dump_detections:
        with open(args.dump_detections, "w") as f:
            json.dump({"boxes": pred.bbox.tolist(), "labels": pred.get_field("labels").tolist(),
                       "scores": pred.get_field("scores").tolist(),
                       "box_features": pred.get_field("box_features").tolist()}, f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
