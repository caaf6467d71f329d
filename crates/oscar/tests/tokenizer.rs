//! Tokenizer ids equal HF's `BertTokenizer` on a varied corpus (tools/reference/make_tokenizer_goldens.py).

use oscar::tokenizer::BertTokenizer;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

#[test]
fn ids_match_hf_bert_tokenizer_on_a_varied_corpus() {
    let tok = BertTokenizer::from_vocab(&dir().join("bert-base-uncased-vocab.txt")).unwrap();
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("goldens.json")).unwrap())
            .unwrap();
    let cases = gold["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut bad = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.tokenize(text).unwrap();
        if got != want {
            bad.push(format!("{text:?}\n  ours {got:?}\n  HF   {want:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn known_ids_special_tokens_and_decode() {
    let tok = BertTokenizer::from_vocab(&dir().join("bert-base-uncased-vocab.txt")).unwrap();
    // python-reference.md's known value (without [CLS]=101 / [SEP]=102).
    assert_eq!(
        tok.tokenize("A man riding a wave on top of a surfboard.")
            .unwrap(),
        vec![1037, 2158, 5559, 1037, 4400, 2006, 2327, 1997, 1037, 14175, 6277, 1012]
    );
    let s = tok.special;
    assert_eq!(
        (s.pad, s.unk, s.cls, s.sep, s.mask),
        (0, 100, 101, 102, 103)
    );
    assert_eq!(tok.vocab_size(), 30522);
    let ids = tok
        .tokenize("A man riding a wave on top of a surfboard.")
        .unwrap();
    assert_eq!(
        tok.decode(&ids),
        "a man riding a wave on top of a surfboard."
    );
}

#[test]
fn bad_vocabularies_are_named() {
    let d = tempfile::tempdir().unwrap();
    let empty = d.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = BertTokenizer::from_vocab(&empty).err().unwrap().to_string();
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
    let nospecial = d.path().join("v.txt");
    std::fs::write(&nospecial, "[PAD]\n[UNK]\nhello\n").unwrap();
    let e = BertTokenizer::from_vocab(&nospecial)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("v.txt") && e.contains("[CLS]"), "{e}");
}
