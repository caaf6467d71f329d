//! `oscar encode`: items (text, tags, region features) → tensorized inputs and every output of
//! the model, in one safetensors file (`oscar::infer::Encoder` does the work). Embeddings for
//! users, and a way to cross-check numerics.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oscar::checkpoint::write_atomic;
use oscar::data::items::{read_items, TaskLayout};
use oscar::data::shard::{digest, Shard};
use oscar::infer::Encoder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// Encode only part K of N of the items (every N-th from the K-th, counting from 0: a Slurm
    /// array task, a Kubernetes indexed job); `--out` is then that shard's part, which
    /// `oscar merge` joins with the others into what one run writes. A shard is written whole
    /// when done: a rerun of an unfinished shard encodes it again.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
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
    let all_ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let shard = a.shard.unwrap_or(Shard::ALL);
    let positions: Vec<usize> = (0..items.len()).filter(|&p| shard.keeps(p)).collect();
    let mine: Vec<_> = positions.iter().map(|&p| items[p].clone()).collect();
    bar.set_length(mine.len() as u64);
    let tensors = enc.encode(&mine, &layout, a.batch_size, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let head = enc.head();
    let ids: Vec<&str> = mine.iter().map(|i| i.id.as_str()).collect();
    let mut meta: HashMap<String, String> = [
        ("ids".to_string(), serde_json::to_string(&ids)?),
        ("head".to_string(), format!("{head:?}")),
        ("task".to_string(), format!("{:?}", a.task).to_lowercase()),
    ]
    .into();
    if let Some(sh) = a.shard {
        // What `oscar merge` checks: the same job (inputs, model, layout) in every part.
        let settings = serde_json::json!({
            "checkpoint": a.checkpoint, "quantize": format!("{:?}", a.quantize),
            "max_seq_length": layout.max_seq_length, "max_img_seq_length": layout.max_img_seq_length,
        });
        meta.extend([
            ("kind".to_string(), "encoded".to_string()),
            ("shard".to_string(), format!("{}/{}", sh.index, sh.count)),
            ("inputs".to_string(), items.len().to_string()),
            ("inputs_digest".to_string(), digest(&all_ids)),
            ("positions".to_string(), serde_json::to_string(&positions)?),
            ("settings".to_string(), settings.to_string()),
        ]);
    }
    let bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))?;
    write_atomic(&a.out, &bytes)?;
    let names: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    outln!(
        "wrote {} ({} items, {head:?}): {}",
        a.out.display(),
        mine.len(),
        names.join(", ")
    );
    Ok(())
}

/// One `oscar encode --shard` part: its metadata and tensors.
struct EncodedPart {
    path: PathBuf,
    meta: HashMap<String, String>,
    tensors: HashMap<String, candle_core::Tensor>,
}

impl EncodedPart {
    fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow!("{}: not a safetensors file: {e}", path.display()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("kind").map(String::as_str) != Some("encoded") {
            bail!(
                "{}: not a part of `oscar encode --shard K/N` (its metadata has no kind \"encoded\")",
                path.display()
            );
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu)?;
        Ok(EncodedPart {
            path: path.to_path_buf(),
            meta,
            tensors,
        })
    }

    fn get(&self, key: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{}: metadata lacks {key:?}", self.path.display()))
    }
}

/// Where each input's rows are, (part, row), in input order, and the inputs' ids; refuses parts
/// of other jobs, duplicate shards and missing ones.
#[allow(clippy::type_complexity)]
fn input_order(parts: &[EncodedPart]) -> Result<(Vec<(usize, usize)>, Vec<String>)> {
    let first = &parts[0];
    let shards: usize = first
        .get("shard")?
        .split_once('/')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| anyhow!("{}: bad shard", first.path.display()))?;
    let inputs: usize = first.get("inputs")?.parse()?;
    let mut seen = vec![false; shards];
    // position in the input list → (part, row in that part)
    let mut at: Vec<Option<(usize, usize)>> = vec![None; inputs];
    let mut ids: Vec<String> = vec![String::new(); inputs];
    for (k, part) in parts.iter().enumerate() {
        for key in ["inputs", "inputs_digest", "settings", "head", "task"] {
            if part.get(key)? != first.get(key)? {
                bail!(
                    "{}: {key} differs from {}'s: a part of another job",
                    part.path.display(),
                    first.path.display()
                );
            }
        }
        let sh: Shard = part.get("shard")?.parse().map_err(|e: String| anyhow!(e))?;
        if sh.count != shards || seen[sh.index] {
            bail!(
                "{}: shard {}/{} is a duplicate or of another split",
                part.path.display(),
                sh.index,
                sh.count
            );
        }
        seen[sh.index] = true;
        let positions: Vec<usize> = serde_json::from_str(part.get("positions")?)?;
        let part_ids: Vec<String> = serde_json::from_str(part.get("ids")?)?;
        for (row, (&p, id)) in positions.iter().zip(part_ids).enumerate() {
            if p >= inputs || !sh.keeps(p) {
                bail!("{}: position {p} is not this shard's", part.path.display());
            }
            at[p] = Some((k, row));
            ids[p] = id;
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        bail!("shard {missing}/{shards} is missing: pass every part");
    }
    let order: Vec<(usize, usize)> = at
        .into_iter()
        .enumerate()
        .map(|(p, a)| a.ok_or_else(|| anyhow!("no part holds input {p}")))
        .collect::<Result<_>>()?;
    Ok((order, ids))
}

/// Whether `path` holds safetensors (parts of `oscar encode --shard`) rather than JSON parts.
pub fn is_encoded_part(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

/// `oscar merge` of `oscar encode --shard` parts: every tensor's rows put back in input order,
/// the ids with them; what one `oscar encode` of all the items writes.
pub fn merge_encoded(parts: &[PathBuf], out: &Path) -> Result<()> {
    let parts = parts
        .iter()
        .map(|p| EncodedPart::read(p))
        .collect::<Result<Vec<_>>>()?;
    let first = &parts[0];
    let (order, ids) = input_order(&parts)?;
    let inputs = order.len();
    let mut merged = Vec::new();
    for name in first.tensors.keys() {
        let stacked: Vec<candle_core::Tensor> = parts
            .iter()
            .map(|p| {
                p.tensors
                    .get(name)
                    .cloned()
                    .ok_or_else(|| anyhow!("{}: lacks tensor {name}", p.path.display()))
            })
            .collect::<Result<_>>()?;
        let offsets: Vec<usize> = stacked
            .iter()
            .scan(0, |acc, t| {
                let o = *acc;
                *acc += t.dim(0).unwrap_or(0);
                Some(o)
            })
            .collect();
        let index: Vec<u32> = order
            .iter()
            .map(|&(k, row)| (offsets[k] + row) as u32)
            .collect();
        let all = candle_core::Tensor::cat(&stacked, 0)?;
        let idx = candle_core::Tensor::new(index.as_slice(), &candle_core::Device::Cpu)?;
        merged.push((name.clone(), all.index_select(&idx, 0)?));
    }
    let meta: HashMap<String, String> = [
        ("ids".to_string(), serde_json::to_string(&ids)?),
        ("head".to_string(), first.get("head")?.to_string()),
        ("task".to_string(), first.get("task")?.to_string()),
    ]
    .into();
    let bytes =
        safetensors::tensor::serialize(merged.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))?;
    write_atomic(out, &bytes)?;
    outln!(
        "{inputs} items from {} parts: {}",
        parts.len(),
        out.display()
    );
    Ok(())
}
