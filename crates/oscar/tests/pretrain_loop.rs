//! The pre-training loop: a resumed run repeats the uninterrupted one; an interrupted save
//! leaves the previous checkpoint intact; a diverging loss stops the run with a clear message.

use oscar::tasks::pretrain::{pretrain, ModelSpec, PretrainConfig};
use oscar::train::checkpoint::{list_checkpoints, read_trainer_state, save_checkpoint};
use oscar::train::optim::{AdamW, AdamWConfig};
use std::path::Path;

fn world(dir: &Path) {
    let cfg = oscar_world::WorldConfig {
        images: 60,
        seed: 4,
        feature_dim: 8,
        ..Default::default()
    };
    oscar_world::write::write_world(&oscar_world::generate(&cfg).unwrap(), dir, 0).unwrap();
}

fn config(world: &Path, out: &Path) -> PretrainConfig {
    PretrainConfig {
        dataset: world.join("pretrain/dataset.yaml"),
        output_dir: out.to_path_buf(),
        model: ModelSpec {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 64,
            use_img_layernorm: true,
            dropout: 0.1,
            ..ModelSpec::default()
        },
        img_feature_dim: 14,
        batch_size: 4,
        gradient_accumulation_steps: 2,
        steps: 6,
        warmup_steps: 2,
        save_every: 3,
        keep_last: 0,
        eval_every: 0,
        eval_examples: 16,
        log_every: 1,
        progress: false,
        ..PretrainConfig::default()
    }
}

#[test]
fn a_resumed_run_gives_the_same_losses_as_an_uninterrupted_one() {
    let d = tempfile::tempdir().unwrap();
    world(&d.path().join("w"));
    let full = pretrain(&config(&d.path().join("w"), &d.path().join("a")), None).unwrap();
    assert_eq!(full.steps, 6);
    assert!(full.logs.iter().all(|l| l.loss.is_finite()));
    let ckpt3 = d.path().join("a/checkpoint-3");
    let (state, _) = read_trainer_state(&ckpt3).unwrap();
    assert_eq!((state.step, state.examples_seen), (3, 24));
    let resumed = pretrain(
        &config(&d.path().join("w"), &d.path().join("b")),
        Some(&ckpt3),
    )
    .unwrap();
    assert_eq!(resumed.logs.first().map(|l| l.step), Some(4));
    for (a, b) in full.logs[3..].iter().zip(&resumed.logs) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.loss - b.loss).abs() < 1e-6,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
        assert!((a.lr - b.lr).abs() < 1e-15);
    }
    assert!(d.path().join("a/loss.png").exists() && d.path().join("a/metrics.jsonl").exists());
    assert!(d.path().join("a/checkpoint-6/pretrain.toml").exists());
}

#[test]
fn an_interrupted_save_leaves_the_previous_checkpoint_intact() {
    let d = tempfile::tempdir().unwrap();
    world(&d.path().join("w"));
    let mut cfg = config(&d.path().join("w"), &d.path().join("a"));
    cfg.steps = 3;
    pretrain(&cfg, None).unwrap();
    let before = std::fs::read(d.path().join("a/checkpoint-3/model.safetensors")).unwrap();
    // Save step 4 and fail half-way (after the model, before the optimizer state).
    let m = oscar::checkpoint::load_model::<oscar::model::BertImgForPreTraining>(
        oscar::checkpoint::read_checkpoint(&d.path().join("a/checkpoint-3")).unwrap(),
        None,
        oscar::checkpoint::Fresh::Nothing,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let opt = AdamW::new(&m.params, AdamWConfig::default(), &[]);
    let state = oscar::train::checkpoint::TrainerState {
        step: 4,
        examples_seen: 32,
        seed: 42,
        best: None,
    };
    let write_model =
        |dir: &Path| oscar::checkpoint::save_pretrained(dir, &m.params, &m.config, None);
    let err = save_checkpoint(
        &d.path().join("a"),
        &write_model,
        &opt,
        &state,
        0,
        &mut |f| {
            if f == "optimizer.safetensors" {
                Err(oscar::Error::Invalid("killed".into()))
            } else {
                Ok(())
            }
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("killed"));
    assert_eq!(
        list_checkpoints(&d.path().join("a"))
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(
        std::fs::read(d.path().join("a/checkpoint-3/model.safetensors")).unwrap(),
        before
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.path().join("a"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    // And the surviving checkpoint still resumes.
    cfg.steps = 4;
    let r = pretrain(&cfg, Some(&d.path().join("a/checkpoint-3"))).unwrap();
    assert_eq!(r.steps, 4);
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    world(&d.path().join("w"));
    let mut cfg = config(&d.path().join("w"), &d.path().join("a"));
    cfg.lr = 1e9;
    cfg.max_grad_norm = -1.0;
    cfg.warmup_steps = 0;
    cfg.steps = 40;
    cfg.save_every = 1;
    cfg.keep_last = 1;
    let err = pretrain(&cfg, None).unwrap_err().to_string();
    assert!(err.contains("training stopped"), "{err}");
    // The message names the last good checkpoint (saved every step here), and it exists.
    let named = err
        .split("The last good checkpoint is ")
        .nth(1)
        .and_then(|r| r.split(" (resume").next());
    match named {
        Some(p) => assert!(Path::new(p).join("trainer_state.json").exists(), "{p}"),
        None => assert!(err.contains("step 1:"), "{err}"),
    }
}

#[test]
fn bad_configurations_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), &d.path().join("a"));
    cfg.num_contrast_classes = 4;
    assert!(pretrain(&cfg, None)
        .unwrap_err()
        .to_string()
        .contains("num_contrast_classes"));
    let p = d.path().join("x.toml");
    std::fs::write(&p, "steps = 5\nbogus = 1\n").unwrap();
    let e = PretrainConfig::from_toml(&p).unwrap_err().to_string();
    assert!(e.contains("x.toml") && e.contains("bogus"), "{e}");
}

#[test]
fn pretraining_can_start_from_real_bert_weights() {
    let Some(minilm) = std::env::var_os("OSCAR_MINILM_DIR").map(std::path::PathBuf::from) else {
        eprintln!(
            "skipped: OSCAR_MINILM_DIR is not set (tools/test.sh fetches the weights and sets it)"
        );
        return;
    };
    let d = tempfile::tempdir().unwrap();
    world(&d.path().join("w"));
    let mut cfg = config(&d.path().join("w"), &d.path().join("a"));
    cfg.init = Some(minilm.clone());
    cfg.steps = 1;
    cfg.gradient_accumulation_steps = 1;
    cfg.lr = 1e-9;
    pretrain(&cfg, None).unwrap();
    let ck = oscar::checkpoint::read_checkpoint(&d.path().join("a/checkpoint-1")).unwrap();
    assert_eq!(ck.config.as_ref().unwrap().hidden_size, 384);
    let ours = &ck.tensors["bert.encoder.layer.0.attention.self.query.weight"];
    let real = oscar::checkpoint::read_checkpoint(&minilm).unwrap();
    let theirs = &real.tensors["encoder.layer.0.attention.self.query.weight"];
    let diff: f32 = ours
        .sub(theirs)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        diff < 1e-6,
        "the encoder was not taken from MiniLM ({diff})"
    );
    assert!(
        ck.tensors.contains_key("bert.img_embedding.weight")
            && ck.tensors.contains_key("cls.seq_relationship.weight")
    );
}

#[test]
fn a_second_corpus_adds_its_weighted_loss() {
    let d = tempfile::tempdir().unwrap();
    world(&d.path().join("w"));
    let mut cfg = config(&d.path().join("w"), &d.path().join("a"));
    cfg.steps = 2;
    let base = pretrain(&cfg, None).unwrap();
    let mut cfg2 = config(&d.path().join("w"), &d.path().join("b"));
    cfg2.steps = 2;
    cfg2.extra_dataset = Some(d.path().join("w/pretrain/dataset.yaml"));
    cfg2.extra_loss_weight = 0.3;
    let mixed = pretrain(&cfg2, None).unwrap();
    assert!(mixed.logs.iter().all(|l| l.loss.is_finite()));
    assert_ne!(
        base.logs[0].loss, mixed.logs[0].loss,
        "the extra corpus changes the loss"
    );
    cfg2.extra_loss_weight = 1.5;
    assert!(pretrain(&cfg2, None)
        .unwrap_err()
        .to_string()
        .contains("extra_loss_weight"));
}

/// Resuming at the last step trains nothing and evaluates the checkpoint: held-out MLM and
/// contrastive accuracy plus the caption words scored with the image's own tags, another
/// image's tags and another image (absent for a model pre-trained without tags).
#[test]
fn a_checkpoint_resumed_at_its_last_step_is_evaluated_with_the_tag_reliance_scores() {
    let d = tempfile::tempdir().unwrap();
    world(&d.path().join("w"));
    for tags in [true, false] {
        let mut cfg = config(&d.path().join("w"), &d.path().join(format!("a{tags}")));
        cfg.steps = 3;
        cfg.use_tags = tags;
        cfg.eval_fraction = 0.3;
        pretrain(&cfg, None).unwrap();
        cfg.output_dir = d.path().join(format!("b{tags}"));
        let r = pretrain(&cfg, Some(&d.path().join(format!("a{tags}/checkpoint-3")))).unwrap();
        assert!(r.logs.is_empty(), "nothing left to train");
        assert_eq!(r.evals.len(), 1);
        let e = &r.evals[0];
        assert_eq!(e.step, 3);
        let scores = [
            e.caption_accuracy_own_tags,
            e.caption_accuracy_other_tags,
            e.caption_accuracy_other_image,
        ];
        if tags {
            assert!(
                scores
                    .iter()
                    .all(|s| s.is_some_and(|x| (0.0..=1.0).contains(&x))),
                "{e:?}"
            );
        } else {
            assert!(scores.iter().all(Option::is_none), "{e:?}");
        }
    }
}
