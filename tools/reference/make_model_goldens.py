#!/usr/bin/env python3
"""Golden fixtures for the Oscar model, written by an independent reference:
PyTorch + HF transformers' BERT modules, assembled into Oscar's module tree exactly as
microsoft/Oscar's modeling_bert.py does (oscar-spec §1).

Regenerate (from the repository root):
    python3 -m venv --system-site-packages .venv-ref   # with Debian's python3-torch, or pip torch
    .venv-ref/bin/pip install 'transformers==4.46.3' 'safetensors==0.4.5'
    .venv-ref/bin/python tools/reference/make_model_goldens.py crates/oscar/tests/fixtures/model

Writes, per model: config.json, weights as model.safetensors, pytorch_model.bin (zip, torch>=1.6)
and pytorch_model_legacy.bin (pre-1.6 format), inputs.safetensors and goldens.safetensors.
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertConfig
from transformers.models.bert.modeling_bert import (BertEmbeddings, BertEncoder, BertPooler,
                                                    BertPredictionHeadTransform)

OUT = sys.argv[1] if len(sys.argv) > 1 else "crates/oscar/tests/fixtures/model"
V, H, IMG = 99, 32, 14
B, T, R = 2, 9, 4


def bert_config(**over):
    kw = dict(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, max_position_embeddings=64, hidden_act="gelu",
              hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, layer_norm_eps=1e-12,
              attn_implementation="eager")
    kw.update(over)
    return BertConfig(**kw)


class BertImgModel(nn.Module):
    """Oscar's BertImgModel: text embeddings ++ img_embedding(+LN), encoder, pooler."""

    def __init__(self, cfg, oscar):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)
        self.img_embedding = nn.Linear(oscar["img_feature_dim"], cfg.hidden_size)
        self.use_img_layernorm = oscar["use_img_layernorm"]
        if self.use_img_layernorm:
            self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=oscar["img_layer_norm_eps"])
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, attention_mask, img_feats, position_ids=None):
        emb = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        img = self.img_embedding(img_feats)
        if self.use_img_layernorm:
            img = self.LayerNorm(img)
        img = self.dropout(img)
        x = torch.cat([emb, img], 1)
        m = attention_mask[:, None, None, :] if attention_mask.dim() == 2 else attention_mask[:, None, :, :]
        ext = (1.0 - m.float()) * -10000.0
        seq = self.encoder(x, attention_mask=ext, return_dict=True).last_hidden_state
        return seq, self.pooler(seq)


class LMHead(nn.Module):
    """pytorch-transformers 1.x BertLMPredictionHead: transform, decoder (no bias), bias."""

    def __init__(self, cfg):
        super().__init__()
        self.transform = BertPredictionHeadTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h):
        return self.decoder(self.transform(h)) + self.bias


class PreTrainingHeads(nn.Module):
    def __init__(self, cfg, classes):
        super().__init__()
        self.predictions = LMHead(cfg)
        self.seq_relationship = nn.Linear(cfg.hidden_size, classes)


class PreTraining(nn.Module):
    def __init__(self, cfg, oscar):
        super().__init__()
        self.bert = BertImgModel(cfg, oscar)
        self.cls = PreTrainingHeads(cfg, oscar["num_contrast_classes"])
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied


class SeqClassification(nn.Module):
    def __init__(self, cfg, oscar, in_mult=1, with_ln=False):
        super().__init__()
        self.bert = BertImgModel(cfg, oscar)
        n, H = oscar["num_labels"], cfg.hidden_size
        if oscar["classifier"] == "linear":
            self.classifier = nn.Linear(in_mult * H, n)
        else:
            s = oscar["cls_hidden_scale"]
            layers = [nn.Linear(in_mult * H, H * s), nn.ReLU()]
            if with_ln:
                layers.append(nn.LayerNorm(H * s, eps=cfg.layer_norm_eps))
            layers.append(nn.Linear(H * s, n))
            self.classifier = nn.Sequential(*layers)


class Captioning(nn.Module):
    def __init__(self, cfg, oscar):
        super().__init__()
        self.bert = BertImgModel(cfg, oscar)
        self.cls = nn.Module()
        self.cls.predictions = LMHead(cfg)


def randomize(model, gen):
    """Weights far from the identity so every op matters: N(0, 0.2) weights, N(0, 0.1) biases, LN 1+N(0, 0.1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((0.1 if p.dim() == 1 else 0.2) * torch.randn(p.shape, generator=gen))
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=gen))


def bench_configs(size, bert_over=None, **oscar_over):
    """The benchmarks' model shapes: Oscar-B (`base`) or the tests' tiny config, as
    `oscar bench --size`; returns (BertConfig, oscar config dict)."""
    if size == "base":
        cfg = bert_config(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=3072, max_position_embeddings=512, **(bert_over or {}))
        return cfg, oscar_config(img_feature_dim=2054, **oscar_over)
    return bert_config(vocab_size=99, max_position_embeddings=128, **(bert_over or {})), oscar_config(img_feature_dim=14, **oscar_over)


def oscar_config(**over):
    o = dict(img_feature_dim=IMG, img_feature_type="faster_r-cnn", use_img_layernorm=1,
             img_layer_norm_eps=1e-12, num_contrast_classes=3, classifier="linear",
             cls_hidden_scale=2, num_choice=2, num_labels=2, loss_type="sfmx", tie_weights=0,
             freeze_embedding=0, label_smoothing=0.0, drop_worst_ratio=0.0, drop_worst_after=0)
    o.update(over)
    return o


def write_model(name, model, cfg, oscar, inputs, goldens, formats=("safetensors", "zip", "legacy"), sd=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    conf = cfg.to_dict()
    for k in ("_attn_implementation_autoset", "transformers_version", "attn_implementation", "_name_or_path"):
        conf.pop(k, None)
    conf.update(oscar)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(conf, f, indent=2, sort_keys=True)
    sd = sd if sd is not None else {k: v.detach().clone() for k, v in model.state_dict().items()}
    if "safetensors" in formats:
        # HF drops the tied decoder from safetensors files, as save_pretrained does.
        st = {k: v.contiguous() for k, v in sd.items() if k != "cls.predictions.decoder.weight" or not isinstance(model, PreTraining)}
        save_file(st, os.path.join(d, "model.safetensors"))
    if "zip" in formats:
        torch.save(model.state_dict() if sd is None else sd, os.path.join(d, "pytorch_model.bin"))
    if "legacy" in formats:
        torch.save(model.state_dict() if sd is None else sd, os.path.join(d, "pytorch_model_legacy.bin"),
                   _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(d, "inputs.safetensors"))
    save_file({k: v.detach().contiguous().float() for k, v in goldens.items()}, os.path.join(d, "goldens.safetensors"))


def make_inputs(gen, b=B, t=T, r=R):
    ids = torch.randint(1, V, (b, t), generator=gen)
    ids[:, 0] = 2  # a [CLS]-like id
    types = torch.zeros(b, t, dtype=torch.long)
    types[:, 5:] = 1
    mask = torch.ones(b, t + r)
    if b > 1:
        mask[1, t - 2:t] = 0  # text padding of the second item
        mask[1, t + r - 1] = 0  # and one padded region
        ids[1, t - 2:t] = 0
        types[1, t - 2:t] = 0
    feats = torch.rand(b, r, IMG, generator=gen) * 2
    if b > 1:
        feats[1, r - 1] = 0
    return ids, types, mask, feats


def main():
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)

    # ---- pre-training (Oscar+, 3 contrastive classes, image LayerNorm) ----
    cfg = bert_config()
    oscar = oscar_config()
    m = PreTraining(cfg, oscar)
    randomize(m, gen)
    m.eval()
    ids, types, mask, feats = make_inputs(gen)
    seq, pooled = m.bert(ids, types, mask, feats)
    mlm = m.cls.predictions(seq)
    con = m.cls.seq_relationship(pooled)
    mlm_labels = torch.full((B, T + R), -1, dtype=torch.long)
    mlm_labels[0, 2], mlm_labels[0, 6], mlm_labels[1, 3] = 17, 40, 88
    con_labels = torch.tensor([0, 2])
    mlm_loss = F.cross_entropy(mlm.view(-1, V), mlm_labels.view(-1), ignore_index=-1)
    con_loss = F.cross_entropy(con, con_labels)
    loss = mlm_loss + con_loss
    m.zero_grad()
    loss.backward()
    grads = {f"grad.{k}": p.grad for k, p in m.named_parameters() if k in (
        "bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight",
        "bert.img_embedding.weight", "bert.LayerNorm.weight", "cls.predictions.bias",
        "cls.seq_relationship.weight", "bert.encoder.layer.1.output.LayerNorm.bias")}
    inputs = dict(input_ids=ids, token_type_ids=types, attention_mask=mask, img_feats=feats,
                  mlm_labels=mlm_labels, contrastive_labels=con_labels)
    gold = dict(sequence=seq, pooled=pooled, mlm_logits=mlm, contrastive_logits=con,
                mlm_loss=mlm_loss.reshape(1), contrastive_loss=con_loss.reshape(1), loss=loss.reshape(1), **grads)
    write_model("pretrain", m, cfg, oscar, inputs, gold)

    # The same backbone saved as old BERT checkpoints were: bare keys (no `bert.`),
    # LayerNorm `gamma`/`beta`, legacy format.
    bare = {}
    for k, v in m.bert.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        bare[k] = v.clone()
    d = os.path.join(OUT, "pretrain")
    torch.save(bare, os.path.join(d, "backbone_gamma_beta_legacy.bin"), _use_new_zipfile_serialization=False)

    # ---- VQA-style: linear classifier, bce (and kl on the same logits), no image LayerNorm ----
    cfg = bert_config()
    oscar = oscar_config(use_img_layernorm=0, num_labels=6, loss_type="bce")
    m = SeqClassification(cfg, oscar)
    randomize(m, gen)
    m.eval()
    ids, types, mask, feats = make_inputs(gen)
    _, pooled = m.bert(ids, types, mask, feats)
    logits = m.classifier(pooled)
    soft = torch.zeros(B, 6)
    soft[0, 1], soft[0, 4], soft[1, 2] = 1.0, 0.3, 0.6
    bce = F.binary_cross_entropy_with_logits(logits, soft) * 6
    dist = torch.tensor([[0.5, 0.5, 0, 0, 0, 0], [0, 0.2, 0.3, 0.5, 0, 0]])
    kl = F.kl_div(F.log_softmax(logits, -1), dist, reduction="batchmean")
    inputs = dict(input_ids=ids, token_type_ids=types, attention_mask=mask, img_feats=feats, soft_scores=soft, kl_targets=dist)
    write_model("vqa", m, cfg, oscar, inputs, dict(logits=logits, bce_loss=bce.reshape(1), kl_loss=kl.reshape(1)),
                formats=("zip",))

    # ---- GQA/retrieval-style: MLP classifier, cross-entropy ----
    oscar = oscar_config(classifier="mlp", cls_hidden_scale=2, num_labels=5, loss_type="xe")
    m = SeqClassification(cfg, oscar)
    randomize(m, gen)
    m.eval()
    ids, types, mask, feats = make_inputs(gen)
    _, pooled = m.bert(ids, types, mask, feats)
    logits = m.classifier(pooled)
    labels = torch.tensor([3, 1])
    xe = F.cross_entropy(logits, labels)
    inputs = dict(input_ids=ids, token_type_ids=types, attention_mask=mask, img_feats=feats, labels=labels)
    write_model("gqa_mlp", m, cfg, oscar, inputs, dict(logits=logits, loss=xe.reshape(1)), formats=("safetensors",))

    # ---- NLVR2: pair head, MLP with LayerNorm (use_img_layernorm), scale 3 ----
    oscar = oscar_config(classifier="mlp", cls_hidden_scale=3, num_labels=2, num_choice=2, loss_type="xe")
    m = SeqClassification(cfg, oscar, in_mult=2, with_ln=True)
    randomize(m, gen)
    m.eval()
    ids, types, mask, feats = make_inputs(gen, b=4)  # 2 items x 2 images
    _, pooled = m.bert(ids, types, mask, feats)
    logits = m.classifier(pooled.view(2, 2 * H))
    labels = torch.tensor([1, 0])
    xe = F.cross_entropy(logits, labels)
    inputs = dict(input_ids=ids, token_type_ids=types, attention_mask=mask, img_feats=feats, labels=labels)
    write_model("nlvr2", m, cfg, oscar, inputs, dict(logits=logits, loss=xe.reshape(1)), formats=("zip",))

    # ---- Captioning: seq2seq 3-D mask, untied decoder, smoothed KL + drop-worst ----
    oscar = oscar_config(label_smoothing=0.1, drop_worst_ratio=0.2, drop_worst_after=0, tie_weights=0)
    m = Captioning(cfg, oscar)
    randomize(m, gen)
    m.eval()
    a, lt = 6, 3  # caption slots (max_seq_a_length) and tag slots; T = a + lt
    ids, types, _, feats = make_inputs(gen)
    types[:] = 0
    types[:, a:] = 1
    cap_len = [6, 4]  # [CLS] w w w w [SEP] / [CLS] w w [SEP] [PAD] [PAD]
    L = T + R
    mask = torch.zeros(B, L, L)
    for b in range(B):
        c = cap_len[b]
        ids[b, c:a] = 0
        mask[b, :c, :c] = torch.tril(torch.ones(c, c))
        real_r = R if b == 0 else R - 1
        ctx = list(range(a, a + lt)) + list(range(T, T + real_r))
        for i in range(c):
            mask[b, i, ctx] = 1
        for i in ctx:
            mask[b, i, ctx] = 1
    masked_pos = torch.zeros(B, T, dtype=torch.long)
    masked_pos[0, 2], masked_pos[0, 5], masked_pos[1, 1], masked_pos[1, 3] = 1, 1, 1, 1
    masked_ids = torch.tensor([[31, 2, 0], [57, 3, 0]])
    pos = torch.arange(T).repeat(B, 1)
    pos[:, a:] += 40 - a  # tags at positions 40.. as the reference's captioning inputs
    seq, _ = m.bert(ids, types, mask, feats, position_ids=pos)
    sel = seq[:, :T][masked_pos == 1]
    logits = m.cls.predictions(sel)
    tgt = masked_ids[masked_ids != 0]

    def cap_loss(logits, tgt, eps, ratio, drop):
        n = logits.size(1)
        one = torch.zeros_like(logits).scatter(1, tgt.view(-1, 1), 1)
        one = one * (1 - eps) + (1 - one) * eps / (n - 1)
        loss = F.kl_div(F.log_softmax(logits, 1), one, reduction="none").sum(1)
        if drop and ratio > 0:
            loss, _ = torch.topk(loss, k=int(loss.shape[0] * (1 - ratio)), largest=False)
        return loss.mean()

    gold = dict(logits=logits, loss_smooth_dropworst=cap_loss(logits, tgt, 0.1, 0.2, True).reshape(1),
                loss_smooth=cap_loss(logits, tgt, 0.1, 0.2, False).reshape(1),
                loss_plain=cap_loss(logits, tgt, 0.0, 0.0, False).reshape(1))
    inputs = dict(input_ids=ids, token_type_ids=types, attention_mask=mask, img_feats=feats, position_ids=pos,
                  masked_pos=masked_pos, masked_ids=masked_ids)
    write_model("caption", m, cfg, oscar, inputs, gold, formats=("zip", "legacy"))

    # v1 captioning checkpoint: head at the top level (`transform.*`, `decoder.weight`), no bias.
    v1 = {}
    for k, v in m.state_dict().items():
        if k == "cls.predictions.bias":
            continue
        v1[k.replace("cls.predictions.", "")] = v.clone()
    with torch.no_grad():
        logits_v1 = m.cls.predictions(sel) - m.cls.predictions.bias
    d = os.path.join(OUT, "caption")
    torch.save(v1, os.path.join(d, "v1_pytorch_model.bin"), _use_new_zipfile_serialization=False)
    save_file({"logits_v1": logits_v1.detach().contiguous()}, os.path.join(d, "goldens_v1.safetensors"))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
