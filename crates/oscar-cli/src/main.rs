//! `oscar`: the command line of oscar-rs. Subcommands mirror the reference's scripts.

mod encode;
mod eval;
mod inspect;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "oscar", version, about = "Oscar / VinVL vision-language models in Rust")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show a checkpoint: format, config, parameter count, heads, and every key with its shape.
    Inspect {
        /// A checkpoint directory (config.json + model.safetensors or pytorch_model.bin) or a weights file.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Convert any supported checkpoint (zip or legacy pytorch_model.bin, safetensors) into a
    /// directory with model.safetensors, config.json and vocab.txt (HF transformers loads it back).
    Convert {
        /// Input checkpoint directory or weights file.
        input: PathBuf,
        /// Output directory (created; files are replaced atomically).
        output: PathBuf,
        /// config.json to use instead of the one next to the weights.
        #[arg(long)]
        config: Option<PathBuf>,
        /// vocab.txt to copy instead of the one next to the weights.
        #[arg(long)]
        vocab: Option<PathBuf>,
        /// Create parameters the checkpoint lacks (e.g. the image embedding of a plain BERT)
        /// with BERT's initialisation instead of failing; they are listed.
        #[arg(long)]
        init_missing: bool,
    },
    /// Tensorize items (text, tags, region features) and run the model: writes the inputs and
    /// every output (sequence, pooled, each head's logits) to a safetensors file.
    Encode(encode::EncodeArgs),
    /// Evaluate captions, VQA answers or retrieval scores with the official metrics.
    #[command(subcommand)]
    Eval(eval::EvalCmd),
    /// The end-to-end demo on the synthetic world (see README for what exists so far).
    Demo,
}

fn main() {
    let cli = Cli::parse();
    let res: Result<()> = match cli.cmd {
        Cmd::Inspect { path, json } => inspect::inspect(&path, json),
        Cmd::Convert { input, output, config, vocab, init_missing } => inspect::convert(&input, &output, config.as_deref(), vocab.as_deref(), init_missing),
        Cmd::Encode(args) => encode::encode(&args),
        Cmd::Eval(cmd) => eval::run(&cmd),
        Cmd::Demo => demo(),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Prints to stdout; a closed pipe (`oscar inspect … | head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Until the synthetic world and the training loop land, the demo states what this build does.
fn demo() -> Result<()> {
    let lines = [
        "oscar-rs: the end-to-end demo (synthetic world -> pre-training with and without tags ->",
        "retrieval, captioning, VQA) is not built yet.",
        "",
        "What works in this build:",
        "  oscar inspect PATH        read an Oscar/VinVL/BERT checkpoint (zip or legacy .bin, safetensors)",
        "  oscar convert IN OUT      convert it to model.safetensors + config.json + vocab.txt",
        "  oscar encode --checkpoint DIR --input items.jsonl --out out.safetensors",
        "                            tensorize text + tags + region features and run every head",
        "  oscar eval caption|vqa|cider-df|retrieval",
        "                            BLEU/METEOR/ROUGE-L/CIDEr(-D), VQA accuracy, recall@K as the official tools",
        "",
        "Every head matches PyTorch + transformers to 1e-5; run the tests with: bash tools/test.sh",
    ];
    emit(&(lines.join("\n") + "\n"))
}
