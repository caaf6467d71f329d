//! `oscar serve` end to end: the binary on a free port serves every endpoint of models trained
//! from the command line, the load driver measures it, the web page works in a real browser
//! (tools/web_test.sh; it says when it was skipped and why), and SIGTERM stops it cleanly.

#[path = "../../oscar-serve/tests/common/browser.rs"]
mod browser;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn oscar(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_oscar"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oscar {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Stops the server if the test fails midway.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[test]
fn the_binary_serves_every_endpoint_is_measured_and_stops_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path().join("world");
    oscar(&[
        "world",
        "generate",
        "--out",
        s(&w),
        "--images",
        "60",
        "--feature-dim",
        "8",
        "--render",
        "0",
    ]);
    let tiny = ["--steps", "2", "--batch-size", "4"];
    for (task, extra) in [
        ("caption", ["--eval-images", "2"]),
        ("vqa", ["--classifier", "linear"]),
        ("retrieval", ["--test-images", "4"]),
    ] {
        let out = d.path().join(task);
        oscar(
            &[
                &["train", task, "--data", s(&w), "--out", s(&out)][..],
                &tiny,
                &extra,
            ]
            .concat(),
        );
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_oscar"))
        .args([
            "serve",
            "--caption",
            s(&d.path().join("caption")),
            "--vqa",
            s(&d.path().join("vqa")),
            "--retrieval",
            s(&d.path().join("retrieval")),
            "--world",
            s(&w),
            "--port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("oscar serve: listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if http
            .get(format!("{url}/health"))
            .send()
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "/health never answered 200"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let world: Value = http
        .get(format!("{url}/world"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = world["images"][0]["id"].as_str().unwrap().to_string();
    let img = json!({"world_id": id});
    let post = |path: &str, body: Value| -> Value {
        let r = http
            .post(format!("{url}{path}"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}: {}", r.text().unwrap_or_default());
        assert!(r.headers().contains_key("x-inference-time"));
        r.json().unwrap()
    };
    assert!(post("/caption", json!({"inputs": img}))[0]["generated_text"].is_string());
    assert!(post(
        "/vqa",
        json!({"inputs": {"image": img, "question": "what color is the dog?"}})
    )[0]["answer"]
        .is_string());
    assert_eq!(
        post("/rank", json!({"image": img, "texts": ["a dog", "a cat"]}))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        post(
            "/score",
            json!({"pairs": [{"image": img, "text": "a dog"}]})
        )
        .as_array()
        .unwrap()
        .len(),
        1
    );
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("retrieval/config.json")).unwrap(),
    )
    .unwrap();
    let e = post(
        "/embed",
        json!({"inputs": [{"text": "a dog", "image": img}]}),
    );
    assert_eq!(
        e[0].as_array().unwrap().len() as u64,
        cfg["hidden_size"].as_u64().unwrap()
    );
    let bad = http
        .post(format!("{url}/caption"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().unwrap()["error_type"], "bad_json");
    for p in ["/info", "/metrics", "/docs/", "/api-doc/openapi.json", "/"] {
        assert_eq!(
            http.get(format!("{url}{p}")).send().unwrap().status(),
            200,
            "{p}"
        );
    }

    // The load driver: every request answered, percentiles in order, batch sizes reported.
    let out = Command::new(env!("CARGO_BIN_EXE_oscar"))
        .args([
            "loadtest",
            "--url",
            &url,
            "--workload",
            "score",
            "--workload",
            "caption",
            "--concurrency",
            "1,3",
            "--requests",
            "6",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        assert_eq!(
            (r["requests"].as_u64(), r["errors"].as_u64()),
            (Some(6), Some(0)),
            "{r}"
        );
        let (p50, p99) = (r["p50_ms"].as_f64().unwrap(), r["p99_ms"].as_f64().unwrap());
        assert!(
            p50 > 0.0 && p50 <= p99 && r["mean_batch_rows"].as_f64().unwrap() >= 1.0,
            "{r}"
        );
    }

    // The web page in a real browser (skipped, with the reason, where chromium cannot be had).
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-page.png");
    browser::run_page_test(&url, &shot, None, "timings: ");

    // SIGTERM: in-flight requests drain, the process exits 0.
    let mut server = server;
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = server.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
