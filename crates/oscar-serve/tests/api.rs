//! The server in process: every request shape answers what the inference library computes for
//! the same inputs, every error class has its status and JSON, batching changes no result, and
//! overload is refused at once without losing a request.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use common::*;
use oscar::infer::{Answering, CaptionOptions, Captioning, ImageInput, Matching};
use oscar_serve::Limits;
use serde_json::{json, Value};
use std::time::Duration;

fn world_input(id: &str) -> ImageInput {
    let f = fixture();
    let w = oscar_serve::world::ServedWorld::open(&f.world, 14).unwrap();
    w.image(id).unwrap().clone()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_shape_answers_what_the_library_computes() {
    let cfg = config(Limits::default());
    let (app, _st) = app(&cfg);
    let ids = test_ids(3);
    let dev = candle_core::Device::Cpu;
    let f = fixture();

    // Captions: one image → its list; a list → a list of lists; 2 beams returned, best first.
    let (s, h, v) = call(&app, "POST", "/caption", Some(json!({"inputs": {"world_id": ids[0]}, "parameters": {"num_beams": 3, "num_return_sequences": 2}}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for k in [
        "x-total-time",
        "x-queue-time",
        "x-inference-time",
        "x-batch-rows",
    ] {
        assert!(h.contains_key(k), "{k} missing");
    }
    let lib = Captioning::load(&f.models.join("caption"), &dev).unwrap();
    let opts = CaptionOptions {
        num_beams: 3,
        num_return_sequences: 2,
        ..CaptionOptions::default()
    };
    let want = lib
        .caption_n(&[world_input(&ids[0])], &opts, |_| {})
        .unwrap()
        .remove(0);
    let got = v.as_array().unwrap();
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["generated_text"], w.text.as_str());
        assert!(close(g["score"].as_f64().unwrap(), w.score, 1e-5));
        assert_eq!(g["ended"], w.ended);
    }
    let (s, _, v) = call(&app, "POST", "/caption", Some(json!({"inputs": [{"world_id": ids[0]}, {"world_id": ids[1]}], "parameters": {"mode": "greedy", "max_new_tokens": 5}}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0].as_array().unwrap().len(), 1);

    // Features given as rows, as base64, and as detector rows with boxes: the same image.
    let im = world_input(&ids[1]);
    let rows: Vec<Vec<f32>> = im.features.chunks(14).map(<[f32]>::to_vec).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(
        im.features
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let mut outs = Vec::new();
    for image in [
        json!({"world_id": ids[1]}),
        json!({"features": rows, "tags": im.tags}),
        json!({"features": b64, "tags": im.tags}),
    ] {
        let (s, _, v) = call(&app, "POST", "/vqa", Some(json!({"inputs": {"image": image, "question": "what color is the dog?"}, "parameters": {"top_k": 3}}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        outs.push(v);
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], outs[2]);
    let qa = Answering::load(&f.models.join("vqa"), &dev).unwrap();
    let want = qa
        .answer(std::slice::from_ref(&im), &["what color is the dog?"], 3)
        .unwrap()
        .remove(0);
    for (g, w) in outs[0].as_array().unwrap().iter().zip(&want) {
        assert_eq!(g["answer"], w.answer.as_str());
        assert!(close(g["score"].as_f64().unwrap(), w.score as f64, 1e-5));
    }
    // Boxes: detector rows (8 wide) + boxes in pixels + the image size → the 6 box dims appended.
    let det: Vec<Vec<f32>> = rows.iter().map(|r| r[..8].to_vec()).collect();
    let boxes: Vec<[f32; 4]> = rows
        .iter()
        .map(|r| [r[8] * 640.0, r[9] * 480.0, r[10] * 640.0, r[11] * 480.0])
        .collect();
    let (s, _, v) = call(&app, "POST", "/score", Some(json!({"pairs": [
        {"image": {"features": det, "boxes": boxes, "image_size": [640, 480], "tags": im.tags}, "text": "a dog"},
        {"image": {"world_id": ids[1]}, "text": "a dog"},
        {"image": {"world_id": ids[1], "tags": []}, "text": "a dog"}]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let sc: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(close(sc[0], sc[1], 1e-4), "boxes re-derived: {sc:?}");
    let m = Matching::load(&f.models.join("retrieval"), &dev).unwrap();
    let no_tags = ImageInput::new(im.features.clone(), vec![]);
    let want = m.score(&[(&im, "a dog"), (&no_tags, "a dog")]).unwrap();
    assert!(
        close(sc[1], want[0] as f64, 1e-5) && close(sc[2], want[1] as f64, 1e-5),
        "{sc:?} vs {want:?}"
    );

    // Rankings: texts for an image, images for a text; sorted, complete, top_n and texts.
    let texts = ["a dog", "two cats", "a red bus", "a clock"];
    let (s, _, v) = call(
        &app,
        "POST",
        "/rank",
        Some(
            json!({"image": {"world_id": ids[0]}, "texts": texts, "return_text": true, "top_n": 3}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let want = m.rank_texts(&world_input(&ids[0]), &texts, None).unwrap();
    let got = v.as_array().unwrap();
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["index"], w.index);
        assert_eq!(g["text"], texts[w.index]);
        assert!(close(g["score"].as_f64().unwrap(), w.score as f64, 1e-5));
    }
    let images: Vec<Value> = ids.iter().map(|i| json!({"world_id": i})).collect();
    let (s, _, v) = call(
        &app,
        "POST",
        "/rank",
        Some(json!({"text": "a dog", "images": images, "first_stage_k": 2})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ims: Vec<ImageInput> = ids.iter().map(|i| world_input(i)).collect();
    let want = m
        .rank_images("a dog", &ims, Some(oscar::infer::Shortlist::tags(2)))
        .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["index"], want[0].index);
    assert!(v[0].get("text").is_none());

    // Embeddings: unit length with normalize, the encoder's pooled state without.
    let (s, _, v) = call(&app, "POST", "/embed", Some(json!({"inputs": [{"text": "a dog", "image": {"world_id": ids[0]}}, {"text": "a dog"}]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let e: Vec<Vec<f64>> = serde_json::from_value(v).unwrap();
    assert_eq!(e.len(), 2);
    assert!(e
        .iter()
        .all(|r| close(r.iter().map(|x| x * x).sum::<f64>().sqrt(), 1.0, 1e-4)));
    assert_ne!(e[0], e[1], "the image changes the embedding");
    let (_, _, raw_v) = call(
        &app,
        "POST",
        "/embed",
        Some(json!({"inputs": [{"text": "a dog"}], "normalize": false})),
    )
    .await;
    let r: Vec<Vec<f64>> = serde_json::from_value(raw_v).unwrap();
    let n = r[0].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(r[0].iter().zip(&e[1]).all(|(a, b)| close(a / n, *b, 1e-5)));

    // Service routes.
    let (s, _, v) = call(&app, "GET", "/health", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));
    let (_, _, info) = call(&app, "GET", "/info", None).await;
    assert_eq!(info["feature_dim"], 14);
    assert!(
        info["models"]["caption"]["max_caption_length"]
            .as_u64()
            .unwrap()
            > 2
    );
    assert_eq!(info["world"]["images"], 50);
    assert_eq!(info["world"]["ids"].as_array().unwrap().len(), 50);
    assert!(info["world"]["ids"]
        .as_array()
        .unwrap()
        .contains(&json!(ids[0])));
    let (_, _, w) = call(&app, "GET", "/world", None).await;
    assert_eq!(w["images"].as_array().unwrap().len(), 50);
    assert!(w["images"][0]["objects"][0]["rect"].is_array());
    let (s, _, spec) = call(&app, "GET", "/api-doc/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    for p in [
        "/caption", "/vqa", "/rank", "/score", "/embed", "/health", "/info", "/world",
    ] {
        assert!(
            spec["paths"][p].is_object(),
            "{p} not in the OpenAPI document"
        );
    }
    let (s, _, docs) = call(&app, "GET", "/docs/", None).await;
    assert!(
        s == StatusCode::OK && docs.as_str().unwrap().contains("swagger"),
        "{s}"
    );
    let (s, _, page) = call(&app, "GET", "/", None).await;
    assert!(s == StatusCode::OK && page.as_str().unwrap().contains("id=\"gallery\""));
    let (_, _, metrics) = call(&app, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    for k in [
        "oscar_request_count",
        "oscar_request_duration_seconds",
        "oscar_batch_rows",
        "oscar_queue_duration_seconds",
    ] {
        assert!(metrics.contains(k), "{k} not in /metrics");
    }
}

async fn expect(
    app: &axum::Router,
    path: &str,
    body: Value,
    status: StatusCode,
    kind: &str,
    says: &str,
) {
    let (s, _, v) = call(app, "POST", path, Some(body.clone())).await;
    assert_eq!(s, status, "{path} {body}: {v}");
    assert_eq!(v["error_type"], kind, "{path} {body}: {v}");
    assert!(
        v["error"].as_str().unwrap().contains(says),
        "{path} {body}: {v} should say {says:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_with_its_status() {
    let limits = Limits {
        max_client_batch_size: 2,
        max_candidates: 3,
        payload_limit: 20_000,
        ..Limits::default()
    };
    let (app, st) = app(&config(limits));
    let id = test_ids(1).remove(0);
    let img = json!({"world_id": id});
    let bad = StatusCode::UNPROCESSABLE_ENTITY;
    expect(
        &app,
        "/caption",
        json!({"inputs": []}),
        StatusCode::BAD_REQUEST,
        "empty",
        "no images",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": [img, img, img]}),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_inputs",
        "at most 2",
    )
    .await;
    expect(
        &app,
        "/rank",
        json!({"image": img, "texts": ["a", "b", "c", "d"]}),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_inputs",
        "at most 3",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": img, "parameters": {"num_beams": 11}}),
        bad,
        "validation",
        "num_beams 11",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": img, "parameters": {"num_beams": 2, "num_return_sequences": 3}}),
        bad,
        "validation",
        "num_return_sequences 3",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": img, "parameters": {"max_new_tokens": 500}}),
        bad,
        "validation",
        "max_new_tokens 500",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": img, "parameters": {"mode": "nucleus"}}),
        bad,
        "validation",
        "nucleus",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": {"features": [[1.0, 2.0]]}}),
        bad,
        "validation",
        "inputs.features[0] has 2 values, expected 14",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": {"features": "AAAA"}}),
        bad,
        "validation",
        "not whole rows",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": {"features": "%%"}}),
        bad,
        "validation",
        "not base64",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": {"features": [vec![1.0; 8]], "boxes": [[0, 0, 1, 1]]}}),
        bad,
        "validation",
        "image_size",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": {"world_id": id, "features": [[0.0]]}}),
        bad,
        "validation",
        "not both",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": {}}),
        bad,
        "validation",
        "world_id or features",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": {"world_id": "nope"}}),
        StatusCode::NOT_FOUND,
        "not_found",
        "\"nope\"",
    )
    .await;
    expect(
        &app,
        "/caption",
        json!({"inputs": img, "colour": 1}),
        bad,
        "validation",
        "colour",
    )
    .await;
    expect(
        &app,
        "/vqa",
        json!({"inputs": {"image": img, "question": " "}}),
        bad,
        "validation",
        "question is empty",
    )
    .await;
    expect(
        &app,
        "/rank",
        json!({"image": img}),
        bad,
        "validation",
        "an image and texts",
    )
    .await;
    expect(
        &app,
        "/embed",
        json!({"inputs": [{"text": ""}]}),
        bad,
        "validation",
        "a text, an image or both",
    )
    .await;
    // NaN cannot be written in JSON; a huge number overflows f32 to infinity.
    expect(
        &app,
        "/caption",
        json!({"inputs": {"features": [vec![1e39f64; 14]]}}),
        bad,
        "validation",
        "not finite",
    )
    .await;

    // axum's own rejections, as our JSON.
    let send = |body: &'static str, ct: Option<&'static str>| {
        let mut b = Request::builder().method("POST").uri("/caption");
        if let Some(c) = ct {
            b = b.header("content-type", c);
        }
        b.body(Body::from(body)).unwrap()
    };
    let (s, _, v) = raw(&app, send("{\"inputs\": ", Some("application/json"))).await;
    assert_eq!(
        (s, v["error_type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_json")),
        "{v}"
    );
    let (s, _, v) = raw(&app, send("{}", None)).await;
    assert_eq!(
        (s, v["error_type"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        ),
        "{v}"
    );
    let big = Box::leak(
        format!(
            "{{\"inputs\": {{\"features\": [[{}]]}}}}",
            vec!["0.5"; 10_000].join(",")
        )
        .into_boxed_str(),
    );
    let (s, _, v) = raw(&app, send(big, Some("application/json"))).await;
    assert_eq!(
        (s, v["error_type"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{v}"
    );
    let (s, _, v) = call(&app, "GET", "/nowhere", None).await;
    assert_eq!(
        (s, v["error_type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _, v) = call(&app, "GET", "/caption", None).await;
    assert_eq!(
        (s, v["error_type"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    // A model that is not loaded; a world that is not served.
    let mut cfg = config(Limits::default());
    cfg.vqa = None;
    cfg.world = None;
    let (partial, _) = common::app(&cfg);
    expect(
        &partial,
        "/vqa",
        json!({"inputs": {"image": img, "question": "what?"}}),
        StatusCode::NOT_FOUND,
        "not_loaded",
        "--vqa",
    )
    .await;
    expect(
        &partial,
        "/caption",
        json!({"inputs": img}),
        bad,
        "validation",
        "no world is served",
    )
    .await;
    let (s, _, v) = call(&partial, "GET", "/world", None).await;
    assert_eq!(
        (s, v["error_type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Not answered in time: 503. The work (32 images × 10 beams × 30 tokens) takes far longer
    // than the 1 ms allowed, so the timer, not the model, answers.
    let (slow, _) = common::app(&config(Limits {
        request_timeout: Duration::from_millis(1),
        ..Limits::default()
    }));
    expect(
        &slow,
        "/caption",
        json!({"inputs": vec![img.clone(); 32], "parameters": {"num_beams": 10, "max_new_tokens": 30}}),
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "not answered within",
    )
    .await;

    // After shutdown: /health and requests say unhealthy.
    st.worker.shutdown();
    let (s, _, v) = call(&app, "GET", "/health", None).await;
    assert_eq!(
        (s, v["error_type"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unhealthy"))
    );
    expect(
        &app,
        "/caption",
        json!({"inputs": img}),
        StatusCode::SERVICE_UNAVAILABLE,
        "unhealthy",
        "shutting down",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_requests_equal_sixteen_sequential_ones() {
    let (app, _) = app(&config(Limits::default()));
    let ids = test_ids(16);
    let body = |i: usize| json!({"inputs": {"world_id": ids[i % ids.len()]}, "parameters": {"num_beams": 2}});
    let mut sequential = Vec::new();
    for i in 0..16 {
        let (s, h, v) = call(&app, "POST", "/caption", Some(body(i))).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["x-batch-rows"], "2", "alone: one image of 2 beams");
        sequential.push(v);
    }
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (app, b) = (app.clone(), body(i));
            tokio::spawn(async move { call(&app, "POST", "/caption", Some(b)).await })
        })
        .collect();
    let mut most_rows = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (s, h, v) = t.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        most_rows = most_rows.max(
            h["x-batch-rows"]
                .to_str()
                .unwrap()
                .parse::<usize>()
                .unwrap(),
        );
        let (a, b) = (&v[0], &sequential[i][0]);
        assert_eq!(a["generated_text"], b["generated_text"], "request {i}");
        assert!(
            close(
                a["score"].as_f64().unwrap(),
                b["score"].as_f64().unwrap(),
                1e-5
            ),
            "request {i}: {a} vs {b}"
        );
    }
    assert!(
        most_rows > 2,
        "concurrent requests shared a batch (largest batch {most_rows} rows)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_at_once_and_no_request_is_lost() {
    let (app, _) = app(&config(Limits {
        max_concurrent_requests: 2,
        ..Limits::default()
    }));
    let id = test_ids(1).remove(0);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let app = app.clone();
            let b = json!({"inputs": {"world_id": id}, "parameters": {"num_beams": 5}});
            tokio::spawn(async move { call(&app, "POST", "/caption", Some(b)).await })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (s, _, v) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a request hung")
            .unwrap();
        match s {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(v["error_type"], "overloaded");
                refused += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(ok + refused, 10);
    assert!(ok >= 2 && refused >= 1, "{ok} answered, {refused} refused");
    // A request needing more permits than exist is refused too, not queued forever.
    let (s, _, _) = call(
        &app,
        "POST",
        "/caption",
        Some(json!({"inputs": [{"world_id": id}, {"world_id": id}, {"world_id": id}]})),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

/// `/rank` with `first_stage: "learned"`: the shortlist the library's learned first stage makes,
/// scored as the library scores it; refused, naming the command that fits one, when the served
/// model has none; `/info` lists the first stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rank_shortlists_by_the_learned_first_stage() {
    use oscar::tasks::first_stage::{fit, FirstStageConfig};
    use oscar::tasks::retrieval::{saved_settings, world_paths, RetrievalSet, Retriever};
    let f = fixture();
    let (_, st_plain) = app(&config(Limits::default()));
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("retrieval");
    std::fs::create_dir_all(&m).unwrap();
    for e in std::fs::read_dir(f.models.join("retrieval")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, m.join(p.file_name().unwrap())).unwrap();
        }
    }
    let dev = candle_core::Device::Cpu;
    let r = Retriever::load(&m, &dev).unwrap();
    let tok = oscar::tokenizer::BertTokenizer::from_vocab(&m.join("vocab.txt")).unwrap();
    let (c, fe, l) = world_paths(&f.world, "train");
    let train = RetrievalSet::open(&c, &fe, &l, r.config.img_feature_dim, None).unwrap();
    let cfg = FirstStageConfig {
        steps: 20,
        batch_size: 8,
        ..FirstStageConfig::default()
    };
    let settings = saved_settings(&m).unwrap();
    fit(&r, &tok, &settings, &train, None, &cfg, |_| {})
        .unwrap()
        .save(&m)
        .unwrap();

    let mut serve = config(Limits::default());
    serve.retrieval = Some(m.clone());
    let (app_l, _st) = app(&serve);
    let ids = test_ids(3);
    let texts = ["a dog", "two cats", "a red bus", "a clock", "a green ball"];
    let lib = Matching::load(&m, &dev).unwrap();
    let want = lib
        .rank_texts(
            &world_input(&ids[0]),
            &texts,
            Some(oscar::infer::Shortlist::learned(2)),
        )
        .unwrap();
    let (s, _, v) = call(&app_l, "POST", "/rank", Some(json!({"image": {"world_id": ids[0]}, "texts": texts, "first_stage_k": 2, "first_stage": "learned"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = v.as_array().unwrap();
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["index"], w.index);
        assert!(close(g["score"].as_f64().unwrap(), w.score as f64, 1e-5));
    }
    let images: Vec<Value> = ids.iter().map(|i| json!({"world_id": i})).collect();
    let ims: Vec<ImageInput> = ids.iter().map(|i| world_input(i)).collect();
    let want = lib
        .rank_images("a dog", &ims, Some(oscar::infer::Shortlist::learned(2)))
        .unwrap();
    let (s, _, v) = call(&app_l, "POST", "/rank", Some(json!({"text": "a dog", "images": images, "first_stage_k": 2, "first_stage": "learned"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["index"].as_u64().unwrap())
        .collect();
    assert_eq!(got, want.iter().map(|w| w.index as u64).collect::<Vec<_>>());
    let (_, _, info) = call(&app_l, "GET", "/info", None).await;
    assert_eq!(
        info["models"]["retrieval"]["first_stages"],
        json!(["tags", "learned"])
    );
    // Without k, or from a model with no learned first stage: 422 saying what to do.
    let (s, _, v) = call(
        &app_l,
        "POST",
        "/rank",
        Some(json!({"image": {"world_id": ids[0]}, "texts": texts, "first_stage": "learned"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("first_stage_k"), "{v}");
    let plain = oscar_serve::app(st_plain);
    let (s, _, v) = call(&plain, "POST", "/rank", Some(json!({"image": {"world_id": ids[0]}, "texts": texts, "first_stage_k": 2, "first_stage": "learned"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("oscar train first-stage"), "{v}");
    let (s, _, v) = call(&plain, "POST", "/rank", Some(json!({"image": {"world_id": ids[0]}, "texts": texts, "first_stage_k": 2, "first_stage": "bm25"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}
