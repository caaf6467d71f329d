#!/usr/bin/env python3
"""Generates captions that exercise the corners of Stanford CoreNLP 3.4.1's PTB lexer (the
tokenizer pycocoevalcap runs), mixed into realistic caption sentences. Seeded and deterministic:
the same (n, seed) always gives the same list.

Each caption has a category (the corner it was built to hit); ptb_differential.py reports
differences per category.

    python3 tools/reference/ptb_gen_captions.py --n 100000 --seed 20261202 --out captions.json
writes [{"category": ..., "text": ...}, ...].
"""
import argparse
import json
import random

SUBJ = ["a man", "a woman", "two dogs", "a cat", "the boy", "a little girl", "several people", "a group of kids",
        "an elephant", "three zebras", "a brown horse", "the red bus", "a white truck", "a giraffe", "some sheep",
        "a surfer", "a skateboarder", "a baseball player", "two women", "a young child", "an old man", "a teddy bear",
        "A man", "The dog", "Two people", "A plate", "THE BUS", "People", "Mr. Smith", "A chef"]
VERB = ["riding", "sitting on", "standing next to", "holding", "eating", "playing with", "walking across", "looking at",
        "lying on", "jumping over", "parked near", "flying", "carrying", "throwing", "catching", "crossing", "is on",
        "are near", "waits by", "stands beside"]
OBJ = ["a wave", "a surfboard", "the beach", "a bench", "a pizza", "a frisbee", "the street", "a kite", "a bed",
       "a red umbrella", "the grass", "a skateboard", "a plate of food", "the snow", "a table", "a laptop", "a banana",
       "a sign", "the clock", "a train", "the sandwich", "a bowl of soup"]
PLACE = ["in a park", "on a sunny day", "near the water", "in the kitchen", "at night", "in a field", "on the road",
         "next to a building", "under a tree", "in front of a store", "", "", "", "in New York", "at the U.S. Open"]
END = ["", "", ".", ".", " .", "!", "?", " ,", "...", ";", ":", "!!", "?!", " ...", "..", "....", ". ", " . "]

# Corner fragments by category. A fragment is inserted as a word, glued to a neighbour, or as
# the caption's end.
FRAG = {
    "periods": ["...", "..", "....", ".....", ". . .", ".  .  .", "a.b", "end. The", "the end.The", "x.", "dog.", ".", ". .",
                "U.S. The", "U.S. the", "U.S.", "I. The", "I. we", "vitamin C. The", "letter B.", "etc. The", "etc. the",
                "etc.", "e.g.", "i.e.", "a.m.", "p.m.", "A.M.", "No. 5", "no. 5", "fig. 3", "Fig.3", "St. Louis", "Co. Ltd",
                "Pty. Ltd", "wow.Then", "Dr.", "Calif. The", "Mass.", "ca. 1990", "art. 5", "op.", "U.S.A.", "u.s.a", "Ph.D.",
                "Ed.D.", "1.", "2.5.", "A.", "z.", "Jan. 5", "Feb.", "Inc., and", "Corp.", "Ltd.", "vs.", "Mt. Fuji",
                "v.s.", "a.k.a.", "cf.", "Sept.", "Mon.", "Ave. The", "Jr. and", "Bros.", "Gov. Brown", "etc.)", "etc.,"],
    "dashes": ["--", "---", "----", "-----", "-", " - ", "—", "–", "―", "well-known", "x-ray", "e-mail", "mother-in-law",
               "co-op", "-5", "- 5", "10-15", "pre-", "anti-war", "pro-choice", "a-", "-a", "half-time", "T-shirt",
               "re-enter", "‐", "‑", "_", "__", "under_score", "a_b", "&mdash;", "&ndash;", "--a", "a--b", "U.S.-based"],
    "brackets": ["(", ")", "[", "]", "{", "}", "<", ">", "( )", "(a)", "[b]", "{c}", "(s)", "cat(s)", "<<", ">>",
                 "(maybe)", "[sic]", "{x}", "-LRB-", "-rrb-", "(1)", "(555) 123-4567", "<b>", "</i>", "<br/>",
                 "<a href='x'>", "<!-- x -->", "< 5", "> 3", "a<b", "a>b", "‹", "›", "&lt;", "&gt;", "&lt;tag&gt;"],
    "quotes": ['"', "'", "`", "``", "''", "“", "”", "‘", "’", "„", "‚", "«", "»", "‹", "›", '"hello"', "'hi'", "`x'",
               "“curly”", "‘single’", '"STOP"', "'90s", "'em", "''quoted''", '" spaced "', "' spaced '", "it’s",
               "don’t", "‛", "‟", "&quot;", "&quot;x&quot;", "&apos;", '"5', "'5", "'a", "'A'", "a'", "'s", "'re",
               '"$5"', "\u0091", "\u0092", "\u0093", "\u0094", '""', "''x", "`x", "x`"],
    "contractions": ["don't", "can't", "won't", "it's", "I'm", "we're", "they've", "she'll", "he'd", "y'all", "o'clock",
                     "'tis", "'twas", "cannot", "CANNOT", "gonna", "Gotta", "wanna", "lemme", "gimme", "dogs'", "James'",
                     "rock 'n' roll", "'n'", "ain't", "shan't", "isn't", "DON'T", "can’t", "it’s", "o’clock", "Y'know",
                     "c'mon", "li'l", "ol'", "somethin'", "Dunkin'", "d'Artagnan", "l'amour", "O'Brien", "o'o", "'cause",
                     "'till", "nor'easter", "cont'd", "ev'ry", "e'er", "s'mores", "nat'l", "Cap'n", "c'est", "rock'n'roll",
                     "it 's", "do n't", "n't", "'s", "'ll", "'ve", "'d", "'m", "men's", "children's", "boss's", "bosses'",
                     "the '90s", "in '99", "'99", "Shi'ite", "B'Gosh", "'em", "can''t", "don`t", "it‘s"],
    "numbers": ["1,000", "10,000,000", "3.14", "0.5", ".5", "1/2", "3 1/2", "3-1/2", "½", "¼", "¾", "⅓", "⅔", "⅛", "2nd",
                "21st", "3rd", "4th", "4:30", "4:30pm", "12:00 PM", "10:45:30", "10-15", "555-1234", "555 1234",
                "(555) 123-4567", "+1 555 123 4567", "1990s", "-5", "+3", "12/25/2020", "1/2/03", "2020-01-01", "1,5",
                "1.000,50", "99.9%", "50 %", "10x", "3D", "4K", "100m", "5km", "2.5kg", "#1", "No.1", "1st.", "7.", "١٢٣",
                "٣٫٥", "१२", "²", "x²", "H₂O", "⁴⁵", "₁₂", "1/22/333", "12345/6", "1\u00a01/2", "1\u20442", "007",
                "1.2.3", "192.168.0.1", "3.30", "24/7", "50/50", "1\\/2", "2+2=4", "3*4", "1e5", "-3.5", "+0.5", "1-800-555-1234",
                "12.345.6789", "1:1", "16:9", "3:2:1", "100,", "200.", "I-95"],
    "symbols": ["&", "%", "$", "$5", "$5.00", "5$", "US$5", "US$", "A$10", "£5", "€3", "5€", "¥300", "¢", "50¢", "#", "#1",
                "@", "@home", "AT&T", "a&b", "A&W", "R&D", "S&P-500", "S&Ls", "a+b=c", "C++", "c#", "F#", "*", "**",
                "\\*", "~", "^", "|", "\\", "°", "90°", "²", "×", "÷", "♥", "★", "☆", "©", "®", "™", "§", "¶", "†",
                "‰", "±", "→", "∞", "≈", "¬", "¦", "¨", "¯", "´", "µ", "·", "•", "…", "‽", "¡Hola!", "¿Qué?", "&amp;",
                "&AMP;", "&nbsp;", "&eacute;", "&#39;", "&HT;", "=", "==", "+", "++", "/", "//", "a/b", "and/or",
                "1/2/3", "w/", "w/o", "24/7", "৳", "₹", "₩", "₽", "฿", "₠", "¤", "￡", "￥", "؋", "%%", "&&", "@@",
                "##", "__", "!", "!!", "?", "??", "?!", "!?", "!!!", "¡", "¿", ";", ":", "::", ",", ",,", "。", "、"],
    "urls": ["http://example.com", "https://www.example.com/a/b?c=d&e=f", "http://x.org/", "https://a.b.c/d.", "www.google.com",
             "www.example.co.uk", "example.com", "foo.net/bar", "cnn.com.", "my-site.org", "Example.COM", "site123.com",
             "foo@bar.com", "john.doe@example.org", "<foo@bar.com>", "&lt;a@b.c&gt;", "a@b", "@user", "@user_1", "#hashtag",
             "#tbt", "file.jpg", "photo.PNG", "report.pdf.", "script.py", "a.txt,", "index.html", "IMG_1234.JPG",
             "http://a.com/😀", "www.x.org/path/", "ftp://x.com", "mailto:a@b.com", "x.edu", "http://a.com)", "(http://b.org)"],
    "unicode": ["😀", "🐶", "👍🏽", "❤️", "🇺🇸", "中文", "日本語", "ひらがな", "カタカナ", "한국어", "Русский", "Ελληνικά", "العربية",
                "עברית", "हिन्दी", "ไทย", "Ångström", "naïve", "façade", "über", "résumé", "crème brûlée", "São Paulo",
                "Zürich", "Dvořák", "Łódź", "ß", "İstanbul", "ΣΟΦΟΣ", "Ꙋ", "ǅ", "ﬁ", "ꞵ", "e\u0301", "a\u0308b",
                "\ufb01sh", "𝐀𝐁𝐂", "𝔸", "Ⅻ", "ⅷ", "①", "㈱", "ℌ", "ℵ", "Ω", "µ", "ÿ", "\u0237", "\u0250", "ɐ",
                "ʃ", "ˈ", "ʼ", "ʻ", "\u02c6", "ْ", "ـ", "\u0640", "\u07c0", "ߊ", "\u0e3f", "\u0e31", "ก็", "\u00ad",
                "soft\u00adhyphen", "\u00adx", "\u2060", "\u200d", "\u200c", "\ue000", "\uffff", "\ufffd", "\u0378"],
    "whitespace": ["\t", "\t\t", "\u00a0", "a\u00a0b", "\u2009", "\u2002", "\u3000", "\u200b", "\ufeff", "\u200e", "  ", "   ",
                   " \t ", "\u202f", "\u205f", "\u1680", "\u180e", "\x1c", "\x1f", "\x00", "\x01", "\x1b", "\x7f", "\x08"],
    "linebreaks": ["\r", "\r\n", "\n", "\u2028", "\u2029", "\x0b", "\x0c", "\x85", "\n\n", "\r\r", "a\rb", "\u0085x"],
    "smileys": [":)", ":-(", ";)", ":D", ":P", ":-)", "=)", ":o)", "<3", "^_^", "-_-", "(^_^)", "(-.-)", "o_O", ":-/", ":|",
                ">:(", ":]", "=[", ";-)", "x_x", "(x_x)", ":'(", ":@", ":{"],
    "caps": ["THE", "A DOG ON A BUS.", "U.S. ARMY", "NEW YORK CITY", "IBM", "NASA", "I", "A", "OK", "TV", "The", "An", "It",
             "He", "She", "They", "This", "What", "When", "You", "We", "Mr. Jones", "Ms. Lee", "Many", "About"],
}
EMPTY = ["", " ", "  ", "\t", ".", "...", "!!!", "?", "-", "--", "'", '"', "''", "``", "( )", "\u00a0", "\u3000", "😀",
         ".\n", " . ", ":", ";", ",", "\u200b"]


def sentence(r):
    s = " ".join(x for x in [r.choice(SUBJ), r.choice(VERB), r.choice(OBJ), r.choice(PLACE)] if x)
    if r.random() < 0.3:
        s = s[0].upper() + s[1:]
    if r.random() < 0.05:
        s = s.upper()
    return s


def insert(r, words, frag):
    """Puts `frag` among `words`: as its own word, glued before/after a word, or at the end."""
    mode = r.random()
    i = r.randrange(len(words) + 1)
    if mode < 0.55 or not words:
        words.insert(i, frag)
    elif mode < 0.7:
        j = min(i, len(words) - 1)
        words[j] = frag + words[j]
    elif mode < 0.85:
        j = min(i, len(words) - 1)
        words[j] = words[j] + frag
    else:
        words.append(frag)


POOL = sorted({ch for fr in FRAG.values() for f in fr for ch in f} | set("abcxyzABCXYZ0123456789 .,'\"-/:;()"))


def soup(r):
    """Fragments glued together with random characters: corners next to corners."""
    parts = []
    for _ in range(r.randint(2, 8)):
        x = r.random()
        if x < 0.4:
            c = r.choice(list(FRAG))
            parts.append(r.choice(FRAG[c]))
        elif x < 0.8:
            parts.append("".join(r.choice(POOL) for _ in range(r.randint(1, 4))))
        elif x < 0.9:
            parts.append(chr(r.randint(0x20, 0xFFFF)) if r.random() < 0.9 else chr(r.randint(0x10000, 0x1FFFF)))
        else:
            parts.append(r.choice(SUBJ))
    return "".join(p + (" " if r.random() < 0.5 else "") for p in parts)


def caption(r, cat):
    if cat == "empty":
        return r.choice(EMPTY)
    if cat == "soup":
        s = soup(r)
        return s if not any(0xD800 <= ord(ch) <= 0xDFFF for ch in s) else s.encode("utf-8", "replace").decode("utf-8", "replace")
    words = sentence(r).split(" ")
    k = 1 + (r.random() < 0.4) + (r.random() < 0.15)
    for _ in range(k):
        c = cat if r.random() < 0.75 else r.choice(list(FRAG))
        insert(r, words, r.choice(FRAG[c]))
    sep = " "
    if r.random() < 0.05:
        sep = r.choice(["  ", "\t", "\u00a0", " \u00a0"])
    s = sep.join(words) + r.choice(END)
    if r.random() < 0.05:
        s = r.choice([" ", "\t", "\u00a0", "  "]) + s
    if r.random() < 0.05:
        s = s + r.choice([" ", "\t", "\u00a0", "  ", "\u3000"])
    return s


def generate(n, seed):
    r = random.Random(seed)
    cats = list(FRAG) + ["empty", "soup"]
    weights = [1.0] * len(FRAG) + [0.3, 1.5]
    out = []
    for _ in range(n):
        cat = r.choices(cats, weights)[0]
        out.append({"category": cat, "text": caption(r, cat)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    caps = generate(a.n, a.seed)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(caps, f, ensure_ascii=False)
    print("wrote", len(caps), "captions to", a.out)


if __name__ == "__main__":
    main()
