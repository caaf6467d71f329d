//! Bad checkpoints give clear errors naming the file and the key; nothing panics.

use oscar::checkpoint::{load_model, read_checkpoint, Fresh};
use oscar::model::{BertImgForPreTraining, ImageBertForSequenceClassification};
use oscar::{Error, OscarConfig};
use std::path::{Path, PathBuf};

fn fixture(model: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model")
        .join(model)
        .join(file)
}

fn copy_truncated(src: &Path, dir: &Path, len: usize) -> PathBuf {
    let bytes = std::fs::read(src).unwrap();
    let out = dir.join(format!("cut_{len}.bin"));
    std::fs::write(&out, &bytes[..len.min(bytes.len())]).unwrap();
    out
}

#[test]
fn every_truncation_of_a_checkpoint_is_an_error_naming_the_file_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["pytorch_model_legacy.bin", "pytorch_model.bin"] {
        let src = fixture("pretrain", name);
        let full = std::fs::metadata(&src).unwrap().len() as usize;
        let mut len = 0;
        while len < full {
            let p = copy_truncated(&src, dir.path(), len);
            match read_checkpoint(&p) {
                Ok(_) => panic!("{name} cut at {len} of {full} bytes was accepted"),
                Err(e) => assert!(e.to_string().contains(&p.display().to_string()), "{e}"),
            }
            len += 1 + full / 150;
        }
    }
}

#[test]
fn truncated_legacy_file_says_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("pretrain", "pytorch_model_legacy.bin");
    let full = std::fs::metadata(&src).unwrap().len() as usize;
    let e = read_checkpoint(&copy_truncated(&src, dir.path(), full - 100))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn files_that_are_not_checkpoints_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("empty.bin", &b""[..]),
        ("text.bin", &b"hello, world\n"[..]),
        ("junk.safetensors", &[0xffu8; 64][..]),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = read_checkpoint(&p).err().unwrap().to_string();
        assert!(e.contains(name) && e.contains("not a checkpoint"), "{e}");
    }
    let e = read_checkpoint(&dir.path().join("absent.bin"))
        .err()
        .unwrap();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let e = read_checkpoint(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("neither model.safetensors nor pytorch_model.bin"),
        "{e}"
    );
}

#[test]
fn wrong_shapes_name_the_key_and_both_shapes() {
    let ckpt = read_checkpoint(&fixture("vqa", "pytorch_model.bin")).unwrap();
    let mut cfg = ckpt.config.clone().unwrap();
    cfg.num_labels = 7;
    let e = load_model::<ImageBertForSequenceClassification>(
        ckpt,
        Some(cfg),
        Fresh::Nothing,
        0,
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("pytorch_model.bin"), "{e}");
    assert!(
        e.contains("classifier.weight: checkpoint [6, 32], model expects [7, 32]"),
        "{e}"
    );
}

#[test]
fn missing_head_is_an_error_unless_a_fresh_head_is_asked_for() {
    let ckpt = read_checkpoint(&fixture("vqa", "pytorch_model.bin")).unwrap();
    let e = load_model::<BertImgForPreTraining>(
        ckpt,
        None,
        Fresh::Nothing,
        0,
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("missing keys") && e.contains("cls.seq_relationship.weight"),
        "{e}"
    );
    assert!(
        e.contains("unexpected keys") && e.contains("classifier.weight"),
        "{e}"
    );

    let ckpt = read_checkpoint(&fixture("vqa", "pytorch_model.bin")).unwrap();
    let m =
        load_model::<BertImgForPreTraining>(ckpt, None, Fresh::Head, 0, &candle_core::Device::Cpu)
            .unwrap();
    assert!(m
        .report
        .fresh
        .contains(&"cls.seq_relationship.weight".to_string()));
    assert!(
        m.report.fresh.iter().all(|k| k.starts_with("cls.")),
        "{:?}",
        m.report.fresh
    );
    assert_eq!(
        m.report.unexpected,
        vec![
            "classifier.bias".to_string(),
            "classifier.weight".to_string()
        ]
    );
}

#[test]
fn a_missing_backbone_key_is_never_made_fresh_by_a_fresh_head() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = read_checkpoint(&fixture("pretrain", "model.safetensors")).unwrap();
    let mut tensors = ckpt.tensors.clone();
    tensors.remove("bert.encoder.layer.1.output.dense.weight");
    let p = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&tensors, &p).unwrap();
    std::fs::copy(
        fixture("pretrain", "config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let e = load_model::<BertImgForPreTraining>(
        read_checkpoint(dir.path()).unwrap(),
        None,
        Fresh::Head,
        0,
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("bert.encoder.layer.1.output.dense.weight"),
        "{e}"
    );
}

#[test]
fn two_class_contrastive_head_loads_into_a_three_class_model_fresh() {
    let ckpt = read_checkpoint(&fixture("pretrain", "pytorch_model.bin")).unwrap();
    let mut cfg: OscarConfig = ckpt.config.clone().unwrap();
    cfg.num_contrast_classes = 2;
    let m = load_model::<BertImgForPreTraining>(
        ckpt,
        Some(cfg),
        Fresh::Nothing,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(m
        .report
        .fresh
        .contains(&"cls.seq_relationship.weight".to_string()));
    assert!(
        m.report
            .notes
            .iter()
            .any(|n| n.contains("3 classes, the model 2")),
        "{:?}",
        m.report.notes
    );
}

#[test]
fn weights_without_config_ask_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.bin");
    std::fs::copy(fixture("vqa", "pytorch_model.bin"), &p).unwrap();
    let e = load_model::<ImageBertForSequenceClassification>(
        read_checkpoint(&p).unwrap(),
        None,
        Fresh::Nothing,
        0,
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("no config.json"), "{e}");
}
