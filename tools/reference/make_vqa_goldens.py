#!/usr/bin/env python3
"""VQA accuracy goldens from a Python implementation of the official evaluation
(GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py): the same regular expressions
(`periodStrip` with its odd look-behind, `re.sub(..., re.UNICODE)` passing 32 as the count), the
same punctuation list and contraction table, GT answers punctuation-processed only when they
disagree, and leave-one-out over the 10 human answers compared as dicts (answer_id keeps them
distinct). Breakdowns use the per-question mean (avgGTAcc), as the later official versions do.

Regenerate (from the repository root):
    python3 tools/reference/make_vqa_goldens.py crates/oscar-eval/tests/fixtures/vqa
"""
import json
import os
import random
import re
import sys

# The official contraction table (curly apostrophes as in the official file).
CONTRACTIONS = {"aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't", "couldn'tve": "couldn’t’ve", "couldnt’ve": "couldn’t’ve", "didnt": "didn’t", "doesnt": "doesn’t", "dont": "don’t", "hadnt": "hadn’t", "hadnt’ve": "hadn’t’ve", "hadn'tve": "hadn’t’ve", "hasnt": "hasn’t", "havent": "haven’t", "hed": "he’d", "hed’ve": "he’d’ve", "he’dve": "he’d’ve", "hes": "he’s", "howd": "how’d", "howll": "how’ll", "hows": "how’s", "Id’ve": "I’d’ve", "I’dve": "I’d’ve", "Im": "I’m", "Ive": "I’ve", "isnt": "isn’t", "itd": "it’d", "itd’ve": "it’d’ve", "it’dve": "it’d’ve", "itll": "it’ll", "let’s": "let’s", "maam": "ma’am", "mightnt": "mightn’t", "mightnt’ve": "mightn’t’ve", "mightn’tve": "mightn’t’ve", "mightve": "might’ve", "mustnt": "mustn’t", "mustve": "must’ve", "neednt": "needn’t", "notve": "not’ve", "oclock": "o’clock", "oughtnt": "oughtn’t", "ow’s’at": "’ow’s’at", "’ows’at": "’ow’s’at", "’ow’sat": "’ow’s’at", "shant": "shan’t", "shed’ve": "she’d’ve", "she’dve": "she’d’ve", "she’s": "she’s", "shouldve": "should’ve", "shouldnt": "shouldn’t", "shouldnt’ve": "shouldn’t’ve", "shouldn’tve": "shouldn’t’ve", "somebody’d": "somebodyd", "somebodyd’ve": "somebody’d’ve", "somebody’dve": "somebody’d’ve", "somebodyll": "somebody’ll", "somebodys": "somebody’s", "someoned": "someone’d", "someoned’ve": "someone’d’ve", "someone’dve": "someone’d’ve", "someonell": "someone’ll", "someones": "someone’s", "somethingd": "something’d", "somethingd’ve": "something’d’ve", "something’dve": "something’d’ve", "somethingll": "something’ll", "thats": "that’s", "thered": "there’d", "thered’ve": "there’d’ve", "there’dve": "there’d’ve", "therere": "there’re", "theres": "there’s", "theyd": "they’d", "theyd’ve": "they’d’ve", "they’dve": "they’d’ve", "theyll": "they’ll", "theyre": "they’re", "theyve": "they’ve", "twas": "’twas", "wasnt": "wasn’t", "wed’ve": "we’d’ve", "we’dve": "we’d’ve", "weve": "we've", "werent": "weren’t", "whatll": "what’ll", "whatre": "what’re", "whats": "what’s", "whatve": "what’ve", "whens": "when’s", "whered": "where’d", "wheres": "where's", "whereve": "where’ve", "whod": "who’d", "whod’ve": "who’d’ve", "who’dve": "who’d’ve", "wholl": "who’ll", "whos": "who’s", "whove": "who've", "whyll": "why’ll", "whyre": "why’re", "whys": "why’s", "wont": "won’t", "wouldve": "would’ve", "wouldnt": "wouldn’t", "wouldnt’ve": "wouldn’t’ve", "wouldn’tve": "wouldn’t’ve", "yall": "y’all", "yall’ll": "y’all’ll", "y’allll": "y’all’ll", "yall’d’ve": "y’all’d’ve", "y’alld’ve": "y’all’d’ve", "y’all’dve": "y’all’d’ve", "youd": "you’d", "youd’ve": "you’d’ve", "you’dve": "you’d’ve", "youll": "you’ll", "youre": "you’re", "youve": "you’ve"}
MANUAL = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
          "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ["a", "an", "the"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = [";", ":", r"/", r"'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@", "`", ",", "?"]  # the official list


def process_punctuation(in_text):
    out = in_text
    for p in PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(COMMA_STRIP, in_text) is not None):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, re.UNICODE)


def process_digit_article(in_text):
    out = []
    for word in in_text.lower().split():
        word = MANUAL.setdefault(word, word)
        if word not in ARTICLES:
            out.append(word)
    for i, word in enumerate(out):
        if word in CONTRACTIONS:
            out[i] = CONTRACTIONS[word]
    return " ".join(out)


def evaluate(anns, results):
    res = {r["question_id"]: r["answer"] for r in results}
    per_q, by_qt, by_at, acc_all = {}, {}, {}, []
    for ann in anns:
        qid = ann["question_id"]
        ans = res[qid].replace("\n", " ").replace("\t", " ").strip()
        ans = process_digit_article(process_punctuation(ans))
        gts = [dict(a) for a in ann["answers"]]
        if len(set(a["answer"] for a in gts)) > 1:
            for a in gts:
                a["answer"] = process_punctuation(a["answer"])
        accs = []
        for g in gts:
            others = [x for x in gts if x != g]
            accs.append(min(1, len([x for x in others if x["answer"] == ans]) / 3))
        avg = sum(accs) / len(accs)
        acc_all.append(avg)
        per_q[str(qid)] = 100 * avg
        by_qt.setdefault(ann["question_type"], []).append(avg)
        by_at.setdefault(ann["answer_type"], []).append(avg)
    pct = lambda d: {k: 100 * sum(v) / len(v) for k, v in d.items()}
    return {"overall": 100 * sum(acc_all) / len(acc_all), "per_question_type": pct(by_qt), "per_answer_type": pct(by_at), "per_question": per_q}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(7)
    pool = ["yes", "no", "Yes", "yes.", "no!", "2", "two", "Two", "10", "ten", "1,000", "1000", "3.5", "3.5.", "a dog", "the dog", "dog",
            "dogs", "red", "Red", "red and white", "red, white", "it's", "its", "dont", "don't", "isnt", "wont", "none", "zero", "0",
            "left", "on the left", "tennis racket", "tennis-racket", "tennis_racket", "man's hat", "mans hat", "ok", "o.k.", "u.s.",
            "e.g. cat", "cat (black)", "grey/white", "he's", "hes", "youre", "a", "the", "an apple", "apple", " apple ", "APPLE",
            "yes\n", "no\tway", "a.m.", "5 p.m.", "100%", "#1", "@home", "x=y", "3 dogs", "three dogs", "c++", "??", "!", "\"quoted\""]
    qtypes = ["what color is the", "how many", "is the", "what is", "where is the", "is there a"]
    atypes = ["yes/no", "number", "other"]
    anns, results = [], []
    for q in range(600):
        mode = rng.random()
        if mode < 0.2:
            answers = [rng.choice(pool)] * 10
        elif mode < 0.6:
            a, b = rng.sample(pool, 2)
            k = rng.randint(0, 10)
            answers = [a] * k + [b] * (10 - k)
            rng.shuffle(answers)
        else:
            answers = [rng.choice(pool) for _ in range(10)]
        anns.append({"question_id": 1000 + q, "image_id": q // 3, "question_type": rng.choice(qtypes), "answer_type": rng.choice(atypes),
                     "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
                     "multiple_choice_answer": answers[0]})
        pred = rng.choice(answers) if rng.random() < 0.6 else rng.choice(pool)
        results.append({"question_id": 1000 + q, "answer": pred})
    json.dump({"annotations": anns, "data_subtype": "synthetic"}, open(os.path.join(out, "annotations.json"), "w"), ensure_ascii=False)
    json.dump(results, open(os.path.join(out, "results.json"), "w"), ensure_ascii=False)
    json.dump(evaluate(anns, results), open(os.path.join(out, "goldens.json"), "w"), indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
