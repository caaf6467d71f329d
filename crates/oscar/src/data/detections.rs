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
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
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

/// The rows of one TSV: `(first column, byte offset)` of each line, and where the next line starts.
#[derive(Default)]
struct Rows {
    rows: Vec<(String, u64)>,
    end: u64,
}

impl Rows {
    /// Scans the complete (newline-terminated) lines of `path` without holding the file in
    /// memory (a large extraction writes hundreds of gigabytes); none if it does not exist.
    fn scan(path: &Path) -> Result<Self> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Rows::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut r = std::io::BufReader::with_capacity(1 << 20, file);
        let mut out = Rows::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = r
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io(path, e))?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Ok(out);
            }
            let id = line
                .split(|&c| c == b'\t' || c == b'\n')
                .next()
                .unwrap_or_default();
            let id = std::str::from_utf8(id).map_err(|_| {
                Error::bad_file(
                    path,
                    format!("line {}: the image id is not UTF-8", out.rows.len() + 1),
                )
            })?;
            out.rows.push((id.to_string(), out.end));
            out.end += n as u64;
        }
    }

    /// Keeps the first `n` rows, cutting the file after them (drops a half-written line too).
    fn keep(&mut self, path: &Path, n: usize) -> Result<()> {
        if let Some(&(_, off)) = self.rows.get(n) {
            self.end = off;
        }
        self.rows.truncate(n);
        match std::fs::metadata(path) {
            Ok(m) if m.len() > self.end => std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(self.end))
                .map_err(|e| Error::io(path, e)),
            _ => Ok(()),
        }
    }

    fn push(&mut self, id: &str, len: usize) {
        self.rows.push((id.to_string(), self.end));
        self.end += len as u64;
    }

    fn lineidx(&self) -> String {
        self.rows.iter().map(|r| format!("{}\n", r.1)).collect()
    }
}

/// Appends detections to `features.tsv` and `predictions.tsv` in a folder.
pub struct DetectionWriter {
    dir: PathBuf,
    features: std::fs::File,
    predictions: std::fs::File,
    /// What the files hold, kept as rows are appended (the indexes are written from it).
    frows: Rows,
    prows: Rows,
}

impl DetectionWriter {
    /// Opens (or creates) the folder's files; returns the ids already written.
    pub fn open(dir: &Path) -> Result<(Self, Vec<String>)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let fpath = dir.join("features.tsv");
        let ppath = dir.join("predictions.tsv");
        let mut frows = Rows::scan(&fpath)?;
        let mut prows = Rows::scan(&ppath)?;
        // An image counts as done only when both of its rows were written.
        let n = frows
            .rows
            .iter()
            .zip(&prows.rows)
            .take_while(|(a, b)| a.0 == b.0)
            .count();
        frows.keep(&fpath, n)?;
        prows.keep(&ppath, n)?;
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))
        };
        let done = frows.rows.iter().map(|r| r.0.clone()).collect();
        Ok((
            DetectionWriter {
                dir: dir.to_path_buf(),
                features: open(&fpath)?,
                predictions: open(&ppath)?,
                frows,
                prows,
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
        self.append_lines(id, &frow, &prow)
    }

    /// Appends one image's rows (newline-terminated) and flushes them.
    fn append_lines(&mut self, id: &str, feature: &str, prediction: &str) -> Result<()> {
        let fpath = self.dir.join("features.tsv");
        let ppath = self.dir.join("predictions.tsv");
        self.features
            .write_all(feature.as_bytes())
            .and_then(|_| self.features.flush())
            .map_err(|e| Error::io(&fpath, e))?;
        self.predictions
            .write_all(prediction.as_bytes())
            .and_then(|_| self.predictions.flush())
            .map_err(|e| Error::io(&ppath, e))?;
        self.frows.push(id, feature.len());
        self.prows.push(id, prediction.len());
        Ok(())
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
        let mut map = BTreeMap::new();
        for (i, (id, _)) in self.frows.rows.iter().enumerate() {
            if map.insert(id.clone(), i).is_some() {
                return Err(Error::bad_file(
                    &fpath,
                    format!("image id {id:?} appears twice"),
                ));
            }
        }
        write_atomic(
            &self.dir.join("features.lineidx"),
            self.frows.lineidx().as_bytes(),
        )?;
        write_atomic(
            &self.dir.join("predictions.lineidx"),
            self.prows.lineidx().as_bytes(),
        )?;
        let json = serde_json::to_string(&map).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&self.dir.join("imageid2idx.json"), json.as_bytes())
    }
}

/// Joins the outputs of several `oscar detect` runs (the shards of one job) into `out`: every row
/// of each folder, in the order given, streamed; an image id in two folders is an error naming
/// both. Rows already in `out` are kept, so a merge that stopped can be run again.
pub fn merge(out: &Path, parts: &[PathBuf]) -> Result<usize> {
    let (mut w, done) = DetectionWriter::open(out)?;
    let mut seen: HashMap<String, PathBuf> =
        done.into_iter().map(|id| (id, out.to_path_buf())).collect();
    let mut added = 0;
    for dir in parts {
        let (fpath, ppath) = (dir.join("features.tsv"), dir.join("predictions.tsv"));
        let open = |p: &Path| {
            std::fs::File::open(p)
                .map(|f| std::io::BufReader::with_capacity(1 << 20, f))
                .map_err(|e| Error::io(p, e))
        };
        let (mut fr, mut pr) = (open(&fpath)?, open(&ppath)?);
        let (mut f, mut p) = (String::new(), String::new());
        for n in 1.. {
            f.clear();
            p.clear();
            let fl = fr.read_line(&mut f).map_err(|e| Error::io(&fpath, e))?;
            let pl = pr.read_line(&mut p).map_err(|e| Error::io(&ppath, e))?;
            let (fdone, pdone) = (!f.ends_with('\n'), !p.ends_with('\n'));
            if fdone && pdone && fl + pl == 0 {
                break;
            }
            if fdone || pdone {
                return Err(Error::bad_file(
                    dir,
                    format!("features.tsv and predictions.tsv differ at row {n} (an unfinished run? run `oscar detect` on it again first)"),
                ));
            }
            let id = f.split('\t').next().unwrap_or_default();
            if p.split('\t').next() != Some(id) {
                return Err(Error::bad_file(
                    &ppath,
                    format!("line {n}: not the image of features.tsv line {n} ({id})"),
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
            let id = id.to_string();
            w.append_lines(&id, &f, &p)?;
            seen.insert(id, dir.clone());
            added += 1;
        }
    }
    w.finish()?;
    Ok(added)
}
