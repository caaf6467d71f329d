//! The detector's state dict, from the released `.pth` (`torch.save({"model": state_dict})`,
//! zip format) or from the safetensors `oscar convert` writes. Keys are maskrcnn-benchmark's
//! module paths (detector-spec §3); a `module.` prefix left by DataParallel is stripped, and the
//! `attribute.feature_extractor.*` entries — the very same tensors as
//! `roi_heads.box.feature_extractor.*`, saved twice because the module is shared — are dropped.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Named tensors with the file they came from, for errors that say where.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
}

impl Weights {
    /// Reads `.pth`/`.pt`/`.bin` (PyTorch zip) or `.safetensors` by content.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut head = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            f.read_exact(&mut head).map_err(|e| {
                Error::bad_file(path, format!("too short to be a checkpoint ({e})"))
            })?;
        }
        let raw: Vec<(String, Tensor)> = if head == *b"PK\x03\x04" {
            read_pth(path)?
        } else {
            candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| {
                    Error::bad_file(
                        path,
                        format!("neither a PyTorch zip checkpoint nor safetensors: {e}"),
                    )
                })?
                .into_iter()
                .collect()
        };
        Self::from_tensors(path, raw)
    }

    /// Builds from `(key, tensor)` pairs (the readers' output, or a test's).
    pub fn from_tensors(path: &Path, raw: Vec<(String, Tensor)>) -> Result<Self> {
        let mut tensors = HashMap::with_capacity(raw.len());
        for (key, t) in raw {
            let key = key.strip_prefix("module.").unwrap_or(&key).to_string();
            if key.starts_with("attribute.feature_extractor.") {
                continue;
            }
            let t = if t.dtype() == DType::F32 {
                t
            } else {
                t.to_dtype(DType::F32)?
            };
            tensors.insert(key, t);
        }
        if tensors.is_empty() {
            return Err(Error::bad_file(path, "no tensors in this checkpoint"));
        }
        Ok(Weights {
            path: path.to_path_buf(),
            tensors,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The tensor at `key`, which must have `shape`.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| {
            Error::bad_file(
                &self.path,
                format!("missing key `{key}` (expected shape {shape:?}): not a checkpoint of this detector configuration"),
            )
        })?;
        if t.dims() != shape {
            return Err(Error::bad_file(
                &self.path,
                format!(
                    "`{key}` has shape {:?}, expected {shape:?} for this configuration",
                    t.dims()
                ),
            ));
        }
        self.used.borrow_mut().insert(key.to_string());
        Ok(t.clone())
    }

    /// The shape stored at `key`, if any (to infer sizes from a checkpoint).
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|t| t.dims().to_vec())
    }

    /// Keys never read: the parts of the checkpoint this configuration does not use.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Every tensor, keys sorted (for `oscar convert`).
    pub fn sorted(&self) -> Vec<(&str, &Tensor)> {
        let mut v: Vec<(&str, &Tensor)> =
            self.tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
}

/// A zip `.pth`: the weights are the `model` entry of a training checkpoint, or the top-level
/// dict of a bare state dict.
fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |e: candle_core::Error| {
        Error::bad_file(path, format!("not a readable PyTorch checkpoint: {e}"))
    };
    let with_model = candle_core::pickle::read_all_with_key(path, Some("model"));
    match with_model {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => candle_core::pickle::read_all(path).map_err(bad),
    }
}
