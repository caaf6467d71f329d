//! Retrieval fine-tuning and evaluation on a small world: the pieces run end to end, the full
//! protocol scores every pair, the two-stage search scores only its candidates, and a model
//! saved and loaded back scores the same.

use oscar::tasks::retrieval::{evaluate, tag_overlap, train, world_paths, RetrievalSet, RetrievalTrainConfig, Retriever};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;

#[test]
fn train_evaluate_two_stage_and_reload() {
    let d = tempfile::tempdir().unwrap();
    let wc = oscar_world::WorldConfig { images: 80, seed: 9, feature_dim: 8, ..Default::default() };
    oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), d.path(), 0).unwrap();
    let tok = BertTokenizer::from_vocab(&d.path().join("vocab.txt")).unwrap();
    let (c, f, l) = world_paths(d.path(), "train");
    let set = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    assert_eq!(set.captions.len(), 5 * set.images.len());
    let mut cfg_m = OscarConfig::tiny(tok.vocab_size(), 14);
    cfg_m.use_img_layernorm = Some(true);
    let cfg = RetrievalTrainConfig { steps: 4, batch_size: 4, ..RetrievalTrainConfig::default() };
    let mut losses = Vec::new();
    let r = train(&set, &tok, None, &cfg_m, &cfg, |_, loss, acc| {
        assert!((0.0..=1.0).contains(&acc));
        losses.push(loss)
    })
    .unwrap();
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|l| l.is_finite()));

    let (c, f, l) = world_paths(d.path(), "test");
    let mut test = RetrievalSet::open(&c, &f, &l, 14, None).unwrap();
    test.images.truncate(6);
    test.captions.retain(|(i, _)| *i < 6);
    let e = evaluate(&r, &tok, &test, &cfg, 7, Some(2), |_, _| {}).unwrap();
    assert_eq!(e.full_forwards, 6 * 30);
    let t = e.two_stage.as_ref().unwrap();
    assert!(t.forwards < e.full_forwards && t.forwards >= 2 * 30);
    for v in e.full.i2t.iter().chain(&e.full.t2i).chain(&t.recall.i2t) {
        assert!((0.0..=100.0).contains(v));
    }
    // A caption naming the image's tags overlaps with them.
    let (img, _) = test.captions[0];
    assert!(test.captions.iter().filter(|(i, _)| *i == img).any(|_| (0..test.captions.len()).any(|c| tag_overlap(&test, img, c) > 0.0)));

    // Saved and loaded back, the model scores the same pairs identically.
    let out = d.path().join("model");
    r.save(&out, Some(&d.path().join("vocab.txt"))).unwrap();
    let back = Retriever::load(&out).unwrap();
    let pairs = [(0usize, 0usize), (1, 3), (2, 7)];
    let a = r.score_pairs(&tok, &test, &pairs, &cfg, 2, |_| {}).unwrap();
    let b = back.score_pairs(&tok, &test, &pairs, &cfg, 3, |_| {}).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6 && (0.0..=1.0).contains(x));
    }
}
