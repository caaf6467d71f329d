//! Photos over HTTP (`--detector`): a base64 JPEG/PNG goes through VinVL's detector (the
//! reduced-width fixture, random weights) and then the models, and answers exactly what the
//! libraries compute for the same file; bad photos are 422s that say why. The same photo in a
//! multipart form answers what its base64 in JSON answers, on every endpoint, and the web page's
//! photo panel captions and answers it in a real browser.

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

/// One part of a form: its name, a file name for a file (`None` for text), its bytes.
type FormPart<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A `multipart/form-data` body.
fn multipart(parts: &[FormPart]) -> (String, Vec<u8>) {
    let boundary = "oscar-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "content-disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     content-type: image/jpeg\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("content-disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_form(
    app: &axum::Router,
    path: &str,
    parts: &[FormPart<'_>],
) -> (StatusCode, serde_json::Value) {
    let (ct, body) = multipart(parts);
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", ct)
        .body(axum::body::Body::from(body))
        .unwrap();
    let (s, _, v) = raw(app, req).await;
    (s, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_in_a_form_answers_what_its_json_answers() {
    let cfg = photo_config();
    let (app, _st) = app(&cfg);
    let path = detector_dir().join("images/rocket.jpg");
    let jpeg = std::fs::read(&path).unwrap();
    let photo = b64(&path);
    let file = Some("rocket.jpg");
    let texts = ["a rocket", "a cat on a sofa"];

    let cases: Vec<(&str, Vec<FormPart>, serde_json::Value)> = vec![
        (
            "/caption",
            vec![("image", file, &jpeg[..]), ("num_beams", None, b"2")],
            json!({"inputs": {"image": photo}, "parameters": {"num_beams": 2}}),
        ),
        (
            "/vqa",
            vec![
                ("question", None, b"what color is it?"),
                ("image", file, &jpeg[..]),
                ("top_k", None, b"3"),
            ],
            json!({"inputs": {"image": {"image": photo}, "question": "what color is it?"},
                   "parameters": {"top_k": 3}}),
        ),
        (
            "/rank",
            vec![
                ("image", file, &jpeg[..]),
                ("texts", None, texts[0].as_bytes()),
                ("texts", None, texts[1].as_bytes()),
                ("return_text", None, b"true"),
            ],
            json!({"image": {"image": photo}, "texts": texts, "return_text": true}),
        ),
        (
            "/score",
            vec![
                ("image", file, &jpeg[..]),
                ("text", None, texts[0].as_bytes()),
                ("text", None, texts[1].as_bytes()),
            ],
            json!({"pairs": [{"image": {"image": photo}, "text": texts[0]},
                             {"image": {"image": photo}, "text": texts[1]}]}),
        ),
    ];
    for (route, parts, body) in cases {
        let (s, from_form) = post_form(&app, route, &parts).await;
        assert_eq!(s, StatusCode::OK, "{route}: {from_form}");
        let (s, _, from_json) = call(&app, "POST", route, Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{route}: {from_json}");
        assert_eq!(from_form, from_json, "{route}");
        assert!(!from_form.as_array().unwrap().is_empty(), "{route}");
    }

    // Bad forms: 422s naming the field; a bare photo only where a photo is the whole request.
    for (route, parts, needle) in [
        (
            "/vqa",
            vec![("image", file, &jpeg[..])],
            "question: missing",
        ),
        (
            "/caption",
            vec![("image", file, &b"hello"[..])],
            "inputs.image: not an image",
        ),
        (
            "/caption",
            vec![("image", file, &jpeg[..]), ("beams", None, b"2")],
            "unknown field `beams`",
        ),
        (
            "/caption",
            vec![("image", None, &b"x"[..])],
            "expected a file",
        ),
    ] {
        let (s, v) = post_form(&app, route, &parts).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{route}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/vqa")
        .header("content-type", "image/jpeg")
        .body(axum::body::Body::from(jpeg.clone()))
        .unwrap();
    let (s, _, v) = raw(&app, req).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("multipart"), "{v}");
    let (ct, mut body) = multipart(&[("image", file, &jpeg[..])]);
    body.truncate(body.len() / 2);
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/caption")
        .header("content-type", ct)
        .body(axum::body::Body::from(body))
        .unwrap();
    let (s, _, v) = raw(&app, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error_type"], "bad_body", "{v}");
}

/// The web page's photo panel in a real browser (tools/web_test.sh with OSCAR_PHOTO; skipped,
/// with the reason, where chromium cannot be had): choose a file, caption it, ask about it, rank
/// its captions and one more against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_captions_answers_and_ranks_a_chosen_photo() {
    let st = std::sync::Arc::new(oscar_serve::AppState::load(&photo_config()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(oscar_serve::serve(listener, st, async {
        let _ = stopped.await;
    }));
    let shot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-page-photo.png");
    let photo = detector_dir().join("images/rocket.jpg");
    let web = tokio::task::spawn_blocking(move || {
        browser::run_page_test(&url, &shot, Some(&photo), "photo: ")
    })
    .await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    if let Err(e) = web {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `POST /detect`: the detector's objects as `oscar detect` finds them (boxes, classes,
/// attributes), the same from JSON, a form and raw bytes; without a detector a 422 says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_answers_the_detectors_objects() {
    let cfg = photo_config();
    let (app, _st) = app(&cfg);
    let path = detector_dir().join("images/rocket.jpg");
    let jpeg = std::fs::read(&path).unwrap();
    let det = oscar_detect::Detector::load(&detector_dir()).unwrap();
    let want = det.detect_file(&path).unwrap();
    assert!(!want.objects.is_empty());

    let (s, _, from_json) = call(&app, "POST", "/detect", Some(json!({"image": b64(&path)}))).await;
    assert_eq!(s, StatusCode::OK, "{from_json}");
    assert_eq!(
        (from_json["image_w"].as_u64(), from_json["image_h"].as_u64()),
        (
            Some(want.image_size.0 as u64),
            Some(want.image_size.1 as u64)
        )
    );
    let objects = from_json["objects"].as_array().unwrap();
    assert_eq!(objects.len(), want.objects.len());
    for (got, o) in objects.iter().zip(&want.objects) {
        assert_eq!(got["class"], o.class.as_str());
        assert_eq!(got["conf"].as_f64().unwrap() as f32, o.conf);
        let rect: Vec<f32> = got["rect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(rect, o.rect);
        let attrs = got["attributes"].as_array().unwrap();
        assert_eq!(attrs.len(), o.attributes.len());
        let scores = got["attr_scores"].as_array().unwrap();
        for ((a, s), &(id, p)) in attrs.iter().zip(scores).zip(&o.attributes) {
            assert_eq!(a, det.labels.attributes[id].as_str());
            assert_eq!(s.as_f64().unwrap() as f32, p);
        }
    }
    let (s, from_form) = post_form(&app, "/detect", &[("image", Some("rocket.jpg"), &jpeg)]).await;
    assert_eq!(s, StatusCode::OK, "{from_form}");
    assert_eq!(from_form, from_json);
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/detect")
        .header("content-type", "image/jpeg")
        .body(axum::body::Body::from(jpeg))
        .unwrap();
    let (s, _, from_bytes) = raw(&app, req).await;
    assert_eq!(s, StatusCode::OK, "{from_bytes}");
    assert_eq!(from_bytes, from_json);

    let (bare, _st) = common::app(&config(Limits::default()));
    let (s, _, v) = call(&bare, "POST", "/detect", Some(json!({"image": b64(&path)}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--detector"), "{v}");
}
