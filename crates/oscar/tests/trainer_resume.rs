//! The one trainer under every fine-tuning task (retrieval, captioning, SCST, VQA, GQA, NLVR2):
//! a run interrupted at a checkpoint and resumed equals the uninterrupted run (per-step metrics
//! and final weights to 1e-6), and a run whose loss diverges stops naming the last good
//! checkpoint, which exists and resumes.

use oscar::data::text::AnswerVocab;
use oscar::tasks::caption::scst::train_scst;
use oscar::tasks::caption::{CaptionConfig, CaptionSet, Captioner};
use oscar::tasks::finetune::{Optim, RunFiles};
use oscar::tasks::nlvr2::{Nlvr2Config, Nlvr2Set};
use oscar::tasks::qa::{QaConfig, QaKind, QaSet};
use oscar::tasks::retrieval::{world_paths, RetrievalSet, RetrievalTrainConfig};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;
use std::path::{Path, PathBuf};

const STEPS: u64 = 6;

fn world() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let wc = oscar_world::WorldConfig {
        images: 60,
        seed: 7,
        feature_dim: 8,
        ..Default::default()
    };
    oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), d.path(), 0).unwrap();
    d
}

fn optim(lr: f64) -> Optim {
    // Dropout stays on: its masks must also repeat after a resume.
    Optim {
        steps: STEPS,
        batch_size: 4,
        lr,
        warmup_steps: 2,
        max_grad_norm: if lr > 1.0 { 0.0 } else { 1.0 },
        seed: 11,
        ..Optim::default()
    }
}

fn files(out: &Path, resume: Option<PathBuf>) -> RunFiles {
    RunFiles {
        out: Some(out.to_path_buf()),
        save_every: 3,
        keep_last: 0,
        resume,
        ..RunFiles::default()
    }
}

/// The `metrics.jsonl` step lines (without the timing) from step `from` on.
fn step_lines(dir: &Path, from: u64) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["step"].as_u64().is_some_and(|s| s >= from))
        .map(|mut v| {
            v.as_object_mut().unwrap().remove("examples_per_s");
            v
        })
        .collect()
}

fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let ta = candle_core::safetensors::load(a.join("model.safetensors"), &candle_core::Device::Cpu)
        .unwrap();
    let tb = candle_core::safetensors::load(b.join("model.safetensors"), &candle_core::Device::Cpu)
        .unwrap();
    assert_eq!(ta.len(), tb.len());
    ta.iter()
        .map(|(k, x)| {
            x.sub(&tb[k])
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0.0, f32::max)
}

/// Runs `train(files, lr)` uninterrupted, then again resumed from its `checkpoint-3`, and
/// compares; then with a diverging learning rate.
fn check(name: &str, root: &Path, train: impl Fn(&RunFiles, f64) -> oscar::Result<()>) {
    let (a, b, c) = (
        root.join(format!("{name}-a")),
        root.join(format!("{name}-b")),
        root.join(format!("{name}-c")),
    );
    train(&files(&a, None), 1e-3).unwrap();
    let ckpt = a.join("checkpoint-3");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(
        (state["step"].as_u64(), state["examples_seen"].as_u64()),
        (Some(3), Some(12)),
        "{name}"
    );
    train(&files(&b, Some(ckpt.clone())), 1e-3).unwrap();
    let (full, resumed) = (step_lines(&a, 4), step_lines(&b, 1));
    assert_eq!(full.len(), 3, "{name}: {full:?}");
    assert_eq!(
        resumed
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5, 6],
        "{name}"
    );
    for (x, y) in full.iter().zip(&resumed) {
        for (k, v) in x.as_object().unwrap() {
            let (p, q) = (v.as_f64().unwrap(), y[k].as_f64().unwrap_or(f64::NAN));
            assert!(
                (p - q).abs() <= 1e-6 * p.abs().max(1.0),
                "{name} step {}: {k} {p} vs {q}",
                x["step"]
            );
        }
    }
    let d = max_weight_diff(&a.join("checkpoint-6"), &b.join("checkpoint-6"));
    assert!(d <= 1e-6, "{name}: final weights differ by {d}");

    // A diverging run: stops with the last good checkpoint named, and that checkpoint exists.
    let err = train(
        &RunFiles {
            save_every: 1,
            keep_last: 2,
            ..files(&c, None)
        },
        1e12,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("training stopped"), "{name}: {err}");
    let named = err
        .split("The last good checkpoint is ")
        .nth(1)
        .and_then(|r| r.split(" (resume").next());
    match named {
        Some(p) => assert!(
            Path::new(p).join("trainer_state.json").exists(),
            "{name}: {p} named but missing"
        ),
        None => assert!(
            err.contains("step 1:") && err.contains("No checkpoint"),
            "{name}: {err}"
        ),
    }
}

#[test]
fn every_fine_tuning_task_resumes_exactly_and_stops_on_a_diverging_loss() {
    let d = world();
    let p = d.path();
    let root = tempfile::tempdir().unwrap();
    let tok = BertTokenizer::from_vocab(&p.join("vocab.txt")).unwrap();
    let feats = p.join("features/features.tsv");
    let tiny = OscarConfig::tiny(tok.vocab_size(), 14);

    let (c, f, l) = world_paths(p, "train");
    let ret = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    check("retrieval", root.path(), |files, lr| {
        let cfg = RetrievalTrainConfig {
            optim: optim(lr),
            ..RetrievalTrainConfig::default()
        };
        oscar::tasks::retrieval::train(&ret, &tok, None, &tiny, &cfg, files, |_, _, _| {})
            .map(|_| ())
    });

    let caps = CaptionSet::open(
        &p.join("captions/train_caption.json"),
        &feats,
        Some(&p.join("labels/predictions.tsv")),
        14,
    )
    .unwrap();
    check("caption", root.path(), |files, lr| {
        let cfg = CaptionConfig {
            optim: optim(lr),
            ..CaptionConfig::default()
        };
        oscar::tasks::caption::train(&caps, &tok, None, &tiny, &cfg, files, |_, _, _| {})
            .map(|_| ())
    });

    // SCST starts from a captioning model.
    let base = root.path().join("caption-a/checkpoint-6");
    let df = oscar_eval::captions::build_doc_freq(&caps.captions, false);
    check("scst", root.path(), |files, lr| {
        let mut cap = Captioner::load(
            files.resume.as_deref().unwrap_or(&base),
            &candle_core::Device::Cpu,
        )?;
        cap.settings.decode.max_gen_length = 8;
        train_scst(&mut cap, &caps, &tok, &df, &optim(lr), files, |_, _| {})
    });

    let answers = AnswerVocab::read(&p.join("vqa/ans2label.json")).unwrap();
    let qa = QaSet::open(&p.join("vqa/train.json"), &feats, 14, answers.len()).unwrap();
    for kind in [QaKind::Vqa, QaKind::Gqa] {
        check(&format!("{kind:?}"), root.path(), |files, lr| {
            let cfg = QaConfig {
                task: kind,
                optim: optim(lr),
                ..QaConfig::default()
            };
            oscar::tasks::qa::train(
                &qa,
                &tok,
                &answers,
                None,
                &tiny,
                &cfg,
                files,
                Some(&qa),
                |_, _, _| {},
            )
            .map(|_| ())
        });
    }

    let nl = Nlvr2Set::open(&p.join("nlvr2/train.json"), &feats, 14).unwrap();
    check("nlvr2", root.path(), |files, lr| {
        let cfg = Nlvr2Config {
            optim: optim(lr),
            ..Nlvr2Config::default()
        };
        oscar::tasks::nlvr2::train(&nl, &tok, None, &tiny, &cfg, files, None, |_, _, _| {})
            .map(|_| ())
    });
}

/// Periodic evaluation lands in `metrics.jsonl`, and keep-best keeps the model of the best one.
#[test]
fn evaluations_are_logged_and_the_best_model_is_kept() {
    let d = world();
    let p = d.path();
    let out = tempfile::tempdir().unwrap();
    let tok = BertTokenizer::from_vocab(&p.join("vocab.txt")).unwrap();
    let feats = p.join("features/features.tsv");
    let answers = AnswerVocab::read(&p.join("vqa/ans2label.json")).unwrap();
    let train = QaSet::open(&p.join("vqa/train.json"), &feats, 14, answers.len()).unwrap();
    let val = QaSet::open(&p.join("vqa/val.json"), &feats, 14, answers.len()).unwrap();
    let cfg = QaConfig {
        optim: optim(1e-3),
        ..QaConfig::default()
    };
    let files = RunFiles {
        eval_every: 2,
        keep_best: Some("score".into()),
        ..files(out.path(), None)
    };
    let m = oscar::tasks::qa::train(
        &train,
        &tok,
        &answers,
        None,
        &OscarConfig::tiny(tok.vocab_size(), 14),
        &cfg,
        &files,
        Some(&val),
        |_, _, _| {},
    )
    .unwrap();
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(out.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("eval").cloned())
        .collect();
    assert_eq!(
        evals
            .iter()
            .map(|e| e["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 4, 6]
    );
    let best = evals
        .iter()
        .map(|e| e["score"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("checkpoint-6/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["best"]["value"].as_f64(), Some(best));
    let kept =
        oscar::tasks::qa::Answerer::load(&out.path().join("best"), &candle_core::Device::Cpu)
            .unwrap();
    let score = kept.evaluate(&tok, &val, 32, |_| {}).unwrap().score;
    assert!(
        (score - best).abs() < 1e-9,
        "best/ scores {score}, the best evaluation was {best}"
    );
    assert!(m.evaluate(&tok, &val, 32, |_| {}).unwrap().score <= best + 1e-9);
    // A metric the evaluation does not report is an error naming the ones it does.
    let bad = RunFiles {
        keep_best: Some("bleu".into()),
        ..files.clone()
    };
    let e = oscar::tasks::qa::train(
        &train,
        &tok,
        &answers,
        None,
        &OscarConfig::tiny(tok.vocab_size(), 14),
        &cfg,
        &RunFiles {
            out: Some(out.path().join("x")),
            ..bad
        },
        Some(&val),
        |_, _, _| {},
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("bleu") && e.contains("score"), "{e}");
}

/// Training as another device runs it — candle's composite ops and AdamW's tensor-op update in
/// place of the CPU kernels — follows the CPU run step for step.
#[test]
fn training_on_the_composite_path_follows_the_cpu_run() {
    let d = world();
    let p = d.path();
    let tok = BertTokenizer::from_vocab(&p.join("vocab.txt")).unwrap();
    let feats = p.join("features/features.tsv");
    let answers = AnswerVocab::read(&p.join("vqa/ans2label.json")).unwrap();
    let qa = QaSet::open(&p.join("vqa/train.json"), &feats, 14, answers.len()).unwrap();
    let cfg = QaConfig {
        optim: optim(1e-3),
        ..QaConfig::default()
    };
    let tiny = OscarConfig::tiny(tok.vocab_size(), 14);
    let run = || {
        let mut losses = Vec::new();
        oscar::tasks::qa::train(
            &qa,
            &tok,
            &answers,
            None,
            &tiny,
            &cfg,
            &RunFiles::default(),
            None,
            |_, l, _| losses.push(l),
        )
        .unwrap();
        losses
    };
    let cpu = run();
    let composite = oscar::nn::fused::composite_only(run);
    assert_eq!(cpu.len(), STEPS as usize);
    for (k, (a, b)) in cpu.iter().zip(&composite).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "step {}: {a} vs {b}",
            k + 1
        );
    }
}
