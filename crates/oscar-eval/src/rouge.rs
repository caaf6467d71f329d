//! ROUGE-L as pycocoevalcap's `Rouge` (β = 1.2): the longest common subsequence against each
//! reference, best precision and best recall taken separately, then the F-measure.
//! Sentences are split on single spaces as the reference does (`"".split(" ")` is one token).

const BETA: f64 = 1.2;

/// Length of the longest common subsequence.
pub fn lcs(a: &[u32], b: &[u32]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut prev = vec![0usize; short.len() + 1];
    let mut cur = vec![0usize; short.len() + 1];
    for &x in long {
        for (j, &y) in short.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[short.len()]
}

/// ROUGE-L of one candidate against its references (all as `split(" ")` token ids).
pub fn rouge_l(cand: &[u32], refs: &[Vec<u32>]) -> f64 {
    let (mut p, mut r) = (0.0f64, 0.0f64);
    for rw in refs {
        let l = lcs(rw, cand) as f64;
        p = p.max(l / cand.len() as f64);
        r = r.max(l / rw.len() as f64);
    }
    if p != 0.0 && r != 0.0 {
        ((1.0 + BETA * BETA) * p * r) / (r + BETA * BETA * p)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_of_hand_examples() {
        assert_eq!(lcs(&[1, 2, 3, 4], &[1, 3, 4]), 3);
        assert_eq!(lcs(&[1, 2, 3], &[4, 5]), 0);
        assert_eq!(lcs(&[], &[1]), 0);
        assert_eq!(lcs(&[1, 2, 1, 2], &[2, 1, 2, 1]), 3);
    }
}
