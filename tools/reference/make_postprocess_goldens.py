#!/usr/bin/env python3
"""Golden fixtures for the box post-processing variants of oscar-detect: SGB's own
box PostProcessor (microsoft/scene_graph_benchmark @ 8e14944,
maskrcnn_benchmark/modeling/roi_heads/box_head/inference.py) run on the reduced detector
fixture's RPN proposals, class logits and box-regression deltas, for
NMS_FILTER in {0, 1, 2} x TEST.IGNORE_BOX_REGRESSION in {True, False}.

    .venv-ref/bin/python tools/reference/make_postprocess_goldens.py SGB_PATH FIXTURE_DIR

FIXTURE_DIR is the detector fixture written by make_detector_goldens.py
(crates/oscar-detect/tests/fixtures/detector). Read from it: model.pth, images/*, and (only for
cross-checks) goldens/<image>.safetensors. Written: goldens/postprocess_variants.safetensors and
goldens/postprocess_variants.json, nothing else (each through a temporary file + rename).

Nothing here re-implements a post-processing rule. The model is built exactly as
make_detector_goldens.py builds it (its functions are imported; its main() is never called), the
weights come from FIXTURE_DIR/model.pth through SGB's DetectronCheckpointer, the legacy +1 NMS
(suppress if IoU > t) is patched in as for the fixture, and every variant goes through
PostProcessor.forward of a post-processor made by SGB's make_roi_box_post_processor(cfg) from a
config that differs from the fixture's only in NMS_FILTER and TEST.IGNORE_BOX_REGRESSION.
The box-regression deltas come from SGB's FastRCNNPredictor of a second model built with
TEST.IGNORE_BOX_REGRESSION False (so that its bbox_pred runs), loaded from the same model.pth.
Independent checks afterwards (decoding with SGB's BoxCoder) only assert where each returned
box and score came from; they do not produce any stored value.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgb_runtime as R  # noqa: E402
import make_detector_goldens as MDG  # noqa: E402  (functions only; main() is not run)

IMAGES = ("rocket.jpg", "coffee_exif6.jpg", "synthetic_small.png", "wide_strip.jpg")
FILTERS = (0, 1, 2)
REGRESSION = ((True, "noreg"), (False, "reg"))  # (TEST.IGNORE_BOX_REGRESSION, tag)
OUT_NAME = "postprocess_variants"
FIXTURE_GOLDEN_KEYS = ("proposals", "class_logits", "box_features",
                       "det_proposal_index", "det_boxes", "det_labels", "det_scores")


def log(*a):
    print(*a, flush=True)


def variant_cfg(sgb, nms_filter, ignore_reg):
    """The fixture's config (EXTRACTION_OPTS + REDUCED_OPTS) with NMS_FILTER and
    TEST.IGNORE_BOX_REGRESSION overridden (later opts win in yacs merge_from_list)."""
    return R.make_cfg(sgb, R.EXTRACTION_OPTS + MDG.REDUCED_OPTS + [
        "MODEL.ROI_HEADS.NMS_FILTER", nms_filter,
        "TEST.IGNORE_BOX_REGRESSION", ignore_reg,
    ])


def load_model(cfg, pth):
    from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer
    model = MDG.build_model(cfg)
    DetectronCheckpointer(cfg, model, save_dir="").load(pth, use_latest=False)
    return model


def copy_boxlist(bl):
    from maskrcnn_benchmark.structures.bounding_box import BoxList
    out = BoxList(bl.bbox.clone(), bl.size, mode=bl.mode)
    for k in bl.fields():
        out.add_field(k, bl.get_field(k).clone())
    return out


def run_to_box_head(model, model_reg, image_tensor):
    """SGB's submodules one at a time, as make_detector_goldens.run_stagewise, up to the
    box predictor. model: the fixture's config (IGNORE_BOX_REGRESSION True); model_reg: same
    weights, IGNORE_BOX_REGRESSION False (its predictor also returns bbox_pred)."""
    from maskrcnn_benchmark.structures.image_list import to_image_list
    with torch.no_grad():
        images = to_image_list(image_tensor)
        features = model.backbone(images.tensors)
        objectness, deltas = model.rpn.head(features)
        anchors = model.rpn.anchor_generator(images, features)
        proposals = model.rpn.box_selector_test(anchors, objectness, deltas)
        box = model.roi_heads.box
        x = box.feature_extractor(features, proposals)
        class_logits, none_reg = box.predictor(x)
        assert none_reg is None
        # the regression model, run from its own backbone: everything up to the predictor
        # must be bit-identical (only the predictor reads IGNORE_BOX_REGRESSION)
        features_r = model_reg.backbone(images.tensors)
        obj_r, del_r = model_reg.rpn.head(features_r)
        proposals_r = model_reg.rpn.box_selector_test(
            model_reg.rpn.anchor_generator(images, features_r), obj_r, del_r)
        x_r = model_reg.roi_heads.box.feature_extractor(features_r, proposals_r)
        class_logits_r, box_regression = model_reg.roi_heads.box.predictor(x_r)
        assert box_regression is not None
        assert torch.equal(proposals[0].bbox, proposals_r[0].bbox)
        assert torch.equal(x, x_r)
        assert torch.equal(class_logits, class_logits_r)
        # box features as the fixture computes them (predictor.avgpool on the res5 output)
        box_features = box.predictor.avgpool(x).flatten(1)
    return proposals, x, class_logits, box_regression, box_features


def run_variant(post_processor, class_logits, box_regression, proposals, x):
    """PostProcessor.forward, exactly as ROIBoxHead.forward calls it (box_regression None when
    the config ignores it, as FastRCNNPredictor returns). Captures its retry messages."""
    reg = None if post_processor.ignore_box_regression else box_regression
    props = [copy_boxlist(p) for p in proposals]
    buf = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(buf):
        res = post_processor((class_logits, reg), props, x)
    assert len(res) == 1
    assert torch.equal(props[0].bbox, proposals[0].bbox)  # input untouched
    retries = [l for l in buf.getvalue().splitlines() if "retrying" in l]
    return res[0], retries


def match_proposals(det_features, box_features):
    idx = []
    for i in range(det_features.shape[0]):
        m = (box_features == det_features[i]).all(1)
        nz = torch.nonzero(m).flatten()
        assert nz.numel() == 1, "detection %d matches %d proposals' box features" % (i, nz.numel())
        idx.append(nz.item())
    return torch.tensor(idx, dtype=torch.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sgb_path")
    ap.add_argument("fixture_dir")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(MDG.SEED)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)

    sgb = R.import_sgb(args.sgb_path)
    fingerprint = R.sgb_fingerprint(sgb)
    if fingerprint[0] != MDG.SGB_FINGERPRINT:
        log("WARNING: SGB_PATH's files differ from SGB @ %s (fingerprint %s)" % (MDG.SGB_COMMIT, fingerprint[0]))
    import torchvision
    from safetensors.torch import save_file, load_file
    from maskrcnn_benchmark.data.transforms import build_transforms
    from maskrcnn_benchmark.modeling.roi_heads.box_head.inference import (
        PostProcessor, make_roi_box_post_processor)
    from maskrcnn_benchmark.modeling.box_coder import BoxCoder
    MDG.register_tiny_body()
    nms_fn = R.install_legacy_nms(suppress_on_equal=False)

    fixture = os.path.abspath(args.fixture_dir)
    gold_dir = os.path.join(fixture, "goldens")
    pth = os.path.join(fixture, "model.pth")
    assert os.path.isfile(pth) and os.path.isdir(gold_dir), fixture

    cfg = R.make_cfg(sgb, R.EXTRACTION_OPTS + MDG.REDUCED_OPTS)        # the fixture's
    cfg_reg = variant_cfg(sgb, cfg.MODEL.ROI_HEADS.NMS_FILTER, False)  # + bbox_pred runs
    assert cfg.TEST.IGNORE_BOX_REGRESSION is True and cfg.MODEL.ROI_HEADS.NMS_FILTER == 1
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH == 0.2 and cfg.MODEL.ROI_HEADS.NMS == 0.5
    assert cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG == 30 and cfg.MODEL.ROI_HEADS.MIN_DETECTIONS_PER_IMG == 10
    assert cfg.TEST.OUTPUT_FEATURE is True and not cfg.MODEL.CLS_AGNOSTIC_BBOX_REG
    assert not cfg.MODEL.ROI_BOX_HEAD.FORCE_BOXES and not cfg.TEST.BBOX_AUG.ENABLED
    assert tuple(cfg.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS) == (10.0, 10.0, 5.0, 5.0)
    transforms = build_transforms(cfg, is_train=False)
    detect_utils = MDG.load_detect_utils(sgb)

    model = load_model(cfg, pth)
    model_reg = load_model(cfg_reg, pth)
    sd, sdr = model.state_dict(), model_reg.state_dict()
    assert list(sd) == list(sdr) and all(torch.equal(sd[k], sdr[k]) for k in sd)
    assert model.roi_heads.box.predictor.ignore_box_regression is True
    assert model_reg.roi_heads.box.predictor.ignore_box_regression is False

    # one post-processor per variant, from SGB's own factory
    post = {}
    for f in FILTERS:
        for ign, tag in REGRESSION:
            vcfg = variant_cfg(sgb, f, ign)
            pp = make_roi_box_post_processor(vcfg)
            assert type(pp) is PostProcessor
            assert pp.score_thresh == 0.2 and pp.nms == 0.5 and pp.detections_per_img == 30
            assert pp.min_detections_per_img == 10 and pp.output_feature and pp.ignore_box_regression is ign
            assert pp.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
            assert pp.filter_method.__name__ == {0: "filter_results", 1: "filter_results_peter",
                                                 2: "filter_results_fast"}[f]
            pp.eval()
            post["f%d_%s" % (f, tag)] = pp
    coder = BoxCoder(weights=tuple(cfg.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS))  # checks only

    tensors, counts, details, cross = {}, {}, {}, {}
    for fn in IMAGES:
        name = os.path.splitext(fn)[0]
        path = os.path.join(fixture, "images", fn)
        pil, _ = MDG.decode_sgb_demo(path, detect_utils)
        image_tensor, _ = transforms(pil, None)
        image_tensor = image_tensor.unsqueeze(0)
        proposals, x, class_logits, box_regression, box_features = run_to_box_head(model, model_reg, image_tensor)
        P = proposals[0].bbox
        W, H = proposals[0].size
        Rn, K = class_logits.shape
        assert box_regression.shape == (Rn, 4 * K)
        assert tuple(image_tensor.shape[-2:]) == (H, W)

        # cross-check against the fixture's own goldens (read only)
        g = load_file(os.path.join(gold_dir, name + ".safetensors"))
        cross[name] = {k: bool(torch.equal(g[k], {"proposals": P, "class_logits": class_logits,
                                                   "box_features": box_features}[k]))
                       for k in ("proposals", "class_logits", "box_features")}
        assert all(cross[name].values()), (name, cross[name])

        tensors[name + ".proposals"] = P
        tensors[name + ".class_logits"] = class_logits
        tensors[name + ".box_regression"] = box_regression
        tensors[name + ".image_wh"] = torch.tensor([W, H], dtype=torch.int64)

        prob = torch.softmax(class_logits, -1)
        with torch.no_grad():
            dec = coder.decode(box_regression, P)  # [R, 4K], for the checks only
        from maskrcnn_benchmark.structures.bounding_box import BoxList
        dec = BoxList(dec.reshape(-1, 4), (W, H), mode="xyxy").clip_to_image(remove_empty=False).bbox
        dec = dec.reshape(Rn, K, 4)
        counts[name], details[name] = {}, {}
        for vname, pp in post.items():
            res, retries = run_variant(pp, class_logits, box_regression, proposals, x)
            boxes = res.bbox
            labels = res.get_field("labels")
            scores = res.get_field("scores")
            feats = res.get_field("box_features")
            pidx = match_proposals(feats, box_features)
            N = boxes.shape[0]
            assert labels.dtype == torch.int64 and labels.shape == (N,) and scores.shape == (N,)
            f = int(vname[1])
            reg = vname.endswith("_reg")
            # where each value came from (checks only)
            if f in (0, 1):
                assert torch.equal(scores, prob[pidx, labels])
            else:
                s_best, l_best = prob[:, 1:].max(1)
                assert torch.equal(scores, s_best[pidx]) and torch.equal(labels, l_best[pidx] + 1)
            d = {"n": N, "n_score_ge_0.2": int((scores >= 0.2).sum()),
                 "n_score_gt_0.2": int((scores > 0.2).sum()),
                 "distinct_labels": int(labels.unique().numel()),
                 "distinct_proposals": int(pidx.unique().numel()),
                 "sorted_by_score_desc": bool(N == 0 or torch.all(scores[:-1] >= scores[1:])),
                 "score_thresh_retries": len(retries),
                 "score_range": [float(scores.min()), float(scores.max())] if N else None}
            if retries:
                d["retry_messages"] = [r.strip() for r in retries]
            if not reg:
                assert torch.equal(boxes, P[pidx])
                d["boxes_are"] = "proposals[proposal_index]"
            elif f in (0, 1):
                assert torch.equal(boxes, dec[pidx, labels])
                d["boxes_are"] = "clip(decode(box_regression, proposals))[proposal_index, label]"
            else:
                flat = dec.reshape(-1, 4)
                assert torch.equal(boxes, flat[pidx]), "filter 2 + regression: boxes not flat rows"
                d["boxes_are"] = ("clip(decode(...)) viewed as [R*K,4], row proposal_index, i.e. the decoded box "
                                  "of proposal proposal_index // K for class proposal_index % K "
                                  "(SGB indexes the R*K-row BoxList with proposal indices)")
                d["boxes_equal_class_mean_box"] = bool(torch.equal(boxes, dec.mean(1)[pidx]))
            if f == 0:
                lab = labels.tolist()
                d["class_major_order"] = lab == sorted(lab)
                d["descending_within_each_label"] = all(
                    bool(torch.all(scores[labels == j][:-1] >= scores[labels == j][1:])) for j in set(lab))
                # how many the class loop gives before the DETECTIONS_PER_IMG (kthvalue) cut:
                # the same post-processor with its caps lifted (restored afterwards)
                caps = pp.detections_per_img, pp.min_detections_per_img
                pp.detections_per_img, pp.min_detections_per_img = 10 ** 9, 0
                try:
                    d["n_before_detections_per_img_cut"] = len(
                        run_variant(pp, class_logits, box_regression, proposals, x)[0])
                finally:
                    pp.detections_per_img, pp.min_detections_per_img = caps
                d["proposals_under_several_labels"] = int(sum(1 for p in pidx.unique().tolist()
                                                              if (pidx == p).sum() > 1))
            counts[name][vname] = N
            details[name][vname] = d
            tensors["%s.%s.boxes" % (name, vname)] = boxes
            tensors["%s.%s.labels" % (name, vname)] = labels
            tensors["%s.%s.scores" % (name, vname)] = scores
            tensors["%s.%s.proposal_index" % (name, vname)] = pidx
        # The minimum-detections retry (PostProcessor.forward halves SCORE_THRESH up to 10 times
        # while fewer than MIN_DETECTIONS_PER_IMG are kept): filter 0 with the minimum raised to
        # the cap, 30, which no image reaches at 0.2. Stored as `f0_noreg_min30`.
        rcfg = R.make_cfg(sgb, R.EXTRACTION_OPTS + MDG.REDUCED_OPTS + [
            "MODEL.ROI_HEADS.NMS_FILTER", 0, "TEST.IGNORE_BOX_REGRESSION", True,
            "MODEL.ROI_HEADS.MIN_DETECTIONS_PER_IMG", 30])
        rpp = make_roi_box_post_processor(rcfg)
        rpp.eval()
        assert rpp.min_detections_per_img == 30 and rpp.score_thresh == 0.2
        res, retries = run_variant(rpp, class_logits, box_regression, proposals, x)
        assert rpp.score_thresh == 0.2, "forward restores the threshold"
        rp = match_proposals(res.get_field("box_features"), box_features)
        vname = "f0_noreg_min30"
        counts[name][vname] = len(res)
        details[name][vname] = {"n": len(res), "score_thresh_retries": len(retries),
                                "distinct_labels": int(res.get_field("labels").unique().numel()),
                                "n_score_ge_0.2": int((res.get_field("scores") >= 0.2).sum()),
                                "retry_messages": [r.strip() for r in retries]}
        tensors["%s.%s.boxes" % (name, vname)] = res.bbox
        tensors["%s.%s.labels" % (name, vname)] = res.get_field("labels")
        tensors["%s.%s.scores" % (name, vname)] = res.get_field("scores")
        tensors["%s.%s.proposal_index" % (name, vname)] = rp
        # the fixture's variant must reproduce the fixture's own end-to-end detections
        fx = {"det_proposal_index": tensors[name + ".f1_noreg.proposal_index"],
              "det_boxes": tensors[name + ".f1_noreg.boxes"],
              "det_labels": tensors[name + ".f1_noreg.labels"],
              "det_scores": tensors[name + ".f1_noreg.scores"]}
        for k, v in fx.items():
            cross[name]["f1_noreg." + k] = bool(torch.equal(g[k], v))
        assert all(cross[name].values()), (name, cross[name])
        log("%-16s R=%d K=%d %dx%d | " % (name, Rn, K, W, H) + "  ".join(
            "%s %2d(%d lab%s)" % (v, c, details[name][v]["distinct_labels"],
                                  ",retry%d" % details[name][v]["score_thresh_retries"]
                                  if details[name][v]["score_thresh_retries"] else "")
            for v, c in counts[name].items()))

    # non-trivial results: every variant has detections above the threshold; filter 0 several labels
    for name in counts:
        for vname, d in details[name].items():
            assert d["n"] > 0 and d.get("n_score_ge_0.2", 1) > 0, (name, vname, d)
        assert details[name]["f0_noreg"]["distinct_labels"] > 1 and details[name]["f0_reg"]["distinct_labels"] > 1


    assert sum(details[n]["f0_noreg_min30"]["score_thresh_retries"] for n in details) > 0, \
        "the retry path must run on some image"
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    out_st = os.path.join(gold_dir, OUT_NAME + ".safetensors")
    out_js = os.path.join(gold_dir, OUT_NAME + ".json")
    tmp = out_st + ".tmp"
    save_file(tensors, tmp, metadata={
        "producer": "tools/reference/make_postprocess_goldens.py",
        "op": "SGB maskrcnn_benchmark.modeling.roi_heads.box_head.inference.PostProcessor.forward, "
              "NMS_FILTER {0,1,2} x TEST.IGNORE_BOX_REGRESSION {True,False}, legacy +1 NMS"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_st)
    size = os.path.getsize(out_st)

    import cv2
    import PIL
    import safetensors
    meta = {
        "command": " ".join(["python", "tools/reference/make_postprocess_goldens.py", "SGB_PATH"] + sys.argv[2:]),
        "command_run": ".venv-ref/bin/python tools/reference/make_postprocess_goldens.py " + " ".join(sys.argv[1:]),
        "file": "goldens/%s.safetensors (%d bytes)" % (OUT_NAME, size),
        "sgb_expected_commit": MDG.SGB_COMMIT,
        "sgb_files_fingerprint": {"sha256_of_path_blobsha_lines": fingerprint[0], "num_files": fingerprint[1],
                                  "matches_commit": fingerprint[0] == MDG.SGB_FINGERPRINT,
                                  "how": "tools/reference/sgb_runtime.py sgb_fingerprint"},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__,
                     "pillow": PIL.__version__, "opencv": cv2.__version__,
                     "safetensors": safetensors.__version__},
        "threads": args.threads,
        "runtime_patches": R.PATCHES,
        "model": "the fixture's reduced AttrRCNN (make_detector_goldens.build_model with its config, "
                 "meta.json model.opts), FIXTURE_DIR/model.pth loaded with SGB's DetectronCheckpointer; "
                 "a second copy built with TEST.IGNORE_BOX_REGRESSION False supplies box_regression from its "
                 "FastRCNNPredictor.bbox_pred (the checkpoint's roi_heads.box.predictor.bbox_pred.*, seeded "
                 "random: weight randn/sqrt(128), bias 0.1*randn, never rescaled). Proposals, res5 features and "
                 "class logits of both copies are asserted bit-identical, and equal to the fixture's "
                 "goldens/<image>.safetensors proposals / class_logits / box_features.",
        "nms": {"used": nms_fn.__name__,
                "what": "legacy maskrcnn-benchmark NMS (+1 areas, suppress if IoU > t, stable descending "
                        "score order), tools/reference/sgb_runtime.py install_legacy_nms(suppress_on_equal=False), "
                        "patched into boxlist_ops._box_nms (filters 0 and 1 via boxlist_nms) and "
                        "box_head.inference.box_nms (filter 2), as for the fixture",
                "legacy_plus_one": True, "suppress_on_equal": False},
        "config": {"common": "the fixture's config: SCORE_THRESH 0.2, ROI_HEADS.NMS 0.5, DETECTIONS_PER_IMG 30, "
                             "MIN_DETECTIONS_PER_IMG 10, TEST.OUTPUT_FEATURE True, CLS_AGNOSTIC_BBOX_REG False, "
                             "ROI_BOX_HEAD.FORCE_BOXES False, BBOX_AUG off, BBOX_REG_WEIGHTS (10,10,5,5); "
                             "num classes K=31 (column 0 background)",
                   "variants": {"f%d_%s" % (f, t): {"MODEL.ROI_HEADS.NMS_FILTER": f,
                                                    "TEST.IGNORE_BOX_REGRESSION": i}
                                for f in FILTERS for i, t in REGRESSION},
                   "post_processor": "make_roi_box_post_processor(cfg of the variant), called as ROIBoxHead does: "
                                     "pp((class_logits, box_regression or None), [proposals], res5_output) -- "
                                     "box_regression is None for *_noreg (what FastRCNNPredictor returns then); "
                                     "res5_output [R,128,7,7] is avg-pooled by the post-processor itself"},
        "images": {os.path.splitext(fn)[0]: fn for fn in IMAGES},
        "decode_and_transform": "as the fixture: cv2.imread + tools/demo/detect_utils.cv2Img_to_Image, then "
                                "build_transforms(cfg, is_train=False) (meta.json preprocessing)",
        "tensors": {
            "{img}.proposals": "[R,4] f32 xyxy resized-image pixels, RPN output order (= fixture goldens' proposals)",
            "{img}.class_logits": "[R,31] f32 (= fixture goldens' class_logits)",
            "{img}.box_regression": "[R,124] f32 FastRCNNPredictor.bbox_pred, column 4*j+{dx,dy,dw,dh} for class j "
                                    "(j=0 background included)",
            "{img}.image_wh": "[2] i64 (width, height) of the resized image = BoxList.size used for clipping",
            "{img}.{variant}.boxes": "[N,4] f32 returned BoxList.bbox (resized-image pixels)",
            "{img}.{variant}.labels": "[N] i64 returned 'labels'",
            "{img}.{variant}.scores": "[N] f32 returned 'scores'",
            "{img}.{variant}.proposal_index": "[N] i64 index into {img}.proposals: the unique proposal whose box "
                                              "features (predictor.avgpool of the res5 output) equal the returned "
                                              "'box_features' row exactly (asserted unique)",
            "variants": sorted(post),
            "order": "every per-variant tensor keeps the order PostProcessor returns: filter 0 is class-major "
                     "(classes 1..30 ascending, within a class the NMS keep order = descending score), NOT "
                     "sorted by score overall; filters 1 and 2 are sorted by score descending",
        },
        "shapes": {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in tensors.items()},
        "counts": counts,
        "coverage": {
            "score_thresh_retry_loop_exercised": any(d["score_thresh_retries"] for x in details.values()
                                                     for d in x.values()),
            "filter0_detections_per_img_cut_exercised": sorted(
                "%s.%s" % (n, v) for n, x in details.items() for v, d in x.items()
                if d.get("n_before_detections_per_img_cut", 0) > 30),
            "min_detections_padding_below_thresh": sorted(
                "%s.%s" % (n, v) for n, x in details.items() for v, d in x.items()
                if d["n"] > d["n_score_ge_0.2"]),
            "filter0_proposal_under_several_labels": sorted(
                "%s.%s" % (n, v) for n, x in details.items() for v, d in x.items()
                if d.get("proposals_under_several_labels", 0) > 0),
        },
        "details": details,
        "cross_checks": cross,
        "code_path_notes": [
            "filter 0 (filter_results): per class j>=1 keeps prob > SCORE_THRESH (strict), NMS 0.5 on the class's "
            "boxes, concatenated class by class (class-major, not re-sorted); the same proposal may appear under "
            "several labels; with > 30 the kthvalue cut keeps score >= the 30th largest (ties may keep more). "
            "With < 10 detections PostProcessor.forward halves score_thresh and re-filters, up to 10 times "
            "(details.*.score_thresh_retries; it prints a message each time).",
            "filter 1 (filter_results_peter): NMS at a hard-coded 0.3 per class over all R proposals; one "
            "detection per proposal (best surviving class); sorted descending; kept: #(score >= 0.2) clamped to "
            "[10, 30]. The forward's retry loop only triggers with < 10 candidates.",
            "filter 2 (filter_results_fast): best foreground class per proposal; NMS 0.5 once over the boxes with "
            "w >= 0, h >= 0 and score > 0.002; sorted descending; top clamp(#(score >= 0.2), 10, 30); no retry loop "
            "(forward skips it for filter 2). With regression the NMS runs on the MEAN over all 31 classes "
            "(background included) of the clipped decoded boxes, but the RETURNED box is boxlist.bbox[keep] of a "
            "BoxList whose bbox still has R*K rows (proposal r, class j at row r*K+j): the box returned for "
            "proposal p is the decoded box of proposal p // 31, class p % 31 -- neither the mean box nor a box of "
            "proposal p (asserted; details.*.f2_reg.boxes_are). scores/labels/box_features are proposal p's.",
            "with regression (filters 0/1): boxes are the class's decoded box (BoxCoder weights (10,10,5,5), "
            "dw/dh clamped at log(1000/16), x2 = ctr + w/2 - 1), clipped to [0, W-1] x [0, H-1] "
            "(clip_to_image(remove_empty=False)); filter 1's per-class NMS then runs on class-specific boxes.",
        ],
        "seconds": round(time.time() - t0, 1),
    }
    tmp = out_js + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_js)
    log("wrote %s (%d bytes) and %s, %.0f s" % (out_st, size, out_js, time.time() - t0))


if __name__ == "__main__":
    main()
