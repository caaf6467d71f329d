//! The `oscar` binary end to end on the golden fixtures: inspect, convert (and load back),
//! encode (and compare with the library), and clear errors on bad input.

use candle_core::{DType, Device, Tensor};
use oscar::checkpoint::{load_model, read_checkpoint, Fresh};
use oscar::model::{BertImgForPreTraining, Inputs};
use oscar::nn::Ctx;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../oscar/tests/fixtures/model")
}

fn oscar(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oscar"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `oscar world generate` of `images` images with 8-d features and no renders, into `dir`.
fn small_world(dir: &Path, images: usize) -> PathBuf {
    let (ok, _, err) = oscar(&[
        "world",
        "generate",
        "--out",
        s(dir),
        "--images",
        &images.to_string(),
        "--feature-dim",
        "8",
        "--render",
        "0",
    ]);
    assert!(ok, "{err}");
    dir.to_path_buf()
}

#[test]
fn inspect_reports_format_head_and_keys_as_json() {
    let (ok, out, err) = oscar(&[
        "inspect",
        "--json",
        s(&fixtures().join("pretrain/pytorch_model_legacy.bin")),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "torch-legacy");
    assert_eq!(v["head"], "PreTraining");
    assert_eq!(v["image_layernorm"], true);
    assert_eq!(v["config"]["hidden_size"], 32);
    let keys = v["keys"].as_array().unwrap();
    let q = keys
        .iter()
        .find(|k| k["key"] == "bert.encoder.layer.0.attention.self.query.weight")
        .unwrap();
    assert_eq!(q["shape"], serde_json::json!([32, 32]));
    let (ok, _, err) = oscar(&["inspect", "/definitely/not/here"]);
    assert!(!ok && err.contains("/definitely/not/here"), "{err}");
}

#[test]
fn convert_writes_a_directory_that_loads_back_to_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted");
    let (ok, stdout, err) = oscar(&[
        "convert",
        s(&fixtures().join("pretrain/pytorch_model_legacy.bin")),
        s(&out),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("PreTraining"), "{stdout}");
    for f in ["model.safetensors", "config.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "bert");
    assert_eq!(cfg["use_img_layernorm"], true);

    let gold = candle_core::safetensors::load(
        fixtures().join("pretrain/goldens.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let inp = candle_core::safetensors::load(
        fixtures().join("pretrain/inputs.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let m = load_model::<BertImgForPreTraining>(
        read_checkpoint(&out).unwrap(),
        None,
        Fresh::Nothing,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(m.report.unexpected.is_empty());
    let x = Inputs {
        input_ids: inp["input_ids"].to_dtype(DType::U32).unwrap(),
        token_type_ids: Some(inp["token_type_ids"].to_dtype(DType::U32).unwrap()),
        position_ids: None,
        img_feats: Some(inp["img_feats"].clone()),
        attention_mask: Some(inp["attention_mask"].clone()),
    };
    let o = m.model.forward(&x, &Ctx::eval()).unwrap();
    let d: f32 = o
        .mlm_logits
        .sub(&gold["mlm_logits"])
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(d < 1e-4, "{d}");
}

/// A 99-token vocabulary for the fixtures' tiny models.
fn tiny_vocab(dir: &Path) -> PathBuf {
    let mut words: Vec<String> = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "dog", "riding", "wave",
        "person", ".", "snow",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    while words.len() < 99 {
        words.push(format!("w{}", words.len()));
    }
    let p = dir.join("vocab.txt");
    std::fs::write(&p, words.join("\n")).unwrap();
    p
}

#[test]
fn encode_shards_merged_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = tiny_vocab(dir.path());
    let items = dir.path().join("items.jsonl");
    let lines: Vec<String> = (0..7)
        .map(|i| {
            let row: Vec<String> = (0..14).map(|j| format!("{}", (i * 14 + j) as f32 / 50.0)).collect();
            let text = ["a man riding a wave .", "a dog", "a man", "a wave"][i % 4];
            format!("{{\"id\": \"it{i}\", \"text\": \"{text}\", \"tags\": [\"man\"], \"features\": [[{}]]}}", row.join(","))
        })
        .collect();
    std::fs::write(&items, lines.join("\n")).unwrap();
    let ck = fixtures().join("pretrain");
    let enc = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "encode",
            "--checkpoint",
            s(&ck),
            "--vocab",
            s(&vocab),
            "--input",
            s(&items),
            "--out",
            s(out),
            "--task",
            "vqa",
            "--max-seq-length",
            "12",
            "--max-img-seq-length",
            "4",
            "--batch-size",
            "2",
        ];
        a.extend_from_slice(extra);
        oscar(&a)
    };
    let whole = dir.path().join("whole.safetensors");
    let (ok, _, err) = enc(&whole, &[]);
    assert!(ok, "{err}");
    let parts: Vec<PathBuf> = (0..3)
        .map(|k| dir.path().join(format!("part{k}.safetensors")))
        .collect();
    for (k, part) in parts.iter().enumerate() {
        let (ok, stdout, err) = enc(part, &["--shard", &format!("{k}/3")]);
        assert!(ok, "{err}");
        assert!(
            stdout.contains(if k == 0 { "3 items" } else { "2 items" }),
            "{stdout}"
        );
    }
    let merged = dir.path().join("merged.safetensors");
    let mut m = vec!["merge", "--out", s(&merged)];
    m.extend(parts.iter().rev().map(|p| s(p)));
    let (ok, stdout, err) = oscar(&m);
    assert!(ok, "{err}");
    assert!(stdout.contains("7 items from 3 parts"), "{stdout}");
    let meta = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let (_, h) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        h.metadata().clone().unwrap()
    };
    assert_eq!(meta(&whole), meta(&merged));
    let (a, b) = (
        candle_core::safetensors::load(&whole, &Device::Cpu).unwrap(),
        candle_core::safetensors::load(&merged, &Device::Cpu).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        assert_eq!(t.dims(), b[k].dims(), "{k}");
        let d = (t.to_dtype(DType::F32).unwrap() - b[k].to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= 1e-5, "{k} differs by {d}");
    }
    // A missing shard, and a part of another job, are refused by name.
    let (ok, _, err) = oscar(&["merge", "--out", s(&merged), s(&parts[0]), s(&parts[1])]);
    assert!(!ok && err.contains("shard 2/3 is missing"), "{err}");
    let other = dir.path().join("other.safetensors");
    let (ok, _, err) = enc(&other, &["--shard", "2/3", "--quantize", "int8"]);
    assert!(ok, "{err}");
    let (ok, _, err) = oscar(&[
        "merge",
        "--out",
        s(&merged),
        s(&parts[0]),
        s(&parts[1]),
        s(&other),
    ]);
    assert!(
        !ok && err.contains("other.safetensors") && err.contains("another job"),
        "{err}"
    );
}

#[test]
fn encode_writes_inputs_and_every_head_output_consistent_with_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = tiny_vocab(dir.path());
    let feats = Tensor::from_vec(
        (0..3 * 14)
            .map(|i| (i % 5) as f32 * 0.3)
            .collect::<Vec<f32>>(),
        (3, 14),
        &Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(
        &[("img7".to_string(), feats)].into_iter().collect(),
        dir.path().join("feats.safetensors"),
    )
    .unwrap();
    let items = dir.path().join("items.jsonl");
    let row: Vec<String> = (0..14).map(|i| format!("{}", i as f32 / 10.0)).collect();
    std::fs::write(
        &items,
        format!(
            "{{\"id\": \"q1\", \"text\": \"a man riding a wave .\", \"tags\": [\"man\", \"wave\"], \"features\": [[{}]]}}\n\n{{\"id\": 2, \"text\": \"a dog\", \"tags\": \"dog snow\", \"features\": {{\"file\": \"feats.safetensors\", \"key\": \"img7\"}}}}\n",
            row.join(",")
        ),
    )
    .unwrap();
    let out = dir.path().join("enc.safetensors");
    let (ok, stdout, err) = oscar(&[
        "encode",
        "--checkpoint",
        s(&fixtures().join("pretrain")),
        "--vocab",
        s(&vocab),
        "--input",
        s(&items),
        "--out",
        s(&out),
        "--task",
        "vqa",
        "--max-seq-length",
        "12",
        "--max-img-seq-length",
        "4",
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("2 items"), "{stdout}");
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(t["input_ids"].dims(), [2, 12]);
    assert_eq!(t["sequence"].dims(), [2, 16, 32]);
    assert_eq!(t["mlm_logits"].dims(), [2, 16, 99]);
    assert_eq!(t["contrastive_logits"].dims(), [2, 3]);
    let ids: Vec<i64> = t["input_ids"].get(0).unwrap().to_vec1().unwrap();
    // [CLS] a man riding a wave . [SEP] man wave [SEP] [PAD]
    assert_eq!(ids, vec![2, 5, 6, 8, 5, 9, 11, 3, 6, 9, 3, 0]);
    let types: Vec<i64> = t["token_type_ids"].get(0).unwrap().to_vec1().unwrap();
    assert_eq!(types, vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0]);
    let mask: Vec<f32> = t["attention_mask"].get(1).unwrap().to_vec1().unwrap();
    // [CLS] a dog [SEP] dog snow [SEP]: 7 tokens, then 3 regions of 4.
    assert_eq!(
        mask,
        vec![1., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0., 0., 1., 1., 1., 0.]
    );

    // The library on the same tensors gives the same sequence output.
    let m = load_model::<BertImgForPreTraining>(
        read_checkpoint(&fixtures().join("pretrain")).unwrap(),
        None,
        Fresh::Nothing,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut feats = vec![0f32; 2 * 4 * 14];
    for (i, v) in row.iter().enumerate() {
        feats[i] = v.parse().unwrap();
    }
    for i in 0..3 * 14 {
        feats[4 * 14 + i] = (i % 5) as f32 * 0.3;
    }
    let x = Inputs {
        input_ids: t["input_ids"].to_dtype(DType::U32).unwrap(),
        token_type_ids: Some(t["token_type_ids"].to_dtype(DType::U32).unwrap()),
        position_ids: None,
        img_feats: Some(Tensor::from_vec(feats, (2, 4, 14), &Device::Cpu).unwrap()),
        attention_mask: Some(t["attention_mask"].clone()),
    };
    let seq = m
        .model
        .backbone()
        .forward(&x, &Ctx::eval())
        .unwrap()
        .sequence;
    let d: f32 = seq
        .sub(&t["sequence"])
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(d < 1e-6, "{d}");
}

#[test]
fn encode_names_the_line_of_bad_items() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = tiny_vocab(dir.path());
    let cases = [
        (
            "{\"text\": \"a man\"}\n{\"text\": oops}\n",
            ":2: not valid JSON",
        ),
        (
            "{\"text\": \"a\", \"features\": [[1, 2, 3]]}\n",
            ":1: features row 0 has 3 values, expected img_feature_dim = 14",
        ),
        ("{\"tags\": \"man\"}\n", ":1: `text` (a string) is required"),
        (
            "{\"text\": \"a\", \"features\": {\"file\": \"none.safetensors\", \"key\": \"x\"}}\n",
            ":1: cannot read",
        ),
        ("\n\n", "no items"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let items = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&items, body).unwrap();
        let out = dir.path().join("out.safetensors");
        let (ok, _, err) = oscar(&[
            "encode",
            "--checkpoint",
            s(&fixtures().join("pretrain")),
            "--vocab",
            s(&vocab),
            "--input",
            s(&items),
            "--out",
            s(&out),
            "--task",
            "vqa",
        ]);
        assert!(!ok, "case {i} was accepted");
        assert!(
            err.contains(&format!("bad{i}.jsonl")) && err.contains(want),
            "case {i}: {err}"
        );
        assert!(!out.exists(), "nothing written on error");
    }
}

fn eval_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../oscar-eval/tests/fixtures")
}

#[test]
fn eval_caption_writes_the_pycocoevalcap_scores_as_json() {
    let g: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(eval_fixtures().join("caption_goldens.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<serde_json::Value> = g["refs"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(k, v)| {
            v.as_array()
                .unwrap()
                .iter()
                .map(move |c| serde_json::json!({"image_id": k, "caption": c}))
        })
        .collect();
    let preds: Vec<serde_json::Value> = g["preds"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| serde_json::json!({"image_id": k, "caption": v}))
        .collect();
    let rp = dir.path().join("refs.json");
    let pp = dir.path().join("preds.json");
    std::fs::write(&rp, serde_json::json!({"annotations": refs}).to_string()).unwrap();
    std::fs::write(&pp, serde_json::Value::Array(preds).to_string()).unwrap();
    let out = dir.path().join("scores.json");
    let (ok, stdout, err) = oscar(&[
        "eval",
        "caption",
        "--refs",
        s(&rp),
        "--preds",
        s(&pp),
        "--no-meteor",
        "--json",
        s(&out),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("CIDEr") && stdout.contains("SPICE"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for k in 0..4 {
        assert!(
            (v["bleu"][k].as_f64().unwrap() - g["scores"]["bleu"][k].as_f64().unwrap()).abs()
                < 1e-9
        );
    }
    assert!((v["cider"].as_f64().unwrap() - g["scores"]["cider"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(v["per_image"].as_array().unwrap().len(), 300);

    // A prediction file missing images is refused unless --subset.
    std::fs::write(&pp, r#"[{"image_id": "0", "caption": "a dog"}]"#).unwrap();
    let (ok, _, err) = oscar(&[
        "eval",
        "caption",
        "--refs",
        s(&rp),
        "--preds",
        s(&pp),
        "--no-meteor",
    ]);
    assert!(
        !ok && err.contains("299 images with references have no prediction"),
        "{err}"
    );
    let (ok, _, err) = oscar(&[
        "eval",
        "caption",
        "--refs",
        s(&rp),
        "--preds",
        s(&pp),
        "--no-meteor",
        "--subset",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn eval_vqa_retrieval_and_cider_df_from_the_command_line() {
    let f = eval_fixtures().join("vqa");
    for (rules, golden) in [
        ("official", "goldens_official.json"),
        ("pre-2021", "goldens_pre-2021.json"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("vqa.json");
        let (ok, stdout, err) = oscar(&[
            "eval",
            "vqa",
            "--annotations",
            s(&f.join("annotations.json")),
            "--results",
            s(&f.join("results.json")),
            "--rules",
            rules,
            "--json",
            s(&json),
        ]);
        assert!(ok, "{err}");
        let g: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f.join(golden)).unwrap()).unwrap();
        assert!(
            stdout.contains(&format!(
                "VQA accuracy  {:.2}",
                g["overall"].as_f64().unwrap()
            )),
            "{rules}: {stdout}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["rules"], rules);
        assert!(
            (v["overall"].as_f64().unwrap() - g["overall"].as_f64().unwrap()).abs() < 1e-9,
            "{rules}"
        );
        assert_eq!(v["per_question"].as_object().unwrap().len(), 1500);
    }
    let (ok, _, err) = oscar(&[
        "eval",
        "vqa",
        "--annotations",
        s(&f.join("annotations.json")),
        "--results",
        s(&f.join("results.json")),
        "--rules",
        "2019",
    ]);
    assert!(!ok && err.contains("pre-2021"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("scores.json");
    std::fs::write(
        &sc,
        r#"{"scores": [[0.9, 0.1, 0.2], [0.3, 0.8, 0.7]], "caption_image": [0, 1, 1]}"#,
    )
    .unwrap();
    let (ok, stdout, err) = oscar(&["eval", "retrieval", "--scores", s(&sc)]);
    assert!(ok, "{err}");
    assert!(stdout.contains("image→text R@1 100.00"), "{stdout}");
    std::fs::write(
        &sc,
        r#"{"scores": [[0.9, 0.1]], "caption_image": [0, 1, 1]}"#,
    )
    .unwrap();
    let (ok, _, err) = oscar(&["eval", "retrieval", "--scores", s(&sc)]);
    assert!(!ok && err.contains("2 columns, expected 3"), "{err}");

    let caps = dir.path().join("train.json");
    std::fs::write(&caps, r#"[{"image_id": 1, "caption": "A dog runs."}, {"image_id": 1, "caption": "a dog"}, {"image_id": 2, "caption": "A cat."}]"#).unwrap();
    let df = dir.path().join("df.json");
    let (ok, _, err) = oscar(&["eval", "cider-df", "--captions", s(&caps), "--out", s(&df)]);
    assert!(ok, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&df).unwrap()).unwrap();
    assert_eq!(v["ref_len"], 2.0);
    assert_eq!(v["document_frequency"]["a"], 2.0);
    assert_eq!(v["document_frequency"]["a dog"], 1.0);
    assert_eq!(v["document_frequency"]["dog runs"], 1.0);
}

#[test]
fn world_generate_then_check_and_feature_dict_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("world");
    let (ok, stdout, err) = oscar(&[
        "world",
        "generate",
        "--out",
        s(&w),
        "--images",
        "60",
        "--feature-dim",
        "8",
        "--render",
        "4",
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("regions of 14 values") && stdout.contains("contact_sheet.png"),
        "{stdout}"
    );
    let (ok, stdout, err) = oscar(&["check", s(&w)]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("0 problems") && stdout.contains("img_feature_dim 14"),
        "{stdout}"
    );
    // A wrong width is reported for the file, with a non-zero exit.
    let (ok, stdout, err) = oscar(&["check", s(&w), "--img-feature-dim", "2054"]);
    assert!(
        !ok && stdout.contains("PROBLEM  features/features.tsv") && err.contains("problems found"),
        "{stdout}{err}"
    );

    let sgb = dir.path().join("sgb");
    let (ok, stdout, err) = oscar(&[
        "convert",
        s(&fixtures().join("../data/predictions.tsv")),
        s(&sgb),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("4-d detector features + 6 box dims = 10"),
        "{stdout}"
    );
    let e: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("../data/expected.json")).unwrap(),
    )
    .unwrap();
    let r = oscar::data::features::FeatureStore::open(&sgb.join("features.tsv"), 10)
        .unwrap()
        .get("img_sgb")
        .unwrap();
    for (a, b) in r.data.iter().zip(e["sgb_regions"].as_array().unwrap()) {
        assert!((a - b.as_f64().unwrap() as f32).abs() <= f32::EPSILON);
    }
    let out = dir.path().join("feats");
    let (ok, stdout, err) = oscar(&[
        "convert",
        s(&fixtures().join("../data/val_img_frcnn_feats.pt")),
        s(&out),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("3 images, 10-d regions"), "{stdout}");
    let store = oscar::data::features::FeatureStore::open(&out.join("features.tsv"), 10).unwrap();
    let orig = oscar::data::features::FeatureStore::open(
        &fixtures().join("../data/val_img_frcnn_feats.pt"),
        10,
    )
    .unwrap();
    for k in orig.keys() {
        assert_eq!(store.get(&k).unwrap(), orig.get(&k).unwrap());
    }
}

#[test]
fn vqa_trains_with_the_chosen_head_and_scratch_shape_then_answers_one_question() {
    let dir = tempfile::tempdir().unwrap();
    let w = small_world(&dir.path().join("world"), 40);
    let vocab_size = std::fs::read_to_string(w.join("vocab.txt"))
        .unwrap()
        .lines()
        .count();
    let shape = dir.path().join("config.json");
    let cfg = oscar::OscarConfig {
        num_attention_heads: 4,
        ..oscar::OscarConfig::small(vocab_size, 14)
    };
    std::fs::write(&shape, cfg.to_json_pretty()).unwrap();
    let m = dir.path().join("vqa");
    let (ok, stdout, err) = oscar(&[
        "train",
        "vqa",
        "--data",
        s(&w),
        "--out",
        s(&m),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--classifier",
        "mlp",
        "--model-config",
        s(&shape),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("official VQA accuracy"), "{stdout}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (
            saved["classifier"].as_str(),
            saved["num_attention_heads"].as_u64()
        ),
        (Some("mlp"), Some(4))
    );
    let (ok, stdout, err) = oscar(&[
        "answer",
        "--checkpoint",
        s(&m),
        "--features",
        s(&w.join("features/features.tsv")),
        "--image",
        "img000000",
        "--question",
        "what color is the dog?",
        "--tags",
        "dog cat",
        "--top",
        "3",
    ]);
    assert!(ok, "{err}");
    let top: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let scores: Vec<f64> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.len() == 3 && scores.windows(2).all(|p| p[0] >= p[1]),
        "{stdout}"
    );
    // A shape file whose vocabulary is not the data's is refused, naming the file.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        oscar::OscarConfig::small(vocab_size + 1, 14).to_json_pretty(),
    )
    .unwrap();
    let (ok, _, err) = oscar(&[
        "train",
        "vqa",
        "--data",
        s(&w),
        "--out",
        s(&dir.path().join("x")),
        "--steps",
        "1",
        "--model-config",
        s(&bad),
    ]);
    assert!(
        !ok && err.contains("bad.json") && err.contains("vocab_size"),
        "{err}"
    );
}

#[test]
fn retrieval_train_evaluate_score_and_retrieve_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let w = small_world(&dir.path().join("world"), 60);
    let m = dir.path().join("ret");
    let (ok, stdout, err) = oscar(&[
        "train",
        "retrieval",
        "--data",
        s(&w),
        "--out",
        s(&m),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--test-images",
        "4",
        "--two-stage-k",
        "2",
        "--att-mask",
        "CL",
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("4 images × 20 captions, full protocol")
            && stdout.contains("two-stage (tags first stage, k = 2)"),
        "{stdout}"
    );
    assert!(
        m.join("eval.json").exists()
            && m.join("retrieval.json").exists()
            && !m.join("scores.partial.json").exists()
    );

    let out = dir.path().join("e.json");
    let (ok, stdout, err) = oscar(&[
        "eval",
        "retrieval",
        "--checkpoint",
        s(&m),
        "--data",
        s(&w),
        "--images",
        "4",
        "--json",
        s(&out),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("4 images × 20 captions"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["full"]["forwards"], 80);
    let keys: Vec<String> = std::fs::read_to_string(w.join("retrieval/test_img_keys.tsv"))
        .unwrap()
        .lines()
        .take(3)
        .map(str::to_string)
        .collect();
    let kf = dir.path().join("keys.tsv");
    std::fs::write(&kf, keys.join("\n")).unwrap();
    let (ok, stdout, err) = oscar(&[
        "eval",
        "retrieval",
        "--checkpoint",
        s(&m),
        "--data",
        s(&w),
        "--keys",
        s(&kf),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("3 images × 15 captions"), "{stdout}");

    let test_caps: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.join("retrieval/test_captions.json")).unwrap(),
    )
    .unwrap();
    let (img, caps) = test_caps.as_object().unwrap().iter().next().unwrap();
    let cap = caps[0].as_str().unwrap();
    // One image against two texts, at a precision (the default is f32).
    let score_at = |m: &Path, precision: &str| -> Vec<f64> {
        let (ok, stdout, err) = oscar(&[
            "score",
            "--checkpoint",
            s(m),
            "--features",
            s(&w.join("features/features.tsv")),
            "--image",
            img,
            "--labels",
            s(&w.join("labels/predictions.tsv")),
            "--text",
            cap,
            "--text",
            "a purple submarine",
            "--quantize",
            precision,
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["match_probability"].as_f64().unwrap())
            .collect()
    };
    let f = score_at(&m, "f32");
    assert_eq!(f.len(), 2);
    assert!(f[0] >= 0.0 && f[0] <= 1.0);

    // The same pairs in dynamic int8: close to f32, not equal (the int8 path ran).
    let q = score_at(&m, "int8");
    assert!(
        f.iter().zip(&q).all(|(a, b)| (a - b).abs() < 0.02) && f != q,
        "f32 {f:?} vs int8 {q:?}"
    );
    // Stored int8: smaller, a working task folder, and the same int8 scores.
    let mq = dir.path().join("ret-int8");
    let (ok, stdout, err) = oscar(&["convert", s(&m), s(&mq), "--quantize", "int8"]);
    assert!(ok && stdout.contains("retrieval.json"), "{stdout}{err}");
    let size = |d: &Path| {
        std::fs::metadata(d.join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(size(&mq) < size(&m), "{} vs {}", size(&mq), size(&m));
    // With group steps (on by default where activations take 8 bits) layers whose groups took
    // finer steps store their exponents beside the scales.
    let bytes = std::fs::read(mq.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let exps = st
        .names()
        .iter()
        .filter(|k| k.ends_with("_exponent"))
        .count();
    assert_eq!(
        exps > 0,
        oscar::nn::int8::kernel::weight_groups(),
        "{exps} exponent tensors"
    );
    let q2 = score_at(&mq, "int8");
    assert!(
        q.iter().zip(&q2).all(|(a, b)| (a - b).abs() < 1e-6),
        "{q:?} vs {q2:?}"
    );
    let (ok, _, err) = oscar(&["score", "--checkpoint", s(&m), "--quantize", "int4"]);
    assert!(!ok && err.contains("int4") && err.contains("int8"), "{err}");

    let (ok, stdout, err) = oscar(&[
        "retrieve",
        "--checkpoint",
        s(&m),
        "--data",
        s(&w),
        "--query",
        cap,
        "--k",
        "3",
        "--first-stage-k",
        "5",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["scored"].as_u64(), v["top"].as_array().unwrap().len()),
        (Some(5), 3)
    );
    let (ok, _, err) = oscar(&[
        "retrieve",
        "--checkpoint",
        s(&m),
        "--data",
        s(&w),
        "--image",
        "nope",
    ]);
    assert!(!ok && err.contains("nope"), "{err}");

    // The learned first stage: asked for before it is fitted, the error says how to fit it.
    let learned = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "retrieval",
            "--checkpoint",
            s(&m),
            "--data",
            s(&w),
            "--images",
            "4",
            "--first-stage",
            "learned",
        ];
        args.extend_from_slice(extra);
        oscar(&args)
    };
    let (ok, _, err) = learned(&["--two-stage-k", "2"]);
    assert!(!ok && err.contains("oscar train first-stage"), "{err}");
    let (ok, stdout, err) = oscar(&[
        "train",
        "first-stage",
        "--checkpoint",
        s(&m),
        "--data",
        s(&w),
        "--steps",
        "30",
        "--batch-size",
        "8",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&stdout[..stdout.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(v["report"]["held_out_split"], "val", "{stdout}");
    assert!(m.join("first_stage.safetensors").exists() && m.join("first_stage.json").exists());
    // Two-stage only, learned: no full protocol, the shortlist's forwards and the passes spent.
    let out = dir.path().join("two.json");
    let (ok, stdout, err) = learned(&["--two-stage-k", "2", "--two-stage-only", "--json", s(&out)]);
    assert!(ok, "{err}");
    assert!(
        !stdout.contains("full protocol") && stdout.contains("learned first stage, k = 2"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let t = &v["two_stage"];
    assert!(v["full"].is_null() && t["first_stage"] == "learned", "{v}");
    assert_eq!(t["single_passes"], 4 + 20);
    let f = t["forwards"].as_u64().unwrap();
    assert!((2 * 20..80).contains(&f), "{f} forwards");
    let (ok, _, err) = learned(&[]);
    assert!(!ok && err.contains("--two-stage-k"), "{err}");
    let (ok, _, err) = oscar(&[
        "eval",
        "retrieval",
        "--checkpoint",
        s(&m),
        "--data",
        s(&w),
        "--two-stage-k",
        "2",
        "--first-stage",
        "bm25",
    ]);
    assert!(
        !ok && err.contains("bm25") && err.contains("learned"),
        "{err}"
    );
    // `oscar retrieve` with the learned shortlist scores only its k candidates.
    let (ok, stdout, err) = oscar(&[
        "retrieve",
        "--checkpoint",
        s(&m),
        "--data",
        s(&w),
        "--query",
        cap,
        "--first-stage-k",
        "4",
        "--first-stage",
        "learned",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["scored"].as_u64(), Some(4));
}

/// `oscar caption` through the inference API: the cache and re-encoding agree, constrained beam
/// search reports its constraints, references are scored, and the reference's TSV is written.
#[test]
fn caption_command_decodes_constrains_scores_and_writes_results() {
    let dir = tempfile::tempdir().unwrap();
    let w = small_world(&dir.path().join("world"), 60);
    let m = dir.path().join("cap");
    let (ok, _, err) = oscar(&[
        "train",
        "caption",
        "--data",
        s(&w),
        "--out",
        s(&m),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--eval-images",
        "2",
    ]);
    assert!(ok, "{err}");
    let feats = w.join("features/features.tsv");
    let labels = w.join("labels/predictions.tsv");
    let base = [
        "caption",
        "--checkpoint",
        s(&m),
        "--features",
        s(&feats),
        "--labels",
        s(&labels),
        "--image",
        "img000000",
        "--image",
        "img000001",
        "--beams",
        "2",
        "--max-length",
        "6",
    ];
    let (ok, cached, err) = oscar(&base);
    assert!(ok, "{err}");
    let lines: Vec<&str> = cached.lines().collect();
    assert_eq!(lines.len(), 2, "{cached}");
    assert!(lines[0].starts_with("img000000\t") && lines[1].starts_with("img000001\t"));
    let (ok, reenc, err) = oscar(&[&base[..], &["--no-cache"]].concat());
    assert!(ok, "{err}");
    assert_eq!(
        reenc, cached,
        "re-encoding every step gives the cached captions"
    );
    let (ok, cbs, err) = oscar(&[&base[..], &["--cbs"]].concat());
    assert!(ok, "{err}");
    assert!(
        cbs.lines().count() == 2 && cbs.lines().all(|l| l.contains("(constraints [\"")),
        "{cbs}"
    );
    let no_labels: Vec<&str> = base
        .iter()
        .copied()
        .filter(|a| *a != "--labels" && *a != s(&labels))
        .collect();
    let (ok, _, err) = oscar(&[&no_labels[..], &["--cbs"]].concat());
    assert!(!ok && err.contains("--labels"), "{err}");

    let refs = w.join("captions/test_caption.json");
    let tsv = dir.path().join("pred.tsv");
    let (ok, stdout, err) = oscar(&[
        "caption",
        "--checkpoint",
        s(&m),
        "--features",
        s(&feats),
        "--labels",
        s(&labels),
        "--refs",
        s(&refs),
        "--train-captions",
        s(&w.join("captions/train_caption.json")),
        "--beams",
        "1",
        "--max-length",
        "6",
        "--out",
        s(&tsv),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["split"], "refs");
    assert!(
        v["cider"].as_f64().is_some() && v["cider_d"].as_f64().is_some(),
        "{v}"
    );
    let n_refs = oscar_eval::captions::read_captions(&refs, false)
        .unwrap()
        .len();
    let rows = std::fs::read_to_string(&tsv).unwrap();
    assert_eq!(rows.lines().count(), n_refs);
    for row in rows.lines() {
        let (_, json) = row.split_once('\t').unwrap();
        let r: serde_json::Value = serde_json::from_str(json).unwrap();
        let conf = r[0]["conf"].as_f64().unwrap();
        assert!(
            r[0]["caption"].is_string() && conf > 0.0 && conf <= 1.0,
            "{row}"
        );
    }
}

#[test]
fn the_quick_demo_writes_a_complete_report_of_computed_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let (ok, stdout, err) = oscar(&["demo", "--quick", "--out", s(&out)]);
    assert!(ok, "{err}");
    assert!(stdout.contains("report in"), "{stdout}");
    for f in [
        "report.md",
        "results.json",
        "retrieval_learning_curves.png",
        "caption_learning_curves.png",
        "vqa_learning_curves.png",
        "test_scenes.png",
        "world.png",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let pre = v["pretraining"].as_array().unwrap();
    assert_eq!(pre.len(), 2);
    for p in pre {
        for x in [
            &p["final_loss"],
            &p["held_out"]["mlm_accuracy"],
            &p["held_out"]["contrastive_accuracy"],
        ] {
            assert!(x.as_f64().is_some_and(f64::is_finite), "{p}");
        }
    }
    // The caption words' reliance on the tags: scored for the arm with tags only.
    for k in [
        "caption_accuracy_own_tags",
        "caption_accuracy_other_tags",
        "caption_accuracy_other_image",
    ] {
        assert!(
            pre[0]["held_out"][k]
                .as_f64()
                .is_some_and(|x| (0.0..=1.0).contains(&x)),
            "{}",
            pre[0]
        );
        assert!(pre[1]["held_out"][k].is_null(), "{}", pre[1]);
    }
    let ret = v["retrieval"].as_array().unwrap();
    assert_eq!(ret.len(), 3);
    for r in ret {
        let rec = r["recall"].as_object().unwrap();
        assert_eq!(rec.len(), 6);
        assert!(
            rec.values()
                .all(|x| x.as_f64().is_some_and(|x| (0.0..=100.0).contains(&x))),
            "{r}"
        );
    }
    let caps = v["captioning"].as_array().unwrap();
    assert_eq!(caps.len(), 3);
    for c in caps.iter().chain([&v["captioning_nearest_neighbour"]]) {
        for k in ["bleu4", "rouge_l", "cider", "cider_d"] {
            assert!(
                c[k].as_f64().is_some_and(|x| x.is_finite() && x >= 0.0),
                "{k}: {c}"
            );
        }
    }
    let vqa = v["vqa"].as_array().unwrap();
    assert_eq!(vqa.len(), 3);
    for q in vqa {
        assert!(
            q["accuracy"]
                .as_f64()
                .is_some_and(|x| (0.0..=100.0).contains(&x)),
            "{q}"
        );
        assert!(
            q["per_question_type"]
                .as_object()
                .is_some_and(|m| m.len() >= 3),
            "{q}"
        );
    }
    assert!(v["vqa_majority"]["per_question_type"]
        .as_f64()
        .is_some_and(f64::is_finite));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // METEOR: computed when the jar the test command fetched (or OSCAR_METEOR_JAR) and Java are
    // there; otherwise the report says why and how to get it.
    match v["meteor_missing"].as_str() {
        None => assert!(
            caps.iter().all(|c| c["meteor"]
                .as_f64()
                .is_some_and(|m| (0.0..=1.0).contains(&m))),
            "{caps:?}"
        ),
        Some(why) => {
            assert!(
                std::env::var_os("OSCAR_METEOR_JAR").is_none(),
                "the test command fetched the jar, yet the demo did not use it: {why}"
            );
            assert!(
                md.contains("METEOR is n/a")
                    && (why.contains("fetch_pycocoevalcap.sh") || why.contains("Java")),
                "{why}"
            );
        }
    }
    assert!(
        md.contains("pre-trained with tags")
            && md.contains("## Captioning")
            && md.contains("## VQA")
            && !md.contains("NaN"),
        "{md}"
    );

    // Interrupted after two arms: the rerun reads the finished stages (arm 0's record is marked
    // so a retrained arm would show) and trains the missing arm again, to the same figures.
    let arm0 = out.join("arm-0.json");
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&arm0).unwrap()).unwrap();
    rec["done"]["retrieval"]["recall"]["i2t_r1"] = serde_json::json!(99.5);
    std::fs::write(&arm0, rec.to_string()).unwrap();
    std::fs::remove_file(out.join("arm-2.json")).unwrap();
    std::fs::remove_file(out.join("results.json")).unwrap();
    let (ok, stdout, err) = oscar(&["demo", "--quick", "--out", s(&out)]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("pre-training with-tags: finished before")
            && stdout.contains("pre-training without-tags: finished before")
            && stdout.matches("fine-tuned before").count() == 2
            && stdout.contains("pre-trained with tags: retrieval fine-tuning"),
        "{stdout}"
    );
    let w: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(w["retrieval"][0]["recall"]["i2t_r1"], 99.5);
    for k in ["retrieval", "captioning", "vqa"] {
        assert_eq!(w[k][1], v[k][1], "{k}: the arm read back");
        assert_eq!(w[k][2], v[k][2], "{k}: the arm trained again");
    }
    // (Records of another seed, budget or recipe are ignored: `demo_stages`' unit test.)
    assert_eq!(w["pretraining"], v["pretraining"]);
}

/// Runs `oscar` with a standard output whose reader is already gone (`oscar … | true`): every
/// write fails with EPIPE. Returns (exit code, stderr).
fn oscar_closed_reader(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_oscar"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn every_printing_command_ends_quietly_when_its_reader_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let w = p("world");
    small_world(Path::new(&w), 60);
    let tiny = ["--steps", "2", "--batch-size", "4"];
    for (task, extra) in [
        ("retrieval", vec!["--test-images", "4"]),
        ("caption", vec!["--eval-images", "2"]),
        ("vqa", vec![]),
    ] {
        let out = p(task);
        let (ok, _, err) = oscar(
            &[
                &["train", task, "--data", &w, "--out", &out][..],
                &tiny,
                &extra,
            ]
            .concat(),
        );
        assert!(ok, "{task}: {err}");
    }
    let f = eval_fixtures();
    let vqa_dir = f.join("vqa");
    let (ann, res) = (
        vqa_dir.join("annotations.json"),
        vqa_dir.join("results.json"),
    );
    let scores = p("scores.json");
    std::fs::write(
        &scores,
        r#"{"scores": [[0.9, 0.1], [0.3, 0.8]], "caption_image": [0, 1]}"#,
    )
    .unwrap();
    let caps = p("caps.json");
    std::fs::write(
        &caps,
        r#"[{"image_id": 1, "caption": "A dog runs."}, {"image_id": 2, "caption": "A cat."}]"#,
    )
    .unwrap();
    let items = p("items.jsonl");
    std::fs::write(&items, r#"{"id": "a", "text": "a dog", "tags": "dog", "features": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}"#).unwrap();
    let feats = format!("{w}/features/features.tsv");
    let labels = format!("{w}/labels/predictions.tsv");
    let legacy = fixtures().join("pretrain/pytorch_model_legacy.bin");
    let (ret, cap, vqa) = (p("retrieval"), p("caption"), p("vqa"));
    let c = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let commands: Vec<Vec<String>> = vec![
        c(&["--help"]),
        c(&["--version"]),
        c(&["inspect", s(&legacy)]),
        c(&["inspect", "--json", s(&legacy)]),
        c(&["convert", s(&legacy), &p("converted")]),
        c(&[
            "encode",
            "--checkpoint",
            &ret,
            "--input",
            &items,
            "--out",
            &p("enc.safetensors"),
        ]),
        c(&[
            "eval",
            "vqa",
            "--annotations",
            s(&ann),
            "--results",
            s(&res),
        ]),
        c(&[
            "eval",
            "vqa",
            "--annotations",
            s(&ann),
            "--results",
            s(&res),
            "--rules",
            "pre-2021",
        ]),
        c(&[
            "eval",
            "caption",
            "--refs",
            &caps,
            "--preds",
            &caps,
            "--no-meteor",
        ]),
        c(&[
            "eval",
            "cider-df",
            "--captions",
            &caps,
            "--out",
            &p("df.json"),
        ]),
        c(&["eval", "retrieval", "--scores", &scores]),
        c(&[
            "eval",
            "retrieval",
            "--checkpoint",
            &ret,
            "--data",
            &w,
            "--images",
            "2",
        ]),
        c(&[
            "world",
            "generate",
            "--out",
            &p("world2"),
            "--images",
            "20",
            "--feature-dim",
            "8",
            "--render",
            "0",
        ]),
        c(&["check", &w]),
        c(&[
            "pretrain",
            "--dataset",
            &format!("{w}/pretrain/dataset.yaml"),
            "--output-dir",
            &p("pre"),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--img-feature-dim",
            "14",
            "--quiet",
        ]),
        c(&[
            "train",
            "retrieval",
            "--data",
            &w,
            "--out",
            &p("r2"),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--test-images",
            "2",
        ]),
        c(&[
            "train",
            "caption",
            "--data",
            &w,
            "--out",
            &p("c2"),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--eval-images",
            "2",
        ]),
        c(&[
            "train",
            "vqa",
            "--data",
            &w,
            "--out",
            &p("v2"),
            "--steps",
            "1",
            "--batch-size",
            "2",
        ]),
        c(&[
            "train",
            "gqa",
            "--data",
            &w,
            "--out",
            &p("g2"),
            "--steps",
            "1",
            "--batch-size",
            "2",
        ]),
        c(&[
            "train",
            "nlvr2",
            "--data",
            &w,
            "--out",
            &p("n2"),
            "--steps",
            "1",
            "--batch-size",
            "2",
        ]),
        c(&[
            "score",
            "--checkpoint",
            &ret,
            "--features",
            &feats,
            "--image",
            "img000000",
            "--labels",
            &labels,
            "--text",
            "a dog",
        ]),
        c(&[
            "retrieve",
            "--checkpoint",
            &ret,
            "--data",
            &w,
            "--query",
            "a dog",
            "--k",
            "2",
            "--first-stage-k",
            "3",
        ]),
        c(&[
            "caption",
            "--checkpoint",
            &cap,
            "--features",
            &feats,
            "--labels",
            &labels,
            "--image",
            "img000000",
            "--beams",
            "2",
            "--max-length",
            "5",
        ]),
        c(&[
            "answer",
            "--checkpoint",
            &vqa,
            "--features",
            &feats,
            "--image",
            "img000000",
            "--question",
            "what color is the dog?",
            "--tags",
            "dog",
        ]),
        c(&[
            "bench",
            "--workload",
            "pretrain-step",
            "--size",
            "tiny",
            "--runs",
            "1",
        ]),
        c(&["demo", "--quick", "--out", &p("demo")]),
    ];
    for c in &commands {
        let (code, err) = oscar_closed_reader(&c.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "`oscar {}` with a closed reader: {err}",
            c.join(" ")
        );
        assert_eq!(
            code,
            Some(0),
            "`oscar {}` with a closed reader exited {code:?}: {err}",
            c.join(" ")
        );
    }
}

/// `--save-every` / `--resume` on the command line: a VQA run resumed from its checkpoint ends
/// with the same loss as the uninterrupted one, and pre-training takes the same flags.
#[test]
fn training_commands_save_checkpoints_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let w = p("world");
    small_world(Path::new(&w), 40);
    let last_loss = |d: &str| -> f64 {
        let text = std::fs::read_to_string(Path::new(d).join("metrics.jsonl")).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
            .next_back()
            .unwrap()
    };
    let (a, b) = (p("a"), p("b"));
    let common = [
        "train",
        "vqa",
        "--data",
        &w,
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--save-every",
        "2",
        "--keep-last",
        "0",
    ];
    let (ok, _, err) = oscar(&[&common[..], &["--out", &a]].concat());
    assert!(ok, "{err}");
    assert!(
        Path::new(&a)
            .join("checkpoint-2/trainer_state.json")
            .exists()
            && Path::new(&a)
                .join("checkpoint-4/optimizer.safetensors")
                .exists()
    );
    let resume = format!("{a}/checkpoint-2");
    let (ok, _, err) = oscar(&[&common[..], &["--out", &b, "--resume", &resume]].concat());
    assert!(ok, "{err}");
    assert!(
        (last_loss(&a) - last_loss(&b)).abs() < 1e-6,
        "{} vs {}",
        last_loss(&a),
        last_loss(&b)
    );
    // The model a checkpoint holds is a task model the commands load.
    let (ok, stdout, err) = oscar(&[
        "answer",
        "--checkpoint",
        &resume,
        "--features",
        &format!("{w}/features/features.tsv"),
        "--image",
        "img000000",
        "--question",
        "what color is the dog?",
        "--tags",
        "dog",
    ]);
    assert!(ok && stdout.contains("score"), "{err}");

    let pre = p("pre");
    let (ok, _, err) = oscar(&[
        "pretrain",
        "--dataset",
        &format!("{w}/pretrain/dataset.yaml"),
        "--output-dir",
        &pre,
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--img-feature-dim",
        "14",
        "--save-every",
        "1",
        "--keep-last",
        "2",
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let kept: Vec<String> = std::fs::read_dir(&pre)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
}

/// `oscar bench --driven` (the protocol of tools/reference/bench_interleaved.py): the setup line,
/// one timing per variant asked on stdin, the peak memory at the end; an unknown variant is
/// refused by name.
#[test]
fn bench_driven_times_each_variant_asked() {
    use std::io::Write;
    let run = |workload: &str, stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oscar"))
            .args(["bench", "--driven", "--size", "tiny", "--batch", "2"])
            .args(["--workload", workload])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (
            out.status.success(),
            lines,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, lines, err) = run("pretrain-step", "step\nstep\n");
    assert!(ok, "{err}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["workload"], "pretrain_step");
    assert_eq!(lines[0]["batch"], 2);
    for l in &lines[1..3] {
        assert_eq!(l["variant"], "step");
        assert!(l["s"].as_f64().unwrap() > 0.0, "{l}");
    }
    assert!(lines[3]["peak_rss_mib"].as_f64().unwrap() > 0.0);
    let (ok, lines, err) = run("retrieval-score", "dynamic\nfixed\nbogus\n");
    assert!(
        !ok && err.contains("\"bogus\"") && err.contains("fixed"),
        "{err}"
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        (lines[1]["variant"].as_str(), lines[2]["variant"].as_str()),
        (Some("dynamic"), Some("fixed"))
    );
}

/// `--device`: the CPU by name, and a clear refusal of a device this build cannot use.
#[test]
fn devices_are_chosen_by_name_and_unsupported_ones_are_refused() {
    let legacy = fixtures().join("pretrain/pytorch_model_legacy.bin");
    let bench = [
        "bench",
        "--workload",
        "retrieval-score",
        "--size",
        "tiny",
        "--runs",
        "1",
        "--batch",
        "2",
    ];
    let (ok, _, err) = oscar(&[&bench[..], &["--device", "cpu"]].concat());
    assert!(ok, "{err}");
    let (ok, _, err) = oscar(&[&bench[..], &["--device", "cuda:0"]].concat());
    assert!(
        !ok && err.contains("cuda:0") && err.contains("the CPU always works"),
        "{err}"
    );
    let (ok, _, err) = oscar(&[&bench[..], &["--device", "tpu"]].concat());
    assert!(
        !ok && err.contains("expected cpu, cuda:N or metal:N"),
        "{err}"
    );
    let (ok, _, _) = oscar(&["inspect", s(&legacy)]);
    assert!(ok);
}

/// `--shard K/N` on `eval retrieval`, `caption` and `answer`, joined by `oscar merge`: three
/// shards equal one (scores, recall, captions, answers and their metrics), a shard cut short
/// resumes, and the merge refuses a missing shard.
#[test]
fn sharded_runs_merged_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let w = small_world(&dir.path().join("world"), 60);
    let d = dir.path();
    let train = |task: &str, extra: &[&str]| -> PathBuf {
        let m = d.join(task);
        let mut args = vec![
            "train",
            task,
            "--data",
            s(&w),
            "--out",
            s(&m),
            "--steps",
            "3",
            "--batch-size",
            "4",
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = oscar(&args);
        assert!(ok, "{err}");
        m
    };
    let ret = train("retrieval", &["--test-images", "2"]);
    let cap = train("caption", &["--eval-images", "2"]);
    let vqa = train("vqa", &[]);
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    // Runs every shard of `n` (the part files `{name}-{k}.json`), then merges them into `{name}-{n}.out.json`.
    let sharded =
        |name: &str, n: usize, cmd: &dyn Fn(&str, &Path) -> Vec<String>, merge_extra: &[&str]| {
            let parts: Vec<PathBuf> = (0..n)
                .map(|k| d.join(format!("{name}-{n}-{k}.json")))
                .collect();
            for (k, p) in parts.iter().enumerate() {
                let args = cmd(&format!("{k}/{n}"), p);
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let (ok, stdout, err) = oscar(&refs);
                assert!(
                    ok && stdout.contains(&format!("shard {k}/{n}")),
                    "{stdout}{err}"
                );
            }
            let out = d.join(format!("{name}-{n}.out.json"));
            let mut args = vec!["merge", "--out", s(&out)];
            args.extend_from_slice(merge_extra);
            args.extend(parts.iter().map(|p| s(p)));
            let (ok, stdout, err) = oscar(&args);
            assert!(ok, "{err}");
            (out, stdout, parts)
        };

    // Retrieval: 6 test images × 30 captions.
    let ret_cmd = |shard: &str, p: &Path| -> Vec<String> {
        [
            "eval",
            "retrieval",
            "--checkpoint",
            s(&ret),
            "--data",
            s(&w),
            "--images",
            "6",
            "--shard",
            shard,
            "--json",
            s(p),
        ]
        .map(String::from)
        .to_vec()
    };
    let (one, _, _) = sharded("ret", 1, &ret_cmd, &[]);
    let (three, stdout, parts) = sharded("ret", 3, &ret_cmd, &[]);
    assert!(
        stdout.contains("6 images × 30 captions from 3 parts"),
        "{stdout}"
    );
    let (a, b) = (json(&one), json(&three));
    assert_eq!(a["full"]["recall"], b["full"]["recall"]);
    assert_eq!(a["caption_image"], b["caption_image"]);
    let close = |x: &serde_json::Value, y: &serde_json::Value| {
        let f = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect()
        };
        let (x, y) = (f(x), f(y));
        x.len() == y.len() && x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-5)
    };
    assert!(close(&a["scores"], &b["scores"]) && a["scores"].as_array().unwrap().len() == 6);
    // The same recall as the unsharded full protocol.
    let full = d.join("full.json");
    let (ok, _, err) = oscar(&[
        "eval",
        "retrieval",
        "--checkpoint",
        s(&ret),
        "--data",
        s(&w),
        "--images",
        "6",
        "--json",
        s(&full),
    ]);
    assert!(ok, "{err}");
    assert_eq!(json(&full)["full"]["recall"], a["full"]["recall"]);
    // The merged file is a score file `oscar eval retrieval --scores` reads.
    let (ok, stdout, err) = oscar(&["eval", "retrieval", "--scores", s(&three)]);
    assert!(ok && stdout.contains("R@1"), "{stdout}{err}");
    // A shard cut short resumes: drop one row of shard 1, rerun it, merge again.
    let mut p1 = json(&parts[1]);
    let first = p1["results"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    p1["results"].as_object_mut().unwrap().remove(&first);
    std::fs::write(&parts[1], p1.to_string()).unwrap();
    let (ok, _, err) = oscar(&[
        "merge",
        "--out",
        s(&d.join("x.json")),
        s(&parts[0]),
        s(&parts[1]),
        s(&parts[2]),
    ]);
    assert!(!ok && err.contains("unfinished"), "{err}");
    let refs: Vec<String> = ret_cmd("1/3", &parts[1]);
    let (ok, _, err) = oscar(&refs.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    let (ok, _, err) = oscar(&[
        "merge",
        "--out",
        s(&d.join("x.json")),
        s(&parts[0]),
        s(&parts[1]),
        s(&parts[2]),
    ]);
    assert!(ok, "{err}");
    assert!(close(&json(&d.join("x.json"))["scores"], &a["scores"]));
    let (ok, _, err) = oscar(&[
        "merge",
        "--out",
        s(&d.join("x.json")),
        s(&parts[0]),
        s(&parts[2]),
    ]);
    assert!(!ok && err.contains("shard 1/3 is missing"), "{err}");

    // Captions of 5 test images, scored against their references.
    let all: Vec<serde_json::Value> =
        serde_json::from_value(json(&w.join("captions/test_caption.json"))).unwrap();
    let mut ids: Vec<String> = all
        .iter()
        .map(|c| c["image_id"].as_str().unwrap().to_string())
        .collect();
    ids.dedup();
    ids.truncate(5);
    let some: Vec<&serde_json::Value> = all
        .iter()
        .filter(|c| ids.contains(&c["image_id"].as_str().unwrap().to_string()))
        .collect();
    let refs = d.join("refs.json");
    std::fs::write(&refs, serde_json::to_string(&some).unwrap()).unwrap();
    let feats = w.join("features/features.tsv");
    let labels = w.join("labels/predictions.tsv");
    let cap_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "caption",
            "--checkpoint",
            s(&cap),
            "--features",
            s(&feats),
            "--labels",
            s(&labels),
            "--refs",
            s(&refs),
            "--beams",
            "2",
            "--max-length",
            "8",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let one_cap = d.join("one_cap.json");
    let args = cap_args(&["--out", s(&one_cap)]);
    let (ok, one_stdout, err) = oscar(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    let cap_cmd = |shard: &str, p: &Path| cap_args(&["--shard", shard, "--out", s(p)]);
    let (merged, stdout, _) = sharded("cap", 3, &cap_cmd, &["--refs", s(&refs)]);
    assert_eq!(json(&merged), json(&one_cap));
    let cider = |t: &str| {
        t.lines()
            .find(|l| l.contains("\"cider\""))
            .map(str::to_string)
    };
    assert!(
        cider(&stdout).is_some() && cider(&stdout) == cider(&one_stdout),
        "{stdout} vs {one_stdout}"
    );

    // Answers to every test question, with the official accuracy.
    let qs = w.join("vqa/test.json");
    let one_ans = d.join("one_ans.json");
    let (ok, _, err) = oscar(&[
        "answer",
        "--checkpoint",
        s(&vqa),
        "--features",
        s(&feats),
        "--questions",
        s(&qs),
        "--out",
        s(&one_ans),
    ]);
    assert!(ok, "{err}");
    let ans_cmd = |shard: &str, p: &Path| -> Vec<String> {
        [
            "answer",
            "--checkpoint",
            s(&vqa),
            "--features",
            s(&feats),
            "--questions",
            s(&qs),
            "--shard",
            shard,
            "--out",
            s(p),
        ]
        .map(String::from)
        .to_vec()
    };
    let anns = w.join("vqa/test_annotations.json");
    let (merged, stdout, _) = sharded("ans", 3, &ans_cmd, &["--annotations", s(&anns)]);
    assert_eq!(json(&merged), json(&one_ans));
    let (ok, one_acc, err) = oscar(&[
        "eval",
        "vqa",
        "--annotations",
        s(&anns),
        "--results",
        s(&one_ans),
    ]);
    assert!(ok, "{err}");
    let overall: f64 =
        serde_json::from_str::<serde_json::Value>(&stdout[stdout.find('{').unwrap()..]).unwrap()
            ["overall"]
            .as_f64()
            .unwrap();
    assert!(
        one_acc.contains(&format!("{overall:.2}")),
        "{one_acc} vs {overall}"
    );
}
