//! `oscar train caption` (cross-entropy or `--scst`) and `oscar caption` (decode, optionally
//! with constraints, and score against references): issue 7.

use crate::qa::CommonTrain;
use crate::{steps_bar, StepLog};
use anyhow::{bail, Context, Result};
use clap::Args;
use oscar::infer::{CaptionOutput, ImageInput};
use oscar::tasks::caption::cbs::ConstraintConfig;
use oscar::tasks::caption::decode::DecodeSettings;
use oscar::tasks::caption::scst::train_scst;
use oscar::tasks::caption::{
    evaluate, nearest_neighbour_captions, results_json, results_tsv, score_captions, CaptionConfig,
    CaptionSet, Captioner, Mode,
};
use oscar::tasks::finetune::settings_from_toml;
use oscar::tokenizer::BertTokenizer;
use oscar_eval::captions::{build_doc_freq, CaptionOptions};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct CaptionTrainArgs {
    #[command(flatten)]
    pub common: CommonTrain,
    /// CIDEr optimisation: start from a captioning checkpoint (`--init`) and train with SCST.
    #[arg(long)]
    pub scst: bool,
    /// Evaluate on this split of DATA/captions/ after training.
    #[arg(long, default_value = "test")]
    pub eval_split: String,
    /// Evaluate with at most this many images of the split.
    #[arg(long)]
    pub eval_images: Option<usize>,
    /// Beam size for the evaluation (1: greedy).
    #[arg(long, default_value_t = 5)]
    pub beams: usize,
    /// Tie the decoder to the word embeddings (VinVL's `--tie_weights`); default: as the
    /// initial checkpoint's config says (off from scratch, as the reference script).
    #[arg(long)]
    pub tie_weights: bool,
    /// SCST baseline: `greedy` (the reference) or `mean` (the image's other samples, Luo 2020).
    #[arg(long)]
    pub scst_baseline: Option<oscar::tasks::caption::scst::ScstBaseline>,
    /// SCST: sample from the k likeliest tokens only (default 0: the whole distribution).
    #[arg(long)]
    pub scst_top_k: Option<usize>,
}

fn split_set(
    data: &Path,
    split: &str,
    features: &Path,
    dim: usize,
    limit: Option<usize>,
) -> Result<CaptionSet> {
    let mut s = CaptionSet::open(
        &data.join(format!("captions/{split}_caption.json")),
        features,
        Some(&data.join("labels/predictions.tsv")),
        dim,
    )?;
    if let Some(n) = limit {
        s.images.truncate(n);
        let keep: std::collections::BTreeSet<String> = s.images.iter().cloned().collect();
        s.captions.retain(|k, _| keep.contains(k));
    }
    Ok(s)
}

/// The caption figures papers quote: BLEU-4, METEOR, ROUGE-L, CIDEr, CIDEr-D.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
pub struct CaptionFigures {
    pub bleu4: f64,
    pub meteor: Option<f64>,
    pub rouge_l: f64,
    pub cider: f64,
    pub cider_d: Option<f64>,
}

impl CaptionFigures {
    pub fn of(s: &oscar_eval::captions::CaptionScores) -> Self {
        CaptionFigures {
            bleu4: s.bleu[3],
            meteor: s.meteor,
            rouge_l: s.rouge_l,
            cider: s.cider,
            cider_d: s.cider_d,
        }
    }
}

/// Scores of one evaluated split, for eval.json.
#[derive(serde::Serialize, Clone)]
pub struct SplitScores {
    pub split: String,
    pub images: usize,
    #[serde(flatten)]
    pub figures: CaptionFigures,
}

impl SplitScores {
    fn from(split: &str, s: &oscar_eval::captions::CaptionScores) -> Self {
        SplitScores {
            split: split.into(),
            images: s.images,
            figures: CaptionFigures::of(s),
        }
    }
}

#[derive(serde::Serialize)]
pub struct CaptionRun {
    pub model: SplitScores,
    pub nearest_neighbour: SplitScores,
    /// (step, metric): masked-token accuracy (XE, %) or mean sample CIDEr-D (SCST).
    pub curve: Vec<(f64, f64)>,
    pub examples: Vec<(String, String)>,
    pub seconds: f64,
}

/// The metric options for a world-style dataset: CIDEr-D's document frequencies from its
/// training captions.
fn metric_options(data: &Path) -> Result<CaptionOptions> {
    metric_options_with(Some(&data.join("captions/train_caption.json")))
}

pub fn run_train(a: &CaptionTrainArgs) -> Result<CaptionRun> {
    let c = &a.common;
    let t0 = std::time::Instant::now();
    let mut cfg = match &c.config {
        Some(p) => settings_from_toml::<CaptionConfig>(p)?,
        None => CaptionConfig::default(),
    };
    c.apply(&mut cfg.optim, &mut cfg.use_tags);
    if a.tie_weights {
        cfg.tie_weights = Some(true);
    }
    let dim = c.dim()?;
    let vocab = c.data.join("vocab.txt");
    let tok = BertTokenizer::from_vocab(&vocab)?;
    let train_set = split_set(&c.data, "train", &c.features(), dim, None)?;
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let mut curve = Vec::new();
    let opts = metric_options(&c.data)?;
    let cap = if a.scst {
        let Some(init) = c.run.resume.as_ref().or(c.init.as_ref()) else {
            bail!("--scst starts from a captioning checkpoint: pass --init")
        };
        let mut cap = Captioner::load(init, &c.run.device)?;
        if let Some(b) = a.scst_baseline {
            cap.settings.scst_baseline = b;
        }
        if let Some(k) = a.scst_top_k {
            cap.settings.scst_top_k = k;
        }
        let df = opts.cider_df.as_ref().expect("built above");
        let bar = steps_bar(cfg.optim.steps, "scst");
        train_scst(
            &mut cap,
            &train_set,
            &tok,
            df,
            &cfg.optim,
            &c.files(),
            |k, s| {
                bar.set_position(k);
                bar.set_message(format!(
                    "loss {:.3} · CIDEr-D sample {:.3} greedy {:.3}",
                    s.loss, s.sample_reward, s.greedy_reward
                ));
                curve.push((k as f64, s.greedy_reward));
            },
        )?;
        bar.finish_and_clear();
        cap
    } else {
        let mut steps = StepLog::new(cfg.optim.steps, "train caption", "accuracy");
        let cap = oscar::tasks::caption::train(
            &train_set,
            &tok,
            c.init.as_deref(),
            &c.fresh(tok.vocab_size(), dim)?,
            &cfg,
            &c.files(),
            |k, loss, acc| steps.record(k, loss, acc),
        )?;
        curve = steps.finish();
        cap
    };
    cap.save(&c.out, Some(&vocab))?;
    let test = split_set(&c.data, &a.eval_split, &c.features(), dim, a.eval_images)?;
    let (mode, st) = decode_choice(&cap.settings.decode, a.beams);
    let bar = steps_bar(test.images.len() as u64, "caption");
    let e = evaluate(&cap, &tok, &test, mode, &st, &opts, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let scores = e
        .scores
        .as_ref()
        .context("the evaluation split has no references")?;
    let nn = nearest_neighbour_captions(&train_set, &test);
    let nn_scores = score_captions(&test, &nn, &opts)?.context("no references")?;
    write_outputs(
        &c.out,
        &a.eval_split,
        &test.images,
        &e.captions,
        &e.generated,
    )?;
    let run = CaptionRun {
        model: SplitScores::from(&a.eval_split, scores),
        nearest_neighbour: SplitScores::from(&a.eval_split, &nn_scores),
        curve,
        examples: test
            .images
            .iter()
            .zip(&e.captions)
            .take(8)
            .map(|(i, c)| (i.clone(), c.clone()))
            .collect(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    oscar::checkpoint::write_atomic(
        &c.out.join("eval.json"),
        serde_json::to_string_pretty(&run)?.as_bytes(),
    )?;
    Ok(run)
}

fn decode_choice(base: &DecodeSettings, beams: usize) -> (Mode, DecodeSettings) {
    let st = DecodeSettings {
        num_beams: beams.max(1),
        ..base.clone()
    };
    (if beams > 1 { Mode::Beam } else { Mode::Greedy }, st)
}

fn write_outputs(
    out: &Path,
    name: &str,
    images: &[String],
    captions: &[String],
    gens: &[oscar::tasks::caption::decode::Generated],
) -> Result<()> {
    oscar::checkpoint::write_atomic(
        &out.join(format!("{name}_pred.json")),
        serde_json::to_string(&results_json(images, captions))?.as_bytes(),
    )?;
    oscar::checkpoint::write_atomic(
        &out.join(format!("{name}_pred.tsv")),
        results_tsv(
            images,
            captions,
            &gens.iter().map(|g| g.score).collect::<Vec<_>>(),
        )
        .as_bytes(),
    )?;
    Ok(())
}

pub fn print_run(r: &CaptionRun, out: &Path) {
    let row = |n: &str, s: &SplitScores| {
        let s = &s.figures;
        outln!(
            "{n:<20} BLEU-4 {:.3}  METEOR {}  ROUGE-L {:.3}  CIDEr {:.3}  CIDEr-D {}",
            s.bleu4,
            s.meteor.map(|m| format!("{m:.3}")).unwrap_or("n/a".into()),
            s.rouge_l,
            s.cider,
            s.cider_d.map(|m| format!("{m:.3}")).unwrap_or("n/a".into())
        )
    };
    outln!(
        "captioning on {} images of {}:",
        r.model.images,
        r.model.split
    );
    row("model", &r.model);
    row("nearest neighbour", &r.nearest_neighbour);
    for (i, c) in &r.examples {
        outln!("  {i}: {c}");
    }
    outln!(
        "model, eval.json and {}_pred.json/.tsv in {} ({:.0} s)",
        r.model.split,
        out.display(),
        r.seconds
    );
}

#[derive(Args)]
pub struct CaptionArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// Linear layers in dynamic int8 (`int8`: weights per channel, activations per row; about
    /// twice the f32 speed on AVX2 CPUs) or `f32` (the reference's numerics).
    #[arg(long, value_name = "int8|f32", default_value = "f32")]
    quantize: oscar::nn::int8::Precision,
    /// A captioning checkpoint (`oscar train caption --out`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Region features (features.tsv, *.feature.tsv or a torch feature dict).
    #[arg(long, required_unless_present = "image_file")]
    features: Option<PathBuf>,
    #[command(flatten)]
    photos: crate::detect::PhotoArgs,
    /// Detector labels (predictions.tsv / *.label.tsv): tags, and constraints with --cbs.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Images to caption (repeat); or --refs to caption every referenced image.
    #[arg(long)]
    image: Vec<String>,
    /// Reference captions: caption their images and report BLEU/METEOR/ROUGE-L/CIDEr.
    #[arg(long)]
    refs: Option<PathBuf>,
    /// Training captions, for CIDEr-D's document frequencies (with --refs).
    #[arg(long)]
    train_captions: Option<PathBuf>,
    /// greedy, beam or sample.
    #[arg(long, default_value = "beam")]
    mode: Mode,
    #[arg(long, default_value_t = 5)]
    beams: usize,
    #[arg(long, default_value_t = 20)]
    max_length: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Constrained beam search with up to 3 constraints from the detected tags (needs --labels).
    #[arg(long)]
    cbs: bool,
    /// Classes never used as constraints (repeat).
    #[arg(long)]
    cbs_blacklist: Vec<String>,
    /// Re-encode the whole prefix at every step (the reference's way) instead of the cache.
    #[arg(long)]
    no_cache: bool,
    /// Write captions here: `.json` (COCO results) or `.tsv` (the reference's format).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Caption only part K of N of the images (round-robin; 0-based K, as a Slurm array's task
    /// id) into the part file `--out` (saved as it goes: a rerun resumes); join the parts with
    /// `oscar merge` (which scores them with `--refs`).
    #[arg(long, requires = "out")]
    shard: Option<oscar::data::shard::Shard>,
}

/// One image's caption in a shard's part file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaptionRow {
    pub image_id: String,
    pub caption: String,
    /// The sequence's log-probability score.
    pub score: f64,
}

/// Writes merged captions as `oscar caption --out` does: `.tsv` (the reference's) or COCO
/// results JSON.
pub fn write_merged(out: &Path, rows: &[CaptionRow]) -> Result<()> {
    let images: Vec<String> = rows.iter().map(|r| r.image_id.clone()).collect();
    let captions: Vec<String> = rows.iter().map(|r| r.caption.clone()).collect();
    let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let body = match out.extension().is_some_and(|e| e == "tsv") {
        true => results_tsv(&images, &captions, &scores),
        false => serde_json::to_string_pretty(&results_json(&images, &captions))?,
    };
    Ok(oscar::checkpoint::write_atomic(out, body.as_bytes())?)
}

/// Merged captions scored against `refs` as `oscar caption --refs` scores them.
pub fn score_rows(rows: &[CaptionRow], refs: &Path, train: Option<&Path>) -> Result<SplitScores> {
    let gts = oscar_eval::captions::read_captions(refs, false)?;
    let preds: oscar_eval::captions::CaptionSet = rows
        .iter()
        .map(|r| (r.image_id.clone(), vec![r.caption.clone()]))
        .collect();
    let s = oscar_eval::captions::evaluate_captions(&gts, &preds, &metric_options_with(train)?)?;
    Ok(SplitScores::from("refs", &s))
}

/// The metric options of `oscar caption --refs`: CIDEr-D's document frequencies from the
/// training captions when given, METEOR where its jar is found.
fn metric_options_with(train: Option<&Path>) -> Result<CaptionOptions> {
    Ok(CaptionOptions {
        cider_df: train
            .map(|p| {
                oscar_eval::captions::read_captions(p, false).map(|t| build_doc_freq(&t, false))
            })
            .transpose()?,
        meteor_jar: oscar_eval::meteor::find_jar(None).ok(),
        ..CaptionOptions::default()
    })
}

pub fn caption(a: &CaptionArgs) -> Result<()> {
    let api = oscar::infer::Captioning::load_at(&a.checkpoint, &a.device, a.quantize)?;
    let dim = api.feature_dim();
    let (set, images) = caption_inputs(a, dim)?;
    let opts = oscar::infer::CaptionOptions {
        mode: a.mode,
        num_beams: a.beams,
        max_length: a.max_length,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
        num_return_sequences: 1,
        use_cache: !a.no_cache,
    };
    if a.cbs && a.labels.is_none() && a.photos.is_empty() {
        bail!("--cbs takes its constraints from the detections: pass --labels (or --image-file)");
    }
    if let (Some(shard), Some(out)) = (a.shard, &a.out) {
        return caption_shard(a, &api, &set, &images, &opts, shard, out);
    }
    let bar = steps_bar(set.images.len() as u64, "caption");
    let t = std::time::Instant::now();
    let all: Vec<usize> = (0..images.len()).collect();
    let (outs, constraints) = decode(a, &api, &set, &images, &all, &opts, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    let captions: Vec<String> = outs.iter().map(|o| o.text.clone()).collect();
    write_captions(a.out.as_deref(), &set.images, &outs, &constraints)?;
    errln!(
        "{} captions in {secs:.2} s ({:.1} images/s)",
        captions.len(),
        captions.len() as f64 / secs.max(1e-9)
    );
    if a.refs.is_some() {
        let opts = metric_options_with(a.train_captions.as_deref())?;
        if let Some(s) = score_captions(&set, &captions, &opts)? {
            let ss = SplitScores::from("refs", &s);
            outln!("{}", serde_json::to_string_pretty(&ss)?);
        }
    }
    Ok(())
}

/// Captions of `images[idx]` (with their constraints, printed after them, under `--cbs`).
fn decode(
    a: &CaptionArgs,
    api: &oscar::infer::Captioning,
    set: &CaptionSet,
    images: &[ImageInput],
    idx: &[usize],
    opts: &oscar::infer::CaptionOptions,
    mut progress: impl FnMut(usize),
) -> Result<(Vec<CaptionOutput>, Vec<String>)> {
    let some: Vec<ImageInput> = idx.iter().map(|&i| images[i].clone()).collect();
    if !a.cbs {
        let outs = api.caption_with_progress(&some, opts, &mut progress)?;
        let none = vec![String::new(); outs.len()];
        return Ok((outs, none));
    }
    let cc = ConstraintConfig {
        blacklist: a.cbs_blacklist.clone(),
        ..ConstraintConfig::default()
    };
    let dets: Vec<_> = idx
        .iter()
        .map(|&i| {
            set.detections
                .get(&set.images[i])
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    Ok(api
        .caption_constrained(&some, &dets, opts, &cc, progress)?
        .into_iter()
        .map(|c| {
            let cons = format!("  (constraints {})", serde_json::json!(c.constraints));
            (c.caption, cons)
        })
        .unzip())
}

/// `oscar caption --shard K/N`: this shard's images, 16 at a time, each block saved to the part
/// file before the next (a rerun resumes after the last saved block).
fn caption_shard(
    a: &CaptionArgs,
    api: &oscar::infer::Captioning,
    set: &CaptionSet,
    images: &[ImageInput],
    opts: &oscar::infer::CaptionOptions,
    shard: oscar::data::shard::Shard,
    out: &Path,
) -> Result<()> {
    if out.extension().is_some_and(|e| e == "tsv") {
        bail!(
            "{}: a shard's part file is JSON; `oscar merge --out X.tsv` writes the TSV",
            out.display()
        );
    }
    // Every part of one job must decode alike: the options are the part's shared context.
    let context = serde_json::json!({
        "checkpoint": a.checkpoint, "mode": format!("{:?}", a.mode), "beams": a.beams,
        "max_length": a.max_length, "temperature": a.temperature, "top_k": a.top_k,
        "top_p": a.top_p, "seed": a.seed, "cbs": a.cbs, "cbs_blacklist": a.cbs_blacklist,
    });
    let mut part = oscar::data::shard::Part::<CaptionRow>::resume(
        out,
        "captions",
        shard,
        &set.images,
        context,
    )?;
    let bar = steps_bar(
        (part.todo(shard).len() + part.results.len()) as u64,
        "caption",
    );
    bar.set_position(part.results.len() as u64);
    part.fill(out, shard, 16, |block| -> Result<Vec<CaptionRow>> {
        let (outs, _) = decode(a, api, set, images, block, opts, |n| bar.inc(n as u64))?;
        Ok(block
            .iter()
            .zip(outs)
            .map(|(&i, o)| CaptionRow {
                image_id: set.images[i].clone(),
                caption: o.text,
                score: o.score,
            })
            .collect())
    })?;
    bar.finish_and_clear();
    outln!(
        "shard {}: {} of {} images captioned into {} (join the parts with `oscar merge`)",
        part.shard,
        part.results.len(),
        part.total,
        out.display()
    );
    Ok(())
}

/// The images to caption and their detections: ids in a feature file (`--image`, or every
/// image of `--refs`), or photos run through the detector (`--image-file`).
fn caption_inputs(a: &CaptionArgs, dim: usize) -> Result<(CaptionSet, Vec<ImageInput>)> {
    Ok(if a.photos.is_empty() {
        let Some(features) = &a.features else {
            bail!("give --features FILE (or --image-file with --detector)")
        };
        let set = match (&a.refs, a.image.is_empty()) {
            (Some(r), _) => CaptionSet::open(r, features, a.labels.as_deref(), dim)?,
            (None, false) => CaptionSet::for_images(
                a.image.clone(),
                Default::default(),
                features,
                a.labels.as_deref(),
                dim,
            )?,
            (None, true) => bail!("give --image ID (repeatable) or --refs FILE"),
        };
        let images: Vec<ImageInput> = set
            .images
            .iter()
            .map(|i| {
                let tags = set.tags(i).split_whitespace().map(str::to_string).collect();
                ImageInput::new(set.regions[i].data.clone(), tags)
            })
            .collect();
        (set, images)
    } else {
        if a.refs.is_some() || !a.image.is_empty() || a.labels.is_some() {
            bail!("--image-file takes its regions and tags from the detector: drop --refs, --image and --labels");
        }
        let photos = a.photos.detect(dim)?;
        let mut set = CaptionSet::default();
        let mut images = Vec::new();
        for p in photos {
            set.images.push(p.id.clone());
            set.detections.insert(p.id, p.objects);
            images.push(p.input);
        }
        (set, images)
    })
}

/// `oscar caption`'s output: the reference's TSV or COCO results JSON at `out`, else one line
/// per image (with its constraints under CBS) on stdout.
fn write_captions(
    out: Option<&Path>,
    images: &[String],
    outs: &[CaptionOutput],
    constraints: &[String],
) -> Result<()> {
    let captions: Vec<String> = outs.iter().map(|o| o.text.clone()).collect();
    let scores: Vec<f64> = outs.iter().map(|o| o.score).collect();
    match out {
        Some(p) if p.extension().is_some_and(|e| e == "tsv") => {
            oscar::checkpoint::write_atomic(p, results_tsv(images, &captions, &scores).as_bytes())?
        }
        Some(p) => oscar::checkpoint::write_atomic(
            p,
            serde_json::to_string_pretty(&results_json(images, &captions))?.as_bytes(),
        )?,
        None => {
            for ((img, o), cons) in images.iter().zip(outs).zip(constraints) {
                outln!("{img}\t{}\t(conf {:.3}){cons}", o.text, o.score.exp());
            }
        }
    }
    Ok(())
}
