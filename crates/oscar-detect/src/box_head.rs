//! `roi_heads.box`: the region feature extractor (`ResNet50Conv5ROIFeatureExtractor`: the
//! Pooler's legacy ROIAlign at 1/16, then res5) and `FastRCNNPredictor` (average pool, class
//! scores, per-class box deltas). Regions go through res5 in chunks to bound memory
//! (300 regions at full size would hold ~2.4 GB of activations at once).

use crate::backbone::Res5Head;
use crate::boxes::Box4;
use crate::config::DetectorConfig;
use crate::error::Result;
use crate::roi_align::roi_align;
use crate::weights::Weights;
use candle_core::Tensor;

/// Regions per res5 pass.
const CHUNK: usize = 32;

/// `roi_heads.box.feature_extractor`.
pub struct BoxFeatureExtractor {
    head: Res5Head,
    resolution: usize,
    spatial_scale: f32,
}

impl BoxFeatureExtractor {
    pub fn load(w: &Weights, cfg: &DetectorConfig) -> Result<Self> {
        Ok(BoxFeatureExtractor {
            head: Res5Head::load(w, cfg)?,
            resolution: cfg.pooler_resolution,
            spatial_scale: 1.0 / cfg.anchor_stride as f32,
        })
    }

    /// The pooled 14×14 regions of C4, `[R, C, 14, 14]`.
    pub fn pool(&self, c4: &Tensor, boxes: &[Box4]) -> Result<Tensor> {
        roi_align(c4, boxes, self.resolution, self.spatial_scale)
    }

    /// Region features `[R, 2048]`: pool, res5, 7×7 average.
    pub fn forward(&self, c4: &Tensor, boxes: &[Box4]) -> Result<Tensor> {
        let mut parts = Vec::new();
        for chunk in boxes.chunks(CHUNK) {
            let pooled = self.pool(c4, chunk)?;
            parts.push(self.head.forward(&pooled)?);
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, 0), candle_core::DType::F32, c4.device())?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// res5 and the average pool on regions already pooled (a stage-wise test's input).
    pub fn head(&self, pooled: &Tensor) -> Result<Tensor> {
        self.head.forward(pooled)
    }
}

/// A `Linear` layer: `y = x Wᵀ + b`.
pub struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn load(w: &Weights, name: &str, din: usize, dout: usize) -> Result<Self> {
        Ok(Linear {
            weight_t: w
                .get(&format!("{name}.weight"), &[dout, din])?
                .t()?
                .contiguous()?,
            bias: w.get(&format!("{name}.bias"), &[dout])?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight_t)?.broadcast_add(&self.bias)?)
    }
}

/// `roi_heads.box.predictor` (`FastRCNNPredictor`).
pub struct FastRcnnPredictor {
    cls_score: Linear,
    /// Absent when the configuration ignores box regression (it is never computed then).
    bbox_pred: Option<Linear>,
}

impl FastRcnnPredictor {
    pub fn load(w: &Weights, cfg: &DetectorConfig) -> Result<Self> {
        let d = cfg.feature_dim();
        let bbox_pred = if cfg.ignore_box_regression {
            None
        } else {
            Some(Linear::load(
                w,
                "roi_heads.box.predictor.bbox_pred",
                d,
                cfg.num_classes * 4,
            )?)
        };
        Ok(FastRcnnPredictor {
            cls_score: Linear::load(w, "roi_heads.box.predictor.cls_score", d, cfg.num_classes)?,
            bbox_pred,
        })
    }

    /// Class logits `[R, K]` from region features `[R, 2048]`.
    pub fn class_logits(&self, features: &Tensor) -> Result<Tensor> {
        self.cls_score.forward(features)
    }

    /// Box deltas `[R, 4K]`, when box regression is on.
    pub fn box_deltas(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.bbox_pred
            .as_ref()
            .map(|l| l.forward(features))
            .transpose()
    }
}
