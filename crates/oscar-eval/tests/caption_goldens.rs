//! Caption metrics and tokenization against pycocoevalcap 1.2
//! (tools/reference/make_caption_goldens.py): 300 varied images, 1–6 references each.

use oscar_eval::captions::{build_doc_freq, evaluate_captions, CaptionOptions, CaptionSet};
use oscar_eval::ptb::tokenize_caption;
use serde_json::Value;
use std::path::PathBuf;

fn goldens() -> Value {
    goldens_at("caption_goldens.json")
}

fn goldens_at(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn set(v: &Value) -> CaptionSet {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, x)| {
            let caps = match x {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a.iter().map(|c| c.as_str().unwrap().to_string()).collect(),
                _ => panic!("unexpected"),
            };
            (k.clone(), caps)
        })
        .collect()
}

fn close(name: &str, a: f64, b: f64) {
    assert!(
        (a - b).abs() <= 1e-9,
        "{name}: ours {a} vs pycocoevalcap {b} (diff {:e})",
        (a - b).abs()
    );
}

#[test]
fn ptb_tokenization_equals_the_stanford_jar_on_every_caption() {
    let g = goldens();
    let mut bad = Vec::new();
    let mut n = 0;
    for (key, toks) in [("refs", "tokenized_refs"), ("preds", "tokenized_preds")] {
        let raw = set(&g[key]);
        let want = set(&g[toks]);
        for (id, caps) in &raw {
            for (c, w) in caps.iter().zip(&want[id]) {
                n += 1;
                let ours = tokenize_caption(c);
                if &ours != w {
                    bad.push(format!("{c:?}\n   ours: {ours:?}\n    jar: {w:?}"));
                }
            }
        }
    }
    assert!(n > 1000, "{n}");
    assert!(
        bad.is_empty(),
        "{} of {n} captions differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn check_scores(g: &Value, s: &oscar_eval::CaptionScores) {
    for k in 0..4 {
        close(
            &format!("BLEU-{}", k + 1),
            s.bleu[k],
            g["scores"]["bleu"][k].as_f64().unwrap(),
        );
    }
    close(
        "ROUGE-L",
        s.rouge_l,
        g["scores"]["rouge_l"].as_f64().unwrap(),
    );
    close("CIDEr", s.cider, g["scores"]["cider"].as_f64().unwrap());
    for im in &s.per_image {
        let p = &g["per_image"][&im.image_id];
        for k in 0..4 {
            close(
                &format!("{} BLEU-{}", im.image_id, k + 1),
                im.bleu[k],
                p["bleu"][k].as_f64().unwrap(),
            );
        }
        close(
            &format!("{} ROUGE-L", im.image_id),
            im.rouge_l,
            p["rouge_l"].as_f64().unwrap(),
        );
        close(
            &format!("{} CIDEr", im.image_id),
            im.cider,
            p["cider"].as_f64().unwrap(),
        );
    }
}

#[test]
fn bleu_rouge_cider_equal_pycocoevalcap_on_its_own_tokens() {
    let g = goldens();
    let opt = CaptionOptions {
        pretokenized: true,
        ..Default::default()
    };
    let s = evaluate_captions(
        &set(&g["tokenized_refs"]),
        &set(&g["tokenized_preds"]),
        &opt,
    )
    .unwrap();
    assert_eq!(s.images, 300);
    check_scores(&g, &s);
}

#[test]
fn the_whole_pipeline_from_raw_captions_equals_pycocoevalcap() {
    let g = goldens();
    let s = evaluate_captions(
        &set(&g["refs"]),
        &set(&g["preds"]),
        &CaptionOptions::default(),
    )
    .unwrap();
    check_scores(&g, &s);
}

#[test]
fn cider_d_with_training_document_frequencies_equals_the_reference() {
    let g = goldens();
    check_cider_d(&g);
}

#[test]
fn meteor_equals_the_jar_when_java_and_the_jar_are_present() {
    let jar = match oscar_eval::meteor::find_jar(None) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let g = goldens();
    check_meteor(&g, jar);
}

#[test]
fn python_reference_worked_example() {
    // python-reference.md's worked example (pycocoevalcap values quoted there).
    let refs: CaptionSet = [
        (
            "1".to_string(),
            vec![
                "A man is riding a wave on a surfboard.".to_string(),
                "A surfer rides a large wave in the ocean.".to_string(),
            ],
        ),
        (
            "2".to_string(),
            vec![
                "Two dogs are playing in the snow.".to_string(),
                "A pair of dogs run through snowy field.".to_string(),
            ],
        ),
    ]
    .into();
    let preds: CaptionSet = [
        (
            "1".to_string(),
            vec!["A man riding a wave on top of a surfboard.".to_string()],
        ),
        (
            "2".to_string(),
            vec!["Two dogs play in the snow.".to_string()],
        ),
    ]
    .into();
    let s = evaluate_captions(&refs, &preds, &CaptionOptions::default()).unwrap();
    close("B1", s.bleu[0], 0.8124999998984376);
    close("B2", s.bleu[1], 0.681385143781032);
    close("B3", s.bleu[2], 0.48779997810796455);
    close("B4", s.bleu[3], 0.32823231238081896);
    close("ROUGE-L", s.rouge_l, 0.8044403418447832);
    close("CIDEr", s.cider, 2.1414738016247172);
}

#[test]
fn ptb_tokenization_equals_the_jar_on_hard_cases() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ptb_goldens.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let mut bad = Vec::new();
    let cases = g["cases"].as_array().unwrap();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let ours = tokenize_caption(text);
        if ours != c["tokens"].as_str().unwrap() {
            bad.push(format!(
                "{text:?}\n   ours: {ours:?}\n    jar: {:?}",
                c["tokens"].as_str().unwrap()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

/// The goldens built from the PTB corner-case generator
/// (tools/reference/make_ptb_caption_goldens.py): 300 images × 5 references of hard captions.
const PTB_SET: &str = "caption_goldens_ptb.json";

#[test]
fn generated_hard_captions_tokenize_as_pycocoevalcap_does() {
    let g = goldens_at(PTB_SET);
    for (key, toks) in [("refs", "tokenized_refs"), ("preds", "tokenized_preds")] {
        let raw = set(&g[key]);
        let want = set(&g[toks]);
        // One batch, in id order, as pycocoevalcap tokenizes gts and res.
        let flat: Vec<&str> = raw
            .values()
            .flat_map(|c| c.iter().map(String::as_str))
            .collect();
        let got = oscar_eval::ptb::tokenize_captions(&flat);
        let want_flat: Vec<&String> = raw.keys().flat_map(|k| want[k].iter()).collect();
        let bad: Vec<String> = flat
            .iter()
            .zip(&got)
            .zip(&want_flat)
            .filter(|((_, o), w)| *o != **w)
            .map(|((c, o), w)| format!("{c:?}\n   ours: {o:?}\n    jar: {w:?}"))
            .collect();
        assert!(
            bad.is_empty(),
            "{key}: {} of {} differ:\n{}",
            bad.len(),
            flat.len(),
            bad.join("\n")
        );
    }
}

#[test]
fn generated_hard_captions_score_as_pycocoevalcap_from_raw_text() {
    let g = goldens_at(PTB_SET);
    let s = evaluate_captions(
        &set(&g["refs"]),
        &set(&g["preds"]),
        &CaptionOptions::default(),
    )
    .unwrap();
    assert_eq!(s.images, 300);
    check_scores(&g, &s);
}

#[test]
fn generated_hard_captions_cider_d_equals_the_reference() {
    let g = goldens_at(PTB_SET);
    check_cider_d(&g);
}

#[test]
fn generated_hard_captions_meteor_equals_the_jar_when_present() {
    let jar = match oscar_eval::meteor::find_jar(None) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let g = goldens_at(PTB_SET);
    check_meteor(&g, jar);
}

/// CIDEr-D with the fixture's training-caption frequencies, overall and per image.
fn check_cider_d(g: &Value) {
    let df = build_doc_freq(&set(&g["train_captions"]), false);
    assert_eq!(df.ref_len, 400.0);
    let opt = CaptionOptions {
        cider_df: Some(df),
        ..Default::default()
    };
    let s = evaluate_captions(&set(&g["refs"]), &set(&g["preds"]), &opt).unwrap();
    close(
        "CIDEr-D",
        s.cider_d.unwrap(),
        g["scores"]["cider_d_train"].as_f64().unwrap(),
    );
    for im in &s.per_image {
        close(
            &im.image_id,
            im.cider_d.unwrap(),
            g["per_image"][&im.image_id]["cider_d_train"]
                .as_f64()
                .unwrap(),
        );
    }
}

/// METEOR through the jar, overall and per image.
fn check_meteor(g: &Value, jar: std::path::PathBuf) {
    let opt = CaptionOptions {
        meteor_jar: Some(jar),
        ..Default::default()
    };
    let s = evaluate_captions(&set(&g["refs"]), &set(&g["preds"]), &opt).unwrap();
    close(
        "METEOR",
        s.meteor.unwrap(),
        g["scores"]["meteor"].as_f64().unwrap(),
    );
    for im in &s.per_image {
        close(
            &im.image_id,
            im.meteor.unwrap(),
            g["per_image"][&im.image_id]["meteor"].as_f64().unwrap(),
        );
    }
}
