#!/usr/bin/env python3
"""Tokenizer goldens: HF transformers' BertTokenizer (the slow, pure-Python one that Oscar's
vendored pytorch-transformers also uses) on a varied corpus, with the bert-base-uncased vocab.

Regenerate (from the repository root):
    .venv-ref/bin/python tools/reference/make_tokenizer_goldens.py \
        crates/oscar/tests/fixtures/tokenizer/bert-base-uncased-vocab.txt \
        crates/oscar/tests/fixtures/tokenizer/goldens.json
"""
import json
import sys

from transformers import BertTokenizer

CORPUS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs play in the snow!",
    "What colour is the car?  It's RED; isn't it?",
    "The café's crème brûlée costs $4.50 (or €3,99).",
    "Ångström, naïve, façade, Über-cool, résumé",
    "Numbers: 1, 22, 333, 4444, 3.14159, 1e-5, 2nd, 10x, 100%",
    "hyphenated-words and under_scores and slashes/paths",
    "\"Quoted\" 'single' `back` «angle» „low” — dash – en-dash … ellipsis",
    "unbelievableness antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "一只猫坐在垫子上",
    "日本語のテキストと English mixed 한국어",
    "emoji 😀 and symbols ♥ ★ © ® ™",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "control\u0000chars\u200bzero\u00a0width",
    "UPPER lower MiXeD CaSe",
    "a" * 120,
    "xqzjv blorptastic flibbertigibbet",
    "[CLS] and [SEP] typed as text",
    "person;dog;frisbee;grass;tree",
    "man person surfboard wave water ocean",
    "",
    "   ",
    "don't won't can't y'all o'clock",
    "e.g. i.e. U.S.A. Mr. Dr. St.",
    "Ελληνικά και русский текст",
]


def main():
    vocab, out = sys.argv[1], sys.argv[2]
    tok = BertTokenizer(vocab, do_lower_case=True)
    rows = [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in CORPUS]
    with open(out, "w") as f:
        json.dump({"generator": "transformers.BertTokenizer(do_lower_case=True) 4.46.3", "cases": rows}, f, indent=1, ensure_ascii=False)
    print("wrote", len(rows), "cases to", out)


if __name__ == "__main__":
    main()
