//! Oscar's input layout (oscar-spec §1.1): `[CLS] text_a [SEP] tags [SEP] [PAD…] | regions`,
//! token types 0 for the first segment and 1 for the tags, region truncation and zero padding,
//! and the 1-D attention mask over text then regions.

use crate::error::{Error, Result};
use crate::model::Inputs;
use crate::tokenizer::BertTokenizer;
use candle_core::{Device, Tensor};

/// How text_a and the tags share `max_seq_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// `_truncate_seq_pair`: pop from the longer side until both fit `max_seq_length − 3`
    /// (VQA, GQA, NLVR2, pre-training).
    Pair,
    /// text_a first to `max_seq_length − 2`, then the tags to what is left (retrieval, captioning).
    TextFirst,
}

/// Lengths and truncation of one task's layout.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub max_seq_length: usize,
    pub max_img_seq_length: usize,
    pub truncation: Truncation,
}

/// One example, tokenized and laid out but not padded.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    /// Word pieces of text_a (after `[CLS]`) and of the tags (after text_a's `[SEP]`).
    pub text_a_len: usize,
    pub tags_len: usize,
    /// Region features kept (at most `max_img_seq_length` rows of `dim` floats).
    pub regions: Vec<f32>,
    pub num_regions: usize,
}

impl Layout {
    /// Tokenizes and lays out one example. `regions` is row-major `[n, dim]`.
    pub fn encode(
        &self,
        tok: &BertTokenizer,
        text_a: &str,
        tags: Option<&str>,
        regions: &[f32],
        dim: usize,
    ) -> Result<Encoded> {
        if self.max_seq_length < 3 {
            return Err(Error::Invalid(format!(
                "max_seq_length {} leaves no room for [CLS] … [SEP]",
                self.max_seq_length
            )));
        }
        if dim == 0 || !regions.len().is_multiple_of(dim) {
            return Err(Error::Invalid(format!(
                "{} region values are not a whole number of {dim}-d rows",
                regions.len()
            )));
        }
        let mut a = tok.tokenize(text_a)?;
        let mut b = match tags {
            Some(t) if !t.trim().is_empty() => Some(tok.tokenize(t)?),
            _ => None,
        };
        let max = self.max_seq_length;
        match (self.truncation, b.as_mut()) {
            (Truncation::Pair, Some(b)) => {
                while a.len() + b.len() > max - 3 {
                    if a.len() > b.len() {
                        a.pop();
                    } else {
                        b.pop();
                    }
                }
            }
            _ => {
                a.truncate(max - 2);
                if let Some(b) = b.as_mut() {
                    b.truncate(max.saturating_sub(a.len() + 3));
                }
            }
        }
        let s = tok.special;
        let mut ids = Vec::with_capacity(max);
        ids.push(s.cls);
        ids.extend(&a);
        ids.push(s.sep);
        let mut types = vec![0u32; ids.len()];
        let mut tags_len = 0;
        if let Some(b) = b.filter(|b| !b.is_empty()) {
            tags_len = b.len();
            ids.extend(&b);
            ids.push(s.sep);
            types.resize(ids.len(), 1);
        }
        let n = (regions.len() / dim).min(self.max_img_seq_length);
        Ok(Encoded {
            input_ids: ids,
            token_type_ids: types,
            text_a_len: a.len(),
            tags_len,
            regions: regions[..n * dim].to_vec(),
            num_regions: n,
        })
    }
}

/// Pads a batch to `text_len` tokens and `img_len` regions (the reference pads to the layout's
/// maxima; dynamic padding passes the batch's longest) and builds the 1-D attention mask.
pub fn collate(
    items: &[Encoded],
    text_len: usize,
    img_len: usize,
    dim: usize,
    device: &Device,
) -> Result<Inputs> {
    let b = items.len();
    if b == 0 {
        return Err(Error::Invalid("cannot collate an empty batch".into()));
    }
    let mut ids = vec![0u32; b * text_len];
    let mut types = vec![0u32; b * text_len];
    let mut feats = vec![0f32; b * img_len * dim];
    let mut mask = vec![0f32; b * (text_len + img_len)];
    for (i, e) in items.iter().enumerate() {
        let t = e.input_ids.len();
        if t > text_len || e.num_regions > img_len {
            return Err(Error::Invalid(format!("item {i} has {t} tokens and {} regions, more than the batch's {text_len} and {img_len}", e.num_regions)));
        }
        ids[i * text_len..i * text_len + t].copy_from_slice(&e.input_ids);
        types[i * text_len..i * text_len + t].copy_from_slice(&e.token_type_ids);
        feats[i * img_len * dim..i * img_len * dim + e.regions.len()].copy_from_slice(&e.regions);
        let row = &mut mask[i * (text_len + img_len)..(i + 1) * (text_len + img_len)];
        row[..t].fill(1.0);
        row[text_len..text_len + e.num_regions].fill(1.0);
    }
    Ok(Inputs {
        input_ids: Tensor::from_vec(ids, (b, text_len), device)?,
        token_type_ids: Some(Tensor::from_vec(types, (b, text_len), device)?),
        position_ids: None,
        img_feats: (img_len > 0)
            .then(|| Tensor::from_vec(feats, (b, img_len, dim), device))
            .transpose()?,
        attention_mask: Some(Tensor::from_vec(mask, (b, text_len + img_len), device)?),
    })
}

/// Pads a batch only to its own longest text and region count (dynamic padding): the outputs
/// at real positions equal those of [`collate`] to the layout's maxima, with less work.
pub fn collate_dynamic(items: &[Encoded], dim: usize, device: &Device) -> Result<Inputs> {
    let t = items.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
    let r = items.iter().map(|e| e.num_regions).max().unwrap_or(0);
    collate(items, t, r, dim, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tok() -> BertTokenizer {
        BertTokenizer::from_vocab(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tokenizer/bert-base-uncased-vocab.txt"),
        )
        .unwrap()
    }

    #[test]
    fn pair_truncation_pops_from_the_longer_side() {
        let t = tok();
        let l = Layout {
            max_seq_length: 9,
            max_img_seq_length: 2,
            truncation: Truncation::Pair,
        };
        // "a b c d e" (5 pieces) and "x y" (2): budget 6 → a loses one.
        let e = l
            .encode(&t, "a b c d e", Some("x y"), &[1.0; 6], 2)
            .unwrap();
        let a = t.tokenize("a b c d").unwrap();
        let b = t.tokenize("x y").unwrap();
        let mut want = vec![101];
        want.extend(&a);
        want.push(102);
        want.extend(&b);
        want.push(102);
        assert_eq!(e.input_ids, want);
        assert_eq!(e.token_type_ids, vec![0, 0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(e.num_regions, 2, "3 regions truncated to 2");
    }

    #[test]
    fn text_first_truncation_cuts_the_tags() {
        let t = tok();
        let l = Layout {
            max_seq_length: 8,
            max_img_seq_length: 5,
            truncation: Truncation::TextFirst,
        };
        let e = l.encode(&t, "a b c d", Some("x y z"), &[], 4).unwrap();
        // [CLS] a b c d [SEP] x [SEP]
        assert_eq!(e.input_ids.len(), 8);
        assert_eq!(e.input_ids[6], t.tokenize("x").unwrap()[0]);
        let batch = collate(&[e], 10, 2, 4, &Device::Cpu).unwrap();
        let m: Vec<f32> = batch
            .attention_mask
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(m, vec![1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0.]);
    }
}
