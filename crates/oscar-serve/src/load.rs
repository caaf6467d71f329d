//! A load driver for `oscar serve` (`oscar loadtest`): a fixed number of requests at a fixed
//! concurrency over loopback, closed-loop like `hey`, naming the served world's images; it
//! reports requests/s, latency percentiles, status codes and the mean batch size the server
//! says it ran (`x-batch-rows`).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which endpoint to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Caption,
    Vqa,
    Rank,
    Score,
    Embed,
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "caption" => Workload::Caption,
            "vqa" => Workload::Vqa,
            "rank" => Workload::Rank,
            "score" => Workload::Score,
            "embed" => Workload::Embed,
            _ => {
                return Err(format!(
                    "workload {s:?}: expected caption, vqa, rank, score or embed"
                ))
            }
        })
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.path()[1..])
    }
}

impl Workload {
    fn path(self) -> &'static str {
        match self {
            Workload::Caption => "/caption",
            Workload::Vqa => "/vqa",
            Workload::Rank => "/rank",
            Workload::Score => "/score",
            Workload::Embed => "/embed",
        }
    }

    /// Request `i` of the run: about image `i mod n` of the world (beam 5, 20 tokens for
    /// captions; a ranking of 8 captions).
    fn body(self, images: &[WorldImage], i: usize) -> serde_json::Value {
        let im = &images[i % images.len()];
        let id = serde_json::json!({"world_id": im.id});
        let caption = im.captions.first().cloned().unwrap_or_default();
        match self {
            Workload::Caption => serde_json::json!({"inputs": id}),
            Workload::Vqa => {
                let what = im.tags.first().map(String::as_str).unwrap_or("object");
                serde_json::json!({"inputs": {"image": id, "question": format!("what color is the {what}?")}})
            }
            Workload::Rank => {
                let texts: Vec<String> = (0..8)
                    .map(|k| {
                        images[(i + k) % images.len()]
                            .captions
                            .first()
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                serde_json::json!({"image": id, "texts": texts})
            }
            Workload::Score => serde_json::json!({"pairs": [{"image": id, "text": caption}]}),
            Workload::Embed => serde_json::json!({"inputs": [{"image": id, "text": caption}]}),
        }
    }
}

#[derive(serde::Deserialize)]
struct WorldImage {
    id: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    captions: Vec<String>,
}

#[derive(serde::Deserialize)]
struct WorldList {
    images: Vec<WorldImage>,
}

/// One workload at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub workload: Workload,
    pub concurrency: usize,
    pub requests: usize,
    /// Status code → count (0: no answer).
    pub status: BTreeMap<u16, usize>,
    /// Requests not answered 200.
    pub errors: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Mean rows of the batches the successful requests ran in (`x-batch-rows`).
    pub mean_batch_rows: f64,
    pub mean_queue_ms: f64,
    pub mean_inference_ms: f64,
}

/// All runs against one server.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub url: String,
    pub label: String,
    /// The server's `/info`.
    pub server: serde_json::Value,
    pub runs: Vec<RunReport>,
}

/// The `q`-quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

struct Sample {
    status: u16,
    ms: f64,
    batch_rows: Option<f64>,
    queue_ms: Option<f64>,
    inference_ms: Option<f64>,
}

/// Drives `url` with each workload at each concurrency (`requests` requests per run, after 2
/// warm-up requests per workload); `progress` sees each run's report.
pub async fn run(
    url: &str,
    workloads: &[Workload],
    concurrency: &[usize],
    requests: usize,
    label: &str,
    mut progress: impl FnMut(&RunReport),
) -> anyhow::Result<LoadReport> {
    let url = url.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(300))
        .build()?;
    let get = |p: &str| client.get(format!("{url}{p}")).send();
    let server: serde_json::Value = get("/info").await?.error_for_status()?.json().await?;
    let world = get("/world").await?;
    if !world.status().is_success() {
        anyhow::bail!("{url}/world answered {}: the load test names the served world's images; start the server with --world or --demo", world.status());
    }
    let images = Arc::new(world.json::<WorldList>().await?.images);
    if images.is_empty() {
        anyhow::bail!("{url}/world lists no images");
    }
    let mut runs = Vec::new();
    for &w in workloads {
        for i in 0..2 {
            let r = client
                .post(format!("{url}{}", w.path()))
                .json(&w.body(&images, i))
                .send()
                .await?;
            if !r.status().is_success() {
                anyhow::bail!(
                    "{} warm-up answered {}: {}",
                    w.path(),
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
        }
        for &c in concurrency {
            let next = Arc::new(AtomicUsize::new(0));
            let samples = Arc::new(Mutex::new(Vec::with_capacity(requests)));
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..c {
                let (client, next, samples, images, url) = (
                    client.clone(),
                    next.clone(),
                    samples.clone(),
                    images.clone(),
                    url.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= requests {
                            break;
                        }
                        let t = Instant::now();
                        let r = client
                            .post(format!("{url}{}", w.path()))
                            .json(&w.body(&images, i))
                            .send()
                            .await;
                        let s = match r {
                            Ok(r) => {
                                let h = |k: &str| {
                                    r.headers()
                                        .get(k)
                                        .and_then(|v| v.to_str().ok())
                                        .and_then(|v| v.parse::<f64>().ok())
                                };
                                let (b, q, inf) =
                                    (h("x-batch-rows"), h("x-queue-time"), h("x-inference-time"));
                                let status = r.status().as_u16();
                                let _ = r.bytes().await;
                                Sample {
                                    status,
                                    ms: t.elapsed().as_secs_f64() * 1e3,
                                    batch_rows: b,
                                    queue_ms: q,
                                    inference_ms: inf,
                                }
                            }
                            Err(_) => Sample {
                                status: 0,
                                ms: t.elapsed().as_secs_f64() * 1e3,
                                batch_rows: None,
                                queue_ms: None,
                                inference_ms: None,
                            },
                        };
                        samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                    }
                }));
            }
            for t in tasks {
                t.await?;
            }
            let seconds = t0.elapsed().as_secs_f64();
            let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
            let report = summarize(w, c, seconds, &samples);
            progress(&report);
            runs.push(report);
        }
    }
    Ok(LoadReport {
        url,
        label: label.to_string(),
        server,
        runs,
    })
}

fn summarize(w: Workload, c: usize, seconds: f64, samples: &[Sample]) -> RunReport {
    let mut status = BTreeMap::new();
    for s in samples {
        *status.entry(s.status).or_insert(0) += 1;
    }
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.status == 200).collect();
    let mut ms: Vec<f64> = ok.iter().map(|s| s.ms).collect();
    ms.sort_by(f64::total_cmp);
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    RunReport {
        workload: w,
        concurrency: c,
        requests: samples.len(),
        errors: samples.len() - ok.len(),
        status,
        seconds,
        requests_per_second: ok.len() as f64 / seconds.max(1e-9),
        mean_ms: mean(ms.clone()),
        p50_ms: percentile(&ms, 0.50),
        p95_ms: percentile(&ms, 0.95),
        p99_ms: percentile(&ms, 0.99),
        mean_batch_rows: mean(ok.iter().filter_map(|s| s.batch_rows).collect()),
        mean_queue_ms: mean(ok.iter().filter_map(|s| s.queue_ms).collect()),
        mean_inference_ms: mean(ok.iter().filter_map(|s| s.inference_ms).collect()),
    }
}
