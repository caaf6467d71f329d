//! `oscar inspect` and `oscar convert`.

use anyhow::{Context, Result};
use oscar::checkpoint::{detect_head, read_checkpoint, save_pretrained, AnyModel, Fresh};
use oscar::OscarConfig;
use std::path::Path;

pub fn inspect(path: &Path, json: bool) -> Result<()> {
    let ckpt = read_checkpoint(path)?;
    let head = detect_head(&ckpt, None);
    let mut keys: Vec<(&String, Vec<usize>, String)> = ckpt
        .tensors
        .iter()
        .map(|(k, v)| {
            (
                k,
                v.dims().to_vec(),
                format!("{:?}", v.dtype()).to_lowercase(),
            )
        })
        .collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let count: usize = ckpt.tensors.values().map(|t| t.elem_count()).sum();
    let img_ln = ckpt.tensors.contains_key("bert.LayerNorm.weight")
        || ckpt.tensors.contains_key("LayerNorm.weight")
        || ckpt.tensors.contains_key("bert.LayerNorm.gamma");
    let mut out = String::new();
    macro_rules! say { ($($t:tt)*) => {{ out.push_str(&format!($($t)*)); out.push('\n'); }} }
    if json {
        let v = serde_json::json!({
            "weights": ckpt.path,
            "format": ckpt.format,
            "head": format!("{head:?}"),
            "parameters": count,
            "image_layernorm": img_ln,
            "config": ckpt.config.as_ref().map(|c| serde_json::from_str::<serde_json::Value>(&c.to_json_pretty()).unwrap_or_default()),
            "vocab": ckpt.vocab,
            "keys": keys.iter().map(|(k, s, d)| serde_json::json!({"key": k, "shape": s, "dtype": d})).collect::<Vec<_>>(),
        });
        say!("{}", serde_json::to_string_pretty(&v)?);
        return crate::emit(&out);
    }
    say!("weights     {} ({})", ckpt.path.display(), ckpt.format);
    say!("head        {head:?}");
    say!("parameters  {count} ({:.1} M)", count as f64 / 1e6);
    say!(
        "image LN    {}",
        if img_ln { "yes (bert.LayerNorm)" } else { "no" }
    );
    match &ckpt.config {
        Some(c) => say!(
            "config      hidden {} · layers {} · heads {} · ffn {} · vocab {} · img_feature_dim {} · labels {} · contrast {}",
            c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.vocab_size, c.img_feature_dim, c.num_labels, c.num_contrast_classes
        ),
        None => say!("config      (no config.json next to the weights)"),
    }
    say!(
        "vocab       {}",
        ckpt.vocab
            .as_ref()
            .map(|v| v.display().to_string())
            .unwrap_or_else(|| "(none)".into())
    );
    say!("keys ({}):", keys.len());
    for (k, s, d) in keys {
        say!("  {k:<60} {s:?} {d}");
    }
    crate::emit(&out)
}

/// `init_missing`: parameters the checkpoint lacks (a plain BERT's image embedding) start fresh.
pub fn convert(
    input: &Path,
    output: &Path,
    config: Option<&Path>,
    vocab: Option<&Path>,
    init_missing: bool,
    precision: oscar::nn::int8::Precision,
) -> Result<()> {
    if input.extension().is_some_and(|e| e == "tsv") {
        return convert_detector_predictions(input, output);
    }
    let ckpt = read_checkpoint(input)?;
    if let Some(dim) = oscar::data::convert::feature_dict_width(&ckpt) {
        return convert_features(input, output, dim);
    }
    let cfg = config.map(OscarConfig::from_file).transpose()?;
    let vocab = vocab.map(Path::to_path_buf).or_else(|| ckpt.vocab.clone());
    let (head, _model, params, cfg, report) = AnyModel::load(
        ckpt,
        cfg,
        if init_missing {
            Fresh::Missing
        } else {
            Fresh::Nothing
        },
        // Converting reads and writes files: the weights stay in host memory.
        &candle_core::Device::Cpu,
    )?;
    for n in &report.notes {
        errln!("note: {n}");
    }
    if !report.fresh.is_empty() {
        errln!(
            "note: {} parameters were not in the checkpoint and start fresh: {}",
            report.fresh.len(),
            report.fresh.join(", ")
        );
    }
    if !report.unexpected.is_empty() {
        errln!(
            "warning: {} checkpoint keys are not part of a {head:?} model and are not written: {}",
            report.unexpected.len(),
            report.unexpected.join(", ")
        );
    }
    match precision {
        oscar::nn::int8::Precision::F32 => save_pretrained(output, &params, &cfg, vocab.as_deref()),
        oscar::nn::int8::Precision::Int8 => {
            oscar::checkpoint::save_pretrained_int8(output, &params, &cfg, vocab.as_deref())
        }
    }
    .with_context(|| format!("writing {}", output.display()))?;
    let copied = copy_task_settings(input, output)?;
    outln!(
        "wrote {} ({head:?}, {} parameters, {precision} weights{}{})",
        output.display(),
        params.count(),
        if copied.is_empty() {
            String::new()
        } else {
            format!(", with {}", copied.join(", "))
        },
        if vocab.is_some() {
            ", with vocab.txt"
        } else {
            ", no vocab.txt found: pass --vocab"
        }
    );
    Ok(())
}

/// Copies a task model directory's settings (what `oscar caption`, `answer`, `score` and the
/// server read beside the weights) into the converted one; returns the names copied.
fn copy_task_settings(input: &Path, output: &Path) -> Result<Vec<&'static str>> {
    let mut copied = Vec::new();
    if !input.is_dir() {
        return Ok(copied);
    }
    for name in [
        "caption.json",
        "qa.json",
        "label2ans.json",
        "retrieval.json",
        "nlvr2.json",
    ] {
        let src = input.join(name);
        if src.exists() {
            let bytes =
                std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            oscar::checkpoint::write_atomic(&output.join(name), &bytes)?;
            copied.push(name);
        }
    }
    Ok(copied)
}

/// `oscar convert feats.pt OUT_DIR`: region features to `features.tsv` + `.lineidx` + `imageid2idx.json`.
fn convert_features(input: &Path, output: &Path, dim: usize) -> Result<()> {
    let c = oscar::data::convert::torch_features_to_tsv(input, output, dim)?;
    outln!(
        "wrote {} ({} images, {dim}-d regions) with features.lineidx and imageid2idx.json",
        c.path.display(),
        c.images
    );
    Ok(())
}

/// `oscar convert predictions.tsv OUT_DIR`: detector output with a base64 `feature` per object
/// becomes Oscar's region features, the 6 box dims appended.
fn convert_detector_predictions(input: &Path, output: &Path) -> Result<()> {
    let c = oscar::data::convert::detector_predictions_to_tsv(input, output)?;
    let dim = c.detector_dim.unwrap_or(0);
    outln!(
        "wrote {} ({} images, {}-d detector features + 6 box dims = {})",
        c.path.display(),
        c.images,
        dim,
        c.region_dim
    );
    Ok(())
}
