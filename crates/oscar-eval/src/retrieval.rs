//! Recall@K for image–text retrieval from a score matrix, as Oscar's `run_retrieval.py`
//! evaluates it: image→text ranks the best-ranked ground-truth caption of each image; text→image
//! ranks each caption's image. The rank is the number of wrong candidates scoring at least as high
//! as the (best) ground truth: ties count against the ground truth, where numpy's unstable
//! `argsort` in the reference leaves them to chance.

use crate::error::{EvalError, Result};
use serde::Serialize;

#[derive(Debug, Serialize, PartialEq)]
pub struct RecallScores {
    /// Image → text R@1, R@5, R@10 (percent).
    pub i2t: [f64; 3],
    /// Text → image R@1, R@5, R@10 (percent).
    pub t2i: [f64; 3],
    /// Mean of the six.
    pub rsum_mean: f64,
}

/// `scores[i][j]` = score of image i with caption j; `caption_image[j]` = the image of caption j.
pub fn recall_at_k(scores: &[Vec<f32>], caption_image: &[usize]) -> Result<RecallScores> {
    let n_img = scores.len();
    let n_cap = caption_image.len();
    if n_img == 0 || n_cap == 0 {
        return Err(EvalError::Invalid(
            "recall@K needs at least one image and one caption".into(),
        ));
    }
    if let Some((i, row)) = scores.iter().enumerate().find(|(_, r)| r.len() != n_cap) {
        return Err(EvalError::Invalid(format!(
            "score row {i} has {} columns, expected {n_cap} captions",
            row.len()
        )));
    }
    if let Some((j, &img)) = caption_image.iter().enumerate().find(|(_, &i)| i >= n_img) {
        return Err(EvalError::Invalid(format!(
            "caption {j} belongs to image {img}, but there are {n_img} images"
        )));
    }
    if scores.iter().flatten().any(|s| s.is_nan()) {
        return Err(EvalError::Invalid("the score matrix holds NaN".into()));
    }
    let ks = [1usize, 5, 10];
    let mut i2t = [0usize; 3];
    let mut scored_images = 0usize;
    for (i, row) in scores.iter().enumerate() {
        let gts: Vec<usize> = (0..n_cap).filter(|&j| caption_image[j] == i).collect();
        if gts.is_empty() {
            continue;
        }
        scored_images += 1;
        let best = gts
            .iter()
            .map(|&g| row[g])
            .fold(f32::NEG_INFINITY, f32::max);
        let rank = (0..n_cap)
            .filter(|&j| caption_image[j] != i && row[j] >= best)
            .count();
        for (k, hit) in ks.iter().zip(i2t.iter_mut()) {
            if rank < *k {
                *hit += 1;
            }
        }
    }
    let mut t2i = [0usize; 3];
    for (j, &img) in caption_image.iter().enumerate() {
        let s = scores[img][j];
        let rank = (0..n_img)
            .filter(|&i| i != img && scores[i][j] >= s)
            .count();
        for (k, hit) in ks.iter().zip(t2i.iter_mut()) {
            if rank < *k {
                *hit += 1;
            }
        }
    }
    let pct = |h: [usize; 3], n: usize| h.map(|x| 100.0 * x as f64 / n as f64);
    let (i2t, t2i) = (pct(i2t, scored_images), pct(t2i, n_cap));
    Ok(RecallScores {
        i2t,
        t2i,
        rsum_mean: (i2t.iter().sum::<f64>() + t2i.iter().sum::<f64>()) / 6.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_matrix() {
        // 3 images, 2 captions each (caption j belongs to image j / 2).
        let scores = vec![
            vec![0.9, 0.1, 0.8, 0.2, 0.3, 0.3], // image 0: best GT 0.9 is rank 0
            vec![0.5, 0.6, 0.7, 0.1, 0.2, 0.0], // image 1: GTs 0.7/0.1 → best 0.7, beaten by none → rank 0
            vec![0.9, 0.9, 0.9, 0.9, 0.1, 0.9], // image 2: best GT 0.9 ties with 4 wrong → rank 4
        ];
        let cap_img = [0, 0, 1, 1, 2, 2];
        let r = recall_at_k(&scores, &cap_img).unwrap();
        assert_eq!(r.i2t, [200.0 / 3.0, 100.0, 100.0]);
        // t2i ranks: c0 (img0 .9 vs .5,.9) → 1; c1 (img0 .1 vs .6,.9) → 2; c2 (img1 .7 vs .8,.9) → 2;
        // c3 (img1 .1 vs .2,.9) → 2; c4 (img2 .1 vs .3,.2) → 2; c5 (img2 .9 vs .3,0) → 0.
        assert_eq!(r.t2i, [100.0 / 6.0, 100.0, 100.0]);
        assert!(recall_at_k(&scores, &[0, 0, 1, 1, 2, 9]).is_err());
        assert!(recall_at_k(&[vec![f32::NAN]], &[0]).is_err());
    }
}
