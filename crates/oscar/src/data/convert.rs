//! Conversions of the region features users have into Oscar's format (`features.tsv` +
//! `.lineidx` + `imageid2idx.json`): Oscar's torch feature dicts (`*_img_frcnn_feats.pt`) and
//! scene_graph_benchmark / VinVL detector output (`predictions.tsv` with a base64 `feature` per
//! object), whose boxes become the 6 box dims VinVL appends — the step users otherwise do by hand.

use super::features::{parse_detections, write_feature_tsv, FeatureStore, Regions};
use super::tsv::TsvFile;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use base64::Engine;
use std::path::{Path, PathBuf};

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Converted {
    /// The `features.tsv` written (its `.lineidx` and `imageid2idx.json` beside it).
    pub path: PathBuf,
    pub images: usize,
    /// The detector's feature width, for detector output (the regions have 6 more values).
    pub detector_dim: Option<usize>,
    pub region_dim: usize,
}

/// The region width of a torch dict of `[num_boxes, D]` tensors keyed by image id — not a model:
/// every tensor 2-D with one width and no model-like key — or `None`.
pub fn feature_dict_width(ckpt: &Checkpoint) -> Option<usize> {
    let model_like = ckpt.tensors.keys().any(|k| {
        k.contains("embeddings")
            || k.contains("encoder.")
            || k.contains("weight")
            || k.contains("bias")
    });
    let mut widths = ckpt.tensors.values().map(|t| {
        if t.rank() == 2 {
            Some(t.dims()[1])
        } else {
            None
        }
    });
    let first = widths.next()??;
    (!model_like && widths.all(|w| w == Some(first))).then_some(first)
}

/// A torch feature dict of `dim`-wide regions to `output/features.tsv`.
pub fn torch_features_to_tsv(input: &Path, output: &Path, dim: usize) -> Result<Converted> {
    let store = FeatureStore::open_torch_dict(input, dim)?;
    let items: Vec<(String, Regions)> = store
        .keys()
        .into_iter()
        .map(|k| store.get(&k).map(|r| (k, r)))
        .collect::<Result<_>>()?;
    let path = write_feature_tsv(output, &items)?;
    Ok(Converted {
        path,
        images: items.len(),
        detector_dim: None,
        region_dim: dim,
    })
}

/// Detector output (`image_id \t {"image_h", "image_w", "objects": [{"rect", "feature", …}]}`)
/// to `output/features.tsv`; the detector width is read from the first feature.
pub fn detector_predictions_to_tsv(input: &Path, output: &Path) -> Result<Converted> {
    let tsv = TsvFile::open(input)?;
    let mut items = Vec::with_capacity(tsv.num_rows());
    let mut det_dim = None;
    for i in 0..tsv.num_rows() {
        let at = format!("{}: row {}", input.display(), i + 1);
        let f = tsv.row(i)?;
        if f.len() != 2 {
            return Err(Error::Invalid(format!(
                "{at}: {} columns, expected `image_id<TAB>json`",
                f.len()
            )));
        }
        let d = parse_detections(&f[1], &at).map_err(Error::Invalid)?;
        let dim = match det_dim {
            Some(d) => d,
            None => {
                let first = d.objects.iter().find_map(|o| o.feature.as_ref()).ok_or_else(|| Error::Invalid(format!("{at}: objects carry no `feature`: run the detector with feature output")))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(first.trim())
                    .map_err(|e| Error::Invalid(format!("{at}: bad base64 feature: {e}")))?;
                *det_dim.insert(bytes.len() / 4)
            }
        };
        items.push((
            f[0].clone(),
            d.regions_with_boxes(dim, &at).map_err(Error::Invalid)?,
        ));
    }
    let dim = det_dim.unwrap_or(0);
    let path = write_feature_tsv(output, &items)?;
    Ok(Converted {
        path,
        images: items.len(),
        detector_dim: Some(dim),
        region_dim: dim + 6,
    })
}
