//! The random parts of Oscar's inputs, each consuming random draws in the reference's order so
//! that a recorded Python stream replays to the same result (tests/tensorize_goldens.rs):
//! - masked token modelling over words *and* tags (`oscar_tsv.py::random_word`, paper §3.2);
//! - the captioning masks (`CaptionTensorizer`: ≤ 3 caption positions including the final `[SEP]`).

use super::tensorize::Encoded;
use rand::rngs::StdRng;
use rand::Rng;

/// A source of random draws with Python's `random` semantics.
pub trait Draws {
    /// `random.random()`: uniform in [0, 1).
    fn uniform(&mut self) -> f64;
    /// `random._randbelow(n)`: uniform in 0..n.
    fn below(&mut self, n: usize) -> usize;
}

impl Draws for StdRng {
    fn uniform(&mut self) -> f64 {
        self.random::<f64>()
    }
    fn below(&mut self, n: usize) -> usize {
        self.random_range(0..n)
    }
}

/// Replays a recorded stream of draws (uniforms and integers, in order).
pub struct Replay {
    pub values: Vec<f64>,
    pub pos: usize,
}

impl Replay {
    fn next(&mut self) -> f64 {
        let v = self
            .values
            .get(self.pos)
            .copied()
            .unwrap_or_else(|| panic!("replay stream exhausted after {} draws", self.pos));
        self.pos += 1;
        v
    }
}

impl Draws for Replay {
    fn uniform(&mut self) -> f64 {
        self.next()
    }
    fn below(&mut self, _n: usize) -> usize {
        self.next() as usize
    }
}

/// Special ids the masking needs.
#[derive(Debug, Clone, Copy)]
pub struct MaskIds {
    pub mask: u32,
    pub unk: u32,
    pub vocab_size: usize,
}

/// `random_word` on one token: 15 % selected; of those 80 % `[MASK]`, 10 % a random vocabulary
/// token, 10 % kept. Returns the label (the original id) or −1.
fn mask_one<R: Draws + ?Sized>(tok: &mut u32, ids: MaskIds, rng: &mut R) -> i64 {
    let mut p = rng.uniform();
    if p < 0.15 {
        p /= 0.15;
        let original = *tok;
        if p < 0.8 {
            *tok = ids.mask;
        } else if p < 0.9 {
            *tok = rng.below(ids.vocab_size) as u32;
        }
        original as i64
    } else {
        -1
    }
}

/// Masked token modelling over an example's caption and tag word pieces (in that order, as the
/// reference draws). Returns labels for all `text_len + img_len` positions: the original id at
/// masked positions, −1 elsewhere ([CLS], [SEP], padding and every region).
pub fn mask_words_and_tags<R: Draws + ?Sized>(
    e: &mut Encoded,
    ids: MaskIds,
    text_len: usize,
    img_len: usize,
    rng: &mut R,
) -> Vec<i64> {
    let mut labels = vec![-1i64; text_len + img_len];
    let a = 1..1 + e.text_a_len;
    let b = e.text_a_len + 2..e.text_a_len + 2 + e.tags_len;
    for i in a.chain(b) {
        labels[i] = mask_one(&mut e.input_ids[i], ids, rng);
    }
    labels
}

/// Python's `round` (half to even), which the reference uses to count caption masks.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// The captioning masks on `input_ids` whose caption (with `[CLS]` and `[SEP]`) spans
/// `0..seq_a_len`: `min(max(round(mask_prob · seq_a_len), 1), max_masked)` positions drawn from
/// `1..seq_a_len` (so the final `[SEP]` can be chosen: that is how EOS is learned); each is
/// `[MASK]` with p 0.8, else a random id with p 0.5 (`randint(0, V)`: V itself means `[UNK]`),
/// else kept. Returns the sorted masked positions and their original ids.
pub fn mask_caption<R: Draws + ?Sized>(
    input_ids: &mut [u32],
    seq_a_len: usize,
    mask_prob: f64,
    max_masked: usize,
    ids: MaskIds,
    rng: &mut R,
) -> (Vec<usize>, Vec<u32>) {
    let mut cand: Vec<usize> = (1..seq_a_len).collect();
    // random.shuffle: for i in reversed(range(1, n)): j = randbelow(i + 1); swap.
    for i in (1..cand.len()).rev() {
        let j = rng.below(i + 1);
        cand.swap(i, j);
    }
    let n = (round_half_even(mask_prob * seq_a_len as f64).max(1.0) as usize)
        .min(max_masked)
        .min(cand.len());
    let mut pos: Vec<usize> = cand[..n].to_vec();
    pos.sort_unstable();
    let originals: Vec<u32> = pos.iter().map(|&p| input_ids[p]).collect();
    for &p in &pos {
        if rng.uniform() <= 0.8 {
            input_ids[p] = ids.mask;
        } else if rng.uniform() <= 0.5 {
            let i = rng.below(ids.vocab_size + 1);
            input_ids[p] = if i == ids.vocab_size {
                ids.unk
            } else {
                i as u32
            };
        }
    }
    (pos, originals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(0.15 * 10.0), 2.0); // 1.5000000000000002
        assert_eq!(round_half_even(0.15 * 30.0), 4.0); // 4.5 exactly
    }
}
