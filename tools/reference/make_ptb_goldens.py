#!/usr/bin/env python3
"""PTB tokenization goldens: pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1 jar,
-preserveLines -lowerCase, then punctuation removal) on hard cases beyond plain captions.

Regenerate (from the repository root; Java needed):
    .venv-ref/bin/python tools/reference/make_ptb_goldens.py crates/oscar-eval/tests/fixtures/ptb_goldens.json
"""
import json
import sys

from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

CASES = [
    "A man riding a wave on top of a surfboard.", "Two dogs play in the snow!", "What colour is the car?  It's RED; isn't it?",
    "The café's crème brûlée costs $4.50 (or €3,99).", "Ångström, naïve, façade, Über-cool, résumé",
    "Numbers: 1, 22, 333, 4444, 3.14159, 2nd, 10x, 100%", "hyphenated-words and under_scores and slashes/paths",
    "\"Quoted\" 'single' `back` «angle» — dash – en-dash … ellipsis", "don't won't can't y'all o'clock cannot gonna gotta wanna",
    "e.g. i.e. U.S.A. Mr. Dr. St. Louis", "A dog [on a leash] {with braces} & co.", "people's dogs' the 90's 1,000 3.14 10% #1 @home a+b=c",
    "The centre of the theatre, a colourful neighbour.", "emoji 😀 and symbols ♥ ★ © ®", "A   man ...  with -- dashes - and ; semicolons : colons",
    "I'm we're they've she'll he'd", "it costs £5 or ¥300 or 5€ now", "“double curly” and ‘single curly’ and it’s and don’t",
    "AT&T and 1/2 and 3:30 and 4:30pm at 5 a.m. or p.m.", "hello.world wow!! really?! the end.", "the cat(s) 2-3 times in the 1990s and '90s",
    "mother-in-law e-mail x-ray co-op", "A man, a plan; a canal: Panama.", "The dog's bone. The dogs' bones. James' car.",
    "a man on a skateboard.a trick", "There is a STOP sign. THE END", "Two men. They are playing", "a red-and-white bus parked near the curb .",
    "he said \"hello\" to her", "he said ' hello ' to her", "'tis the season", "ok...", "Mr. Smith went to Washington.",
    "I.B.M. is big. U.S. troops", "$5.00 and 5$", "A giraffe standing in a field,eating leaves", "A pizza with cheese,tomatoes and olives",
    "two people on a beach - one is surfing", "A sign that reads \"STOP\"", "A (very) large elephant", "a bus #42 on the road",
    "The kids' toys are on the floor.", "a 10-year-old boy", "a man's hat and a woman's bag", "A MAN RIDING A HORSE.",
    "a cat sitting on a laptop computer's keyboard", "A plate of food: rice, beans and meat.", "a small dog looking out a car window!",
    "what's that?", "There's a dog.", "Who's there?", "a clock that says 12:30", "a train on tracks ... in the city",
    "an adult and a child ( maybe his son )", "a 2 story house", "people at a 5k race", "a 1950s car", "1/2 of a sandwich",
]


def main():
    out = sys.argv[1]
    tok = PTBTokenizer()
    res = tok.tokenize({str(i): [{"caption": c}] for i, c in enumerate(CASES)})
    with open(out, "w") as f:
        json.dump({"generator": "pycocoevalcap 1.2 PTBTokenizer", "cases": [{"text": c, "tokens": res[str(i)][0]} for i, c in enumerate(CASES)]},
                  f, ensure_ascii=False, indent=1)
    print("wrote", len(CASES), "cases")


if __name__ == "__main__":
    main()
