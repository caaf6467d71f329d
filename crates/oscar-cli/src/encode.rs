//! `oscar encode`: items (text, tags, region features) → tensorized inputs and every output of
//! the model, in one safetensors file. Embeddings for users, and a way to cross-check numerics.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use oscar::checkpoint::{read_checkpoint, write_atomic, AnyModel, Fresh};
use oscar::data::tensorize::{collate, Encoded, Layout, Truncation};
use oscar::nn::Ctx;
use oscar::tokenizer::BertTokenizer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The task whose layout (lengths, truncation) the items follow (oscar-spec §3).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Task {
    Vqa,
    Gqa,
    Nlvr2,
    Pretrain,
    Retrieval,
    Caption,
}

impl Task {
    /// (max_seq_length, max_img_seq_length, truncation) of the reference's defaults.
    fn layout(self) -> (usize, usize, Truncation) {
        match self {
            Task::Vqa => (128, 50, Truncation::Pair),
            Task::Gqa => (165, 45, Truncation::Pair),
            Task::Nlvr2 => (55, 40, Truncation::Pair),
            Task::Pretrain => (35, 50, Truncation::Pair),
            Task::Retrieval => (70, 50, Truncation::TextFirst),
            Task::Caption => (70, 50, Truncation::TextFirst),
        }
    }
}

#[derive(Args)]
pub struct EncodeArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// Checkpoint directory or weights file (config.json and vocab.txt next to it).
    #[arg(long)]
    checkpoint: PathBuf,
    /// JSON lines: {"id", "text", "tags": "a b" | ["a","b"], "features": [[..]] | {"file": "x.safetensors", "key": "img"}}.
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Layout of the inputs: lengths and truncation rule of this task.
    #[arg(long, value_enum, default_value = "retrieval")]
    task: Task,
    /// Override the task's max_seq_length.
    #[arg(long)]
    max_seq_length: Option<usize>,
    /// Override the task's max_img_seq_length.
    #[arg(long)]
    max_img_seq_length: Option<usize>,
    /// vocab.txt, when the checkpoint has none next to it.
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Items per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
}

/// One line of the input file.
struct Item {
    id: String,
    text: String,
    tags: Option<String>,
    features: Vec<f32>,
}

fn parse_items(path: &Path, dim: usize) -> Result<Vec<Item>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files: HashMap<PathBuf, HashMap<String, Tensor>> = HashMap::new();
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{ln}", path.display());
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow!("{}: not valid JSON: {e}", at()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("{}: expected a JSON object", at()))?;
        let id = match obj.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            None => format!("line{ln}"),
            Some(other) => bail!("{}: `id` must be a string or number, got {other}", at()),
        };
        let text = obj
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| anyhow!("{}: `text` (a string) is required", at()))?
            .to_string();
        let tags = match obj.get("tags") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(a)) => Some(
                a.iter()
                    .map(|t| {
                        t.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| anyhow!("{}: `tags` must be strings", at()))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .join(" "),
            ),
            Some(other) => bail!(
                "{}: `tags` must be a string or a list of strings, got {other}",
                at()
            ),
        };
        let features = match obj.get("features") {
            None | Some(serde_json::Value::Null) => vec![],
            Some(serde_json::Value::Array(rows)) => {
                let mut out = Vec::with_capacity(rows.len() * dim);
                for (r, row) in rows.iter().enumerate() {
                    let row = row
                        .as_array()
                        .ok_or_else(|| anyhow!("{}: features row {r} is not a list", at()))?;
                    if row.len() != dim {
                        bail!(
                            "{}: features row {r} has {} values, expected img_feature_dim = {dim}",
                            at(),
                            row.len()
                        );
                    }
                    for x in row {
                        out.push(x.as_f64().ok_or_else(|| {
                            anyhow!("{}: features row {r} holds a non-number", at())
                        })? as f32);
                    }
                }
                out
            }
            Some(serde_json::Value::Object(src)) => {
                let file = src
                    .get("file")
                    .and_then(|f| f.as_str())
                    .ok_or_else(|| anyhow!("{}: features.file (a path) is required", at()))?;
                let key = src
                    .get("key")
                    .and_then(|f| f.as_str())
                    .ok_or_else(|| anyhow!("{}: features.key (a tensor name) is required", at()))?;
                let fp = base.join(file);
                if !files.contains_key(&fp) {
                    let t = candle_core::safetensors::load(&fp, &Device::Cpu)
                        .map_err(|e| anyhow!("{}: cannot read {}: {e}", at(), fp.display()))?;
                    files.insert(fp.clone(), t);
                }
                let t = files[&fp]
                    .get(key)
                    .ok_or_else(|| anyhow!("{}: {} has no tensor `{key}`", at(), fp.display()))?;
                let d = t.dims();
                if d.len() != 2 || d[1] != dim {
                    bail!(
                        "{}: {}:{key} has shape {d:?}, expected [num_boxes, {dim}]",
                        at(),
                        fp.display()
                    );
                }
                t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?
            }
            Some(other) => bail!(
                "{}: `features` must be a list of rows or {{file, key}}, got {other}",
                at()
            ),
        };
        if let Some(bad) = features.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: features hold a non-finite value (row {}, column {})",
                at(),
                bad / dim,
                bad % dim
            );
        }
        items.push(Item {
            id,
            text,
            tags,
            features,
        });
    }
    if items.is_empty() {
        bail!(
            "{}: no items (expected one JSON object per line)",
            path.display()
        );
    }
    Ok(items)
}

pub fn encode(a: &EncodeArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    let ckpt = read_checkpoint(&a.checkpoint)?;
    let vocab = a
        .vocab
        .clone()
        .or_else(|| ckpt.vocab.clone())
        .ok_or_else(|| {
            anyhow!(
                "{}: no vocab.txt next to the checkpoint: pass --vocab",
                a.checkpoint.display()
            )
        })?;
    let tok = BertTokenizer::from_vocab(&vocab)?;
    let (head, model, _params, cfg, _report) =
        AnyModel::load(ckpt, None, Fresh::Nothing, &a.device)?;
    if tok.vocab_size() > cfg.vocab_size {
        bail!(
            "{} has {} tokens but the model's vocab_size is {}",
            vocab.display(),
            tok.vocab_size(),
            cfg.vocab_size
        );
    }
    let dim = cfg.img_feature_dim;
    let items = parse_items(&a.input, dim)?;
    let (t_def, r_def, truncation) = a.task.layout();
    let layout = Layout {
        max_seq_length: a.max_seq_length.unwrap_or(t_def),
        max_img_seq_length: a.max_img_seq_length.unwrap_or(r_def),
        truncation,
    };
    let (t, r) = (layout.max_seq_length, layout.max_img_seq_length);
    let encoded: Vec<Encoded> = items
        .iter()
        .map(|it| layout.encode(&tok, &it.text, it.tags.as_deref(), &it.features, dim))
        .collect::<oscar::Result<_>>()?;

    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("encode {bar:30} {pos}/{len} items · {per_sec} · ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut outs: HashMap<&'static str, Vec<Tensor>> = HashMap::new();
    let _no_grad = oscar::nn::NoGrad::new();
    for chunk in encoded.chunks(a.batch_size) {
        let x = collate(chunk, t, r, dim, &a.device)?;
        let out = model.bert().forward(&x, &Ctx::eval())?;
        let heads = model.head_outputs(&out)?;
        let b = chunk.len();
        let pos = Tensor::arange(0u32, t as u32, &a.device)?
            .unsqueeze(0)?
            .repeat((b, 1))?;
        let mut push = |k: &'static str, v: Tensor| outs.entry(k).or_default().push(v);
        // Ids as int64, what torch and numpy users index with.
        push("input_ids", x.input_ids.to_dtype(DType::I64)?);
        push(
            "token_type_ids",
            x.token_type_ids
                .as_ref()
                .expect("collate sets types")
                .to_dtype(DType::I64)?,
        );
        push("position_ids", pos.to_dtype(DType::I64)?);
        push(
            "attention_mask",
            x.attention_mask.clone().expect("collate sets the mask"),
        );
        push("sequence", out.sequence);
        push("pooled", out.pooled);
        for (k, v) in heads {
            push(k, v);
        }
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (k, parts) in outs {
        tensors.push((k.to_string(), Tensor::cat(&parts, 0)?));
    }
    tensors.sort_by(|x, y| x.0.cmp(&y.0));
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let meta: HashMap<String, String> = [
        ("ids".to_string(), serde_json::to_string(&ids)?),
        ("head".to_string(), format!("{head:?}")),
        ("task".to_string(), format!("{:?}", a.task).to_lowercase()),
    ]
    .into();
    let bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))?;
    write_atomic(&a.out, &bytes)?;
    let names: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    outln!(
        "wrote {} ({} items, {head:?}): {}",
        a.out.display(),
        items.len(),
        names.join(", ")
    );
    Ok(())
}
