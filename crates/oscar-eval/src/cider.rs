//! CIDEr-D (Vedantam et al. 2015, with vrama91's clipping and Gaussian length penalty, σ = 6),
//! which is what pycocoevalcap 1.2 reports as "CIDEr" when the document frequencies come from the
//! evaluated references, and what SCST uses with document frequencies from the training captions.

use crate::ngrams::{count, order, NGram, Vocab};
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
        let mut df: FxHashMap<NGram, f64> = FxHashMap::default();
        for set in refs {
            let mut seen: rustc_hash::FxHashSet<NGram> = Default::default();
            for r in set {
                seen.extend(count(r, 4).into_keys());
            }
            for g in seen {
                *df.entry(g).or_insert(0.0) += 1.0;
            }
        }
        DocFreq { df, num_images: refs.len() as f64 }
    }

    pub fn to_file(&self, vocab_words: &[String], tokenization: &str) -> DocFreqFile {
        let document_frequency = self
            .df
            .iter()
            .map(|(g, v)| (g[..order(g)].iter().map(|&w| vocab_words[w as usize].as_str()).collect::<Vec<_>>().join(" "), *v))
            .collect();
        DocFreqFile { ref_len: self.num_images, document_frequency, tokenization: tokenization.into() }
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
        DocFreq { df, num_images: f.ref_len }
    }
}

/// tf-idf vectors per order, their norms, and the reference's "length" (the bigram count,
/// which is what pycocoevalcap's `counts2vec` sums).
struct TfIdf {
    vec: [FxHashMap<NGram, f64>; 4],
    norm: [f64; 4],
    length: f64,
}

fn tfidf(words: &[u32], df: &DocFreq, log_ref_len: f64) -> TfIdf {
    let mut vec: [FxHashMap<NGram, f64>; 4] = Default::default();
    let mut norm = [0.0; 4];
    let mut length = 0.0;
    for (g, tf) in count(words, 4) {
        let d = df.df.get(&g).copied().unwrap_or(0.0).max(1.0).ln();
        let n = order(&g) - 1;
        let v = tf as f64 * (log_ref_len - d);
        norm[n] += v * v;
        vec[n].insert(g, v);
        if n == 1 {
            length += tf as f64;
        }
    }
    TfIdf { vec, norm: norm.map(f64::sqrt), length }
}

fn sim(h: &TfIdf, r: &TfIdf, sigma: f64) -> [f64; 4] {
    let delta = h.length - r.length;
    let mut val = [0.0; 4];
    for n in 0..4 {
        for (g, &hv) in &h.vec[n] {
            let rv = r.vec[n].get(g).copied().unwrap_or(0.0);
            val[n] += hv.min(rv) * rv;
        }
        if h.norm[n] != 0.0 && r.norm[n] != 0.0 {
            val[n] /= h.norm[n] * r.norm[n];
        }
        val[n] *= std::f64::consts::E.powf(-(delta * delta) / (2.0 * sigma * sigma));
    }
    val
}

/// Per-image CIDEr-D of each candidate against its references.
pub fn cider_d(cands: &[Vec<u32>], refs: &[Vec<Vec<u32>>], df: &DocFreq) -> Vec<f64> {
    let log_ref_len = df.num_images.ln();
    cands
        .iter()
        .zip(refs)
        .map(|(c, rs)| {
            let h = tfidf(c, df, log_ref_len);
            let mut score = [0.0; 4];
            for r in rs {
                let s = sim(&h, &tfidf(r, df, log_ref_len), SIGMA);
                for n in 0..4 {
                    score[n] += s[n];
                }
            }
            score.iter().sum::<f64>() / 4.0 / rs.len() as f64 * 10.0
        })
        .collect()
}
