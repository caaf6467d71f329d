//! Oscar's input layout (oscar-spec §1.1): `[CLS] text_a [SEP] tags [SEP] [PAD…] | regions`,
//! token types 0 for the first segment and 1 for the tags, region truncation and zero padding —
//! and the one collator every task batches with: fixed padding (the reference's maxima) or
//! dynamic (the batch's longest), the 1-D padding mask, or each item's own block mask
//! (captioning's seq2seq layout, retrieval's CL/CR/LR, decoding's query rows) placed in a 3-D one.

use crate::data::attention_mask::BlockMask;
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
    /// Position ids of the tokens; `None`: 0, 1, 2, … (only decoding's query rows need others).
    pub position_ids: Option<Vec<u32>>,
    /// Word pieces of text_a (after `[CLS]`) and of the tags (after text_a's `[SEP]`).
    pub text_a_len: usize,
    pub tags_len: usize,
    /// Region features kept (at most `max_img_seq_length` rows of `dim` floats).
    pub regions: Vec<f32>,
    pub num_regions: usize,
    /// Who attends to whom over this item's own `input_ids.len() + num_regions` positions
    /// (tokens, then regions); `None`: every real position sees every other.
    pub mask: Option<BlockMask>,
}

impl Encoded {
    /// Text tokens, then regions.
    pub fn len(&self) -> usize {
        self.input_ids.len() + self.num_regions
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
            position_ids: None,
            text_a_len: a.len(),
            tags_len,
            regions: regions[..n * dim].to_vec(),
            num_regions: n,
            mask: None,
        })
    }
}

/// Pads a batch to `text_len` tokens and `img_len` regions (the reference pads to the layout's
/// maxima; dynamic padding passes the batch's longest). The attention mask is 1-D `[b, T+R]`
/// when no item has a block mask, else 3-D `[b, T+R, T+R]` with each item's mask moved to the
/// batch's columns (its tokens at `0..`, its regions at `text_len..`); padding rows and columns
/// stay blocked. Position ids are emitted when some item has its own.
pub fn collate<E: std::borrow::Borrow<Encoded>>(
    items: &[E],
    text_len: usize,
    img_len: usize,
    dim: usize,
    device: &Device,
) -> Result<Inputs> {
    let b = items.len();
    if b == 0 {
        return Err(Error::Invalid("cannot collate an empty batch".into()));
    }
    let l = text_len + img_len;
    let items: Vec<&Encoded> = items.iter().map(|e| e.borrow()).collect();
    let blocks = items.iter().any(|e| e.mask.is_some());
    let mut ids = vec![0u32; b * text_len];
    let mut types = vec![0u32; b * text_len];
    let mut pos = items
        .iter()
        .any(|e| e.position_ids.is_some())
        .then(|| vec![0u32; b * text_len]);
    let mut feats = vec![0f32; b * img_len * dim];
    let mut mask = vec![0f32; b * if blocks { l * l } else { l }];
    for (i, e) in items.iter().enumerate() {
        let t = e.input_ids.len();
        if t > text_len || e.num_regions > img_len {
            return Err(Error::Invalid(format!("item {i} has {t} tokens and {} regions, more than the batch's {text_len} and {img_len}", e.num_regions)));
        }
        if e.regions.len() != e.num_regions * dim || e.token_type_ids.len() != t {
            return Err(Error::Invalid(format!("item {i}: {} token types and {} region values for {t} tokens and {} {dim}-d regions", e.token_type_ids.len(), e.regions.len(), e.num_regions)));
        }
        ids[i * text_len..i * text_len + t].copy_from_slice(&e.input_ids);
        types[i * text_len..i * text_len + t].copy_from_slice(&e.token_type_ids);
        if let Some(pos) = pos.as_mut() {
            let row = &mut pos[i * text_len..(i + 1) * text_len];
            match &e.position_ids {
                Some(p) if p.len() == t => row[..t].copy_from_slice(p),
                Some(p) => {
                    return Err(Error::Invalid(format!(
                        "item {i}: {} position ids for {t} tokens",
                        p.len()
                    )))
                }
                None => row.iter_mut().enumerate().for_each(|(k, v)| *v = k as u32),
            }
        }
        feats[i * img_len * dim..i * img_len * dim + e.regions.len()].copy_from_slice(&e.regions);
        // Own position → batch column: tokens stay, regions move behind the padded text.
        let at = |p: usize| if p < t { p } else { text_len + p - t };
        let real: Vec<usize> = (0..e.len()).map(at).collect();
        if !blocks {
            let row = &mut mask[i * l..(i + 1) * l];
            real.iter().for_each(|&c| row[c] = 1.0);
            continue;
        }
        let m = &mut mask[i * l * l..(i + 1) * l * l];
        match &e.mask {
            Some(own) => {
                if own.dims() != (e.len(), e.len()) {
                    return Err(Error::Invalid(format!(
                        "item {i}: a {:?} attention mask for {} positions",
                        own.dims(),
                        e.len()
                    )));
                }
                for (r, row) in own.as_slice().chunks(e.len()).enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        m[real[r] * l + real[c]] = *v;
                    }
                }
            }
            None => {
                for &r in &real {
                    real.iter().for_each(|&c| m[r * l + c] = 1.0);
                }
            }
        }
    }
    let mask_shape: Vec<usize> = if blocks { vec![b, l, l] } else { vec![b, l] };
    Ok(Inputs {
        input_ids: Tensor::from_vec(ids, (b, text_len), device)?,
        token_type_ids: Some(Tensor::from_vec(types, (b, text_len), device)?),
        position_ids: pos
            .map(|p| Tensor::from_vec(p, (b, text_len), device))
            .transpose()?,
        img_feats: (img_len > 0)
            .then(|| Tensor::from_vec(feats, (b, img_len, dim), device))
            .transpose()?,
        attention_mask: Some(Tensor::from_vec(mask, mask_shape, device)?),
    })
}

/// Pads a batch only to its own longest text and region count (dynamic padding): the outputs
/// at real positions equal those of [`collate`] to the layout's maxima, with less work.
pub fn collate_dynamic(items: &[Encoded], dim: usize, device: &Device) -> Result<Inputs> {
    collate_rows(items, 0..items.len(), dim, device)
}

/// [`collate_dynamic`] of `items[rows]` alone, padded to the longest of all `items`: one
/// rank's rows of a data-parallel batch, shaped as the whole batch's rows are.
pub fn collate_rows(
    items: &[Encoded],
    rows: std::ops::Range<usize>,
    dim: usize,
    device: &Device,
) -> Result<Inputs> {
    let t = items.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
    let r = items.iter().map(|e| e.num_regions).max().unwrap_or(0);
    let part = items
        .get(rows.clone())
        .ok_or_else(|| Error::Invalid(format!("rows {rows:?} of a batch of {}", items.len())))?;
    collate(part, t, r, dim, device)
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

    fn rows(x: &Inputs) -> Vec<String> {
        let m: Vec<Vec<Vec<f32>>> = x.attention_mask.as_ref().unwrap().to_vec3().unwrap();
        m.iter()
            .flat_map(|b| {
                b.iter()
                    .map(|r| r.iter().map(|v| if *v > 0.0 { '1' } else { '.' }).collect())
            })
            .collect()
    }

    #[test]
    fn block_masks_move_to_the_batch_columns_and_padding_stays_blocked() {
        // Item 0: 2 tokens + 1 region under a causal mask with explicit positions; item 1:
        // 3 tokens + 2 regions, no mask of its own (full attention over its real positions).
        let mut causal = BlockMask::square(3);
        causal.causal(0..3);
        let a = Encoded {
            input_ids: vec![5, 6],
            token_type_ids: vec![0, 1],
            position_ids: Some(vec![0, 7]),
            text_a_len: 1,
            tags_len: 1,
            regions: vec![1.0, 2.0],
            num_regions: 1,
            mask: Some(causal),
        };
        let b = Encoded {
            input_ids: vec![5, 6, 7],
            token_type_ids: vec![0, 0, 0],
            position_ids: None,
            text_a_len: 1,
            tags_len: 0,
            regions: vec![3.0; 4],
            num_regions: 2,
            mask: None,
        };
        let x = collate_dynamic(&[a.clone(), b], 2, &Device::Cpu).unwrap();
        // Batch columns: tokens 0..3, regions 3..5.
        assert_eq!(
            rows(&x),
            [
                // item 0: its region (own position 2) is batch column 3
                "1....", "11...", ".....", "11.1.", ".....", "11111", "11111", "11111", "11111",
                "11111",
            ]
        );
        let pos: Vec<Vec<u32>> = x.position_ids.unwrap().to_vec2().unwrap();
        assert_eq!(pos, [[0, 7, 0], [0, 1, 2]]);
        let feats: Vec<f32> = x
            .img_feats
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(feats, [1., 2., 0., 0., 3., 3., 3., 3.]);
        // A mask of the wrong size names the item.
        let mut bad = a;
        bad.mask = Some(BlockMask::square(4));
        let e = collate(&[bad], 2, 1, 2, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("item 0"), "{e}");
    }
}
