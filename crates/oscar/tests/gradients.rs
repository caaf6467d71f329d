//! One training-mode backward through every head: every parameter must receive a non-zero
//! gradient (candle's fused LayerNorm/softmax would silently cut the graph; rust-stack.md §4.1).

use candle_core::{DType, Device, Tensor};
use oscar::checkpoint::{build_fresh, Buildable, Loaded};
use oscar::config::{ClassifierKind, LossType, OscarConfig};
use oscar::model::{
    BertForImageCaptioning, BertImgForPreTraining, ClassLabels, ImageBertForMultipleChoice,
    ImageBertForSequenceClassification, Inputs,
};
use oscar::nn::{Ctx, Params};

fn cfg() -> OscarConfig {
    let mut c = OscarConfig::tiny(50, 10);
    c.use_img_layernorm = Some(true);
    c.num_contrast_classes = 3;
    c
}

fn batch(b: usize) -> Inputs {
    let dev = Device::Cpu;
    let (t, r) = (7, 3);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 50) as u32).collect();
    let types: Vec<u32> = (0..b * t).map(|i| u32::from(i % t >= 4)).collect();
    let feats: Vec<f32> = (0..b * r * 10)
        .map(|i| ((i * 37 % 11) as f32) / 5.0)
        .collect();
    Inputs {
        input_ids: Tensor::from_vec(ids, (b, t), &dev).unwrap(),
        token_type_ids: Some(Tensor::from_vec(types, (b, t), &dev).unwrap()),
        position_ids: None,
        img_feats: Some(Tensor::from_vec(feats, (b, r, 10), &dev).unwrap()),
        attention_mask: Some(Tensor::ones((b, t + r), DType::F32, &dev).unwrap()),
    }
}

/// The largest absolute difference between two tensors of one shape.
fn diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Keys of parameters whose gradient is missing or all zero.
fn without_gradient(params: &Params, loss: &Tensor) -> Vec<String> {
    let grads = loss.backward().unwrap();
    params
        .entries
        .iter()
        .filter(|(_, v)| match grads.get(v.as_tensor()) {
            None => true,
            Some(g) => {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    == 0.0
            }
        })
        .map(|(k, _)| k.clone())
        .collect()
}

fn fresh<M: Buildable>(c: &OscarConfig) -> Loaded<M> {
    build_fresh::<M>(c, 3, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn pretraining_every_parameter_gets_a_gradient() {
    let m = fresh::<BertImgForPreTraining>(&cfg());
    let x = batch(2);
    let out = m.model.forward(&x, &Ctx::train(1)).unwrap();
    let mut labels = vec![-1i64; 2 * 10];
    labels[1] = 5;
    labels[3] = 9;
    labels[12] = 17;
    let (loss, _, _) = m.model.loss(&out, &labels, &[0, 2]).unwrap();
    assert_eq!(without_gradient(&m.params, &loss), Vec::<String>::new());
    assert!(
        m.params.get("cls.predictions.decoder.weight").is_none(),
        "decoder is tied, not a parameter"
    );
}

#[test]
fn sequence_classification_every_parameter_gets_a_gradient() {
    for (kind, loss_type) in [
        (ClassifierKind::Linear, LossType::Bce),
        (ClassifierKind::Mlp, LossType::Xe),
    ] {
        let mut c = cfg();
        c.classifier = kind;
        c.loss_type = loss_type;
        c.num_labels = 4;
        let m = fresh::<ImageBertForSequenceClassification>(&c);
        let logits = m.model.forward(&batch(2), &Ctx::train(2)).unwrap();
        let soft = Tensor::from_vec(
            vec![1f32, 0., 0.3, 0., 0., 0.6, 0., 1.],
            (2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let loss = match loss_type {
            LossType::Bce => m.model.loss(&logits, ClassLabels::Dense(&soft)).unwrap(),
            _ => m.model.loss(&logits, ClassLabels::Index(&[1, 3])).unwrap(),
        };
        assert_eq!(
            without_gradient(&m.params, &loss),
            Vec::<String>::new(),
            "{kind:?}"
        );
    }
}

#[test]
fn multiple_choice_every_parameter_gets_a_gradient() {
    let mut c = cfg();
    c.classifier = ClassifierKind::Mlp;
    c.cls_hidden_scale = 3;
    let m = fresh::<ImageBertForMultipleChoice>(&c);
    assert!(
        m.params.get("classifier.2.weight").is_some(),
        "LayerNorm of the NLVR2 head"
    );
    let logits = m.model.forward(&batch(4), &Ctx::train(3)).unwrap();
    let loss = m.model.loss(&logits, ClassLabels::Index(&[0, 1])).unwrap();
    assert_eq!(without_gradient(&m.params, &loss), Vec::<String>::new());
}

#[test]
fn captioning_every_parameter_but_the_unused_pooler_gets_a_gradient() {
    // Untied (the script's default) and tied to the word embeddings (VinVL's `--tie_weights`,
    // the demo's setting): tied, the decoder is the embeddings and receives its gradient there.
    for tie in [false, true] {
        let mut c = cfg();
        c.label_smoothing = 0.1;
        c.tie_weights = tie;
        let m = fresh::<BertForImageCaptioning>(&c);
        assert_eq!(
            m.params.get("cls.predictions.decoder.weight").is_none(),
            tie,
            "tie_weights {tie}"
        );
        let masked = Tensor::from_vec(
            vec![0u32, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            (2, 7),
            &Device::Cpu,
        )
        .unwrap();
        let logits = m.model.forward(&batch(2), &masked, &Ctx::train(4)).unwrap();
        let loss = m.model.loss(&logits, &[3, 4, 5], 1).unwrap();
        // The reference's captioning model never reads the pooled output either.
        assert_eq!(
            without_gradient(&m.params, &loss),
            vec![
                "bert.pooler.dense.weight".to_string(),
                "bert.pooler.dense.bias".to_string()
            ]
        );
    }
}

#[test]
fn training_mode_applies_dropout_and_eval_mode_does_not() {
    let m = fresh::<ImageBertForSequenceClassification>(&cfg());
    let x = batch(2);
    let e1 = m
        .model
        .forward(&x, &Ctx::eval())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e2 = m
        .model
        .forward(&x, &Ctx::eval())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let t1 = m
        .model
        .forward(&x, &Ctx::train(9))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let t2 = m
        .model
        .forward(&x, &Ctx::train(9))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let t3 = m
        .model
        .forward(&x, &Ctx::train(10))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(e1, e2);
    assert_eq!(t1, t2, "same seed, same dropout");
    assert_ne!(t1, e1);
    assert_ne!(t1, t3);
}

/// The classification heads read [CLS] through `forward_pooled`, whose last layer computes
/// position 0 only: it equals the pooled output of the full forward, with 2-D and 3-D masks.
#[test]
fn pooled_forward_with_a_pruned_last_layer_equals_the_full_forward() {
    let m = fresh::<ImageBertForSequenceClassification>(&cfg());
    let mut x = batch(3);
    let full = |x: &Inputs| m.model.backbone().forward(x, &Ctx::eval()).unwrap().pooled;
    let pruned = |x: &Inputs| m.model.backbone().forward_pooled(x, &Ctx::eval()).unwrap();
    assert!(diff(&full(&x), &pruned(&x)) < 1e-6);
    // A 3-D mask where [CLS] sees only the first half of the positions.
    let (b, l) = x.mask_or_ones().unwrap().dims2().unwrap();
    let mut m3 = vec![1f32; b * l * l];
    for bi in 0..b {
        for j in l / 2..l {
            m3[bi * l * l + j] = 0.0;
        }
    }
    let before = full(&x);
    x.attention_mask = Some(Tensor::from_vec(m3, (b, l, l), &Device::Cpu).unwrap());
    let (f, p) = (full(&x), pruned(&x));
    assert!(diff(&f, &p) < 1e-6);
    assert!(diff(&f, &before) > 1e-4, "the 3-D mask changes [CLS]");
}

/// With padding in the mask (captions of different lengths, a region list cut short),
/// `forward_pooled` drops the padded positions and runs the packed batch: the same [CLS] as the
/// full padded forward, and as the composite path (which keeps the padding), on a batch whose
/// padded positions hold arbitrary tokens and features.
#[test]
fn pooled_forward_over_a_packed_batch_equals_the_padded_forward() {
    let m = fresh::<ImageBertForSequenceClassification>(&cfg());
    let mut x = batch(3);
    let (t, l) = (7, 10);
    let mut mask = vec![1f32; 3 * l];
    mask[l + 4..l + t].fill(0.0);
    mask[l + t + 2] = 0.0;
    mask[2 * l + 2..2 * l + t].fill(0.0);
    mask[2 * l + t..3 * l].fill(0.0);
    x.attention_mask = Some(Tensor::from_vec(mask, (3, l), &Device::Cpu).unwrap());
    let _no_grad = oscar::nn::NoGrad::new();
    let full = m.model.backbone().forward(&x, &Ctx::eval()).unwrap().pooled;
    let packed = m.model.backbone().forward_pooled(&x, &Ctx::eval()).unwrap();
    let composite = oscar::nn::fused::composite_only(|| {
        m.model.backbone().forward_pooled(&x, &Ctx::eval()).unwrap()
    });
    assert!(diff(&full, &packed) < 1e-5, "{}", diff(&full, &packed));
    assert!(
        diff(&composite, &packed) < 1e-5,
        "{}",
        diff(&composite, &packed)
    );
    let unmasked = m
        .model
        .backbone()
        .forward_pooled(&batch(3), &Ctx::eval())
        .unwrap();
    assert!(diff(&unmasked, &packed) > 1e-4, "the padding changes [CLS]");
    // With dropout on (a training forward without a backward) the padding is kept: dropout
    // draws a mask for every position.
    let dropped = m
        .model
        .backbone()
        .forward_pooled(&x, &Ctx::train(3))
        .unwrap();
    assert_eq!(dropped.dims(), packed.dims());
}

/// What a GPU runs — candle's composite ops in place of the fused CPU kernels — gives the same
/// pre-training losses and gradients as the fused path (checked on the CPU, where both run), and
/// every parameter still gets its gradient.
#[test]
fn the_composite_path_other_devices_run_equals_the_fused_path() {
    let m = fresh::<BertImgForPreTraining>(&cfg());
    let x = batch(2);
    let mut labels = vec![-1i64; 2 * 10];
    labels[1] = 5;
    labels[12] = 17;
    let run = || {
        let out = m.model.forward(&x, &Ctx::train(7)).unwrap();
        let (loss, _, _) = m.model.loss(&out, &labels, &[0, 1]).unwrap();
        let grads = loss.backward().unwrap();
        let g: Vec<Vec<f32>> = m
            .params
            .entries
            .iter()
            .map(|(_, v)| {
                grads
                    .get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        (loss.to_scalar::<f32>().unwrap(), g)
    };
    let (fused_loss, fused_grads) = run();
    let (comp_loss, comp_grads) = oscar::nn::fused::composite_only(run);
    assert!(
        (fused_loss - comp_loss).abs() <= 1e-5 * fused_loss.abs(),
        "{fused_loss} vs {comp_loss}"
    );
    for ((name, _), (a, b)) in m
        .params
        .entries
        .iter()
        .zip(fused_grads.iter().zip(&comp_grads))
    {
        let scale = a.iter().fold(0f32, |s, v| s.max(v.abs())).max(1e-12);
        let diff = a.iter().zip(b).fold(0f32, |s, (p, q)| s.max((p - q).abs()));
        // Keys' biases get only rounding noise (softmax ignores a per-row constant): absolute floor.
        assert!(
            diff <= 1e-4 * scale + 1e-8,
            "{name}: gradients differ by {diff} (scale {scale})"
        );
    }
    let out = oscar::nn::fused::composite_only(|| m.model.forward(&x, &Ctx::train(7)).unwrap());
    let (loss, _, _) = m.model.loss(&out, &labels, &[0, 1]).unwrap();
    assert_eq!(without_gradient(&m.params, &loss), Vec::<String>::new());
}
