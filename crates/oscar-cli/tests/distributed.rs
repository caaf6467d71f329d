//! Data-parallel training under `mpirun` (issue: beyond one machine): two ranks with a global
//! batch B compute what one process with batch B computes, and a two-rank run resumes on one.
//! Runs where `mpirun` exists and the binary was built with `--features mpi`; says it was
//! skipped otherwise.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_oscar")
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn oscar(args: &[&str]) -> (bool, String, String) {
    run(Command::new(bin()).args(args))
}

/// `mpirun -np N oscar …` (OpenMPI refuses root and more ranks than cores without these).
fn mpirun(np: usize, args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .args(["-np", &np.to_string(), bin()])
        .args(args);
    run(&mut c)
}

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !cfg!(feature = "mpi") {
        return Some("the binary was built without --features mpi".into());
    }
    match Command::new("mpirun").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("no mpirun on PATH (Debian: openmpi-bin libopenmpi-dev)".into()),
    }
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn weights(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How far apart two weight files with the same tensors are: ‖a − b‖ / ‖a‖ over every weight,
/// and the largest difference of one weight. Elementwise 1e-5 is not a fair bound: where a
/// weight's true gradient is zero or tiny (the attention key biases, whose gradient a softmax
/// over keys cancels exactly; a rare word's embedding), what reaches it is mostly rounding noise,
/// which Adam scales up to steps of about the learning rate in any two runs that round
/// differently — one process with another thread count included. A mistake in the data split
/// or the loss's normalisation moves every weight, by about the update size: ‖a − b‖ / ‖a‖
/// around 1e-3, not the 1e-6 two correct runs show.
fn weight_gap(a: &Path, b: &Path) -> (f64, f32) {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    let (mut diff_sq, mut norm_sq, mut worst) = (0f64, 0f64, 0f32);
    for (k, ta) in &a {
        let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b[k].flatten_all().unwrap().to_vec1().unwrap();
        for (x, y) in va.iter().zip(&vb) {
            diff_sq += ((x - y) as f64).powi(2);
            norm_sq += (*x as f64).powi(2);
            worst = worst.max((x - y).abs());
        }
    }
    ((diff_sq / norm_sq.max(1e-30)).sqrt(), worst)
}

fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let (rel, worst) = weight_gap(a, b);
    assert!(
        rel < 1e-5 && worst < 1e-3,
        "{what}: weights differ by {rel:.2e} relative (largest single weight {worst:.2e})"
    );
}

/// The step lines of a `metrics.jsonl`: step → (loss, grad norm, task figures).
fn steps(out: &Path) -> Vec<(u64, f64, f64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let fig = ["mlm_loss", "accuracy", "batch_score"]
                .iter()
                .find_map(|k| v[k].as_f64())
                .unwrap_or(0.0);
            Some((
                v["step"].as_u64()?,
                v["loss"].as_f64()?,
                v["grad_norm"].as_f64()?,
                fig,
            ))
        })
        .collect()
}

fn assert_same_steps(one: &Path, two: &Path, n: usize) {
    let (a, b) = (steps(one), steps(two));
    assert_eq!(a.len(), n, "{}", one.display());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        for (u, v) in [(x.1, y.1), (x.2, y.2), (x.3, y.3)] {
            assert!(
                (u - v).abs() <= 1e-5 * u.abs().max(1.0),
                "step {}: {u} on one process, {v} on two ranks",
                x.0
            );
        }
    }
}

#[test]
fn two_ranks_train_as_one_process_and_a_two_rank_run_resumes_on_one() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| -> PathBuf { dir.path().join(n) };
    let (ok, _, err) = oscar(&[
        "world",
        "generate",
        "--out",
        s(&p("w")),
        "--images",
        "60",
        "--feature-dim",
        "8",
        "--render",
        "0",
    ]);
    assert!(ok, "{err}");
    let dataset = p("w").join("pretrain/dataset.yaml");

    // Pre-training, 20 steps of a global batch of 8 (dropout on), checkpoints at 10 and 20.
    let pretrain = |out: &Path| -> Vec<String> {
        [
            "pretrain",
            "--dataset",
            s(&dataset),
            "--output-dir",
            s(out),
            "--steps",
            "20",
            "--batch-size",
            "8",
            "--img-feature-dim",
            "14",
            "--save-every",
            "10",
            "--keep-last",
            "0",
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    let (ok, _, err) = oscar(&args(&pretrain(&p("one"))));
    assert!(ok, "{err}");
    let (ok, stdout, err) = mpirun(2, &args(&pretrain(&p("two"))));
    assert!(ok, "{err}");
    assert_eq!(
        stdout.matches("pre-trained 20 steps").count(),
        1,
        "rank 0 alone reports: {stdout}"
    );
    assert_same_steps(&p("one"), &p("two"), 2);
    let model = |run: &str, ck: &str| p(run).join(ck).join("model.safetensors");
    assert_same_weights(
        &model("one", "checkpoint-20"),
        &model("two", "checkpoint-20"),
        "pre-training",
    );
    let log = std::fs::read_to_string(p("two").join("metrics.jsonl")).unwrap();
    assert!(log.contains("allreduce_s"), "{log}");

    // The two-rank run, interrupted at step 10, resumed on one process.
    std::fs::create_dir_all(p("resumed")).unwrap();
    let ck10 = p("resumed").join("checkpoint-10");
    let (ok, _, err) =
        run(Command::new("cp").args(["-r", s(&p("two").join("checkpoint-10")), s(&ck10)]));
    assert!(ok, "{err}");
    let mut resume = pretrain(&p("resumed"));
    resume.extend(["--resume".into(), s(&ck10).into()]);
    let (ok, _, err) = oscar(&args(&resume));
    assert!(ok, "{err}");
    assert_same_weights(
        &model("two", "checkpoint-20"),
        &model("resumed", "checkpoint-20"),
        "resumed on one rank",
    );

    // A fine-tuning task: captioning (dropout on, a batch of 5 split 2 + 3).
    let caption = |out: &Path| -> Vec<String> {
        [
            "train",
            "caption",
            "--data",
            s(&p("w")),
            "--out",
            s(out),
            "--steps",
            "20",
            "--batch-size",
            "5",
            "--eval-images",
            "2",
        ]
        .map(String::from)
        .to_vec()
    };
    let (ok, _, err) = oscar(&args(&caption(&p("c1"))));
    assert!(ok, "{err}");
    let (ok, _, err) = mpirun(2, &args(&caption(&p("c2"))));
    assert!(ok, "{err}");
    assert_same_steps(&p("c1"), &p("c2"), 20);
    assert_same_weights(
        &p("c1").join("model.safetensors"),
        &p("c2").join("model.safetensors"),
        "captioning",
    );

    // SCST: each rank samples its own images' captions (so no equality with one process);
    // it trains, and rank 0 alone writes.
    let mut scst = caption(&p("s2"));
    scst[7] = "2".into();
    scst.extend(["--scst".into(), "--init".into(), s(&p("c1")).into()]);
    let (ok, _, err) = mpirun(2, &args(&scst));
    assert!(ok, "{err}");
    let rec = steps(&p("s2"));
    assert_eq!(rec.len(), 2);
    assert!(
        rec.iter().all(|r| r.1.is_finite() && r.2.is_finite()),
        "{rec:?}"
    );

    // The other fine-tuning tasks, 6 steps of a batch of 5.
    for task in ["retrieval", "vqa", "gqa", "nlvr2"] {
        let mut a = [
            "train",
            task,
            "--data",
            s(&p("w")),
            "--out",
            "",
            "--steps",
            "6",
            "--batch-size",
            "5",
        ]
        .map(String::from)
        .to_vec();
        if task == "retrieval" {
            a.extend(["--test-images".into(), "2".into()]);
        }
        let (one, two) = (p(&format!("{task}1")), p(&format!("{task}2")));
        a[5] = s(&one).into();
        let (ok, _, err) = oscar(&args(&a));
        assert!(ok, "{task}: {err}");
        a[5] = s(&two).into();
        let (ok, _, err) = mpirun(2, &args(&a));
        assert!(ok, "{task}: {err}");
        assert_same_steps(&one, &two, 6);
        assert_same_weights(
            &one.join("model.safetensors"),
            &two.join("model.safetensors"),
            task,
        );
    }

    // What does not split is refused, with the reason.
    let mut tiny = caption(&p("c3"));
    tiny[9] = "1".into();
    let (ok, _, err) = mpirun(2, &args(&tiny));
    assert!(!ok);
    assert!(err.contains("cannot be split over 2 ranks"), "{err}");
    let (ok, _, err) = mpirun(2, &["check", s(&p("w"))]);
    assert!(!ok);
    assert!(err.contains("only `oscar pretrain`"), "{err}");
}
