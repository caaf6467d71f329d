//! VinVL's object detector in Rust: scene_graph_benchmark's `AttrRCNN` (a ResNeXt-152 C4
//! Faster R-CNN with an attribute head) at test time, on candle, reading the released
//! `vinvl_vg_x152c4.pth` directly. A photo becomes boxes, class names, attributes and the
//! 2048-d region features Oscar reads. The behaviour follows detector-spec.md, checked stage by
//! stage against the reference's own modeling code (tests/detector_goldens.rs).

pub mod attributes;
pub mod backbone;
pub mod box_head;
pub mod boxes;
pub mod config;
pub mod convert;
pub mod detector;
pub mod error;
pub mod labelmap;
pub mod picture;
pub mod postprocess;
pub mod preprocess;
pub mod resize;
pub mod roi_align;
pub mod rpn;
pub mod weights;

pub use config::{DetectorConfig, NmsFilter};
pub use detector::{Detections, Detector, Object, Stages};
pub use error::{Error, Result};
pub use picture::{decode_image, read_image, RgbImage};
