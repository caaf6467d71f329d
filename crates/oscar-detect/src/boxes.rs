//! Box arithmetic of maskrcnn-benchmark (`modeling/box_coder.py`, `structures/bounding_box.py`,
//! `layers/nms.py`): the "+1 pixel" convention throughout — a box `[x1, y1, x2, y2]` covers
//! `x2 - x1 + 1` pixels — which torchvision's versions drop. All in f32, as the reference.

/// `[x1, y1, x2, y2]` in pixels.
pub type Box4 = [f32; 4];

/// `BoxCoder.decode`: deltas `(dx, dy, dw, dh)` divided by `weights`, `dw, dh` clamped at
/// `log(1000/16)`, applied to `anchor`.
pub fn decode(delta: [f32; 4], anchor: Box4, weights: [f32; 4]) -> Box4 {
    let clip = (1000.0f64 / 16.0).ln() as f32;
    let w = anchor[2] - anchor[0] + 1.0;
    let h = anchor[3] - anchor[1] + 1.0;
    let cx = anchor[0] + 0.5 * w;
    let cy = anchor[1] + 0.5 * h;
    let dx = delta[0] / weights[0];
    let dy = delta[1] / weights[1];
    let dw = (delta[2] / weights[2]).min(clip);
    let dh = (delta[3] / weights[3]).min(clip);
    let pcx = dx * w + cx;
    let pcy = dy * h + cy;
    let pw = dw.exp() * w;
    let ph = dh.exp() * h;
    [
        pcx - 0.5 * pw,
        pcy - 0.5 * ph,
        pcx + 0.5 * pw - 1.0,
        pcy + 0.5 * ph - 1.0,
    ]
}

/// `BoxList.clip_to_image(remove_empty=False)` for an image of `(width, height)`.
pub fn clip(b: Box4, (width, height): (usize, usize)) -> Box4 {
    let (xm, ym) = (width as f32 - 1.0, height as f32 - 1.0);
    [
        b[0].clamp(0.0, xm),
        b[1].clamp(0.0, ym),
        b[2].clamp(0.0, xm),
        b[3].clamp(0.0, ym),
    ]
}

/// The NMS convention: maskrcnn's compiled kernels (+1 pixel; CPU suppresses at `>=`, CUDA at
/// `>`) or torchvision's (no +1, `>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmsRule {
    pub plus_one: bool,
    pub suppress_on_equal: bool,
}

impl NmsRule {
    pub fn iou(&self, a: &Box4, b: &Box4) -> f32 {
        let one = if self.plus_one { 1.0 } else { 0.0 };
        let area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one);
        let area_b = (b[2] - b[0] + one) * (b[3] - b[1] + one);
        let w = (a[2].min(b[2]) - a[0].max(b[0]) + one).max(0.0);
        let h = (a[3].min(b[3]) - a[1].max(b[1]) + one).max(0.0);
        let inter = w * h;
        inter / (area_a + area_b - inter)
    }

    fn suppresses(&self, iou: f32, thresh: f32) -> bool {
        if self.suppress_on_equal {
            iou >= thresh
        } else {
            iou > thresh
        }
    }

    /// Greedy NMS: kept indices in descending score order (ties: the lower index first).
    pub fn nms(&self, boxes: &[Box4], scores: &[f32], thresh: f32) -> Vec<usize> {
        let order = sort_desc(scores);
        let mut suppressed = vec![false; boxes.len()];
        let mut keep = Vec::new();
        for (pos, &i) in order.iter().enumerate() {
            if suppressed[i] {
                continue;
            }
            keep.push(i);
            for &j in &order[pos + 1..] {
                if !suppressed[j] && self.suppresses(self.iou(&boxes[i], &boxes[j]), thresh) {
                    suppressed[j] = true;
                }
            }
        }
        keep
    }

    /// The same greedy NMS over a precomputed IoU matrix (`iou[i·n + j]`), returning which
    /// indices survive — what `filter_results_peter` needs 1594 times over the same boxes.
    pub fn survivors(
        &self,
        iou: &[f32],
        n: usize,
        scores: &[f32],
        thresh: f32,
        alive: &mut [bool],
    ) {
        let order = sort_desc(scores);
        alive.iter_mut().for_each(|a| *a = true);
        for (pos, &i) in order.iter().enumerate() {
            if !alive[i] {
                continue;
            }
            let row = &iou[i * n..(i + 1) * n];
            for &j in &order[pos + 1..] {
                if alive[j] && self.suppresses(row[j], thresh) {
                    alive[j] = false;
                }
            }
        }
    }

    pub fn iou_matrix(&self, boxes: &[Box4]) -> Vec<f32> {
        let n = boxes.len();
        let mut m = vec![0f32; n * n];
        for i in 0..n {
            for j in i..n {
                let v = self.iou(&boxes[i], &boxes[j]);
                m[i * n + j] = v;
                m[j * n + i] = v;
            }
        }
        m
    }
}

/// Indices by descending value; ties keep ascending index (a stable sort).
pub fn sort_desc(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_one_changes_small_box_overlap() {
        let a = [0.0, 0.0, 1.0, 1.0];
        let b = [1.0, 1.0, 2.0, 2.0];
        let legacy = NmsRule {
            plus_one: true,
            suppress_on_equal: false,
        };
        let tv = NmsRule {
            plus_one: false,
            suppress_on_equal: false,
        };
        // legacy: each box is 2×2 pixels, they share one pixel: 1 / 7.
        assert!((legacy.iou(&a, &b) - 1.0 / 7.0).abs() < 1e-7);
        assert_eq!(tv.iou(&a, &b), 0.0);
    }

    #[test]
    fn decode_of_zero_deltas_is_the_anchor() {
        let anchor = [-15.0, -4.0, 30.0, 19.0];
        assert_eq!(decode([0.0; 4], anchor, [1.0; 4]), anchor);
    }
}
