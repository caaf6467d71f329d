//! CIDEr-D (Vedantam et al. 2015, with vrama91's clipping and Gaussian length penalty, σ = 6),
//! which is what pycocoevalcap 1.2 reports as "CIDEr" when the document frequencies come from the
//! evaluated references, and what SCST uses with document frequencies from the training captions.

use crate::ngrams::{count, order, Counts, NGram, Vocab};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

pub const SIGMA: f64 = 6.0;

/// Document frequencies: in how many images' reference sets each n-gram occurs, and the number
/// of images (`ref_len`; the score uses its log).
#[derive(Debug, Clone, Default)]
pub struct DocFreq {
    pub df: FxHashMap<NGram, f64>,
    pub num_images: f64,
}

/// The on-disk form of [`DocFreq`] (`oscar eval cider-df`): n-grams as space-joined words.
#[derive(Debug, Serialize, Deserialize)]
pub struct DocFreqFile {
    pub ref_len: f64,
    pub document_frequency: std::collections::BTreeMap<String, f64>,
    /// How the captions were tokenized before counting.
    #[serde(default)]
    pub tokenization: String,
}

impl DocFreq {
    /// Frequencies over the reference sets (one set of n-grams per image).
    pub fn from_refs(refs: &[Vec<Vec<u32>>]) -> Self {
        let counts: Vec<Vec<Counts>> = refs
            .iter()
            .map(|set| set.iter().map(|r| count(r, 4)).collect())
            .collect();
        Self::from_counts(&counts)
    }

    /// [`DocFreq::from_refs`] from n-gram counts computed once.
    pub fn from_counts(refs: &[Vec<Counts>]) -> Self {
        let mut df: FxHashMap<NGram, f64> = FxHashMap::default();
        for set in refs {
            let mut seen: rustc_hash::FxHashSet<NGram> = Default::default();
            for r in set {
                seen.extend(r.keys().copied());
            }
            for g in seen {
                *df.entry(g).or_insert(0.0) += 1.0;
            }
        }
        DocFreq {
            df,
            num_images: refs.len() as f64,
        }
    }

    pub fn to_file(&self, vocab_words: &[String], tokenization: &str) -> DocFreqFile {
        let document_frequency = self
            .df
            .iter()
            .map(|(g, v)| {
                (
                    g[..order(g)]
                        .iter()
                        .map(|&w| vocab_words[w as usize].as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    *v,
                )
            })
            .collect();
        DocFreqFile {
            ref_len: self.num_images,
            document_frequency,
            tokenization: tokenization.into(),
        }
    }

    pub fn from_file(f: &DocFreqFile, vocab: &mut Vocab) -> Self {
        let mut df = FxHashMap::default();
        for (k, v) in &f.document_frequency {
            let words = vocab.words(k);
            if (1..=4).contains(&words.len()) {
                let mut g = [u32::MAX; 4];
                g[..words.len()].copy_from_slice(&words);
                df.insert(g, *v);
            }
        }
        DocFreq {
            df,
            num_images: f.ref_len,
        }
    }
}

/// A sentence's tf-idf norms per order and the reference's "length" (the bigram count, which is
/// what pycocoevalcap's `counts2vec` sums). The vectors themselves are never materialised: an
/// entry is `count · idf`, looked up when needed.
struct Norms {
    norm: [f64; 4],
    length: f64,
}

fn idf(g: &NGram, df: &DocFreq, log_ref_len: f64) -> f64 {
    log_ref_len - df.df.get(g).copied().unwrap_or(0.0).max(1.0).ln()
}

fn norms(counts: &Counts, df: &DocFreq, log_ref_len: f64) -> Norms {
    let mut norm = [0.0; 4];
    let mut length = 0.0;
    for (g, tf) in counts.iter() {
        let n = order(g) - 1;
        let v = tf as f64 * idf(g, df, log_ref_len);
        norm[n] += v * v;
        if n == 1 {
            length += tf as f64;
        }
    }
    Norms {
        norm: norm.map(f64::sqrt),
        length,
    }
}

/// pycocoevalcap's `sim`: per order, the clipped dot product Σ min(h, r)·r over the hypothesis'
/// n-grams, divided by both norms, times the Gaussian length penalty.
fn sim(
    hyp: &[(NGram, usize, f64)],
    hn: &Norms,
    r: &Counts,
    rn: &Norms,
    df: &DocFreq,
    log_ref_len: f64,
    sigma: f64,
) -> [f64; 4] {
    let delta = hn.length - rn.length;
    let mut val = [0.0; 4];
    for (g, n, hv) in hyp {
        if let Some(rc) = r.get(g) {
            let rv = rc as f64 * idf(g, df, log_ref_len);
            val[*n] += hv.min(rv) * rv;
        }
    }
    for (n, v) in val.iter_mut().enumerate() {
        if hn.norm[n] != 0.0 && rn.norm[n] != 0.0 {
            *v /= hn.norm[n] * rn.norm[n];
        }
        *v *= std::f64::consts::E.powf(-(delta * delta) / (2.0 * sigma * sigma));
    }
    val
}

/// Per-image CIDEr-D of each candidate against its references.
pub fn cider_d(cands: &[Vec<u32>], refs: &[Vec<Vec<u32>>], df: &DocFreq) -> Vec<f64> {
    let c: Vec<Counts> = cands.iter().map(|w| count(w, 4)).collect();
    let r: Vec<Vec<Counts>> = refs
        .iter()
        .map(|set| set.iter().map(|w| count(w, 4)).collect())
        .collect();
    cider_d_from_counts(&c, &r, df)
}

/// [`cider_d`] from n-gram counts computed once (images scored in parallel).
pub fn cider_d_from_counts(cands: &[Counts], refs: &[Vec<Counts>], df: &DocFreq) -> Vec<f64> {
    use rayon::prelude::*;
    let log_ref_len = df.num_images.ln();
    cands
        .par_iter()
        .zip(refs)
        .map(|(c, rs)| {
            let hn = norms(c, df, log_ref_len);
            let hyp: Vec<(NGram, usize, f64)> = c
                .iter()
                .map(|(g, tf)| (*g, order(g) - 1, tf as f64 * idf(g, df, log_ref_len)))
                .collect();
            let mut score = [0.0; 4];
            for r in rs {
                let s = sim(
                    &hyp,
                    &hn,
                    r,
                    &norms(r, df, log_ref_len),
                    df,
                    log_ref_len,
                    SIGMA,
                );
                for n in 0..4 {
                    score[n] += s[n];
                }
            }
            score.iter().sum::<f64>() / 4.0 / rs.len() as f64 * 10.0
        })
        .collect()
}

/// CIDEr-D against fixed references with fixed document frequencies: SCST's reward. References
/// are PTB-tokenized and counted once; candidates are scored as they come.
pub struct CiderD {
    vocab: Vocab,
    df: DocFreq,
    refs: FxHashMap<String, Vec<Counts>>,
}

impl CiderD {
    /// `df`: frequencies from the training captions (`oscar eval cider-df`); `refs`: image → captions.
    pub fn new(df: &DocFreqFile, refs: &crate::captions::CaptionSet) -> Self {
        let mut vocab = Vocab::default();
        let df = DocFreq::from_file(df, &mut vocab);
        let refs = refs
            .iter()
            .map(|(id, caps)| {
                (
                    id.clone(),
                    caps.iter()
                        .map(|c| count(&vocab.words(&crate::ptb::tokenize_caption(c)), 4))
                        .collect(),
                )
            })
            .collect();
        CiderD { vocab, df, refs }
    }

    /// CIDEr-D (× 10 scale of pycocoevalcap: 1.0 ≈ "100") of each `(image, caption)`.
    pub fn score(&mut self, items: &[(&str, &str)]) -> crate::error::Result<Vec<f64>> {
        let mut cands = Vec::with_capacity(items.len());
        let mut refs = Vec::with_capacity(items.len());
        for (img, cap) in items {
            let r = self.refs.get(*img).ok_or_else(|| {
                crate::error::EvalError::Invalid(format!("image {img} has no reference captions"))
            })?;
            cands.push(count(
                &self.vocab.words(&crate::ptb::tokenize_caption(cap)),
                4,
            ));
            refs.push(r.clone());
        }
        Ok(cider_d_from_counts(&cands, &refs, &self.df))
    }
}
