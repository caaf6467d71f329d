//! Captioning inputs (`CaptionTensorizer` of run_captioning.py; oscar-spec §3.5):
//! `[CLS] caption [SEP]` padded to `max_seq_a_len`, then `tags [SEP]`, padded to `max_seq_len`
//! (so tags sit at positions `max_seq_a_len..`), regions after; the seq2seq mask (caption causal,
//! caption sees tags and regions, tags and regions never see the caption); in training, the
//! masked caption positions and their ids. Batches go through the one collator,
//! [`super::tensorize::collate`].

use super::masking::{mask_caption, Draws, MaskIds};
use super::tensorize::Encoded;
use crate::error::{Error, Result};
use crate::tokenizer::BertTokenizer;

/// Lengths of the captioning layout.
#[derive(Debug, Clone, Copy)]
pub struct CaptionLayout {
    /// Caption slots including `[CLS]` and `[SEP]` (reference: 40).
    pub max_seq_a_len: usize,
    /// Caption slots + tag slots (reference: 70).
    pub max_seq_len: usize,
    pub max_img_seq_len: usize,
    /// At most this many caption positions are masked (reference: 3).
    pub max_masked_tokens: usize,
    pub mask_prob: f64,
}

/// One tensorized captioning example.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionExample {
    /// `max_seq_len` ids (`[PAD]`-padded, tags at `max_seq_a_len..`), the regions kept, and the
    /// seq2seq mask over those `max_seq_len + regions` positions; [`collate`](super::tensorize::collate) batches it.
    pub encoded: Encoded,
    /// `max_seq_len` flags (training: the masked positions; inference: all ones).
    pub masked_pos: Vec<u32>,
    /// `max_masked_tokens` ids, `[PAD]`-padded (empty at inference).
    pub masked_ids: Vec<u32>,
    /// Length of `[CLS] caption [SEP]`.
    pub seq_a_len: usize,
}

impl CaptionExample {
    /// The number of masked tokens the loss reads (flagged positions, at most
    /// `max_masked_tokens`).
    pub fn targets(&self) -> usize {
        let n = self.masked_pos.iter().filter(|f| **f == 1).count();
        n.min(self.masked_ids.len())
    }
}

impl CaptionLayout {
    /// Tensorizes one example. `caption: None` is the inference layout (`[MASK]`s in the caption
    /// slots); `rng` is needed in training only.
    pub fn tensorize(
        &self,
        tok: &BertTokenizer,
        caption: Option<&str>,
        tags: Option<&str>,
        regions: &[f32],
        dim: usize,
        rng: Option<&mut dyn Draws>,
    ) -> Result<CaptionExample> {
        if self.max_seq_a_len < 3 || self.max_seq_len <= self.max_seq_a_len {
            return Err(Error::Invalid(format!(
                "captioning lengths {} / {} leave no room",
                self.max_seq_a_len, self.max_seq_len
            )));
        }
        if dim == 0 || !regions.len().is_multiple_of(dim) {
            return Err(Error::Invalid(format!(
                "{} region values are not a whole number of {dim}-d rows",
                regions.len()
            )));
        }
        let s = tok.special;
        let mut a = match caption {
            Some(c) => tok.tokenize(c)?,
            None => vec![s.mask; self.max_seq_a_len - 2],
        };
        a.truncate(self.max_seq_a_len - 2);
        let mut ids = vec![s.cls];
        ids.extend(&a);
        ids.push(s.sep);
        let seq_a_len = ids.len();
        let mut types = vec![0u32; seq_a_len];
        let mut seq_len = seq_a_len;
        let mut tags_len = 0;
        let has_tags = tags.is_some_and(|t| !t.trim().is_empty());
        if has_tags {
            // Caption padded to its fixed length, so tags always start at max_seq_a_len.
            ids.resize(self.max_seq_a_len, s.pad);
            types.resize(self.max_seq_a_len, 0);
            let mut b = tok.tokenize(tags.unwrap_or(""))?;
            b.truncate(self.max_seq_len - self.max_seq_a_len - 1);
            tags_len = b.len();
            ids.extend(&b);
            ids.push(s.sep);
            types.resize(ids.len(), 1);
            seq_len = ids.len();
        }
        let (masked_pos, masked_ids) = match (caption.is_some(), rng) {
            (true, Some(rng)) => {
                let ids_m = MaskIds {
                    mask: s.mask,
                    unk: s.unk,
                    vocab_size: tok.vocab_size(),
                };
                let (pos, orig) = mask_caption(
                    &mut ids,
                    seq_a_len,
                    self.mask_prob,
                    self.max_masked_tokens,
                    ids_m,
                    rng,
                );
                let mut flags = vec![0u32; self.max_seq_len];
                for p in pos {
                    flags[p] = 1;
                }
                let mut m = orig;
                m.resize(self.max_masked_tokens, s.pad);
                (flags, m)
            }
            (true, None) => {
                return Err(Error::Invalid(
                    "a training example needs a random source for its masks".into(),
                ))
            }
            (false, _) => (vec![1u32; self.max_seq_len], vec![]),
        };
        ids.resize(self.max_seq_len, s.pad);
        types.resize(self.max_seq_len, 0);

        let n = (regions.len() / dim).min(self.max_img_seq_len);
        let l = self.max_seq_len + n;
        let tags_r = if has_tags {
            self.max_seq_a_len..seq_len
        } else {
            0..0
        };
        let context: Vec<usize> = tags_r
            .chain(self.max_seq_len..self.max_seq_len + n)
            .collect();
        Ok(CaptionExample {
            encoded: Encoded {
                input_ids: ids,
                token_type_ids: types,
                position_ids: None,
                text_a_len: seq_a_len - 2,
                tags_len,
                regions: regions[..n * dim].to_vec(),
                num_regions: n,
                mask: Some(super::attention_mask::seq2seq(l, 0..seq_a_len, &context)),
            },
            masked_pos,
            masked_ids,
            seq_a_len,
        })
    }
}
