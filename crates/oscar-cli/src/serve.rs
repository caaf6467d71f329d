//! `oscar serve` (the HTTP server of `oscar-serve`, docs/serve.md) and `oscar loadtest` (its
//! load driver): arguments to configuration, nothing else.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// A captioning model directory (`oscar train caption --out`).
    #[arg(long)]
    caption: Option<PathBuf>,
    /// A VQA or GQA model directory.
    #[arg(long)]
    vqa: Option<PathBuf>,
    /// An image-text matching model directory (`oscar train retrieval --out`): /rank, /score.
    #[arg(long)]
    retrieval: Option<PathBuf>,
    /// The checkpoint /embed encodes with (default: the retrieval model).
    #[arg(long)]
    embed: Option<PathBuf>,
    /// A world directory (`oscar world generate`): requests may name its images by id, and the
    /// web page shows them.
    #[arg(long)]
    world: Option<PathBuf>,
    /// VinVL's detector folder (`oscar detect --help`): requests may send photos instead of
    /// region features (`"image": base64 of a JPEG/PNG file`, or a multipart form:
    /// `curl -F image=@photo.jpg`), `POST /detect` answers the detections, and the web page
    /// gets a photo panel.
    #[arg(long)]
    detector: Option<PathBuf>,
    /// Serve what `oscar demo --out DIR` saved: DIR/models/{caption,vqa,retrieval} and DIR/world.
    #[arg(long, conflicts_with_all = ["caption", "vqa", "retrieval", "world"])]
    demo: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// 0: any free port (the address is printed).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Linear layers in dynamic int8 (`int8`, CPU only) or `f32`.
    #[arg(long, value_name = "int8|f32", default_value = "f32")]
    quantize: oscar::infer::Precision,
    /// Where the models compute: cpu, cuda:N or metal:N.
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// Inputs in flight before requests are refused with 429.
    #[arg(long, default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Inputs (images, questions, items) in one request.
    #[arg(long, default_value_t = 32)]
    max_client_batch_size: usize,
    /// Candidates of one /rank, pairs of one /score.
    #[arg(long, default_value_t = 100)]
    max_candidates: usize,
    #[arg(long, default_value_t = 10)]
    max_beams: usize,
    /// Rows of one batch of the model thread (a caption counts its beams); 1 turns batching off.
    #[arg(long, default_value_t = 32)]
    max_batch_rows: usize,
    /// Request body limit in bytes.
    #[arg(long, default_value_t = 8_000_000)]
    payload_limit: usize,
    /// Seconds a request may wait for its answer before a 503.
    #[arg(long, default_value_t = 60.0)]
    request_timeout: f64,
    /// Logs as JSON lines (stderr).
    #[arg(long)]
    json_logs: bool,
}

pub fn serve(a: &ServeArgs) -> Result<()> {
    if !(a.request_timeout > 0.0 && a.request_timeout.is_finite()) {
        bail!(
            "--request-timeout {}: expected a positive number of seconds",
            a.request_timeout
        );
    }
    if a.max_concurrent_requests == 0 || a.max_client_batch_size == 0 || a.max_batch_rows == 0 {
        bail!("--max-concurrent-requests, --max-client-batch-size and --max-batch-rows must be at least 1");
    }
    let (caption, vqa, retrieval, world) = match &a.demo {
        Some(d) => {
            let m = d.join("models");
            if !m.is_dir() {
                bail!("{}: no models here: run `oscar demo --out {}` (it saves the task models of its tags arm)", m.display(), d.display());
            }
            (
                Some(m.join("caption")),
                Some(m.join("vqa")),
                Some(m.join("retrieval")),
                Some(d.join("world")),
            )
        }
        None => (
            a.caption.clone(),
            a.vqa.clone(),
            a.retrieval.clone(),
            a.world.clone(),
        ),
    };
    let cfg = oscar_serve::ServeConfig {
        caption,
        vqa,
        retrieval,
        embed: a.embed.clone(),
        world,
        detector: a.detector.clone(),
        device: a.device.clone(),
        precision: a.quantize,
        limits: oscar_serve::Limits {
            max_concurrent_requests: a.max_concurrent_requests,
            max_client_batch_size: a.max_client_batch_size,
            max_candidates: a.max_candidates,
            max_beams: a.max_beams,
            max_batch_rows: a.max_batch_rows,
            payload_limit: a.payload_limit,
            request_timeout: Duration::from_secs_f64(a.request_timeout),
        },
    };
    oscar_serve::run(&cfg, std::net::SocketAddr::new(a.host, a.port), a.json_logs)
}

#[derive(Args)]
pub struct LoadArgs {
    /// The server, e.g. http://127.0.0.1:3000 (it must serve a world: requests name its images).
    #[arg(long)]
    url: String,
    /// caption, vqa, rank, score or embed (repeat for several).
    #[arg(long, required = true)]
    workload: Vec<oscar_serve::load::Workload>,
    /// Concurrent clients (comma-separated: one run each).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Requests per run.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Label of this server configuration in the report (e.g. "batched", "rows=1").
    #[arg(long, default_value = "")]
    label: String,
    /// Write the report (JSON) here as well.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn loadtest(a: &LoadArgs) -> Result<()> {
    if a.requests == 0 || a.concurrency.contains(&0) {
        bail!("--requests and every --concurrency must be at least 1");
    }
    let rt = tokio_runtime()?;
    let report = rt.block_on(oscar_serve::load::run(
        &a.url,
        &a.workload,
        &a.concurrency,
        a.requests,
        &a.label,
        |r| {
            errln!(
                "{:<8} c={:<3} {:>7.1} req/s  p50 {:>8.1} ms  p95 {:>8.1}  p99 {:>8.1}  mean batch rows {:>5.1}  errors {}",
                r.workload, r.concurrency, r.requests_per_second, r.p50_ms, r.p95_ms, r.p99_ms, r.mean_batch_rows, r.errors
            )
        },
    ))?;
    let body = serde_json::to_string_pretty(&report)?;
    if let Some(o) = &a.out {
        oscar::checkpoint::write_atomic(o, body.as_bytes())?;
    }
    outln!("{body}");
    Ok(())
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
