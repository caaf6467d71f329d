//! The detector's answers written in VinVL's own files, so every reader of released features
//! takes them: `features.tsv` (`id \t num_boxes \t base64(float32[num_boxes × 2054])`, the
//! 2048-d region feature plus the 6 box dimensions) with `features.lineidx` and
//! `imageid2idx.json`, and `predictions.tsv` (`id \t {"image_h", "image_w", "num_boxes",
//! "objects": [{"rect", "bbox_id", "class", "conf", "attributes", "attr_scores"}]}`) with
//! `predictions.lineidx`.
//!
//! Rows are appended and flushed one image at a time, so a long run that is stopped keeps what
//! it finished; [`DetectionWriter::open`] finds those images again, drops a half-written last
//! line, and the index files are rewritten (atomically) at the end.

use super::features::box_dims;
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use base64::Engine;
use oscar_detect::Detections;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One row of `predictions.tsv` as JSON (scene_graph_benchmark's `convert_predictions_to_tsv`
/// fields, attributes named).
pub fn prediction_row(d: &Detections, attribute_names: &[String]) -> serde_json::Value {
    let objects: Vec<serde_json::Value> = d
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let attrs: Vec<&str> = o
                .attributes
                .iter()
                .map(|&(a, _)| attribute_names.get(a).map_or("?", |s| s.as_str()))
                .collect();
            let scores: Vec<f32> = o.attributes.iter().map(|&(_, p)| p).collect();
            serde_json::json!({
                "rect": o.rect, "bbox_id": i, "class": o.class, "conf": o.conf,
                "attributes": attrs, "attr_scores": scores,
            })
        })
        .collect();
    serde_json::json!({
        "image_h": d.image_size.1, "image_w": d.image_size.0,
        "num_boxes": d.objects.len(), "objects": objects,
    })
}

/// The `N × (2048 + 6)` region rows Oscar reads, boxes normalised by the image size.
pub fn region_rows(d: &Detections) -> Vec<f32> {
    let (w, h) = (d.image_size.0 as f32, d.image_size.1 as f32);
    let mut out = Vec::new();
    for o in &d.objects {
        out.extend_from_slice(&o.feature);
        out.extend_from_slice(&box_dims(o.rect, w, h));
    }
    out
}

/// Appends detections to `features.tsv` and `predictions.tsv` in a folder.
pub struct DetectionWriter {
    dir: PathBuf,
    features: std::fs::File,
    predictions: std::fs::File,
}

impl DetectionWriter {
    /// Opens (or creates) the folder's files; returns the ids already written.
    pub fn open(dir: &Path) -> Result<(Self, Vec<String>)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let fpath = dir.join("features.tsv");
        let ppath = dir.join("predictions.tsv");
        let f_ids = complete_rows(&fpath)?;
        let p_ids = complete_rows(&ppath)?;
        // An image counts as done only when both of its rows were written.
        let n = f_ids
            .iter()
            .zip(&p_ids)
            .take_while(|(a, b)| a.0 == b.0)
            .count();
        truncate_to(&fpath, f_ids.get(n).map(|r| r.1))?;
        truncate_to(&ppath, p_ids.get(n).map(|r| r.1))?;
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))
        };
        let done = f_ids.into_iter().take(n).map(|r| r.0).collect();
        Ok((
            DetectionWriter {
                dir: dir.to_path_buf(),
                features: open(&fpath)?,
                predictions: open(&ppath)?,
            },
            done,
        ))
    }

    /// Writes one image's rows and flushes them.
    pub fn append(&mut self, id: &str, d: &Detections, attribute_names: &[String]) -> Result<()> {
        if id.is_empty() || id.contains(['\t', '\n', '\r']) {
            return Err(Error::Invalid(format!(
                "image id {id:?}: must be non-empty, without tabs or newlines"
            )));
        }
        let bytes: Vec<u8> = region_rows(d)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let frow = format!(
            "{id}\t{}\t{}\n",
            d.objects.len(),
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let prow = format!("{id}\t{}\n", prediction_row(d, attribute_names));
        let fpath = self.dir.join("features.tsv");
        let ppath = self.dir.join("predictions.tsv");
        self.features
            .write_all(frow.as_bytes())
            .and_then(|_| self.features.flush())
            .map_err(|e| Error::io(&fpath, e))?;
        self.predictions
            .write_all(prow.as_bytes())
            .and_then(|_| self.predictions.flush())
            .map_err(|e| Error::io(&ppath, e))?;
        Ok(())
    }

    /// Appends one image's rows as already written by another run (newline-terminated).
    fn append_lines(&mut self, feature: &str, prediction: &str) -> Result<()> {
        let fpath = self.dir.join("features.tsv");
        let ppath = self.dir.join("predictions.tsv");
        self.features
            .write_all(feature.as_bytes())
            .map_err(|e| Error::io(&fpath, e))?;
        self.predictions
            .write_all(prediction.as_bytes())
            .map_err(|e| Error::io(&ppath, e))
    }

    /// Writes `features.lineidx`, `predictions.lineidx` and `imageid2idx.json` for every row
    /// now in the files.
    pub fn finish(self) -> Result<()> {
        let fpath = self.dir.join("features.tsv");
        let ppath = self.dir.join("predictions.tsv");
        self.features.sync_all().map_err(|e| Error::io(&fpath, e))?;
        self.predictions
            .sync_all()
            .map_err(|e| Error::io(&ppath, e))?;
        let rows = complete_rows(&fpath)?;
        let mut map = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut idx = String::new();
        for (i, (id, off)) in rows.iter().enumerate() {
            if !seen.insert(id.clone()) {
                return Err(Error::bad_file(
                    &fpath,
                    format!("image id {id:?} appears twice"),
                ));
            }
            idx.push_str(&format!("{off}\n"));
            map.insert(id.clone(), i);
        }
        write_atomic(&self.dir.join("features.lineidx"), idx.as_bytes())?;
        let pidx: String = complete_rows(&ppath)?
            .iter()
            .map(|r| format!("{}\n", r.1))
            .collect();
        write_atomic(&self.dir.join("predictions.lineidx"), pidx.as_bytes())?;
        let json = serde_json::to_string(&map).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&self.dir.join("imageid2idx.json"), json.as_bytes())
    }
}

/// Joins the outputs of several `oscar detect` runs (the shards of one job) into `out`: every row
/// of each folder, in the order given; an image id in two folders is an error naming both. Rows
/// already in `out` are kept, so a merge that stopped can be run again.
pub fn merge(out: &Path, parts: &[PathBuf]) -> Result<usize> {
    let (mut w, done) = DetectionWriter::open(out)?;
    let mut seen: std::collections::HashMap<String, PathBuf> =
        done.into_iter().map(|id| (id, out.to_path_buf())).collect();
    let mut added = 0;
    for dir in parts {
        let (fpath, ppath) = (dir.join("features.tsv"), dir.join("predictions.tsv"));
        let ftext = std::fs::read_to_string(&fpath).map_err(|e| Error::io(&fpath, e))?;
        let ptext = std::fs::read_to_string(&ppath).map_err(|e| Error::io(&ppath, e))?;
        let flines: Vec<&str> = ftext
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .collect();
        let plines: Vec<&str> = ptext
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .collect();
        if flines.len() != plines.len() {
            return Err(Error::bad_file(
                dir,
                format!("{} feature rows but {} prediction rows: an unfinished run? run `oscar detect` on it again first", flines.len(), plines.len()),
            ));
        }
        for (n, (f, p)) in flines.iter().zip(&plines).enumerate() {
            let id = f.split('\t').next().unwrap_or_default();
            if p.split('\t').next() != Some(id) {
                return Err(Error::bad_file(
                    &ppath,
                    format!(
                        "line {}: not the image of features.tsv line {} ({id})",
                        n + 1,
                        n + 1
                    ),
                ));
            }
            if let Some(prev) = seen.get(id) {
                if prev.as_path() == out {
                    continue; // merged by an earlier run of this merge
                }
                return Err(Error::Invalid(format!(
                    "image {id} is in both {} and {}",
                    prev.display(),
                    dir.display()
                )));
            }
            w.append_lines(f, p)?;
            seen.insert(id.to_string(), dir.clone());
            added += 1;
        }
    }
    w.finish()?;
    Ok(added)
}

/// `(first column, byte offset)` of every complete (newline-terminated) line; none if the
/// file does not exist.
fn complete_rows(path: &Path) -> Result<Vec<(String, u64)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut rows = Vec::new();
    let mut start = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            let line = &bytes[start..i];
            let id = line.split(|&c| c == b'\t').next().unwrap_or_default();
            let id = std::str::from_utf8(id).map_err(|_| {
                Error::bad_file(
                    path,
                    format!("line {}: the image id is not UTF-8", rows.len() + 1),
                )
            })?;
            rows.push((id.to_string(), start as u64));
            start = i + 1;
        }
    }
    Ok(rows)
}

/// Cuts a file at `offset` (the first row not kept), or at its last complete line.
fn truncate_to(path: &Path, offset: Option<u64>) -> Result<()> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(_) => return Ok(()),
    };
    let keep = match offset {
        Some(o) => o,
        None => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            bytes
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p as u64 + 1)
        }
    };
    if keep < len {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        f.set_len(keep).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}
