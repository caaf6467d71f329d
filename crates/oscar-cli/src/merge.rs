//! `oscar merge`: joins the part files of a sharded run (`--shard K/N` on `oscar eval retrieval`,
//! `oscar caption`, `oscar answer` and `oscar encode`) into what one run writes, and computes its metrics.

use anyhow::{bail, Result};
use clap::Args;
use oscar::checkpoint::write_atomic;
use oscar::data::shard::{merge, part_kind};
use std::path::PathBuf;

#[derive(Args)]
pub struct MergeArgs {
    /// Where the joined result goes: retrieval, a score file with the recall (`oscar eval
    /// retrieval --scores` reads it); captions, COCO results; answers, the VQA submission.
    #[arg(long)]
    out: PathBuf,
    /// Captions: reference captions to score the joined captions against.
    #[arg(long)]
    refs: Option<PathBuf>,
    /// Captions: training captions, for CIDEr-D's document frequencies (with --refs).
    #[arg(long)]
    train_captions: Option<PathBuf>,
    /// Answers: VQA annotations to compute the official accuracy against.
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Every shard's part file (in any order).
    #[arg(required = true)]
    parts: Vec<PathBuf>,
}

pub fn run(a: &MergeArgs) -> Result<()> {
    if crate::encode::is_encoded_part(&a.parts[0]) {
        return crate::encode::merge_encoded(&a.parts, &a.out);
    }
    let kind = part_kind(&a.parts[0])?;
    match kind.as_str() {
        "retrieval-scores" => retrieval(a),
        "captions" => captions(a),
        "answers" => answers(a),
        other => bail!(
            "{}: parts of kind `{other}` cannot be merged (retrieval-scores, captions or answers)",
            a.parts[0].display()
        ),
    }
}

fn retrieval(a: &MergeArgs) -> Result<()> {
    let m = oscar::tasks::retrieval::merge_scores(&a.parts)?;
    let (ni, nc) = (m.scores.len(), m.caption_image.len());
    let summary = oscar::tasks::retrieval::summary(&m.recall);
    let body = serde_json::json!({
        "images": ni,
        "captions": nc,
        "full": {"recall": m.recall, "forwards": ni * nc},
        "scores": m.scores,
        "caption_image": m.caption_image,
    });
    write_atomic(&a.out, serde_json::to_string(&body)?.as_bytes())?;
    outln!(
        "{ni} images × {nc} captions from {} parts: {summary:?}; scores and recall in {}",
        a.parts.len(),
        a.out.display()
    );
    Ok(())
}

fn captions(a: &MergeArgs) -> Result<()> {
    let m = merge::<crate::caption::CaptionRow>(&a.parts)?;
    crate::caption::write_merged(&a.out, &m.results)?;
    outln!(
        "{} captions from {} parts written to {}",
        m.results.len(),
        a.parts.len(),
        a.out.display()
    );
    if let Some(refs) = &a.refs {
        let s = crate::caption::score_rows(&m.results, refs, a.train_captions.as_deref())?;
        outln!("{}", serde_json::to_string_pretty(&s)?);
    }
    Ok(())
}

fn answers(a: &MergeArgs) -> Result<()> {
    let m = merge::<serde_json::Value>(&a.parts)?;
    write_atomic(&a.out, serde_json::to_string(&m.results)?.as_bytes())?;
    outln!(
        "{} answers from {} parts written to {}",
        m.results.len(),
        a.parts.len(),
        a.out.display()
    );
    if let Some(anns) = &a.annotations {
        use oscar_eval::vqa::{evaluate_vqa_rules, read_annotations, read_results, VqaRules};
        let s = evaluate_vqa_rules(
            &read_annotations(anns)?,
            &read_results(&a.out)?,
            false,
            VqaRules::Official,
        )?;
        outln!("{}", serde_json::to_string_pretty(&s)?);
    }
    Ok(())
}
