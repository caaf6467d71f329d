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
) -> Result<()> {
    if input.extension().is_some_and(|e| e == "tsv") {
        return convert_detector_predictions(input, output);
    }
    let ckpt = read_checkpoint(input)?;
    if let Some(dim) = feature_dict_width(&ckpt) {
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
    save_pretrained(output, &params, &cfg, vocab.as_deref())
        .with_context(|| format!("writing {}", output.display()))?;
    outln!(
        "wrote {} ({head:?}, {} parameters{})",
        output.display(),
        params.count(),
        if vocab.is_some() {
            ", with vocab.txt"
        } else {
            ", no vocab.txt found: pass --vocab"
        }
    );
    Ok(())
}

/// A torch dict of `[num_boxes, D]` tensors keyed by image id (`*_img_frcnn_feats.pt`), not a
/// model: every tensor 2-D with one width and no model key.
fn feature_dict_width(ckpt: &oscar::checkpoint::Checkpoint) -> Option<usize> {
    let model_like = ckpt.tensors.keys().any(|k| {
        k.contains("embeddings")
            || k.contains("encoder.")
            || k.contains("weight")
            || k.contains("bias")
    });
    let mut widths = ckpt.tensors.values().map(|t| {
        if t.rank() == 2 {
            Some(t.dims()[1])
        } else {
            None
        }
    });
    let first = widths.next()??;
    (!model_like && widths.all(|w| w == Some(first))).then_some(first)
}

/// `oscar convert feats.pt OUT_DIR`: region features to `features.tsv` + `.lineidx` + `imageid2idx.json`.
fn convert_features(input: &Path, output: &Path, dim: usize) -> Result<()> {
    use oscar::data::features::{write_feature_tsv, FeatureStore};
    let store = FeatureStore::open_torch_dict(input, dim)?;
    let items: Vec<(String, oscar::data::features::Regions)> = store
        .keys()
        .into_iter()
        .map(|k| store.get(&k).map(|r| (k, r)))
        .collect::<oscar::Result<_>>()?;
    let tsv = write_feature_tsv(output, &items)?;
    outln!(
        "wrote {} ({} images, {dim}-d regions) with features.lineidx and imageid2idx.json",
        tsv.display(),
        items.len()
    );
    Ok(())
}

/// `oscar convert predictions.tsv OUT_DIR`: scene_graph_benchmark / VinVL detector output with a
/// base64 `feature` per object becomes Oscar's region features, the 6 box dims appended
/// (`[x1/W, y1/H, x2/W, y2/H, w/W, h/H]`, what users otherwise do by hand).
fn convert_detector_predictions(input: &Path, output: &Path) -> Result<()> {
    use base64::Engine;
    use oscar::data::features::{parse_detections, write_feature_tsv};
    let tsv = oscar::data::tsv::TsvFile::open(input)?;
    let mut items = Vec::with_capacity(tsv.num_rows());
    let mut det_dim = None;
    for i in 0..tsv.num_rows() {
        let at = format!("{}: row {}", input.display(), i + 1);
        let f = tsv.row(i)?;
        anyhow::ensure!(
            f.len() == 2,
            "{at}: {} columns, expected `image_id<TAB>json`",
            f.len()
        );
        let d = parse_detections(&f[1], &at).map_err(anyhow::Error::msg)?;
        let dim = match det_dim {
            Some(d) => d,
            None => {
                let first = d.objects.iter().find_map(|o| o.feature.as_ref()).ok_or_else(|| anyhow::anyhow!("{at}: objects carry no `feature`: run the detector with feature output"))?;
                let n = base64::engine::general_purpose::STANDARD
                    .decode(first.trim())
                    .map_err(|e| anyhow::anyhow!("{at}: bad base64 feature: {e}"))?
                    .len()
                    / 4;
                *det_dim.insert(n)
            }
        };
        items.push((
            f[0].clone(),
            d.regions_with_boxes(dim, &at).map_err(anyhow::Error::msg)?,
        ));
    }
    let dim = det_dim.unwrap_or(0);
    let out = write_feature_tsv(output, &items)?;
    outln!(
        "wrote {} ({} images, {}-d detector features + 6 box dims = {})",
        out.display(),
        items.len(),
        dim,
        dim + 6
    );
    Ok(())
}
