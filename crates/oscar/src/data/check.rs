//! `oscar check DATASET`: reads every file of a dataset directory that oscar-rs knows and reports
//! all problems at once (not just the first), each as `file: row/entry: what, expected what`.

use super::features::{parse_detections, FeatureStore};
use super::text::{read_nlvr2, read_qa, AnswerVocab};
use super::tsv::TsvFile;
use crate::tokenizer::BertTokenizer;
use std::path::{Path, PathBuf};

/// What was checked in one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub kind: String,
    pub items: usize,
    pub problems: Vec<String>,
}

const MAX_PROBLEMS_PER_FILE: usize = 50;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Checks every known file under `dir`. `img_feature_dim` is the width features must have.
pub fn check_dataset(dir: &Path, img_feature_dim: usize) -> Vec<FileReport> {
    let mut all = Vec::new();
    files(dir, &mut all);
    let num_answers = all
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("ans2label"))
        })
        .and_then(|p| AnswerVocab::read(p).ok())
        .map(|v| v.len());
    let mut reports = Vec::new();
    for p in &all {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut rep = |kind: &str, r: std::result::Result<usize, Vec<String>>| {
            let (items, problems) = match r {
                Ok(n) => (n, vec![]),
                Err(v) => (0, v),
            };
            reports.push(FileReport {
                path: p.clone(),
                kind: kind.into(),
                items,
                problems,
            });
        };
        let one = |e: crate::Error| vec![e.to_string()];
        if name.ends_with(".tsv")
            && (name.starts_with("features")
                || name.contains(".feature.")
                || name.contains("img_frcnn_feats"))
        {
            rep("region features", check_features(p, img_feature_dim));
        } else if name.ends_with(".tsv")
            && (name.starts_with("predictions") || name.contains(".label."))
        {
            rep("detections / tags", check_detections(p));
        } else if name.ends_with(".pt") && name.contains("feats") {
            rep(
                "region features (torch)",
                FeatureStore::open_torch_dict(p, img_feature_dim)
                    .map(|s| s.len())
                    .map_err(one),
            );
        } else if name == "vocab.txt" {
            rep(
                "WordPiece vocabulary",
                BertTokenizer::from_vocab(p)
                    .map(|t| t.vocab_size())
                    .map_err(one),
            );
        } else if name.contains("ans2label") || name.contains("label2ans") {
            rep(
                "answer vocabulary",
                AnswerVocab::read(p).map(|v| v.len()).map_err(one),
            );
        } else if name == "world.json" {
            rep("world description", check_world_meta(p, img_feature_dim));
        } else if name == "scenes.json" {
            rep(
                "world scenes",
                oscar_world::files::read_scenes(p)
                    .map(|s| s.len())
                    .map_err(|e| vec![e.to_string()]),
            );
        } else if name.ends_with(".json")
            && p.components()
                .any(|c| c.as_os_str().to_string_lossy().contains("nlvr"))
        {
            rep(
                "NLVR2 statements",
                read_nlvr2(p).map(|v| v.len()).map_err(one),
            );
        } else if name.ends_with(".json")
            && (name.ends_with("annotations.json") || name.ends_with("questions.json"))
        {
            rep(
                "VQA official format",
                check_json_list(
                    p,
                    if name.ends_with("annotations.json") {
                        "annotations"
                    } else {
                        "questions"
                    },
                ),
            );
        } else if name.ends_with(".json") && (name.contains("caption") || name.contains("captions"))
        {
            rep("captions", check_captions(p));
        } else if name.ends_with(".json")
            && p.components().any(|c| {
                let s = c.as_os_str().to_string_lossy();
                s.contains("vqa") || s.contains("gqa")
            })
        {
            rep(
                "VQA/GQA questions",
                read_qa(p, num_answers).map(|v| v.len()).map_err(one),
            );
        } else if name == "corpus.tsv" || name.ends_with("corpus.tsv") {
            rep("pre-training corpus", check_corpus(p));
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            rep(
                "pre-training dataset",
                check_pretrain_yaml(p, img_feature_dim),
            );
        } else if name.ends_with(".pt") && name.contains("captions") {
            rep(
                "retrieval captions (torch)",
                super::text::read_retrieval_captions(p)
                    .map(|c| c.len())
                    .map_err(one),
            );
        } else if name.contains("img_keys") {
            rep(
                "image keys",
                super::text::read_keys(p).map(|k| k.len()).map_err(one),
            );
        }
    }
    reports
}

/// `world.json` must parse and describe the region width the rest is checked against.
fn check_world_meta(p: &Path, dim: usize) -> std::result::Result<usize, Vec<String>> {
    let meta = oscar_world::files::read_world_meta(p).map_err(|e| vec![e.to_string()])?;
    if meta.summary.region_dim != dim {
        return Err(vec![format!(
            "{}: summary.region_dim is {}, but the features are checked at img_feature_dim {dim}",
            p.display(),
            meta.summary.region_dim
        )]);
    }
    Ok(meta.config.images)
}

fn check_features(p: &Path, dim: usize) -> std::result::Result<usize, Vec<String>> {
    let store = FeatureStore::open_tsv(p, dim).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let keys = store.keys();
    for k in &keys {
        if let Err(e) = store.get(k) {
            problems.push(e.to_string());
            if problems.len() >= MAX_PROBLEMS_PER_FILE {
                problems.push(format!("… stopped after {MAX_PROBLEMS_PER_FILE} problems"));
                break;
            }
        }
    }
    if problems.is_empty() {
        Ok(keys.len())
    } else {
        Err(problems)
    }
}

fn check_detections(p: &Path) -> std::result::Result<usize, Vec<String>> {
    let tsv = TsvFile::open(p).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    for i in 0..tsv.num_rows() {
        let at = format!("{}: row {}", p.display(), i + 1);
        match tsv.row(i) {
            Ok(f) if f.len() == 2 => {
                if let Err(e) = parse_detections(&f[1], &at) {
                    problems.push(e);
                }
            }
            Ok(f) => problems.push(format!(
                "{at}: {} columns, expected `key<TAB>json`",
                f.len()
            )),
            Err(e) => problems.push(e.to_string()),
        }
        if problems.len() >= MAX_PROBLEMS_PER_FILE {
            break;
        }
    }
    if problems.is_empty() {
        Ok(tsv.num_rows())
    } else {
        Err(problems)
    }
}

fn check_captions(p: &Path) -> std::result::Result<usize, Vec<String>> {
    let text = std::fs::read_to_string(p).map_err(|e| vec![format!("{}: {e}", p.display())])?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| vec![format!("{}: not valid JSON: {e}", p.display())])?;
    // Retrieval's {image_id: [captions]} or the caption lists.
    if let serde_json::Value::Object(m) = &v {
        if !m.contains_key("annotations") {
            let bad: Vec<String> = m
                .iter()
                .filter(|(_, c)| {
                    !c.as_array()
                        .is_some_and(|a| !a.is_empty() && a.iter().all(|x| x.is_string()))
                })
                .map(|(k, _)| {
                    format!(
                        "{}: image {k}: expected a non-empty list of caption strings",
                        p.display()
                    )
                })
                .collect();
            return if bad.is_empty() {
                Ok(m.len())
            } else {
                Err(bad)
            };
        }
    }
    oscar_eval::captions::read_captions(p, false)
        .map(|s| s.values().map(Vec::len).sum())
        .map_err(|e| vec![e.to_string()])
}

fn check_json_list(p: &Path, key: &str) -> std::result::Result<usize, Vec<String>> {
    let text = std::fs::read_to_string(p).map_err(|e| vec![format!("{}: {e}", p.display())])?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| vec![format!("{}: not valid JSON: {e}", p.display())])?;
    v.get(key)
        .and_then(|a| a.as_array())
        .map(Vec::len)
        .ok_or_else(|| {
            vec![format!(
                "{}: expected an object with a `{key}` list",
                p.display()
            )]
        })
}

fn check_corpus(p: &Path) -> std::result::Result<usize, Vec<String>> {
    let text = std::fs::read_to_string(p).map_err(|e| vec![format!("{}: {e}", p.display())])?;
    let mut problems = Vec::new();
    let mut n = 0;
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        n += 1;
        let cols = l.split('\t').count();
        if cols != 3 {
            problems.push(format!(
                "{}: line {}: {cols} columns, expected img_info<TAB>label_info<TAB>text_a",
                p.display(),
                i + 1
            ));
        }
        if problems.len() >= MAX_PROBLEMS_PER_FILE {
            break;
        }
    }
    if n == 0 {
        problems.push(format!("{}: the corpus is empty", p.display()));
    }
    if problems.is_empty() {
        Ok(n)
    } else {
        Err(problems)
    }
}

/// Every corpus row must resolve to its image's features and tags.
fn check_pretrain_yaml(p: &Path, dim: usize) -> std::result::Result<usize, Vec<String>> {
    let c = super::corpus::PretrainCorpus::open(p, dim).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..c.rows.len() {
        if !seen.insert((
            c.rows[i].dataset.clone(),
            c.rows[i].chunk.clone(),
            c.rows[i].image.clone(),
        )) {
            continue;
        }
        for r in [c.regions(i).err(), c.tags(i).err()].into_iter().flatten() {
            problems.push(format!("corpus row {}: {r}", i + 1));
        }
        if problems.len() >= MAX_PROBLEMS_PER_FILE {
            break;
        }
    }
    if problems.is_empty() {
        Ok(c.rows.len())
    } else {
        Err(problems)
    }
}
