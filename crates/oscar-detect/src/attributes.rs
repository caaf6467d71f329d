//! The attribute head, scene_graph_benchmark's `attribute_head`: `AttributeRCNNPredictor`
//! (the region's pooled res5 feature concatenated with an embedding of its detected class →
//! `fc_attr` + ReLU → `attr_score`) and `AttributePostProcessor.filter_results` (softmax,
//! "no attribute" and scores ≤ threshold zeroed, the per-image cap, top `max_attr_per_obj`).

use crate::box_head::Linear;
use crate::config::DetectorConfig;
use crate::error::Result;
use crate::weights::Weights;
use candle_core::{Device, Tensor};

/// `attribute.predictor`.
pub struct AttributePredictor {
    cls_embedding: Tensor,
    fc_attr: Linear,
    attr_score: Linear,
}

impl AttributePredictor {
    pub fn load(w: &Weights, cfg: &DetectorConfig) -> Result<Self> {
        let p = "attribute.predictor";
        Ok(AttributePredictor {
            cls_embedding: w.get(
                &format!("{p}.cls_embedding.weight"),
                &[cfg.num_classes, cfg.cls_emd_dim],
            )?,
            fc_attr: Linear::load(
                w,
                &format!("{p}.fc_attr"),
                cfg.feature_dim() + cfg.cls_emd_dim,
                cfg.attr_emd_dim,
            )?,
            attr_score: Linear::load(
                w,
                &format!("{p}.attr_score"),
                cfg.attr_emd_dim,
                cfg.num_attributes,
            )?,
        })
    }

    /// Attribute logits `[N, A]` for region features `[N, 2048]` with detected `labels`.
    pub fn forward(&self, features: &Tensor, labels: &[usize]) -> Result<Tensor> {
        let ids: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let ids = Tensor::from_vec(ids, labels.len(), &Device::Cpu)?;
        let emb = self.cls_embedding.index_select(&ids, 0)?;
        let x = Tensor::cat(&[features, &emb], 1)?;
        let h = self.fc_attr.forward(&x)?.relu()?;
        self.attr_score.forward(&h)
    }
}

/// One region's attributes: `(id, probability)`, best first, probabilities > 0 only.
pub type Attributes = Vec<(usize, f32)>;

/// `filter_results` on logits `[N, A]` (row-major).
pub fn select(logits: &[f32], a: usize, cfg: &DetectorConfig) -> Vec<Attributes> {
    let mut probs = crate::postprocess::softmax_rows(logits, a);
    for row in probs.chunks_exact_mut(a) {
        row[0] = 0.0;
        for p in row.iter_mut() {
            if *p <= cfg.attr_threshold {
                *p = 0.0;
            }
        }
    }
    let n = probs.iter().filter(|&&p| p > 0.0).count();
    if cfg.max_attr_per_img > 0 && n > cfg.max_attr_per_img {
        // kthvalue over every entry, zeros included (so in practice the cap rarely bites).
        let mut all = probs.clone();
        all.sort_by(f32::total_cmp);
        let kth = all[n - cfg.max_attr_per_img];
        probs
            .iter_mut()
            .filter(|p| **p < kth)
            .for_each(|p| *p = 0.0);
    }
    probs
        .chunks_exact(a)
        .map(|row| {
            let mut idx: Vec<usize> = (0..a).filter(|&i| row[i] > 0.0).collect();
            idx.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
            idx.truncate(cfg.max_attr_per_obj);
            idx.into_iter().map(|i| (i, row[i])).collect()
        })
        .collect()
}
