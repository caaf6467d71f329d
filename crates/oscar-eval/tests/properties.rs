//! Properties over random inputs: tokenization never panics and is idempotent on its own
//! output; metrics stay in range and reward the exact reference.

use oscar_eval::captions::{evaluate_captions, CaptionOptions, CaptionSet};
use oscar_eval::ptb::tokenize_caption;
use oscar_eval::vqa::{normalize_answer, question_accuracy, HumanAnswer, VqaRules};
use proptest::prelude::*;

fn words() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(vec![
            "a", "dog", "cat", "on", "the", "red", "bus", "man", "riding", "wave",
        ]),
        1..12,
    )
    .prop_map(|w| w.join(" "))
}

proptest! {
    #[test]
    fn tokenizer_never_panics_and_is_stable(s in "\\PC{0,60}") {
        let t = tokenize_caption(&s);
        prop_assert!(!t.contains("  "));
        // Lower-cased, so tokenizing again changes nothing for plain word output.
        if t.chars().all(|c| c.is_ascii_lowercase() || c == ' ') {
            prop_assert_eq!(tokenize_caption(&t), t.clone());
        }
    }

    #[test]
    fn metrics_are_in_range_and_the_reference_itself_scores_best(refs in proptest::collection::vec(words(), 1..5), cand in words()) {
        let r: CaptionSet = [("x".to_string(), refs.clone()), ("y".to_string(), vec!["a cat on a bus".to_string()])].into();
        let p: CaptionSet = [("x".to_string(), vec![cand]), ("y".to_string(), vec!["a dog".to_string()])].into();
        let s = evaluate_captions(&r, &p, &CaptionOptions { pretokenized: true, ..Default::default() }).unwrap();
        for b in s.bleu { prop_assert!((0.0..=1.0 + 1e-9).contains(&b)); }
        prop_assert!((0.0..=1.0 + 1e-9).contains(&s.rouge_l));
        prop_assert!(s.cider >= 0.0 && s.cider.is_finite());
        let exact: CaptionSet = [("x".to_string(), vec![refs[0].clone()]), ("y".to_string(), vec!["a dog".to_string()])].into();
        let e = evaluate_captions(&r, &exact, &CaptionOptions { pretokenized: true, ..Default::default() }).unwrap();
        prop_assert!((e.per_image[0].rouge_l - 1.0).abs() < 1e-12);
    }

    #[test]
    fn vqa_accuracy_is_a_multiple_of_a_thirtieth(pred in "[a-z ]{0,8}", human in proptest::collection::vec("[a-z]{1,4}", 10)) {
        let human: Vec<HumanAnswer> = human.iter().enumerate().map(|(i, a)| HumanAnswer::numbered(a.as_str(), i + 1)).collect();
        for rules in [VqaRules::Official, VqaRules::Pre2021] {
            let acc = question_accuracy(&pred, &human, rules);
            prop_assert!((0.0..=1.0).contains(&acc));
            prop_assert!(((acc * 30.0) - (acc * 30.0).round()).abs() < 1e-9);
        }
        let _ = normalize_answer(&pred);
    }
}
