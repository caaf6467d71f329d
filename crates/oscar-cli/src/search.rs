//! `oscar score` (one image against texts) and `oscar retrieve` (a query against a gallery) with a
//! retrieval checkpoint: what users of the reference could not do without the full evaluation set.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use oscar::data::features::{parse_detections, FeatureStore};
use oscar::infer::{ImageInput, Ranked};
use oscar::tasks::first_stage::FirstStageChoice;
use oscar::tasks::retrieval::{world_paths, RetrievalSet};
use std::path::PathBuf;

#[derive(Args)]
pub struct ScoreArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// Linear layers in dynamic int8 (`int8`: weights per channel, activations per row; about
    /// twice the f32 speed on AVX2 CPUs) or `f32` (the reference's numerics).
    #[arg(long, value_name = "int8|f32", default_value = "f32")]
    quantize: oscar::nn::int8::Precision,
    /// A retrieval checkpoint (`oscar train retrieval --out`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Region features (features.tsv, *.feature.tsv or a torch feature dict).
    #[arg(long, requires = "image")]
    features: Option<PathBuf>,
    /// The image's id in the feature file…
    #[arg(long, required_unless_present = "image_file")]
    image: Option<String>,
    /// …or a photo run through the detector.
    #[command(flatten)]
    photos: crate::detect::PhotoArgs,
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
    let m = oscar::infer::Matching::load_at(&a.checkpoint, &a.device, a.quantize)?;
    let image = match (&a.image, &a.features) {
        (Some(id), Some(features)) => {
            let store = FeatureStore::open(features, m.feature_dim())?;
            let tags = image_tags(a.tags.as_deref(), a.labels.as_deref(), id)?;
            ImageInput::from_store(
                &store,
                id,
                tags.split_whitespace().map(str::to_string).collect(),
            )?
        }
        (Some(_), None) => bail!("--image ID needs --features FILE"),
        (None, _) => one_photo(&a.photos, m.feature_dim())?,
    };
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
    /// Linear layers in dynamic int8 (`int8`: weights per channel, activations per row; about
    /// twice the f32 speed on AVX2 CPUs) or `f32` (the reference's numerics).
    #[arg(long, value_name = "int8|f32", default_value = "f32")]
    quantize: oscar::nn::int8::Precision,
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
    /// …or an image id: the best-matching captions of the gallery…
    #[arg(long)]
    image: Option<String>,
    /// …or a photo run through the detector (--image-file, --detector).
    #[command(flatten)]
    photos: crate::detect::PhotoArgs,
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Score only the first stage's top candidates with the model.
    #[arg(long)]
    first_stage_k: Option<usize>,
    /// The first stage: `tags` (tag–word overlap) or `learned` (the embeddings `oscar train
    /// first-stage` fitted next to the checkpoint).
    #[arg(long, value_name = "tags|learned", default_value = "tags")]
    first_stage: FirstStageChoice,
}

pub fn retrieve(a: &RetrieveArgs) -> Result<()> {
    let m = oscar::infer::Matching::load_at(&a.checkpoint, &a.device, a.quantize)?;
    if a.first_stage_k.is_none() && a.first_stage == FirstStageChoice::Learned {
        bail!("--first-stage learned needs --first-stage-k K (how many candidates it keeps)");
    }
    let shortlist = a.first_stage_k.map(|k| oscar::infer::Shortlist {
        k,
        by: a.first_stage,
    });
    let (c, f, l) = world_paths(&a.data, &a.split);
    let set = RetrievalSet::open(&c, &f, &l, m.feature_dim(), None)?;
    let images: Vec<ImageInput> = set
        .images
        .iter()
        .map(|i| {
            let tags = set.tags[i].split_whitespace().map(str::to_string).collect();
            ImageInput::new(set.features[i].data.clone(), tags)
        })
        .collect();
    if !a.photos.is_empty() && (a.query.is_some() || a.image.is_some()) {
        bail!("give one of --query, --image and --image-file");
    }
    let photo = if a.photos.is_empty() {
        None
    } else {
        Some(one_photo(&a.photos, m.feature_dim())?)
    };
    let (ranked, names): (Vec<Ranked>, Vec<&str>) = match (&a.query, &a.image) {
        (None, None) if photo.is_some() => {
            let texts: Vec<&str> = set.captions.iter().map(|(_, c)| c.as_str()).collect();
            let image = photo.as_ref().ok_or_else(|| anyhow!("no photo"))?;
            (m.rank_texts(image, &texts, shortlist)?, texts)
        }
        (Some(q), None) => (
            m.rank_images(q, &images, shortlist)?,
            set.images.iter().map(String::as_str).collect(),
        ),
        (None, Some(img)) => {
            let ii = set
                .images
                .iter()
                .position(|i| i == img)
                .ok_or_else(|| anyhow!("image {img} is not in the {} split", a.split))?;
            let texts: Vec<&str> = set.captions.iter().map(|(_, c)| c.as_str()).collect();
            (m.rank_texts(&images[ii], &texts, shortlist)?, texts)
        }
        _ => bail!("give --query TEXT, --image ID or --image-file PHOTO"),
    };
    let out: Vec<_> = ranked
        .iter()
        .take(a.k)
        .map(|r| serde_json::json!({"match": names[r.index], "match_probability": r.score}))
        .collect();
    outln!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"scored": ranked.len(), "top": out}))?
    );
    Ok(())
}

/// The single photo of `--image-file` (an error for none or several).
fn one_photo(photos: &crate::detect::PhotoArgs, model_dim: usize) -> Result<ImageInput> {
    if photos.image_file.len() != 1 {
        bail!("give one image: --image ID with --features, or one --image-file with --detector");
    }
    Ok(photos.detect(model_dim)?.remove(0).input)
}
