#!/usr/bin/env python3
"""Caption-metric goldens on captions from the PTB corner-case generator (ptb_gen_captions.py):
300 images with 5 references each and one prediction, scored by pycocoevalcap 1.2's own
PTBTokenizer, Bleu(4), Meteor, Rouge and Cider, plus CIDEr-D with document frequencies from 400
generated "training" images (as make_caption_goldens.py does it).

Captions holding a character the jar treats as a line break (\\r, U+2028, U+2029, VT, FF) are
left out: pycocoevalcap misaligns every later caption on them (docs/ptb-tokenizer.md). Image ids
are zero-padded so that sorted order (oscar's) equals insertion order (pycocoevalcap's batch order).

Regenerate (from the repository root; Java needed):
    .venv-ref/bin/python tools/reference/make_ptb_caption_goldens.py crates/oscar-eval/tests/fixtures/caption_goldens_ptb.json
"""
import json
import os
import random
import sys
from collections import defaultdict

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptb_gen_captions  # noqa: E402

BREAKS = "\r\u2028\u2029\x0b\x0c"
SEED = 20261203


def main():
    out = sys.argv[1]
    pool = [c["text"] for c in ptb_gen_captions.generate(4000, SEED) if not any(b in c["text"] for b in BREAKS)]
    r = random.Random(SEED)
    it = iter(pool)
    refs, preds = {}, {}
    for i in range(300):
        k = f"{i:03d}"
        refs[k] = [next(it) for _ in range(5)]
        # Predictions: a reference, a generated caption, or a reference with its words shuffled.
        x = r.random()
        if x < 0.3:
            preds[k] = r.choice(refs[k])
        elif x < 0.7:
            preds[k] = next(it)
        else:
            w = r.choice(refs[k]).split(" ")
            r.shuffle(w)
            preds[k] = " ".join(w)
    train = {f"t{i:03d}": [next(it) for _ in range(5)] for i in range(400)}

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in preds.items()})
    scores, per = {}, defaultdict(dict)
    for name, scorer in [("bleu", Bleu(4)), ("meteor", Meteor()), ("rouge_l", Rouge()), ("cider", Cider())]:
        s, ss = scorer.compute_score(gts, res)
        scores[name] = s
        for k_i, k in enumerate(gts.keys()):
            if name == "bleu":
                per[k]["bleu"] = [ss[n][k_i] for n in range(4)]
            else:
                per[k][name] = float(ss[k_i])

    train_tok = tok.tokenize({k: [{"caption": c} for c in v] for k, v in train.items()})
    df_scorer = CiderScorer(n=4, sigma=6.0)
    for k in train_tok:
        df_scorer.cook_append(None, train_tok[k])
    df_scorer.compute_doc_freq()
    sc = CiderScorer(n=4, sigma=6.0)
    for k in gts:
        sc.cook_append(res[k][0], gts[k])
    sc.document_frequency = defaultdict(float, dict(df_scorer.document_frequency))

    class CountedAs(list):
        """compute_cider takes ref_len = log(len(crefs)); SCST's CIDEr-D uses the training count."""
        def __init__(self, items, n):
            super().__init__(items)
            self.n = n

        def __len__(self):
            return self.n

    sc.crefs = CountedAs(sc.crefs, len(train_tok))
    cd = sc.compute_cider()
    for k_i, k in enumerate(gts.keys()):
        per[k]["cider_d_train"] = float(cd[k_i])
    scores["cider_d_train"] = float(sum(cd) / len(cd))

    with open(out, "w", encoding="utf-8") as f:
        json.dump({
            "generator": "python3 tools/reference/make_ptb_caption_goldens.py " + out + " (pycocoevalcap 1.2)",
            "refs": refs, "preds": preds,
            "tokenized_refs": gts, "tokenized_preds": {k: v[0] for k, v in res.items()},
            "train_captions": train,
            "scores": scores, "per_image": per,
        }, f, ensure_ascii=False, indent=0)
    print("wrote", out, {k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()})


if __name__ == "__main__":
    main()
