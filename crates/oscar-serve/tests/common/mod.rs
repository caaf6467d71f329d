//! Tiny task models trained on a small world, once per test binary, and a request helper.

// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use oscar_serve::{AppState, Limits, ServeConfig};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub world: PathBuf,
    pub models: PathBuf,
}

pub mod browser;

#[path = "../../../oscar/tests/support/tiny_models.rs"]
mod tiny_models;

/// The shared tiny world and models (`crates/oscar/tests/support/tiny_models.rs`), once per
/// test binary.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = (dir.path().join("world"), dir.path().join("models"));
        tiny_models::world(&w);
        tiny_models::train_all(&w, &m);
        Fixture {
            _dir: dir,
            world: w,
            models: m,
        }
    })
}

/// Tiny models on a world of 128-d regions (the detector fixture's width), once per binary.
pub fn photo_fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = (dir.path().join("world"), dir.path().join("models"));
        tiny_models::world_with(&w, 128);
        tiny_models::train_all_with(&w, &m, 134);
        Fixture {
            _dir: dir,
            world: w,
            models: m,
        }
    })
}

/// The reduced-width VinVL detector of `crates/oscar-detect/tests/fixtures/detector`.
pub fn detector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../oscar-detect/tests/fixtures/detector")
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
        detector: None,
        device: candle_core::Device::Cpu,
        precision: oscar::infer::Precision::F32,
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
