//! Region features in the formats users have (oscar-spec §2.3, §4):
//! - VinVL `features.tsv`: `id \t num_boxes \t base64(float32[num_boxes·dim])`, with
//!   `imageid2idx.json` (id → row) or a scan of the first column;
//! - Oscar captioning `*.feature.tsv`: `id \t {"num_boxes": N, "features": "<base64>"}`;
//! - torch-pickle dicts `{id: FloatTensor[N, 2054]}` (`*_img_frcnn_feats.pt`), via the checkpoint
//!   reader;
//! - scene_graph_benchmark `predictions.tsv` with a 2048-d `feature` per object: the 6 box
//!   dims `[x1/W, y1/H, x2/W, y2/H, w/W, h/H]` are appended (what users otherwise do by hand).
//!
//! Every value is checked: width, counts, base64, NaN/Inf.

use super::tsv::TsvFile;
use crate::error::{Error, Result};
use base64::Engine;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The region features of one image: `num_boxes` rows of `dim` floats.
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    pub num_boxes: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

/// Decodes base64 float32 features, checking every count; `what` prefixes the error.
pub fn decode_features(
    b64: &str,
    num_boxes: Option<usize>,
    dim: usize,
    what: &str,
) -> std::result::Result<Regions, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("{what}: bad base64 ({e})"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "{what}: {} bytes is not a whole number of float32 values",
            bytes.len()
        ));
    }
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    regions_from(data, num_boxes, dim, what)
}

/// Checks a flat feature vector against `dim` (and `num_boxes` when the file states it).
pub fn regions_from(
    data: Vec<f32>,
    num_boxes: Option<usize>,
    dim: usize,
    what: &str,
) -> std::result::Result<Regions, String> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        return Err(format!("{what}: {} values is not a whole number of boxes of {dim} (wrong feature width? expected img_feature_dim = {dim})", data.len()));
    }
    let n = data.len() / dim;
    if let Some(nb) = num_boxes {
        if nb != n {
            return Err(format!("{what}: num_boxes says {nb} but the features hold {n} boxes of {dim} values (wrong feature width?)"));
        }
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "{what}: non-finite value {} at box {}, dimension {}",
            data[i],
            i / dim,
            i % dim
        ));
    }
    Ok(Regions {
        num_boxes: n,
        dim,
        data,
    })
}

/// A source of region features by image id.
pub enum FeatureStore {
    /// `features.tsv` (either row format), opened for random access.
    Tsv {
        tsv: TsvFile,
        keys: HashMap<String, usize>,
        dim: usize,
    },
    /// Everything in memory (torch-pickle dicts are read whole, as torch.load does).
    Memory {
        path: PathBuf,
        map: HashMap<String, Regions>,
        dim: usize,
    },
}

impl FeatureStore {
    /// Opens a feature file by its kind: `.pt`/`.pth`/`.bin` as a torch dict, else a TSV.
    pub fn open(path: &Path, dim: usize) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("pt" | "pth" | "bin") => Self::open_torch_dict(path, dim),
            _ => Self::open_tsv(path, dim),
        }
    }

    /// A features TSV; ids from `imageid2idx.json` next to it, else from the first column.
    pub fn open_tsv(path: &Path, dim: usize) -> Result<Self> {
        let tsv = TsvFile::open(path)?;
        let map_path = path.with_file_name("imageid2idx.json");
        let keys = if map_path.exists() {
            let text = std::fs::read_to_string(&map_path).map_err(|e| Error::io(&map_path, e))?;
            let raw: HashMap<String, usize> = serde_json::from_str(&text).map_err(|e| {
                Error::bad_file(&map_path, format!("expected {{image id: row index}}: {e}"))
            })?;
            if let Some((k, i)) = raw.iter().find(|(_, &i)| i >= tsv.num_rows()) {
                return Err(Error::bad_file(
                    &map_path,
                    format!(
                        "image {k} points at row {i}, but {} has {} rows",
                        path.display(),
                        tsv.num_rows()
                    ),
                ));
            }
            raw
        } else {
            tsv.key_index()?
        };
        Ok(FeatureStore::Tsv { tsv, keys, dim })
    }

    /// A torch-pickle dict `{id: FloatTensor[N, dim]}` (ids may be ints or strings).
    pub fn open_torch_dict(path: &Path, dim: usize) -> Result<Self> {
        let list = crate::checkpoint::torch_pickle::read_torch_file(path)?;
        let mut map = HashMap::with_capacity(list.len());
        for (k, t) in list {
            let dims = t.dims().to_vec();
            if dims.len() != 2 {
                return Err(Error::bad_file(
                    path,
                    format!("image {k}: tensor of shape {dims:?}, expected [num_boxes, {dim}]"),
                ));
            }
            let data = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let r = regions_from(data, Some(dims[0]), dim, &format!("image {k}"))
                .map_err(|e| Error::bad_file(path, e))?;
            map.insert(k, r);
        }
        Ok(FeatureStore::Memory {
            path: path.to_path_buf(),
            map,
            dim,
        })
    }

    pub fn dim(&self) -> usize {
        match self {
            FeatureStore::Tsv { dim, .. } | FeatureStore::Memory { dim, .. } => *dim,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            FeatureStore::Tsv { keys, .. } => keys.len(),
            FeatureStore::Memory { map, .. } => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image ids, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = match self {
            FeatureStore::Tsv { keys, .. } => keys.keys().cloned().collect(),
            FeatureStore::Memory { map, .. } => map.keys().cloned().collect(),
        };
        k.sort();
        k
    }

    /// Whether the file has features for image `key`.
    pub fn contains(&self, key: &str) -> bool {
        match self {
            FeatureStore::Tsv { keys, .. } => keys.contains_key(key),
            FeatureStore::Memory { map, .. } => map.contains_key(key),
        }
    }

    /// The regions of image `key`.
    pub fn get(&self, key: &str) -> Result<Regions> {
        match self {
            FeatureStore::Memory { path, map, .. } => map
                .get(key)
                .cloned()
                .ok_or_else(|| Error::bad_file(path, format!("no features for image {key}"))),
            FeatureStore::Tsv { tsv, keys, dim } => {
                let &row = keys.get(key).ok_or_else(|| {
                    Error::bad_file(tsv.path(), format!("no features for image {key}"))
                })?;
                let fields = tsv.row(row)?;
                let at = format!("row {}", row + 1);
                parse_feature_row(&fields, *dim, &at, key)
                    .map_err(|e| Error::bad_file(tsv.path(), e))
            }
        }
    }
}

/// Parses one features row in either of the two layouts.
pub fn parse_feature_row(
    fields: &[String],
    dim: usize,
    at: &str,
    key: &str,
) -> std::result::Result<Regions, String> {
    if fields.first().map(String::as_str) != Some(key) {
        return Err(format!(
            "{at}: holds image {:?}, expected {key} (index out of date?)",
            fields.first()
        ));
    }
    match fields.len() {
        3 => {
            let n: usize = fields[1]
                .trim()
                .parse()
                .map_err(|_| format!("{at}: num_boxes {:?} is not a count", fields[1]))?;
            decode_features(&fields[2], Some(n), dim, at)
        }
        2 => {
            #[derive(serde::Deserialize)]
            struct Row {
                num_boxes: Option<usize>,
                features: String,
            }
            let r: Row = serde_json::from_str(&fields[1])
                .map_err(|e| format!("{at}: expected {{\"num_boxes\", \"features\"}}: {e}"))?;
            decode_features(&r.features, r.num_boxes, dim, at)
        }
        n => Err(format!(
            "{at}: {n} columns, expected `id<TAB>num_boxes<TAB>base64` or `id<TAB>{{json}}`"
        )),
    }
}

/// Writes regions as a VinVL `features.tsv` (`id \t num_boxes \t base64`) with its `.lineidx`
/// and `imageid2idx.json`, each file atomically: the format every reader here serves.
pub fn write_feature_tsv(dir: &Path, items: &[(String, Regions)]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut text = String::new();
    let mut idx = String::new();
    let mut map = std::collections::BTreeMap::new();
    for (i, (k, r)) in items.iter().enumerate() {
        if k.contains(['\t', '\n']) {
            return Err(Error::Invalid(format!(
                "image id {k:?} contains a tab or newline"
            )));
        }
        idx.push_str(&format!("{}\n", text.len()));
        let bytes: Vec<u8> = r.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        text.push_str(&format!(
            "{k}\t{}\t{}\n",
            r.num_boxes,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ));
        map.insert(k.clone(), i);
    }
    let tsv = dir.join("features.tsv");
    crate::checkpoint::write_atomic(&tsv, text.as_bytes())?;
    crate::checkpoint::write_atomic(&dir.join("features.lineidx"), idx.as_bytes())?;
    crate::checkpoint::write_atomic(
        &dir.join("imageid2idx.json"),
        serde_json::to_string(&map)
            .map_err(|e| Error::Invalid(e.to_string()))?
            .as_bytes(),
    )?;
    Ok(tsv)
}

/// One detection of a scene_graph_benchmark / VinVL `predictions.tsv` row.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Detection {
    pub class: String,
    #[serde(default)]
    pub conf: Option<f32>,
    #[serde(default)]
    pub rect: Option<[f32; 4]>,
    /// base64 float32 detector feature (2048-d), present when the detector was run with features.
    #[serde(default)]
    pub feature: Option<String>,
}

/// A predictions / label row: `{"image_h", "image_w", "objects": [...]}` or a bare list.
#[derive(Debug, Clone)]
pub struct ImageDetections {
    pub image_h: Option<f32>,
    pub image_w: Option<f32>,
    pub objects: Vec<Detection>,
}

/// Parses the JSON column of a predictions / `*.label.tsv` row.
pub fn parse_detections(json: &str, at: &str) -> std::result::Result<ImageDetections, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Row {
        Full {
            image_h: Option<f32>,
            image_w: Option<f32>,
            objects: Vec<Detection>,
        },
        Bare(Vec<Detection>),
    }
    match serde_json::from_str::<Row>(json) {
        Ok(Row::Full { image_h, image_w, objects }) => Ok(ImageDetections { image_h, image_w, objects }),
        Ok(Row::Bare(objects)) => Ok(ImageDetections { image_h: None, image_w: None, objects }),
        Err(e) => Err(format!("{at}: expected {{\"image_h\", \"image_w\", \"objects\": [{{\"class\", \"conf\", \"rect\"}}]}} or a list of objects: {e}")),
    }
}

/// The 6 box dimensions VinVL appends to a region's detector feature: `[x1/W, y1/H, x2/W, y2/H,
/// w/W, h/H]` for a box in pixels of a `w × h` image.
pub fn box_dims([x1, y1, x2, y2]: [f32; 4], w: f32, h: f32) -> [f32; 6] {
    [x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) / w, (y2 - y1) / h]
}

impl ImageDetections {
    /// The detector-feature regions with the 6 box dims appended: `[feature(det_dim), x1/W, y1/H,
    /// x2/W, y2/H, w/W, h/H]`, so `det_dim + 6` values per box.
    pub fn regions_with_boxes(
        &self,
        det_dim: usize,
        at: &str,
    ) -> std::result::Result<Regions, String> {
        let (h, w) = match (self.image_h, self.image_w) {
            (Some(h), Some(w)) if h > 0.0 && w > 0.0 => (h, w),
            _ => {
                return Err(format!(
                    "{at}: image_h and image_w (positive) are needed to normalise the boxes"
                ))
            }
        };
        let mut data = Vec::with_capacity(self.objects.len() * (det_dim + 6));
        for (i, o) in self.objects.iter().enumerate() {
            let f = o
                .feature
                .as_ref()
                .ok_or_else(|| format!("{at}: object {i} ({}) has no `feature`", o.class))?;
            let r = decode_features(f, Some(1), det_dim, &format!("{at}: object {i} feature"))?;
            let [x1, y1, x2, y2] = o
                .rect
                .ok_or_else(|| format!("{at}: object {i} ({}) has no `rect`", o.class))?;
            data.extend_from_slice(&r.data);
            data.extend_from_slice(&box_dims([x1, y1, x2, y2], w, h));
        }
        regions_from(data, Some(self.objects.len()), det_dim + 6, at)
    }

    /// Object tags as the reference joins them: class names of the objects at or above
    /// `min_conf`, optionally without repeats (first occurrence kept), space-separated.
    pub fn tags(&self, min_conf: f32, dedup: bool) -> String {
        let mut seen = std::collections::HashSet::new();
        self.objects
            .iter()
            .filter(|o| o.conf.is_none_or(|c| c >= min_conf))
            .filter(|o| !dedup || seen.insert(o.class.clone()))
            .map(|o| o.class.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &[f32]) -> String {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn decode_checks_every_count() {
        let r = decode_features(&b64(&[1.0, 2.0, 3.0, 4.0]), Some(2), 2, "row 1").unwrap();
        assert_eq!(r.num_boxes, 2);
        assert!(decode_features(&b64(&[1.0, 2.0, 3.0]), None, 2, "row 1")
            .unwrap_err()
            .contains("wrong feature width"));
        assert!(decode_features(&b64(&[1.0, 2.0]), Some(2), 2, "row 1")
            .unwrap_err()
            .contains("num_boxes says 2"));
        assert!(decode_features("!!notbase64", None, 2, "row 1")
            .unwrap_err()
            .contains("bad base64"));
        assert!(decode_features(&b64(&[1.0, f32::NAN]), None, 2, "row 3")
            .unwrap_err()
            .contains("row 3: non-finite value NaN at box 0, dimension 1"));
    }

    #[test]
    fn detections_give_tags_and_box_dims() {
        let j = format!(
            r#"{{"image_h": 100, "image_w": 200, "objects": [{{"class": "dog", "conf": 0.9, "rect": [20, 10, 120, 60], "feature": "{}"}}, {{"class": "dog", "conf": 0.5, "rect": [0, 0, 200, 100], "feature": "{}"}}, {{"class": "cat", "conf": 0.1, "rect": [0, 0, 1, 1], "feature": "{}"}}]}}"#,
            b64(&[1.0, 2.0]),
            b64(&[3.0, 4.0]),
            b64(&[5.0, 6.0])
        );
        let d = parse_detections(&j, "row 1").unwrap();
        assert_eq!(d.tags(0.2, false), "dog dog");
        assert_eq!(d.tags(0.0, true), "dog cat");
        let r = d.regions_with_boxes(2, "row 1").unwrap();
        assert_eq!(r.dim, 8);
        assert_eq!(&r.data[..8], &[1.0, 2.0, 0.1, 0.1, 0.6, 0.6, 0.5, 0.5]);
        let bare =
            parse_detections(r#"[{"class": "person", "rect": [0, 0, 1, 1]}]"#, "row 2").unwrap();
        assert_eq!(bare.tags(0.5, true), "person");
        assert!(bare
            .regions_with_boxes(2, "row 2")
            .unwrap_err()
            .contains("image_h"));
        assert!(parse_detections("{\"objects\": 3}", "row 9")
            .unwrap_err()
            .starts_with("row 9"));
    }
}
