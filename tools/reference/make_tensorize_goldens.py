#!/usr/bin/env python3
"""Tensorization goldens: a Python implementation of the reference's input rules (oscar-spec §1.1,
§2.1, §3.5 — `_truncate_seq_pair`, the retrieval/captioning truncation, `random_word`, the
`CaptionTensorizer` masks and seq2seq attention mask) with HF's BertTokenizer. Random draws go
through a recording generator; the Rust test replays the same draws and must produce the same
ids, types, masks, labels and positions.

Regenerate (from the repository root):
    .venv-ref/bin/python tools/reference/make_tensorize_goldens.py crates/oscar/tests/fixtures/tokenizer/bert-base-uncased-vocab.txt \
        crates/oscar/tests/fixtures/tensorize_goldens.json
"""
import json
import random
import sys

from transformers import BertTokenizer


class Recording(random.Random):
    """random.Random that logs every random() and _randbelow() result, in order."""

    def __init__(self, seed):
        self.log = []
        super().__init__(seed)

    def random(self):
        v = super().random()
        self.log.append(v)
        return v

    def _randbelow(self, n):
        v = super()._randbelow(n)
        self.log.append(v)
        return v


def truncate_seq_pair(a, b, max_length):
    while len(a) + len(b) > max_length:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()


def layout(tok, text_a, text_b, max_len, rule):
    a = tok.tokenize(text_a)
    b = tok.tokenize(text_b) if text_b else None
    if rule == "pair" and b:
        truncate_seq_pair(a, b, max_len - 3)
    else:
        a = a[: max_len - 2]
        if b:
            # The reference slices with `max_len - len(tokens) - 1`, which goes negative (and so
            # keeps almost every tag, overflowing max_len) when the caption fills the budget;
            # the evident intent, which oscar-rs follows, is no room left for tags.
            b = b[: max(0, max_len - len(a) - 3)]
    return a, b


def random_word(tokens, tok, rng):
    labels = []
    vocab_items = list(tok.vocab.items())
    for i, t in enumerate(tokens):
        prob = rng.random()
        if prob < 0.15:
            prob /= 0.15
            if prob < 0.8:
                tokens[i] = "[MASK]"
            elif prob < 0.9:
                tokens[i] = rng.choice(vocab_items)[0]
            labels.append(tok.vocab.get(t, tok.vocab["[UNK]"]))
        else:
            labels.append(-1)
    return tokens, labels


def pretrain_case(tok, text_a, text_b, max_len, img_len, n_regions, seed, rule="pair"):
    rng = Recording(seed)
    a, b = layout(tok, text_a, text_b, max_len, rule)
    a, la = random_word(a, tok, rng)
    lb = []
    if b:
        b, lb = random_word(b, tok, rng)
    tokens = ["[CLS]"] + a + ["[SEP]"]
    types = [0] * len(tokens)
    labels = [-1] + la + [-1]
    if b:
        tokens += b + ["[SEP]"]
        types += [1] * (len(b) + 1)
        labels += lb + [-1]
    ids = tok.convert_tokens_to_ids(tokens)
    n = min(n_regions, img_len)
    pad = max_len - len(ids)
    mask = [1] * len(ids) + [0] * pad + [1] * n + [0] * (img_len - n)
    return {"kind": "pretrain", "text_a": text_a, "text_b": text_b, "max_seq_length": max_len, "max_img_seq_length": img_len,
            "num_regions": n_regions, "truncation": rule, "draws": rng.log,
            "input_ids": ids + [0] * pad, "token_type_ids": types + [0] * pad, "attention_mask": mask,
            "lm_labels": labels + [-1] * pad + [-1] * img_len}


def caption_case(tok, caption, tags, seq_a, seq_len, img_len, n_regions, seed, train=True):
    rng = Recording(seed)
    a = tok.tokenize(caption) if train else ["[MASK]"] * (seq_a - 2)
    a = a[: seq_a - 2]
    tokens = ["[CLS]"] + a + ["[SEP]"]
    types = [0] * len(tokens)
    seq_a_len = len(tokens)
    if tags:
        pad_a = seq_a - seq_a_len
        tokens += ["[PAD]"] * pad_a
        types += [0] * pad_a
        b = tok.tokenize(tags)
        b = b[: seq_len - len(tokens) - 1]
        tokens += b + ["[SEP]"]
        types += [1] * (len(b) + 1)
    cur_len = len(tokens)
    masked_pos, masked_ids = [1] * seq_len, []
    if train:
        masked_pos = [0] * seq_len
        cand = list(range(1, seq_a_len))
        rng.shuffle(cand)
        num = int(min(max(round(0.15 * seq_a_len), 1), 3))
        idx = sorted(cand[:num])
        masked_tok = [tokens[i] for i in idx]
        for p in idx:
            if rng.random() <= 0.8:
                tokens[p] = "[MASK]"
            elif rng.random() <= 0.5:
                i = rng.randint(0, len(tok.vocab))
                tokens[p] = tok._convert_id_to_token(i)
        for p in idx:
            masked_pos[p] = 1
        masked_tok += ["[PAD]"] * (3 - num)
        masked_ids = tok.convert_tokens_to_ids(masked_tok)
    tokens += ["[PAD]"] * (seq_len - cur_len)
    types += [0] * (seq_len - cur_len)
    n = min(n_regions, img_len)
    L = seq_len + img_len
    m = [[0] * L for _ in range(L)]

    def fill(r0, r1, c0, c1):
        for r in range(r0, r1):
            for c in range(c0, c1):
                m[r][c] = 1
    for r in range(seq_a_len):
        fill(r, r + 1, 0, r + 1)
    l0, l1 = (seq_a, cur_len) if tags else (0, 0)
    r0, r1 = seq_len, seq_len + n
    fill(l0, l1, l0, l1)
    fill(r0, r1, r0, r1)
    fill(0, seq_a_len, l0, l1)
    fill(0, seq_a_len, r0, r1)
    fill(l0, l1, r0, r1)
    fill(r0, r1, l0, l1)
    return {"kind": "caption", "caption": caption if train else None, "tags": tags, "max_seq_a_len": seq_a, "max_seq_len": seq_len,
            "max_img_seq_len": img_len, "num_regions": n_regions, "draws": rng.log, "seq_a_len": seq_a_len,
            "input_ids": tok.convert_tokens_to_ids(tokens), "token_type_ids": types, "attention_mask": [x for row in m for x in row],
            "masked_pos": masked_pos, "masked_ids": masked_ids}


def main():
    vocab, out = sys.argv[1], sys.argv[2]
    tok = BertTokenizer(vocab, do_lower_case=True)
    caps = ["A man riding a wave on top of a surfboard.", "Two dogs play in the snow.", "a cat", "An extraordinarily long caption about a "
            "very large brown dog chasing a bright red frisbee across a sunny park full of people and trees", "Elephants!"]
    tags = ["man surfboard wave water", "dog dog snow tree", "cat", "dog frisbee person person tree grass sky cloud", ""]
    cases = []
    seed = 0
    for i, c in enumerate(caps):
        for rule in ["pair", "text_first"]:
            for max_len, img_len, n_reg in [(35, 50, 7), (12, 4, 9), (9, 3, 0)]:
                seed += 1
                cases.append(pretrain_case(tok, c, tags[i] or None, max_len, img_len, n_reg, seed, rule))
        for seq_a, seq_len, img_len, n_reg in [(40, 70, 50, 5), (8, 14, 3, 6)]:
            for train in [True, False]:
                seed += 1
                cases.append(caption_case(tok, c, tags[i] or None, seq_a, seq_len, img_len, n_reg, seed, train))
    json.dump({"generator": "tools/reference/make_tensorize_goldens.py (HF BertTokenizer 4.46.3)", "cases": cases}, open(out, "w"))
    print("wrote", len(cases), "cases")


if __name__ == "__main__":
    main()
