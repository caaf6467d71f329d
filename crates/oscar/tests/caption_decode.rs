//! Caption decoding: the key/value-cached decoder gives the same tokens and scores as
//! re-encoding the prefix every step (the reference's way) for greedy and beam search; the
//! one-pass sequence scorer (SCST's loss) agrees with the step-wise log-probabilities;
//! constrained beam search satisfies its constraints; and the task trains and captions a world.

use oscar::checkpoint::build_fresh;
use oscar::model::BertForImageCaptioning;
use oscar::nn::Ctx;
use oscar::tasks::caption::cbs::{constrained_beam_search, Constraint};
use oscar::tasks::caption::decode::{
    beam_search, greedy, sequence_logprobs, DecodeSettings, Decoder, Generated, ImageContext,
};
use oscar::tokenizer::SpecialIds;
use oscar::OscarConfig;
use rand::{Rng, SeedableRng};

const SPECIAL: SpecialIds = SpecialIds {
    pad: 0,
    unk: 1,
    cls: 2,
    sep: 3,
    mask: 4,
};
const DIM: usize = 6;

fn model(seed: u64) -> BertForImageCaptioning {
    let mut c = OscarConfig::tiny(16, DIM);
    // Large weights make the next-token distributions peaked, so near-ties (where two correct
    // implementations may legitimately differ in the last bit) are unlikely.
    c.initializer_range = 0.3;
    c.max_position_embeddings = 64;
    build_fresh::<BertForImageCaptioning>(&c, seed, &candle_core::Device::Cpu)
        .unwrap()
        .model
}

fn contexts(n: usize, seed: u64) -> Vec<ImageContext> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let tags: Vec<u32> = (0..i % 3)
                .map(|_| rng.random_range(5..16))
                .chain(if i % 3 > 0 { Some(SPECIAL.sep) } else { None })
                .collect();
            let r = 1 + i % 4;
            ImageContext {
                tag_ids: tags,
                regions: (0..r * DIM).map(|_| rng.random_range(0.0..2.0)).collect(),
                num_regions: r,
            }
        })
        .collect()
}

fn assert_same(a: &[Generated], b: &[Generated]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.tokens, y.tokens);
        assert_eq!(x.ended, y.ended);
        assert!(
            (x.score - y.score).abs() < 1e-4 * (1.0 + x.score.abs()),
            "{} vs {}",
            x.score,
            y.score
        );
    }
}

#[test]
fn cached_and_reencoding_decoders_agree_greedy_and_beam() {
    let m = model(3);
    let dec = Decoder {
        model: &m,
        special: SPECIAL,
        tag_start: 12,
    };
    let ctxs = contexts(5, 1);
    let rows: Vec<usize> = (0..5).collect();
    let g1 = greedy(&mut dec.cached(&ctxs, &rows).unwrap(), 5, SPECIAL, 10).unwrap();
    let g2 = greedy(&mut dec.reencode(&ctxs, &rows).unwrap(), 5, SPECIAL, 10).unwrap();
    assert_same(&g1, &g2);
    assert!(
        g1.iter().any(|g| g.tokens.len() > 1),
        "the test must decode more than one step"
    );

    let st = DecodeSettings {
        max_gen_length: 10,
        num_beams: 3,
        ..DecodeSettings::default()
    };
    let beam_rows: Vec<usize> = (0..5).flat_map(|i| [i; 3]).collect();
    let b1 = beam_search(&mut dec.cached(&ctxs, &beam_rows).unwrap(), 5, SPECIAL, &st).unwrap();
    let b2 = beam_search(
        &mut dec.reencode(&ctxs, &beam_rows).unwrap(),
        5,
        SPECIAL,
        &st,
    )
    .unwrap();
    assert_same(&b1, &b2);
    // A beam of 3 finds a hypothesis at least as good (by length-normalised score) as greedy's.
    for (b, g) in b1.iter().zip(&g1) {
        let gn = g.logprob / ((g.tokens.len() + 1) as f64);
        assert!(b.score >= gn - 1e-6, "beam {} < greedy {gn}", b.score);
    }
}

#[test]
fn one_pass_sequence_scores_equal_the_step_wise_log_probabilities() {
    let m = model(5);
    let dec = Decoder {
        model: &m,
        special: SPECIAL,
        tag_start: 12,
    };
    let ctxs = contexts(4, 2);
    let rows: Vec<usize> = (0..4).collect();
    let g = greedy(&mut dec.cached(&ctxs, &rows).unwrap(), 4, SPECIAL, 9).unwrap();
    let tokens: Vec<Vec<u32>> = g.iter().map(|x| x.with_end(SPECIAL.sep)).collect();
    let avg: Vec<f32> = sequence_logprobs(&dec, &ctxs, &tokens, &Ctx::eval())
        .unwrap()
        .to_vec1()
        .unwrap();
    for ((a, x), t) in avg.iter().zip(&g).zip(&tokens) {
        let want = x.logprob / t.len() as f64;
        assert!((*a as f64 - want).abs() < 1e-4, "{a} vs {want}");
    }
}

#[test]
fn constrained_beam_search_satisfies_the_constraints() {
    let m = model(7);
    let dec = Decoder {
        model: &m,
        special: SPECIAL,
        tag_start: 12,
    };
    let ctx = &contexts(2, 4)[1];
    let st = DecodeSettings {
        max_gen_length: 10,
        num_beams: 2,
        ..DecodeSettings::default()
    };
    // Two single-piece words and a two-piece one, none of them what greedy says first.
    let cs = vec![
        Constraint {
            word: "a".into(),
            forms: vec![vec![9]],
        },
        Constraint {
            word: "b".into(),
            forms: vec![vec![11], vec![12]],
        },
        Constraint {
            word: "c".into(),
            forms: vec![vec![13, 14]],
        },
    ];
    let r = constrained_beam_search(&dec, ctx, &cs, &st, 2).unwrap();
    assert!(r.satisfied.iter().filter(|s| **s).count() >= 2, "{r:?}");
    let t = &r.caption.tokens;
    for (c, ok) in cs.iter().zip(&r.satisfied) {
        let present = c
            .forms
            .iter()
            .any(|f| t.windows(f.len()).any(|w| w == f.as_slice()));
        assert_eq!(
            present, *ok,
            "constraint {} reported {ok} for {t:?}",
            c.word
        );
    }
}

#[test]
fn captioning_trains_and_captions_a_small_world() {
    use oscar::tasks::caption::{train, CaptionConfig, CaptionSet, Captioner, Mode};
    use oscar::tasks::finetune::Optim;
    let d = tempfile::tempdir().unwrap();
    let wc = oscar_world::WorldConfig {
        images: 60,
        seed: 4,
        feature_dim: 8,
        ..Default::default()
    };
    oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), d.path(), 0).unwrap();
    let tok = oscar::tokenizer::BertTokenizer::from_vocab(&d.path().join("vocab.txt")).unwrap();
    let p = d.path();
    let set = CaptionSet::open(
        &p.join("captions/train_caption.json"),
        &p.join("features/features.tsv"),
        Some(&p.join("labels/predictions.tsv")),
        14,
    )
    .unwrap();
    let cfg = CaptionConfig {
        optim: Optim {
            steps: 25,
            batch_size: 8,
            ..Optim::default()
        },
        decode: DecodeSettings {
            max_gen_length: 12,
            num_beams: 2,
            ..DecodeSettings::default()
        },
        ..CaptionConfig::default()
    };
    let mut losses = vec![];
    let cap = train(
        &set,
        &tok,
        None,
        &OscarConfig::tiny(tok.vocab_size(), 14),
        &cfg,
        &Default::default(),
        |_, l, _| losses.push(l),
    )
    .unwrap();
    assert_eq!(losses.len(), 25);
    let first: f64 = losses[..5].iter().sum();
    let last: f64 = losses[20..].iter().sum();
    assert!(last < first, "the loss falls: {losses:?}");
    cap.save(&p.join("m"), Some(&p.join("vocab.txt"))).unwrap();
    let back = Captioner::load(&p.join("m"), &candle_core::Device::Cpu).unwrap();
    let test = CaptionSet::open(
        &p.join("captions/test_caption.json"),
        &p.join("features/features.tsv"),
        Some(&p.join("labels/predictions.tsv")),
        14,
    )
    .unwrap();
    let ctxs = back.contexts(&tok, &test).unwrap();
    let a = cap
        .generate(&tok, &ctxs, Mode::Beam, &cfg.decode, 4, true, 0, |_| {})
        .unwrap();
    let b = back
        .generate(&tok, &ctxs, Mode::Beam, &cfg.decode, 3, false, 0, |_| {})
        .unwrap();
    assert_same(&a, &b);
    assert_eq!(a.len(), test.images.len());
}

/// What the training layout lets a masked caption token see: the prefix, the tags and the
/// regions change its logits; the caption after it does not (the seq2seq mask of
/// run_captioning.py), and neither do the padding slots between caption and tags.
#[test]
fn a_masked_caption_token_sees_prefix_tags_and_regions_but_not_the_future() {
    use oscar::tasks::caption::collate;
    let m = model(5);
    // Hand-made example: [CLS] 5 6 [MASK] 8 9 [SEP] pad… | 10 11 [SEP] | 2 regions.
    let base = {
        let mut ids = vec![SPECIAL.cls, 5, 6, SPECIAL.mask, 8, 9, SPECIAL.sep];
        ids.resize(10, SPECIAL.pad);
        ids.extend([10, 11, SPECIAL.sep]);
        ids.resize(16, SPECIAL.pad);
        ids
    };
    let logits = |ids: &[u32], regions: &[f32]| -> Vec<f32> {
        let types: Vec<u32> = (0..16).map(|i| u32::from((10..13).contains(&i))).collect();
        let l = 16 + 4;
        let mut mask = vec![0f32; l * l];
        let (cap, tags, reg) = (0..7, 10..13, 16..18);
        for r in 0..l {
            for c in 0..l {
                let on = (cap.contains(&r) && c <= r)
                    || (cap.contains(&r) && (tags.contains(&c) || reg.contains(&c)))
                    || ((tags.contains(&r) || reg.contains(&r))
                        && (tags.contains(&c) || reg.contains(&c)));
                mask[r * l + c] = f32::from(u8::from(on));
            }
        }
        // The example's own positions: 16 tokens, then its 2 regions (the first 18 of the
        // padded layout).
        let mut block = oscar::data::attention_mask::BlockMask::square(18);
        for r in 0..18 {
            let cols: Vec<usize> = (0..18).filter(|c| mask[r * l + c] > 0.0).collect();
            block.allow([r], &cols);
        }
        let mut pos = vec![0u32; 16];
        pos[3] = 1;
        let e = oscar::data::caption::CaptionExample {
            encoded: oscar::data::tensorize::Encoded {
                input_ids: ids.to_vec(),
                token_type_ids: types,
                position_ids: None,
                text_a_len: 5,
                tags_len: 2,
                regions: regions.to_vec(),
                num_regions: 2,
                mask: Some(block),
            },
            masked_pos: pos,
            masked_ids: vec![7],
            seq_a_len: 7,
        };
        let (x, p, _) = collate(&[e], 16, DIM, &candle_core::Device::Cpu).unwrap();
        m.forward(&x, &p, &Ctx::eval())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let regions: Vec<f32> = (0..2 * DIM)
        .map(|i| (i as f32 * 0.37).sin().abs())
        .collect();
    let reference = logits(&base, &regions);
    let differs = |other: Vec<f32>| {
        reference
            .iter()
            .zip(&other)
            .any(|(a, b)| (a - b).abs() > 1e-5)
    };
    let with = |pos: usize, id: u32| {
        let mut ids = base.clone();
        ids[pos] = id;
        ids
    };
    assert!(
        differs(logits(&with(1, 12), &regions)),
        "the prefix is seen"
    );
    assert!(
        differs(logits(&with(10, 12), &regions)),
        "the tags are seen"
    );
    let mut r2 = regions.clone();
    r2[0] += 1.0;
    assert!(differs(logits(&base, &r2)), "the regions are seen");
    assert!(
        !differs(logits(&with(4, 12), &regions)),
        "the next caption token is not seen"
    );
    assert!(
        !differs(logits(&with(8, 12), &regions)),
        "the padding slots are not seen"
    );
}
