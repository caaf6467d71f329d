//! Free-form items for `oscar encode` and the inference API: one JSON object per line,
//! `{"id", "text", "tags": "a b" | ["a", "b"], "features": [[..], ..] | {"file": "x.safetensors",
//! "key": "img"}}`, and the layouts (lengths, truncation) of the reference's tasks that such
//! items are tensorized with. Every problem names the file and line.

use super::tensorize::{Layout, Truncation};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The task whose input layout items follow (oscar-spec §3, the reference scripts' defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskLayout {
    Vqa,
    Gqa,
    Nlvr2,
    Pretrain,
    Retrieval,
    Caption,
}

impl TaskLayout {
    /// `max_seq_length`, `max_img_seq_length` and the truncation rule of the reference's scripts.
    pub fn layout(self) -> Layout {
        let (max_seq_length, max_img_seq_length, truncation) = match self {
            TaskLayout::Vqa => (128, 50, Truncation::Pair),
            TaskLayout::Gqa => (165, 45, Truncation::Pair),
            TaskLayout::Nlvr2 => (55, 40, Truncation::Pair),
            TaskLayout::Pretrain => (35, 50, Truncation::Pair),
            TaskLayout::Retrieval => (70, 50, Truncation::TextFirst),
            TaskLayout::Caption => (70, 50, Truncation::TextFirst),
        };
        Layout {
            max_seq_length,
            max_img_seq_length,
            truncation,
        }
    }
}

impl std::str::FromStr for TaskLayout {
    type Err = String;

    /// The serialized names: `vqa`, `gqa`, `nlvr2`, `pretrain`, `retrieval`, `caption`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).map_err(|_| {
            format!("layout {s:?}: expected vqa, gqa, nlvr2, pretrain, retrieval or caption")
        })
    }
}

/// One item: a text, optional tags, region features (rows of the model's width).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub text: String,
    pub tags: Option<String>,
    pub features: Vec<f32>,
}

/// Reads a JSON-lines item file whose region rows must be `dim` wide. Feature files named by
/// `{"file", "key"}` are read once each, relative to the item file.
pub fn read_items(path: &Path, dim: usize) -> Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files: HashMap<PathBuf, HashMap<String, Tensor>> = HashMap::new();
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: String| Error::Invalid(format!("{}:{}: {what}", path.display(), i + 1));
        let v: Value =
            serde_json::from_str(line).map_err(|e| at(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| at("expected a JSON object".into()))?;
        let id = match obj.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None => format!("line{}", i + 1),
            Some(other) => return Err(at(format!("`id` must be a string or number, got {other}"))),
        };
        let text = obj
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| at("`text` (a string) is required".into()))?
            .to_string();
        let tags = match obj.get("tags") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|t| {
                        t.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| at("`tags` must be strings".into()))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .join(" "),
            ),
            Some(other) => {
                return Err(at(format!(
                    "`tags` must be a string or a list of strings, got {other}"
                )))
            }
        };
        let features = read_features(obj.get("features"), dim, base, &mut files, &at)?;
        if let Some(bad) = features.iter().position(|x| !x.is_finite()) {
            return Err(at(format!(
                "features hold a non-finite value (row {}, column {})",
                bad / dim,
                bad % dim
            )));
        }
        items.push(Item {
            id,
            text,
            tags,
            features,
        });
    }
    if items.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no items (expected one JSON object per line)",
            path.display()
        )));
    }
    Ok(items)
}

/// The `features` of one item: rows given inline, or a tensor of a safetensors file (read once
/// per file, relative to the item file).
fn read_features(
    features: Option<&Value>,
    dim: usize,
    base: &Path,
    files: &mut HashMap<PathBuf, HashMap<String, Tensor>>,
    at: &dyn Fn(String) -> Error,
) -> Result<Vec<f32>> {
    Ok(match features {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(rows)) => {
            let mut out = Vec::with_capacity(rows.len() * dim);
            for (r, row) in rows.iter().enumerate() {
                let row = row
                    .as_array()
                    .ok_or_else(|| at(format!("features row {r} is not a list")))?;
                if row.len() != dim {
                    return Err(at(format!(
                        "features row {r} has {} values, expected img_feature_dim = {dim}",
                        row.len()
                    )));
                }
                for x in row {
                    out.push(
                        x.as_f64()
                            .ok_or_else(|| at(format!("features row {r} holds a non-number")))?
                            as f32,
                    );
                }
            }
            out
        }
        Some(Value::Object(src)) => {
            let file = src
                .get("file")
                .and_then(Value::as_str)
                .ok_or_else(|| at("features.file (a path) is required".into()))?;
            let key = src
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| at("features.key (a tensor name) is required".into()))?;
            let fp = base.join(file);
            if !files.contains_key(&fp) {
                // Read into host memory; the batches go to the model's device later.
                let t = candle_core::safetensors::load(&fp, &Device::Cpu)
                    .map_err(|e| at(format!("cannot read {}: {e}", fp.display())))?;
                files.insert(fp.clone(), t);
            }
            let t = files[&fp]
                .get(key)
                .ok_or_else(|| at(format!("{} has no tensor `{key}`", fp.display())))?;
            let d = t.dims();
            if d.len() != 2 || d[1] != dim {
                return Err(at(format!(
                    "{}:{key} has shape {d:?}, expected [num_boxes, {dim}]",
                    fp.display()
                )));
            }
            t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?
        }
        Some(other) => {
            return Err(at(format!(
                "`features` must be a list of rows or {{file, key}}, got {other}"
            )))
        }
    })
}
