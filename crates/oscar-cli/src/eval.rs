//! `oscar eval`: the field's metrics (oscar-eval) on files, as a table and as JSON.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use oscar::checkpoint::write_atomic;
use oscar_eval::captions::{build_doc_freq, evaluate_captions, read_captions, CaptionOptions};
use oscar_eval::cider::DocFreqFile;
use oscar_eval::meteor::find_jar;
use oscar_eval::retrieval::recall_at_k;
use oscar_eval::vqa::{
    evaluate_vqa_rules, read_annotations, read_questions, read_results, VqaRules,
};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum EvalCmd {
    /// BLEU-1..4, METEOR, ROUGE-L, CIDEr (and CIDEr-D with --cider-df) as pycocoevalcap computes them.
    Caption(CaptionArgs),
    /// The official VQA accuracy, overall and by question and answer type.
    Vqa(VqaArgs),
    /// Build the CIDEr-D document-frequency file SCST needs from any caption file.
    CiderDf(DfArgs),
    /// Recall@1/5/10 both ways: from a score matrix (`--scores`), or by scoring every test image
    /// against every test caption with a retrieval checkpoint (`--checkpoint --data`), resumable.
    Retrieval(RetrievalArgs),
}

#[derive(Args)]
pub struct CaptionArgs {
    /// References: COCO annotations (`{"annotations": [...]}`) or a list of {image_id, caption}.
    #[arg(long)]
    refs: PathBuf,
    /// Predictions: COCO results list, or Oscar's prediction TSV (`key \t [{"caption", "conf"}]`).
    #[arg(long)]
    preds: PathBuf,
    /// Skip PTB tokenization (captions are already tokenized and lower-cased).
    #[arg(long)]
    pretokenized: bool,
    /// Compute METEOR with this METEOR 1.5 jar (default: $OSCAR_METEOR_JAR or the pycocoevalcap package).
    #[arg(long)]
    meteor_jar: Option<PathBuf>,
    /// Skip METEOR even when the jar can be found.
    #[arg(long)]
    no_meteor: bool,
    /// Document frequencies from `oscar eval cider-df`: also report CIDEr-D against them.
    #[arg(long)]
    cider_df: Option<PathBuf>,
    /// Score only the predicted images (otherwise every referenced image needs a prediction).
    #[arg(long)]
    subset: bool,
    /// PTB tokenization: `native` (built in, equal to the jar on 100k test captions) or `jar`
    /// (run Stanford CoreNLP 3.4.1's PTBTokenizer itself, as pycocoevalcap does; needs Java).
    #[arg(long, value_enum, default_value = "native")]
    tokenizer: CaptionTokenizer,
    /// The stanford-corenlp-3.4.1.jar for `--tokenizer jar` (default: $OSCAR_PTB_JAR, next to
    /// $OSCAR_METEOR_JAR's pycocoevalcap folder, or the pycocoevalcap package).
    #[arg(long)]
    ptb_jar: Option<PathBuf>,
    /// Write the scores (and per-image scores) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How `eval caption` tokenizes captions.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CaptionTokenizer {
    Native,
    Jar,
}

#[derive(Args)]
pub struct VqaArgs {
    /// Official annotation file (`{"annotations": [{question_id, question_type, answer_type, answers}]}`).
    #[arg(long)]
    annotations: PathBuf,
    /// Results (`[{"question_id", "answer"}]`).
    #[arg(long)]
    results: PathBuf,
    /// The official questions file, checked against the annotations (optional).
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Score only the answered questions.
    #[arg(long)]
    subset: bool,
    /// Which official `vqaEval.py`: `official` (GT-Vision-Lab/VQA master) or `pre-2021`
    /// (before its commit a013f00, "Fixed processing answers bug").
    #[arg(long, default_value = "official")]
    rules: VqaRules,
    /// Write the scores (overall, per type, per question; unrounded) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct DfArgs {
    /// Training captions (any format `eval caption --refs` takes).
    #[arg(long)]
    captions: PathBuf,
    /// Output JSON (`{"ref_len", "document_frequency": {"a dog": 12, …}}`).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    pretokenized: bool,
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// Linear layers in dynamic int8 (`int8`: weights per channel, activations per row; about
    /// twice the f32 speed on AVX2 CPUs) or `f32` (the reference's numerics).
    #[arg(long, value_name = "int8|f32", default_value = "f32")]
    quantize: oscar::nn::int8::Precision,
    /// A score matrix: {"scores": [[image × caption]], "caption_image": [image of each caption]}.
    #[arg(long, conflicts_with = "checkpoint")]
    scores: Option<PathBuf>,
    /// A retrieval checkpoint (`oscar train retrieval --out`).
    #[arg(long, requires = "data")]
    checkpoint: Option<PathBuf>,
    /// A world-style dataset directory (retrieval/{split}_captions.json, features/, labels/).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    split: String,
    /// Only the first N images of the split (all their captions).
    #[arg(long)]
    images: Option<usize>,
    /// Only these images (a key file such as test_img_keys_1k.tsv, one id per line).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Also run the two-stage search with this many first-stage candidates per image and per
    /// caption.
    #[arg(long)]
    two_stage_k: Option<usize>,
    /// The two-stage search's first stage: `tags` (tag–word overlap) or `learned` (the
    /// embeddings `oscar train first-stage` fitted next to the checkpoint).
    #[arg(long, value_name = "tags|learned", default_value = "tags")]
    first_stage: oscar::tasks::first_stage::FirstStageChoice,
    /// Run only the two-stage search, not the full protocol (what a large gallery needs).
    #[arg(long)]
    two_stage_only: bool,
    /// Score only part K of N of the images (round-robin; 0-based K, as a Slurm array's task id)
    /// against every caption, into the part file `--json` (resumable); join the parts with
    /// `oscar merge`.
    #[arg(long, requires = "json", conflicts_with_all = ["two_stage_k", "two_stage_only"])]
    shard: Option<oscar::data::shard::Shard>,
    /// Where partial scores are kept, so an interrupted evaluation continues (default: in the checkpoint).
    #[arg(long)]
    partial: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn write_json(path: Option<&Path>, v: &impl serde::Serialize) -> Result<()> {
    if let Some(p) = path {
        write_atomic(p, serde_json::to_string_pretty(v)?.as_bytes())?;
        outln!("wrote {}", p.display());
    }
    Ok(())
}

pub fn run(cmd: &EvalCmd) -> Result<()> {
    match cmd {
        EvalCmd::Caption(a) => caption(a),
        EvalCmd::Vqa(a) => {
            let anns = read_annotations(&a.annotations)?;
            if let Some(q) = &a.questions {
                read_questions(q, &anns)?;
            }
            let res = read_results(&a.results)?;
            let s = evaluate_vqa_rules(&anns, &res, a.subset, a.rules)?;
            let rules = match a.rules {
                VqaRules::Official => "GT-Vision-Lab/VQA master rules",
                VqaRules::Pre2021 => "rules before GT-Vision-Lab/VQA a013f00",
            };
            outln!(
                "VQA accuracy  {:.2}  ({} questions; {rules})",
                s.overall,
                s.questions
            );
            for (k, v) in &s.per_answer_type {
                outln!("  answer type {k:<12} {v:.2}");
            }
            for (k, v) in &s.per_question_type {
                outln!("  question type {k:<30} {v:.2}");
            }
            write_json(a.json.as_deref(), &s)
        }
        EvalCmd::CiderDf(a) => {
            let caps = read_captions(&a.captions, false)?;
            let df = build_doc_freq(&caps, a.pretokenized);
            write_atomic(&a.out, serde_json::to_string(&df)?.as_bytes())?;
            outln!(
                "wrote {} ({} images, {} n-grams)",
                a.out.display(),
                df.ref_len,
                df.document_frequency.len()
            );
            Ok(())
        }
        EvalCmd::Retrieval(a) if a.checkpoint.is_some() => retrieval_protocol(a),
        EvalCmd::Retrieval(a) => {
            let scores_path = a
                .scores
                .as_ref()
                .ok_or_else(|| anyhow!("give --scores FILE, or --checkpoint DIR --data DIR"))?;
            let text = std::fs::read_to_string(scores_path)
                .with_context(|| format!("reading {}", scores_path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow!("{}: not valid JSON: {e}", scores_path.display()))?;
            let scores: Vec<Vec<f32>> = serde_json::from_value(
                v.get("scores").cloned().unwrap_or_default(),
            )
            .map_err(|e| {
                anyhow!(
                    "{}: `scores` must be a matrix of numbers [images][captions]: {e}",
                    scores_path.display()
                )
            })?;
            let cap_img: Vec<usize> =
                serde_json::from_value(v.get("caption_image").cloned().unwrap_or_default())
                    .map_err(|e| {
                        anyhow!(
                            "{}: `caption_image` must list each caption's image index: {e}",
                            scores_path.display()
                        )
                    })?;
            let r = recall_at_k(&scores, &cap_img)?;
            outln!(
                "image→text R@1 {:.2}  R@5 {:.2}  R@10 {:.2}",
                r.i2t[0],
                r.i2t[1],
                r.i2t[2]
            );
            outln!(
                "text→image R@1 {:.2}  R@5 {:.2}  R@10 {:.2}",
                r.t2i[0],
                r.t2i[1],
                r.t2i[2]
            );
            outln!("mean recall {:.2}", r.rsum_mean);
            write_json(a.json.as_deref(), &r)
        }
    }
}

fn caption(a: &CaptionArgs) -> Result<()> {
    let refs = read_captions(&a.refs, false)?;
    let preds = read_captions(&a.preds, true)?;
    let meteor_jar = if a.no_meteor {
        None
    } else {
        match find_jar(a.meteor_jar.as_deref()) {
            Ok(j) => Some(j),
            Err(e) if a.meteor_jar.is_none() => {
                errln!("note: METEOR skipped: {e}");
                None
            }
            Err(e) => bail!(e),
        }
    };
    let cider_df = match &a.cider_df {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(serde_json::from_str::<DocFreqFile>(&text).map_err(|e| {
                anyhow!(
                    "{}: not a document-frequency file from `oscar eval cider-df`: {e}",
                    p.display()
                )
            })?)
        }
        None => None,
    };
    let tokenizer = match a.tokenizer {
        CaptionTokenizer::Native => {
            if a.ptb_jar.is_some() {
                bail!("--ptb-jar is only used with --tokenizer jar");
            }
            oscar_eval::ptb::Tokenizer::Native
        }
        CaptionTokenizer::Jar => {
            oscar_eval::ptb::Tokenizer::Jar(oscar_eval::ptb::find_ptb_jar(a.ptb_jar.as_deref())?)
        }
    };
    let opt = CaptionOptions {
        pretokenized: a.pretokenized,
        meteor_jar,
        cider_df,
        allow_subset: a.subset,
        tokenizer,
    };
    let s = evaluate_captions(&refs, &preds, &opt)?;
    outln!("images   {}", s.images);
    for k in 0..4 {
        outln!("BLEU-{}   {:.4}", k + 1, s.bleu[k]);
    }
    match s.meteor {
        Some(m) => outln!("METEOR   {m:.4}"),
        None => outln!("METEOR   (not computed)"),
    }
    outln!("ROUGE-L  {:.4}", s.rouge_l);
    outln!("CIDEr    {:.4}", s.cider);
    if let Some(c) = s.cider_d {
        outln!("CIDEr-D  {c:.4}  (training document frequencies)");
    }
    outln!(
        "SPICE    (not available: it needs Stanford CoreNLP 3.6.0, which cannot be installed here)"
    );
    write_json(a.json.as_deref(), &s)
}

fn retrieval_protocol(a: &RetrievalArgs) -> Result<()> {
    use oscar::tasks::first_stage::{FirstStage, FirstStageChoice, FirstStageKind};
    use oscar::tasks::retrieval::{evaluate, world_paths, EvalPlan, RetrievalSet, Retriever};
    let ckpt = a.checkpoint.as_ref().expect("checked by the caller");
    let data = a
        .data
        .as_ref()
        .ok_or_else(|| anyhow!("--data is required with --checkpoint"))?;
    let r = Retriever::load_at(ckpt, &a.device, a.quantize)?;
    let tok = oscar::tokenizer::BertTokenizer::from_vocab(&ckpt.join("vocab.txt"))?;
    let (c, f, l) = world_paths(data, &a.split);
    let mut set = RetrievalSet::open(&c, &f, &l, r.config.img_feature_dim, a.keys.as_deref())?;
    if let Some(n) = a.images {
        set.images.truncate(n);
        set.captions.retain(|(i, _)| *i < n);
    }
    let partial = a
        .partial
        .clone()
        .unwrap_or_else(|| ckpt.join(format!("{}_scores.partial.json", a.split)));
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("score {bar:30} {pos}/{len} pairs · ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let settings = oscar::tasks::retrieval::saved_settings(ckpt)?;
    if let (Some(shard), Some(out)) = (a.shard, &a.json) {
        let part = oscar::tasks::retrieval::score_shard(
            &r,
            &tok,
            &set,
            &settings,
            256,
            shard,
            out,
            serde_json::json!({"checkpoint": ckpt, "split": a.split, "quantize": a.quantize}),
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )?;
        bar.finish_and_clear();
        outln!(
            "shard {}: {} of {} images × {} captions scored into {} (join the parts with `oscar merge`)",
            part.shard,
            part.results.len(),
            part.total,
            set.captions.len(),
            out.display()
        );
        return Ok(());
    }
    let learned = match (a.two_stage_k, a.first_stage) {
        (Some(_), FirstStageChoice::Learned) => Some(FirstStage::load(ckpt, &a.device)?),
        (None, FirstStageChoice::Learned) => {
            return Err(anyhow!("--first-stage learned needs --two-stage-k K"))
        }
        _ => None,
    };
    let two_stage = a.two_stage_k.map(|k| {
        (
            k,
            match &learned {
                Some(fs) => FirstStageKind::Learned(fs),
                None => FirstStageKind::Tags,
            },
        )
    });
    if a.two_stage_only && two_stage.is_none() {
        return Err(anyhow!("--two-stage-only needs --two-stage-k K"));
    }
    let plan = EvalPlan {
        batch: 256,
        full: !a.two_stage_only,
        two_stage,
        partial: Some(&partial),
    };
    let e = evaluate(&r, &tok, &set, &settings, &plan, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&partial);
    print_retrieval(&e);
    write_json(a.json.as_deref(), &e)
}

/// Prints a retrieval evaluation's recalls, forwards and times.
pub(crate) fn print_retrieval(e: &oscar::tasks::retrieval::RetrievalEval) {
    use oscar::tasks::retrieval::summary;
    if let Some(f) = &e.full {
        outln!(
            "{} images × {} captions, full protocol: {:?} ({} forwards, {:.1} s)",
            e.images,
            e.captions,
            summary(&f.recall),
            f.forwards,
            f.seconds
        );
    }
    if let Some(t) = &e.two_stage {
        outln!(
            "two-stage ({} first stage, k = {}): {:?} ({} forwards + {} single-modality passes, {:.1} s); first stage alone: {:?}",
            t.first_stage,
            t.k,
            summary(&t.recall),
            t.forwards,
            t.single_passes,
            t.seconds,
            summary(&t.first_stage_only)
        );
    }
}
