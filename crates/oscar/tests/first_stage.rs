//! The learned first stage on a small world: fitted from a retrieval model's single-modality
//! passes it ranks held-out pairs far above chance; a two-stage search whose shortlist covers
//! every pair equals the full protocol; with a short list it scores only the pairs the
//! embeddings put first; and the inference API shortlists by the same embeddings.

use candle_core::Device;
use oscar::infer::{ImageInput, Matching, Shortlist};
use oscar::tasks::finetune::Optim;
use oscar::tasks::first_stage::{fit, FirstStage, FirstStageConfig, FirstStageKind};
use oscar::tasks::retrieval::{
    evaluate, shortlist_pairs, train, world_paths, EvalPlan, RetrievalSet, RetrievalTrainConfig,
};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;

#[test]
fn fitted_first_stage_ranks_above_chance_and_shortlists_what_it_ranks_first() {
    let d = tempfile::tempdir().unwrap();
    let wc = oscar_world::WorldConfig {
        images: 240,
        seed: 4,
        feature_dim: 8,
        ..Default::default()
    };
    oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), d.path(), 0).unwrap();
    let vocab = d.path().join("vocab.txt");
    let tok = BertTokenizer::from_vocab(&vocab).unwrap();
    let (c, f, l) = world_paths(d.path(), "train");
    let set = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    let mut cfg_m = OscarConfig::tiny(tok.vocab_size(), 14);
    cfg_m.use_img_layernorm = Some(true);
    let cfg = RetrievalTrainConfig {
        optim: Optim {
            steps: 3,
            batch_size: 4,
            ..Optim::default()
        },
        ..RetrievalTrainConfig::default()
    };
    let r = train(
        &set,
        &tok,
        None,
        &cfg_m,
        &cfg,
        &Default::default(),
        |_, _, _| {},
    )
    .unwrap();
    let (c, f, l) = world_paths(d.path(), "test");
    let mut test = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    test.images.truncate(10);
    test.captions.retain(|(i, _)| *i < 10);
    let fcfg = FirstStageConfig {
        steps: 300,
        batch_size: 32,
        ..FirstStageConfig::default()
    };
    let mut feature_calls = 0;
    let mut losses = Vec::new();
    let fs = fit(
        &r,
        &tok,
        &cfg,
        &set,
        Some(("test", &test)),
        &fcfg,
        |p| match p {
            oscar::tasks::first_stage::FitProgress::Features(..) => feature_calls += 1,
            oscar::tasks::first_stage::FitProgress::Step(_, l, _) => losses.push(l),
        },
    )
    .unwrap();
    assert!(feature_calls > 0 && losses.len() == 300);
    let rep = fs.saved.report.clone().unwrap();
    assert_eq!(rep.single_passes, set.images.len() + set.captions.len());
    // Words of the caption against the image's tags and regions: the tiny model's single passes
    // carry them, and the projections learn to line them up. Chance R@5 over 10 images is 50 %
    // for text → image; over 50 captions with 5 right ones, about 43 % for image → text.
    let rec = rep.held_out_recall.unwrap();
    let (first_loss, last_loss) = (
        losses[..20].iter().sum::<f64>(),
        losses[280..].iter().sum::<f64>(),
    );
    assert!(
        last_loss < 0.7 * first_loss,
        "the loss falls: {first_loss} → {last_loss}"
    );
    assert!(rec["t2i_r5"] > 80.0 && rec["i2t_r5"] > 80.0, "{rec:?}");

    // Saved next to the model and loaded back, the similarities are the same.
    let dir = d.path().join("model");
    r.save_with_settings(&dir, Some(&vocab), &cfg).unwrap();
    fs.save(&dir).unwrap();
    let back = FirstStage::load(&dir, &Device::Cpu).unwrap();
    let sims = fs.similarities(&r, &tok, &test, &cfg).unwrap();
    assert_eq!(sims, back.similarities(&r, &tok, &test, &cfg).unwrap());

    // A shortlist of every pair re-ranks everything: the full protocol's recall.
    let nc = test.captions.len();
    let plan = |k, full| EvalPlan {
        batch: 16,
        full,
        two_stage: Some((k, FirstStageKind::Learned(&fs))),
        partial: None,
    };
    let e = evaluate(&r, &tok, &test, &cfg, &plan(nc, true), |_, _| {}).unwrap();
    let (full, two) = (e.full.unwrap(), e.two_stage.unwrap());
    assert_eq!(two.forwards, full.forwards);
    assert_eq!((two.first_stage, two.single_passes), ("learned", 10 + nc));
    assert_eq!(format!("{:?}", two.recall), format!("{:?}", full.recall));
    // With k = 2, exactly the pairs the embeddings rank first are scored, and no full protocol runs.
    let e = evaluate(&r, &tok, &test, &cfg, &plan(2, false), |_, _| {}).unwrap();
    assert!(e.full.is_none());
    let two = e.two_stage.unwrap();
    assert_eq!(two.forwards, shortlist_pairs(&sims, 2).len());
    assert!(two.forwards < 4 * nc);

    // The inference API loads the first stage from the directory and shortlists by it.
    let m = Matching::load(&dir, &Device::Cpu).unwrap();
    assert!(m.has_learned_first_stage());
    let images: Vec<ImageInput> = test
        .images
        .iter()
        .map(|k| {
            let tags = test.tags[k]
                .split_whitespace()
                .map(str::to_string)
                .collect();
            ImageInput::new(test.features[k].data.clone(), tags)
        })
        .collect();
    let texts: Vec<&str> = test.captions.iter().map(|(_, c)| c.as_str()).collect();
    let api = m.similarities(&[&images[3]], &texts).unwrap();
    for (a, b) in api[0].iter().zip(&sims[3]) {
        assert!((a - b).abs() < 1e-5);
    }
    let ranked = m
        .rank_texts(&images[3], &texts, Some(Shortlist::learned(4)))
        .unwrap();
    let mut want: Vec<usize> = (0..nc).collect();
    want.sort_by(|a, b| sims[3][*b].total_cmp(&sims[3][*a]).then(a.cmp(b)));
    let mut got: Vec<usize> = ranked.iter().map(|r| r.index).collect();
    got.sort();
    want.truncate(4);
    want.sort();
    assert_eq!(got, want);
    let by_text = m
        .rank_images(texts[0], &images, Some(Shortlist::learned(3)))
        .unwrap();
    assert_eq!(by_text.len(), 3);
    // Without a fitted first stage, asking for it is an error that says how to fit one.
    std::fs::remove_file(dir.join(oscar::tasks::first_stage::WEIGHTS)).unwrap();
    std::fs::remove_file(dir.join(oscar::tasks::first_stage::SETTINGS)).unwrap();
    let m = Matching::load(&dir, &Device::Cpu).unwrap();
    let e = m
        .rank_texts(&images[0], &texts, Some(Shortlist::learned(2)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("oscar train first-stage"), "{e}");
}
