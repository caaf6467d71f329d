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
    let tensors = params.tensors();
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
            .map_err(|e| Error::Invalid(format!("cannot serialize tensors: {e}")))?;
    save_files(dir, &bytes, cfg, vocab)
}

/// [`save_pretrained`] with every `Linear` weight stored as int8 (`KEY`, I8 `[out, in]`), its
/// per-channel scale (`KEY_scale`, F32 `[out]`) and, where groups of 32 inputs took finer steps
/// ([`crate::nn::int8::PackedWeight::quantize_with`]), their exponents (`KEY_exponent`, U8
/// `[out, ceil(in / 32)]`): the weights [`crate::nn::int8`] computes with, a quarter of their
/// f32 size. Embeddings, LayerNorms and biases stay f32. Reading the file back gives
/// `q · scale · 2^-exponent` in f32, which quantizes again to the same integers, so the model
/// computes exactly what the f32 checkpoint computes with `--quantize int8`; f32 inference on it
/// runs the dequantized weights.
pub fn save_pretrained_int8(
    dir: &Path,
    params: &Params,
    cfg: &OscarConfig,
    vocab: Option<&Path>,
) -> Result<()> {
    let mut raws: Vec<(String, Raw)> = Vec::new();
    for (key, t) in params.tensors() {
        let t = t.to_dtype(candle_core::DType::F32)?;
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        match t.dims() {
            &[n, k] if is_linear_weight(&key, t.dims()) => {
                let q = crate::nn::int8::PackedWeight::quantize(&v, n, k);
                let bytes = q.quantized().iter().map(|&x| x as u8).collect();
                raws.push((
                    key.clone(),
                    Raw::new(safetensors::Dtype::I8, vec![n, k], bytes),
                ));
                raws.push((format!("{key}_scale"), Raw::f32(&q.scales, vec![n])));
                if let Some(e) = q.exponents() {
                    let groups = k.div_ceil(crate::nn::int8::kernel::WEIGHT_GROUP);
                    raws.push((
                        format!("{key}_exponent"),
                        Raw::new(safetensors::Dtype::U8, vec![n, groups], e),
                    ));
                }
            }
            dims => raws.push((key, Raw::f32(&v, dims.to_vec()))),
        }
    }
    let meta: HashMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        (
            "quantization".to_string(),
            "oscar-rs int8: Linear weights symmetric per output channel, KEY_scale, KEY_exponent per 32 inputs".to_string(),
        ),
    ]
    .into();
    let bytes =
        safetensors::tensor::serialize(raws.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
            .map_err(|e| Error::Invalid(format!("cannot serialize tensors: {e}")))?;
    save_files(dir, &bytes, cfg, vocab)
}

/// Whether a parameter is the weight of a `Linear` layer (a 2-D `*.weight` outside the token
/// embeddings; LayerNorm weights are 1-D): the ones [`save_pretrained_int8`] stores as int8.
pub fn is_linear_weight(key: &str, dims: &[usize]) -> bool {
    dims.len() == 2 && key.ends_with(".weight") && !key.contains("embeddings.")
}

/// A tensor as raw little-endian bytes, for safetensors dtypes candle lacks (I8).
struct Raw {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Raw {
    fn new(dtype: safetensors::Dtype, shape: Vec<usize>, data: Vec<u8>) -> Self {
        Raw { dtype, shape, data }
    }

    fn f32(v: &[f32], shape: Vec<usize>) -> Self {
        Raw::new(
            safetensors::Dtype::F32,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn save_files(dir: &Path, weights: &[u8], cfg: &OscarConfig, vocab: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join("model.safetensors"), weights)?;
    write_atomic(&dir.join("config.json"), cfg.to_json_pretty().as_bytes())?;
    if let Some(v) = vocab {
        let text = std::fs::read(v).map_err(|e| Error::io(v, e))?;
        write_atomic(&dir.join("vocab.txt"), &text)?;
    }
    Ok(())
}
