//! VQA accuracy against the reference implementation of the official evaluation
//! (tools/reference/make_vqa_goldens.py), and clear errors on bad evaluation inputs.

use oscar_eval::captions::{evaluate_captions, read_captions, CaptionOptions, CaptionSet};
use oscar_eval::vqa::{evaluate_vqa, evaluate_vqa_rules, read_annotations, read_results, VqaRules};
use serde_json::Value;
use std::path::PathBuf;

fn fx(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

/// Both versions of the official rules, against goldens the official `vqaEval.py` wrote itself
/// (tools/reference/make_vqa_goldens.py) on 1,500 generated questions: overall, every question
/// type, every answer type and every question.
#[test]
fn vqa_accuracy_equals_the_official_evaluation_overall_by_type_and_per_question() {
    let anns = read_annotations(&fx("vqa/annotations.json")).unwrap();
    let res = read_results(&fx("vqa/results.json")).unwrap();
    for (rules, file) in [
        (VqaRules::Official, "vqa/goldens_official.json"),
        (VqaRules::Pre2021, "vqa/goldens_pre-2021.json"),
    ] {
        let s = evaluate_vqa_rules(&anns, &res, false, rules).unwrap();
        let g: Value = serde_json::from_str(&std::fs::read_to_string(fx(file)).unwrap()).unwrap();
        assert_eq!(s.questions, 1500);
        assert!(
            (s.overall - g["overall"].as_f64().unwrap()).abs() < 1e-9,
            "{rules:?}: {} vs {}",
            s.overall,
            g["overall"]
        );
        for (k, v) in g["per_answer_type"].as_object().unwrap() {
            assert!(
                (s.per_answer_type[k] - v.as_f64().unwrap()).abs() < 1e-9,
                "{rules:?} {k}"
            );
        }
        assert_eq!(
            s.per_question_type.len(),
            g["per_question_type"].as_object().unwrap().len()
        );
        for (k, v) in g["per_question_type"].as_object().unwrap() {
            assert!(
                (s.per_question_type[k] - v.as_f64().unwrap()).abs() < 1e-9,
                "{rules:?} {k}"
            );
        }
        let mut wrong = vec![];
        for (k, v) in g["per_question"].as_object().unwrap() {
            if (s.per_question[k] - v.as_f64().unwrap()).abs() > 1e-9 {
                wrong.push(format!("{k}: ours {} official {}", s.per_question[k], v));
            }
        }
        assert!(
            wrong.is_empty(),
            "{rules:?}: {} of 1500 questions differ:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn vqa_results_that_do_not_fit_the_annotations_are_named() {
    let anns = read_annotations(&fx("vqa/annotations.json")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let e = read_results(&write(
        &d,
        "dup.json",
        r#"[{"question_id": 5000, "answer": "yes"}, {"question_id": 5000, "answer": "no"}]"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("dup.json") && e.contains("answered twice"),
        "{e}"
    );
    let e = read_results(&write(&d, "empty.json", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.json") && e.contains("empty"), "{e}");
    let e = read_results(&write(&d, "none.json", "[]"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no results"), "{e}");
    let partial = read_results(&write(
        &d,
        "partial.json",
        r#"[{"question_id": 5000, "answer": "yes"}]"#,
    ))
    .unwrap();
    let e = evaluate_vqa(&anns, &partial, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1499 annotated questions have no answer"), "{e}");
    assert_eq!(evaluate_vqa(&anns, &partial, true).unwrap().questions, 1);
    let unknown = read_results(&write(
        &d,
        "unknown.json",
        r#"[{"question_id": 7, "answer": "yes"}]"#,
    ))
    .unwrap();
    let e = evaluate_vqa(&anns, &unknown, true).unwrap_err().to_string();
    assert!(
        e.contains("not in the annotations") && e.contains('7'),
        "{e}"
    );
    let qs = write(
        &d,
        "q.json",
        r#"{"questions": [{"question_id": 5000, "image_id": 0, "question": "What?"}]}"#,
    );
    let e = oscar_eval::vqa::read_questions(&qs, &anns)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q.json") && e.contains("1499 annotations have no question"),
        "{e}"
    );
    let e = read_annotations(&write(
        &d,
        "bad_ann.json",
        r#"{"annotations": [{"question_id": 1, "question_type": "x", "answer_type": "y"}]}"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("bad_ann.json") && e.contains("answers"), "{e}");
}

#[test]
fn caption_inputs_that_do_not_fit_are_named() {
    let d = tempfile::tempdir().unwrap();
    let refs_p = write(
        &d,
        "refs.json",
        r#"{"annotations": [{"image_id": 1, "caption": "a dog"}, {"image_id": 1, "caption": "a puppy"}, {"image_id": 2, "caption": "a cat"}]}"#,
    );
    let refs = read_captions(&refs_p, false).unwrap();
    assert_eq!(refs["1"].len(), 2);

    let e = read_captions(
        &write(
            &d,
            "dup.json",
            r#"[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]"#,
        ),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("dup.json") && e.contains("entry 1") && e.contains("second caption"),
        "{e}"
    );
    let e = read_captions(&write(&d, "empty.json", "  \n"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.json") && e.contains("empty"), "{e}");
    let e = read_captions(&write(&d, "nolist.json", "[]"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no captions"), "{e}");
    let e = read_captions(&write(&d, "nocap.json", r#"[{"image_id": 1}]"#), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("entry 0") && e.contains("caption"), "{e}");
    let e = read_captions(&write(&d, "bad.tsv", "img1\tnot json\n"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.tsv") && e.contains("line 1"), "{e}");
    let tsv = read_captions(&write(&d, "pred.tsv", "1\t[{\"caption\": \"a dog\", \"conf\": 0.9}]\n2\t[{\"caption\": \"a cat\", \"conf\": 0.8}]\n"), true).unwrap();
    assert_eq!(tsv["2"], vec!["a cat".to_string()]);

    let preds: CaptionSet = [("1".to_string(), vec!["a dog".to_string()])].into();
    let e = evaluate_captions(&refs, &preds, &CaptionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1 images with references have no prediction") && e.contains('2'),
        "{e}"
    );
    let s = evaluate_captions(
        &refs,
        &preds,
        &CaptionOptions {
            allow_subset: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.images, 1);
    let preds: CaptionSet = [("9".to_string(), vec!["a dog".to_string()])].into();
    let e = evaluate_captions(&refs, &preds, &CaptionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no references") && e.contains('9'), "{e}");
    let e = evaluate_captions(&refs, &CaptionSet::new(), &CaptionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no predictions"), "{e}");
    let e = oscar_eval::meteor::find_jar(Some(&d.path().join("nope.jar")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.jar"), "{e}");
}
