//! The pre-training corpus (oscar-spec §2.3; `oscar/datasets/oscar_tsv.py`): a dataset yaml
//! naming the corpus file and, per dataset, the label and feature directories; corpus rows
//! `img_info \t label_info \t text_a` where `img_info` is `ds_[chunk_]imgid`.

use super::features::{parse_detections, FeatureStore, Regions};
use super::tsv::TsvFile;
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Datasets whose features are split into chunk sub-directories.
const CHUNKED: [&str; 5] = ["googlecc", "sbu", "oi", "objects365", "tagoi"];

#[derive(Debug, serde::Deserialize)]
struct DatasetYaml {
    corpus: String,
    corpus_file: String,
    image_label_path: HashMap<String, String>,
    image_feature_path: HashMap<String, String>,
}

/// One corpus row.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusRow {
    pub dataset: String,
    pub chunk: Option<String>,
    pub image: String,
    /// `label_info` (contains `qa` for question-answer rows).
    pub label_info: String,
    pub text: String,
}

/// The corpus with lazily opened per-dataset feature and label files.
pub struct PretrainCorpus {
    pub rows: Vec<CorpusRow>,
    label_dirs: HashMap<String, PathBuf>,
    feature_dirs: HashMap<String, PathBuf>,
    dim: usize,
    features: RefCell<HashMap<PathBuf, std::rc::Rc<FeatureStore>>>,
    labels: RefCell<HashMap<String, std::rc::Rc<LabelFile>>>,
}

/// A detector label file and its key → row index.
type LabelFile = (TsvFile, HashMap<String, usize>);

/// Splits `img_info` as the reference does: dataset first (`cc` means googlecc), image id last,
/// the chunk second-to-last for chunked datasets.
pub fn parse_img_info(info: &str) -> std::result::Result<(String, Option<String>, String), String> {
    let parts: Vec<&str> = info.split('_').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "img_info {info:?} is not `dataset_[chunk_]imageid`"
        ));
    }
    let ds = if parts[0] == "cc" {
        "googlecc".to_string()
    } else {
        parts[0].to_string()
    };
    let chunk = if CHUNKED.contains(&ds.as_str()) {
        if parts.len() < 3 {
            return Err(format!(
                "img_info {info:?}: {ds} is chunked, expected `{ds}_chunk_imageid`"
            ));
        }
        Some(parts[parts.len() - 2].to_string())
    } else {
        None
    };
    Ok((ds, chunk, parts[parts.len() - 1].to_string()))
}

impl PretrainCorpus {
    /// Opens the dataset yaml; paths in it are relative to its directory.
    pub fn open(yaml: &Path, img_feature_dim: usize) -> Result<Self> {
        let text = std::fs::read_to_string(yaml).map_err(|e| Error::io(yaml, e))?;
        let y: DatasetYaml = serde_yaml_ng::from_str(&text).map_err(|e| {
            Error::bad_file(
                yaml,
                format!(
                    "expected keys corpus, corpus_file, image_label_path, image_feature_path: {e}"
                ),
            )
        })?;
        let base = yaml.parent().unwrap_or(Path::new("."));
        let datasets: Vec<String> = y
            .corpus
            .split('_')
            .map(|d| {
                if d == "cc" {
                    "googlecc".to_string()
                } else {
                    d.to_string()
                }
            })
            .collect();
        for d in &datasets {
            for (what, m) in [
                ("image_label_path", &y.image_label_path),
                ("image_feature_path", &y.image_feature_path),
            ] {
                if !m.contains_key(d) {
                    return Err(Error::bad_file(
                        yaml,
                        format!("{what} has no entry for dataset {d} of the corpus"),
                    ));
                }
            }
        }
        let corpus_path = base.join(&y.corpus_file);
        let corpus =
            std::fs::read_to_string(&corpus_path).map_err(|e| Error::io(&corpus_path, e))?;
        let mut rows = Vec::new();
        for (i, line) in corpus.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at =
                |what: String| Error::bad_file(&corpus_path, format!("line {}: {what}", i + 1));
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() != 3 {
                return Err(at(format!(
                    "{} columns, expected img_info<TAB>label_info<TAB>text_a",
                    cols.len()
                )));
            }
            let (dataset, chunk, image) = parse_img_info(cols[0]).map_err(at)?;
            if !datasets.contains(&dataset) {
                return Err(at(format!(
                    "dataset {dataset} is not in the yaml's corpus {:?}",
                    y.corpus
                )));
            }
            rows.push(CorpusRow {
                dataset,
                chunk,
                image,
                label_info: cols[1].to_string(),
                text: cols[2].to_string(),
            });
        }
        if rows.is_empty() {
            return Err(Error::bad_file(&corpus_path, "the corpus is empty"));
        }
        let resolve = |m: &HashMap<String, String>| {
            m.iter().map(|(k, v)| (k.clone(), base.join(v))).collect()
        };
        Ok(PretrainCorpus {
            rows,
            label_dirs: resolve(&y.image_label_path),
            feature_dirs: resolve(&y.image_feature_path),
            dim: img_feature_dim,
            features: RefCell::new(HashMap::new()),
            labels: RefCell::new(HashMap::new()),
        })
    }

    /// The region features of row `i`'s image.
    pub fn regions(&self, i: usize) -> Result<Regions> {
        let r = &self.rows[i];
        let mut dir = self.feature_dirs[&r.dataset].clone();
        if let Some(c) = &r.chunk {
            dir = dir.join(c);
        }
        let path = dir.join("features.tsv");
        let store = {
            let mut cache = self.features.borrow_mut();
            if !cache.contains_key(&path) {
                cache.insert(
                    path.clone(),
                    std::rc::Rc::new(FeatureStore::open_tsv(&path, self.dim)?),
                );
            }
            cache[&path].clone()
        };
        store.get(&r.image)
    }

    /// The object tags of row `i`'s image (from the dataset's `predictions_gt.tsv`).
    pub fn tags(&self, i: usize) -> Result<String> {
        let r = &self.rows[i];
        let lab = {
            let mut cache = self.labels.borrow_mut();
            if !cache.contains_key(&r.dataset) {
                let p = self.label_dirs[&r.dataset].join("predictions_gt.tsv");
                let t = TsvFile::open(&p)?;
                let idx = t.key_index()?;
                cache.insert(r.dataset.clone(), std::rc::Rc::new((t, idx)));
            }
            cache[&r.dataset].clone()
        };
        let (tsv, idx) = &*lab;
        let &row = idx.get(&r.image).ok_or_else(|| {
            Error::bad_file(tsv.path(), format!("no labels for image {}", r.image))
        })?;
        let fields = tsv.row(row)?;
        let at = format!("row {}", row + 1);
        let dets = parse_detections(fields.get(1).map(String::as_str).unwrap_or(""), &at)
            .map_err(|e| Error::bad_file(tsv.path(), e))?;
        Ok(dets.tags(0.0, false))
    }
}
