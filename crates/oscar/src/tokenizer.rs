//! The BERT uncased WordPiece tokenizer built from a checkpoint's `vocab.txt` (HF
//! `BertTokenizer(do_lower_case=True)`: clean text, CJK split, lower-case, strip accents,
//! split on whitespace and punctuation, greedy longest-match WordPiece with `##`).

use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

/// Ids of the special tokens every Oscar layout uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

/// WordPiece tokenizer with Oscar's special tokens.
pub struct BertTokenizer {
    inner: Tokenizer,
    vocab: Vec<String>,
    pub special: SpecialIds,
}

impl BertTokenizer {
    /// Reads `vocab.txt` (one token per line; the line number is the id).
    pub fn from_vocab(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let vocab: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        if vocab.is_empty() {
            return Err(Error::bad_file(
                path,
                "vocabulary is empty: expected one word piece per line",
            ));
        }
        let id = |tok: &str| -> Result<u32> {
            vocab
                .iter()
                .position(|v| v == tok)
                .map(|i| i as u32)
                .ok_or_else(|| {
                    Error::bad_file(path, format!("vocabulary lacks the special token {tok}"))
                })
        };
        let special = SpecialIds {
            pad: id("[PAD]")?,
            unk: id("[UNK]")?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
        };
        let path_str = path
            .to_str()
            .ok_or_else(|| Error::bad_file(path, "path is not valid UTF-8"))?;
        let model = WordPiece::from_file(path_str)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| Error::bad_file(path, format!("cannot build WordPiece: {e}")))?;
        let mut inner = Tokenizer::new(model);
        let tk_err = |e: tokenizers::Error| {
            Error::bad_file(path, format!("cannot build the tokenizer: {e}"))
        };
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
            .map_err(tk_err)?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        // As HF's `never_split`: special tokens typed in the text stay whole.
        let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .map(|t| AddedToken::from(*t, true))
            .collect();
        inner.add_special_tokens(specials).map_err(tk_err)?;
        Ok(BertTokenizer {
            inner,
            vocab,
            special,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Word-piece ids of `text`, without special tokens.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Invalid(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The token of `id`, if in range.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(String::as_str)
    }

    /// The id of `token`, if in the vocabulary.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Joins word pieces back into text (`##` pieces glued to the previous word), skipping
    /// special tokens, as HF's `decode(skip_special_tokens=True)` with its clean-up.
    pub fn decode(&self, ids: &[u32]) -> String {
        let s = self.special;
        let mut out = String::new();
        for &id in ids {
            if [s.pad, s.cls, s.sep, s.mask].contains(&id) {
                continue;
            }
            let Some(tok) = self.token(id) else { continue };
            match tok.strip_prefix("##") {
                Some(rest) => out.push_str(rest),
                None => {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(tok);
                }
            }
        }
        for (from, to) in [
            (" .", "."),
            (" ?", "?"),
            (" !", "!"),
            (" ,", ","),
            (" ' ", "'"),
            (" n't", "n't"),
            (" 'm", "'m"),
            (" 's", "'s"),
            (" 've", "'ve"),
            (" 're", "'re"),
        ] {
            out = out.replace(from, to);
        }
        out
    }
}
