//! `oscar convert --detector`: a released detector folder (`.pth` + label map) rewritten as
//! `model.safetensors` (memory-mapped, no pickle; the duplicated attribute-head keys dropped),
//! `detector.json` (every setting written out) and `labelmap.json`, which [`Detector::load`]
//! reads faster and without guessing.

use crate::detector::{infer_config, Detector, DetectorFiles};
use crate::error::{Error, Result};
use crate::labelmap::LabelMap;
use crate::weights::Weights;
use crate::DetectorConfig;
use std::collections::HashMap;
use std::path::Path;

/// Converts `input` (a detector folder) into `output`; checks the result loads.
pub fn convert(input: &Path, output: &Path) -> Result<()> {
    let files = DetectorFiles::find(input)?;
    let weights = Weights::from_file(&files.weights)?;
    let config = match &files.config {
        Some(p) => DetectorConfig::from_file(p)?,
        None => infer_config(&weights)?,
    };
    let labels = LabelMap::from_file(&files.labelmap)?;
    // Build once: a checkpoint that does not fit fails here, before anything is written.
    Detector::from_weights(config.clone(), labels, &weights)?;
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    let tensors: HashMap<String, candle_core::Tensor> = weights
        .sorted()
        .into_iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    let st = output.join("model.safetensors");
    let tmp = output.join(".model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &st).map_err(|e| Error::io(&st, e))?;
    let json = serde_json::to_string_pretty(&config).map_err(|e| Error::Invalid(e.to_string()))?;
    write(&output.join("detector.json"), json.as_bytes())?;
    let lm = std::fs::read(&files.labelmap).map_err(|e| Error::io(&files.labelmap, e))?;
    write(&output.join("labelmap.json"), &lm)?;
    Detector::load(output).map(|_| ())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
