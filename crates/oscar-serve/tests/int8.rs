//! `oscar serve --quantize int8`: the server loads its models in int8, says so in /info, and
//! answers what the int8 library computes.

mod common;

use axum::http::StatusCode;
use common::*;
use oscar::infer::{Matching, Precision};
use oscar_serve::Limits;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_server_scores_what_the_int8_library_computes() {
    let mut cfg = config(Limits::default());
    cfg.precision = Precision::Int8;
    let (app, _st) = app(&cfg);
    let (s, _, info) = call(&app, "GET", "/info", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(info["precision"], "int8", "{info}");

    let ids = test_ids(2);
    let (s, _, v) = call(
        &app,
        "POST",
        "/score",
        Some(json!({"pairs": [
            {"image": {"world_id": ids[0]}, "text": "a dog"},
            {"image": {"world_id": ids[1]}, "text": "two red buses"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let f = fixture();
    let w = oscar_serve::world::ServedWorld::open(&f.world, 14).unwrap();
    let (a, b) = (w.image(&ids[0]).unwrap(), w.image(&ids[1]).unwrap());
    let dir = f.models.join("retrieval");
    let dev = candle_core::Device::Cpu;
    let want = Matching::load_at(&dir, &dev, Precision::Int8)
        .unwrap()
        .score(&[(a, "a dog"), (b, "two red buses")])
        .unwrap();
    let f32s = Matching::load(&dir, &dev)
        .unwrap()
        .score(&[(a, "a dog"), (b, "two red buses")])
        .unwrap();
    for i in 0..2 {
        assert!(
            (got[i] - want[i] as f64).abs() < 1e-6,
            "{got:?} vs {want:?}"
        );
        assert!(
            (got[i] - f32s[i] as f64).abs() < 0.02,
            "{got:?} vs f32 {f32s:?}"
        );
    }
}
