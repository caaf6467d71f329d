//! The region proposal network on C4, mirroring maskrcnn-benchmark's `modeling/rpn`:
//! `AnchorGenerator` (`generate_anchors`, float64 then f32), `RPNHead` (a 3×3 conv + ReLU, then
//! 1×1 objectness logits and 1×1 box deltas), and `RPNPostProcessor` at test time — sigmoid,
//! top `pre_nms_top_n`, decode with weights (1,1,1,1), clip, NMS at `rpn_nms_thresh`, the
//! first `post_nms_top_n`.

use crate::backbone::{Conv2d, ConvSpec};
use crate::boxes::{clip, decode, sort_desc, Box4, NmsRule};
use crate::config::DetectorConfig;
use crate::error::Result;
use crate::weights::Weights;
use candle_core::Tensor;

/// `generate_anchors(stride, sizes, aspect_ratios)`: ratio-major, size-minor cell anchors
/// centred on the first `stride × stride` cell.
pub fn cell_anchors(stride: usize, sizes: &[f64], ratios: &[f64]) -> Vec<Box4> {
    let whctrs = |a: [f64; 4]| {
        let w = a[2] - a[0] + 1.0;
        let h = a[3] - a[1] + 1.0;
        (w, h, a[0] + 0.5 * (w - 1.0), a[1] + 0.5 * (h - 1.0))
    };
    let mk = |w: f64, h: f64, cx: f64, cy: f64| {
        [
            cx - 0.5 * (w - 1.0),
            cy - 0.5 * (h - 1.0),
            cx + 0.5 * (w - 1.0),
            cy + 0.5 * (h - 1.0),
        ]
    };
    let base = [0.0, 0.0, stride as f64 - 1.0, stride as f64 - 1.0];
    let (w, h, cx, cy) = whctrs(base);
    let mut out = Vec::new();
    for &r in ratios {
        // `_ratio_enum`, with numpy's round (half to even).
        let ws = (w * h / r).sqrt().round_ties_even();
        let hs = (ws * r).round_ties_even();
        let anchor = mk(ws, hs, cx, cy);
        let (aw, ah, acx, acy) = whctrs(anchor);
        for &s in sizes {
            let scale = s / stride as f64;
            let a = mk(aw * scale, ah * scale, acx, acy);
            out.push([a[0] as f32, a[1] as f32, a[2] as f32, a[3] as f32]);
        }
    }
    out
}

/// `rpn.head` (`RPNHead`, `SingleConvRPNHead`).
pub struct RpnHead {
    conv: Conv2d,
    cls_logits: Conv2d,
    bbox_pred: Conv2d,
}

/// Proposals in resized-image pixels, in the RPN's output order (descending objectness).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposals {
    pub boxes: Vec<Box4>,
    /// Sigmoid of the objectness logit.
    pub objectness: Vec<f32>,
}

impl RpnHead {
    pub fn load(w: &Weights, cfg: &DetectorConfig) -> Result<Self> {
        let c = cfg.backbone_out_channels;
        let a = cfg.anchors_per_location();
        let spec = |cout, k| ConvSpec {
            cin: c,
            cout,
            k,
            stride: 1,
            groups: 1,
        };
        Ok(RpnHead {
            conv: Conv2d::load_with_bias(w, "rpn.head.conv", spec(c, 3))?,
            cls_logits: Conv2d::load_with_bias(w, "rpn.head.cls_logits", spec(a, 1))?,
            bbox_pred: Conv2d::load_with_bias(w, "rpn.head.bbox_pred", spec(4 * a, 1))?,
        })
    }

    /// C4 `[1, C, H, W]` → (objectness logits `[1, A, H, W]`, deltas `[1, 4A, H, W]`).
    pub fn forward(&self, c4: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = self.conv.forward(c4)?.relu()?;
        Ok((self.cls_logits.forward(&t)?, self.bbox_pred.forward(&t)?))
    }
}

/// `RPNPostProcessor.forward_for_single_feature_map` for one image of `image_size`
/// `(width, height)`, from the head's raw outputs.
pub fn proposals(
    logits: &Tensor,
    deltas: &Tensor,
    image_size: (usize, usize),
    cfg: &DetectorConfig,
    rule: NmsRule,
) -> Result<Proposals> {
    let (_, a, h, w) = logits.dims4()?;
    let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let deltas: Vec<f32> = deltas.flatten_all()?.to_vec1()?;
    let cells = cell_anchors(cfg.anchor_stride, &cfg.anchor_sizes, &cfg.aspect_ratios);
    // Flat anchor order (`permute_and_flatten`): ((y·W + x)·A + a).
    let n = a * h * w;
    let plane = h * w;
    let mut scores = vec![0f32; n];
    for y in 0..h {
        for x in 0..w {
            for k in 0..a {
                let l = logits[k * plane + y * w + x];
                scores[(y * w + x) * a + k] = 1.0 / (1.0 + (-l).exp());
            }
        }
    }
    let top = cfg.pre_nms_top_n.min(n);
    let order = sort_desc(&scores);
    let mut boxes = Vec::with_capacity(top);
    let mut kept_scores = Vec::with_capacity(top);
    let stride = cfg.anchor_stride as f32;
    for &i in &order[..top] {
        let (cell, k) = (i / a, i % a);
        let (y, x) = (cell / w, cell % w);
        let (sx, sy) = (x as f32 * stride, y as f32 * stride);
        let c = cells[k];
        let anchor = [c[0] + sx, c[1] + sy, c[2] + sx, c[3] + sy];
        let d = |j: usize| deltas[(k * 4 + j) * plane + y * w + x];
        let b = clip(
            decode([d(0), d(1), d(2), d(3)], anchor, [1.0; 4]),
            image_size,
        );
        // `remove_small_boxes(min_size=0)`: widths with +1 must be ≥ 0.
        if b[2] - b[0] + 1.0 >= 0.0 && b[3] - b[1] + 1.0 >= 0.0 {
            boxes.push(b);
            kept_scores.push(scores[i]);
        }
    }
    let keep = rule.nms(&boxes, &kept_scores, cfg.rpn_nms_thresh);
    let keep = &keep[..keep.len().min(cfg.post_nms_top_n)];
    Ok(Proposals {
        boxes: keep.iter().map(|&i| boxes[i]).collect(),
        objectness: keep.iter().map(|&i| kept_scores[i]).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vinvl_cell_anchors_match_the_reference_table() {
        // detector-spec §2.3, from re-running maskrcnn-benchmark's generate_anchors.
        let want: [[f32; 4]; 15] = [
            [-15., -4., 30., 19.],
            [-38., -16., 53., 31.],
            [-84., -40., 99., 55.],
            [-176., -88., 191., 103.],
            [-360., -184., 375., 199.],
            [-8., -8., 23., 23.],
            [-24., -24., 39., 39.],
            [-56., -56., 71., 71.],
            [-120., -120., 135., 135.],
            [-248., -248., 263., 263.],
            [-3., -14., 18., 29.],
            [-14., -36., 29., 51.],
            [-36., -80., 51., 95.],
            [-80., -168., 95., 183.],
            [-168., -344., 183., 359.],
        ];
        let got = cell_anchors(16, &[32., 64., 128., 256., 512.], &[0.5, 1.0, 2.0]);
        assert_eq!(got, want.to_vec());
    }
}
