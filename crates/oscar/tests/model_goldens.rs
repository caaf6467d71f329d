//! The Rust model against PyTorch + transformers goldens (tools/reference/make_model_goldens.py):
//! every head's outputs, each loss, and gradients, from each checkpoint format.

use candle_core::{DType, Device, Tensor};
use oscar::checkpoint::{load_model, read_checkpoint, Backbone, Buildable, Fresh, Loaded};
use oscar::config::LossType;
use oscar::model::captioning::captioning_loss;
use oscar::model::classification::classification_loss;
use oscar::model::{
    BertForImageCaptioning, BertImgForPreTraining, ClassLabels, ImageBertForMultipleChoice,
    ImageBertForSequenceClassification, Inputs,
};
use oscar::nn::Ctx;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(model: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model")
        .join(model)
        .join(file)
}

fn st(model: &str, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(model, file), &Device::Cpu).unwrap()
}

fn inputs(t: &HashMap<String, Tensor>) -> Inputs {
    let u32 = |k: &str| t.get(k).map(|v| v.to_dtype(DType::U32).unwrap());
    Inputs {
        input_ids: u32("input_ids").unwrap(),
        token_type_ids: u32("token_type_ids"),
        position_ids: u32("position_ids"),
        img_feats: Some(t["img_feats"].clone()),
        attention_mask: Some(t["attention_mask"].clone()),
    }
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap()
}

/// Max |a − b| / max(1, |b|) over all elements.
fn assert_close(name: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims(), "{name}: shape");
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tol,
        "{name}: max relative difference {worst:e} > {tol:e}"
    );
}

fn load<M: Buildable>(model: &str, file: &str) -> Loaded<M> {
    let ckpt = read_checkpoint(&fixture(model, file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let loaded = load_model::<M>(ckpt, None, Fresh::Nothing, 0, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(
        loaded.report.unexpected.is_empty(),
        "{file}: unexpected {:?}",
        loaded.report.unexpected
    );
    loaded
}

const TOL: f32 = 1e-5;

#[test]
fn pretraining_outputs_losses_and_gradients_match_pytorch_from_every_format() {
    let inp = st("pretrain", "inputs.safetensors");
    let gold = st("pretrain", "goldens.safetensors");
    let x = inputs(&inp);
    for file in [
        "model.safetensors",
        "pytorch_model.bin",
        "pytorch_model_legacy.bin",
    ] {
        let m = load::<BertImgForPreTraining>("pretrain", file);
        assert_eq!(m.config.use_img_layernorm, Some(true));
        let bert = m.model.backbone().forward(&x, &Ctx::eval()).unwrap();
        assert_close(
            &format!("{file} sequence"),
            &bert.sequence,
            &gold["sequence"],
            TOL,
        );
        assert_close(
            &format!("{file} pooled"),
            &bert.pooled,
            &gold["pooled"],
            TOL,
        );
        let out = m.model.forward(&x, &Ctx::eval()).unwrap();
        assert_close(
            &format!("{file} mlm"),
            &out.mlm_logits,
            &gold["mlm_logits"],
            TOL,
        );
        assert_close(
            &format!("{file} contrastive"),
            &out.contrastive_logits,
            &gold["contrastive_logits"],
            TOL,
        );
        let (loss, mlm, con) = m
            .model
            .loss(
                &out,
                &i64s(&inp["mlm_labels"]),
                &i64s(&inp["contrastive_labels"]),
            )
            .unwrap();
        assert_close(
            "mlm loss",
            &mlm.unwrap().reshape(1).unwrap(),
            &gold["mlm_loss"],
            TOL,
        );
        assert_close(
            "contrastive loss",
            &con.reshape(1).unwrap(),
            &gold["contrastive_loss"],
            TOL,
        );
        assert_close("loss", &loss.reshape(1).unwrap(), &gold["loss"], TOL);
        let grads = loss.backward().unwrap();
        let mut checked = 0;
        for (k, g) in &gold {
            let Some(name) = k.strip_prefix("grad.") else {
                continue;
            };
            let var = m
                .params
                .get(name)
                .unwrap_or_else(|| panic!("no parameter {name}"));
            let ours = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            assert_close(&format!("{file} grad {name}"), ours, g, 1e-4);
            checked += 1;
        }
        assert_eq!(checked, 7);
    }
}

#[test]
fn bare_gamma_beta_legacy_backbone_loads_with_the_reference_rules() {
    let gold = st("pretrain", "goldens.safetensors");
    let x = inputs(&st("pretrain", "inputs.safetensors"));
    let m = load::<Backbone>("pretrain", "backbone_gamma_beta_legacy.bin");
    assert!(
        m.report.notes.iter().any(|n| n.contains("gamma/beta")),
        "{:?}",
        m.report.notes
    );
    assert!(
        m.report.notes.iter().any(|n| n.contains("`bert.` prefix")),
        "{:?}",
        m.report.notes
    );
    let out = m.model.0.forward(&x, &Ctx::eval()).unwrap();
    assert_close("sequence", &out.sequence, &gold["sequence"], TOL);
    assert_close("pooled", &out.pooled, &gold["pooled"], TOL);
}

#[test]
fn vqa_linear_head_bce_and_kl_losses_match_pytorch() {
    let inp = st("vqa", "inputs.safetensors");
    let gold = st("vqa", "goldens.safetensors");
    let m = load::<ImageBertForSequenceClassification>("vqa", "pytorch_model.bin");
    assert_eq!(m.config.use_img_layernorm, Some(false));
    let logits = m.model.forward(&inputs(&inp), &Ctx::eval()).unwrap();
    assert_close("logits", &logits, &gold["logits"], TOL);
    // Inference without a backward takes the fused attention and residual LayerNorm.
    let inferred = {
        let _no_grad = oscar::nn::NoGrad::new();
        m.model.forward(&inputs(&inp), &Ctx::eval()).unwrap()
    };
    assert_close("logits (no backward)", &inferred, &gold["logits"], TOL);
    let bce = m
        .model
        .loss(&logits, ClassLabels::Dense(&inp["soft_scores"]))
        .unwrap();
    assert_close("bce", &bce.reshape(1).unwrap(), &gold["bce_loss"], TOL);
    let kl = classification_loss(
        &logits,
        ClassLabels::Dense(&inp["kl_targets"]),
        LossType::Kl,
    )
    .unwrap();
    assert_close("kl", &kl.reshape(1).unwrap(), &gold["kl_loss"], TOL);
}

#[test]
fn gqa_mlp_head_and_cross_entropy_match_pytorch() {
    let inp = st("gqa_mlp", "inputs.safetensors");
    let gold = st("gqa_mlp", "goldens.safetensors");
    let m = load::<ImageBertForSequenceClassification>("gqa_mlp", "model.safetensors");
    let logits = m.model.forward(&inputs(&inp), &Ctx::eval()).unwrap();
    assert_close("logits", &logits, &gold["logits"], TOL);
    let loss = m
        .model
        .loss(&logits, ClassLabels::Index(&i64s(&inp["labels"])))
        .unwrap();
    assert_close("loss", &loss.reshape(1).unwrap(), &gold["loss"], TOL);
}

#[test]
fn nlvr2_pair_head_with_layernorm_matches_pytorch() {
    let inp = st("nlvr2", "inputs.safetensors");
    let gold = st("nlvr2", "goldens.safetensors");
    let m = load::<ImageBertForMultipleChoice>("nlvr2", "pytorch_model.bin");
    let logits = m.model.forward(&inputs(&inp), &Ctx::eval()).unwrap();
    assert_close("logits", &logits, &gold["logits"], TOL);
    let loss = m
        .model
        .loss(&logits, ClassLabels::Index(&i64s(&inp["labels"])))
        .unwrap();
    assert_close("loss", &loss.reshape(1).unwrap(), &gold["loss"], TOL);
}

#[test]
fn captioning_seq2seq_logits_and_smoothed_losses_match_pytorch() {
    let inp = st("caption", "inputs.safetensors");
    let gold = st("caption", "goldens.safetensors");
    let x = inputs(&inp);
    assert_eq!(x.attention_mask.as_ref().unwrap().rank(), 3);
    let targets: Vec<u32> = i64s(&inp["masked_ids"])
        .into_iter()
        .filter(|&t| t != 0)
        .map(|t| t as u32)
        .collect();
    for file in ["pytorch_model.bin", "pytorch_model_legacy.bin"] {
        let m = load::<BertForImageCaptioning>("caption", file);
        let logits = m
            .model
            .forward(&x, &inp["masked_pos"], &Ctx::eval())
            .unwrap();
        assert_close(&format!("{file} logits"), &logits, &gold["logits"], TOL);
        let l = m.model.loss(&logits, &targets, 1).unwrap();
        assert_close(
            "smoothed, drop-worst",
            &l.reshape(1).unwrap(),
            &gold["loss_smooth_dropworst"],
            TOL,
        );
        let l = captioning_loss(&logits, &targets, 0.1, 0.0, 0, 1).unwrap();
        assert_close(
            "smoothed",
            &l.reshape(1).unwrap(),
            &gold["loss_smooth"],
            TOL,
        );
        let l = captioning_loss(&logits, &targets, 0.0, 0.0, 0, 1).unwrap();
        assert_close("plain", &l.reshape(1).unwrap(), &gold["loss_plain"], TOL);
    }
}

#[test]
fn an_untied_captioning_model_from_a_tied_safetensors_checkpoint_starts_as_from_the_references_bin()
{
    // The pre-training fixture as the reference's `torch.save` wrote it (the tied decoder stored
    // as its own key) and as a safetensors file (one copy: no decoder, as HF's save_pretrained
    // and every checkpoint oscar-rs writes). Loaded into an untied captioning model, both must
    // give the same decoder and the same logits; a fresh random decoder would not.
    let inp = st("caption", "inputs.safetensors");
    let from = |file: &str| {
        let ckpt = read_checkpoint(&fixture("pretrain", file)).unwrap();
        let mut cfg = ckpt.config.clone().unwrap();
        cfg.tie_weights = false;
        load_model::<BertForImageCaptioning>(ckpt, Some(cfg), Fresh::Head, 7, &Device::Cpu).unwrap()
    };
    let bin = from("pytorch_model.bin");
    let sft = from("model.safetensors");
    assert!(
        sft.report
            .notes
            .iter()
            .any(|n| n.contains("decoder.weight copied from")),
        "{:?}",
        sft.report.notes
    );
    let w =
        |m: &Loaded<BertForImageCaptioning>, k: &str| m.params.get(k).unwrap().as_tensor().clone();
    let decoder = "cls.predictions.decoder.weight";
    assert_close("decoder", &w(&sft, decoder), &w(&bin, decoder), 0.0);
    assert_close(
        "decoder = embeddings",
        &w(&sft, decoder),
        &w(&sft, "bert.embeddings.word_embeddings.weight"),
        0.0,
    );
    let ids = inp["input_ids"].dim(1).unwrap();
    let masked = Tensor::ones(
        (inp["input_ids"].dim(0).unwrap(), ids),
        DType::U32,
        &Device::Cpu,
    )
    .unwrap();
    let logits = |m: &Loaded<BertForImageCaptioning>| {
        m.model
            .forward(&inputs(&inp), &masked, &Ctx::eval())
            .unwrap()
    };
    assert_close("logits", &logits(&sft), &logits(&bin), 0.0);
}

#[test]
fn v1_captioning_checkpoint_keys_are_remapped_not_silently_reinitialised() {
    let inp = st("caption", "inputs.safetensors");
    let gold = st("caption", "goldens_v1.safetensors");
    let m = load::<BertForImageCaptioning>("caption", "v1_pytorch_model.bin");
    assert!(
        m.report
            .notes
            .iter()
            .any(|n| n.contains("v1 captioning head")),
        "{:?}",
        m.report.notes
    );
    let logits = m
        .model
        .forward(&inputs(&inp), &inp["masked_pos"], &Ctx::eval())
        .unwrap();
    assert_close("v1 logits", &logits, &gold["logits_v1"], TOL);
}
