//! VQA, GQA and NLVR2 on a small world: training runs and learns (the loss falls), a saved model
//! answers the same after loading, the submission JSON is the official format, and the NLVR2
//! accuracy/consistency and VQA majority baselines compute what they say.

use oscar::data::text::{AnswerVocab, Nlvr2Example};
use oscar::tasks::finetune::Optim;
use oscar::tasks::nlvr2::{accuracy_and_consistency, Nlvr2Config, Nlvr2Set};
use oscar::tasks::qa::{
    best_answer, majority_answers, submission, Answerer, QaConfig, QaKind, QaSet,
};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;

fn world(images: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let wc = oscar_world::WorldConfig {
        images,
        seed: 5,
        feature_dim: 8,
        ..Default::default()
    };
    oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), d.path(), 0).unwrap();
    d
}

fn falls(losses: &[f64]) -> bool {
    let k = losses.len() / 4;
    losses[losses.len() - k..].iter().sum::<f64>() < losses[..k].iter().sum::<f64>()
}

#[test]
fn vqa_and_gqa_train_save_load_and_answer() {
    let d = world(60);
    let p = d.path();
    let tok = BertTokenizer::from_vocab(&p.join("vocab.txt")).unwrap();
    let answers = AnswerVocab::read(&p.join("vqa/ans2label.json")).unwrap();
    let set = QaSet::open(
        &p.join("vqa/train.json"),
        &p.join("features/features.tsv"),
        14,
        answers.len(),
    )
    .unwrap();
    for kind in [QaKind::Vqa, QaKind::Gqa] {
        let cfg = QaConfig {
            task: kind,
            optim: Optim {
                steps: 24,
                batch_size: 16,
                drop_out: Some(0.0),
                ..Optim::default()
            },
            ..QaConfig::default()
        };
        let mut losses = vec![];
        let m = oscar::tasks::qa::train(
            &set,
            &tok,
            &answers,
            None,
            &OscarConfig::tiny(tok.vocab_size(), 14),
            &cfg,
            &Default::default(),
            None,
            |_, l, s| {
                assert!((0.0..=1.0).contains(&s));
                losses.push(l);
            },
        )
        .unwrap();
        assert!(falls(&losses), "{kind:?}: {losses:?}");
        let dir = p.join(format!("m-{kind:?}"));
        m.save(&dir, Some(&p.join("vocab.txt"))).unwrap();
        let back = Answerer::load(&dir, &candle_core::Device::Cpu).unwrap();
        assert_eq!(back.settings.task, kind);
        let e1 = m.evaluate(&tok, &set, 32, |_| {}).unwrap();
        let e2 = back.evaluate(&tok, &set, 7, |_| {}).unwrap();
        assert_eq!(e1.predictions.len(), set.examples.len());
        assert!((e1.score - e2.score).abs() < 1e-9);
        for (a, b) in e1.predictions.iter().zip(&e2.predictions) {
            assert_eq!(a.top[0].0, b.top[0].0);
            assert!((a.top[0].1 - b.top[0].1).abs() < 1e-5);
        }
        let probs: f32 = e1.predictions[0].top.iter().map(|t| t.1).sum();
        if kind == QaKind::Gqa {
            assert!(
                probs <= 1.0 + 1e-5,
                "softmax probabilities of the top answers sum to at most 1"
            );
        }
        let one = &set.examples[0];
        let top = back
            .answer(
                &tok,
                &one.question,
                &one.tags,
                &set.features[&one.img_id],
                3,
            )
            .unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].0, e2.predictions[0].top[0].0);
    }
}

#[test]
fn submission_is_the_official_format_and_majority_baselines_follow_the_types() {
    use oscar::tasks::qa::Prediction;
    let preds = vec![
        Prediction {
            question_id: "17".into(),
            top: vec![("yes".into(), 0.9)],
        },
        Prediction {
            question_id: "a-1".into(),
            top: vec![("2".into(), 0.5)],
        },
    ];
    assert_eq!(
        submission(&preds),
        serde_json::json!([{"question_id": 17, "answer": "yes"}, {"question_id": "a-1", "answer": "2"}])
    );

    use oscar_eval::vqa::Annotation;
    let ann = |id: &str, t: &str, a: &str| Annotation::new(id, t, "other", &[a; 10]);
    let train = vec![
        ann("1", "how many", "2"),
        ann("2", "how many", "2"),
        ann("3", "is there a", "no"),
        ann("4", "what color is the", "red"),
        ann("5", "what color is the", "red"),
    ];
    let test = vec![ann("9", "is there a", "no"), ann("10", "how many", "3")];
    let (overall, typed) = majority_answers(&train, &test);
    // "2" and "red" are tied at two: the alphabetically first wins, deterministically.
    assert_eq!(overall["9"], "2");
    assert_eq!(typed["9"], "no");
    assert_eq!(typed["10"], "2");

    let e = oscar::data::text::QaExample {
        q_id: "1".into(),
        img_id: "i".into(),
        question: "q".into(),
        tags: String::new(),
        answers: vec![(4, 0.3), (2, 1.0), (7, 1.0)],
    };
    assert_eq!(
        best_answer(&e),
        Some(2),
        "the highest score, the first on ties"
    );
}

#[test]
fn nlvr2_trains_and_consistency_groups_statements() {
    let d = world(60);
    let p = d.path();
    let tok = BertTokenizer::from_vocab(&p.join("vocab.txt")).unwrap();
    let set = Nlvr2Set::open(
        &p.join("nlvr2/train.json"),
        &p.join("features/features.tsv"),
        14,
    )
    .unwrap();
    let cfg = Nlvr2Config {
        optim: Optim {
            steps: 20,
            batch_size: 8,
            drop_out: Some(0.0),
            ..Optim::default()
        },
        ..Nlvr2Config::default()
    };
    let mut c = OscarConfig::tiny(tok.vocab_size(), 14);
    c.use_img_layernorm = Some(true);
    let mut losses = vec![];
    let m = oscar::tasks::nlvr2::train(
        &set,
        &tok,
        None,
        &c,
        &cfg,
        &Default::default(),
        None,
        |_, l, _| losses.push(l),
    )
    .unwrap();
    assert!(falls(&losses), "{losses:?}");
    let e = m.evaluate(&tok, &set, 16).unwrap();
    assert_eq!(e.statements, set.examples.len());
    assert!((0.0..=100.0).contains(&e.accuracy) && e.consistency <= 100.0);

    let ex = |id: &str, s: &str, label: u8| Nlvr2Example {
        id: id.into(),
        statement: s.into(),
        images: ("a".into(), "b".into()),
        tags: (String::new(), String::new()),
        label: Some(label),
    };
    // NLVR2 ids: dev-12-0-1 and dev-12-3-0 share statement 12; other ids group by text.
    let examples = vec![
        ex("dev-12-0-1", "x", 1),
        ex("dev-12-3-0", "y", 0),
        ex("dev-13-0-0", "z", 1),
        ex("w1", "Both dogs", 1),
        ex("w2", "both dogs", 0),
    ];
    let (acc, cons, groups) = accuracy_and_consistency(&examples, &[1, 1, 1, 1, 0]).unwrap();
    assert_eq!(groups, 3);
    assert!((acc - 80.0).abs() < 1e-9);
    assert!(
        (cons - 100.0 * 2.0 / 3.0).abs() < 1e-9,
        "group 12 has a wrong pair: {cons}"
    );
    assert!(accuracy_and_consistency(&examples, &[1]).is_err());
}
