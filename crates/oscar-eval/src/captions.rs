//! Caption files (COCO format and Oscar's) and the whole captioning evaluation, as
//! pycocoevalcap's `COCOEvalCap.evaluate()` computes it.

use crate::bleu::{corpus_bleu, stats_from_counts};
use crate::cider::{cider_d_from_counts, DocFreq, DocFreqFile};
use crate::error::{EvalError, Result};
use crate::meteor::meteor;
use crate::ngrams::{count, Counts, Vocab};
use crate::ptb::Tokenizer;
use crate::rouge::rouge_l;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Captions by image id (ids kept as strings: COCO uses integers, Oscar uses keys).
pub type CaptionSet = BTreeMap<String, Vec<String>>;

/// An image id: COCO uses integers, Oscar uses string keys.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Id {
    Str(String),
    Num(serde_json::Number),
}

/// One `{image_id, caption}` entry; other fields (`id`, …) are ignored.
#[derive(serde::Deserialize)]
struct Entry {
    image_id: Option<Id>,
    caption: Option<String>,
}

#[derive(serde::Deserialize)]
struct CocoFile {
    annotations: Vec<Entry>,
}

/// Reads captions from a COCO annotation file (`{"annotations": [{"image_id", "caption"}]}`),
/// a COCO results / Oscar caption list (`[{"image_id", "caption"}]`), or Oscar's prediction TSV
/// (`key \t [{"caption", "conf"}]`, first caption taken). `one_per_image` makes a second caption
/// for an id an error (predictions).
pub fn read_captions(path: &Path, one_per_image: bool) -> Result<CaptionSet> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io {
        path: path.into(),
        err: e,
    })?;
    if text.trim().is_empty() {
        return Err(EvalError::bad_file(
            path,
            "file is empty: expected captions",
        ));
    }
    let mut set = CaptionSet::new();
    let mut add = |id: String, cap: String, where_: String| -> Result<()> {
        let e = set.entry(id.clone()).or_default();
        if one_per_image && !e.is_empty() {
            return Err(EvalError::bad_file(path, format!("{where_}: image {id} has a second caption; predictions need exactly one per image")));
        }
        e.push(cap);
        Ok(())
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let list: Vec<Entry> = if trimmed.starts_with('[') {
            serde_json::from_str(&text).map_err(|e| {
                EvalError::bad_file(
                    path,
                    format!("expected a list of {{image_id, caption}}: {e}"),
                )
            })?
        } else {
            let coco: CocoFile = serde_json::from_str(&text).map_err(|e| {
                EvalError::bad_file(
                    path,
                    format!(
                        "expected a COCO file with `annotations` of {{image_id, caption}}: {e}"
                    ),
                )
            })?;
            coco.annotations
        };
        for (i, item) in list.into_iter().enumerate() {
            let where_ = format!("entry {i}");
            let id = match item.image_id {
                Some(Id::Str(s)) => s,
                Some(Id::Num(n)) => n.to_string(),
                None => {
                    return Err(EvalError::bad_file(
                        path,
                        format!("{where_}: `image_id` (string or number) is missing"),
                    ))
                }
            };
            let cap = item.caption.ok_or_else(|| {
                EvalError::bad_file(path, format!("{where_}: `caption` (a string) is missing"))
            })?;
            add(id, cap, where_)?;
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let where_ = format!("line {}", i + 1);
            let (key, rest) = line.split_once('\t').ok_or_else(|| {
                EvalError::bad_file(
                    path,
                    format!("{where_}: expected `key<TAB>[{{\"caption\": …}}]`"),
                )
            })?;
            let v: serde_json::Value = serde_json::from_str(rest)
                .map_err(|e| EvalError::bad_file(path, format!("{where_}: not valid JSON: {e}")))?;
            let cap = v
                .get(0)
                .and_then(|c| c.get("caption"))
                .and_then(|c| c.as_str())
                .ok_or_else(|| {
                    EvalError::bad_file(
                        path,
                        format!("{where_}: expected a list whose first entry has `caption`"),
                    )
                })?;
            add(key.to_string(), cap.to_string(), where_)?;
        }
    }
    if set.is_empty() {
        return Err(EvalError::bad_file(path, "holds no captions"));
    }
    Ok(set)
}

/// Options of a captioning evaluation.
#[derive(Default)]
pub struct CaptionOptions {
    /// Captions are already tokenized (skip the PTB step).
    pub pretokenized: bool,
    /// The METEOR jar, when METEOR should be computed.
    pub meteor_jar: Option<PathBuf>,
    /// Document frequencies from a training corpus: adds CIDEr-D (what SCST optimizes).
    pub cider_df: Option<DocFreqFile>,
    /// Evaluate only the predicted images instead of requiring a prediction for every image.
    pub allow_subset: bool,
    /// How the PTB tokenization is done (unless `pretokenized`): natively (default) or by the
    /// Stanford jar itself. Both tokenize the references as one batch and the predictions as
    /// another, in image-id order, as pycocoevalcap tokenizes `gts` and `res`.
    pub tokenizer: Tokenizer,
}

#[derive(Debug, Serialize)]
pub struct ImageScores {
    pub image_id: String,
    pub bleu: [f64; 4],
    pub rouge_l: f64,
    pub cider: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meteor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cider_d: Option<f64>,
}

/// Corpus scores (on pycocoevalcap's scale: CIDEr ≈ 1.2, not 120) and per-image scores.
#[derive(Debug, Serialize)]
pub struct CaptionScores {
    pub images: usize,
    pub bleu: [f64; 4],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meteor: Option<f64>,
    pub rouge_l: f64,
    /// pycocoevalcap's CIDEr (CIDEr-D formula, document frequencies from these references).
    pub cider: f64,
    /// CIDEr-D with the document frequencies of a training corpus, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cider_d: Option<f64>,
    pub per_image: Vec<ImageScores>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Scores predictions against references.
pub fn evaluate_captions(
    refs: &CaptionSet,
    preds: &CaptionSet,
    opt: &CaptionOptions,
) -> Result<CaptionScores> {
    if preds.is_empty() {
        return Err(EvalError::Invalid("no predictions to evaluate".into()));
    }
    let unknown: Vec<&String> = preds.keys().filter(|k| !refs.contains_key(*k)).collect();
    if !unknown.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{} predicted image ids have no references, e.g. {}",
            unknown.len(),
            unknown
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let missing: Vec<&String> = refs.keys().filter(|k| !preds.contains_key(*k)).collect();
    if !missing.is_empty() && !opt.allow_subset {
        return Err(EvalError::Invalid(format!(
            "{} images with references have no prediction, e.g. {} (evaluate the predicted subset only with --subset)",
            missing.len(),
            missing.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let ids: Vec<&String> = preds.keys().collect();
    let raw_hyp: Vec<&str> = ids.iter().map(|id| preds[*id][0].as_str()).collect();
    let raw_refs: Vec<&str> = ids
        .iter()
        .flat_map(|id| refs[*id].iter().map(String::as_str))
        .collect();
    let (hyp_text, flat_refs): (Vec<String>, Vec<String>) = if opt.pretokenized {
        (
            raw_hyp.iter().map(|s| s.to_string()).collect(),
            raw_refs.iter().map(|s| s.to_string()).collect(),
        )
    } else {
        let (h, r) = rayon::join(
            || opt.tokenizer.tokenize(&raw_hyp),
            || opt.tokenizer.tokenize(&raw_refs),
        );
        (h?, r?)
    };
    let mut flat = flat_refs.into_iter();
    let ref_text: Vec<Vec<String>> = ids
        .iter()
        .map(|id| flat.by_ref().take(refs[*id].len()).collect())
        .collect();
    if let Some((id, _)) = ids.iter().zip(&ref_text).find(|(_, r)| r.is_empty()) {
        return Err(EvalError::Invalid(format!(
            "image {id} has no reference caption"
        )));
    }

    let mut vocab = Vocab::default();
    let hyp: Vec<Vec<u32>> = hyp_text.iter().map(|s| vocab.words(s)).collect();
    let refw: Vec<Vec<Vec<u32>>> = ref_text
        .iter()
        .map(|rs| rs.iter().map(|s| vocab.words(s)).collect())
        .collect();

    // N-gram counts once per sentence, shared by BLEU, the document frequencies and CIDEr.
    let hyp_counts: Vec<Counts> = hyp.par_iter().map(|h| count(h, 4)).collect();
    let ref_counts: Vec<Vec<Counts>> = refw
        .par_iter()
        .map(|rs| rs.iter().map(|r| count(r, 4)).collect())
        .collect();
    let bleu_stats: Vec<_> = (0..hyp.len())
        .into_par_iter()
        .map(|i| {
            stats_from_counts(
                hyp[i].len(),
                &hyp_counts[i],
                &refw[i].iter().map(Vec::len).collect::<Vec<_>>(),
                &ref_counts[i],
            )
        })
        .collect();
    let (bleu, bleu_per) = corpus_bleu(&bleu_stats);

    // ROUGE-L splits on single spaces: tokens of `s.split(' ')`, the empty one included.
    let mut rvocab = Vocab::default();
    let split = |v: &mut Vocab, s: &str| -> Vec<u32> { s.split(' ').map(|w| v.id(w)).collect() };
    let rouge_per: Vec<f64> = hyp_text
        .iter()
        .zip(&ref_text)
        .map(|(h, rs)| {
            let hw = split(&mut rvocab, h);
            let rw: Vec<Vec<u32>> = rs.iter().map(|r| split(&mut rvocab, r)).collect();
            rouge_l(&hw, &rw)
        })
        .collect();

    let cider_per =
        cider_d_from_counts(&hyp_counts, &ref_counts, &DocFreq::from_counts(&ref_counts));
    let cider_d_per = opt
        .cider_df
        .as_ref()
        .map(|f| cider_d_from_counts(&hyp_counts, &ref_counts, &DocFreq::from_file(f, &mut vocab)));

    let meteor_res = match &opt.meteor_jar {
        Some(jar) => {
            let items: Vec<(&str, &[String])> = hyp_text
                .iter()
                .zip(&ref_text)
                .map(|(h, r)| (h.as_str(), r.as_slice()))
                .collect();
            Some(meteor(jar, &items)?)
        }
        None => None,
    };

    let per_image = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ImageScores {
            image_id: (*id).clone(),
            bleu: bleu_per[i],
            rouge_l: rouge_per[i],
            cider: cider_per[i],
            meteor: meteor_res.as_ref().map(|m| m.1[i]),
            cider_d: cider_d_per.as_ref().map(|c| c[i]),
        })
        .collect();
    Ok(CaptionScores {
        images: ids.len(),
        bleu,
        meteor: meteor_res.map(|m| m.0),
        rouge_l: mean(&rouge_per),
        cider: mean(&cider_per),
        cider_d: cider_d_per.as_deref().map(mean),
        per_image,
    })
}

/// Document frequencies of a caption file's references (per image, the set of its captions'
/// n-grams), for CIDEr-D during SCST: `oscar eval cider-df`. Native PTB tokenization unless
/// `pretokenized`.
pub fn build_doc_freq(refs: &CaptionSet, pretokenized: bool) -> DocFreqFile {
    let opt = CaptionOptions {
        pretokenized,
        ..Default::default()
    };
    build_doc_freq_with(refs, &opt).expect("native tokenization cannot fail")
}

/// [`build_doc_freq`] with the tokenization chosen in `opt` (`pretokenized`, `tokenizer`): all
/// captions tokenized as one batch in image-id order.
pub fn build_doc_freq_with(refs: &CaptionSet, opt: &CaptionOptions) -> Result<DocFreqFile> {
    let pretokenized = opt.pretokenized;
    let raw: Vec<&str> = refs
        .values()
        .flat_map(|caps| caps.iter().map(String::as_str))
        .collect();
    let toks: Vec<String> = if pretokenized {
        raw.iter().map(|s| s.to_string()).collect()
    } else {
        opt.tokenizer.tokenize(&raw)?
    };
    let mut toks = toks.into_iter();
    let mut vocab = Vocab::default();
    let mut words: Vec<String> = Vec::new();
    let sets: Vec<Vec<Vec<u32>>> = refs
        .values()
        .map(|caps| {
            caps.iter()
                .map(|_| {
                    let t = toks.next().expect("one tokenization per caption");
                    t.split_whitespace()
                        .map(|w| {
                            let before = words.len() as u32;
                            let id = vocab.id(w);
                            if id == before {
                                words.push(w.to_string());
                            }
                            id
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    Ok(
        DocFreq::from_refs(&sets)
            .to_file(&words, if pretokenized { "pretokenized" } else { "ptb" }),
    )
}
