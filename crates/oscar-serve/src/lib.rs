//! `oscar serve`: an HTTP inference server for Oscar's task models (docs/serve.md), after
//! Hugging Face's text-embeddings-inference — axum for HTTP only, one thread owning the models
//! ([`worker`]) behind a queue batched by what is waiting, an immediate 429 beyond the
//! concurrency limit, Prometheus metrics, OpenAPI, graceful shutdown — and a web page to look at
//! the served world's scenes and ask the models about them.

pub mod error;
pub mod load;
mod routes;
pub mod schema;
pub mod upload;
pub mod worker;
pub mod world;

use anyhow::Context;
use candle_core::Device;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use oscar::infer::{Answering, Captioning, Encoder, Matching};
use oscar::tasks::retrieval::saved_settings;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use worker::{Models, Worker};
use world::ServedWorld;

/// What to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub caption: Option<PathBuf>,
    pub vqa: Option<PathBuf>,
    pub retrieval: Option<PathBuf>,
    /// The checkpoint `/embed` encodes with (default: the retrieval model).
    pub embed: Option<PathBuf>,
    /// A world directory whose images requests may name by id.
    pub world: Option<PathBuf>,
    /// VinVL's detector (`oscar detect`): requests may then send photos (`"image": base64`, a
    /// multipart form), and `POST /detect` answers.
    pub detector: Option<PathBuf>,
    pub device: Device,
    /// The models' `Linear` layers in f32 or dynamic int8.
    pub precision: oscar::infer::Precision,
    pub limits: Limits,
}

/// What one request and the server as a whole may ask (text-embeddings-inference's knobs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Limits {
    /// Inputs in flight (an image to caption, a question, a pair to score); beyond: 429.
    pub max_concurrent_requests: usize,
    /// Inputs in one request.
    pub max_client_batch_size: usize,
    /// Texts or images of one ranking, pairs of one `/score`.
    pub max_candidates: usize,
    pub max_beams: usize,
    /// Rows of one batch of the model thread (a caption counts its beams).
    pub max_batch_rows: usize,
    /// Request body bytes.
    pub payload_limit: usize,
    #[serde(serialize_with = "secs")]
    pub request_timeout: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_requests: 512,
            max_client_batch_size: 32,
            max_candidates: 100,
            max_beams: 10,
            max_batch_rows: 32,
            // One 50-region image of 2054 floats is ~550 kB of base64.
            payload_limit: 8_000_000,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub worker: Worker,
    pub world: Option<ServedWorld>,
    /// Turns photos into regions and tags; one photo at a time (it uses every core).
    pub detector: Option<Arc<oscar_detect::Detector>>,
    detect_gate: Arc<Semaphore>,
    /// The region width every loaded model reads.
    pub feature_dim: usize,
    pub limits: Limits,
    permits: Arc<Semaphore>,
    info: serde_json::Value,
    prometheus: PrometheusHandle,
    shutting_down: AtomicBool,
}

/// The process-wide Prometheus recorder (metrics has one global recorder; tests start several
/// servers in one process).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // text-embeddings-inference's buckets: 35 geometric from 15 µs, ×1.5.
            let durations: Vec<f64> = (0..35).map(|i| 1.5e-5 * 1.5f64.powi(i)).collect();
            let sizes: Vec<f64> = (0..13).map(|i| 2f64.powi(i)).collect();
            // The bucket lists are never empty, the only way setting them fails; a builder
            // without them (summaries instead of histograms) is the fallback all the same.
            let b = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &durations)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Prefix("oscar_batch_".into()), &sizes)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = b.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application's): then
            // our metrics go there and /metrics shows only what this handle saw.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl AppState {
    /// Loads the models, the world and the limits; the model thread starts here.
    pub fn load(cfg: &ServeConfig) -> anyhow::Result<Self> {
        let dev = &cfg.device;
        let ctx =
            |what: &str, d: &PathBuf| format!("loading the {what} model from {}", d.display());
        let mut models = Models::default();
        let mut dims: Vec<(String, usize)> = Vec::new();
        if let Some(d) = &cfg.caption {
            let m =
                Captioning::load_at(d, dev, cfg.precision).with_context(|| ctx("captioning", d))?;
            dims.push((format!("--caption {}", d.display()), m.feature_dim()));
            models.caption = Some(m);
        }
        if let Some(d) = &cfg.vqa {
            let m = Answering::load_at(d, dev, cfg.precision)
                .with_context(|| ctx("question answering", d))?;
            dims.push((format!("--vqa {}", d.display()), m.feature_dim()));
            models.vqa = Some(m);
        }
        if let Some(d) = &cfg.retrieval {
            let m =
                Matching::load_at(d, dev, cfg.precision).with_context(|| ctx("retrieval", d))?;
            dims.push((format!("--retrieval {}", d.display()), m.feature_dim()));
            models.matching = Some(m);
        }
        if let Some(d) = cfg.embed.as_ref().or(cfg.retrieval.as_ref()) {
            let m = Encoder::load_at(d, None, dev, cfg.precision)
                .with_context(|| ctx("embedding", d))?;
            let s = saved_settings(d)?;
            let layout = oscar::data::tensorize::Layout {
                max_seq_length: s.max_seq_length,
                max_img_seq_length: s.max_img_seq_length,
                truncation: oscar::data::tensorize::Truncation::TextFirst,
            };
            dims.push((format!("--embed {}", d.display()), m.feature_dim()));
            models.embed = Some((m, layout));
        }
        let Some((_, feature_dim)) = dims.first().cloned() else {
            anyhow::bail!(
                "no model to serve: give --caption, --vqa, --retrieval or --embed (or --demo DIR)"
            );
        };
        if let Some((which, d)) = dims.iter().find(|(_, d)| *d != feature_dim) {
            anyhow::bail!("{which} reads {d}-d regions but {} reads {feature_dim}-d: serve models of one feature width", dims[0].0);
        }
        let world = cfg
            .world
            .as_ref()
            .map(|w| {
                ServedWorld::open(w, feature_dim)
                    .with_context(|| format!("reading the world {}", w.display()))
            })
            .transpose()?;
        let detector = load_detector(cfg.detector.as_deref(), feature_dim)?;
        let worker = Worker::start(models, cfg.limits.max_batch_rows)
            .context("starting the model thread")?;
        let model = |d: &Option<PathBuf>| d.as_ref().map(|d| serde_json::json!({"dir": d}));
        let info = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "device": format!("{:?}", cfg.device),
            "precision": cfg.precision,
            "feature_dim": feature_dim,
            "models": {
                "caption": cfg.caption.as_ref().map(|d| serde_json::json!({"dir": d, "max_caption_length": worker.loaded.max_caption_length})),
                "vqa": model(&cfg.vqa),
                "retrieval": cfg.retrieval.as_ref().map(|d| serde_json::json!({"dir": d, "first_stages": if worker.loaded.learned_first_stage { vec!["tags", "learned"] } else { vec!["tags"] }})),
                "embed": model(&cfg.embed.clone().or(cfg.retrieval.clone())),
            },
            "limits": cfg.limits,
            "detector": detector.as_ref().map(|d| serde_json::json!({
                "dir": cfg.detector,
                "classes": d.config.num_classes - 1,
                "attributes": d.config.num_attributes.saturating_sub(1),
                "feature_dim": d.config.feature_dim(),
            })),
            "world": world.as_ref().map(|w| serde_json::json!({
                "dir": w.dir,
                "images": w.images.len(),
                "ids": w.images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            })),
        });
        Ok(AppState {
            worker,
            world,
            detector,
            detect_gate: Arc::new(Semaphore::new(1)),
            feature_dim,
            limits: cfg.limits.clone(),
            permits: Arc::new(Semaphore::new(cfg.limits.max_concurrent_requests)),
            info,
            prometheus: prometheus(),
            shutting_down: AtomicBool::new(false),
        })
    }
}

/// VinVL's detector for photos, whose regions must be as wide as the models read.
fn load_detector(
    dir: Option<&std::path::Path>,
    feature_dim: usize,
) -> anyhow::Result<Option<Arc<oscar_detect::Detector>>> {
    let Some(d) = dir else { return Ok(None) };
    let det = oscar_detect::Detector::load(d)
        .with_context(|| format!("loading the detector from {}", d.display()))?;
    let width = det.config.feature_dim() + 6;
    if width != feature_dim {
        anyhow::bail!(
            "the detector in {} gives {width}-d regions ({}-d features + 6 box dimensions) but the models read {feature_dim}-d",
            d.display(),
            det.config.feature_dim()
        );
    }
    Ok(Some(Arc::new(det)))
}

/// The HTTP routes over a loaded state.
pub fn app(state: Arc<AppState>) -> axum::Router {
    routes::router(state)
}

/// Logs to stderr: `RUST_LOG`-style filter (default `info`), JSON lines with `json`.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().flatten_event(true).try_init()
    } else {
        b.try_init()
    };
}

/// Serves `state` on `listener` until `shutdown` resolves; in-flight requests are answered,
/// then the model thread finishes its queue and stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = {
        let h = state.prometheus.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                h.run_upkeep();
            }
        })
    };
    let st = state.clone();
    let r = axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            st.shutting_down
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!("shutting down: answering the requests in flight");
        })
        .await;
    upkeep.abort();
    r
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `oscar serve`: loads, binds `addr`, prints the address and serves until Ctrl-C / SIGTERM.
pub fn run(cfg: &ServeConfig, addr: std::net::SocketAddr, json_logs: bool) -> anyhow::Result<()> {
    init_logging(json_logs);
    let state = Arc::new(AppState::load(cfg)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(
            feature_dim = state.feature_dim,
            world_images = state.world.as_ref().map_or(0, |w| w.images.len()),
            "serving"
        );
        // The one line scripts wait for (the port is chosen by the system with --port 0).
        println!("oscar serve: listening on http://{local}");
        serve(listener, state.clone(), shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    state.worker.shutdown();
    Ok(())
}
