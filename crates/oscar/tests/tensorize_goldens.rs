//! Tensorization equals a Python implementation of the reference's rules
//! (tools/reference/make_tensorize_goldens.py), random draws replayed from the Python stream.

use candle_core::Device;
use oscar::data::caption::CaptionLayout;
use oscar::data::masking::{mask_words_and_tags, MaskIds, Replay};
use oscar::data::tensorize::{collate, collate_dynamic, Layout, Truncation};
use oscar::tokenizer::BertTokenizer;
use serde_json::Value;
use std::path::PathBuf;

fn fx(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn replay(v: &Value) -> Replay {
    Replay {
        values: v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect(),
        pos: 0,
    }
}

#[test]
fn pretraining_and_captioning_inputs_equal_the_reference_rules() {
    let tok = BertTokenizer::from_vocab(&fx("tokenizer/bert-base-uncased-vocab.txt")).unwrap();
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(fx("tensorize_goldens.json")).unwrap())
            .unwrap();
    let ids = MaskIds {
        mask: tok.special.mask,
        unk: tok.special.unk,
        vocab_size: tok.vocab_size(),
    };
    let dim = 4;
    let (mut n_pre, mut n_cap, mut n_masked) = (0, 0, 0);
    for (ci, c) in g["cases"].as_array().unwrap().iter().enumerate() {
        let n_reg = c["num_regions"].as_u64().unwrap() as usize;
        let regions = vec![0.5f32; n_reg * dim];
        let mut rng = replay(&c["draws"]);
        if c["kind"] == "pretrain" {
            let layout = Layout {
                max_seq_length: c["max_seq_length"].as_u64().unwrap() as usize,
                max_img_seq_length: c["max_img_seq_length"].as_u64().unwrap() as usize,
                truncation: if c["truncation"] == "pair" {
                    Truncation::Pair
                } else {
                    Truncation::TextFirst
                },
            };
            let mut e = layout
                .encode(
                    &tok,
                    c["text_a"].as_str().unwrap(),
                    c["text_b"].as_str(),
                    &regions,
                    dim,
                )
                .unwrap();
            let labels = mask_words_and_tags(
                &mut e,
                ids,
                layout.max_seq_length,
                layout.max_img_seq_length,
                &mut rng,
            );
            let x = collate(
                &[e],
                layout.max_seq_length,
                layout.max_img_seq_length,
                dim,
                &Device::Cpu,
            )
            .unwrap();
            assert_eq!(
                x.input_ids.get(0).unwrap().to_vec1::<u32>().unwrap(),
                u32s(&c["input_ids"]),
                "case {ci} ids"
            );
            assert_eq!(
                x.token_type_ids
                    .unwrap()
                    .get(0)
                    .unwrap()
                    .to_vec1::<u32>()
                    .unwrap(),
                u32s(&c["token_type_ids"]),
                "case {ci} types"
            );
            let m: Vec<u32> = x
                .attention_mask
                .unwrap()
                .get(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| *v as u32)
                .collect();
            assert_eq!(m, u32s(&c["attention_mask"]), "case {ci} mask");
            let want: Vec<i64> = c["lm_labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            assert_eq!(labels, want, "case {ci} labels");
            n_masked += labels.iter().filter(|l| **l >= 0).count();
            n_pre += 1;
        } else {
            let layout = CaptionLayout {
                max_seq_a_len: c["max_seq_a_len"].as_u64().unwrap() as usize,
                max_seq_len: c["max_seq_len"].as_u64().unwrap() as usize,
                max_img_seq_len: c["max_img_seq_len"].as_u64().unwrap() as usize,
                max_masked_tokens: 3,
                mask_prob: 0.15,
            };
            let ex = layout
                .tensorize(
                    &tok,
                    c["caption"].as_str(),
                    c["tags"].as_str(),
                    &regions,
                    dim,
                    Some(&mut rng),
                )
                .unwrap();
            let e = &ex.encoded;
            assert_eq!(e.input_ids, u32s(&c["input_ids"]), "case {ci} ids");
            assert_eq!(
                e.token_type_ids,
                u32s(&c["token_type_ids"]),
                "case {ci} types"
            );
            // The reference pads regions to max_img_seq_len: the collator, asked for that
            // padding, must give its (T+R)² mask exactly.
            let batch = oscar::data::tensorize::collate(
                std::slice::from_ref(e),
                layout.max_seq_len,
                layout.max_img_seq_len,
                dim,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            let mask: Vec<f32> = batch
                .attention_mask
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(
                mask.iter().map(|v| *v as u32).collect::<Vec<_>>(),
                u32s(&c["attention_mask"]),
                "case {ci} mask"
            );
            assert_eq!(
                ex.masked_pos,
                u32s(&c["masked_pos"]),
                "case {ci} masked_pos"
            );
            assert_eq!(
                ex.masked_ids,
                u32s(&c["masked_ids"]),
                "case {ci} masked_ids"
            );
            assert_eq!(ex.seq_a_len, c["seq_a_len"].as_u64().unwrap() as usize);
            n_cap += 1;
        }
        assert_eq!(
            rng.pos,
            rng.values.len(),
            "case {ci}: every recorded draw is consumed"
        );
    }
    assert_eq!((n_pre, n_cap), (30, 20));
    assert!(
        n_masked > 10,
        "the masking is exercised ({n_masked} labels)"
    );
}

#[test]
fn dynamic_padding_gives_the_same_outputs_at_real_positions() {
    use oscar::checkpoint::{build_fresh, Backbone};
    use oscar::nn::Ctx;
    let tok = BertTokenizer::from_vocab(&fx("tokenizer/bert-base-uncased-vocab.txt")).unwrap();
    let mut cfg = oscar::OscarConfig::tiny(tok.vocab_size(), 4);
    cfg.use_img_layernorm = Some(true);
    let m = build_fresh::<Backbone>(&cfg, 5, &candle_core::Device::Cpu).unwrap();
    let layout = Layout {
        max_seq_length: 40,
        max_img_seq_length: 10,
        truncation: Truncation::Pair,
    };
    let items = vec![
        layout
            .encode(&tok, "a man riding a wave", Some("man wave"), &[0.3; 12], 4)
            .unwrap(),
        layout
            .encode(&tok, "two dogs", Some("dog"), &[0.7; 20], 4)
            .unwrap(),
    ];
    let fixed = collate(&items, 40, 10, 4, &Device::Cpu).unwrap();
    let dynamic = collate_dynamic(&items, 4, &Device::Cpu).unwrap();
    assert_eq!(dynamic.input_ids.dims(), [2, 10]);
    let a = m.model.0.forward(&fixed, &Ctx::eval()).unwrap();
    let b = m.model.0.forward(&dynamic, &Ctx::eval()).unwrap();
    for (i, e) in items.iter().enumerate() {
        let t = e.input_ids.len();
        let fa = a.sequence.get(i).unwrap();
        let fb = b.sequence.get(i).unwrap();
        let text_a = fa.narrow(0, 0, t).unwrap();
        let text_b = fb.narrow(0, 0, t).unwrap();
        let reg_a = fa.narrow(0, 40, e.num_regions).unwrap();
        let reg_b = fb.narrow(0, 10, e.num_regions).unwrap();
        for (x, y) in [(text_a, text_b), (reg_a, reg_b)] {
            let d: f32 = x
                .sub(&y)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-5, "item {i}: {d}");
        }
    }
}
