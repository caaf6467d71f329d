//! The box head's test-time post-processing, scene_graph_benchmark's
//! `modeling/roi_heads/box_head/inference.py` `PostProcessor`: class probabilities by softmax,
//! candidate boxes per class (the proposals themselves under `IGNORE_BOX_REGRESSION`, else the
//! decoded deltas with weights (10, 10, 5, 5)), clipped, then one of the three filters, with
//! the minimum-detections retry of `forward` for filters 0 and 1.

use crate::boxes::{clip, decode, sort_desc, Box4, NmsRule};
use crate::config::{DetectorConfig, NmsFilter};

/// One kept detection, in resized-image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// Which proposal it came from (its region feature's row).
    pub proposal: usize,
    /// Class id, 1..K-1.
    pub label: usize,
    pub score: f32,
    pub rect: Box4,
}

/// `F.softmax(logits, -1)` row by row, in f32.
pub fn softmax_rows(logits: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; logits.len()];
    for (row, dst) in logits.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = (v - max).exp();
            sum += *d;
        }
        dst.iter_mut().for_each(|d| *d /= sum);
    }
    out
}

/// The per-class candidate boxes: `boxes[r·K + j]`.
struct Candidates {
    boxes: Vec<Box4>,
    /// Every class shares its proposal's box (no regression).
    shared: bool,
}

impl Candidates {
    fn get(&self, r: usize, j: usize, k: usize) -> Box4 {
        if self.shared {
            self.boxes[r]
        } else {
            self.boxes[r * k + j]
        }
    }
}

/// Runs the configured filter. `probs` is `[R, K]` softmax output; `deltas` `[R, 4K]` when
/// box regression is on.
pub fn postprocess(
    proposals: &[Box4],
    probs: &[f32],
    deltas: Option<&[f32]>,
    image_size: (usize, usize),
    cfg: &DetectorConfig,
    filter: NmsFilter,
    rule: NmsRule,
) -> Vec<Kept> {
    let k = cfg.num_classes;
    let r = proposals.len();
    if r == 0 {
        return Vec::new();
    }
    let cands = match deltas {
        Some(d) if !cfg.ignore_box_regression => {
            let mut boxes = Vec::with_capacity(r * k);
            for (i, p) in proposals.iter().enumerate() {
                for j in 0..k {
                    let o = (i * k + j) * 4;
                    let delta = [d[o], d[o + 1], d[o + 2], d[o + 3]];
                    boxes.push(clip(decode(delta, *p, [10.0, 10.0, 5.0, 5.0]), image_size));
                }
            }
            Candidates {
                boxes,
                shared: false,
            }
        }
        _ => Candidates {
            boxes: proposals.iter().map(|b| clip(*b, image_size)).collect(),
            shared: true,
        },
    };
    match filter {
        NmsFilter::ClassAgnostic => filter_fast(&cands, probs, r, k, cfg, rule),
        NmsFilter::PerClass | NmsFilter::PeterAnderson => {
            let run = |thresh: f32| match filter {
                NmsFilter::PerClass => filter_per_class(&cands, probs, r, k, thresh, cfg, rule),
                _ => filter_peter(&cands, probs, r, k, thresh, cfg, rule),
            };
            let mut thresh = cfg.score_thresh;
            let mut kept = run(thresh);
            let mut tries = 0;
            while kept.len() < cfg.min_detections_per_img && tries < 10 {
                thresh /= 2.0;
                kept = run(thresh);
                tries += 1;
            }
            kept
        }
    }
}

/// NMS_FILTER 1 (`filter_results_peter`): per class, NMS at 0.3 over every proposal; each
/// proposal's best surviving class; sorted by that score; those ≥ threshold, at least
/// `min_detections_per_img`, at most `detections_per_img`.
fn filter_peter(
    c: &Candidates,
    probs: &[f32],
    r: usize,
    k: usize,
    thresh: f32,
    cfg: &DetectorConfig,
    rule: NmsRule,
) -> Vec<Kept> {
    let mut best = vec![(0f32, 0usize); r];
    let mut alive = vec![false; r];
    let shared_iou = c.shared.then(|| rule.iou_matrix(&c.boxes));
    let mut scores_j = vec![0f32; r];
    for j in 1..k {
        for (i, s) in scores_j.iter_mut().enumerate() {
            *s = probs[i * k + j];
        }
        match &shared_iou {
            Some(iou) => rule.survivors(iou, r, &scores_j, 0.3, &mut alive),
            None => {
                let boxes: Vec<Box4> = (0..r).map(|i| c.get(i, j, k)).collect();
                alive.iter_mut().for_each(|a| *a = false);
                for i in rule.nms(&boxes, &scores_j, 0.3) {
                    alive[i] = true;
                }
            }
        }
        // `(nms_mask * scores).max(1)`: the first maximal class wins ties.
        for i in 0..r {
            if alive[i] && scores_j[i] > best[i].0 {
                best[i] = (scores_j[i], j);
            }
        }
    }
    let cand: Vec<usize> = (0..r).filter(|&i| best[i].0 != 0.0).collect();
    let cand_scores: Vec<f32> = cand.iter().map(|&i| best[i].0).collect();
    let order = sort_desc(&cand_scores);
    let above = cand_scores.iter().filter(|&&s| s >= thresh).count();
    let n = if above < cfg.min_detections_per_img {
        cfg.min_detections_per_img
    } else {
        above.min(cfg.detections_per_img)
    };
    order
        .iter()
        .take(n)
        .map(|&o| {
            let i = cand[o];
            let (score, label) = best[i];
            Kept {
                proposal: i,
                label,
                score,
                rect: c.get(i, label, k),
            }
        })
        .collect()
}

/// NMS_FILTER 0 (`filter_results`): per class, scores above the threshold, NMS at
/// `roi_nms_thresh`; concatenated class by class; cut to `detections_per_img` by the
/// k-th smallest score (ties may keep more).
fn filter_per_class(
    c: &Candidates,
    probs: &[f32],
    r: usize,
    k: usize,
    thresh: f32,
    cfg: &DetectorConfig,
    rule: NmsRule,
) -> Vec<Kept> {
    let mut out = Vec::new();
    for j in 1..k {
        let inds: Vec<usize> = (0..r).filter(|&i| probs[i * k + j] > thresh).collect();
        if inds.is_empty() {
            continue;
        }
        let boxes: Vec<Box4> = inds.iter().map(|&i| c.get(i, j, k)).collect();
        let scores: Vec<f32> = inds.iter().map(|&i| probs[i * k + j]).collect();
        // Survivors in descending score order, as maskrcnn's CUDA kernel (the released features'
        // GPU extraction) and torchvision return them (its CPU kernel gave index order).
        let keep = rule.nms(&boxes, &scores, cfg.roi_nms_thresh);
        out.extend(keep.into_iter().map(|t| Kept {
            proposal: inds[t],
            label: j,
            score: scores[t],
            rect: boxes[t],
        }));
    }
    let limit = cfg.detections_per_img;
    if out.len() > limit && limit > 0 {
        let mut sorted: Vec<f32> = out.iter().map(|d| d.score).collect();
        sorted.sort_by(f32::total_cmp);
        let kth = sorted[out.len() - limit];
        out.retain(|d| d.score >= kth);
    }
    out
}

/// NMS_FILTER 2 (`filter_results_fast`): each proposal's best foreground class, one NMS at
/// `roi_nms_thresh` over those above 1 % of the threshold, sorted, between the minimum and
/// maximum counts. With regression, a proposal's box is the mean of its class boxes.
fn filter_fast(
    c: &Candidates,
    probs: &[f32],
    r: usize,
    k: usize,
    cfg: &DetectorConfig,
    rule: NmsRule,
) -> Vec<Kept> {
    let mut label = vec![0usize; r];
    let mut score = vec![0f32; r];
    for i in 0..r {
        let (mut bs, mut bl) = (f32::NEG_INFINITY, 1);
        for j in 1..k {
            if probs[i * k + j] > bs {
                bs = probs[i * k + j];
                bl = j;
            }
        }
        label[i] = bl;
        score[i] = bs;
    }
    let boxes: Vec<Box4> = (0..r)
        .map(|i| {
            if c.shared {
                c.boxes[i]
            } else {
                let mut m = [0f32; 4];
                for j in 0..k {
                    let b = c.get(i, j, k);
                    (0..4).for_each(|t| m[t] += b[t]);
                }
                m.map(|v| v / k as f32)
            }
        })
        .collect();
    let keep: Vec<usize> = (0..r)
        .filter(|&i| {
            let b = boxes[i];
            b[2] - b[0] >= 0.0 && b[3] - b[1] >= 0.0 && score[i] > cfg.score_thresh * 0.01
        })
        .collect();
    let kb: Vec<Box4> = keep.iter().map(|&i| boxes[i]).collect();
    let ks: Vec<f32> = keep.iter().map(|&i| score[i]).collect();
    let survivors: Vec<usize> = rule
        .nms(&kb, &ks, cfg.roi_nms_thresh)
        .into_iter()
        .map(|t| keep[t])
        .collect();
    let s_scores: Vec<f32> = survivors.iter().map(|&i| score[i]).collect();
    let order = sort_desc(&s_scores);
    let above = s_scores.iter().filter(|&&s| s >= cfg.score_thresh).count();
    let n = above
        .max(cfg.min_detections_per_img)
        .min(cfg.detections_per_img);
    order
        .iter()
        .take(n)
        .map(|&o| {
            let i = survivors[o];
            Kept {
                proposal: i,
                label: label[i],
                score: score[i],
                rect: boxes[i],
            }
        })
        .collect()
}
