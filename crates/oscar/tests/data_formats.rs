//! The readers on files written by Python the way the reference's tools write them
//! (tools/reference/make_data_fixtures.py): values must come back exactly.

use oscar::data::features::{parse_detections, FeatureStore};
use oscar::data::text::{read_nlvr2, read_qa, AnswerVocab};
use oscar::data::tsv::TsvFile;
use serde_json::Value;
use std::path::PathBuf;

fn fx(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fx("expected.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn every_feature_format_returns_the_written_values_exactly() {
    let e = expected();
    let dim = e["dim"].as_u64().unwrap() as usize;
    let stores = [
        FeatureStore::open(&fx("features.tsv"), dim).unwrap(),
        FeatureStore::open(&fx("train.feature.tsv"), dim).unwrap(),
    ];
    for s in &stores {
        assert_eq!(s.len(), 3);
        for (k, v) in e["features"].as_object().unwrap() {
            let r = s.get(k).unwrap();
            assert_eq!(r.data, floats(v), "{k}");
            assert_eq!(r.num_boxes * dim, r.data.len());
        }
        assert!(s
            .get("img_zzz")
            .unwrap_err()
            .to_string()
            .contains("no features for image img_zzz"));
    }
    for f in ["val_img_frcnn_feats.pt", "val_img_frcnn_feats_legacy.pt"] {
        let s = FeatureStore::open(&fx(f), dim).unwrap();
        for (int_key, name) in e["torch_keys"].as_object().unwrap() {
            assert_eq!(
                s.get(int_key).unwrap().data,
                floats(&e["features"][name.as_str().unwrap()]),
                "{f} {int_key}"
            );
        }
    }
    // The wrong width is named, with the row.
    let err = FeatureStore::open(&fx("features.tsv"), 7)
        .unwrap()
        .get("img_a")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("features.tsv")
            && err.contains("row 1")
            && err.contains("wrong feature width"),
        "{err}"
    );
}

#[test]
fn detector_predictions_get_box_dims_and_labels_give_tags() {
    let e = expected();
    let t = TsvFile::open(&fx("predictions.tsv")).unwrap();
    let row = t.row(0).unwrap();
    let d = parse_detections(&row[1], "row 1").unwrap();
    let r = d.regions_with_boxes(4, "row 1").unwrap();
    assert_eq!(r.dim, 10);
    let want = floats(&e["sgb_regions"]);
    for (a, b) in r.data.iter().zip(&want) {
        assert!((a - b).abs() <= f32::EPSILON, "{a} vs {b}");
    }
    let labels = TsvFile::open(&fx("train.label.tsv")).unwrap();
    let idx = labels.key_index().unwrap();
    let row = labels.row(idx["img_a"]).unwrap();
    let d = parse_detections(&row[1], "row 1").unwrap();
    assert_eq!(
        d.tags(0.2, false),
        e["tags_img_a_conf0.2"].as_str().unwrap()
    );
    assert_eq!(d.tags(0.0, true), e["tags_img_a_dedup"].as_str().unwrap());
}

#[test]
fn qa_nlvr2_and_answer_vocabularies() {
    let qa = read_qa(&fx("vqa_train.json"), Some(3)).unwrap();
    assert_eq!(qa[0].q_id, "7");
    assert_eq!(qa[0].tags, "dog frisbee grass");
    assert_eq!(qa[0].answers, vec![(1, 1.0), (2, 0.3)]);
    assert_eq!(qa[1].q_id, "8");
    let err = read_qa(&fx("vqa_train.json"), Some(2))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entry 0") && err.contains("answer label 2 is outside the vocabulary of 2"),
        "{err}"
    );
    let n = read_nlvr2(&fx("nlvr2_dev.json")).unwrap();
    assert_eq!(n[0].images, ("img_a".to_string(), "img_b".to_string()));
    assert_eq!(n[0].tags.0, "dog dog");
    assert_eq!(n[0].label, Some(1));
    let want = vec!["yes".to_string(), "frisbee".into(), "ball".into()];
    for f in [
        "ans2label.json",
        "trainval_ans2label.pkl",
        "trainval_label2ans.pkl",
    ] {
        assert_eq!(AnswerVocab::read(&fx(f)).unwrap().label2ans, want, "{f}");
    }
    let err = AnswerVocab::read(&fx("ans2label_protocol5.pkl"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ans2label_protocol5.pkl") && err.contains("json.dump"),
        "{err}"
    );
}

#[test]
fn retrieval_captions_from_torch_pickles_and_key_files() {
    let e = expected();
    for f in ["test_captions.pt", "test_captions_legacy.pt"] {
        let caps = oscar::data::text::read_retrieval_captions(&fx(f)).unwrap();
        for (k, v) in e["retrieval_captions"].as_object().unwrap() {
            let want: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            assert_eq!(caps[k], want, "{f} {k}");
        }
    }
    assert_eq!(
        oscar::data::text::read_keys(&fx("test_img_keys.tsv")).unwrap(),
        vec!["391895", "522418"]
    );
    // A tensor file is not a caption file, and says so.
    let err = oscar::data::text::read_retrieval_captions(&fx("val_img_frcnn_feats.pt"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("val_img_frcnn_feats.pt") && err.contains("tensor"),
        "{err}"
    );
}
