//! Three AdamW + WarmupLinear + clip_grad_norm_ steps equal torch's
//! (tools/reference/make_optim_goldens.py): the first step within 1e-6, the next two within 1e-5.

use candle_core::{DType, Device};
use oscar::checkpoint::{load_model, read_checkpoint, Fresh};
use oscar::model::{BertImgForPreTraining, Inputs};
use oscar::nn::Ctx;
use oscar::train::optim::{AdamW, AdamWConfig};
use oscar::train::schedule::Schedule;
use std::path::PathBuf;

#[test]
fn adamw_schedule_and_clipping_match_torch_for_three_steps() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/pretrain");
    let inp = candle_core::safetensors::load(dir.join("inputs.safetensors"), &Device::Cpu).unwrap();
    let gold = candle_core::safetensors::load(dir.join("optim_goldens.safetensors"), &Device::Cpu)
        .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("optim_goldens.json")).unwrap())
            .unwrap();
    let m = load_model::<BertImgForPreTraining>(
        read_checkpoint(&dir.join("pytorch_model.bin")).unwrap(),
        None,
        Fresh::Nothing,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let x = Inputs {
        input_ids: inp["input_ids"].to_dtype(DType::U32).unwrap(),
        token_type_ids: Some(inp["token_type_ids"].to_dtype(DType::U32).unwrap()),
        position_ids: None,
        img_feats: Some(inp["img_feats"].clone()),
        attention_mask: Some(inp["attention_mask"].clone()),
    };
    let mlm: Vec<i64> = inp["mlm_labels"].flatten_all().unwrap().to_vec1().unwrap();
    let con: Vec<i64> = inp["contrastive_labels"].to_vec1().unwrap();
    let mut opt = AdamW::new(
        &m.params,
        AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
        &[],
    );
    for k in 1..=3u64 {
        let out = m.model.forward(&x, &Ctx::eval()).unwrap();
        let (loss, _, _) = m.model.loss(&out, &mlm, &con).unwrap();
        let grads = loss.backward().unwrap();
        let lr = Schedule::WarmupLinear.lr_for_update(1e-3, k, 2, 10);
        assert!((lr - meta["lrs"][k as usize - 1].as_f64().unwrap()).abs() < 1e-15);
        let norm = opt.step(&m.params, &grads, lr, 1.0).unwrap();
        let want = meta["grad_norms"][k as usize - 1].as_f64().unwrap();
        assert!(
            (norm - want).abs() / want < 1e-5,
            "step {k}: norm {norm} vs {want}"
        );
        // Where a gradient is at float noise (|g| < 1e-5; e.g. attention key biases, whose true
        // gradient is exactly zero because softmax ignores a per-row constant), Adam's normalised
        // step turns noise into ±lr in any implementation, torch's included: there only the
        // bound |Δ| ≤ 2·lr per step is checked. Everywhere else the parameters must agree to 1e-6.
        let mut worst = 0f32;
        let mut noisy = 0usize;
        for (name, var) in &m.params.entries {
            let g = &gold[&format!("step{k}.{name}")];
            let diff: Vec<f32> = var
                .as_tensor()
                .sub(g)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let grad: Vec<f32> = grads
                .get(var.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (d, gr) in diff.iter().zip(&grad) {
                if *gr < 1e-5 && *d > 1e-6 {
                    noisy += 1;
                    if !name.contains("attention.self.key.bias") {
                        eprintln!("noise-level gradient outside the key biases: {name} |g| {gr:e}, parameters differ by {d:e}");
                    }
                    assert!(
                        *d <= 2.0 * 1e-3 * k as f32,
                        "{name}: noise-level gradient moved {d}"
                    );
                } else {
                    worst = worst.max(*d);
                }
            }
        }
        eprintln!("step {k}: {noisy} noise-level elements differ by more than 1e-6; the rest by at most {worst:e}");
        // Besides the key biases, a few weights have true gradients of ~1e-6, where summation
        // order alone (our fused kernels vs torch's) moves Adam's first normalised step: allow
        // those up to 0.1 % of the parameters.
        let key_biases: usize = m
            .params
            .entries
            .iter()
            .filter(|(n, _)| n.contains("attention.self.key.bias"))
            .map(|(_, v)| v.elem_count())
            .sum();
        let total: usize = m.params.entries.iter().map(|(_, v)| v.elem_count()).sum();
        assert!(noisy <= key_biases + total / 1000, "{noisy} noise-level elements diverge: more than the {key_biases} attention key biases + 0.1 % of {total}");
        // One step agrees to 1e-6; later steps inherit the (harmless, softmax-invariant) key-bias
        // noise through the next forward pass, so they are held to 1e-5.
        let tol = if k == 1 { 1e-6 } else { 1e-5 };
        assert!(worst < tol, "step {k}: parameters differ by {worst:e}");
    }
}
