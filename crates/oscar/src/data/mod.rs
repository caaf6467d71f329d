//! Data: random-access readers for the files users have (TSV + `.lineidx`, region features,
//! detector labels, caption / QA / NLVR2 JSON) and the tensorization into model inputs.

pub mod attention_mask;
pub mod caption;
pub mod check;
pub mod convert;
pub mod corpus;
pub mod detections;
pub mod features;
pub mod items;
pub mod masking;
pub mod shard;
pub mod tensorize;
pub mod text;
pub mod tsv;
