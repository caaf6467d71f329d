//! The reference's key rules, applied to a checkpoint's tensors before the model is built:
//! `gamma`/`beta` → `weight`/`bias`, the `bert.` prefix, v1 captioning head keys, the tied
//! decoder, HF's `decoder.bias` alias and its `position_ids` buffer.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// Which head a model (or a checkpoint) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `BertImgModel` alone.
    Backbone,
    /// `BertImgForPreTraining`: `cls.predictions` (tied) + `cls.seq_relationship`.
    PreTraining,
    /// `ImageBertForSequenceClassification`: `classifier`.
    SequenceClassification,
    /// `ImageBertForMultipleChoice`: `classifier` over `num_choice·H`.
    MultipleChoice,
    /// `BertForImageCaptioning`: `cls.predictions` (tied only when `tie_weights`).
    Captioning,
}

impl HeadKind {
    /// What a checkpoint's keys say it holds (`hidden` tells the pair head from the single one).
    pub fn detect(keys: &[&str], shapes: &HashMap<String, Vec<usize>>, hidden: usize) -> HeadKind {
        let has = |p: &str| keys.iter().any(|k| k.starts_with(p));
        if has("cls.seq_relationship") {
            HeadKind::PreTraining
        } else if has("cls.predictions") || has("transform.dense") || has("decoder.weight") {
            HeadKind::Captioning
        } else if has("classifier") {
            let first = shapes
                .get("classifier.weight")
                .or_else(|| shapes.get("classifier.0.weight"));
            match first {
                Some(s) if s.len() == 2 && s[1] > hidden => HeadKind::MultipleChoice,
                _ => HeadKind::SequenceClassification,
            }
        } else {
            HeadKind::Backbone
        }
    }
}

const BACKBONE_ROOTS: [&str; 5] = [
    "embeddings.",
    "encoder.",
    "pooler.",
    "img_embedding.",
    "LayerNorm.",
];

/// Applies the loading rules for a model with head `head`; returns notes of what changed.
/// `tied` says whether the model shares `cls.predictions.decoder.weight` with the word embeddings.
pub fn normalize_keys(
    t: &mut HashMap<String, Tensor>,
    head: HeadKind,
    tied: bool,
    vocab_size: usize,
) -> candle_core::Result<Vec<String>> {
    let mut notes = Vec::new();
    // HF registers position ids as a (persistent, in older versions) buffer; it is not a weight.
    let buffers: Vec<String> = t
        .keys()
        .filter(|k| k.ends_with("embeddings.position_ids"))
        .cloned()
        .collect();
    for k in buffers {
        t.remove(&k);
        notes.push(format!("dropped buffer {k}"));
    }
    // Old BERT checkpoints name LayerNorm parameters gamma/beta.
    let renames: Vec<(String, String)> = t
        .keys()
        .filter_map(|k| {
            k.strip_suffix(".gamma")
                .map(|s| (k.clone(), format!("{s}.weight")))
                .or_else(|| {
                    k.strip_suffix(".beta")
                        .map(|s| (k.clone(), format!("{s}.bias")))
                })
        })
        .collect();
    if !renames.is_empty() {
        notes.push(format!(
            "renamed {} gamma/beta keys to weight/bias",
            renames.len()
        ));
    }
    for (from, to) in renames {
        let v = t.remove(&from).expect("key listed above");
        t.insert(to, v);
    }
    // A bare backbone (keys without `bert.`) loads into any model: add the prefix.
    if !t.keys().any(|k| k.starts_with("bert."))
        && t.keys()
            .any(|k| BACKBONE_ROOTS.iter().any(|r| k.starts_with(r)))
    {
        let bare: Vec<String> = t
            .keys()
            .filter(|k| BACKBONE_ROOTS.iter().any(|r| k.starts_with(r)))
            .cloned()
            .collect();
        notes.push(format!(
            "added the `bert.` prefix to {} backbone keys",
            bare.len()
        ));
        for k in bare {
            let v = t.remove(&k).expect("key listed above");
            t.insert(format!("bert.{k}"), v);
        }
    }
    // v1 captioning checkpoints (Oscar 25f9aca) hold the head at the top level with no bias.
    if head == HeadKind::Captioning && !t.keys().any(|k| k.starts_with("cls.predictions.")) {
        let v1: Vec<String> = t
            .keys()
            .filter(|k| k.starts_with("transform.") || *k == "decoder.weight")
            .cloned()
            .collect();
        if !v1.is_empty() {
            for k in &v1 {
                let v = t.remove(k).expect("key listed above");
                t.insert(format!("cls.predictions.{k}"), v);
            }
            t.insert(
                "cls.predictions.bias".into(),
                Tensor::zeros(vocab_size, DType::F32, &Device::Cpu)?,
            );
            notes.push(format!(
                "v1 captioning head: moved {} keys under cls.predictions and added a zero bias",
                v1.len()
            ));
        }
    }
    // Newer HF heads also store the bias as `decoder.bias` (the same tensor).
    if let Some(b) = t.remove("cls.predictions.decoder.bias") {
        if t.contains_key("cls.predictions.bias") {
            notes.push(
                "dropped cls.predictions.decoder.bias (alias of cls.predictions.bias)".into(),
            );
        } else {
            t.insert("cls.predictions.bias".into(), b);
            notes.push("renamed cls.predictions.decoder.bias to cls.predictions.bias".into());
        }
    }
    if tied && t.remove("cls.predictions.decoder.weight").is_some() {
        notes.push(
            "cls.predictions.decoder.weight is tied to bert.embeddings.word_embeddings.weight"
                .into(),
        );
    }
    // A tied MLM head (pre-training's) saved as safetensors keeps one copy of the shared tensor,
    // so the file has no decoder. The reference's `torch.save`d state_dict holds both copies, and
    // an untied captioning model built from it starts its decoder from the word embeddings: do
    // the same here, rather than let the decoder start from random numbers.
    if !tied
        && head == HeadKind::Captioning
        && t.contains_key("cls.predictions.transform.dense.weight")
        && !t.contains_key("cls.predictions.decoder.weight")
    {
        if let Some(w) = t.get("bert.embeddings.word_embeddings.weight") {
            let w = w.copy()?;
            t.insert("cls.predictions.decoder.weight".into(), w);
            notes.push(
                "cls.predictions.decoder.weight copied from bert.embeddings.word_embeddings.weight (the checkpoint's MLM head is tied to them)"
                    .into(),
            );
        }
    }
    Ok(notes)
}
