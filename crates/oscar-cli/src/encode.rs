//! `oscar encode`: items (text, tags, region features) → tensorized inputs and every output of
//! the model, in one safetensors file (`oscar::infer::Encoder` does the work). Embeddings for
//! users, and a way to cross-check numerics.

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oscar::checkpoint::write_atomic;
use oscar::data::items::{read_items, TaskLayout};
use oscar::infer::Encoder;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct EncodeArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// Linear layers in dynamic int8 (`int8`: weights per channel, activations per row; about
    /// twice the f32 speed on AVX2 CPUs) or `f32` (the reference's numerics).
    #[arg(long, value_name = "int8|f32", default_value = "f32")]
    quantize: oscar::nn::int8::Precision,
    /// Checkpoint directory or weights file (config.json and vocab.txt next to it).
    #[arg(long)]
    checkpoint: PathBuf,
    /// JSON lines: {"id", "text", "tags": "a b" | ["a","b"], "features": [[..]] | {"file": "x.safetensors", "key": "img"}}.
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Layout of the inputs: lengths and truncation rule of this task (vqa, gqa, nlvr2,
    /// pretrain, retrieval, caption).
    #[arg(long, default_value = "retrieval")]
    task: TaskLayout,
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

pub fn encode(a: &EncodeArgs) -> Result<()> {
    let enc = Encoder::load_at(&a.checkpoint, a.vocab.as_deref(), &a.device, a.quantize)?;
    let items = read_items(&a.input, enc.feature_dim())?;
    let mut layout = a.task.layout();
    if let Some(t) = a.max_seq_length {
        layout.max_seq_length = t;
    }
    if let Some(r) = a.max_img_seq_length {
        layout.max_img_seq_length = r;
    }
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("encode {bar:30} {pos}/{len} items · {per_sec} · ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tensors = enc.encode(&items, &layout, a.batch_size, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let head = enc.head();
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
