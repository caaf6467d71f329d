//! BLEU-1..4 as pycocoevalcap's `Bleu(4)` (BleuScorer with `option='closest'`): corpus-level
//! clipped n-gram precisions with the closest reference length (ties to the shorter), the
//! brevity penalty, and its per-image scores (cumulative products, `tiny`/`small` guards).

use crate::ngrams::{count, order, Counts};

const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// Statistics of one candidate against its references.
#[derive(Debug, Clone)]
pub struct BleuStats {
    pub testlen: usize,
    pub reflen: usize,
    pub guess: [usize; 4],
    pub correct: [usize; 4],
}

/// `cook_refs` + `cook_test`: clipped matches and the closest reference length.
pub fn stats(cand: &[u32], refs: &[Vec<u32>]) -> BleuStats {
    let ref_counts: Vec<Counts> = refs.iter().map(|r| count(r, 4)).collect();
    let ref_lens: Vec<usize> = refs.iter().map(Vec::len).collect();
    stats_from_counts(cand.len(), &count(cand, 4), &ref_lens, &ref_counts)
}

/// [`stats`] from n-gram counts computed once and shared with the other metrics.
pub fn stats_from_counts(
    testlen: usize,
    cand: &Counts,
    ref_lens: &[usize],
    refs: &[Counts],
) -> BleuStats {
    let maxcounts = Counts::max_of(refs);
    // min over (|l − testlen|, l): the closest length, the shorter on ties.
    let reflen = ref_lens
        .iter()
        .copied()
        .min_by_key(|&l| ((l as i64 - testlen as i64).abs(), l))
        .unwrap_or(0);
    let mut guess = [0; 4];
    for (k, g) in guess.iter_mut().enumerate() {
        *g = (testlen + 1).saturating_sub(k + 1);
    }
    let mut correct = [0; 4];
    for (g, c) in cand.iter() {
        correct[order(g) - 1] += c.min(maxcounts.get(g).unwrap_or(0)) as usize;
    }
    BleuStats {
        testlen,
        reflen,
        guess,
        correct,
    }
}

fn brevity(testlen: f64, reflen: f64) -> f64 {
    let ratio = (testlen + TINY) / (reflen + SMALL);
    if ratio < 1.0 {
        (1.0 - 1.0 / ratio).exp()
    } else {
        1.0
    }
}

/// The four cumulative BLEU scores from (summed) statistics.
fn scores(correct: &[usize; 4], guess: &[usize; 4], testlen: f64, reflen: f64) -> [f64; 4] {
    let mut out = [0.0; 4];
    let mut prod = 1.0;
    let bp = brevity(testlen, reflen);
    for k in 0..4 {
        prod *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        out[k] = prod.powf(1.0 / (k as f64 + 1.0)) * bp;
    }
    out
}

/// Corpus BLEU-1..4 and, per image, BLEU-1..4.
pub fn corpus_bleu(all: &[BleuStats]) -> ([f64; 4], Vec<[f64; 4]>) {
    let mut correct = [0; 4];
    let mut guess = [0; 4];
    let (mut testlen, mut reflen) = (0usize, 0usize);
    let mut per = Vec::with_capacity(all.len());
    for s in all {
        testlen += s.testlen;
        reflen += s.reflen;
        for k in 0..4 {
            correct[k] += s.correct[k];
            guess[k] += s.guess[k];
        }
        per.push(scores(
            &s.correct,
            &s.guess,
            s.testlen as f64,
            s.reflen as f64,
        ));
    }
    (scores(&correct, &guess, testlen as f64, reflen as f64), per)
}
