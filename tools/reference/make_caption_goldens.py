#!/usr/bin/env python3
"""Caption-metric goldens from pycocoevalcap 1.2 (PTBTokenizer, Bleu(4), Meteor, Rouge, Cider) on
several hundred varied candidate/reference sets, plus CIDEr-D with document frequencies from a
separate "training" caption set (pycocoevalcap's CiderScorer with its frequencies replaced).

Regenerate (from the repository root; Java needed for the tokenizer and METEOR jars):
    .venv-ref/bin/pip install pycocoevalcap==1.2
    .venv-ref/bin/python tools/reference/make_caption_goldens.py crates/oscar-eval/tests/fixtures/caption_goldens.json
"""
import json
import random
import sys
from collections import defaultdict

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

R = random.Random(20261128)
SUBJ = ["a man", "a woman", "two dogs", "a cat", "the boy", "a little girl", "several people", "a group of kids",
        "an elephant", "three zebras", "a brown horse", "the red bus", "a white truck", "a giraffe", "some sheep",
        "a surfer", "a skateboarder", "a baseball player", "two women", "a young child", "an old man", "a teddy bear"]
VERB = ["riding", "sitting on", "standing next to", "holding", "eating", "playing with", "walking across", "looking at",
        "lying on", "jumping over", "parked near", "flying", "carrying", "throwing", "catching", "crossing"]
OBJ = ["a wave", "a surfboard", "the beach", "a bench", "a pizza", "a frisbee", "the street", "a kite", "a bed",
       "a red umbrella", "the grass", "a skateboard", "a plate of food", "the snow", "a table", "a laptop", "a banana"]
PLACE = ["in a park", "on a sunny day", "near the water", "in the kitchen", "at night", "in a field", "on the road",
         "next to a building", "under a tree", "in front of a store", "", "", ""]
EXTRA = ["", "", "", " .", ".", "!", " ,", "?", " ...", ";"]

EDGE = [
    "It's RED; isn't it?", "The café's crème brûlée costs $4.50 (or €3,99).", "don't won't can't cannot gonna",
    "A dog [on a leash] {with braces} & co.", "people's dogs' the 90's 1,000 3.14 10% #1 @home",
    "\"Quoted\" words and 'single' quotes", "A   man ...  with -- dashes - and ; semicolons : colons",
    "I'm we're they've she'll he'd", "Ångström naïve façade", "mother-in-law e-mail x-ray co-op",
    "A man, a plan; a canal: Panama.", "The dog's bone. The dogs' bones.", "There is a STOP sign. THE END",
    "he said \"hello\" to her", "Mr. Smith went to Washington.", "I.B.M. is big. U.S. troops", "$5.00 and 5$",
    "wow!! really?!", "the cat(s) in the 1990s", "“double curly” and it’s and don’t", "A red-and-white bus .",
    "a man on a skateboard.a trick", "ok...", "at 5 a.m. or p.m.", "it costs £5 now", "a+b=c",
]


def sentence():
    s = " ".join(x for x in [R.choice(SUBJ), R.choice(VERB), R.choice(OBJ), R.choice(PLACE)] if x)
    if R.random() < 0.3:
        s = s[0].upper() + s[1:]
    if R.random() < 0.15:
        s = s.replace(" and ", ", and ").replace(" on ", " on  ")
    if R.random() < 0.1:
        s = s.upper()
    return s + R.choice(EXTRA)


def candidate(refs):
    r = R.random()
    base = R.choice(refs)
    words = base.split()
    if r < 0.25:
        return base
    if r < 0.45:
        return sentence()
    if r < 0.6:
        R.shuffle(words)
        return " ".join(words)
    if r < 0.75:
        return " ".join(words[: max(1, len(words) // 2)])
    if r < 0.85:
        return " ".join(words + words[-3:])
    if r < 0.9:
        return R.choice(["a", "a a a a", "the the", "dog", "."])
    return R.choice(EDGE)


def main():
    out = sys.argv[1]
    n_img = 300
    refs, preds = {}, {}
    for i in range(n_img):
        k = R.choice([1, 3, 5, 5, 5, 6])
        rs = [sentence() for _ in range(k)]
        if i < len(EDGE):
            rs[0] = EDGE[i]
        refs[str(i)] = rs
        preds[str(i)] = candidate(rs)
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in preds.items()})

    scores = {}
    per = defaultdict(dict)
    for name, scorer in [("bleu", Bleu(4)), ("meteor", Meteor()), ("rouge_l", Rouge()), ("cider", Cider())]:
        s, ss = scorer.compute_score(gts, res)
        scores[name] = s
        keys = list(gts.keys())
        if name == "bleu":
            for k_i, k in enumerate(keys):
                per[k]["bleu"] = [ss[n][k_i] for n in range(4)]
        else:
            for k_i, k in enumerate(keys):
                per[k][name] = float(ss[k_i])

    # CIDEr-D with document frequencies from a separate "training" caption set.
    train = {f"t{i}": [sentence() for _ in range(5)] for i in range(400)}
    train_tok = tok.tokenize({k: [{"caption": c} for c in v] for k, v in train.items()})
    df_scorer = CiderScorer(n=4, sigma=6.0)
    for k in train_tok:
        df_scorer.cook_append(None, train_tok[k])
    df_scorer.compute_doc_freq()
    train_df = dict(df_scorer.document_frequency)
    sc = CiderScorer(n=4, sigma=6.0)
    for k in gts:
        sc.cook_append(res[k][0], gts[k])
    sc.document_frequency = defaultdict(float, train_df)

    class CountedAs(list):
        """compute_cider takes ref_len = log(len(crefs)); SCST's CIDEr-D uses the training count."""
        def __init__(self, items, n):
            super().__init__(items)
            self.n = n

        def __len__(self):
            return self.n

    sc.crefs = CountedAs(sc.crefs, len(train_tok))
    cd_scores = sc.compute_cider()
    for k_i, k in enumerate(gts.keys()):
        per[k]["cider_d_train"] = float(cd_scores[k_i])
    scores["cider_d_train"] = float(sum(cd_scores) / len(cd_scores))

    with open(out, "w") as f:
        json.dump({
            "generator": "pycocoevalcap 1.2 via tools/reference/make_caption_goldens.py",
            "refs": refs, "preds": preds,
            "tokenized_refs": gts, "tokenized_preds": {k: v[0] for k, v in res.items()},
            "train_captions": train,
            "scores": scores, "per_image": per,
        }, f, ensure_ascii=False, indent=0)
    print("wrote", out, {k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()})


if __name__ == "__main__":
    main()
