//! Photos over HTTP (`--detector`): a base64 JPEG/PNG goes through VinVL's detector (the
//! reduced-width fixture, random weights) and then the models, and answers exactly what the
//! libraries compute for the same file; bad photos are 422s that say why.

mod common;

use axum::http::StatusCode;
use base64::Engine;
use common::*;
use oscar::infer::{Answering, CaptionOptions, Captioning, ImageInput};
use oscar_serve::{Limits, ServeConfig};
use serde_json::json;

fn photo_config() -> ServeConfig {
    let f = photo_fixture();
    ServeConfig {
        caption: Some(f.models.join("caption")),
        vqa: Some(f.models.join("vqa")),
        retrieval: Some(f.models.join("retrieval")),
        embed: None,
        world: None,
        detector: Some(detector_dir()),
        device: candle_core::Device::Cpu,
        precision: oscar::infer::Precision::F32,
        limits: Limits::default(),
    }
}

fn b64(path: &std::path::Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_is_detected_then_captioned_answered_and_scored() {
    let cfg = photo_config();
    let (app, _st) = app(&cfg);
    let photo = detector_dir().join("images/rocket.jpg");
    let det = oscar_detect::Detector::load(&detector_dir()).unwrap();
    let want_input = ImageInput::from_detections(&det.detect_file(&photo).unwrap()).unwrap();
    let dev = candle_core::Device::Cpu;
    let f = photo_fixture();

    let (s, _, v) = call(
        &app,
        "POST",
        "/caption",
        Some(json!({"inputs": {"image": b64(&photo)}, "parameters": {"num_beams": 2}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let lib = Captioning::load(&f.models.join("caption"), &dev).unwrap();
    let opts = CaptionOptions {
        num_beams: 2,
        ..CaptionOptions::default()
    };
    let want = lib
        .caption(std::slice::from_ref(&want_input), &opts)
        .unwrap()
        .remove(0);
    assert_eq!(v[0]["generated_text"], want.text.as_str());

    let (s, _, v) = call(
        &app,
        "POST",
        "/vqa",
        Some(json!({"inputs": {"image": {"image": b64(&photo)}, "question": "what color is it?"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let qa = Answering::load(&f.models.join("vqa"), &dev).unwrap();
    let want = qa
        .answer(std::slice::from_ref(&want_input), &["what color is it?"], 1)
        .unwrap();
    assert_eq!(v[0]["answer"], want[0][0].answer.as_str());

    let (s, _, v) = call(
        &app,
        "POST",
        "/rank",
        Some(json!({"image": {"image": b64(&photo)}, "texts": ["a rocket", "a cat on a sofa"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);

    // Bad photos: each a 422 that names the field and the reason.
    let cut = {
        let b = std::fs::read(&photo).unwrap();
        base64::engine::general_purpose::STANDARD.encode(&b[..b.len() / 2])
    };
    for (body, needle) in [
        (json!({"inputs": {"image": "!!!"}}), "not base64"),
        (json!({"inputs": {"image": ""}}), "empty"),
        (
            json!({"inputs": {"image": base64::engine::general_purpose::STANDARD.encode(b"hello")}}),
            "not an image",
        ),
        (json!({"inputs": {"image": cut}}), "truncated JPEG"),
        (
            json!({"inputs": {"image": b64(&photo), "world_id": "img000001"}}),
            "one of them",
        ),
    ] {
        let (s, _, v) = call(&app, "POST", "/caption", Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("inputs.image") || msg.contains("inputs:"),
            "{msg}"
        );
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    let (_, _, info) = call(&app, "GET", "/info", None).await;
    assert_eq!(info["detector"]["feature_dim"], 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_need_a_detector_and_widths_must_agree() {
    let cfg = config(Limits::default());
    let (app, _st) = app(&cfg);
    let photo = detector_dir().join("images/rocket.jpg");
    let (s, _, v) = call(
        &app,
        "POST",
        "/caption",
        Some(json!({"inputs": {"image": b64(&photo)}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--detector"), "{v}");
    // The 14-d models cannot read the detector's 134-d regions: refused at start, both named.
    let mut cfg = config(Limits::default());
    cfg.detector = Some(detector_dir());
    let err = oscar_serve::AppState::load(&cfg).err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("134") && msg.contains("14"), "{msg}");
}
