#!/usr/bin/env python3
"""Optimizer goldens: three training steps of the tiny pre-training fixture model with
torch.optim.AdamW (parameter groups: no decay on bias / LayerNorm.weight), a LambdaLR
WarmupLinear schedule stepped before the optimizer as the reference scripts do, and
clip_grad_norm_. Saves the parameters after every step, the gradient norms and the rates.

Regenerate (from the repository root, after make_model_goldens.py):
    .venv-ref/bin/python tools/reference/make_optim_goldens.py crates/oscar/tests/fixtures/model
"""
import importlib.util
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("mg", os.path.join(HERE, "make_model_goldens.py"))
mg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mg)


def main():
    root = sys.argv[1]
    d = os.path.join(root, "pretrain")
    cfg = mg.bert_config()
    oscar = mg.oscar_config()
    m = mg.PreTraining(cfg, oscar)
    m.load_state_dict(torch.load(os.path.join(d, "pytorch_model.bin")))
    m.eval()
    inp = load_file(os.path.join(d, "inputs.safetensors"))
    decay, no_decay = [], []
    for n, p in m.named_parameters():
        (no_decay if ("bias" in n or "LayerNorm.weight" in n) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, eps=1e-8)
    warmup, total = 2, 10
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1.0, total - warmup)))
    norms, lrs = [], []
    out = {}
    for step in range(1, 4):
        opt.zero_grad()
        seq, pooled = m.bert(inp["input_ids"], inp["token_type_ids"], inp["attention_mask"], inp["img_feats"])
        mlm = m.cls.predictions(seq)
        con = m.cls.seq_relationship(pooled)
        loss = F.cross_entropy(mlm.view(-1, mg.V), inp["mlm_labels"].view(-1), ignore_index=-1) + F.cross_entropy(con, inp["contrastive_labels"])
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)))
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        for n, p in m.named_parameters():
            out[f"step{step}.{n}"] = p.detach().clone().contiguous()
    save_file(out, os.path.join(d, "optim_goldens.safetensors"))
    json.dump({"grad_norms": norms, "lrs": lrs, "base_lr": 1e-3, "weight_decay": 0.01, "warmup": warmup, "total": total, "max_grad_norm": 1.0},
              open(os.path.join(d, "optim_goldens.json"), "w"), indent=1)
    print("norms", norms, "lrs", lrs)


if __name__ == "__main__":
    main()
