//! `oscar score` (one image against texts) and `oscar retrieve` (a query against a gallery) with a
//! retrieval checkpoint: what users of the reference could not do without the full evaluation set.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use oscar::data::features::{parse_detections, FeatureStore};
use oscar::infer::ImageInput;
use oscar::tasks::retrieval::{saved_settings, tag_overlap, world_paths, RetrievalSet, Retriever};
use oscar::tokenizer::BertTokenizer;
use std::path::PathBuf;

#[derive(Args)]
pub struct ScoreArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// A retrieval checkpoint (`oscar train retrieval --out`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Region features (features.tsv, *.feature.tsv or a torch feature dict).
    #[arg(long)]
    features: PathBuf,
    /// The image's id in the feature file.
    #[arg(long)]
    image: String,
    /// Detector labels (predictions.tsv / *.label.tsv) for the image's tags…
    #[arg(long, conflicts_with = "tags")]
    labels: Option<PathBuf>,
    /// …or the tags themselves, space-separated.
    #[arg(long)]
    tags: Option<String>,
    /// A text to score (repeat for several).
    #[arg(long, required = true)]
    text: Vec<String>,
}

/// An image's tags: given as text, read from a detector label file, or none.
pub(crate) fn image_tags(
    tags: Option<&str>,
    labels: Option<&std::path::Path>,
    image: &str,
) -> Result<String> {
    Ok(match (tags, labels) {
        (Some(t), _) => t.to_string(),
        (None, Some(l)) => {
            let t = oscar::data::tsv::TsvFile::open(l)?;
            let row = *t
                .key_index()?
                .get(image)
                .ok_or_else(|| anyhow!("{}: no labels for image {image}", l.display()))?;
            let f = t.row(row)?;
            parse_detections(
                f.get(1).map(String::as_str).unwrap_or(""),
                &format!("{}: row {}", l.display(), row + 1),
            )
            .map_err(anyhow::Error::msg)?
            .tags(0.0, false)
        }
        (None, None) => String::new(),
    })
}

pub fn score(a: &ScoreArgs) -> Result<()> {
    let m = oscar::infer::Matching::load(&a.checkpoint, &a.device)?;
    let store = FeatureStore::open(&a.features, m.feature_dim())?;
    let tags = image_tags(a.tags.as_deref(), a.labels.as_deref(), &a.image)?;
    let image = ImageInput::from_store(
        &store,
        &a.image,
        tags.split_whitespace().map(str::to_string).collect(),
    )?;
    let pairs: Vec<(&ImageInput, &str)> = a.text.iter().map(|t| (&image, t.as_str())).collect();
    let p = m.score(&pairs)?;
    let out: Vec<_> = a
        .text
        .iter()
        .zip(&p)
        .map(|(t, s)| serde_json::json!({"text": t, "match_probability": s}))
        .collect();
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[derive(Args)]
pub struct RetrieveArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    #[arg(long)]
    checkpoint: PathBuf,
    /// A world-style dataset directory (the gallery: retrieval/{split}_captions.json, features, labels).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "test")]
    split: String,
    /// A text query: the best-matching images…
    #[arg(long, conflicts_with = "image")]
    query: Option<String>,
    /// …or an image id: the best-matching captions of the gallery.
    #[arg(long)]
    image: Option<String>,
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Score only the first stage's top candidates (tag–word overlap) with the model.
    #[arg(long)]
    first_stage_k: Option<usize>,
}

pub fn retrieve(a: &RetrieveArgs) -> Result<()> {
    let r = Retriever::load(&a.checkpoint, &a.device)?;
    let settings = saved_settings(&a.checkpoint)?;
    let tok = BertTokenizer::from_vocab(&a.checkpoint.join("vocab.txt"))?;
    let (c, f, l) = world_paths(&a.data, &a.split);
    let mut set = RetrievalSet::open(&c, &f, &l, r.config.img_feature_dim, None)?;
    let (pairs, label): (Vec<(usize, usize)>, PairLabel) = match (&a.query, &a.image) {
        (Some(q), None) => {
            set.captions.push((0, q.clone()));
            let qi = set.captions.len() - 1;
            let mut cand: Vec<usize> = (0..set.images.len()).collect();
            if let Some(k1) = a.first_stage_k {
                cand.sort_by(|x, y| {
                    tag_overlap(&set, *y, qi).total_cmp(&tag_overlap(&set, *x, qi))
                });
                cand.truncate(k1);
            }
            let names = set.images.clone();
            (
                cand.into_iter().map(|i| (i, qi)).collect(),
                Box::new(move |p: &(usize, usize)| names[p.0].clone()),
            )
        }
        (None, Some(img)) => {
            let ii = set
                .images
                .iter()
                .position(|i| i == img)
                .ok_or_else(|| anyhow!("image {img} is not in the {} split", a.split))?;
            let mut cand: Vec<usize> = (0..set.captions.len()).collect();
            if let Some(k1) = a.first_stage_k {
                cand.sort_by(|x, y| {
                    tag_overlap(&set, ii, *y).total_cmp(&tag_overlap(&set, ii, *x))
                });
                cand.truncate(k1);
            }
            let caps: Vec<String> = set.captions.iter().map(|(_, c)| c.clone()).collect();
            (
                cand.into_iter().map(|c| (ii, c)).collect(),
                Box::new(move |p: &(usize, usize)| caps[p.1].clone()),
            )
        }
        _ => bail!("give --query TEXT or --image ID"),
    };
    let scores = r.score_pairs(&tok, &set, &pairs, &settings, 256, |_| {})?;
    let mut ranked: Vec<(f32, &(usize, usize))> = scores.into_iter().zip(&pairs).collect();
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0));
    let out: Vec<_> = ranked
        .iter()
        .take(a.k)
        .map(|(s, p)| serde_json::json!({"match": label(p), "match_probability": s}))
        .collect();
    outln!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"scored": pairs.len(), "top": out}))?
    );
    Ok(())
}

/// Names a scored (image, caption) pair in the output: the image for a text query, the
/// caption for an image query.
type PairLabel = Box<dyn Fn(&(usize, usize)) -> String>;
