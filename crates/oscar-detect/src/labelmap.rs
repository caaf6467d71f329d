//! Class and attribute names: scene_graph_benchmark's label map JSON
//! (`VG-SGG-dicts-vgoi6-clipped.json`), read the way its `load_labelmap_file` and
//! `tools/demo/demo_image.py` read it — `label_to_idx` (1-based, 0 = background) and
//! `attribute_to_idx` (1-based, 0 = `__no_attribute__`). `idx_to_label` is accepted when the
//! `*_to_idx` maps are absent.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Names indexed by the detector's class and attribute ids.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMap {
    /// `classes[i]` names logit `i`; `classes[0]` is `__background__`.
    pub classes: Vec<String>,
    /// `attributes[i]` names attribute logit `i`; `attributes[0]` is `__no_attribute__`.
    pub attributes: Vec<String>,
}

impl LabelMap {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not JSON: {e}")))?;
        let classes = names(&v, "label_to_idx", "idx_to_label", "__background__")
            .map_err(|e| Error::bad_file(path, e))?
            .ok_or_else(|| {
                Error::bad_file(
                    path,
                    "no `label_to_idx` (or `idx_to_label`): not a VG-SGG label map",
                )
            })?;
        let attributes = names(
            &v,
            "attribute_to_idx",
            "idx_to_attribute",
            "__no_attribute__",
        )
        .map_err(|e| Error::bad_file(path, e))?
        .unwrap_or_else(|| vec!["__no_attribute__".to_string()]);
        Ok(LabelMap {
            classes,
            attributes,
        })
    }

    /// Checks the names against the checkpoint's logits (`cls_score` rows, `attr_score` rows).
    pub fn check_counts(
        &self,
        path: &Path,
        num_classes: usize,
        num_attributes: usize,
    ) -> Result<()> {
        if self.classes.len() != num_classes {
            return Err(Error::bad_file(
                path,
                format!(
                    "{} class names (background included) but the detector has {num_classes} class logits: a label map for another checkpoint?",
                    self.classes.len()
                ),
            ));
        }
        if num_attributes > 0 && self.attributes.len() != num_attributes {
            return Err(Error::bad_file(
                path,
                format!(
                    "{} attribute names (\"no attribute\" included) but the detector has {num_attributes} attribute logits",
                    self.attributes.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Reads `{name: idx}` (or `{idx: name}`) into a dense list with slot 0 named `zero`.
fn names(
    v: &Value,
    to_idx: &str,
    from_idx: &str,
    zero: &str,
) -> std::result::Result<Option<Vec<String>>, String> {
    let mut pairs: Vec<(usize, String)> = Vec::new();
    if let Some(map) = v.get(to_idx) {
        let map = map
            .as_object()
            .ok_or(format!("`{to_idx}` is not an object"))?;
        for (name, idx) in map {
            let idx = idx.as_u64().ok_or(format!(
                "`{to_idx}.{name}` is {idx}, expected a non-negative integer"
            ))?;
            pairs.push((idx as usize, name.clone()));
        }
    } else if let Some(map) = v.get(from_idx) {
        let map = map
            .as_object()
            .ok_or(format!("`{from_idx}` is not an object"))?;
        for (idx, name) in map {
            let i: usize = idx
                .parse()
                .map_err(|_| format!("`{from_idx}` key {idx:?} is not an integer"))?;
            let name = name
                .as_str()
                .ok_or(format!("`{from_idx}.{idx}` is not a string"))?;
            pairs.push((i, name.to_string()));
        }
    } else {
        return Ok(None);
    }
    let n = pairs.iter().map(|p| p.0).max().unwrap_or(0) + 1;
    let mut out: Vec<Option<String>> = vec![None; n];
    for (i, name) in pairs {
        if i == 0 {
            return Err(format!(
                "`{to_idx}`: index 0 is reserved for {zero}, but {name:?} has it"
            ));
        }
        if let Some(prev) = &out[i] {
            return Err(format!("`{to_idx}`: {prev:?} and {name:?} share index {i}"));
        }
        out[i] = Some(name);
    }
    out[0] = Some(zero.to_string());
    out.into_iter()
        .enumerate()
        .map(|(i, n)| {
            n.ok_or(format!(
                "`{to_idx}`: no name for index {i} (indices must be 1..N without gaps)"
            ))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Some)
}
