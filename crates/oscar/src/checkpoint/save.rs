//! Saving as a `save_pretrained`-style directory that HF transformers can read back:
//! `model.safetensors` (with `{"format": "pt"}` metadata), `config.json`, `vocab.txt`.
//! Every file is written to a temporary sibling and renamed, so a crash never leaves a
//! half-written file in place of a good one.

use crate::config::OscarConfig;
use crate::error::{Error, Result};
use crate::nn::Params;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Saves parameters (tied weights appear once, as in HF files), config and vocabulary.
pub fn save_pretrained(
    dir: &Path,
    params: &Params,
    cfg: &OscarConfig,
    vocab: Option<&Path>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors = params.tensors();
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
            .map_err(|e| Error::Invalid(format!("cannot serialize tensors: {e}")))?;
    write_atomic(&dir.join("model.safetensors"), &bytes)?;
    write_atomic(&dir.join("config.json"), cfg.to_json_pretty().as_bytes())?;
    if let Some(v) = vocab {
        let text = std::fs::read(v).map_err(|e| Error::io(v, e))?;
        write_atomic(&dir.join("vocab.txt"), &text)?;
    }
    Ok(())
}
