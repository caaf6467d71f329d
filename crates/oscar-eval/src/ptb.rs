//! Caption tokenization as pycocoevalcap does it: Stanford CoreNLP 3.4.1's `PTBTokenizer
//! -preserveLines -lowerCase` on each caption, then removal of the punctuation tokens in
//! `PUNCTUATIONS`. This is a re-implementation of the PTB rules that matter for captions
//! (clitics, quotes, brackets, currency, dashes, ellipses, abbreviations and acronyms); it is
//! checked token for token against the jar on a varied corpus (tests/ptb_goldens.rs).
//!
//! Quirks kept on purpose because the official pipeline has them: brackets become `-lrb-` …
//! and, being lower-cased, are *not* removed by the (upper-case) punctuation filter; `!!` and
//! `?!` stay; characters outside Unicode's basic plane (emoji) are dropped as untokenizable.

/// pycocoevalcap's `PUNCTUATIONS`, compared case-sensitively after lower-casing.
const PUNCTUATIONS: [&str; 17] = ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"];

/// Abbreviations that keep their final period (PTBLexer's lists, the part captions meet).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "gen", "rep", "sen", "gov", "lt", "col", "capt", "sgt", "rev", "hon",
    "co", "corp", "inc", "ltd", "bros", "vs", "etc", "no", "nos", "vol", "fig", "ft", "mt", "ave", "blvd", "rd",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun",
    "approx", "dept", "est", "min", "max", "misc", "op", "pp", "oz", "lb", "lbs", "yr", "yrs",
];

/// Abbreviations that precede a name, so a capital after them does not end a sentence.
const TITLES: &[&str] = &["mr", "mrs", "ms", "dr", "st", "prof", "gen", "rep", "sen", "gov", "lt", "col", "capt", "sgt", "rev", "hon", "mt", "no", "vs"];

/// Tokenizes one caption and removes punctuation, returning the space-joined tokens.
pub fn tokenize_caption(s: &str) -> String {
    let toks = ptb_tokens(&s.replace('\n', " "));
    toks.into_iter().filter(|t| !PUNCTUATIONS.contains(&t.as_str())).collect::<Vec<_>>().join(" ")
}

fn is_open_quote_context(prev: Option<char>) -> bool {
    prev.is_none_or(|p| p.is_whitespace() || "([{\"'`“‘«".contains(p))
}

/// The PTB tokens of a line, lower-cased.
pub fn ptb_tokens(line: &str) -> Vec<String> {
    let chunks: Vec<&str> = line.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(chunks.len() + 2);
    let mut slow: Vec<String> = Vec::new();
    for (ci, chunk) in chunks.iter().enumerate() {
        // Most caption words are plain letters: nothing to split (but the few fused forms).
        if chunk.bytes().all(|b| b.is_ascii_alphabetic()) && !FUSED.iter().any(|f| chunk.eq_ignore_ascii_case(f)) {
            out.push(chunk.to_ascii_lowercase());
            continue;
        }
        split_chunk(chunk, chunks.get(ci + 1).copied(), &mut slow);
        out.extend(slow.drain(..).map(|t| t.to_lowercase()));
    }
    out
}

/// Letter-only words PTB splits: `cannot` → `can not`, `gonna` → `gon na`, …
const FUSED: [&str; 6] = ["cannot", "gonna", "gotta", "wanna", "lemme", "gimme"];

/// Splits one whitespace-free chunk into PTB tokens.
fn split_chunk(chunk: &str, next_chunk: Option<&str>, out: &mut Vec<String>) {
    let chars: Vec<char> = chunk.chars().filter(|c| (*c as u32) <= 0xFFFF && !c.is_control()).collect();
    let mut i = 0;
    let n = chars.len();
    // Leading punctuation and quotes.
    let mut lead: Vec<String> = Vec::new();
    while i < n {
        let c = chars[i];
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        let tok = match c {
            '"' | '“' | '«' if is_open_quote_context(prev) => Some("``".to_string()),
            '‘' => Some("`".to_string()),
            '`' => Some(if chars.get(i + 1) == Some(&'`') { i += 1; "``" } else { "`" }.to_string()),
            '\'' if is_open_quote_context(prev) && !starts_clitic_or_year(&chars[i..]) => Some("`".to_string()),
            '(' => Some("-LRB-".into()),
            '[' => Some("-LSB-".into()),
            '{' => Some("-LCB-".into()),
            '„' => Some("„".into()),
            _ => None,
        };
        match tok {
            Some(t) => {
                lead.push(t);
                i += 1;
            }
            None => break,
        }
    }
    out.extend(lead);
    // Trailing punctuation, collected from the end.
    let mut end = n;
    let mut trail: Vec<String> = Vec::new();
    while end > i {
        let c = chars[end - 1];
        // Runs of ! and ? are one token; "..." is one token.
        if c == '!' || c == '?' {
            let mut s = end - 1;
            while s > i && (chars[s - 1] == '!' || chars[s - 1] == '?') {
                s -= 1;
            }
            trail.push(chars[s..end].iter().collect());
            end = s;
            continue;
        }
        if c == '.' && end >= i + 3 && chars[end - 3..end] == ['.', '.', '.'] {
            trail.push("...".into());
            end -= 3;
            continue;
        }
        let tok = match c {
            '…' => Some("...".to_string()),
            ',' | ';' | ':' | '`' => Some(c.to_string()),
            ')' => Some("-RRB-".into()),
            ']' => Some("-RSB-".into()),
            '}' => Some("-RCB-".into()),
            '"' | '”' | '»' => Some("''".into()),
            // A closing single quote, unless it is a plural possessive (dogs') left to the clitic rules.
            '’' | '\'' if end - 1 == i || !chars[end - 2].is_alphabetic() => Some("'".into()),
            _ => None,
        };
        match tok {
            Some(t) => {
                trail.push(t);
                end -= 1;
            }
            None => break,
        }
    }
    trail.reverse();
    let core: String = chars[i..end].iter().collect();
    if !core.is_empty() {
        split_core(&core, next_chunk, !trail.is_empty(), out);
    }
    out.extend(trail);
}

/// `'s`, `'90s`, `'tis`: an apostrophe that begins a word rather than a quotation.
fn starts_clitic_or_year(rest: &[char]) -> bool {
    let word: String = rest[1..].iter().take_while(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
    word.chars().next().is_some_and(|c| c.is_ascii_digit()) || matches!(word.as_str(), "tis" | "twas" | "s" | "re" | "ve" | "ll" | "m" | "d" | "em" | "cause" | "n")
}

/// Splits the core of a chunk (no leading/trailing quotes or brackets) into words, symbols
/// and clitics.
fn split_core(core: &str, next_chunk: Option<&str>, has_trail: bool, out: &mut Vec<String>) {
    // Brackets, quotes and symbols inside a chunk always split it.
    let mut pieces: Vec<String> = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = core.chars().collect();
    for (k, &c) in chars.iter().enumerate() {
        let sym = match c {
            '(' => Some("-LRB-"),
            ')' => Some("-RRB-"),
            '[' => Some("-LSB-"),
            ']' => Some("-RSB-"),
            '{' => Some("-LCB-"),
            '}' => Some("-RCB-"),
            '"' | '“' => Some("``"),
            '”' => Some("''"),
            '—' | '–' => Some("--"),
            '…' => Some("..."),
            '+' | '=' | '<' | '>' | ';' | '!' | '?' => None,
            _ => None,
        };
        if let Some(s) = sym {
            if !cur.is_empty() {
                pieces.push(std::mem::take(&mut cur));
            }
            pieces.push(s.into());
            continue;
        }
        // A comma stays inside numbers (1,000) and splits words (field,eating).
        let word_comma = c == ',' && !(k > 0 && chars[k - 1].is_ascii_digit() && chars.get(k + 1).is_some_and(|n| n.is_ascii_digit()));
        if matches!(c, '+' | '=' | '<' | '>' | ';') || word_comma || ((c == '!' || c == '?') && k + 1 < chars.len()) {
            if !cur.is_empty() {
                pieces.push(std::mem::take(&mut cur));
            }
            pieces.push(c.to_string());
            continue;
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    let last = pieces.len().saturating_sub(1);
    for (pi, p) in pieces.into_iter().enumerate() {
        if p.starts_with('-') && p.ends_with('-') && p.len() == 5 || p == "``" || p == "''" || p == "--" || p == "..." || p.chars().count() == 1 && !p.chars().all(char::is_alphanumeric) {
            out.push(p);
            continue;
        }
        split_word(&p, if pi == last && !has_trail { next_chunk } else { None }, pi == last && !has_trail, out);
    }
}

fn split_word(w: &str, next_chunk: Option<&str>, chunk_final: bool, out: &mut Vec<String>) {
    // Currency signs before a number.
    let first = w.chars().next().unwrap_or(' ');
    if "$£€¥#".contains(first) && w.chars().count() > 1 && w.chars().nth(1).is_some_and(|c| c.is_ascii_digit() || c == '.') {
        out.push(currency(first));
        return split_word(&w[first.len_utf8()..], next_chunk, chunk_final, out);
    }
    // A number followed by a currency sign or percent sign.
    let last = w.chars().last().unwrap_or(' ');
    if "$£€¥%".contains(last) && w.chars().count() > 1 && w.chars().rev().nth(1).is_some_and(|c| c.is_ascii_digit()) {
        split_word(&w[..w.len() - last.len_utf8()], None, false, out);
        out.push(if last == '%' { "%".into() } else { currency(last) });
        return;
    }
    // Letters glued to a currency sign before a number (US$5 → us$ 5).
    if let Some(pos) = w.find('$') {
        if pos > 0 && w[pos + 1..].chars().next().is_some_and(|c| c.is_ascii_digit()) && w[..pos].chars().all(char::is_alphabetic) {
            out.push(w[..=pos].to_string());
            return split_word(&w[pos + 1..], next_chunk, chunk_final, out);
        }
    }
    if "£€¥".contains(w) && w.chars().count() == 1 {
        out.push(currency(first));
        return;
    }
    // 4:30pm → 4:30 pm
    let lw = w.to_lowercase();
    for suf in ["am", "pm", "a.m.", "p.m."] {
        if let Some(num) = lw.strip_suffix(suf) {
            if !num.is_empty() && num.chars().all(|c| c.is_ascii_digit() || c == ':') {
                out.push(w[..num.len()].to_string());
                out.push(w[num.len()..].to_string());
                return;
            }
        }
    }
    // Word-final period: kept on abbreviations and acronyms, else split.
    if let Some(stem) = w.strip_suffix('.') {
        if !stem.is_empty() && !stem.ends_with('.') {
            let lower = stem.to_lowercase();
            let acronym = is_acronym(stem);
            if acronym || ABBREVIATIONS.contains(&lower.as_str()) {
                split_clitics(w, out);
                // An acronym or non-title abbreviation before a capitalised word ends the sentence.
                let next_cap = next_chunk.and_then(|c| c.chars().find(|ch| ch.is_alphanumeric())).is_some_and(|ch| ch.is_uppercase());
                if chunk_final && next_cap && !TITLES.contains(&lower.as_str()) {
                    out.push(".".into());
                }
                return;
            }
            split_clitics(stem, out);
            out.push(".".into());
            return;
        }
    }
    split_clitics(w, out);
}

fn currency(c: char) -> String {
    match c {
        '£' => "#".into(),
        '€' => "$".into(),
        other => other.to_string(),
    }
}

/// `u.s`, `i.b.m`, `e.g`: single letters separated by periods.
fn is_acronym(stem: &str) -> bool {
    let parts: Vec<&str> = stem.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| p.chars().count() == 1 && p.chars().all(char::is_alphabetic))
}

/// English clitics split off as PTB does (`do n't`, `it 's`, `ca n't`, `can not`, `gon na`).
fn split_clitics(w: &str, out: &mut Vec<String>) {
    let norm: String = w.replace('’', "'");
    let lower = norm.to_lowercase();
    // (word, where it splits)
    for (whole, b) in FUSED.iter().map(|w| (*w, 3)).chain([("'tis", 2), ("'twas", 2)]) {
        if lower == whole {
            out.push(norm[..b].to_string());
            out.push(norm[b..].to_string());
            return;
        }
    }
    if lower == "y'all" {
        out.push(norm[..2].to_string());
        out.push(norm[2..].to_string());
        return;
    }
    if lower.len() > 3 && lower.ends_with("n't") {
        let cut = norm.len() - 3;
        out.push(norm[..cut].to_string());
        out.push(norm[cut..].to_string());
        return;
    }
    for suf in ["'s", "'m", "'d", "'re", "'ve", "'ll"] {
        if lower.len() > suf.len() && lower.ends_with(suf) {
            let cut = norm.len() - suf.len();
            out.push(norm[..cut].to_string());
            out.push(norm[cut..].to_string());
            return;
        }
    }
    // Plural possessive: dogs' → dogs '
    if lower.len() > 1 && lower.ends_with('\'') && lower[..lower.len() - 1].ends_with(|c: char| c.is_alphabetic()) {
        out.push(norm[..norm.len() - 1].to_string());
        out.push("'".into());
        return;
    }
    out.push(norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_examples() {
        assert_eq!(tokenize_caption("A man riding a wave on top of a surfboard."), "a man riding a wave on top of a surfboard");
        assert_eq!(tokenize_caption("It's RED; isn't it?"), "it 's red is n't it");
        assert_eq!(tokenize_caption("A dog (on a leash)."), "a dog -lrb- on a leash -rrb-");
    }
}
