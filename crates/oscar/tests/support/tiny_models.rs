//! Test support shared by the inference API's tests and the server's (`#[path]`-included):
//! a 50-image world with 8-d features and a captioning, a VQA and a retrieval model trained on
//! it for 3 steps each — the directories `oscar::infer` and `oscar serve` load.

#![allow(dead_code)]

use oscar::data::text::AnswerVocab;
use oscar::tasks::caption::{CaptionConfig, CaptionSet};
use oscar::tasks::finetune::{Optim, RunFiles};
use oscar::tasks::qa::{QaConfig, QaSet};
use oscar::tasks::retrieval::{world_paths, RetrievalSet, RetrievalTrainConfig};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;
use std::path::Path;

pub fn world(dir: &Path) {
    world_with(dir, 8);
}

/// The 50-image world with `feature_dim`-d detector features (+ 6 box dimensions).
pub fn world_with(dir: &Path, feature_dim: usize) {
    let wc = oscar_world::WorldConfig {
        images: 50,
        seed: 2,
        feature_dim,
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
pub fn train_all(w: &Path, dir: &Path) {
    train_all_with(w, dir, 14);
}

/// [`train_all`] for a world whose regions are `region_dim` wide (features + 6).
pub fn train_all_with(w: &Path, dir: &Path, region_dim: usize) {
    let tok = BertTokenizer::from_vocab(&w.join("vocab.txt")).unwrap();
    let tiny = OscarConfig::tiny(tok.vocab_size(), region_dim);
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
        region_dim,
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
    let qa = QaSet::open(&w.join("vqa/train.json"), &feats, region_dim, answers.len()).unwrap();
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
    let set = RetrievalSet::open(&c, &f, &l, region_dim, None).unwrap();
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
