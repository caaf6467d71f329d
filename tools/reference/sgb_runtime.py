"""Run microsoft/scene_graph_benchmark (SGB) @ 8e14944 unmodified on a current stack.

Shared by make_detector_goldens.py and bench_detector.py. Nothing here re-implements a
stage of the detector: it only makes SGB's own modules importable (runtime shims for APIs
that newer Python/torch/numpy removed), builds SGB's config exactly as
tools/test_sg_net.py does, and provides the legacy maskrcnn-benchmark NMS that the
compiled `maskrcnn_benchmark._C` used before SGB switched to torchvision ops (462a68f).

The SGB files are never edited; SGB_PATH is put first on sys.path.
"""
import collections.abc
import os
import subprocess
import sys
import types

import numpy as np
import torch

PATCHES = []  # human-readable list of what was shimmed, recorded in meta.json


def _shim_stack():
    # torch._six was removed in torch 2.0; SGB uses torch._six.PY3 (utils/imports.py,
    # utils/c2_model_loading.py).
    if not hasattr(torch, "_six"):
        six = types.ModuleType("torch._six")
        six.PY3 = True
        six.PY2 = False
        six.string_classes = (str, bytes)
        six.int_classes = int
        six.container_abcs = collections.abc
        six.inf = float("inf")
        sys.modules["torch._six"] = six
        torch._six = six
        PATCHES.append("torch._six: stub module (PY3=True) for torch>=2.0")
    # numpy >= 1.24 removed the aliases np.float / np.int / np.bool / np.object
    # (SGB: modeling/rpn/anchor_generator.py uses np.float).
    for name, typ in (("float", float), ("int", int), ("bool", bool), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, typ)
            PATCHES.append("numpy.%s = builtin %s (removed in numpy>=1.24)" % (name, typ.__name__))
    # utils/model_zoo.py imports torch.hub._download_url_to_file / urlparse / HASH_REGEX
    # (renamed or removed in newer torch); only used to download weights by URL.
    import torch.hub as hub
    if not hasattr(hub, "_download_url_to_file"):
        hub._download_url_to_file = hub.download_url_to_file
        PATCHES.append("torch.hub._download_url_to_file = torch.hub.download_url_to_file")
    if not hasattr(hub, "urlparse"):
        from urllib.parse import urlparse
        hub.urlparse = urlparse
        PATCHES.append("torch.hub.urlparse = urllib.parse.urlparse")
    if not hasattr(hub, "HASH_REGEX"):
        import re
        hub.HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")
        PATCHES.append("torch.hub.HASH_REGEX added")
    # Python >= 3.12 removed `imp` (SGB: engine/inference.py imports it).
    try:
        import imp  # noqa: F401
    except ImportError:
        sys.modules["imp"] = types.ModuleType("imp")
        PATCHES.append("imp: empty stub module (Python>=3.12)")


class _StubModule(types.ModuleType):
    """A stand-in for an uninstalled third-party module: any attribute is another stub,
    and calling a stub raises."""

    def __getattr__(self, k):
        if k.startswith("__"):
            raise AttributeError(k)
        return _StubModule(self.__name__ + "." + k)

    def __call__(self, *a, **k):
        raise RuntimeError("stub of an uninstalled module called: " + self.__name__)


# Imported at module level by SGB files that this model never executes:
#   timm, einops: modeling/backbone/msvit.py, longformer2d.py (ViT backbones; backbone.py imports msvit)
#   cityscapesscripts: data/datasets/cityscapes.py, data/datasets/evaluation/cityscapes/*
#   scipy: scene_graph_benchmark/relation_head/contrastive_loss_sample_pairs.py
#   six: scene_graph_benchmark/relation_head/neural_motif/word_vectors.py
_UNUSED_THIRD_PARTY = {
    "timm": ["timm.models", "timm.models.layers"],
    "einops": [],
    "cityscapesscripts": ["cityscapesscripts.helpers", "cityscapesscripts.helpers.csHelpers"],
    "scipy": ["scipy.sparse"],
    "six": ["six.moves", "six.moves.urllib", "six.moves.urllib.request"],
}


def _stub_unused_third_party():
    for top, subs in _UNUSED_THIRD_PARTY.items():
        try:
            __import__(top)
            for sub in subs:
                __import__(sub)
            continue
        except Exception:
            pass
        for name in [top] + subs:
            if name not in sys.modules or not isinstance(sys.modules[name], _StubModule):
                sys.modules[name] = _StubModule(name)
        PATCHES.append("%s: stub module (not installed; imported only by SGB files this model does not run)" % top)


def _stub_C():
    """maskrcnn_benchmark._C is the compiled csrc extension. This model only needs nms and
    roi_align, which SGB@8e14944 takes from torchvision when torchvision imports
    (layers/nms.py, layers/roi_align.py); the other ops (roi_pool, focal loss, dcn) are
    not used. The stub raises if anything calls into it."""
    mod = types.ModuleType("maskrcnn_benchmark._C")

    def _missing(*a, **k):
        raise RuntimeError("maskrcnn_benchmark._C is stubbed: this op was not expected to run")

    for name in ("nms", "roi_align_forward", "roi_align_backward", "roi_pool_forward",
                 "roi_pool_backward", "sigmoid_focalloss_forward", "sigmoid_focalloss_backward",
                 "deform_conv_forward", "deform_conv_backward_input",
                 "deform_conv_backward_parameters", "modulated_deform_conv_forward",
                 "modulated_deform_conv_backward", "deform_psroi_pooling_forward",
                 "deform_psroi_pooling_backward"):
        setattr(mod, name, _missing)
    sys.modules["maskrcnn_benchmark._C"] = mod
    PATCHES.append("maskrcnn_benchmark._C: stub module whose functions raise (never called)")
    return mod


def import_sgb(sgb_path):
    """Put SGB first on sys.path, apply the shims, import the packages we need."""
    sgb_path = os.path.abspath(sgb_path)
    if not os.path.isfile(os.path.join(sgb_path, "scene_graph_benchmark", "AttrRCNN.py")):
        raise SystemExit("not an SGB checkout: %s" % sgb_path)
    sys.path.insert(0, sgb_path)
    _shim_stack()
    _stub_unused_third_party()
    C = _stub_C()
    import maskrcnn_benchmark
    maskrcnn_benchmark._C = C
    import maskrcnn_benchmark.layers  # noqa: F401  (pulls layers.nms / layers.roi_align)
    return sgb_path


def sgb_commit(sgb_path):
    try:
        return subprocess.check_output(["git", "-C", sgb_path, "rev-parse", "HEAD"],
                                       stderr=subprocess.DEVNULL).decode().strip()
    except Exception:
        return None


def sgb_fingerprint(sgb_path):
    """Git blob SHA-1s of the SGB files this code runs (every .py under maskrcnn_benchmark/
    and scene_graph_benchmark/, the C++ sources under maskrcnn_benchmark/csrc/, the vinvl
    yaml and tools/demo/detect_utils.py), digested as sha256 over sorted "path blobsha" lines.
    Works on an exported snapshot without .git; compare with `git ls-tree -r <commit>`."""
    import hashlib
    lines = []
    for top in ("maskrcnn_benchmark", "scene_graph_benchmark"):
        for root, _, files in os.walk(os.path.join(sgb_path, top)):
            for fn in files:
                if fn.endswith((".py", ".cpp", ".cu", ".h")):
                    lines.append(os.path.relpath(os.path.join(root, fn), sgb_path))
    lines += ["sgg_configs/vgattr/vinvl_x152c4.yaml", "tools/demo/detect_utils.py"]
    out = []
    for rel in sorted(lines):
        with open(os.path.join(sgb_path, rel), "rb") as f:
            data = f.read()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        out.append("%s %s" % (rel.replace(os.sep, "/"), blob))
    return hashlib.sha256("\n".join(out).encode()).hexdigest(), len(out)


def make_cfg(sgb_path, opts):
    """The config as tools/test_sg_net.py builds it: maskrcnn defaults, merged with the
    scene_graph_benchmark defaults, then the vinvl yaml, then the command-line opts."""
    from maskrcnn_benchmark.config import cfg as base_cfg
    from scene_graph_benchmark.config import sg_cfg
    cfg = base_cfg.clone()
    cfg.set_new_allowed(True)
    cfg.merge_from_other_cfg(sg_cfg)
    cfg.set_new_allowed(False)
    cfg.merge_from_file(os.path.join(sgb_path, "sgg_configs", "vgattr", "vinvl_x152c4.yaml"))
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


# The overrides of the official VinVL extraction command (spec §1.3), plus CPU.
EXTRACTION_OPTS = [
    "MODEL.ROI_HEADS.NMS_FILTER", 1,
    "MODEL.ROI_HEADS.SCORE_THRESH", 0.2,
    "TEST.IGNORE_BOX_REGRESSION", True,
    "MODEL.ATTRIBUTE_ON", True,
    "TEST.OUTPUT_FEATURE", True,
    "TEST.IMS_PER_BATCH", 1,
    "MODEL.DEVICE", "cpu",
]


# ---------------------------------------------------------------------------------------
# Legacy maskrcnn-benchmark NMS (the compiled _C.nms of SGB@098df06, which the released
# VinVL features were made with). Pure PyTorch, float32 throughout, same arithmetic as
# csrc/cpu/nms_cpu.cpp and csrc/cuda/nms.cu:
#   area = (x2-x1+1)*(y2-y1+1); w = max(0, min(x2)-max(x1)+1); inter = w*h;
#   ovr = inter / (area_i + area_j - inter)
# suppress j if ovr > thresh (nms.cu, the GPU kernel) or ovr >= thresh (nms_cpu.cpp).
# Greedy in descending score order (stable sort: ties keep the lower index first).
# Returns the kept indices in descending score order (as nms.cu does; nms_cpu.cpp returns
# them in ascending index order, the same thing for score-sorted input).
# ---------------------------------------------------------------------------------------
def legacy_nms(boxes, scores, thresh, suppress_on_equal=False, stable=True):
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    # stable=False reproduces csrc's `scores.sort(0, /*descending=*/true)` exactly (torch's
    # default sort, whose order among equal scores is unspecified)
    order = torch.sort(scores, descending=True, stable=stable)[1]
    n = boxes.shape[0]
    thr = torch.tensor(thresh, dtype=torch.float32)
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    order_l = order.tolist()
    for _i in range(n):
        i = order_l[_i]
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[_i + 1:]
        if rest.numel() == 0:
            break
        xx1 = torch.maximum(x1[i], x1[rest])
        yy1 = torch.maximum(y1[i], y1[rest])
        xx2 = torch.minimum(x2[i], x2[rest])
        yy2 = torch.minimum(y2[i], y2[rest])
        w = torch.clamp(xx2 - xx1 + 1, min=0)
        h = torch.clamp(yy2 - yy1 + 1, min=0)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        sup = (ovr >= thr) if suppress_on_equal else (ovr > thr)
        suppressed[rest[sup]] = True
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def install_legacy_nms(suppress_on_equal=False):
    """Monkeypatch the legacy NMS everywhere SGB bound `maskrcnn_benchmark.layers.nms`
    at import time (spec §4.3)."""
    import maskrcnn_benchmark.layers as L
    Lnms = sys.modules["maskrcnn_benchmark.layers.nms"]  # the package attr `nms` is the function
    import maskrcnn_benchmark.structures.boxlist_ops as bo
    import maskrcnn_benchmark.modeling.roi_heads.box_head.inference as bi

    def nms(boxes, scores, thresh):
        return legacy_nms(boxes, scores, thresh, suppress_on_equal)

    nms.__name__ = "legacy_nms_plus_one_" + ("ge" if suppress_on_equal else "gt")
    Lnms.nms = nms
    L.nms = nms
    bo._box_nms = nms
    bi.box_nms = nms
    return nms
