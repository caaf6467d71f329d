//! Caption tokenization as pycocoevalcap 1.2 does it before BLEU, METEOR, ROUGE-L and CIDEr:
//! every caption's `\n` replaced by a space, all captions joined by `\n` into one file, the file
//! run through Stanford CoreNLP 3.4.1's `PTBTokenizer -preserveLines -lowerCase`, each output
//! line `rstrip()`ed and `split(' ')`, and the tokens in [`PUNCTUATIONS`] removed.
//!
//! Two implementations give the same strings:
//! - native ([`tokenize_captions`]): a re-implementation of the jar's lexer ([`crate::ptb_lexer`]),
//!   checked against the jar on 100,000 generated hard captions (`tools/reference/ptb_differential.py`,
//!   `tests/ptb_differential.rs`, `docs/ptb-tokenizer.md`);
//! - jar ([`tokenize_with_jar`]): the jar itself, invoked exactly as pycocoevalcap invokes it.
//!
//! Two places where pycocoevalcap's own behaviour is not reproduced on purpose:
//! - A caption containing a character the jar treats as a line break (`\r` not followed by the
//!   joining `\n`, U+2028, U+2029, vertical tab, form feed) makes the jar print more lines than
//!   there are captions, and pycocoevalcap's `zip` then gives every later caption the tokens of
//!   the caption before it. Natively, each caption gets the tokens the jar prints for it (all
//!   its lines, `rstrip`ped and joined by a space), and later captions are unaffected. In jar
//!   mode, such a batch is an error that names the caption.
//! - The batch is the caption set in its iteration order (sorted image ids, references before
//!   predictions as separate batches, as pycocoevalcap tokenizes `gts` and `res` separately).
//!   The order only matters through the scanner's lookahead across a line end (a caption ending
//!   in a one-letter acronym such as `vitamin C.` followed by one starting with `The`), so the
//!   next caption is given to the lexer as context.
//!
//! Quirks kept because the official pipeline has them: brackets become `-lrb-`, `-lsb-` … and,
//! being lower-cased, are *not* removed by the upper-case `-LRB-` entries of the punctuation
//! list; `!!` and `?!` stay; characters outside Unicode's basic plane (emoji) are dropped as
//! untokenizable; `£` becomes `#` and `€` becomes `$`.

use crate::error::{EvalError, Result};
use crate::ptb_lexer::{lex, Lexeme};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// pycocoevalcap's `PUNCTUATIONS`, compared case-sensitively after lower-casing.
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Python's `str.isspace()`: what `line.rstrip()` strips.
fn py_isspace(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\u{1C}'..='\u{20}' | '\u{85}' | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}')
}

/// pycocoevalcap's post-processing of one output line: `rstrip()`, `split(' ')`, drop the
/// punctuation tokens, join by a space.
fn post_process(line: &str, out: &mut String) {
    let line = line.trim_end_matches(py_isspace);
    let mut first = true;
    for w in line.split(' ') {
        if PUNCTUATIONS.contains(&w) {
            continue;
        }
        if !first {
            out.push(' ');
        }
        first = false;
        out.push_str(w);
    }
}

/// Java's `toLowerCase(Locale.ENGLISH)` (the jar's `-lowerCase`), applied to each token alone.
/// Capital sigma is where the two languages differ: Java writes final `ς` when a cased letter
/// precedes it and none follows it within the word (found with a `BreakIterator`); Rust only
/// looks past case-ignorable characters. Here the word is the run of letters, digits, combining
/// accents and `.`, `'`, `:`, hyphens around the sigma, kana excluded: an approximation of the JDK's word boundaries
/// measured against the jar on generated captions (docs/ptb-tokenizer.md).
fn lower(w: &str) -> String {
    if w.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return w.to_string();
    }
    if !w.contains('\u{3A3}') {
        return w.to_lowercase();
    }
    let chars: Vec<char> = w.chars().collect();
    let mut out = String::with_capacity(w.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '\u{3A3}' {
            let word_char = |c: &&char| {
                (c.is_alphabetic()
                    || (c.is_numeric()
                        && !matches!(**c, '\u{B2}' | '\u{B3}' | '\u{B9}' | '\u{BC}'..='\u{BE}' | '\u{2070}'..='\u{218F}' | '\u{2460}'..='\u{24FF}'))
                    || matches!(
                        **c,
                        '.' | '\'' | ':' | '-' | '\u{2010}' | '\u{2011}' | '\u{300}'..='\u{36F}'
                    ))
                    && !matches!(**c, '\u{3040}'..='\u{30FF}')
            };
            let fin = chars[..i]
                .iter()
                .rev()
                .take_while(word_char)
                .any(|&p| java_cased(p))
                && !chars[i + 1..]
                    .iter()
                    .take_while(word_char)
                    .any(|&n| java_cased(n));
            out.push(if fin { '\u{3C2}' } else { '\u{3C3}' });
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Java's `isCased`: lower-case, upper-case (with the Other_ properties) or title-case letters.
fn java_cased(c: char) -> bool {
    c.is_lowercase()
        || c.is_uppercase()
        || matches!(c, '\u{1C5}' | '\u{1C8}' | '\u{1CB}' | '\u{1F2}' | '\u{1F88}'..='\u{1F8F}' | '\u{1F98}'..='\u{1F9F}' | '\u{1FA8}'..='\u{1FAF}' | '\u{1FBC}' | '\u{1FCC}' | '\u{1FFC}')
}

/// Tokenizes one caption as pycocoevalcap would if it were tokenized alone, and removes
/// punctuation; returns the space-joined tokens.
pub fn tokenize_caption(s: &str) -> String {
    tokenize_captions(&[s])
        .pop()
        .expect("one caption in, one out")
}

/// Tokenizes a batch of captions as pycocoevalcap does (one jar run over the captions joined by
/// `\n`), returning one space-joined token string per caption, punctuation removed.
pub fn tokenize_captions<S: AsRef<str>>(captions: &[S]) -> Vec<String> {
    let mut joined = String::with_capacity(captions.iter().map(|c| c.as_ref().len() + 1).sum());
    let mut bounds = Vec::with_capacity(captions.len());
    for (i, c) in captions.iter().enumerate() {
        if i > 0 {
            joined.push('\n');
        }
        let start = joined.len();
        let c = c.as_ref();
        if c.contains('\n') {
            joined.push_str(&c.replace('\n', " "));
        } else {
            joined.push_str(c);
        }
        bounds.push((start, joined.len()));
    }
    let astral = Astral::encode(&mut joined, &mut bounds);
    let mut out = Vec::with_capacity(captions.len());
    let mut pos = 0;
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for &(start, end) in &bounds {
        // A token that ran over the previous caption's end (only a tag with a quoted attribute
        // can) has consumed part of this caption, as in the jar.
        pos = pos.max(start);
        lines.clear();
        line.clear();
        pos = lex(&joined, pos, end, |at, l| match l {
            Lexeme::Word(w) => {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(&lower(&astral.decode(at, w)));
            }
            Lexeme::Newline => lines.push(std::mem::take(&mut line)),
        });
        // The joining `\n` (or `\r\n`) ends the caption's last line.
        if pos == end && end < joined.len() {
            pos += 1;
        }
        let mut s = String::new();
        let mut piece = String::new();
        for l in lines.iter().chain(std::iter::once(&line)) {
            piece.clear();
            post_process(l, &mut piece);
            if !piece.is_empty() {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push_str(&piece);
            }
        }
        out.push(s);
    }
    out
}

/// The lower-cased PTB tokens of one line, before punctuation removal (line breaks inside it
/// separate tokens like spaces).
pub fn ptb_tokens(line: &str) -> Vec<String> {
    let mut text = line.to_string();
    let astral = Astral::encode(&mut text, &mut []);
    let mut toks = Vec::new();
    lex(&text, 0, text.len(), |at, l| {
        if let Lexeme::Word(w) = l {
            toks.push(lower(&astral.decode(at, w)));
        }
    });
    toks
}

/// The jar reads UTF-16: a character outside the Basic Multilingual Plane is two surrogates,
/// which no letter, digit or symbol class contains, but which negated classes (URLs, e-mail
/// addresses, tags) take one at a time. The lexer sees each such character as two placeholder
/// non-characters (U+FDD0 U+FDD1) with the same properties; tokens get the character back, and a
/// token holding only half of one gets `?`, as Java's UTF-8 encoder writes a lone surrogate.
struct Astral {
    /// Byte offsets of the placeholders' first halves in the encoded text, and their characters.
    at: Vec<usize>,
    chars: Vec<char>,
}

const HI: char = '\u{FDD0}';
const LO: char = '\u{FDD1}';

impl Astral {
    fn encode(text: &mut String, bounds: &mut [(usize, usize)]) -> Astral {
        let mut a = Astral {
            at: Vec::new(),
            chars: Vec::new(),
        };
        // Four-byte UTF-8 sequences start with 0xF0..=0xF4.
        if !text.bytes().any(|b| b >= 0xF0) {
            return a;
        }
        let mut old_at = Vec::new();
        let mut out = String::with_capacity(text.len() + 16);
        for (i, c) in text.char_indices() {
            if (c as u32) > 0xFFFF {
                old_at.push(i);
                a.at.push(out.len());
                a.chars.push(c);
                out.push(HI);
                out.push(LO);
            } else {
                out.push(c);
            }
        }
        // Each 4-byte character became 6 bytes.
        let shift = |x: usize| x + 2 * old_at.partition_point(|&o| o < x);
        for b in bounds.iter_mut() {
            *b = (shift(b.0), shift(b.1));
        }
        *text = out;
        a
    }

    /// The token that starts at byte `start` of the encoded text, with its characters restored.
    fn decode(&self, start: usize, w: String) -> String {
        if self.at.is_empty() || !w.contains([HI, LO]) {
            return w;
        }
        let mut k = self.at.partition_point(|&o| o < start);
        let mut out = String::with_capacity(w.len());
        let mut it = w.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                HI if it.peek() == Some(&LO) => {
                    it.next();
                    out.push(self.chars.get(k).copied().unwrap_or('?'));
                    k += 1;
                }
                HI => {
                    out.push('?');
                    k += 1;
                }
                LO => out.push('?'),
                c => out.push(c),
            }
        }
        out
    }
}

/// How captions are tokenized before scoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Tokenizer {
    /// The re-implementation of the jar's lexer (no Java needed).
    #[default]
    Native,
    /// The Stanford CoreNLP 3.4.1 jar itself, run as pycocoevalcap runs it.
    Jar(PathBuf),
}

impl Tokenizer {
    /// Tokenizes a batch as pycocoevalcap does (see the module documentation).
    pub fn tokenize<S: AsRef<str>>(&self, captions: &[S]) -> Result<Vec<String>> {
        match self {
            Tokenizer::Native => Ok(tokenize_captions(captions)),
            Tokenizer::Jar(jar) => tokenize_with_jar(jar, captions),
        }
    }
}

/// The jar's file name, as pycocoevalcap ships it in `pycocoevalcap/tokenizer/`.
pub const PTB_JAR_NAME: &str = "stanford-corenlp-3.4.1.jar";

/// Finds the Stanford CoreNLP 3.4.1 jar: an explicit path, `$OSCAR_PTB_JAR`, next to the METEOR
/// jar's pycocoevalcap folder (`$OSCAR_METEOR_JAR`'s `../../tokenizer/`), the installed
/// pycocoevalcap package, or the copy `tools/fetch_pycocoevalcap.sh` fetched.
pub fn find_ptb_jar(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(EvalError::Tool(format!(
                "PTB tokenizer jar {} does not exist",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("OSCAR_PTB_JAR").map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(EvalError::Tool(format!(
                "OSCAR_PTB_JAR={} does not exist",
                p.display()
            )))
        };
    }
    if let Some(m) = std::env::var_os("OSCAR_METEOR_JAR").map(PathBuf::from) {
        if let Some(pkg) = m.parent().and_then(Path::parent) {
            let jar = pkg.join("tokenizer").join(PTB_JAR_NAME);
            if jar.is_file() {
                return Ok(jar);
            }
        }
    }
    if let Some(jar) = crate::meteor::find_pycocoevalcap_file(&format!("tokenizer/{PTB_JAR_NAME}"))
    {
        return Ok(jar);
    }
    Err(EvalError::Tool(format!(
        "jar tokenization needs {PTB_JAR_NAME}: pass --ptb-jar, set OSCAR_PTB_JAR, run `bash tools/fetch_pycocoevalcap.sh` in the repository, or `pip install pycocoevalcap==1.2` (it ships pycocoevalcap/tokenizer/{PTB_JAR_NAME})"
    )))
}

/// Characters the jar ends a line on (besides the joining `\n`).
fn line_breaking(c: char) -> bool {
    matches!(c, '\r' | '\u{2028}' | '\u{2029}' | '\u{0B}' | '\u{0C}')
}

/// Tokenizes a batch with the jar, exactly as pycocoevalcap 1.2's `PTBTokenizer.tokenize` does:
/// the captions (their `\n` replaced by spaces) joined by `\n` into a file, `java -cp JAR
/// edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase FILE`, stdout decoded as
/// UTF-8, split on `\n`, each line `rstrip()`ed, `split(' ')` and filtered. The JVM is pinned to
/// UTF-8 (`-Dfile.encoding=UTF-8`); the tokenizer itself reads and writes UTF-8 by default.
///
/// If the jar prints a different number of lines than there are captions (a caption holds a
/// line-breaking character), pycocoevalcap would silently misalign every later caption; this
/// returns an error naming the first such caption instead.
pub fn tokenize_with_jar<S: AsRef<str>>(jar: &Path, captions: &[S]) -> Result<Vec<String>> {
    if captions.is_empty() {
        return Ok(Vec::new());
    }
    let sentences: Vec<String> = captions
        .iter()
        .map(|c| c.as_ref().replace('\n', " "))
        .collect();
    let mut file = tempfile_in_tmp()?;
    file.1
        .write_all(sentences.join("\n").as_bytes())
        .map_err(|e| EvalError::Io {
            path: file.0.clone(),
            err: e,
        })?;
    drop(file.1);
    let out = Command::new("java")
        .arg("-Dfile.encoding=UTF-8")
        .arg("-cp")
        .arg(jar)
        .args([
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
        ])
        .arg(&file.0)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let _ = std::fs::remove_file(&file.0);
    let out = out.map_err(|e| {
        EvalError::Tool(format!(
            "PTB tokenization with {} needs Java (`java` on PATH): {e}",
            jar.display()
        ))
    })?;
    if !out.status.success() {
        return Err(EvalError::Tool(format!(
            "{} failed ({}): {}",
            jar.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|e| EvalError::Tool(format!("{} printed invalid UTF-8: {e}", jar.display())))?;
    let lines: Vec<&str> = text.split('\n').collect();
    // A last caption ending in a line-breaking character leaves one empty piece after the last
    // line, which pycocoevalcap's zip ignores.
    let trailing_break = lines.len() == sentences.len() + 1
        && lines[sentences.len()].is_empty()
        && sentences.last().is_some_and(|s| s.ends_with(line_breaking));
    let printed = lines.len();
    if printed != sentences.len() && !trailing_break {
        let first = sentences
            .iter()
            .position(|s| s.trim_end_matches('\r').chars().any(line_breaking));
        return Err(EvalError::Tool(match first {
            Some(i) => format!(
                "the PTB jar printed {printed} lines for {} captions: caption {} ({:?}) holds a character the jar treats as a line break, so pycocoevalcap would give every later caption the wrong tokens; use the native tokenizer, which keeps captions apart",
                sentences.len(),
                i,
                sentences[i]
            ),
            None => format!("the PTB jar printed {printed} lines for {} captions", sentences.len()),
        }));
    }
    Ok(lines[..sentences.len()]
        .iter()
        .map(|l| {
            let mut s = String::new();
            post_process(l, &mut s);
            s
        })
        .collect())
}

/// A fresh file in the system temporary folder (pycocoevalcap writes its file next to the jar;
/// the jar reads it by path either way).
fn tempfile_in_tmp() -> Result<(PathBuf, std::fs::File)> {
    let dir = std::env::temp_dir();
    for n in 0..1000u32 {
        let p = dir.join(format!(
            "oscar-ptb-{}-{}-{n}.txt",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(EvalError::Io { path: p, err: e }),
        }
    }
    Err(EvalError::Tool(format!(
        "could not create a temporary file in {}",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_examples() {
        assert_eq!(
            tokenize_caption("A man riding a wave on top of a surfboard."),
            "a man riding a wave on top of a surfboard"
        );
        assert_eq!(
            tokenize_caption("It's RED; isn't it?"),
            "it 's red is n't it"
        );
        assert_eq!(
            tokenize_caption("A dog (on a leash)."),
            "a dog -lrb- on a leash -rrb-"
        );
        assert_eq!(tokenize_caption(""), "");
    }

    #[test]
    fn a_batch_keeps_captions_apart_even_with_line_breaks_inside() {
        let t = tokenize_captions(&["a dog\u{2028}runs", "two cats\r", "", "the end."]);
        assert_eq!(t, vec!["a dog runs", "two cats", "", "the end"]);
    }
}
