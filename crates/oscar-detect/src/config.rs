//! The detector's configuration: the values of scene_graph_benchmark's
//! `sgg_configs/vgattr/vinvl_x152c4.yaml` merged with maskrcnn-benchmark's and
//! scene_graph_benchmark's defaults and the official extraction command's overrides
//! (detector-spec §1.4). `Default` is exactly that released setting; a `detector.json` beside
//! the weights overrides any subset of the keys.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which post-processing of the box head's scores (`MODEL.ROI_HEADS.NMS_FILTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NmsFilter {
    /// 0 — per-class threshold then per-class NMS (`filter_results`); a proposal may appear
    /// under several labels.
    PerClass,
    /// 1 — per-class NMS at 0.3 over all proposals, then each proposal's best surviving class
    /// (`filter_results_peter`, bottom-up-attention's rule; VinVL's released features).
    PeterAnderson,
    /// 2 — the best non-background class per proposal, one class-agnostic NMS
    /// (`filter_results_fast`).
    ClassAgnostic,
}

impl NmsFilter {
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            0 => Ok(NmsFilter::PerClass),
            1 => Ok(NmsFilter::PeterAnderson),
            2 => Ok(NmsFilter::ClassAgnostic),
            other => Err(Error::Invalid(format!(
                "nms_filter {other}: expected 0 (per class), 1 (Peter Anderson's, VinVL's) or 2 (class-agnostic)"
            ))),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            NmsFilter::PerClass => 0,
            NmsFilter::PeterAnderson => 1,
            NmsFilter::ClassAgnostic => 2,
        }
    }
}

/// The detector's hyper-parameters; field names follow the yaml keys they mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// `RESNETS.STEM_OUT_CHANNELS`.
    pub stem_out_channels: usize,
    /// Blocks of layer1..layer3 (`R-152-C4`: 3, 8, 36).
    pub stage_blocks: Vec<usize>,
    /// Blocks of the res5 RoI head (`layer4`; 3 in maskrcnn-benchmark).
    pub res5_blocks: usize,
    /// `RESNETS.NUM_GROUPS` (32 for X152-32x8d).
    pub num_groups: usize,
    /// `RESNETS.WIDTH_PER_GROUP` (8).
    pub width_per_group: usize,
    /// `RESNETS.RES2_OUT_CHANNELS` (256).
    pub res2_out_channels: usize,
    /// `RESNETS.BACKBONE_OUT_CHANNELS` (1024).
    pub backbone_out_channels: usize,
    /// `RESNETS.STRIDE_IN_1X1` (False: the stride sits on the 3×3 conv).
    pub stride_in_1x1: bool,
    /// `ROI_BOX_HEAD.NUM_CLASSES`, background included (1595).
    pub num_classes: usize,
    /// `ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES`, "no attribute" included (525); 0 = no attribute head.
    pub num_attributes: usize,
    /// `ROI_ATTRIBUTE_HEAD.CLS_EMD_DIM` (256).
    pub cls_emd_dim: usize,
    /// `ROI_ATTRIBUTE_HEAD.ATTR_EMD_DIM` (512).
    pub attr_emd_dim: usize,
    /// `RPN.ANCHOR_SIZES`.
    pub anchor_sizes: Vec<f64>,
    /// `RPN.ANCHOR_STRIDE` (16: C4's stride).
    pub anchor_stride: usize,
    /// `RPN.ASPECT_RATIOS`.
    pub aspect_ratios: Vec<f64>,
    /// `RPN.PRE_NMS_TOP_N_TEST` (6000).
    pub pre_nms_top_n: usize,
    /// `RPN.POST_NMS_TOP_N_TEST` (300).
    pub post_nms_top_n: usize,
    /// `RPN.NMS_THRESH` (0.7).
    pub rpn_nms_thresh: f32,
    /// `ROI_BOX_HEAD.POOLER_RESOLUTION` (14).
    pub pooler_resolution: usize,
    /// `INPUT.MIN_SIZE_TEST` (600).
    pub min_size_test: usize,
    /// `INPUT.MAX_SIZE_TEST` (1000).
    pub max_size_test: usize,
    /// `INPUT.PIXEL_MEAN`, BGR order, on 0..255 values.
    pub pixel_mean: [f32; 3],
    /// `ROI_HEADS.SCORE_THRESH` (0.2).
    pub score_thresh: f32,
    /// `ROI_HEADS.DETECTIONS_PER_IMG` (100).
    pub detections_per_img: usize,
    /// `ROI_HEADS.MIN_DETECTIONS_PER_IMG` (10).
    pub min_detections_per_img: usize,
    /// `ROI_HEADS.NMS_FILTER` as its number (1 in every official extraction command).
    pub nms_filter: u8,
    /// `ROI_HEADS.NMS` (0.5; filters 0 and 2 only — filter 1 hard-codes 0.3).
    pub roi_nms_thresh: f32,
    /// `TEST.IGNORE_BOX_REGRESSION` (True: the output boxes are the RPN's proposals).
    pub ignore_box_regression: bool,
    /// `ROI_ATTRIBUTE_HEAD.POSTPROCESS_ATTRIBUTES_THRESHOLD` (0.05).
    pub attr_threshold: f32,
    /// `ROI_ATTRIBUTE_HEAD.MAX_NUM_ATTR_PER_OBJ` (16).
    pub max_attr_per_obj: usize,
    /// `ROI_ATTRIBUTE_HEAD.MAX_NUM_ATTR_PER_IMG` (100).
    pub max_attr_per_img: usize,
    /// maskrcnn-benchmark's compiled NMS adds 1 pixel to widths and heights (areas
    /// `(x2-x1+1)(y2-y1+1)`), as the released features were made; torchvision's does not.
    pub nms_legacy_plus_one: bool,
    /// Suppress a box whose IoU equals the threshold (maskrcnn's CPU kernel: `>=`); otherwise
    /// only above it (its CUDA kernel and torchvision: `>`).
    pub nms_suppress_on_equal: bool,
    /// Refuse images with more pixels than this before decoding them (a decompression bomb
    /// or a mistake; 0 = no limit).
    pub max_image_pixels: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            stem_out_channels: 64,
            stage_blocks: vec![3, 8, 36],
            res5_blocks: 3,
            num_groups: 32,
            width_per_group: 8,
            res2_out_channels: 256,
            backbone_out_channels: 1024,
            stride_in_1x1: false,
            num_classes: 1595,
            num_attributes: 525,
            cls_emd_dim: 256,
            attr_emd_dim: 512,
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            anchor_stride: 16,
            aspect_ratios: vec![0.5, 1.0, 2.0],
            pre_nms_top_n: 6000,
            post_nms_top_n: 300,
            rpn_nms_thresh: 0.7,
            pooler_resolution: 14,
            min_size_test: 600,
            max_size_test: 1000,
            pixel_mean: [103.530, 116.280, 123.675],
            score_thresh: 0.2,
            detections_per_img: 100,
            min_detections_per_img: 10,
            nms_filter: 1,
            roi_nms_thresh: 0.5,
            ignore_box_regression: true,
            attr_threshold: 0.05,
            max_attr_per_obj: 16,
            max_attr_per_img: 100,
            nms_legacy_plus_one: true,
            nms_suppress_on_equal: false,
            max_image_pixels: 178_956_970,
        }
    }
}

impl DetectorConfig {
    /// Reads `detector.json` (any subset of the keys; the rest keep VinVL's values).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: DetectorConfig = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not a detector configuration: {e}")))?;
        cfg.validate().map_err(|e| Error::bad_file(path, e))?;
        Ok(cfg)
    }

    pub fn nms(&self) -> Result<NmsFilter> {
        NmsFilter::from_code(self.nms_filter)
    }

    /// Bottleneck channels of layer1 (`NUM_GROUPS × WIDTH_PER_GROUP`); doubled per stage.
    pub fn stage2_bottleneck(&self) -> usize {
        self.num_groups * self.width_per_group
    }

    /// Channels of the res5 head's output: the region feature's length (2048).
    pub fn feature_dim(&self) -> usize {
        self.res2_out_channels * 8
    }

    /// Anchors per feature-map location.
    pub fn anchors_per_location(&self) -> usize {
        self.anchor_sizes.len() * self.aspect_ratios.len()
    }

    /// Checks what would otherwise fail deep inside a forward pass.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("stem_out_channels", self.stem_out_channels),
            ("res5_blocks", self.res5_blocks),
            ("num_groups", self.num_groups),
            ("width_per_group", self.width_per_group),
            ("res2_out_channels", self.res2_out_channels),
            ("backbone_out_channels", self.backbone_out_channels),
            ("num_classes", self.num_classes),
            ("anchor_stride", self.anchor_stride),
            ("pre_nms_top_n", self.pre_nms_top_n),
            ("post_nms_top_n", self.post_nms_top_n),
            ("pooler_resolution", self.pooler_resolution),
            ("min_size_test", self.min_size_test),
            ("max_size_test", self.max_size_test),
            ("detections_per_img", self.detections_per_img),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(format!("{key} must be positive"));
            }
        }
        if self.stage_blocks.len() != 3 || self.stage_blocks.contains(&0) {
            return Err(format!(
                "stage_blocks {:?}: expected three positive block counts (layer1..layer3 of a C4 backbone)",
                self.stage_blocks
            ));
        }
        if self.backbone_out_channels != self.res2_out_channels * 4 {
            return Err(format!(
                "backbone_out_channels {} must be 4 × res2_out_channels ({}): C4 is layer3's output",
                self.backbone_out_channels, self.res2_out_channels
            ));
        }
        if self.num_classes < 2 {
            return Err("num_classes counts the background: at least 2".into());
        }
        if self.anchor_sizes.is_empty() || self.aspect_ratios.is_empty() {
            return Err("anchor_sizes and aspect_ratios must not be empty".into());
        }
        if self.min_detections_per_img > self.detections_per_img {
            return Err(format!(
                "min_detections_per_img {} exceeds detections_per_img {}",
                self.min_detections_per_img, self.detections_per_img
            ));
        }
        NmsFilter::from_code(self.nms_filter).map_err(|e| e.to_string())?;
        Ok(())
    }
}
