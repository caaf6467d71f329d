//! Retrieval fine-tuning and evaluation on a small world: the pieces run end to end, the full
//! protocol scores every pair, the two-stage search scores only its candidates, and a model
//! saved and loaded back scores the same.

use oscar::tasks::finetune::Optim;
use oscar::tasks::first_stage::FirstStageKind;
use oscar::tasks::retrieval::{
    evaluate, tag_overlap, train, world_paths, EvalPlan, RetrievalSet, RetrievalTrainConfig,
    Retriever,
};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;

#[test]
fn train_evaluate_two_stage_and_reload() {
    let d = tempfile::tempdir().unwrap();
    let wc = oscar_world::WorldConfig {
        images: 80,
        seed: 9,
        feature_dim: 8,
        ..Default::default()
    };
    oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), d.path(), 0).unwrap();
    let tok = BertTokenizer::from_vocab(&d.path().join("vocab.txt")).unwrap();
    let (c, f, l) = world_paths(d.path(), "train");
    let set = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    assert_eq!(set.captions.len(), 5 * set.images.len());
    let mut cfg_m = OscarConfig::tiny(tok.vocab_size(), 14);
    cfg_m.use_img_layernorm = Some(true);
    let cfg = RetrievalTrainConfig {
        optim: Optim {
            steps: 4,
            batch_size: 4,
            ..Optim::default()
        },
        ..RetrievalTrainConfig::default()
    };
    let mut losses = Vec::new();
    let r = train(
        &set,
        &tok,
        None,
        &cfg_m,
        &cfg,
        &Default::default(),
        |_, loss, acc| {
            assert!((0.0..=1.0).contains(&acc));
            losses.push(loss)
        },
    )
    .unwrap();
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|l| l.is_finite()));

    let (c, f, l) = world_paths(d.path(), "test");
    let mut test = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    test.images.truncate(6);
    test.captions.retain(|(i, _)| *i < 6);
    let plan = EvalPlan {
        batch: 7,
        full: true,
        two_stage: Some((2, FirstStageKind::Tags)),
        partial: None,
    };
    let e = evaluate(&r, &tok, &test, &cfg, &plan, |_, _| {}).unwrap();
    let full = e.full.as_ref().unwrap();
    assert_eq!(full.forwards, 6 * 30);
    let t = e.two_stage.as_ref().unwrap();
    assert_eq!((t.first_stage, t.single_passes), ("tags", 0));
    assert!(t.forwards < full.forwards && t.forwards >= 2 * 30);
    for v in full
        .recall
        .i2t
        .iter()
        .chain(&full.recall.t2i)
        .chain(&t.recall.i2t)
    {
        assert!((0.0..=100.0).contains(v));
    }
    // The first stage counts distinct tag words in the caption, plural or not; a caption of the
    // image names some of its tags.
    assert_eq!(tag_overlap("dog box dog cat", "Two dogs near a Box."), 2.0);
    let (img, _) = test.captions[0];
    let tags = &test.tags[&test.images[img]];
    assert!(test
        .captions
        .iter()
        .filter(|(i, _)| *i == img)
        .any(|(_, c)| tag_overlap(tags, c) > 0.0));

    // Saved and loaded back, the model scores the same pairs identically.
    let out = d.path().join("model");
    r.save(&out, Some(&d.path().join("vocab.txt"))).unwrap();
    let back = Retriever::load(&out, &candle_core::Device::Cpu).unwrap();
    let pairs = [(0usize, 0usize), (1, 3), (2, 7)];
    let a = r.score_pairs(&tok, &test, &pairs, &cfg, 2, |_| {}).unwrap();
    let b = back
        .score_pairs(&tok, &test, &pairs, &cfg, 3, |_| {})
        .unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6 && (0.0..=1.0).contains(x));
    }
    // Batches are formed by length, but scores come back in the order of the pairs: each equals
    // the pair scored alone.
    let many: Vec<(usize, usize)> = (0..test.images.len().min(6))
        .flat_map(|i| (0..test.captions.len().min(9)).map(move |c| (i, c)))
        .collect();
    let together = r.score_pairs(&tok, &test, &many, &cfg, 7, |_| {}).unwrap();
    let mut distinct = together.clone();
    distinct.sort_by(f32::total_cmp);
    distinct.dedup_by(|x, y| (*x - *y).abs() < 1e-6);
    assert!(distinct.len() > 3, "the pairs score differently");
    for (p, t) in many.iter().zip(&together) {
        let alone = r
            .score_pairs(&tok, &test, std::slice::from_ref(p), &cfg, 1, |_| {})
            .unwrap()[0];
        assert!(
            (alone - t).abs() < 1e-5,
            "pair {p:?}: {t} in a batch, {alone} alone"
        );
    }
}

#[test]
fn scoring_resumes_from_a_partial_file_and_masks_change_the_scores() {
    use oscar::data::tensorize::collate_dynamic;
    use oscar::tasks::retrieval::{score_all, with_att_mask, AttMask};
    let d = tempfile::tempdir().unwrap();
    let wc = oscar_world::WorldConfig {
        images: 40,
        seed: 2,
        feature_dim: 8,
        ..Default::default()
    };
    oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), d.path(), 0).unwrap();
    let tok = BertTokenizer::from_vocab(&d.path().join("vocab.txt")).unwrap();
    let (c, f, l) = world_paths(d.path(), "train");
    let mut set = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    set.images.truncate(4);
    set.captions.retain(|(i, _)| *i < 4);
    let mut m = OscarConfig::tiny(tok.vocab_size(), 14);
    m.use_img_layernorm = Some(true);
    let cfg = RetrievalTrainConfig {
        optim: Optim {
            steps: 1,
            batch_size: 2,
            ..Optim::default()
        },
        ..RetrievalTrainConfig::default()
    };
    let r = train(
        &set,
        &tok,
        None,
        &m,
        &cfg,
        &Default::default(),
        |_, _, _| {},
    )
    .unwrap();
    let full = score_all(&r, &tok, &set, &cfg, 5, None, 1, |_, _| {}).unwrap();
    assert_eq!(full.len(), 4 * 20);
    // Interrupt after the first save: keep only a prefix in the partial file, then resume.
    let p = d.path().join("scores.partial.json");
    let _ = score_all(&r, &tok, &set, &cfg, 5, Some(&p), 1, |_, _| {}).unwrap();
    let mut part: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    part["scores"] = serde_json::Value::Array(part["scores"].as_array().unwrap()[..35].to_vec());
    std::fs::write(&p, part.to_string()).unwrap();
    let mut calls = 0;
    let resumed = score_all(&r, &tok, &set, &cfg, 5, Some(&p), 1, |done, _| {
        calls += 1;
        assert!(done > 35);
    })
    .unwrap();
    assert_eq!(calls, 9, "45 remaining pairs in chunks of 5");
    for (a, b) in full.iter().zip(&resumed) {
        assert!((a - b).abs() < 1e-6);
    }
    // A partial file from another evaluation is refused.
    set.images.truncate(3);
    set.captions.retain(|(i, _)| *i < 3);
    assert!(score_all(&r, &tok, &set, &cfg, 5, Some(&p), 1, |_, _| {})
        .unwrap_err()
        .to_string()
        .contains("delete it"));

    // Block masks: CL lets the caption see the tags but not the regions.
    let layout = oscar::data::tensorize::Layout {
        max_seq_length: 20,
        max_img_seq_length: 4,
        truncation: oscar::data::tensorize::Truncation::TextFirst,
    };
    let e = layout
        .encode(&tok, "a dog", Some("dog"), &[0.5; 28], 14)
        .unwrap();
    let mask_of = |kind| -> candle_core::Tensor {
        let e = with_att_mask(e.clone(), kind);
        collate_dynamic(&[e], 14, &candle_core::Device::Cpu)
            .unwrap()
            .attention_mask
            .unwrap()
    };
    assert_eq!(mask_of(AttMask::CLR).rank(), 2, "CLR: the 1-D padding mask");
    let cl: Vec<f32> = mask_of(AttMask::CL)
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let l = e.input_ids.len() + 2; // [CLS] a dog [SEP] dog [SEP] + 2 regions
    let at = |i: usize, j: usize| cl[i * l + j];
    assert_eq!(
        (at(0, 1), at(0, 4), at(0, 6), at(6, 7), at(6, 0), at(4, 1)),
        (1.0, 1.0, 0.0, 1.0, 0.0, 1.0)
    );
    let lr: Vec<f32> = mask_of(AttMask::LR)
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!((lr[4 * l + 6], lr[6], lr[6 * l + 4]), (1.0, 0.0, 1.0));
    assert_eq!("cr".parse::<AttMask>().unwrap(), AttMask::CR);
}
