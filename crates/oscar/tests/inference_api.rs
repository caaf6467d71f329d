//! The inference API (`oscar::infer`) on models trained on a small world: each call equals the
//! task code it wraps on the same inputs, a directory loads as the task its settings name, and
//! bad inputs are errors that say what was expected.

use oscar::data::features::FeatureStore;
use oscar::infer::{CaptionOptions, ImageInput, Shortlist, TaskModel};
use oscar::tasks::caption::{CaptionSet, Captioner, Mode};
use oscar::tasks::qa::Answerer;
use oscar::tasks::retrieval::{RetrievalSet, Retriever};
use oscar::tokenizer::BertTokenizer;

#[path = "support/tiny_models.rs"]
mod tiny_models;
use tiny_models::{train_all, world};

#[test]
fn each_call_equals_the_task_code_it_wraps() {
    let d = tempfile::tempdir().unwrap();
    let (w, m) = (d.path().join("w"), d.path().join("m"));
    world(&w);
    train_all(&w, &m);
    let tok = BertTokenizer::from_vocab(&w.join("vocab.txt")).unwrap();
    let store = FeatureStore::open(&w.join("features/features.tsv"), 14).unwrap();
    let caps = CaptionSet::open(
        &w.join("captions/test_caption.json"),
        &w.join("features/features.tsv"),
        Some(&w.join("labels/predictions.tsv")),
        14,
    )
    .unwrap();
    let images: Vec<ImageInput> = caps
        .images
        .iter()
        .map(|i| {
            ImageInput::from_store(
                &store,
                i,
                caps.tags(i)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            )
            .unwrap()
        })
        .collect();

    // Captioning: the API's beam-2 captions are the captioner's on the same contexts.
    let TaskModel::Captioning(api) =
        TaskModel::load(&m.join("caption"), &candle_core::Device::Cpu).unwrap()
    else {
        panic!("caption.json should load a captioner")
    };
    let opts = CaptionOptions {
        num_beams: 2,
        max_length: 10,
        ..CaptionOptions::default()
    };
    let got = api.caption(&images, &opts).unwrap();
    let cap = Captioner::load(&m.join("caption"), &candle_core::Device::Cpu).unwrap();
    let st = oscar::tasks::caption::decode::DecodeSettings {
        num_beams: 2,
        max_gen_length: 10,
        ..cap.settings.decode.clone()
    };
    let want = cap
        .generate(
            &tok,
            &cap.contexts(&tok, &caps).unwrap(),
            Mode::Beam,
            &st,
            16,
            true,
            0,
            |_| {},
        )
        .unwrap();
    assert_eq!(got.len(), images.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.text, tok.decode(&w.tokens));
        assert!((g.score - w.score).abs() < 1e-9);
    }
    // Several captions per image: the best is the single caption, scores fall, and beam search
    // cannot return more than its beams.
    let n2 = CaptionOptions {
        num_return_sequences: 2,
        ..opts.clone()
    };
    let all = api.caption_n(&images, &n2, |_| {}).unwrap();
    for (a, g) in all.iter().zip(&got) {
        assert_eq!(a.len(), 2);
        assert_eq!(&a[0], g);
        assert!(a[0].score >= a[1].score);
    }
    let too_many = CaptionOptions {
        num_return_sequences: 3,
        ..opts.clone()
    };
    let e = api.caption_n(&images, &too_many, |_| {}).unwrap_err();
    assert!(e.to_string().contains("at most 2"), "{e}");
    // Re-encoding every step (the reference's way) gives the cached captions.
    let reenc = api
        .caption(
            &images[..4],
            &CaptionOptions {
                use_cache: false,
                ..opts.clone()
            },
        )
        .unwrap();
    for (g, w) in reenc.iter().zip(&got) {
        assert_eq!(g.text, w.text);
        assert!(
            (g.score - w.score).abs() < 1e-4,
            "{} vs {}",
            g.score,
            w.score
        );
    }
    // Constrained beam search: the API's outcome is the task code's on the same detections.
    let dets: Vec<_> = caps.images[..4]
        .iter()
        .map(|i| caps.detections.get(i).cloned().unwrap_or_default())
        .collect();
    let cc = oscar::tasks::caption::cbs::ConstraintConfig::default();
    let mut done = 0;
    let cons = api
        .caption_constrained(&images[..4], &dets, &opts, &cc, |n| done += n)
        .unwrap();
    assert_eq!(done, 4);
    let ctxs = cap.contexts(&tok, &caps).unwrap();
    for ((c, d), ctx) in cons.iter().zip(&dets).zip(&ctxs) {
        let cs = oscar::tasks::caption::cbs::select_constraints(d, &tok, &cc).unwrap();
        let w = oscar::tasks::caption::cbs::constrained_beam_search(
            &cap.decoder(&tok),
            ctx,
            &cs,
            &st,
            cc.min_satisfied,
        )
        .unwrap();
        assert!(
            !c.constraints.is_empty(),
            "the world's images have detections"
        );
        assert_eq!(c.constraints, w.constraints);
        assert_eq!(c.satisfied, w.satisfied);
        assert_eq!(c.caption.text, tok.decode(&w.caption.tokens));
    }
    assert!(api
        .caption_constrained(&images[..2], &dets[..1], &opts, &cc, |_| {})
        .is_err());

    // Question answering: batched answers equal one-at-a-time answers.
    let TaskModel::Answering(api) =
        TaskModel::load(&m.join("vqa"), &candle_core::Device::Cpu).unwrap()
    else {
        panic!("qa.json should load an answerer")
    };
    let questions = [
        "what color is the dog?",
        "how many cats are there?",
        "is there a bus?",
    ];
    let ims = &images[..3];
    let got = api.answer(ims, &questions, 3).unwrap();
    let answerer = Answerer::load(&m.join("vqa"), &candle_core::Device::Cpu).unwrap();
    for ((im, q), g) in ims.iter().zip(questions).zip(&got) {
        let regions =
            oscar::data::features::regions_from(im.features.clone(), None, 14, "x").unwrap();
        let want = answerer
            .answer(&tok, q, &im.tags.join(" "), &regions, 3)
            .unwrap();
        assert_eq!(g.len(), 3);
        for (a, (wa, ws)) in g.iter().zip(&want) {
            assert_eq!(&a.answer, wa);
            assert!((a.score - ws).abs() < 1e-5, "{} vs {ws}", a.score);
        }
    }

    // Matching: pair scores equal the retriever's; rankings are sorted and complete.
    let TaskModel::Matching(api) =
        TaskModel::load(&m.join("retrieval"), &candle_core::Device::Cpu).unwrap()
    else {
        panic!("retrieval.json should load a matcher")
    };
    let texts: Vec<&str> = caps.captions[&caps.images[0]]
        .iter()
        .map(String::as_str)
        .chain(["a purple submarine"])
        .collect();
    let ranked = api.rank_texts(&images[0], &texts, None).unwrap();
    assert_eq!(ranked.len(), texts.len());
    assert!(ranked.windows(2).all(|p| p[0].score >= p[1].score));
    let retr = Retriever::load(&m.join("retrieval"), &candle_core::Device::Cpu).unwrap();
    let settings = oscar::tasks::retrieval::saved_settings(&m.join("retrieval")).unwrap();
    let set = RetrievalSet {
        images: vec![caps.images[0].clone()],
        captions: texts.iter().map(|t| (0, t.to_string())).collect(),
        features: [(caps.images[0].clone(), store.get(&caps.images[0]).unwrap())].into(),
        tags: [(caps.images[0].clone(), images[0].tags.join(" "))].into(),
    };
    let want = retr
        .score_pairs(
            &tok,
            &set,
            &(0..texts.len()).map(|c| (0, c)).collect::<Vec<_>>(),
            &settings,
            8,
            |_| {},
        )
        .unwrap();
    for r in &ranked {
        assert!((r.score - want[r.index]).abs() < 1e-6);
    }
    let by_image = api.rank_images(texts[0], &images, None).unwrap();
    let mut idx: Vec<usize> = by_image.iter().map(|r| r.index).collect();
    idx.sort();
    assert_eq!(idx, (0..images.len()).collect::<Vec<_>>());
    // Two stages: the model scores only the k images whose tags the text names most, with the
    // scores it gives them in the full ranking.
    let overlap: Vec<f32> = images
        .iter()
        .map(|im| oscar::tasks::retrieval::tag_overlap(&im.tags.join(" "), texts[0]))
        .collect();
    let two = api
        .rank_images(texts[0], &images, Some(Shortlist::tags(3)))
        .unwrap();
    assert_eq!(two.len(), 3);
    let mut kth: Vec<f32> = overlap.clone();
    kth.sort_by(|a, b| b.total_cmp(a));
    for r in &two {
        assert!(
            overlap[r.index] >= kth[2],
            "image {} is not in the first stage's top 3",
            r.index
        );
        let full = by_image.iter().find(|f| f.index == r.index).unwrap();
        assert!((full.score - r.score).abs() < 1e-5);
    }
    assert!(two.windows(2).all(|p| p[0].score >= p[1].score));
}

#[test]
fn bad_inputs_say_what_was_expected() {
    let d = tempfile::tempdir().unwrap();
    let (w, m) = (d.path().join("w"), d.path().join("m"));
    world(&w);
    train_all(&w, &m);
    let TaskModel::Answering(api) =
        TaskModel::load(&m.join("vqa"), &candle_core::Device::Cpu).unwrap()
    else {
        panic!()
    };
    let wrong = ImageInput::new(vec![0.5; 10], vec!["dog".into()]);
    let e = api
        .answer(std::slice::from_ref(&wrong), &["what?"], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("image 0") && e.contains("14"), "{e}");
    let e = api
        .answer(&[wrong.clone(), wrong], &["what?"], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 images for 1 questions"), "{e}");
    let e = TaskModel::load(&w, &candle_core::Device::Cpu)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("not a task model directory"), "{e}");
    // Detector output with boxes: the 6 box dims are appended per row.
    let im = ImageInput::with_boxes(
        &[1.0; 16],
        8,
        &[[0.0, 0.0, 320.0, 240.0], [64.0, 48.0, 640.0, 480.0]],
        (640.0, 480.0),
        vec![],
    )
    .unwrap();
    assert_eq!(im.features.len(), 28);
    assert_eq!(&im.features[8..14], &[0.0, 0.0, 0.5, 0.5, 0.5, 0.5]);
    assert!(ImageInput::with_boxes(&[1.0; 15], 8, &[[0.0; 4]; 2], (640.0, 480.0), vec![]).is_err());
    assert!(ImageInput::with_boxes(&[1.0; 16], 8, &[[0.0; 4]; 2], (0.0, 480.0), vec![]).is_err());
}
