//! A longest-match lexer with the token classes of Stanford CoreNLP 3.4.1's `PTBLexer` (a JFlex
//! scanner), as `PTBTokenizer -preserveLines -lowerCase` runs it with its default options
//! (`ptb3Escaping`: `-LRB-` for brackets, LaTeX quotes, `--` dashes, `...` ellipses, currency
//! normalization, untokenizable characters deleted).
//!
//! How it mirrors JFlex, because every difference shows up in some caption:
//! - All rules are tried at the current position; the longest match wins and, on a tie, the rule
//!   written first. A rule with trailing context (`word/'s`) competes with the length of the word
//!   *and* its context, but only the word becomes the token.
//! - `%caseless`: letters written as literals match either case, letters inside character
//!   classes only match as written (`[A]bout` needs a capital A). Here literals are written
//!   `(?i-u:…)` and classes stay case-sensitive.
//! - The scanner reads UTF-16: a character outside the Basic Multilingual Plane (emoji) is two
//!   surrogates that no positive class (letter, digit, symbol) contains, so it is deleted as
//!   untokenizable unless a negated class (URLs, e-mail, tags) swallows it.
//! - `[:letter:]`, `[:digit:]` and `[:uppercase:]` are Java's `isLetter`, `isDigit`, `isUpperCase`
//!   of the JDK that generated the scanner; here the Unicode general categories of the `regex`
//!   crate's tables, restricted to the BMP (letters added to Unicode after 2014 may differ).
//! - Actions that push characters back (`cannot` → `can` + `not`, `U.S.` before `The` → `U.S.` +
//!   `.`) re-lex the pushed-back text from that point, as `yypushback` does.

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind};
use std::cell::RefCell;
use std::sync::LazyLock;

/// What a rule does with its text (the `{ … }` action of the scanner rule it mirrors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// The text as is.
    Plain,
    /// The text without soft hyphens (U+00AD); `-` if nothing is left.
    SoftHyphens,
    /// LaTeX quotes: `"` → ``` `` ``` when it probably opens, `''` otherwise; curly quotes mapped.
    Quotes { left: bool },
    /// `&amp;` → `&`.
    Amp,
    /// A fixed output (`--`, `...`, `-LRB-`, `<`, …).
    Fixed(&'static str),
    /// `-` runs: three or four become `--`, others stay.
    Hyphens,
    /// Spaces inside the token become no-break spaces (fractions like `1 1/2`, tags).
    Nbsp,
    /// Phone numbers: no-break spaces and `-LRB-`/`-RRB-` for parentheses.
    Phone,
    /// Smileys: `-LRB-`/`-RRB-` for parentheses.
    Parens,
    /// Currency signs: `¢` → `cents`, `£` → `#`, `€` (and generic currency) → `$`.
    Currency,
    /// `¼ ½ ¾ ⅓ ⅔` → `1/4 1/2 3/4 1/3 2/3`.
    Fraction,
    /// No token (spaces, zero-width characters, DEL, `&nbsp;`).
    Skip,
    /// A line break: under `-preserveLines` the jar starts a new output line.
    Newline,
}

/// Which part of a match becomes the token, and how much is consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Take {
    /// All of it.
    All,
    /// All but the last `n` characters (fixed-length trailing context).
    DropChars(usize),
    /// Up to the first apostrophe (a word before `'s`, `'re`, …; words hold no apostrophes).
    BeforeApostrophe,
    /// Through the first period (`fig.` before a number, `co.` before `Ltd`).
    ThroughFirstDot,
    /// Up to the first space or line break; the token is returned and its final period is
    /// pushed back to be read again (`etc.` at a sentence end gives `etc.` and `.`).
    AbbrevThenPeriod,
    /// An acronym before a sentence-starting word: like `AbbrevThenPeriod`, except that a
    /// one-letter acronym (`I.`) gives the letter alone and then the period.
    AcronymThenPeriod,
    /// Only the first `n` characters are the token; the rest is pushed back (`cannot` → `can`).
    Keep(usize),
}

struct Rule {
    pattern: String,
    take: Take,
    act: Act,
}

/// Named pieces of the token classes, expanded where `{NAME}` appears in a later definition.
fn definitions() -> Vec<(&'static str, String)> {
    // Restricted to the BMP, less what the jar's 2014 tables do not know (ptb_jar_unknown.rs).
    let bmp = |class: &str| {
        format!(
            "[[{class}&&[\\x00-\\x{{FFFF}}]]--[{}]]",
            crate::ptb_jar_unknown::JAR_UNKNOWN
        )
    };
    let mut d: Vec<(&'static str, String)> = Vec::new();
    let mut def = |name: &'static str, body: &str| {
        let mut s = body.to_string();
        for (n, b) in d.iter() {
            s = s.replace(&format!("{{{n}}}"), b);
        }
        d.push((name, s));
    };
    def("SPACE", r"[ \t\u00A0\u2000-\u200A\u3000]");
    def("NEWLINE", r"(?:\r\n|\r|\n|\u2028|\u2029|\x0B|\x0C|\x85)");
    def("SPACENL", r"(?:{SPACE}|{NEWLINE})");
    def("UPPER", &bmp(r"\p{Uppercase}"));
    def("DIGIT", &bmp(r"\p{Nd}"));
    def("PLETTER", &bmp(r"\p{L}"));
    def("PLD", &bmp(r"\p{L}\p{Nd}"));
    // Letters, plus soft hyphen and the combining marks and modifier letters of the scripts the
    // scanner lists explicitly (Latin extensions, Greek, Cyrillic, Armenian, Hebrew, Arabic,
    // Syriac, Thaana, NKo, Devanagari, Bengali, Gurmukhi, Gujarati, Tamil, Telugu, Malayalam,
    // Thai, Lao), and accented-letter entities like `&eacute;`.
    def(
        "LETTER",
        &format!(
            r"(?:[{}\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384\u0385\u03CF\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F\u0591-\u05BD\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD\u09D7\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD]|&[aeiouAEIOU](?i-u:acute|grave|uml);)",
            bmp(r"\p{L}")
        ),
    );
    def("LD", "(?:{LETTER}|{DIGIT})");
    def(
        "SGML",
        r#"<(?:[!?][A-Za-z-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*|[A-Za-z][A-Za-z0-9_:.\-]*[ ]*=[ ]*(?:'[^']*'|"[^"]*")))*[ ]*/?|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>"#,
    );
    def("SENTEND", "{SPACENL}(?:{SPACENL}|{UPPER}|{SGML})");
    def(
        "NUM",
        r"(?:{DIGIT}+|{DIGIT}*(?:[.:,\u00AD\u066B\u066C]{DIGIT}+)+)",
    );
    def("WORD", r"{LETTER}{LD}*(?:[.!?]{LETTER}{LD}*)*");
    def("APOS", r"(?:['\u0092\u2019]|&(?i-u:apos);)");
    def("APOSETC", r"(?:{APOS}|[`\u0091\u2018\u201B])");
    def("HYPHEN", r"[\-_\u058A\u2010\u2011]");
    def(
        "ACRO2",
        r"(?:[A-Za-z](?:\.[A-Za-z])+|(?i-u:(?:canada|sino|korean|eu|japan|non)-u\.s|u\.s\.-(?:u\.k|u\.s\.s\.r)))",
    );
    def(
        "ACRO",
        r"(?:[A-Za-z](?:\.[A-Za-z])*|(?i-u:(?:canada|sino|korean|eu|japan|non)-u\.s|u\.s\.-(?:u\.k|u\.s\.s\.r)))",
    );
    def("REDAUX", r"{APOS}(?:[msdMSD]|(?i-u:re|ve|ll))");
    def("SREDAUX", r"(?i-u:n){APOSETC}(?i-u:t)");
    def("INSENTP", r"[,;:\u3001]");
    def(
        "ABBREV1",
        r"(?:(?i-u:jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri)|(?i-u:ala|ariz)|A(?i-u:z)|A(?i-u:rk)|(?i-u:calif|colo|conn|ct|dak)|D(?i-u:el)|(?i-u:fla|ga)|I(?i-u:ll)|(?i-u:ind|kans?|ky)|L(?i-u:a)|M(?i-u:ass)|(?i-u:md|mich|minn)|M(?i-u:iss)|(?i-u:mo|mont|neb|nev|okla)|O(?i-u:re)|P(?i-u:a)|(?i-u:penn|tenn)|T(?i-u:ex)|(?i-u:va|vt)|W(?i-u:ash)|(?i-u:wisc?|wyo)|(?i-u:inc|cos?|corp)|(?i-u:pp?t)[ye](?i-u:s?)|(?i-u:ltd|plc|rt|bancorp|bhd|assn|univ|intl|sys|tel|est|ext|sq|jr|sr|bros|ed\.d|ph\.d|blvd|rd|esq|etc|al|seq|bldg))\.",
    );
    def(
        "ABBREV4",
        r"(?:(?i-u:mr|mrs|ms)|M(?i-u:iss)|(?i-u:drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|mt|ft|adj|adv|asst|assoc|ens|insp|mlle|mme|msgr|sfc|vs|alex|wm|jos|cie|a\.k\.a|cf|treas|ph|invt|elec|natl|dept)|(?i-u:m)[ft](?i-u:g)|{ACRO})",
    );
    def("URLCH", r#"[^ \t\n\x0C\r"<>|(){}]"#);
    def("URLEND", r#"[^ \t\n\x0C\r"<>|.!?(){},\-]"#);
    def("EMAILCH", r#"[^ \t\n\x0C\r"<>|(){}.\u00A0]"#);
    d
}

fn expand(defs: &[(&str, String)], body: &str) -> String {
    let mut s = body.to_string();
    for (n, b) in defs.iter().rev() {
        s = s.replace(&format!("{{{n}}}"), b);
    }
    s
}

/// The rules, in the scanner's order (earlier wins a tie).
fn rules() -> Vec<Rule> {
    let d = definitions();
    let r = |p: &str, take: Take, act: Act| Rule {
        pattern: expand(&d, p),
        take,
        act,
    };
    use Act::*;
    use Take::*;
    let acronym_next = "(?:A(?i-u:bout)|A(?i-u:ccording)|A(?i-u:dditionally)|A(?i-u:fter)|A(?i-u:n)|A|A(?i-u:s)|A(?i-u:t)|B(?i-u:ut)|E(?i-u:arlier)|H(?i-u:e)|H(?i-u:er)|H(?i-u:ere)|H(?i-u:owever)|I(?i-u:f)|I(?i-u:n)|I(?i-u:t)|L(?i-u:ast)|M(?i-u:any)|M(?i-u:ore)|M(?i-u:r)\\.|M(?i-u:s)\\.|N(?i-u:ow)|O(?i-u:nce)|O(?i-u:ne)|O(?i-u:ther)|O(?i-u:ur)|S(?i-u:he)|S(?i-u:ince)|S(?i-u:o)|S(?i-u:ome)|S(?i-u:uch)|T(?i-u:hat)|T(?i-u:he)|T(?i-u:heir)|T(?i-u:hen)|T(?i-u:here)|T(?i-u:hese)|T(?i-u:hey)|T(?i-u:his)|W(?i-u:e)|W(?i-u:hen)|W(?i-u:hile)|W(?i-u:hat)|Y(?i-u:et)|Y(?i-u:ou)|{SGML})";
    vec![
        r(r"(?i-u:c)\+\+", All, Plain),
        r(r"(?i-u:c|f)#", All, Plain),
        r(r"(?i-u:cannot)", Keep(3), Plain),
        r(r"(?i-u:'twas)", Keep(2), Plain),
        r(r"(?i-u:'tis)", Keep(2), Plain),
        r(r"(?i-u:gonna|gotta|lemme|gimme|wanna)", Keep(3), Plain),
        r("{SGML}", All, Nbsp),
        r(
            r"&(?i-u:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]",
            All,
            Fixed("--"),
        ),
        r(r"&(?i-u:amp);", All, Amp),
        r(r"&(?i-u:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+);", All, Plain),
        r("{WORD}{REDAUX}", BeforeApostrophe, SoftHyphens),
        r(
            r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*{SREDAUX}",
            DropChars(3),
            SoftHyphens,
        ),
        r("{WORD}", All, SoftHyphens),
        r(
            r"{APOS}(?i-u:n){APOS}?|[lLdDjJ]{APOS}|(?i-u:dunkin){APOS}|(?i-u:somethin){APOS}|(?i-u:ol){APOS}|{APOS}(?i-u:em)|[A-HJ-XZn]{APOSETC}{PLETTER}{2}{PLETTER}*|{APOS}[2-9]0(?i-u:s)|{APOS}(?i-u:till?)|{PLETTER}{PLETTER}*[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{PLETTER}*|{APOS}(?i-u:cause)|(?i-u:cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)|(?i-u:o){APOSETC}(?i-u:o)",
            All,
            Plain,
        ),
        r("(?i-u:y){APOS}{PLETTER}", DropChars(1), Plain),
        r("(?i-u:https?)://{URLCH}+{URLEND}", All, Plain),
        r(
            r#"(?:(?:(?i-u:www)\.(?:[^ \t\n\x0C\r"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(?:(?:[^ \t\n\x0C\r"`'<>|.!?(){},-_$]+\.)+(?i-u:com|net|org|edu)))(?:/[^ \t\n\x0C\r"<>|()]+{URLEND})?"#,
            All,
            Plain,
        ),
        r(
            r#"(?:&(?i-u:lt);|<)?[a-zA-Z0-9][^ \t\n\x0C\r"<>|()\u00A0{}]*@(?:{EMAILCH}+\.)*{EMAILCH}+(?:&(?i-u:gt);|>)?"#,
            All,
            Plain,
        ),
        r("@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+", All, Plain),
        r("{REDAUX}[^A-Za-z]", DropChars(1), Quotes { left: false }),
        r("{SREDAUX}[^A-Za-z]", DropChars(1), Quotes { left: false }),
        r(
            r"{DIGIT}{1,2}[\-/]{DIGIT}{1,2}[\-/]{DIGIT}{2,4}",
            All,
            Plain,
        ),
        r(r"[\-+]?{NUM}", All, SoftHyphens),
        r(
            r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)",
            All,
            Plain,
        ),
        r(
            r"(?:{DIGIT}{1,4}[\- \u00A0])?{DIGIT}{1,4}(?:\\?/|\u2044){DIGIT}{1,4}",
            All,
            Nbsp,
        ),
        r(r"[\u00BC\u00BD\u00BE\u2153-\u215E]", All, Fraction),
        r(
            r"-(?i-u:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i-u:c\.d\.s|pro-|anti-)|(?i-u:s)(?:&|&(?i-u:amp);)(?i-u:p-500|ls)|(?i-u:cap){APOS}(?i-u:n)|(?i-u:c){APOS}(?i-u:est)",
            All,
            Amp,
        ),
        r(
            r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}",
            All,
            Plain,
        ),
        r(r"[A-Z]*\$|#", All, Plain),
        r(
            r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]",
            All,
            Currency,
        ),
        r(
            &format!(r"{{ACRO}}\.{{SPACENL}}+{acronym_next}{{SPACENL}}"),
            AcronymThenPeriod,
            Plain,
        ),
        r(
            r"(?i-u:ca|figs?|prop|nos?|art|bldg|pp|op)\.{SPACENL}?{DIGIT}",
            ThroughFirstDot,
            Plain,
        ),
        r(
            r"(?i-u:pt)[eyEY]\.{SPACE}(?i-u:ltd|lim)|(?i-u:co)\.{SPACE}(?i-u:ltd|lim)",
            ThroughFirstDot,
            Plain,
        ),
        r("{ABBREV1}{SENTEND}", AbbrevThenPeriod, Plain),
        r(r"{ABBREV1}(?s:.)(?s:.)", DropChars(2), Plain),
        r("{ABBREV1}", Keep(usize::MAX), Plain),
        r(r"{ABBREV4}\.", All, Plain),
        r("{ABBREV4}{SPACE}", DropChars(1), Plain),
        r("{ACRO}{SPACENL}", DropChars(1), Plain),
        r("{APOS}[0-9][0-9]{SPACENL}", DropChars(1), Plain),
        r(
            r"{LD}+(?:\.{LD}+)*\.(?i-u:bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)(?:{SPACENL}|[.?!,])",
            DropChars(1),
            Plain,
        ),
        r(r"{WORD}\.{INSENTP}", DropChars(1), SoftHyphens),
        r(
            r"(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])[0-9]{3,4}[\- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}",
            All,
            Phone,
        ),
        r(
            r#"(?:"|&(?i-u:quot);)[A-Za-z0-9$]"#,
            DropChars(1),
            Quotes { left: true },
        ),
        r(r#""|&(?i-u:quot);"#, All, Quotes { left: false }),
        r(r"\x7F", All, Skip),
        r(r"<|&(?i-u:lt);", All, Fixed("<")),
        r(r">|&(?i-u:gt);", All, Fixed(">")),
        r(
            r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]][^A-Za-z0-9]",
            DropChars(1),
            Parens,
        ),
        r(
            r"[\^x=~<>]\.\[\^(?i-u:x)=~<>\]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)",
            All,
            Parens,
        ),
        r(r"\{", All, Fixed("-LCB-")),
        r(r"\}", All, Fixed("-RCB-")),
        r(r"\[", All, Fixed("-LSB-")),
        r(r"\]", All, Fixed("-RSB-")),
        r(r"\(", All, Fixed("-LRB-")),
        r(r"\)", All, Fixed("-RRB-")),
        r(r"-+", All, Hyphens),
        r(
            r"\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026]",
            All,
            Fixed("..."),
        ),
        r(r"@+|#+|_+", All, Plain),
        r(r"\*+|(?:\\\*){1,3}", All, Plain),
        r("{INSENTP}", All, Plain),
        r(r"[?!]+", All, Plain),
        r(
            r"[.¡¿\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]",
            All,
            Plain,
        ),
        r("=", All, Plain),
        r("/", All, Plain),
        r(
            r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|{ACRO2}\.))+\.{INSENTP}",
            DropChars(1),
            SoftHyphens,
        ),
        r(
            r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|{ACRO2}\.))+",
            All,
            SoftHyphens,
        ),
        r(
            r"(?:[dDoOlL]{APOSETC}{PLD})?{PLD}+(?:{HYPHEN}(?:[dDoOlL]{APOSETC}{PLD})?{PLD}+)*\.{INSENTP}",
            DropChars(1),
            Plain,
        ),
        r(
            r"(?:[dDoOlL]{APOSETC}{PLD})?{PLD}+(?:{HYPHEN}(?:[dDoOlL]{APOSETC}{PLD})?{PLD}+)*",
            All,
            Plain,
        ),
        r(
            r"[A-Z]+(?:(?:[+&]|&(?i-u:amp);)[A-Z]+)+\.{INSENTP}",
            DropChars(1),
            Amp,
        ),
        r(r"[A-Z]+(?:(?:[+&]|&(?i-u:amp);)[A-Z]+)+", All, Amp),
        r(
            r"'[A-Za-z][^ \t\n\r\u00A0]",
            DropChars(2),
            Quotes { left: true },
        ),
        r("{REDAUX}", All, Quotes { left: false }),
        r("{SREDAUX}", All, Quotes { left: false }),
        r(
            r"{APOS}|''|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094\u201E\u201F\u2039\u203A\u00AB\u00BB]{1,2}",
            All,
            Quotes { left: false },
        ),
        r("<<|>>", All, Plain),
        r(
            r"[+%&~\^|\\¦\u00A7¨\u00A9\u00AC\u00AE¯\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7\u0387\u05BE\u05C0\u05C3\u05C6\u05F3\u05F4\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B\u061E\u066A\u066D\u0703-\u070D\u07F6\u07F7\u07F8\u0964\u0965\u0E4F\u1FBD\u2016\u2017\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044\u207A-\u207F\u208A-\u208E\u2100-\u214F\u2190-\u21FF\u2200-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65]",
            All,
            Plain,
        ),
        r(r"\x00|{SPACE}+|[\u200B\u200E\u200F\uFEFF]", All, Skip),
        r("{NEWLINE}", All, Newline),
        r(r"&(?i-u:nbsp);", All, Skip),
    ]
}

struct Lexer {
    dfa: DFA,
    takes: Vec<Take>,
    acts: Vec<Act>,
}

static LEXER: LazyLock<Lexer> = LazyLock::new(|| {
    let rules = rules();
    let patterns: Vec<&str> = rules.iter().map(|r| r.pattern.as_str()).collect();
    let dfa = DFA::builder()
        .syntax(syntax::Config::new().unicode(true).utf8(true))
        .configure(
            DFA::config()
                .match_kind(MatchKind::All)
                .cache_capacity(8 << 20)
                .minimum_cache_clear_count(None)
                .skip_cache_capacity_check(true),
        )
        .build_many(&patterns)
        .unwrap_or_else(|e| panic!("the PTB lexer's rules do not compile: {e}"));
    Lexer {
        dfa,
        takes: rules.iter().map(|r| r.take).collect(),
        acts: rules.iter().map(|r| r.act).collect(),
    }
});

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// A token of the scanner: its (normalized, not yet lower-cased) text, or a line break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lexeme {
    Word(String),
    Newline,
}

/// The longest match at `pos` over all rules: (rule, end byte offset). None when no rule
/// matches (an untokenizable character).
fn longest(lx: &Lexer, cache: &mut Cache, hay: &str, pos: usize) -> Option<(usize, usize)> {
    let dfa = &lx.dfa;
    let input = Input::new(hay).span(pos..hay.len()).anchored(Anchored::Yes);
    let mut sid: LazyStateID = dfa
        .start_state_forward(cache, &input)
        .expect("anchored start state");
    let bytes = hay.as_bytes();
    let mut best: Option<(usize, usize)> = None;
    let note = |cache: &Cache, sid: LazyStateID, end: usize, best: &mut Option<(usize, usize)>| {
        for i in 0..dfa.match_len(cache, sid) {
            let p = dfa.match_pattern(cache, sid, i).as_usize();
            match best {
                Some((bp, be)) if end < *be || (end == *be && p >= *bp) => {}
                _ => *best = Some((p, end)),
            }
        }
    };
    for (i, &b) in bytes.iter().enumerate().skip(pos) {
        sid = dfa
            .next_state(cache, sid, b)
            .expect("lazy DFA never gives up");
        if sid.is_tagged() {
            if sid.is_match() {
                note(cache, sid, i, &mut best);
            } else if sid.is_dead() {
                return best;
            }
        }
    }
    sid = dfa
        .next_eoi_state(cache, sid)
        .expect("lazy DFA never gives up");
    if sid.is_match() {
        note(cache, sid, bytes.len(), &mut best);
    }
    best
}

fn char_start_back(s: &str, end: usize, n: usize) -> usize {
    let mut e = end;
    for _ in 0..n {
        e -= 1;
        while !s.is_char_boundary(e) {
            e -= 1;
        }
    }
    e
}

fn is_spacenl(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\u{A0}' | '\u{2000}'
            ..='\u{200A}'
                | '\u{3000}'
                | '\r'
                | '\n'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{0B}'
                | '\u{0C}'
                | '\u{85}'
    )
}

fn remove_soft_hyphens(s: &str) -> String {
    if !s.contains('\u{AD}') {
        return s.to_string();
    }
    let out: String = s.chars().filter(|&c| c != '\u{AD}').collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

fn latex_quotes(s: &str, left: bool) -> String {
    let s = if left {
        s.replace("&apos;", "`")
            .replace('\'', "`")
            .replace("&quot;", "``")
            .replace('"', "``")
    } else {
        s.replace("&apos;", "'")
            .replace("&quot;", "''")
            .replace('"', "''")
    };
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{91}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{93}' | '\u{201C}' | '\u{AB}' => out.push_str("``"),
            '\u{94}' | '\u{201D}' | '\u{BB}' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out
}

fn apply(act: Act, text: &str) -> Option<Lexeme> {
    let w = match act {
        Act::Plain => text.to_string(),
        Act::SoftHyphens => remove_soft_hyphens(text),
        Act::Quotes { left } => latex_quotes(text, left),
        Act::Amp => replace_amp(text),
        Act::Fixed(s) => s.to_string(),
        Act::Hyphens => {
            if (3..=4).contains(&text.len()) {
                "--".into()
            } else {
                text.to_string()
            }
        }
        Act::Nbsp => text.replace(' ', "\u{A0}"),
        Act::Phone => text
            .replace(' ', "\u{A0}")
            .replace('(', "-LRB-")
            .replace(')', "-RRB-"),
        Act::Parens => text.replace('(', "-LRB-").replace(')', "-RRB-"),
        Act::Currency => text
            .replace('\u{A2}', "cents")
            .replace('\u{A3}', "#")
            .replace(['\u{80}', '\u{A4}', '\u{20A0}', '\u{20AC}'], "$"),
        Act::Fraction => text
            .replace('\u{BC}', "1/4")
            .replace('\u{BD}', "1/2")
            .replace('\u{BE}', "3/4")
            .replace('\u{2153}', "1/3")
            .replace('\u{2154}', "2/3"),
        Act::Skip => return None,
        Act::Newline => return Some(Lexeme::Newline),
    };
    Some(Lexeme::Word(w))
}

/// `&amp;` in any case → `&` (Java's `(?i:&amp;)`).
fn replace_amp(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.len() >= 5 && tail.is_char_boundary(5) && tail[..5].eq_ignore_ascii_case("&amp;") {
            out.push('&');
            rest = &tail[5..];
        } else {
            out.push('&');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Letter-only words that an earlier rule splits (`cannot`, `gonna`, …); the fast path leaves them
/// to the full lexer.
fn is_split_assimilation(w: &[u8]) -> bool {
    w.len() >= 5
        && ["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"]
            .iter()
            .any(|f| w.eq_ignore_ascii_case(f.as_bytes()))
}

/// Lexes `hay[start..]`, calling `emit(token_start, lexeme)` for each token that starts before
/// `stop`; returns where lexing stopped (≥ `stop`, or the end). Text after `stop` is read only
/// as the scanner reads it: as lookahead, or as the rest of a token that began before `stop`.
pub fn lex(hay: &str, start: usize, stop: usize, mut emit: impl FnMut(usize, Lexeme)) -> usize {
    let lx = &*LEXER;
    CACHE.with(|c| {
        let mut slot = c.borrow_mut();
        let cache = slot.get_or_insert_with(|| lx.dfa.create_cache());
        let bytes = hay.as_bytes();
        let mut pos = start;
        while pos < stop {
            // Fast path: an ASCII letter run ended by a space, a newline or the end is one WORD
            // token whatever else could match (no rule reads past a space after plain letters,
            // except the split forms checked here).
            let mut e = pos;
            while e < bytes.len() && bytes[e].is_ascii_alphabetic() {
                e += 1;
            }
            if e > pos
                && (e == bytes.len() || bytes[e] == b' ' || bytes[e] == b'\n')
                && !is_split_assimilation(&bytes[pos..e])
            {
                emit(pos, Lexeme::Word(hay[pos..e].to_string()));
                pos = e;
                continue;
            }
            if bytes[pos] == b' ' {
                // A run of spaces (with tabs, no-break and other spaces) is one skipped token.
                pos += 1;
                while let Some(c) = hay[pos..].chars().next() {
                    if !matches!(
                        c,
                        ' ' | '\t' | '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{3000}'
                    ) {
                        break;
                    }
                    pos += c.len_utf8();
                }
                continue;
            }
            match longest(lx, cache, hay, pos) {
                None => {
                    // Untokenizable: deleted (the jar warns once on stderr).
                    pos += hay[pos..].chars().next().map_or(1, char::len_utf8);
                }
                Some((rule, end)) => {
                    let m = &hay[pos..end];
                    let (tok_end, next) = match lx.takes[rule] {
                        Take::All => (end, end),
                        Take::DropChars(n) => {
                            let e = char_start_back(hay, end, n);
                            (e, e)
                        }
                        Take::BeforeApostrophe => {
                            let i = m
                                .find(['\'', '\u{92}', '\u{2019}', '&'])
                                .expect("a word before an apostrophe");
                            (pos + i, pos + i)
                        }
                        Take::ThroughFirstDot => {
                            let i = m.find('.').expect("an abbreviation with a period");
                            (pos + i + 1, pos + i + 1)
                        }
                        Take::Keep(n) => {
                            if n == usize::MAX {
                                // A final abbreviation: the token keeps its period, which is also
                                // read again.
                                (end, end - 1)
                            } else {
                                let e = pos
                                    + hay[pos..].char_indices().nth(n).map_or(m.len(), |(i, _)| i);
                                (e, e)
                            }
                        }
                        Take::AbbrevThenPeriod | Take::AcronymThenPeriod => {
                            let i = m
                                .find(is_spacenl)
                                .expect("trailing context starts with a space");
                            let word_end = pos + i;
                            if lx.takes[rule] == Take::AcronymThenPeriod
                                && hay[pos..word_end].chars().count() == 2
                            {
                                (word_end - 1, word_end - 1)
                            } else {
                                (word_end, word_end - 1)
                            }
                        }
                    };
                    if let Some(l) = apply(lx.acts[rule], &hay[pos..tok_end]) {
                        emit(pos, l);
                    }
                    pos = next;
                }
            }
        }
        pos
    })
}
