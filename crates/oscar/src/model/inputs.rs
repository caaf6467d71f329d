//! The tensors one forward pass takes (oscar-spec §1.1): text ids first, regions last.

use candle_core::{DType, Tensor};

/// One batch: `[CLS] text_a [SEP] tags [SEP] [PAD…] | regions`.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `[B, T]` u32 word-piece ids.
    pub input_ids: Tensor,
    /// `[B, T]` u32; zeros when `None`.
    pub token_type_ids: Option<Tensor>,
    /// `[B, T]` u32; `0..T` when `None` (captioning overrides it: tags at 40+).
    pub position_ids: Option<Tensor>,
    /// `[B, R, img_feature_dim]` f32 region features, or `None` for text only.
    pub img_feats: Option<Tensor>,
    /// 0/1 mask over the T+R positions: `[B, T+R]` or `[B, T+R, T+R]` (seq2seq, block masks).
    pub attention_mask: Option<Tensor>,
}

impl Inputs {
    pub fn text_len(&self) -> candle_core::Result<usize> {
        Ok(self.input_ids.dims2()?.1)
    }

    pub fn img_len(&self) -> candle_core::Result<usize> {
        Ok(match &self.img_feats {
            Some(f) => f.dims3()?.1,
            None => 0,
        })
    }

    /// The attention mask, or all ones over T+R when none was given.
    pub fn mask_or_ones(&self) -> candle_core::Result<Tensor> {
        match &self.attention_mask {
            Some(m) => Ok(m.clone()),
            None => {
                let b = self.input_ids.dims2()?.0;
                Tensor::ones(
                    (b, self.text_len()? + self.img_len()?),
                    DType::F32,
                    self.input_ids.device(),
                )
            }
        }
    }
}
