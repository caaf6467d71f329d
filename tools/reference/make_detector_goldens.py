#!/usr/bin/env python3
"""Golden fixtures for oscar-detect (the Rust port of VinVL's X152-C4 + attribute detector),
produced by running the reference's OWN modelling code: microsoft/scene_graph_benchmark
(SGB) @ 8e14944, unmodified, imported from SGB_PATH (its code is never copied into this
repository). See /work/shared/reference/detector-spec.md for the behaviour.

Regenerate (from the repository root; Python 3.11):

    # 1. SGB at commit 8e14944 (github.com/microsoft/scene_graph_benchmark), either a clone
    #    checked out at that commit, or an exported snapshot (then pass --sgb-commit, since an
    #    export has no .git; meta.json also records a fingerprint of the SGB files that were run,
    #    checked against the one computed from the commit's git tree):
    git clone https://github.com/microsoft/scene_graph_benchmark /tmp/sgb
    git -C /tmp/sgb checkout 8e14944f3cc9f178b1c5626482fad509068f1395
    # 2. the reference environment: .venv-ref already has torch 2.15.0, numpy 2.4.6,
    #    safetensors 0.8.0; add (Pillow 12.1.1: from 12.2 on, Pillow runs the vertical pass
    #    first for some shapes, which changes resized pixels; every Pillow the reference and its
    #    released features ever ran with resized horizontally first):
    .venv-ref/bin/pip install yacs==0.1.8 ninja==1.13.2 pillow==12.1.1
    .venv-ref/bin/pip install --no-deps torchvision==0.29.2 scikit-image==0.26.0 opencv-python-headless==5.0.0.93
    # 3. the fixtures (~70 s on 2 cores, ~60 s of which compiles SGB's csrc/cpu/{nms_cpu,
    #    ROIAlign_cpu}.cpp for the cross-checks; --no-csrc-check skips that part):
    .venv-ref/bin/python tools/reference/make_detector_goldens.py /tmp/sgb \
        crates/oscar-detect/tests/fixtures/detector --sgb-commit 8e14944f3cc9f178b1c5626482fad509068f1395

The fixture in the repository was made exactly so, from an exported snapshot of 8e14944, with
the images already present (they are reused; see below). Every tensor is reproducible bit for
bit from the same images with the same torch build (checked by regenerating twice).

torchvision is installed with --no-deps because 0.29.2 pins an older torch; its compiled ops
(nms, roi_align) load and run with torch 2.15 (checked at run time). scikit-image is only a
source of sample photos (its data files are read directly; the package is not imported).
opencv is SGB's image decoder (tools/demo: cv2.imread).

What is written to OUT_DIR (meta.json describes every file and tensor):
  detector.json, labelmap.json, model.pth, full_size_keys.json, meta.json,
  images/*, goldens/<image>.safetensors, goldens/roi_align.safetensors, goldens/nms.safetensors

Existing OUT_DIR/images are reused (their bytes are inputs); pass --remake-images to
recreate them from scikit-image's sample data (Pillow/libjpeg versions may change bytes).
"""
import argparse
import base64
import hashlib
import importlib.util
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgb_runtime as R  # noqa: E402

SEED = 20240611
NUM_CLASSES = 31
# NUM_ATTRIBUTES: the brief asked for 13, but SGB's AttributePostProcessor does
# torch.topk(scores, MAX_NUM_ATTR_PER_OBJ=16, dim=1), which raises when there are fewer than
# 16 attribute columns. 21 (20 attributes + "no attribute") keeps the real top-16 rule.
NUM_ATTRIBUTES = 21
TINY_BODY = "R-TINY-C4"
CLS_PASS_TARGET = 0.215  # gives images below MIN (padded to 10) and above MAX (capped at 30)
SGB_COMMIT = "8e14944f3cc9f178b1c5626482fad509068f1395"
# sgb_runtime.sgb_fingerprint of SGB @ SGB_COMMIT, computed from that commit's git tree
SGB_FINGERPRINT = "c5932252c4547a6d92fc59845c829c087c0e72ca51cdfbc5f8f28bbde2feb090"  # 217 files

REDUCED_OPTS = [
    "MODEL.BACKBONE.CONV_BODY", TINY_BODY,
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8,
    "MODEL.RESNETS.NUM_GROUPS", 4,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 2,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 64,
    "MODEL.RESNETS.STRIDE_IN_1X1", False,
    "MODEL.ROI_BOX_HEAD.NUM_CLASSES", NUM_CLASSES,
    "MODEL.ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES", NUM_ATTRIBUTES,
    "MODEL.ROI_ATTRIBUTE_HEAD.CLS_EMD_DIM", 16,
    "MODEL.ROI_ATTRIBUTE_HEAD.ATTR_EMD_DIM", 32,
    "MODEL.ROI_ATTRIBUTE_HEAD.POSTPROCESS_ATTRIBUTES_THRESHOLD", 0.05,
    "INPUT.MIN_SIZE_TEST", 192,
    "INPUT.MAX_SIZE_TEST", 320,
    "MODEL.RPN.PRE_NMS_TOP_N_TEST", 1000,
    "MODEL.RPN.POST_NMS_TOP_N_TEST", 100,
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", 30,
    "MODEL.ROI_HEADS.MIN_DETECTIONS_PER_IMG", 10,
]
STAGES = ((1, 2, False), (2, 2, False), (3, 3, True))

# Images whose resized uint8 array and normalized input tensor are stored in full.
FULL_INPUT_IMAGES = ("wide_strip", "tall_strip", "synthetic_small")


def log(*a):
    print(*a, flush=True)


def sha256(b):
    return hashlib.sha256(b).hexdigest()


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------
def skimage_data_dir():
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        raise SystemExit("scikit-image is needed for the sample photos: pip install --no-deps scikit-image")
    return os.path.join(spec.submodule_search_locations[0], "data")


def make_images(img_dir):
    """Writes the input images. Returns {name: description}."""
    import cv2
    D = skimage_data_dir()
    os.makedirs(img_dir, exist_ok=True)
    rs = np.random.RandomState(SEED)
    desc = {}

    def load(name, mode="RGB"):
        return Image.open(os.path.join(D, name)).convert(mode)

    def fit(im, longest):
        w, h = im.size
        s = longest / max(w, h)
        return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)

    # Sizes are chosen for the fixture budget: square or extreme aspect ratios keep the C4
    # grid (and so the goldens) small.
    # 1. JPEG, square photo (downscaled 320 -> 192)
    im = fit(load("astronaut.png"), 320)
    im.save(os.path.join(img_dir, "astronaut.jpg"), quality=88)
    desc["astronaut.jpg"] = "skimage astronaut, 320x320, JPEG q88"
    # 2. JPEG with EXIF Orientation 6: stored rotated 90 deg counter-clockwise, displayed upright
    im = fit(load("coffee.png"), 330)  # 330x220 displayed
    stored = im.transpose(Image.ROTATE_90)  # 220x330 stored
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(os.path.join(img_dir, "coffee_exif6.jpg"), quality=88, exif=exif.tobytes())
    desc["coffee_exif6.jpg"] = ("skimage coffee; pixels stored 220x330 (rotated 90 deg CCW) with EXIF "
                                "Orientation=6, so it displays upright as 330x220; JPEG q88")
    # 3. JPEG, square crop, downscaled 240 -> 192
    im = load("rocket.jpg")
    w, h = im.size
    m = min(w, h)
    im = im.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)).resize((240, 240), Image.LANCZOS)
    im.save(os.path.join(img_dir, "rocket.jpg"), quality=85)
    desc["rocket.jpg"] = "skimage rocket, centre square crop 240x240, JPEG q85"
    # 4. very wide strip (JPEG): resizes to 321x45 (ow exceeds MAX_SIZE_TEST by rounding)
    im = load("motorcycle_left.png")
    w, h = im.size
    im = im.crop((0, h // 2 - 50, w, h // 2 + 50)).resize((400, 56), Image.LANCZOS)
    im.save(os.path.join(img_dir, "wide_strip.jpg"), quality=90)
    desc["wide_strip.jpg"] = "skimage motorcycle_left, horizontal strip 400x56, JPEG q90"
    # 5. very tall strip (PNG)
    im = load("chelsea.png")
    w, h = im.size
    im = im.crop((w // 2 - 40, 0, w // 2 + 5, h)).resize((60, 400), Image.LANCZOS)
    im.save(os.path.join(img_dir, "tall_strip.png"))
    desc["tall_strip.png"] = "skimage chelsea, vertical strip 60x400, RGB PNG"
    # 6. greyscale PNG (mode L), square, downscaled 200 -> 192
    im = load("camera.png", "L").resize((200, 200), Image.LANCZOS)
    im.save(os.path.join(img_dir, "camera_grey.png"))
    desc["camera_grey.png"] = "skimage camera, 200x200, 8-bit greyscale PNG"
    # 7. RGBA PNG (alpha is a gradient; SGB's decoders drop alpha, they do not composite)
    im = load("chelsea.png")
    w, h = im.size
    im = im.crop(((w - h) // 2, 0, (w - h) // 2 + h, h)).resize((160, 160), Image.LANCZOS)
    a = np.asarray(im)
    alpha = np.tile(np.linspace(40, 255, a.shape[1]).astype(np.uint8), (a.shape[0], 1))
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(os.path.join(img_dir, "chelsea_rgba.png"))
    desc["chelsea_rgba.png"] = "skimage chelsea, square crop 160x160 (upscaled to 192), RGBA PNG with an alpha gradient"
    # 8. 16-bit RGB PNG (written with OpenCV; Pillow cannot write 16-bit RGB). Low byte random,
    #    high byte = the 8-bit photo, so only a decoder that takes v>>8 gets the photo back
    #    exactly (rounding v/257 differs). Upscaled 120 -> 192.
    im = fit(load("ihc.png"), 120)
    a = np.asarray(im).astype(np.uint16)
    v = (a << 8) | rs.randint(0, 256, size=a.shape).astype(np.uint16)
    cv2.imwrite(os.path.join(img_dir, "ihc_16bit.png"), np.ascontiguousarray(v[:, :, ::-1]))
    desc["ihc_16bit.png"] = "skimage ihc, %dx%d, 16-bit RGB PNG (high byte = photo, low byte random)" % im.size
    # 9. palette PNG (mode P), 4:1
    im = load("coffee.png")
    w, h = im.size
    im = im.crop((0, h // 2 - 75, w, h // 2 + 75)).resize((240, 60), Image.LANCZOS)
    im = im.quantize(colors=48, method=Image.Quantize.MEDIANCUT)
    im.save(os.path.join(img_dir, "coffee_palette.png"))
    desc["coffee_palette.png"] = "skimage coffee band, 240x60, 48-colour palette PNG"
    # 10. synthetic, tiny and very wide: 64x4 upscaled 5x to 320x20 (C4 is 2x20)
    yy, xx = np.mgrid[0:4, 0:64]
    a = np.stack([xx * 255 // 63, yy * 255 // 3, 255 - xx * 255 // 63], -1).astype(np.uint8)
    a[1:3, 5:12] = (250, 250, 20)
    a[0:4, 20:24] = (20, 200, 60)
    a[2:4, 30:44] = (240, 30, 30)
    a[0, 50:] = 0
    Image.fromarray(a).save(os.path.join(img_dir, "synthetic_small.png"))
    desc["synthetic_small.png"] = "synthetic 64x4 gradient + blocks (upscaled 5x to 320x20)"
    # 11. synthetic 240x192: already at the target size, so the resize is the identity
    yy, xx = np.mgrid[0:192, 0:240]
    a = np.stack([(xx * 255 // 239), (yy * 255 // 191), ((xx + yy) * 255 // 430)], -1).astype(np.uint8)
    im = Image.fromarray(a)
    d = ImageDraw.Draw(im)
    d.rectangle([30, 30, 120, 150], fill=(10, 10, 10))
    d.ellipse([130, 20, 230, 120], fill=(255, 255, 255))
    d.rectangle([0, 170, 239, 191], fill=(0, 120, 255))
    d.polygon([(120, 180), (170, 130), (220, 185)], fill=(240, 30, 30))
    noise = rs.randint(-3, 4, size=(192, 240, 3))
    a = np.clip(np.asarray(im).astype(np.int32) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(a).save(os.path.join(img_dir, "synthetic_exact.png"))
    desc["synthetic_exact.png"] = "synthetic 240x192 gradient + shapes + noise (no resize needed)"
    return desc


def decode_sgb_demo(path, detect_utils):
    """SGB tools/demo/demo_image.py: cv2.imread(path) then detect_utils.cv2Img_to_Image
    (BGR->RGB, PIL.Image.fromarray). cv2.imread applies the EXIF orientation, drops alpha,
    expands grey/palette to 3 channels and maps 16-bit samples to 8 bits with v >> 8."""
    import cv2
    cv2_img = cv2.imread(path)
    return detect_utils.cv2Img_to_Image(cv2_img), cv2_img


def decode_sgb_tsv_raw(path):
    """SGB's TSV reader (data/datasets/utils/image_ops.img_from_base64) applied to the raw file
    bytes: PIL.Image.open(...).convert('RGB'). No EXIF orientation."""
    from maskrcnn_benchmark.data.datasets.utils.image_ops import img_from_base64
    with open(path, "rb") as f:
        return img_from_base64(base64.b64encode(f.read()))


def load_detect_utils(sgb_path):
    p = os.path.join(sgb_path, "tools", "demo", "detect_utils.py")
    spec = importlib.util.spec_from_file_location("sgb_demo_detect_utils", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------
def register_tiny_body():
    from maskrcnn_benchmark.modeling import registry
    from maskrcnn_benchmark.modeling.backbone import backbone as bb
    from maskrcnn_benchmark.modeling.backbone import resnet
    if TINY_BODY not in resnet._STAGE_SPECS:
        resnet._STAGE_SPECS.register(TINY_BODY, tuple(
            resnet.StageSpec(index=i, block_count=c, return_features=r) for (i, c, r) in STAGES))
        registry.BACKBONES.register(TINY_BODY, bb.build_resnet_backbone)


def build_model(cfg):
    from scene_graph_benchmark.AttrRCNN import AttrRCNN
    model = AttrRCNN(cfg)
    fe = model.roi_heads.box.feature_extractor
    if getattr(fe, "trans_conv", None) is not None:
        # ResNet50Conv5ROIFeatureExtractor adds a 3x3 conv in->1024 whenever the backbone does
        # not give 1024 channels (meant for FPN). The real model has 1024 and no trans_conv; the
        # reduced model (64 channels, res5 built for 64 in) removes it so that its module tree
        # matches the real one. The attribute head shares this same module object.
        fe.trans_conv = None
    assert model.attribute.feature_extractor is fe
    model.to(cfg.MODEL.DEVICE)
    model.eval()
    return model


def frozen_bns(module):
    from maskrcnn_benchmark.layers import FrozenBatchNorm2d
    return [(n, m) for n, m in module.named_modules() if isinstance(m, FrozenBatchNorm2d)]


def random_init(model, g):
    """Seeded random weights: He-normal convs, FrozenBN placeholders (calibrated later)."""
    import torch.nn as nn
    from maskrcnn_benchmark.layers import FrozenBatchNorm2d
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            elif isinstance(m, FrozenBatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)


def calibrate_bns(module, run, g):
    """Data-dependent FrozenBN statistics: a forward pre-hook sets each BN's running_mean /
    running_var from the actual statistics of its input (times random factors), in forward
    order, during one pass; weight/bias are random. bn3 and the downsample BN (the two summed
    in a bottleneck) get smaller weights so that activations stay O(1) through the stages."""
    hooks = []
    for name, m in frozen_bns(module):
        def pre(mod, inp, name=name):
            x = inp[0]
            c = x.shape[1]
            mean = x.mean(dim=(0, 2, 3))
            std = x.std(dim=(0, 2, 3)).clamp(min=1e-2)
            mod.running_mean.copy_(mean + 0.2 * std * torch.randn(c, generator=g))
            mod.running_var.copy_((std * (0.8 + 0.4 * torch.rand(c, generator=g))) ** 2)
            summed = name.endswith("bn3") or name.endswith("downsample.1")
            lo, hi = (0.35, 0.75) if summed else (0.7, 1.3)
            mod.weight.copy_(lo + (hi - lo) * torch.rand(c, generator=g))
            mod.bias.copy_(0.15 * torch.randn(c, generator=g) + (0.0 if summed else 0.1))
        hooks.append(m.register_forward_pre_hook(pre))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()


def scan_scale(f, target, lo=1e-3, hi=1e3, n=240, after_peak=False):
    """Pick s on a log grid with f(s) closest to target; with after_peak, only at or beyond
    the argmax of f (the attribute count rises from 0 at s->0, where every probability is
    1/21 < 0.05, then falls towards 1 as the softmax sharpens)."""
    grid = np.logspace(np.log10(lo), np.log10(hi), n)
    vals = np.array([f(s) for s in grid])
    start = int(np.argmax(vals)) if after_peak and vals.max() >= target else 0
    i = start + int(np.argmin(np.abs(vals[start:] - target)))
    return float(grid[i]), float(vals[i])


def make_weights(model, calib_images, g):
    """Random seeded weights, scaled on calibration images so the outputs are non-degenerate."""
    from maskrcnn_benchmark.structures.image_list import to_image_list
    random_init(model, g)
    stats = {}
    ims = [to_image_list(t) for t in calib_images]
    with torch.no_grad():
        # backbone BNs
        calibrate_bns(model.backbone, lambda: model.backbone(ims[0].tensors), g)
        feats = [model.backbone(im.tensors) for im in ims]
        head = model.rpn.head
        t = [torch.relu(head.conv(f[0])) for f in feats]
        # RPN objectness logits: std 2.0, per-anchor bias spread, mean about -1.5
        lg = torch.cat([head.cls_logits(x).flatten() for x in t])
        head.cls_logits.weight.mul_(2.0 / lg.std())
        head.cls_logits.bias.copy_(-1.5 + 0.7 * torch.randn(head.cls_logits.bias.shape, generator=g))
        # RPN deltas: std 0.2 (dx, dy, dw, dh)
        dl = torch.cat([head.bbox_pred(x).flatten() for x in t])
        head.bbox_pred.weight.mul_(0.2 / dl.std())
        head.bbox_pred.bias.copy_(0.05 * torch.randn(head.bbox_pred.bias.shape, generator=g))
        props = [model.rpn(im, f)[0] for im, f in zip(ims, feats)]
        # res5 head BNs, calibrated on the calibration proposals
        fe = model.roi_heads.box.feature_extractor
        calibrate_bns(fe, lambda: fe(feats[0], props[0]), g)
        pooled = torch.cat([model.roi_heads.box.predictor.avgpool(fe(f, p)).flatten(1)
                            for f, p in zip(feats, props)])
        # Class logits: centre and scale so that a fraction CLS_PASS_TARGET of the calibration
        # proposals have a best foreground probability >= 0.2 (before the per-class NMS).
        cls = model.roi_heads.box.predictor.cls_score
        base_w = cls.weight.clone()
        mu = pooled.mean(0)

        def frac_pass(s):
            w = base_w * s
            b = -(w @ mu)
            b[0] += 1.0  # background a little more likely
            p = torch.softmax(pooled @ w.t() + b, -1)
            return (p[:, 1:].max(1)[0] >= 0.2).float().mean().item()

        s, v = scan_scale(frac_pass, CLS_PASS_TARGET)
        stats["calib_frac_proposals_fg_ge_0.2"] = v
        cls.weight.copy_(base_w * s)
        b = -(cls.weight @ mu)
        b[0] += 1.0
        cls.bias.copy_(b + 0.3 * torch.randn(b.shape, generator=g))
        stats["cls_score_scale"] = s
        # Attribute head: fc_attr on [pool5, cls_embedding(label)], then attr_score; scale so
        # that on average ~3 attributes per box pass 0.05.
        ap = model.attribute.predictor
        labels = torch.softmax(cls(pooled), -1)[:, 1:].argmax(1) + 1
        emb = ap.cls_embedding(labels)
        z = torch.cat([pooled, emb], 1)
        ap.fc_attr.weight.mul_(1.0 / (z @ ap.fc_attr.weight.t()).std())
        h = torch.relu(ap.fc_attr(z))
        base_a = ap.attr_score.weight.clone()
        hmu = h.mean(0)

        def mean_pass(s):
            w = base_a * s
            p = torch.softmax(h @ w.t() - w @ hmu, -1)
            p[:, 0] = 0
            return (p > 0.05).float().sum(1).mean().item()

        s, v = scan_scale(mean_pass, 3.0, after_peak=True)
        stats["calib_mean_attrs_gt_0.05"] = v
        ap.attr_score.weight.copy_(base_a * s)
        ab = -(ap.attr_score.weight @ hmu)
        ap.attr_score.bias.copy_(ab + 0.3 * torch.randn(ab.shape, generator=g))
        stats["attr_score_scale"] = s
    return stats


# --------------------------------------------------------------------------------------
# Running the reference, stage by stage and end to end
# --------------------------------------------------------------------------------------
class Capture:
    """Forward hooks on the reference's own submodules; records every call in order."""

    def __init__(self, model):
        self.calls = {}
        self.handles = []
        mods = {
            "backbone": model.backbone,
            "rpn.head": model.rpn.head,
            "rpn": model.rpn,
            "box.feature_extractor": model.roi_heads.box.feature_extractor,
            "box.predictor": model.roi_heads.box.predictor,
            "box.post_processor": model.roi_heads.box.post_processor,
            "attribute.predictor": model.attribute.predictor,
            "attribute.post_processor": model.attribute.post_processor,
        }
        for k, m in mods.items():
            self.handles.append(m.register_forward_hook(self._hook(k)))

    def _hook(self, key):
        def h(mod, inp, out):
            self.calls.setdefault(key, []).append((inp, out))
        return h

    def reset(self):
        self.calls = {}

    def close(self):
        for h in self.handles:
            h.remove()


def run_reference(model, image_tensor):
    """End to end through AttrRCNN.forward, with hooks. Returns (prediction, captured)."""
    from maskrcnn_benchmark.structures.image_list import to_image_list
    cap = Capture(model)
    try:
        with torch.no_grad():
            pred = model(to_image_list(image_tensor))
    finally:
        cap.close()
    return pred[0], cap.calls


def run_stagewise(model, image_tensor):
    """The same computation, calling the reference's submodules one at a time."""
    from maskrcnn_benchmark.structures.image_list import to_image_list
    with torch.no_grad():
        images = to_image_list(image_tensor)
        features = model.backbone(images.tensors)
        objectness, deltas = model.rpn.head(features)
        anchors = model.rpn.anchor_generator(images, features)
        proposals = model.rpn.box_selector_test(anchors, objectness, deltas)
        box = model.roi_heads.box
        x = box.feature_extractor(features, proposals)
        class_logits, box_regression = box.predictor(x)
        dets = box.post_processor((class_logits, box_regression), proposals, x)
        xa = model.attribute.feature_extractor(features, dets)
        labels = torch.cat([d.get_field("labels").view(-1) for d in dets])
        attr_logits, attr_feat = model.attribute.predictor(xa, labels)
        final = model.attribute.post_processor(attr_logits, dets, attr_feat)
    return dict(c4=features[0], obj=objectness[0], deltas=deltas[0], proposals=proposals[0],
                x=x, class_logits=class_logits, dets=dets[0], attr_logits=attr_logits,
                final=final[0])


def golden_tensors(model, image_tensor, orig_wh):
    pred, calls = run_reference(model, image_tensor)
    c4 = calls["backbone"][0][1][0]
    obj = calls["rpn.head"][0][1][0][0]
    deltas = calls["rpn.head"][0][1][1][0]
    proposals = calls["rpn"][0][1][0][0]
    # feature_extractor runs twice: box head on the proposals, attribute head on the detections
    assert len(calls["box.feature_extractor"]) == 2
    x = calls["box.feature_extractor"][0][1]
    xa = calls["box.feature_extractor"][1][1]
    class_logits, box_reg = calls["box.predictor"][0][1]
    assert box_reg is None  # TEST.IGNORE_BOX_REGRESSION
    dets = calls["box.post_processor"][0][1][0]
    attr_logits = calls["attribute.predictor"][0][1][0]
    box_features = model.roi_heads.box.predictor.avgpool(x).flatten(1)
    attr_pool5 = model.attribute.predictor.avgpool(xa).flatten(1)

    # stage-by-stage run must agree exactly with the end-to-end one
    st = run_stagewise(model, image_tensor)
    for a, b, what in ((c4, st["c4"], "c4"), (obj, st["obj"], "objectness"),
                       (deltas, st["deltas"], "deltas"), (proposals.bbox, st["proposals"].bbox, "proposals"),
                       (x, st["x"], "res5"), (class_logits, st["class_logits"], "class_logits"),
                       (pred.bbox, st["final"].bbox, "det boxes"),
                       (attr_logits, st["attr_logits"], "attr_logits"),
                       (pred.get_field("attr_scores"), st["final"].get_field("attr_scores"), "attr_scores")):
        assert torch.equal(a, b), "stage-wise and end-to-end differ: " + what

    P = proposals.bbox
    det_boxes = pred.bbox
    D = det_boxes.shape[0]
    # which proposal each detection is (IGNORE_BOX_REGRESSION: the box is the proposal's)
    idx = []
    for i in range(D):
        m = ((P == det_boxes[i]).all(1) & (box_features == pred.get_field("box_features")[i]).all(1))
        nz = torch.nonzero(m).flatten()
        assert nz.numel() == 1, "detection %d matches %d proposals" % (i, nz.numel())
        idx.append(nz.item())
    det_idx = torch.tensor(idx, dtype=torch.int64)
    assert torch.equal(pred.get_field("labels"), dets.get_field("labels"))
    # SGB tools/demo/detect_utils.py: prediction.resize((img_width, img_height))
    orig = pred.resize(tuple(orig_wh))
    t = {
        "c4": c4,
        "rpn_objectness_logits": obj,
        "rpn_box_deltas": deltas,
        "proposals": P,
        "proposal_objectness": proposals.get_field("objectness"),
        "box_features": box_features,
        "class_logits": class_logits,
        "det_proposal_index": det_idx,
        "det_boxes": det_boxes,
        "det_boxes_orig": orig.bbox,
        "det_labels": pred.get_field("labels"),
        "det_scores": pred.get_field("scores"),
        "det_box_features": pred.get_field("box_features"),
        "det_scores_all": pred.get_field("scores_all"),
        "attr_logits": attr_logits,
        "attr_labels": pred.get_field("attr_labels"),
        "attr_scores": pred.get_field("attr_scores"),
    }
    # the attribute head's re-run of ROIAlign+res5 on the detection boxes equals box_features
    # of the chosen proposals (spec §2.6): record how exactly
    info = {
        "attr_pool5_vs_box_features_max_abs_diff": float((attr_pool5 - pred.get_field("box_features")).abs().max()) if D else 0.0,
    }
    # Two counts from re-running SGB's own post-processors with their caps lifted:
    # RPN boxes surviving NMS 0.7 (before the top-100 cut) and detections scoring >= 0.2
    # before the DETECTIONS_PER_IMG cut (shows whether the 10/30 limits applied).
    with torch.no_grad():
        sel = model.rpn.box_selector_test
        keep_n = sel.post_nms_top_n
        sel.post_nms_top_n = 10 ** 9
        try:
            from maskrcnn_benchmark.structures.image_list import to_image_list
            anchors = model.rpn.anchor_generator(to_image_list(image_tensor), [c4])
            info["rpn_boxes_after_nms_uncapped"] = len(sel(anchors, [obj], [deltas])[0])
        finally:
            sel.post_nms_top_n = keep_n
        pp = model.roi_heads.box.post_processor
        caps = pp.detections_per_img, pp.min_detections_per_img
        pp.detections_per_img, pp.min_detections_per_img = 10 ** 9, 0
        try:
            r = pp((class_logits, None), [proposals], x)[0]
            info["detections_ge_0.2_uncapped"] = int((r.get_field("scores") >= pp.score_thresh).sum())
        finally:
            pp.detections_per_img, pp.min_detections_per_img = caps
    return {k: v.detach().contiguous() for k, v in t.items()}, info


# --------------------------------------------------------------------------------------
# Op goldens
# --------------------------------------------------------------------------------------
def nms_case(g):
    """~200 boxes: clusters, small boxes (where +1 matters), exact score ties, and pairs whose
    legacy (+1) IoU is exactly 0.3 / 0.5 / 0.7 in float32."""
    boxes, scores = [], []
    centers = torch.rand(8, 2, generator=g) * torch.tensor([300.0, 200.0])
    for i in range(130):
        c = centers[i % 8]
        wh = torch.exp(torch.rand(2, generator=g) * 4.0)  # 1..55 px
        xy = c + torch.randn(2, generator=g) * 12
        boxes.append(torch.cat([xy - wh / 2, xy + wh / 2]))
        scores.append(torch.rand(1, generator=g).item())
    for i in range(30):  # tiny boxes, widths -0.9..3 px: +1 dominates the area
        xy = centers[i % 4] + torch.randn(2, generator=g) * 2
        wh = torch.rand(2, generator=g) * 3.9 - 0.9
        boxes.append(torch.cat([xy, xy + wh]))
        scores.append(torch.rand(1, generator=g).item())
    # exact ties: 10 pairs of identical scores, overlapping and not
    for i in range(10):
        xy = torch.rand(2, generator=g) * 250
        b1 = torch.cat([xy, xy + 20])
        b2 = b1 + (torch.tensor([2.0, 2, 2, 2]) if i % 2 == 0 else torch.tensor([60.0, 0, 60, 0]))
        s = round(torch.rand(1, generator=g).item(), 3)
        boxes += [b1, b2]
        scores += [s, s]
    # integer boxes with legacy IoU exactly 0.7 / 0.5 / 0.3 (inter/union = 70/100, 50/100, 30/100)
    for k, (h2, base) in enumerate(((6, (400, 0)), (4, (420, 30)), (2, (440, 60)))):
        for rep in range(3):
            ox, oy = base[0] + rep * 15 + k, base[1] + rep * 12
            a = torch.tensor([ox, oy, ox + 9, oy + 9], dtype=torch.float32)       # 10x10 = 100
            b = torch.tensor([ox, oy, ox + 9, oy + h2], dtype=torch.float32)      # 10x(h2+1)
            boxes += [a, b]
            scores += [0.9 - 0.01 * (3 * k + rep), 0.85 - 0.01 * (3 * k + rep)]
    boxes = torch.stack(boxes).float()
    scores = torch.tensor(scores, dtype=torch.float32)
    return boxes, scores


def nms_golden(g, csrc):
    from maskrcnn_benchmark.structures.bounding_box import BoxList
    from maskrcnn_benchmark.structures.boxlist_ops import boxlist_nms
    import torchvision
    boxes, scores = nms_case(g)
    out = {"boxes": boxes, "scores": scores}
    info = {"n": int(boxes.shape[0])}
    for t in (0.3, 0.5, 0.7):
        bl = BoxList(boxes, (480, 320), mode="xyxy")  # size is unused by NMS
        bl.add_field("scores", scores)
        bl.add_field("idxs", torch.arange(boxes.shape[0]))
        kept = boxlist_nms(bl, t).get_field("idxs")   # SGB's path, with the installed legacy NMS
        tag = str(t).replace(".", "")
        out["keep_%s" % tag] = kept
        ge = R.legacy_nms(boxes, scores, t, suppress_on_equal=True)
        out["keep_%s_legacy_ge" % tag] = ge
        out["keep_%s_torchvision" % tag] = torchvision.ops.nms(boxes, scores, t)
        info["thresh_%s" % t] = {
            "kept": int(kept.numel()),
            "legacy_ge_differs_from_gt": not torch.equal(ge, kept),
            "torchvision_differs_from_legacy": not torch.equal(out["keep_%s_torchvision" % tag], kept),
        }
        if csrc is not None:
            c = csrc.nms_cpu(boxes, scores, t)  # SGB csrc/cpu/nms_cpu.cpp: >=, ascending index order
            ge_u = R.legacy_nms(boxes, scores, t, suppress_on_equal=True, stable=False)
            info["thresh_%s" % t]["csrc_nms_cpu_equals_legacy_ge_stable_sort_as_set"] = bool(
                torch.equal(torch.sort(c)[0], torch.sort(ge)[0]))
            # with csrc's own (unstable) tie order the pure-PyTorch version must agree exactly
            info["thresh_%s" % t]["csrc_nms_cpu_equals_legacy_ge_torch_default_sort_as_set"] = bool(
                torch.equal(torch.sort(c)[0], torch.sort(ge_u)[0]))
    return out, info


def roi_align_golden(g, csrc):
    from maskrcnn_benchmark.modeling.poolers import Pooler
    from maskrcnn_benchmark.structures.bounding_box import BoxList
    H, W = 12, 20                         # C4 of a 192x320 image
    feat = torch.randn(1, 2, H, W, generator=g)
    img_w, img_h = 320.0, 192.0
    bx = []
    for _ in range(20):                   # ordinary boxes
        x1, y1 = torch.rand(1, generator=g).item() * 280, torch.rand(1, generator=g).item() * 160
        w, h = 4 + torch.rand(1, generator=g).item() * 150, 4 + torch.rand(1, generator=g).item() * 120
        bx.append([x1, y1, min(x1 + w, img_w - 1), min(y1 + h, img_h - 1)])
    bx += [
        [0, 0, img_w - 1, img_h - 1],            # whole image
        [0, 0, 40, 30], [279, 161, 319, 191],    # corners
        [0, 100, 319, 101],                      # full-width thin line
        [150, 0, 151, 191],                      # full-height thin line
        [310.5, 5.25, 319, 60],                  # right border
        [-30, -20, 50, 40], [280, 150, 400, 260],  # partly outside
        [-100, -100, -40, -30], [400, 250, 500, 300], [330, 0, 380, 50],  # fully outside
        [-17, 50, -15.5, 60],                    # just outside left (feature x in [-1.06,-0.97])
        [100.2, 100.7, 100.5, 100.9],            # < 1 px
        [64, 64, 64, 64],                        # zero size, on a feature-grid point
        [12.3, 40.1, 12.3, 40.1],                # zero size
        [200, 20, 215, 35],                      # < 1 feature cell (15 px)
        [32, 48, 48, 64], [16, 16, 32, 32],      # exactly one cell, on grid points
        [0, 0, 15.99, 15.99],                    # just under one cell
        [-800, -500, 1200, 700],                 # huge: sampling grid ceil(125/14)=9
        [100, 50, 90, 40],                       # inverted (x2<x1): roi_w clamps to 1
        [304, 176, 319, 191],                    # last cell
        [0.5, 0.5, 318.5, 190.5],
        [7.9, 3.3, 221.7, 133.1], [55.5, 77.25, 56.75, 190.0],
        [160, 96, 161, 97], [300, 10, 319.9, 191.9], [1, 1, 2, 190],
        [158.4, 12.6, 170.2, 14.1], [-0.5, -0.5, 0.5, 0.5],
    ]
    boxes = torch.tensor(bx, dtype=torch.float32)
    pooler = Pooler(output_size=(14, 14), scales=(1.0 / 16,), sampling_ratio=0)
    bl = BoxList(boxes, (int(img_w), int(img_h)), mode="xyxy")
    with torch.no_grad():
        out = pooler([feat], [bl])
    info = {"n_boxes": int(boxes.shape[0]), "feature_shape": list(feat.shape)}
    if csrc is not None:
        rois = torch.cat([torch.zeros(boxes.shape[0], 1), boxes], 1)
        c = csrc.roi_align_forward_cpu(feat, rois, 1.0 / 16, 14, 14, 0)
        info["csrc_ROIAlign_cpu_max_abs_diff"] = float((c - out).abs().max())
    return {"features": feat, "boxes": boxes, "pooled": out}, info


# --------------------------------------------------------------------------------------
# csrc cross-check (optional)
# --------------------------------------------------------------------------------------
def build_csrc(sgb_path):
    """Compile SGB's own csrc/cpu/nms_cpu.cpp and csrc/cpu/ROIAlign_cpu.cpp (unmodified) as
    a small torch extension, to cross-check the ops the goldens used."""
    from torch.utils.cpp_extension import load
    # ninja (pip) lives next to the interpreter; MAX_JOBS=1 keeps the build to one core
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("MAX_JOBS", "1")
    d = tempfile.mkdtemp(prefix="sgb_csrc_")
    bind = os.path.join(d, "bind.cpp")
    with open(bind, "w") as f:
        f.write("""#include <torch/extension.h>
at::Tensor ROIAlign_forward_cpu(const at::Tensor& input, const at::Tensor& rois, const float spatial_scale,
                                const int pooled_height, const int pooled_width, const int sampling_ratio);
at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, const float threshold);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nms_cpu", &nms_cpu);
  m.def("roi_align_forward_cpu", &ROIAlign_forward_cpu);
}
""")
    csrc = os.path.join(sgb_path, "maskrcnn_benchmark", "csrc")
    return load(name="sgb_legacy_csrc_check", sources=[
        bind, os.path.join(csrc, "cpu", "nms_cpu.cpp"), os.path.join(csrc, "cpu", "ROIAlign_cpu.cpp")],
        extra_include_paths=[csrc], extra_cflags=["-O2"], build_directory=d, verbose=False)


def csrc_pipeline_check(model, inputs, goldens, csrc):
    """Re-run every image with SGB's compiled legacy CPU ops patched in (nms_cpu: +1, >=;
    ROIAlign_cpu) and compare with the goldens."""
    ra_mod = sys.modules["maskrcnn_benchmark.layers.roi_align"]
    import maskrcnn_benchmark.structures.boxlist_ops as bo
    import maskrcnn_benchmark.modeling.roi_heads.box_head.inference as bi
    saved = (ra_mod.roi_align, bo._box_nms, bi.box_nms)

    def nms(b, s, t):
        return csrc.nms_cpu(b.contiguous(), s.contiguous(), t)

    def roi_align(x, rois, output_size, spatial_scale, sampling_ratio):
        return csrc.roi_align_forward_cpu(x, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio)

    ra_mod.roi_align, bo._box_nms, bi.box_nms = roi_align, nms, nms
    res = {}
    try:
        for name, (tensor, orig_wh) in inputs.items():
            t, _ = golden_tensors(model, tensor, orig_wh)
            gld = goldens[name]
            same_props = torch.equal(t["proposals"], gld["proposals"])
            r = {"proposals_identical": same_props,
                 "detections_identical": torch.equal(t["det_proposal_index"], gld["det_proposal_index"])
                 and torch.equal(t["det_labels"], gld["det_labels"])}
            if same_props:
                r["box_features_max_abs_diff"] = float((t["box_features"] - gld["box_features"]).abs().max())
            res[name] = r
    finally:
        ra_mod.roi_align, bo._box_nms, bi.box_nms = saved
    return res


def torchvision_nms_pipeline_check(model, inputs, goldens):
    """Re-run every image with SGB@8e14944's native NMS (torchvision.ops.nms: no +1) instead of
    the legacy one: shows whether these fixtures can tell the two apart."""
    import torchvision
    import maskrcnn_benchmark.structures.boxlist_ops as bo
    import maskrcnn_benchmark.modeling.roi_heads.box_head.inference as bi
    saved = (bo._box_nms, bi.box_nms)
    bo._box_nms = bi.box_nms = torchvision.ops.nms
    res = {}
    try:
        for name, (tensor, orig_wh) in inputs.items():
            t, _ = golden_tensors(model, tensor, orig_wh)
            gld = goldens[name]
            res[name] = {
                "proposals_identical": bool(torch.equal(t["proposals"], gld["proposals"])),
                "detections_identical": bool(t["det_boxes"].shape == gld["det_boxes"].shape
                                             and torch.equal(t["det_boxes"], gld["det_boxes"])
                                             and torch.equal(t["det_labels"], gld["det_labels"])),
            }
    finally:
        bo._box_nms, bi.box_nms = saved
    return res


# --------------------------------------------------------------------------------------
def tensor_stats(x):
    x = x.float()
    return {"mean": round(float(x.mean()), 4), "std": round(float(x.std()), 4),
            "min": round(float(x.min()), 4), "max": round(float(x.max()), 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sgb_path")
    ap.add_argument("out_dir")
    ap.add_argument("--remake-images", action="store_true")
    ap.add_argument("--no-csrc-check", action="store_true",
                    help="skip compiling SGB's csrc/cpu ops for the cross-checks")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sgb-commit", default=None,
                    help="record this commit when SGB_PATH is an exported snapshot without .git")
    args = ap.parse_args()
    t0 = time.time()

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)

    sgb = R.import_sgb(args.sgb_path)
    fingerprint = R.sgb_fingerprint(sgb)
    if fingerprint[0] != SGB_FINGERPRINT:
        log("WARNING: SGB_PATH's files differ from SGB @ %s (fingerprint %s)" % (SGB_COMMIT, fingerprint[0]))
    import torchvision
    from safetensors.torch import save_file
    register_tiny_body()
    nms_fn = R.install_legacy_nms(suppress_on_equal=False)
    from maskrcnn_benchmark.data.transforms import build_transforms
    from maskrcnn_benchmark.data.transforms import transforms as T
    from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer
    from torchvision.transforms import functional as TF

    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    img_dir = os.path.join(out, "images")
    gold_dir = os.path.join(out, "goldens")
    if args.remake_images and os.path.isdir(img_dir):
        shutil.rmtree(img_dir)
    if os.path.isdir(gold_dir):
        shutil.rmtree(gold_dir)
    os.makedirs(gold_dir)
    image_desc = None
    if not os.path.isdir(img_dir) or not os.listdir(img_dir):
        image_desc = make_images(img_dir)
    else:
        old = os.path.join(out, "meta.json")
        if os.path.isfile(old):
            with open(old) as f:
                image_desc = {k: v.get("description") for k, v in json.load(f).get("images", {}).items()}

    cfg = R.make_cfg(sgb, R.EXTRACTION_OPTS + REDUCED_OPTS)
    transforms = build_transforms(cfg, is_train=False)
    resize_t = T.Resize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    detect_utils = load_detect_utils(sgb)

    # ---- decode + preprocess every image exactly as SGB does
    inputs, img_meta = {}, {}
    for fn in sorted(os.listdir(img_dir)):
        path = os.path.join(img_dir, fn)
        name = os.path.splitext(fn)[0]
        pil, cv2_img = decode_sgb_demo(path, detect_utils)
        raw = Image.open(path)
        exif_orient = raw.getexif().get(0x0112)
        tsv = decode_sgb_tsv_raw(path)
        a_demo = np.asarray(pil)
        a_tsv = np.asarray(tsv)
        same = a_demo.shape == a_tsv.shape and np.array_equal(a_demo, a_tsv)
        tensor, _ = transforms(pil, None)              # SGB's transforms (is_train=False)
        size = resize_t.get_size(pil.size)             # (oh, ow)
        resized = TF.resize(pil, size)                 # what T.Resize does to the PIL image
        r_u8 = np.ascontiguousarray(np.asarray(resized, dtype=np.uint8))
        check, _ = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD,
                               to_bgr255=cfg.INPUT.TO_BGR255)(TF.to_tensor(resized))
        assert torch.equal(check, tensor), name
        assert tensor.shape[1:] == (size[0], size[1])
        w0, h0 = pil.size
        inputs[name] = (tensor.unsqueeze(0), (w0, h0))
        img_meta[fn] = {
            "name": name,
            "description": (image_desc or {}).get(fn),
            "file_bytes": os.path.getsize(path),
            "file_sha256": sha256(open(path, "rb").read()),
            "file_format": raw.format, "file_mode": raw.mode, "file_size_wh": list(raw.size),
            "exif_orientation": exif_orient,
            "orig_wh": [w0, h0],
            "resized_wh": [size[1], size[0]],
            "resized_rgb_u8_sha256": sha256(r_u8.tobytes()),
            "decoded_rgb_u8_sha256": sha256(np.ascontiguousarray(a_demo).tobytes()),
            "tsv_raw_decode_equals_demo_decode": bool(same),
            "tsv_raw_decode_wh": list(tsv.size),
            "full_input_stored": name in FULL_INPUT_IMAGES,
        }
        if not same and a_demo.shape == a_tsv.shape:
            img_meta[fn]["tsv_raw_decode_max_abs_diff"] = int(np.abs(a_demo.astype(int) - a_tsv.astype(int)).max())
        img_meta[fn]["_resized_u8"] = r_u8
        log("%-22s %-4s %-5s orig %4dx%-4d -> %dx%d  exif=%s  tsv_raw_same=%s" % (
            fn, raw.format, raw.mode, w0, h0, size[1], size[0], exif_orient, same))

    # ---- weights (seeded), saved as SGB's checkpointer saves them, then reloaded through
    #      SGB's DetectronCheckpointer into a fresh model that produces the goldens
    g = torch.Generator().manual_seed(SEED)
    model0 = build_model(cfg)
    calib = [inputs[n][0] for n in ("astronaut", "rocket", "synthetic_exact")]
    wstats = make_weights(model0, calib, g)
    pth = os.path.join(out, "model.pth")
    torch.save({"model": model0.state_dict()}, pth)
    model = build_model(cfg)
    DetectronCheckpointer(cfg, model, save_dir="").load(pth, use_latest=False)
    sd0, sd1 = model0.state_dict(), model.state_dict()
    assert list(sd0) == list(sd1) and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    del model0
    n_keys = len(sd1)
    n_dup = sum(1 for k in sd1 if k.startswith("attribute.feature_extractor."))
    log("model.pth: %d keys (%d duplicated attribute.feature_extractor.*), %d bytes" % (
        n_keys, n_dup, os.path.getsize(pth)))

    # ---- goldens per image
    goldens, per_image_stats = {}, {}
    for fn, m in img_meta.items():
        name = m["name"]
        tensor, orig_wh = inputs[name]
        t, info = golden_tensors(model, tensor, orig_wh)
        goldens[name] = t
        # det_box_features == box_features[det_proposal_index] and det_scores_all ==
        # softmax(class_logits)[det_proposal_index] (asserted): not stored, to save space
        assert torch.equal(t["det_box_features"], t["box_features"][t["det_proposal_index"]])
        save = {k: v for k, v in t.items() if k not in ("det_box_features", "det_scores_all")}
        if name in FULL_INPUT_IMAGES:
            save["input_normalized"] = tensor.contiguous()
            save["image_resized_u8"] = torch.from_numpy(m["_resized_u8"].copy())
        save["orig_wh"] = torch.tensor(orig_wh, dtype=torch.int64)
        save["resized_wh"] = torch.tensor(m["resized_wh"], dtype=torch.int64)
        save_file(save, os.path.join(gold_dir, name + ".safetensors"),
                  metadata={"producer": "tools/reference/make_detector_goldens.py, image " + fn})
        p_obj = t["proposal_objectness"]
        probs = torch.softmax(t["class_logits"], -1)
        n_pass = int((t["det_scores"] >= 0.2).sum())
        attr_pos = (t["attr_scores"] > 0).sum(1)
        st = {
            "c4": tensor_stats(t["c4"]),
            "c4_frac_zero": round(float((t["c4"] == 0).float().mean()), 3),
            "rpn_logits": tensor_stats(t["rpn_objectness_logits"]),
            "num_anchors": int(t["rpn_objectness_logits"].numel()),
            "num_proposals": int(t["proposals"].shape[0]),
            "proposal_objectness_first_last": [round(float(p_obj[0]), 4), round(float(p_obj[-1]), 4)],
            "proposal_objectness_tied_values": int(p_obj.numel() - p_obj.unique().numel()),
            "proposals_with_best_fg_prob_ge_0.2": int((probs[:, 1:].max(1)[0] >= 0.2).sum()),
            "num_detections": int(t["det_boxes"].shape[0]),
            "num_detections_score_ge_0.2": n_pass,
            "det_score_range": [round(float(t["det_scores"].min()), 4), round(float(t["det_scores"].max()), 4)] if len(t["det_scores"]) else None,
            "distinct_labels": int(t["det_labels"].unique().numel()),
            "attrs_above_0.05_per_det": {"min": int(attr_pos.min()), "mean": round(float(attr_pos.float().mean()), 2), "max": int(attr_pos.max())} if len(attr_pos) else None,
            **info,
        }
        per_image_stats[name] = st
        m["stats"] = st
        log("%-18s C4 std %.3f zero %.2f | %3d proposals, %2d pass 0.2 pre-NMS | %2d dets (%2d >= 0.2) scores %s | attrs/det %s" % (
            name, st["c4"]["std"], st["c4_frac_zero"], st["num_proposals"],
            st["proposals_with_best_fg_prob_ge_0.2"], st["num_detections"], n_pass,
            st["det_score_range"], st["attrs_above_0.05_per_det"]))

    # ---- op goldens
    csrc, csrc_err = None, None
    if not args.no_csrc_check:
        try:
            tb = time.time()
            csrc = build_csrc(sgb)
            log("compiled SGB csrc/cpu nms_cpu + ROIAlign_cpu in %.0f s" % (time.time() - tb))
        except Exception as e:  # no compiler / ninja
            csrc_err = "%s: %s" % (type(e).__name__, str(e)[:300])
            log("csrc cross-check skipped:", csrc_err)
    gop = torch.Generator().manual_seed(SEED + 1)
    roi_t, roi_info = roi_align_golden(gop, csrc)
    save_file(roi_t, os.path.join(gold_dir, "roi_align.safetensors"),
              metadata={"op": "SGB maskrcnn_benchmark.modeling.poolers.Pooler((14,14), scales=(1/16,), sampling_ratio=0)"})
    nms_t, nms_info = nms_golden(gop, csrc)
    save_file(nms_t, os.path.join(gold_dir, "nms.safetensors"),
              metadata={"op": "SGB boxlist_ops.boxlist_nms with legacy +1 NMS, suppress if IoU > t"})
    log("roi_align golden:", roi_info)
    log("nms golden:", json.dumps(nms_info))
    csrc_check = None
    if csrc is not None:
        csrc_check = csrc_pipeline_check(model, inputs, goldens, csrc)
        log("pipeline with SGB's compiled csrc ops:", json.dumps(csrc_check))

    tv_check = torchvision_nms_pipeline_check(model, inputs, goldens)
    log("pipeline with torchvision.ops.nms (no +1) instead:", json.dumps(tv_check))
    for fn in os.listdir(gold_dir):
        os.chmod(os.path.join(gold_dir, fn), 0o644)

    # ---- the full-size model's keys and shapes
    full_cfg = R.make_cfg(sgb, R.EXTRACTION_OPTS)
    from scene_graph_benchmark.AttrRCNN import AttrRCNN
    full = AttrRCNN(full_cfg)
    fsd = full.state_dict()
    full_keys = {
        "source": "SGB AttrRCNN(sgg_configs/vgattr/vinvl_x152c4.yaml + extraction overrides).state_dict()",
        "num_keys": len(fsd),
        "num_duplicated_attribute_feature_extractor_keys": sum(1 for k in fsd if k.startswith("attribute.feature_extractor.")),
        "num_elements_unique_keys": sum(v.numel() for k, v in fsd.items() if not k.startswith("attribute.feature_extractor.")),
        "keys": [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in fsd.items()],
    }
    del full, fsd
    with open(os.path.join(out, "full_size_keys.json"), "w") as f:
        keys = full_keys.pop("keys")
        head = json.dumps(full_keys, indent=1)[:-2]
        f.write(head + ',\n "keys": [\n')
        f.write(",\n".join(json.dumps(k) for k in keys))
        f.write("\n ]\n}\n")

    # ---- detector.json (the Rust reader's schema), labelmap.json
    c = cfg.MODEL
    detector = {
        "stem_out_channels": c.RESNETS.STEM_OUT_CHANNELS,
        "stage_blocks": [s[1] for s in STAGES],
        "res5_blocks": 3,
        "num_groups": c.RESNETS.NUM_GROUPS,
        "width_per_group": c.RESNETS.WIDTH_PER_GROUP,
        "res2_out_channels": c.RESNETS.RES2_OUT_CHANNELS,
        "backbone_out_channels": c.RESNETS.BACKBONE_OUT_CHANNELS,
        "stride_in_1x1": c.RESNETS.STRIDE_IN_1X1,
        "num_classes": c.ROI_BOX_HEAD.NUM_CLASSES,
        "num_attributes": c.ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES,
        "cls_emd_dim": c.ROI_ATTRIBUTE_HEAD.CLS_EMD_DIM,
        "attr_emd_dim": c.ROI_ATTRIBUTE_HEAD.ATTR_EMD_DIM,
        "anchor_sizes": list(c.RPN.ANCHOR_SIZES),
        "anchor_stride": c.RPN.ANCHOR_STRIDE[0],
        "aspect_ratios": list(c.RPN.ASPECT_RATIOS),
        "pre_nms_top_n": c.RPN.PRE_NMS_TOP_N_TEST,
        "post_nms_top_n": c.RPN.POST_NMS_TOP_N_TEST,
        "rpn_nms_thresh": c.RPN.NMS_THRESH,
        "pooler_resolution": c.ROI_BOX_HEAD.POOLER_RESOLUTION,
        "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
        "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
        "pixel_mean": list(cfg.INPUT.PIXEL_MEAN),
        "score_thresh": c.ROI_HEADS.SCORE_THRESH,
        "detections_per_img": c.ROI_HEADS.DETECTIONS_PER_IMG,
        "min_detections_per_img": c.ROI_HEADS.MIN_DETECTIONS_PER_IMG,
        "nms_filter": c.ROI_HEADS.NMS_FILTER,
        "roi_nms_thresh": c.ROI_HEADS.NMS,
        "ignore_box_regression": cfg.TEST.IGNORE_BOX_REGRESSION,
        "attr_threshold": c.ROI_ATTRIBUTE_HEAD.POSTPROCESS_ATTRIBUTES_THRESHOLD,
        "max_attr_per_obj": c.ROI_ATTRIBUTE_HEAD.MAX_NUM_ATTR_PER_OBJ,
        "nms_legacy_plus_one": True,
    }
    assert c.ROI_BOX_HEAD.POOLER_SCALES == (1.0 / 16,) and c.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO == 0
    assert cfg.INPUT.PIXEL_STD == [1.0, 1.0, 1.0] and cfg.INPUT.TO_BGR255
    assert cfg.DATALOADER.SIZE_DIVISIBILITY == 0 and c.RPN.MIN_SIZE == 0
    with open(os.path.join(out, "detector.json"), "w") as f:
        json.dump(detector, f, indent=1)
        f.write("\n")
    objs = ["man", "shirt", "tree", "window", "building", "sky", "table", "car", "dog", "cat",
            "chair", "wall", "grass", "plate", "cup", "hat", "road", "leaf", "cloud", "door",
            "sign", "light", "hair", "water", "bus", "boat", "flower", "bike", "horse", "rocket"]
    attrs = ["white", "black", "blue", "green", "red", "brown", "yellow", "small", "large", "wooden",
             "metal", "tall", "open", "standing", "round", "striped", "dark", "parked", "smiling", "empty"]
    assert len(objs) == NUM_CLASSES - 1 and len(attrs) == NUM_ATTRIBUTES - 1
    labelmap = {
        "label_to_idx": {n: i + 1 for i, n in enumerate(objs)},
        "idx_to_label": {str(i + 1): n for i, n in enumerate(objs)},
        "attribute_to_idx": {n: i + 1 for i, n in enumerate(attrs)},
        "idx_to_attribute": {str(i + 1): n for i, n in enumerate(attrs)},
    }
    with open(os.path.join(out, "labelmap.json"), "w") as f:
        json.dump(labelmap, f, indent=1)
        f.write("\n")

    # ---- meta.json
    ra_fn = sys.modules["maskrcnn_benchmark.layers.roi_align"].roi_align
    try:  # torchvision's compiled kernels (not a Python fallback) with this torch
        torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)
        torchvision.ops.roi_align(torch.zeros(1, 1, 2, 2), torch.zeros(1, 5), (1, 1), 1.0, 0)
        tv_ok = True
    except Exception as e:
        tv_ok = "%s: %s" % (type(e).__name__, e)
    for m in img_meta.values():
        m.pop("_resized_u8")
    import cv2
    import PIL
    meta = {
        "command": " ".join(["python", "tools/reference/make_detector_goldens.py", "SGB_PATH"] + sys.argv[2:]),
        "argv": sys.argv[1:],
        "sgb_commit": R.sgb_commit(sgb) or args.sgb_commit,
        "sgb_commit_source": "git rev-parse HEAD in SGB_PATH" if R.sgb_commit(sgb) else
                             ("--sgb-commit (SGB_PATH is an exported snapshot)" if args.sgb_commit else None),
        "sgb_expected_commit": SGB_COMMIT,
        "sgb_files_fingerprint": {"sha256_of_path_blobsha_lines": fingerprint[0], "num_files": fingerprint[1],
                                  "matches_commit": fingerprint[0] == SGB_FINGERPRINT,
                                  "how": "tools/reference/sgb_runtime.py sgb_fingerprint; the expected value was "
                                         "computed from `git ls-tree -r` of the commit"},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__,
                     "pillow": PIL.__version__, "opencv": cv2.__version__},
        "seed": SEED,
        "threads": args.threads,
        "runtime_patches": R.PATCHES,
        "model": {
            "class": "scene_graph_benchmark.AttrRCNN.AttrRCNN (SGB's own), eval(), no_grad, float32, CPU, batch 1",
            "config": "maskrcnn_benchmark.config.cfg + scene_graph_benchmark sg_cfg (as tools/test_sg_net.py), "
                      "merged with sgg_configs/vgattr/vinvl_x152c4.yaml, then opts",
            "opts": [str(x) for x in R.EXTRACTION_OPTS + REDUCED_OPTS],
            "tiny_conv_body": "%s registered in resnet._STAGE_SPECS and modeling.registry.BACKBONES "
                              "(build_resnet_backbone): StageSpec (index, blocks, return_features) %s"
                              % (TINY_BODY, STAGES),
            "deviations_from_brief": [
                "NUM_ATTRIBUTES is 21, not 13: SGB's AttributePostProcessor takes torch.topk(scores, "
                "MAX_NUM_ATTR_PER_OBJ=16, dim=1), which raises with fewer than 16 attribute columns.",
                "roi_heads.box.feature_extractor.trans_conv removed after construction: "
                "ResNet50Conv5ROIFeatureExtractor adds a 3x3 conv (in->1024) whenever the backbone's "
                "out channels != 1024; the real model (1024) has none, the reduced one (64) would "
                "otherwise feed 1024 channels into a res5 built for 64.",
            ],
            "weights": "seeded random (torch.Generator seed %d): He-normal convs, FrozenBN statistics "
                       "set from the activations of 3 calibration images (astronaut, rocket, "
                       "synthetic_exact), RPN logits std 2 / deltas std 0.2, cls_score scaled so ~%d%% of "
                       "calibration proposals have best fg prob >= 0.2, attr_score scaled to ~3 "
                       "attributes > 0.05 per box" % (SEED, round(100 * CLS_PASS_TARGET)),
            "weight_scales": wstats,
            "checkpoint": "model.pth = torch.save({'model': model.state_dict()}) (as SGB's Checkpointer.save, "
                          "no optimizer); %d keys incl. %d duplicated attribute.feature_extractor.* and "
                          "rpn.anchor_generator.cell_anchors.0. The goldens come from a fresh model that "
                          "loaded model.pth through SGB's DetectronCheckpointer." % (n_keys, n_dup),
        },
        "ops": {
            "nms": {
                "used": nms_fn.__name__,
                "description": "legacy maskrcnn-benchmark NMS (the compiled _C.nms of SGB@098df06, which the "
                               "released VinVL features used), in pure PyTorch float32 "
                               "(tools/reference/sgb_runtime.py legacy_nms): area=(x2-x1+1)*(y2-y1+1), "
                               "inter with +1, suppress if IoU > thresh (csrc/cuda/nms.cu; csrc/cpu/nms_cpu.cpp "
                               "uses >=), greedy in descending score order with a stable sort (ties: lower "
                               "index first; csrc/cpu used torch's default sort, whose order among equal "
                               "scores is unspecified, and nms.cu a GPU sort), kept indices returned in "
                               "descending score order (nms_cpu.cpp returns ascending index order: the same "
                               "for the score-sorted RPN input; the per-class filter only uses the set)",
                "legacy_plus_one": True,
                "suppress_on_equal": False,
                "monkeypatched_into": ["maskrcnn_benchmark.layers.nms (module and package attr)",
                                       "maskrcnn_benchmark.structures.boxlist_ops._box_nms",
                                       "maskrcnn_benchmark.modeling.roi_heads.box_head.inference.box_nms"],
                "sgb_8e14944_native": "torchvision.ops.nms (no +1, suppress if IoU > t), what SGB uses "
                                      "unpatched whenever torchvision imports",
                "pipeline_with_torchvision_nms_instead": tv_check,
            },
            "roi_align": {
                "used": "torchvision.ops.roi_align %s, called by SGB's layers/roi_align.py ROIAlign positionally "
                        "(aligned=False), sampling_ratio 0 (adaptive), spatial_scale 1/16, 14x14"
                        % torchvision.__version__,
                "sgb_roi_align_function": "%s.%s" % (ra_fn.__module__, ra_fn.__name__),
                "torchvision_compiled_ops_run": tv_ok,
            },
            "csrc_cross_check": {
                "built": csrc is not None,
                "error": csrc_err,
                "what": "SGB's own csrc/cpu/nms_cpu.cpp (+1, >=) and csrc/cpu/ROIAlign_cpu.cpp compiled "
                        "unmodified as a torch extension; the whole pipeline re-run with both patched in",
                "pipeline": csrc_check,
                "roi_align_golden": roi_info,
                "nms_golden": nms_info,
            },
        },
        "preprocessing": {
            "decode": "SGB tools/demo path: cv2.imread(path) (IMREAD_COLOR: applies EXIF orientation, drops "
                      "alpha, grey/palette -> 3 channels, 16-bit -> v>>8) then tools/demo/detect_utils."
                      "cv2Img_to_Image (BGR->RGB, PIL.Image.fromarray). SGB's TSV route is built by "
                      "tools/mini_tsv/tsv_demo.py from cv2.imread too (then re-encoded as JPEG); decoding the "
                      "raw file bytes with SGB's img_from_base64 (PIL .convert('RGB')) is recorded per image "
                      "as tsv_raw_decode_equals_demo_decode (it ignores EXIF orientation).",
            "transform": "maskrcnn_benchmark.data.transforms.build_transforms(cfg, is_train=False): "
                         "ColorJitter(0) no-op, Resize(192, 320) = torchvision F.resize on the PIL image "
                         "(Pillow bilinear, antialiased), ToTensor, Normalize(to_bgr255) -> BGR*255 - mean",
            "resized_sha256": "SHA-256 of the resized uint8 RGB HWC bytes (T.Resize.get_size + F.resize on the "
                              "decoded PIL image; checked to give exactly the transform's tensor)",
        },
        "images": img_meta,
        "golden_tensors": {
            "per image (goldens/<name>.safetensors)": {
                "input_normalized": "[1,3,H,W] f32, only for %s" % ", ".join(FULL_INPUT_IMAGES),
                "image_resized_u8": "[H,W,3] u8 RGB, only for the same three",
                "orig_wh / resized_wh": "[2] i64 (width, height)",
                "c4": "[1,64,Hf,Wf] backbone output (model.backbone)",
                "rpn_objectness_logits": "[1,15,Hf,Wf] (model.rpn.head)",
                "rpn_box_deltas": "[1,60,Hf,Wf] (model.rpn.head), channel a*4+{dx,dy,dw,dh}",
                "proposals": "[P,4] xyxy in resized-image pixels, in the RPN's output order (model.rpn)",
                "proposal_objectness": "[P] sigmoid objectness of each proposal",
                "box_features": "[P,128] avgpool(res5(ROIAlign(c4, proposals))) (feature_extractor + predictor.avgpool)",
                "class_logits": "[P,31] (model.roi_heads.box.predictor)",
                "det_proposal_index": "[D] i64 index into proposals of each detection (derived: exact match of box and feature)",
                "det_boxes": "[D,4] resized-image pixels (post_processor / final output)",
                "det_boxes_orig": "[D,4] original-image pixels (BoxList.resize((W0,H0)) as tools/demo does)",
                "det_labels": "[D] i64 (1..30)", "det_scores": "[D]",
                "(not stored)": "the detections' box_features field equals box_features[det_proposal_index] and "
                                "scores_all equals softmax(class_logits)[det_proposal_index] (asserted bit-identical)",
                "attr_logits": "[D,21] (model.attribute.predictor on the attribute head's re-run of the shared feature extractor)",
                "attr_labels": "[D,16] i64 topk labels as AttributePostProcessor gives them; entries whose score is 0 "
                               "are torch.topk's tie order among zeros, not meaningful",
                "attr_scores": "[D,16] (softmax, column 0 and values <= 0.05 zeroed, top 16)",
            },
            "goldens/roi_align.safetensors": "features [1,2,12,20] (a 192x320 image's C4 grid), boxes [N,4] in "
                                             "image pixels, pooled [N,2,14,14] = SGB Pooler((14,14), (1/16,), 0)",
            "goldens/nms.safetensors": "boxes [N,4], scores [N]; keep_03/keep_05/keep_07 = SGB boxlist_nms with the "
                                       "legacy NMS used here (+1, >), in descending score order; "
                                       "keep_*_legacy_ge = the same with >= (csrc/cpu/nms_cpu.cpp's comparison); "
                                       "the boxes include 10 pairs of exactly tied scores (stable order: lower "
                                       "index first) and integer pairs whose +1 IoU is exactly 0.3/0.5/0.7; "
                                       "keep_*_torchvision = torchvision.ops.nms (no +1; what SGB@8e14944 runs unpatched)",
        },
        "stats": per_image_stats,
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(out):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    log("wrote %s: %d bytes in all, %.0f s" % (out, total, time.time() - t0))


if __name__ == "__main__":
    main()
