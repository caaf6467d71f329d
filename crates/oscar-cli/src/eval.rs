//! `oscar eval`: the field's metrics (oscar-eval) on files, as a table and as JSON.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use oscar::checkpoint::write_atomic;
use oscar_eval::captions::{build_doc_freq, evaluate_captions, read_captions, CaptionOptions};
use oscar_eval::cider::DocFreqFile;
use oscar_eval::meteor::find_jar;
use oscar_eval::retrieval::recall_at_k;
use oscar_eval::vqa::{evaluate_vqa, read_annotations, read_questions, read_results};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum EvalCmd {
    /// BLEU-1..4, METEOR, ROUGE-L, CIDEr (and CIDEr-D with --cider-df) as pycocoevalcap computes them.
    Caption(CaptionArgs),
    /// The official VQA accuracy, overall and by question and answer type.
    Vqa(VqaArgs),
    /// Build the CIDEr-D document-frequency file SCST needs from any caption file.
    CiderDf(DfArgs),
    /// Recall@1/5/10 both ways from a score matrix (JSON: {"scores": [[…]], "caption_image": […]}).
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
    /// Write the scores (and per-image scores) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
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
    #[arg(long)]
    scores: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn write_json(path: Option<&Path>, v: &impl serde::Serialize) -> Result<()> {
    if let Some(p) = path {
        write_atomic(p, serde_json::to_string_pretty(v)?.as_bytes())?;
        println!("wrote {}", p.display());
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
            let s = evaluate_vqa(&anns, &res, a.subset)?;
            println!("VQA accuracy  {:.2}  ({} questions)", s.overall, s.questions);
            for (k, v) in &s.per_answer_type {
                println!("  answer type {k:<12} {v:.2}");
            }
            for (k, v) in &s.per_question_type {
                println!("  question type {k:<30} {v:.2}");
            }
            write_json(a.json.as_deref(), &s)
        }
        EvalCmd::CiderDf(a) => {
            let caps = read_captions(&a.captions, false)?;
            let df = build_doc_freq(&caps, a.pretokenized);
            write_atomic(&a.out, serde_json::to_string(&df)?.as_bytes())?;
            println!("wrote {} ({} images, {} n-grams)", a.out.display(), df.ref_len, df.document_frequency.len());
            Ok(())
        }
        EvalCmd::Retrieval(a) => {
            let text = std::fs::read_to_string(&a.scores).with_context(|| format!("reading {}", a.scores.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow!("{}: not valid JSON: {e}", a.scores.display()))?;
            let scores: Vec<Vec<f32>> = serde_json::from_value(v.get("scores").cloned().unwrap_or_default())
                .map_err(|e| anyhow!("{}: `scores` must be a matrix of numbers [images][captions]: {e}", a.scores.display()))?;
            let cap_img: Vec<usize> = serde_json::from_value(v.get("caption_image").cloned().unwrap_or_default())
                .map_err(|e| anyhow!("{}: `caption_image` must list each caption's image index: {e}", a.scores.display()))?;
            let r = recall_at_k(&scores, &cap_img)?;
            println!("image→text R@1 {:.2}  R@5 {:.2}  R@10 {:.2}", r.i2t[0], r.i2t[1], r.i2t[2]);
            println!("text→image R@1 {:.2}  R@5 {:.2}  R@10 {:.2}", r.t2i[0], r.t2i[1], r.t2i[2]);
            println!("mean recall {:.2}", r.rsum_mean);
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
                eprintln!("note: METEOR skipped: {e}");
                None
            }
            Err(e) => bail!(e),
        }
    };
    let cider_df = match &a.cider_df {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(serde_json::from_str::<DocFreqFile>(&text).map_err(|e| anyhow!("{}: not a document-frequency file from `oscar eval cider-df`: {e}", p.display()))?)
        }
        None => None,
    };
    let opt = CaptionOptions { pretokenized: a.pretokenized, meteor_jar, cider_df, allow_subset: a.subset };
    let s = evaluate_captions(&refs, &preds, &opt)?;
    println!("images   {}", s.images);
    for k in 0..4 {
        println!("BLEU-{}   {:.4}", k + 1, s.bleu[k]);
    }
    match s.meteor {
        Some(m) => println!("METEOR   {m:.4}"),
        None => println!("METEOR   (not computed)"),
    }
    println!("ROUGE-L  {:.4}", s.rouge_l);
    println!("CIDEr    {:.4}", s.cider);
    if let Some(c) = s.cider_d {
        println!("CIDEr-D  {c:.4}  (training document frequencies)");
    }
    println!("SPICE    (not available: it needs Stanford CoreNLP 3.6.0, which cannot be installed here)");
    write_json(a.json.as_deref(), &s)
}
