//! The inference API (`oscar::infer`) on models trained on a small world: each call equals the
//! task code it wraps on the same inputs, a directory loads as the task its settings name, and
//! bad inputs are errors that say what was expected.

use oscar::data::features::FeatureStore;
use oscar::data::text::AnswerVocab;
use oscar::infer::{CaptionOptions, ImageInput, TaskModel};
use oscar::tasks::caption::{CaptionConfig, CaptionSet, Captioner, Mode};
use oscar::tasks::finetune::{Optim, RunFiles};
use oscar::tasks::qa::{Answerer, QaConfig, QaSet};
use oscar::tasks::retrieval::{world_paths, RetrievalSet, RetrievalTrainConfig, Retriever};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;
use std::path::Path;

fn world(dir: &Path) {
    let wc = oscar_world::WorldConfig {
        images: 50,
        seed: 2,
        feature_dim: 8,
        ..Default::default()
    };
    oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), dir, 0).unwrap();
}

fn optim() -> Optim {
    Optim {
        steps: 3,
        batch_size: 4,
        ..Optim::default()
    }
}

/// Trains and saves a tiny model of each task into `dir/{caption,vqa,retrieval}`.
fn train_all(w: &Path, dir: &Path) {
    let tok = BertTokenizer::from_vocab(&w.join("vocab.txt")).unwrap();
    let tiny = OscarConfig::tiny(tok.vocab_size(), 14);
    let feats = w.join("features/features.tsv");
    let labels = w.join("labels/predictions.tsv");
    let vocab = Some(w.join("vocab.txt"));
    let files = |name: &str| RunFiles {
        out: Some(dir.join(format!("{name}-run"))),
        vocab: vocab.clone(),
        keep_last: 1,
        ..RunFiles::default()
    };

    let caps = CaptionSet::open(
        &w.join("captions/train_caption.json"),
        &feats,
        Some(&labels),
        14,
    )
    .unwrap();
    let cap = oscar::tasks::caption::train(
        &caps,
        &tok,
        None,
        &tiny,
        &CaptionConfig {
            optim: optim(),
            ..CaptionConfig::default()
        },
        &files("caption"),
        |_, _, _| {},
    )
    .unwrap();
    cap.save(&dir.join("caption"), vocab.as_deref()).unwrap();

    let answers = AnswerVocab::read(&w.join("vqa/ans2label.json")).unwrap();
    let qa = QaSet::open(&w.join("vqa/train.json"), &feats, 14, answers.len()).unwrap();
    let m = oscar::tasks::qa::train(
        &qa,
        &tok,
        &answers,
        None,
        &tiny,
        &QaConfig {
            optim: optim(),
            ..QaConfig::default()
        },
        &files("vqa"),
        None,
        |_, _, _| {},
    )
    .unwrap();
    m.save(&dir.join("vqa"), vocab.as_deref()).unwrap();

    let (c, f, l) = world_paths(w, "train");
    let set = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    oscar::tasks::retrieval::train(
        &set,
        &tok,
        None,
        &tiny,
        &RetrievalTrainConfig {
            optim: optim(),
            ..RetrievalTrainConfig::default()
        },
        &files("retrieval"),
        |_, _, _| {},
    )
    .unwrap();
    // The run's last checkpoint is a complete retrieval model directory (retrieval.json included).
    std::fs::rename(
        dir.join("retrieval-run/checkpoint-3"),
        dir.join("retrieval"),
    )
    .unwrap();
}

#[test]
fn each_call_equals_the_task_code_it_wraps() {
    let d = tempfile::tempdir().unwrap();
    let (w, m) = (d.path().join("w"), d.path().join("m"));
    world(&w);
    train_all(&w, &m);
    let tok = BertTokenizer::from_vocab(&w.join("vocab.txt")).unwrap();
    let store = FeatureStore::open(&w.join("features/features.tsv"), 14).unwrap();
    let caps = CaptionSet::open(
        &w.join("captions/test_caption.json"),
        &w.join("features/features.tsv"),
        Some(&w.join("labels/predictions.tsv")),
        14,
    )
    .unwrap();
    let images: Vec<ImageInput> = caps
        .images
        .iter()
        .map(|i| {
            ImageInput::from_store(
                &store,
                i,
                caps.tags(i)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            )
            .unwrap()
        })
        .collect();

    // Captioning: the API's beam-2 captions are the captioner's on the same contexts.
    let TaskModel::Captioning(api) =
        TaskModel::load(&m.join("caption"), &candle_core::Device::Cpu).unwrap()
    else {
        panic!("caption.json should load a captioner")
    };
    let opts = CaptionOptions {
        num_beams: 2,
        max_length: 10,
        ..CaptionOptions::default()
    };
    let got = api.caption(&images, &opts).unwrap();
    let cap = Captioner::load(&m.join("caption"), &candle_core::Device::Cpu).unwrap();
    let st = oscar::tasks::caption::decode::DecodeSettings {
        num_beams: 2,
        max_gen_length: 10,
        ..cap.settings.decode.clone()
    };
    let want = cap
        .generate(
            &tok,
            &cap.contexts(&tok, &caps).unwrap(),
            Mode::Beam,
            &st,
            16,
            true,
            0,
            |_| {},
        )
        .unwrap();
    assert_eq!(got.len(), images.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.text, tok.decode(&w.tokens));
        assert!((g.score - w.score).abs() < 1e-9);
    }

    // Question answering: batched answers equal one-at-a-time answers.
    let TaskModel::Answering(api) =
        TaskModel::load(&m.join("vqa"), &candle_core::Device::Cpu).unwrap()
    else {
        panic!("qa.json should load an answerer")
    };
    let questions = [
        "what color is the dog?",
        "how many cats are there?",
        "is there a bus?",
    ];
    let ims = &images[..3];
    let got = api.answer(ims, &questions, 3).unwrap();
    let answerer = Answerer::load(&m.join("vqa"), &candle_core::Device::Cpu).unwrap();
    for ((im, q), g) in ims.iter().zip(questions).zip(&got) {
        let regions =
            oscar::data::features::regions_from(im.features.clone(), None, 14, "x").unwrap();
        let want = answerer
            .answer(&tok, q, &im.tags.join(" "), &regions, 3)
            .unwrap();
        assert_eq!(g.len(), 3);
        for (a, (wa, ws)) in g.iter().zip(&want) {
            assert_eq!(&a.answer, wa);
            assert!((a.score - ws).abs() < 1e-5, "{} vs {ws}", a.score);
        }
    }

    // Matching: pair scores equal the retriever's; rankings are sorted and complete.
    let TaskModel::Matching(api) =
        TaskModel::load(&m.join("retrieval"), &candle_core::Device::Cpu).unwrap()
    else {
        panic!("retrieval.json should load a matcher")
    };
    let texts: Vec<&str> = caps.captions[&caps.images[0]]
        .iter()
        .map(String::as_str)
        .chain(["a purple submarine"])
        .collect();
    let ranked = api.rank_texts(&images[0], &texts).unwrap();
    assert_eq!(ranked.len(), texts.len());
    assert!(ranked.windows(2).all(|p| p[0].score >= p[1].score));
    let retr = Retriever::load(&m.join("retrieval"), &candle_core::Device::Cpu).unwrap();
    let settings = oscar::tasks::retrieval::saved_settings(&m.join("retrieval")).unwrap();
    let set = RetrievalSet {
        images: vec![caps.images[0].clone()],
        captions: texts.iter().map(|t| (0, t.to_string())).collect(),
        features: [(caps.images[0].clone(), store.get(&caps.images[0]).unwrap())].into(),
        tags: [(caps.images[0].clone(), images[0].tags.join(" "))].into(),
    };
    let want = retr
        .score_pairs(
            &tok,
            &set,
            &(0..texts.len()).map(|c| (0, c)).collect::<Vec<_>>(),
            &settings,
            8,
            |_| {},
        )
        .unwrap();
    for r in &ranked {
        assert!((r.score - want[r.index]).abs() < 1e-6);
    }
    let by_image = api.rank_images(texts[0], &images).unwrap();
    let mut idx: Vec<usize> = by_image.iter().map(|r| r.index).collect();
    idx.sort();
    assert_eq!(idx, (0..images.len()).collect::<Vec<_>>());
}

#[test]
fn bad_inputs_say_what_was_expected() {
    let d = tempfile::tempdir().unwrap();
    let (w, m) = (d.path().join("w"), d.path().join("m"));
    world(&w);
    train_all(&w, &m);
    let TaskModel::Answering(api) =
        TaskModel::load(&m.join("vqa"), &candle_core::Device::Cpu).unwrap()
    else {
        panic!()
    };
    let wrong = ImageInput::new(vec![0.5; 10], vec!["dog".into()]);
    let e = api
        .answer(std::slice::from_ref(&wrong), &["what?"], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("image 0") && e.contains("14"), "{e}");
    let e = api
        .answer(&[wrong.clone(), wrong], &["what?"], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 images for 1 questions"), "{e}");
    let e = TaskModel::load(&w, &candle_core::Device::Cpu)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("not a task model directory"), "{e}");
    // Detector output with boxes: the 6 box dims are appended per row.
    let im = ImageInput::with_boxes(
        &[1.0; 16],
        8,
        &[[0.0, 0.0, 320.0, 240.0], [64.0, 48.0, 640.0, 480.0]],
        (640.0, 480.0),
        vec![],
    )
    .unwrap();
    assert_eq!(im.features.len(), 28);
    assert_eq!(&im.features[8..14], &[0.0, 0.0, 0.5, 0.5, 0.5, 0.5]);
    assert!(ImageInput::with_boxes(&[1.0; 15], 8, &[[0.0; 4]; 2], (640.0, 480.0), vec![]).is_err());
    assert!(ImageInput::with_boxes(&[1.0; 16], 8, &[[0.0; 4]; 2], (0.0, 480.0), vec![]).is_err());
}
