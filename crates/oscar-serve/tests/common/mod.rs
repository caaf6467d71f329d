//! Tiny task models trained on a small world, once per test binary, and a request helper.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use oscar::data::text::AnswerVocab;
use oscar::tasks::caption::{CaptionConfig, CaptionSet};
use oscar::tasks::finetune::{Optim, RunFiles};
use oscar::tasks::qa::{QaConfig, QaSet};
use oscar::tasks::retrieval::{world_paths, RetrievalSet, RetrievalTrainConfig};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;
use oscar_serve::{AppState, Limits, ServeConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub world: PathBuf,
    pub models: PathBuf,
}

/// A 50-image world and a captioning, a VQA and a retrieval model (3 steps each) trained on it.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = (dir.path().join("world"), dir.path().join("models"));
        let wc = oscar_world::WorldConfig {
            images: 50,
            seed: 3,
            feature_dim: 8,
            ..Default::default()
        };
        oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), &w, 0).unwrap();
        train_all(&w, &m);
        Fixture {
            _dir: dir,
            world: w,
            models: m,
        }
    })
}

fn train_all(w: &Path, dir: &Path) {
    let tok = BertTokenizer::from_vocab(&w.join("vocab.txt")).unwrap();
    let tiny = OscarConfig::tiny(tok.vocab_size(), 14);
    let feats = w.join("features/features.tsv");
    let labels = w.join("labels/predictions.tsv");
    let vocab = w.join("vocab.txt");
    let optim = Optim {
        steps: 3,
        batch_size: 4,
        ..Optim::default()
    };
    let caps = CaptionSet::open(
        &w.join("captions/train_caption.json"),
        &feats,
        Some(&labels),
        14,
    )
    .unwrap();
    let ccfg = CaptionConfig {
        optim: optim.clone(),
        ..CaptionConfig::default()
    };
    oscar::tasks::caption::train(
        &caps,
        &tok,
        None,
        &tiny,
        &ccfg,
        &RunFiles::default(),
        |_, _, _| {},
    )
    .unwrap()
    .save(&dir.join("caption"), Some(&vocab))
    .unwrap();
    let answers = AnswerVocab::read(&w.join("vqa/ans2label.json")).unwrap();
    let qa = QaSet::open(&w.join("vqa/train.json"), &feats, 14, answers.len()).unwrap();
    let qcfg = QaConfig {
        optim: optim.clone(),
        ..QaConfig::default()
    };
    oscar::tasks::qa::train(
        &qa,
        &tok,
        &answers,
        None,
        &tiny,
        &qcfg,
        &RunFiles::default(),
        None,
        |_, _, _| {},
    )
    .unwrap()
    .save(&dir.join("vqa"), Some(&vocab))
    .unwrap();
    let (c, f, l) = world_paths(w, "train");
    let set = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    let rcfg = RetrievalTrainConfig {
        optim,
        ..RetrievalTrainConfig::default()
    };
    oscar::tasks::retrieval::train(
        &set,
        &tok,
        None,
        &tiny,
        &rcfg,
        &RunFiles::default(),
        |_, _, _| {},
    )
    .unwrap()
    .save_with_settings(&dir.join("retrieval"), Some(&vocab), &rcfg)
    .unwrap();
}

/// Every model and the world, with `limits`.
pub fn config(limits: Limits) -> ServeConfig {
    let f = fixture();
    ServeConfig {
        caption: Some(f.models.join("caption")),
        vqa: Some(f.models.join("vqa")),
        retrieval: Some(f.models.join("retrieval")),
        embed: None,
        world: Some(f.world.clone()),
        device: candle_core::Device::Cpu,
        limits,
    }
}

pub fn app(cfg: &ServeConfig) -> (axum::Router, Arc<AppState>) {
    let st = Arc::new(AppState::load(cfg).unwrap());
    (oscar_serve::app(st.clone()), st)
}

/// A request through the router: status, headers and the body as JSON (or as a JSON string when
/// it is not JSON).
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let mut b = Request::builder().method(method).uri(path);
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    raw(app, b.body(body).unwrap()).await
}

pub async fn raw(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let r = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

/// The first `n` test images of the world.
pub fn test_ids(n: usize) -> Vec<String> {
    let scenes = oscar_world::files::read_scenes(&fixture().world.join("scenes.json")).unwrap();
    scenes
        .into_iter()
        .filter(|s| s.split == "test")
        .take(n)
        .map(|s| s.id)
        .collect()
}
