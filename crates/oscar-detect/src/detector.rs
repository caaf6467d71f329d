//! The whole detector, scene_graph_benchmark's `AttrRCNN` at test time: backbone → RPN →
//! box head → post-processing → attribute head, on one image (batch size one, as the goldens
//! and the released features' extraction both ran).

use crate::attributes::{self, AttributePredictor, Attributes};
use crate::backbone::ResNetC4;
use crate::box_head::{BoxFeatureExtractor, FastRcnnPredictor};
use crate::boxes::{Box4, NmsRule};
use crate::config::DetectorConfig;
use crate::error::{Error, Result};
use crate::labelmap::LabelMap;
use crate::picture::{read_image, RgbImage};
use crate::postprocess::{postprocess, softmax_rows, Kept};
use crate::preprocess::{prepare, Prepared};
use crate::rpn::{self, Proposals, RpnHead};
use crate::weights::Weights;
use candle_core::Tensor;
use std::path::{Path, PathBuf};

/// One detected object, in the original image's pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `[x1, y1, x2, y2]` scaled back to the decoded image (`BoxList.resize`).
    pub rect: Box4,
    /// Class id (1-based; 0 is the background).
    pub label: usize,
    pub class: String,
    /// The class probability.
    pub conf: f32,
    /// Attribute ids with probabilities, best first (only those above the threshold).
    pub attributes: Attributes,
    /// The region's pooled res5 feature (2048-d for VinVL).
    pub feature: Vec<f32>,
}

/// A detector's answer for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    /// The decoded image's `(width, height)`, orientation applied.
    pub image_size: (usize, usize),
    /// Best first.
    pub objects: Vec<Object>,
}

/// Every intermediate of one image, for stage-by-stage checks against the reference.
pub struct Stages {
    pub prepared: Prepared,
    pub c4: Tensor,
    pub rpn_logits: Tensor,
    pub rpn_deltas: Tensor,
    pub proposals: Proposals,
    /// `[R, 2048]`, one row per proposal.
    pub box_features: Tensor,
    /// `[R, K]`.
    pub class_logits: Tensor,
    pub kept: Vec<Kept>,
    /// `[N, A]` for the kept detections (empty without an attribute head).
    pub attr_logits: Option<Tensor>,
}

/// VinVL's detector, loaded.
pub struct Detector {
    pub config: DetectorConfig,
    pub labels: LabelMap,
    backbone: ResNetC4,
    rpn: RpnHead,
    box_features: BoxFeatureExtractor,
    predictor: FastRcnnPredictor,
    attributes: Option<AttributePredictor>,
    unused_keys: Vec<String>,
}

/// The files of a detector folder.
pub struct DetectorFiles {
    pub weights: PathBuf,
    pub labelmap: PathBuf,
    pub config: Option<PathBuf>,
}

impl DetectorFiles {
    /// In `dir`: `model.safetensors` or the one `.pth`; `labelmap.json` or the one other
    /// `.json` with class names; `detector.json` when present.
    pub fn find(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut pth = Vec::new();
        let mut jsons = Vec::new();
        for e in entries {
            let p = e.map_err(|e| Error::io(dir, e))?.path();
            match p.extension().and_then(|s| s.to_str()) {
                Some("pth") | Some("pt") => pth.push(p),
                Some("json") if p.file_name().is_some_and(|n| n != "detector.json") => {
                    jsons.push(p)
                }
                _ => {}
            }
        }
        let st = dir.join("model.safetensors");
        let weights = if st.is_file() {
            st
        } else {
            match pth.len() {
                1 => pth.remove(0),
                0 => return Err(Error::bad_file(dir, "no detector weights: expected model.safetensors or a .pth (e.g. vinvl_vg_x152c4.pth)")),
                _ => return Err(Error::bad_file(dir, format!("several .pth files ({}); keep one, or convert it to model.safetensors", names(&pth)))),
            }
        };
        let lm = dir.join("labelmap.json");
        let labelmap = if lm.is_file() {
            lm
        } else {
            match jsons.len() {
                1 => jsons.remove(0),
                0 => return Err(Error::bad_file(dir, "no label map: expected labelmap.json or VG-SGG-dicts-vgoi6-clipped.json beside the weights")),
                _ => return Err(Error::bad_file(dir, format!("several JSON files ({}); name the label map labelmap.json", names(&jsons)))),
            }
        };
        let cfg = dir.join("detector.json");
        Ok(DetectorFiles {
            weights,
            labelmap,
            config: cfg.is_file().then_some(cfg),
        })
    }
}

fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| p.file_name()?.to_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Detector {
    /// Loads a detector folder (see [`DetectorFiles::find`]).
    pub fn load(dir: &Path) -> Result<Self> {
        let files = DetectorFiles::find(dir)?;
        let weights = Weights::from_file(&files.weights)?;
        let config = match &files.config {
            Some(p) => DetectorConfig::from_file(p)?,
            None => infer_config(&weights)?,
        };
        let labels = LabelMap::from_file(&files.labelmap)?;
        labels.check_counts(&files.labelmap, config.num_classes, config.num_attributes)?;
        Self::from_weights(config, labels, &weights)
    }

    pub fn from_weights(config: DetectorConfig, labels: LabelMap, w: &Weights) -> Result<Self> {
        config
            .validate()
            .map_err(|e| Error::Invalid(format!("detector configuration: {e}")))?;
        let attributes = if config.num_attributes > 0 {
            Some(AttributePredictor::load(w, &config)?)
        } else {
            None
        };
        let det = Detector {
            backbone: ResNetC4::load(w, &config)?,
            rpn: RpnHead::load(w, &config)?,
            box_features: BoxFeatureExtractor::load(w, &config)?,
            predictor: FastRcnnPredictor::load(w, &config)?,
            attributes,
            unused_keys: Vec::new(),
            config,
            labels,
        };
        Ok(Detector {
            unused_keys: w.unused(),
            ..det
        })
    }

    /// Checkpoint keys this configuration did not read (the anchors buffer, box regression
    /// when it is ignored, …).
    pub fn unused_keys(&self) -> &[String] {
        &self.unused_keys
    }

    fn nms_rule(&self) -> NmsRule {
        NmsRule {
            plus_one: self.config.nms_legacy_plus_one,
            suppress_on_equal: self.config.nms_suppress_on_equal,
        }
    }

    /// Decodes an image file and detects.
    pub fn detect_file(&self, path: &Path) -> Result<Detections> {
        let img = read_image(path, self.config.max_image_pixels)?;
        self.detect(&img)
    }

    /// Detects objects in a decoded image.
    pub fn detect(&self, img: &RgbImage) -> Result<Detections> {
        let prepared = prepare(img, &self.config)?;
        let stages = self.run(prepared)?;
        self.finish(&stages)
    }

    /// Every stage on a prepared image.
    pub fn run(&self, prepared: Prepared) -> Result<Stages> {
        let c4 = self.backbone(&prepared.tensor)?;
        let (rpn_logits, rpn_deltas) = self.rpn.forward(&c4)?;
        let proposals = rpn::proposals(
            &rpn_logits,
            &rpn_deltas,
            prepared.resized_size(),
            &self.config,
            self.nms_rule(),
        )?;
        let box_features = self.box_features.forward(&c4, &proposals.boxes)?;
        let (class_logits, kept) =
            self.classify(&box_features, &proposals.boxes, prepared.resized_size())?;
        let attr_logits = self.attribute_logits(&c4, &box_features, &kept)?;
        Ok(Stages {
            prepared,
            c4,
            rpn_logits,
            rpn_deltas,
            proposals,
            box_features,
            class_logits,
            kept,
            attr_logits,
        })
    }

    /// C4 features of a normalised `[1, 3, H, W]` image.
    pub fn backbone(&self, x: &Tensor) -> Result<Tensor> {
        self.backbone.forward(x)
    }

    /// The RPN head's raw outputs on C4.
    pub fn rpn_head(&self, c4: &Tensor) -> Result<(Tensor, Tensor)> {
        self.rpn.forward(c4)
    }

    /// Proposals from the RPN head's outputs for an image of `(width, height)`.
    pub fn proposals(
        &self,
        logits: &Tensor,
        deltas: &Tensor,
        size: (usize, usize),
    ) -> Result<Proposals> {
        rpn::proposals(logits, deltas, size, &self.config, self.nms_rule())
    }

    /// Region features `[R, 2048]` of boxes (resized-image pixels) on C4.
    pub fn region_features(&self, c4: &Tensor, boxes: &[Box4]) -> Result<Tensor> {
        self.box_features.forward(c4, boxes)
    }

    /// Class logits and the post-processed detections.
    pub fn classify(
        &self,
        features: &Tensor,
        proposals: &[Box4],
        size: (usize, usize),
    ) -> Result<(Tensor, Vec<Kept>)> {
        let k = self.config.num_classes;
        if proposals.is_empty() {
            return Ok((
                Tensor::zeros((0, k), candle_core::DType::F32, features.device())?,
                Vec::new(),
            ));
        }
        let logits = self.predictor.class_logits(features)?;
        let deltas = self.predictor.box_deltas(features)?;
        let deltas: Option<Vec<f32>> = deltas.map(|d| d.flatten_all()?.to_vec1()).transpose()?;
        let kept = self.postprocess(&logits, deltas.as_deref(), proposals, size)?;
        Ok((logits, kept))
    }

    /// The post-processing alone, from class logits `[R, K]`.
    pub fn postprocess(
        &self,
        logits: &Tensor,
        deltas: Option<&[f32]>,
        proposals: &[Box4],
        size: (usize, usize),
    ) -> Result<Vec<Kept>> {
        let probs = softmax_rows(&logits.flatten_all()?.to_vec1()?, self.config.num_classes);
        Ok(postprocess(
            proposals,
            &probs,
            deltas,
            size,
            &self.config,
            self.config.nms()?,
            self.nms_rule(),
        ))
    }

    /// Attribute logits of the kept detections. The reference re-pools the final boxes; when
    /// they are the proposals themselves (no box regression) those features are the rows
    /// already computed, so they are reused.
    pub fn attribute_logits(
        &self,
        c4: &Tensor,
        box_features: &Tensor,
        kept: &[Kept],
    ) -> Result<Option<Tensor>> {
        let Some(head) = &self.attributes else {
            return Ok(None);
        };
        if kept.is_empty() {
            return Ok(None);
        }
        let features = if self.config.ignore_box_regression {
            let rows: Vec<u32> = kept.iter().map(|d| d.proposal as u32).collect();
            let rows = Tensor::from_vec(rows, kept.len(), box_features.device())?;
            box_features.index_select(&rows, 0)?
        } else {
            let boxes: Vec<Box4> = kept.iter().map(|d| d.rect).collect();
            self.box_features.forward(c4, &boxes)?
        };
        let labels: Vec<usize> = kept.iter().map(|d| d.label).collect();
        Ok(Some(head.forward(&features, &labels)?))
    }

    /// Scales boxes back to the original image and attaches names, features and attributes.
    pub fn finish(&self, s: &Stages) -> Result<Detections> {
        let (ow, oh) = s.prepared.resized_size();
        let (w0, h0) = s.prepared.original_size;
        let (rx, ry) = (
            (w0 as f64 / ow as f64) as f32,
            (h0 as f64 / oh as f64) as f32,
        );
        let attrs: Vec<Attributes> = match &s.attr_logits {
            Some(l) => attributes::select(
                &l.flatten_all()?.to_vec1()?,
                self.config.num_attributes,
                &self.config,
            ),
            None => vec![Vec::new(); s.kept.len()],
        };
        let mut objects = Vec::with_capacity(s.kept.len());
        for (d, attributes) in s.kept.iter().zip(attrs) {
            let feature: Vec<f32> = s.box_features.get(d.proposal)?.to_vec1()?;
            let r = d.rect;
            objects.push(Object {
                rect: [r[0] * rx, r[1] * ry, r[2] * rx, r[3] * ry],
                label: d.label,
                class: self.labels.classes[d.label].clone(),
                conf: d.score,
                attributes,
                feature,
            });
        }
        Ok(Detections {
            image_size: (w0, h0),
            objects,
        })
    }
}

/// Without `detector.json`: VinVL's configuration with the class, attribute and block counts
/// read off the checkpoint (so a bottom-up-attention-sized label set or a shallower ResNeXt
/// works without a config file).
pub(crate) fn infer_config(w: &Weights) -> Result<DetectorConfig> {
    let mut cfg = DetectorConfig::default();
    if let Some(s) = w.shape("roi_heads.box.predictor.cls_score.weight") {
        cfg.num_classes = s[0];
    }
    cfg.num_attributes = w
        .shape("attribute.predictor.attr_score.weight")
        .map_or(0, |s| s[0]);
    for (i, blocks) in cfg.stage_blocks.iter_mut().enumerate() {
        let n = (0..)
            .take_while(|b| w.contains(&format!("backbone.body.layer{}.{b}.conv1.weight", i + 1)))
            .count();
        if n > 0 {
            *blocks = n;
        }
    }
    if let Some(s) = w.shape("backbone.body.stem.conv1.weight") {
        cfg.stem_out_channels = s[0];
    }
    Ok(cfg)
}
