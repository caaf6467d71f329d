//! Every block attention mask oscar-rs builds, in one place: a 0/1 matrix (row: the position
//! that attends, column: the position attended to) assembled from named blocks, and the named
//! layouts the reference uses — the seq2seq mask of captioning (`CaptionTensorizer`:
//! the caption causal, tags and regions never seeing the caption) and retrieval's CL/CR/LR
//! restrictions (`--att_mask_type`). Padding positions are simply never allowed. The model
//! turns the matrix into the additive `-10000` mask (`ops::extended_attention_mask`).

use std::ops::Range;

/// A 0/1 attention mask of `rows × cols`, all blocked until allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockMask {
    rows: usize,
    cols: usize,
    m: Vec<f32>,
}

impl BlockMask {
    /// Nothing allowed yet.
    pub fn new(rows: usize, cols: usize) -> Self {
        BlockMask {
            rows,
            cols,
            m: vec![0.0; rows * cols],
        }
    }

    /// Square: `len` positions attending to each other.
    pub fn square(len: usize) -> Self {
        Self::new(len, len)
    }

    /// Every row of `rows` sees every column of `cols`.
    pub fn allow(&mut self, rows: impl IntoIterator<Item = usize>, cols: &[usize]) -> &mut Self {
        for r in rows {
            for &c in cols {
                self.m[r * self.cols + c] = 1.0;
            }
        }
        self
    }

    /// Every row of `a` sees `b` and every row of `b` sees `a`.
    pub fn both_ways(&mut self, a: Range<usize>, b: Range<usize>) -> &mut Self {
        self.allow(a.clone(), &b.clone().collect::<Vec<_>>());
        self.allow(b, &a.collect::<Vec<_>>())
    }

    /// Positions in `r` see themselves and the earlier positions of `r` (left to right).
    pub fn causal(&mut self, r: Range<usize>) -> &mut Self {
        for i in r.clone() {
            self.allow([i], &(r.start..=i).collect::<Vec<_>>());
        }
        self
    }

    /// Row-major values.
    pub fn into_vec(self) -> Vec<f32> {
        self.m
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.m
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
}

/// The seq2seq layout of captioning over `len` positions: the `caption` positions attend
/// causally among themselves and to the `context` (tags and regions); the context attends to
/// itself only, never to the caption — so a caption word cannot see the words after it, and
/// the context is the same whatever the caption (which is what lets decoding cache it).
pub fn seq2seq(len: usize, caption: Range<usize>, context: &[usize]) -> BlockMask {
    let mut m = BlockMask::square(len);
    m.causal(caption.clone())
        .allow(caption, context)
        .allow(context.iter().copied(), context);
    m
}

/// The seq2seq layout seen from cached decoding, whose keys are ordered `[context (P) |
/// committed words | new positions]`: the rows of the `new` caption positions, each seeing the
/// valid `context` columns, every committed word and the new positions up to itself.
pub fn seq2seq_step(
    context: &[usize],
    context_len: usize,
    committed: usize,
    new: usize,
) -> BlockMask {
    let mut m = BlockMask::new(new, context_len + committed + new);
    for i in 0..new {
        m.allow([i], context).allow(
            [i],
            &(context_len..context_len + committed + i + 1).collect::<Vec<_>>(),
        );
    }
    m
}

/// The context rows of the seq2seq layout on their own (`context_len` positions, the valid ones
/// listed): what cached decoding encodes once per image.
pub fn seq2seq_context(context: &[usize], context_len: usize) -> BlockMask {
    let mut m = BlockMask::square(context_len);
    m.allow(0..context_len, context);
    m
}

/// Which parts of a retrieval pair attend to each other (`--att_mask_type`): every part always
/// attends to itself; CLR is full attention between caption (C), tags (L) and regions (R); the
/// others open one pair of parts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub enum AttMask {
    #[default]
    CLR,
    CL,
    CR,
    LR,
}

impl std::str::FromStr for AttMask {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "CLR" => Ok(AttMask::CLR),
            "CL" => Ok(AttMask::CL),
            "CR" => Ok(AttMask::CR),
            "LR" => Ok(AttMask::LR),
            _ => Err(format!("attention mask {s:?}: expected CLR, CL, CR or LR")),
        }
    }
}

/// A retrieval pair's mask over `len` positions: caption `c`, tags `l`, regions `r`.
pub fn retrieval(
    len: usize,
    c: Range<usize>,
    l: Range<usize>,
    r: Range<usize>,
    kind: AttMask,
) -> BlockMask {
    let mut m = BlockMask::square(len);
    for part in [&c, &l, &r] {
        m.both_ways(part.clone(), part.clone());
    }
    match kind {
        AttMask::CLR => m
            .both_ways(c.clone(), l.clone())
            .both_ways(c, r.clone())
            .both_ways(l, r),
        AttMask::CL => m.both_ways(c, l),
        AttMask::CR => m.both_ways(c, r),
        AttMask::LR => m.both_ways(l, r),
    };
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(m: &BlockMask) -> Vec<String> {
        let (r, c) = m.dims();
        (0..r)
            .map(|i| {
                m.as_slice()[i * c..(i + 1) * c]
                    .iter()
                    .map(|v| if *v > 0.0 { '1' } else { '.' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn seq2seq_is_causal_over_the_caption_and_the_context_never_sees_it() {
        // 3 caption positions, 1 padding, 2 context positions.
        let m = seq2seq(6, 0..3, &[4, 5]);
        assert_eq!(
            rows(&m),
            ["1...11", "11..11", "111.11", "......", "....11", "....11"]
        );
    }

    #[test]
    fn cached_decoding_rows_are_the_seq2seq_rows_of_the_new_positions() {
        // Context of 3 positions (the middle one padding), 2 committed words, 2 new positions.
        let step = seq2seq_step(&[0, 2], 3, 2, 2);
        assert_eq!(rows(&step), ["1.1111.", "1.11111"]);
        // The same rows of the full square seq2seq mask with that column order.
        let full = seq2seq(7, 3..7, &[0, 2]);
        assert_eq!(rows(&full)[5..], rows(&step)[..]);
        assert_eq!(rows(&seq2seq_context(&[0, 2], 3)), ["1.1", "1.1", "1.1"]);
    }

    #[test]
    fn retrieval_layouts_open_one_pair_of_parts() {
        let m = |k| rows(&retrieval(4, 0..1, 1..2, 2..4, k));
        assert_eq!(m(AttMask::CLR), ["1111", "1111", "1111", "1111"]);
        assert_eq!(m(AttMask::CL), ["11..", "11..", "..11", "..11"]);
        assert_eq!(m(AttMask::CR), ["1.11", ".1..", "1.11", "1.11"]);
        assert_eq!(m(AttMask::LR), ["1...", ".111", ".111", ".111"]);
        assert_eq!("lr".parse::<AttMask>(), Ok(AttMask::LR));
        assert!("CLX".parse::<AttMask>().is_err());
    }
}
