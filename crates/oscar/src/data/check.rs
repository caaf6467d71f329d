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
        let Some(kind) = Kind::of(p) else { continue };
        let (items, problems) = match kind.check(p, img_feature_dim, num_answers) {
            Ok(n) => (n, vec![]),
            Err(v) => (0, v),
        };
        reports.push(FileReport {
            path: p.clone(),
            kind: kind.label().into(),
            items,
            problems,
        });
    }
    reports
}

/// The kinds of file `oscar check` knows, told apart by name and folder.
#[derive(Clone, Copy)]
enum Kind {
    Features,
    Detections,
    TorchFeatures,
    WordPieceVocab,
    AnswerVocab,
    WorldMeta,
    WorldScenes,
    Nlvr2,
    /// The official VQA format; the key holding the list.
    VqaOfficial(&'static str),
    Captions,
    Questions,
    Corpus,
    PretrainYaml,
    TorchCaptions,
    ImageKeys,
}

impl Kind {
    /// The kind of `p`, or `None` for a file `oscar check` does not read. The first rule that
    /// matches wins.
    fn of(p: &Path) -> Option<Kind> {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = name.as_str();
        let in_folder = |f: &dyn Fn(&str) -> bool| {
            p.components()
                .any(|c| f(c.as_os_str().to_string_lossy().as_ref()))
        };
        let json = n.ends_with(".json");
        Some(
            if n.ends_with(".tsv")
                && (n.starts_with("features")
                    || n.contains(".feature.")
                    || n.contains("img_frcnn_feats"))
            {
                Kind::Features
            } else if n.ends_with(".tsv") && (n.starts_with("predictions") || n.contains(".label."))
            {
                Kind::Detections
            } else if n.ends_with(".pt") && n.contains("feats") {
                Kind::TorchFeatures
            } else if n == "vocab.txt" {
                Kind::WordPieceVocab
            } else if n.contains("ans2label") || n.contains("label2ans") {
                Kind::AnswerVocab
            } else if n == "world.json" {
                Kind::WorldMeta
            } else if n == "scenes.json" {
                Kind::WorldScenes
            } else if json && in_folder(&|c| c.contains("nlvr")) {
                Kind::Nlvr2
            } else if json && n.ends_with("annotations.json") {
                Kind::VqaOfficial("annotations")
            } else if json && n.ends_with("questions.json") {
                Kind::VqaOfficial("questions")
            } else if json && (n.contains("caption") || n.contains("captions")) {
                Kind::Captions
            } else if json && in_folder(&|c| c.contains("vqa") || c.contains("gqa")) {
                Kind::Questions
            } else if n == "corpus.tsv" || n.ends_with("corpus.tsv") {
                Kind::Corpus
            } else if n.ends_with(".yaml") || n.ends_with(".yml") {
                Kind::PretrainYaml
            } else if n.ends_with(".pt") && n.contains("captions") {
                Kind::TorchCaptions
            } else if n.contains("img_keys") {
                Kind::ImageKeys
            } else {
                return None;
            },
        )
    }

    /// What the report calls it.
    fn label(self) -> &'static str {
        match self {
            Kind::Features => "region features",
            Kind::Detections => "detections / tags",
            Kind::TorchFeatures => "region features (torch)",
            Kind::WordPieceVocab => "WordPiece vocabulary",
            Kind::AnswerVocab => "answer vocabulary",
            Kind::WorldMeta => "world description",
            Kind::WorldScenes => "world scenes",
            Kind::Nlvr2 => "NLVR2 statements",
            Kind::VqaOfficial(_) => "VQA official format",
            Kind::Captions => "captions",
            Kind::Questions => "VQA/GQA questions",
            Kind::Corpus => "pre-training corpus",
            Kind::PretrainYaml => "pre-training dataset",
            Kind::TorchCaptions => "retrieval captions (torch)",
            Kind::ImageKeys => "image keys",
        }
    }

    /// Reads `p` as this kind: the number of items, or every problem found.
    fn check(
        self,
        p: &Path,
        dim: usize,
        num_answers: Option<usize>,
    ) -> std::result::Result<usize, Vec<String>> {
        let one = |e: crate::Error| vec![e.to_string()];
        match self {
            Kind::Features => check_features(p, dim),
            Kind::Detections => check_detections(p),
            Kind::TorchFeatures => FeatureStore::open_torch_dict(p, dim)
                .map(|s| s.len())
                .map_err(one),
            Kind::WordPieceVocab => BertTokenizer::from_vocab(p)
                .map(|t| t.vocab_size())
                .map_err(one),
            Kind::AnswerVocab => AnswerVocab::read(p).map(|v| v.len()).map_err(one),
            Kind::WorldMeta => check_world_meta(p, dim),
            Kind::WorldScenes => oscar_world::files::read_scenes(p)
                .map(|s| s.len())
                .map_err(|e| vec![e.to_string()]),
            Kind::Nlvr2 => read_nlvr2(p).map(|v| v.len()).map_err(one),
            Kind::VqaOfficial(key) => check_json_list(p, key),
            Kind::Captions => check_captions(p),
            Kind::Questions => read_qa(p, num_answers).map(|v| v.len()).map_err(one),
            Kind::Corpus => check_corpus(p),
            Kind::PretrainYaml => check_pretrain_yaml(p, dim),
            Kind::TorchCaptions => super::text::read_retrieval_captions(p)
                .map(|c| c.len())
                .map_err(one),
            Kind::ImageKeys => super::text::read_keys(p).map(|k| k.len()).map_err(one),
        }
    }
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
