//! Dynamic int8 on every model type: `quantize` reaches every `Linear` layer (no f32 Linear
//! weight is left among the parameters), and the outputs stay close to f32.

use candle_core::{Device, Tensor};
use oscar::checkpoint::{build_fresh, is_linear_weight, quantize, Buildable, Loaded};
use oscar::model::{
    BertForImageCaptioning, BertImgForPreTraining, ImageBertForMultipleChoice,
    ImageBertForSequenceClassification, Inputs,
};
use oscar::nn::Ctx;
use oscar::OscarConfig;

fn inputs(cfg: &OscarConfig, b: usize) -> Inputs {
    let (t, r) = (9, 5);
    let ids: Vec<u32> = (0..b * t)
        .map(|i| 5 + (i as u32 * 7) % (cfg.vocab_size as u32 - 5))
        .collect();
    let feats: Vec<f32> = (0..b * r * cfg.img_feature_dim)
        .map(|i| ((i * 37) % 101) as f32 / 50.0)
        .collect();
    Inputs {
        input_ids: Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap(),
        token_type_ids: None,
        position_ids: None,
        img_feats: Some(
            Tensor::from_vec(feats, (b, r, cfg.img_feature_dim), &Device::Cpu).unwrap(),
        ),
        attention_mask: None,
    }
}

/// f32 then int8 outputs of `forward`; asserts every Linear weight left the parameters.
fn both<M: Buildable>(cfg: &OscarConfig, forward: impl Fn(&M) -> Tensor) -> (Vec<f32>, Vec<f32>) {
    let mut m: Loaded<M> = build_fresh(cfg, 3, &Device::Cpu).unwrap();
    let before = m.params.count();
    let f = forward(&m.model)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    quantize(&mut m).unwrap();
    let left: Vec<&String> = m
        .params
        .entries
        .iter()
        .filter(|(k, v)| is_linear_weight(k, v.as_tensor().dims()))
        .map(|(k, _)| k)
        .collect();
    assert!(left.is_empty(), "f32 Linear weights left: {left:?}");
    assert!(m.params.count() < before);
    assert!(m.model.linears().iter().all(|l| l.is_quantized()));
    let q = forward(&m.model)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (f, q)
}

fn assert_close(name: &str, f: &[f32], q: &[f32]) {
    let num: f32 = f.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f32 = f.iter().map(|a| a * a).sum();
    let rel = (num / den).sqrt();
    eprintln!("{name}: int8 vs f32 relative error {rel:.2e}");
    assert!(rel < 0.05 && rel > 0.0, "{name}: relative error {rel}");
}

#[test]
fn every_model_type_quantizes_all_its_linear_layers_and_stays_close() {
    let mut cfg = OscarConfig::tiny(99, 14);
    cfg.hidden_dropout_prob = 0.0;
    cfg.attention_probs_dropout_prob = 0.0;
    let ctx = Ctx::eval();
    let x = inputs(&cfg, 2);
    let (f, q) = both::<BertImgForPreTraining>(&cfg, |m| m.forward(&x, &ctx).unwrap().mlm_logits);
    assert_close("pre-training MLM logits", &f, &q);
    let mut tied = cfg.clone();
    tied.tie_weights = true;
    let masked = Tensor::from_vec(
        (0..2 * 9).map(|i| u32::from(i % 9 < 3)).collect::<Vec<_>>(),
        (2, 9),
        &Device::Cpu,
    )
    .unwrap();
    let (f, q) = both::<BertForImageCaptioning>(&tied, |m| m.forward(&x, &masked, &ctx).unwrap());
    assert_close("captioning logits (tied decoder)", &f, &q);
    let mut c = cfg.clone();
    c.num_labels = 3;
    let (f, q) = both::<ImageBertForSequenceClassification>(&c, |m| m.forward(&x, &ctx).unwrap());
    assert_close("classification logits", &f, &q);
    c.num_labels = 2;
    c.num_choice = 2;
    c.use_img_layernorm = Some(true);
    c.classifier = oscar::config::ClassifierKind::Mlp;
    let (f, q) = both::<ImageBertForMultipleChoice>(&c, |m| m.forward(&x, &ctx).unwrap());
    assert_close("NLVR2 pair logits", &f, &q);
}
