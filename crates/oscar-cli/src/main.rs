//! `oscar`: the command line of oscar-rs. Subcommands mirror the reference's scripts.

/// `println!` for a command's output that a closed reader does not turn into a panic:
/// `oscar eval vqa … | head -1` ends quietly (exit 0, as ripgrep does) once the reader is gone.
macro_rules! outln {
    () => { $crate::write_stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), true) };
}

/// `print!` with the same closed-reader handling as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), false) };
}

/// `eprintln!` for notes and errors: a closed stderr drops them instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod bench;
mod caption;
mod demo;
mod demo_stages;
mod detect;
mod encode;
mod eval;
mod experiment;
mod inspect;
mod merge;
mod pretrain;
mod qa;
mod search;
mod serve;
mod train;
mod world;

use anyhow::Result;

// candle allocates a fresh buffer for every op; glibc returns large ones to the kernel each time
// (page faults: a third of a training step was system time). mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc 3's option numbers (`mi_option_t` in its mimalloc.h).
const MI_OPTION_ALLOW_LARGE_OS_PAGES: i32 = 6;
const MI_OPTION_PURGE_DELAY: i32 = 15;
unsafe extern "C" {
    fn mi_option_set(option: i32, value: std::ffi::c_long);
}

/// Keeps freed pages instead of returning them to the kernel (purging made the kernel zero
/// every re-used page: 11–35 % of an Oscar-B training step was `clear_page`) and lets mimalloc
/// use transparent huge pages. `MIMALLOC_PURGE_DELAY` / `MIMALLOC_ALLOW_LARGE_OS_PAGES` in the
/// environment still win. Measured in BENCHMARKS.md.
fn tune_allocator() {
    for (option, env, value) in [
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", -1),
        (
            MI_OPTION_ALLOW_LARGE_OS_PAGES,
            "MIMALLOC_ALLOW_LARGE_OS_PAGES",
            1,
        ),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
            unsafe { mi_option_set(option, value) };
        }
    }
}
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "oscar",
    version,
    about = "Oscar / VinVL vision-language models in Rust"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
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
        /// INPUT is a VinVL detector folder (.pth + label map): write model.safetensors,
        /// detector.json and labelmap.json to OUTPUT.
        #[arg(long, conflicts_with_all = ["config", "vocab", "init_missing", "quantize"])]
        detector: bool,
        /// `int8`: store every Linear weight as int8 with a per-channel scale (`KEY_scale`), a
        /// quarter of the f32 size; serve it with `--quantize int8`. A task model's settings
        /// (caption.json, qa.json, …) are copied along.
        #[arg(long, value_name = "int8|f32", default_value = "f32")]
        quantize: oscar::nn::int8::Precision,
    },
    /// VinVL's object detector over image files: boxes, classes, attributes and 2048-d region
    /// features, written as features.tsv + predictions.tsv (resumable).
    Detect(detect::DetectArgs),
    /// Join the folders of `oscar detect --shard K/N` runs into one (ids must not repeat).
    MergeDetections(detect::MergeArgs),
    /// Join the part files of `--shard K/N` runs of `oscar eval retrieval`, `oscar caption` or
    /// `oscar answer` into what one run writes, with its metrics.
    Merge(merge::MergeArgs),
    /// Tensorize items (text, tags, region features) and run the model: writes the inputs and
    /// every output (sequence, pooled, each head's logits) to a safetensors file.
    Encode(encode::EncodeArgs),
    /// Pre-train with Oscar's objectives (masked tokens over words and tags + contrastive).
    Pretrain(pretrain::PretrainArgs),
    /// Fine-tune for a task: retrieval, caption, vqa, gqa, nlvr2.
    #[command(subcommand)]
    Train(train::TrainCmd),
    /// Match probability of one image against one or more texts (a retrieval checkpoint).
    Score(search::ScoreArgs),
    /// Caption images with a captioning checkpoint: beam, greedy or sampling, with the KV cache,
    /// constrained beam search (`--cbs`), and scores against references (`--refs`).
    Caption(caption::CaptionArgs),
    /// Answer questions about images with a VQA/GQA checkpoint: one question, or a whole file.
    Answer(qa::AnswerArgs),
    /// Top-k images for a text query, or captions for an image, from a gallery.
    Retrieve(search::RetrieveArgs),
    /// Time a workload (a pre-training step, or beam-5 captioning cached vs re-encoding) and print
    /// JSON; see tools/reference/bench_pytorch.py and bench_caption_pytorch.py.
    Bench(bench::BenchArgs),
    /// Read every file of a dataset directory and report all problems at once.
    Check {
        /// Dataset directory (searched recursively).
        dir: PathBuf,
        /// Region feature width (default: the world's, from world.json, else 2054).
        #[arg(long)]
        img_feature_dim: Option<usize>,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The synthetic world: generate it in the reference's file formats.
    #[command(subcommand)]
    World(world::WorldCmd),
    /// Evaluate captions, VQA answers or retrieval scores with the official metrics.
    #[command(subcommand)]
    Eval(eval::EvalCmd),
    /// An HTTP inference server: captioning, VQA, ranking, scoring and embeddings with dynamic
    /// batching, Prometheus metrics, OpenAPI and a web page (docs/serve.md).
    Serve(serve::ServeArgs),
    /// Drive a running `oscar serve` at fixed concurrency: requests/s and latency percentiles.
    Loadtest(serve::LoadArgs),
    /// Experiments over several runs: `ablation` runs the demo's arms over seeds and reports
    /// what holds across them.
    #[command(subcommand)]
    Experiment(experiment::ExperimentCmd),
    /// The main job: the synthetic world, pre-training with and without tags, retrieval,
    /// captioning and VQA fine-tuning of three arms, evaluation, and a report (`--quick`: about a
    /// minute; `--budget long`: four times the steps).
    Demo(demo::DemoArgs),
}

/// Whether `cmd` trains data-parallel when an MPI launcher starts it (`mpirun -np N oscar …`).
fn trains_data_parallel(cmd: &Cmd) -> bool {
    matches!(cmd, Cmd::Pretrain(_))
        || matches!(cmd, Cmd::Train(t) if !matches!(t, train::TrainCmd::FirstStage(_)))
}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    // Under `mpirun`, every rank runs the same command; the trainer splits each batch over the
    // ranks, and ranks other than 0 end once training is over (rank 0 evaluates and writes).
    let comm = match oscar::train::collective::from_environment() {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}");
            std::process::exit(2);
        }
    };
    if comm.size() > 1 {
        if !trains_data_parallel(&cli.cmd) {
            if comm.rank() == 0 {
                errln!(
                    "error: started by an MPI launcher with {} ranks, but only `oscar pretrain` \
                     and `oscar train <task>` (not first-stage) train data-parallel; batch \
                     inference splits over processes with --shard K/N and `oscar merge`",
                    comm.size()
                );
            }
            comm.abort(2);
        }
        oscar::train::collective::install(comm.clone(), true);
    }
    let res = run(cli.cmd);
    if let Err(e) = res {
        if comm.size() > 1 {
            errln!("error (rank {} of {}): {e:#}", comm.rank(), comm.size());
            comm.abort(1);
        }
        errln!("error: {e:#}");
        std::process::exit(1);
    }
    // The last handle of an MPI collective finalises MPI.
    drop(oscar::train::collective::uninstall());
    drop(comm);
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Inspect { path, json } => inspect::inspect(&path, json),
        Cmd::Convert {
            input,
            output,
            detector: true,
            ..
        } => oscar_detect::convert::convert(&input, &output)
            .map(|_| outln!("detector converted to {}", output.display()))
            .map_err(Into::into),
        Cmd::Convert {
            input,
            output,
            config,
            vocab,
            init_missing,
            detector: false,
            quantize,
        } => inspect::convert(
            &input,
            &output,
            config.as_deref(),
            vocab.as_deref(),
            init_missing,
            quantize,
        ),
        Cmd::Encode(args) => encode::encode(&args),
        Cmd::Detect(a) => detect::detect(&a),
        Cmd::MergeDetections(a) => detect::merge(&a),
        Cmd::Merge(a) => merge::run(&a),
        Cmd::Eval(cmd) => eval::run(&cmd),
        Cmd::World(cmd) => world::run(&cmd),
        Cmd::Pretrain(a) => pretrain::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Train(cmd) => train::run(&cmd),
        Cmd::Score(a) => search::score(&a),
        Cmd::Answer(a) => qa::answer(&a),
        Cmd::Caption(a) => caption::caption(&a),
        Cmd::Retrieve(a) => search::retrieve(&a),
        Cmd::Check {
            dir,
            img_feature_dim,
            json,
        } => check(&dir, img_feature_dim, json.as_deref()),
        Cmd::Demo(a) => demo::run(&a),
        Cmd::Experiment(c) => experiment::run(&c),
        Cmd::Serve(a) => serve::serve(&a),
        Cmd::Loadtest(a) => serve::loadtest(&a),
    }
}

/// `oscar check`: every known file, every problem.
fn check(dir: &std::path::Path, dim: Option<usize>, json: Option<&std::path::Path>) -> Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("{}: not a directory", dir.display());
    }
    let dim = match dim {
        Some(d) => d,
        None => world_dim(dir)?,
    };
    let reports = oscar::data::check::check_dataset(dir, dim);
    let mut out = String::new();
    let mut problems = 0;
    for r in &reports {
        let rel = r.path.strip_prefix(dir).unwrap_or(&r.path).display();
        if r.problems.is_empty() {
            out += &format!("ok       {rel} ({}, {} items)\n", r.kind, r.items);
        } else {
            out += &format!("PROBLEM  {rel} ({})\n", r.kind);
            for p in &r.problems {
                out += &format!("           {p}\n");
            }
            problems += r.problems.len();
        }
    }
    out += &format!(
        "{} files checked (img_feature_dim {dim}), {problems} problems\n",
        reports.len()
    );
    emit(&out)?;
    if let Some(p) = json {
        oscar::checkpoint::write_atomic(p, serde_json::to_string_pretty(&reports)?.as_bytes())?;
    }
    if reports.is_empty() {
        anyhow::bail!("{}: no file oscar-rs knows was found", dir.display());
    }
    if problems > 0 {
        anyhow::bail!("{problems} problems found");
    }
    Ok(())
}

/// `--device cpu|cuda:N|metal:N`: where a command computes. `cuda` without a number is GPU 0,
/// or under an MPI launcher the GPU of the rank's local rank (one GPU per rank, as NCCL wants).
pub(crate) fn parse_device(s: &str) -> std::result::Result<candle_core::Device, String> {
    let (kind, n) = match s.split_once(':') {
        Some((kind, index)) => (
            kind,
            index
                .parse()
                .map_err(|_| format!("device {s:?}: expected cpu, cuda:N or metal:N"))?,
        ),
        None if s == "cuda" && oscar::train::collective::launched_by_mpi() => {
            (s, oscar::train::collective::local_rank().unwrap_or(0))
        }
        None => (s, 0),
    };
    let unsupported = |e: candle_core::Error| {
        // The first line only: candle appends a backtrace when RUST_BACKTRACE is set.
        let e = e.to_string();
        let e = e.lines().next().unwrap_or_default();
        let built = match kind {
            "cuda" => candle_core::utils::cuda_is_available(),
            _ => candle_core::utils::metal_is_available(),
        };
        match built {
            true => format!("device {s}: no usable {kind} device: {e} (the CPU always works)"),
            false => format!(
                "device {s}: {e} (this binary has no {kind} support: build it with `--features \
                 {kind}`; the CPU always works)"
            ),
        }
    };
    match kind {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => candle_core::Device::new_cuda(n).map_err(unsupported),
        "metal" => candle_core::Device::new_metal(n).map_err(unsupported),
        _ => Err(format!("device {s:?}: expected cpu, cuda:N or metal:N")),
    }
}

/// What every training command takes about its files: checkpoints, evaluation, resume.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct RunArgs {
    /// Save OUT/checkpoint-N (model, optimizer, trainer state) every N steps; 0: only at the end.
    #[arg(long, default_value_t = 0)]
    pub save_every: u64,
    /// Evaluate on the held-out split every N steps (logged in metrics.jsonl); 0: only at the end.
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// Keep the last K checkpoints (0: all).
    #[arg(long, default_value_t = 2)]
    pub keep_last: usize,
    /// Keep the model with the highest value of this evaluation metric in OUT/best.
    #[arg(long)]
    pub keep_best: Option<String>,
    /// Continue an interrupted run from one of its OUT/checkpoint-N directories (same settings).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Where to train: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: candle_core::Device,
}

impl RunArgs {
    pub fn files(
        &self,
        out: &std::path::Path,
        vocab: &std::path::Path,
    ) -> oscar::tasks::finetune::RunFiles {
        oscar::tasks::finetune::RunFiles {
            device: self.device.clone(),
            out: Some(out.to_path_buf()),
            vocab: Some(vocab.to_path_buf()),
            save_every: self.save_every,
            eval_every: self.eval_every,
            keep_last: self.keep_last,
            keep_best: self.keep_best.clone(),
            resume: self.resume.clone(),
        }
    }
}

/// Prints to stdout; a closed pipe (`oscar inspect … | head`) ends the process quietly.
pub(crate) fn emit(text: &str) -> Result<()> {
    out!("{text}");
    Ok(())
}

/// Writes a command's output. A reader that went away (`EPIPE`: `| head`, `| true`) ends the
/// process quietly with status 0 — the output nobody reads is all that is lost, and files are
/// written atomically. SIGPIPE stays ignored (Rust's default) so that a dead child process
/// (the METEOR or PTB jar) is reported as an error rather than killing us. Any other write
/// error (a full disk behind `> file`) is reported and ends the process with status 1.
pub(crate) fn write_stdout(args: std::fmt::Arguments, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            errln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// The region-feature width of a world-style dataset directory (world.json), else 2054.
pub(crate) fn world_dim(dir: &std::path::Path) -> Result<usize> {
    Ok(oscar::tasks::finetune::world_region_dim(dir, 2054)?)
}

/// A progress bar over `len` steps: position, rate and ETA, with a message for loss and metrics.
pub(crate) fn steps_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{pos}}/{{len}} · {{msg}} · {{per_sec}} · ETA {{eta}}"
    ));
    bar.set_style(style.unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    bar
}

/// Per-step display of a fine-tuning run: the progress bar and a learning curve of the metric
/// in percent, averaged over windows of 20 steps (the trainer itself writes `metrics.jsonl`).
pub(crate) struct StepLog {
    bar: indicatif::ProgressBar,
    window: Vec<f64>,
    pub curve: Vec<(f64, f64)>,
    metric: &'static str,
}

impl StepLog {
    pub fn new(steps: u64, what: &str, metric: &'static str) -> Self {
        StepLog {
            bar: steps_bar(steps, what),
            window: Vec::new(),
            curve: Vec::new(),
            metric,
        }
    }

    /// Records step `k`'s loss and metric (a fraction in [0, 1]).
    pub fn record(&mut self, k: u64, loss: f64, value: f64) {
        self.bar.set_position(k);
        self.bar.set_message(format!(
            "loss {loss:.3} · {} {value:.2}",
            self.metric.replace('_', " ")
        ));
        self.window.push(value);
        if self.window.len() == 20 {
            self.curve
                .push((k as f64, 100.0 * self.window.iter().sum::<f64>() / 20.0));
            self.window.clear();
        }
    }

    /// Clears the bar; returns the learning curve.
    pub fn finish(self) -> Vec<(f64, f64)> {
        self.bar.finish_and_clear();
        self.curve
    }
}
