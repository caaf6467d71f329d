//! The native PTB tokenizer against the Stanford CoreNLP 3.4.1 jar on the hardest lines of the
//! 100,000-caption differential test (fixture written by tools/reference/ptb_differential.py:
//! every caption that ever differed plus a stratified sample per category). Batch `plain` is one
//! pycocoevalcap call; batch `line_breaks` holds captions with characters the jar breaks lines
//! on, each followed by a sentinel caption, with the jar's lines between sentinels joined.

use oscar_eval::ptb::{find_ptb_jar, tokenize_captions, tokenize_with_jar};
use serde_json::Value;
use std::path::PathBuf;

fn fixture() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ptb_differential.json");
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("fixture: `{what}` must be a list"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("fixture: `{what}` holds a non-string"))
                .to_string()
        })
        .collect()
}

/// Lists the first differences (and their count) between ours and the jar.
fn compare(
    captions: &[String],
    categories: &[String],
    got: &[String],
    want: &[String],
) -> Vec<String> {
    assert_eq!(got.len(), want.len());
    captions
        .iter()
        .zip(categories)
        .zip(got.iter().zip(want))
        .filter(|(_, (g, w))| g != w)
        .map(|((c, k), (g, w))| format!("[{k}] {c:?}\n   ours: {g:?}\n    jar: {w:?}"))
        .collect()
}

fn with_sentinels(captions: &[String], sentinel: &str) -> Vec<String> {
    captions
        .iter()
        .flat_map(|c| [c.clone(), sentinel.to_string()])
        .collect()
}

#[test]
fn native_tokenizer_equals_the_jar_on_every_fixture_line() {
    let f = fixture();
    let sentinel = f["sentinel"].as_str().expect("fixture: `sentinel`");
    let mut bad = Vec::new();
    let mut n = 0;
    for batch in ["plain", "line_breaks"] {
        let caps = strings(&f[batch]["captions"], "captions");
        let cats = strings(&f[batch]["categories"], "categories");
        let want = strings(&f[batch]["tokens"], "tokens");
        let got: Vec<String> = if batch == "plain" {
            tokenize_captions(&caps)
        } else {
            tokenize_captions(&with_sentinels(&caps, sentinel))
                .into_iter()
                .step_by(2)
                .collect()
        };
        n += caps.len();
        bad.extend(compare(&caps, &cats, &got, &want));
    }
    assert!(n > 2000, "fixture holds only {n} captions");
    assert!(
        bad.is_empty(),
        "{} of {n} captions differ from the jar; first ones:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn jar_mode_equals_the_fixture_when_java_and_the_jar_are_present() {
    let jar = match find_ptb_jar(None) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    if std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `java` on PATH");
        return;
    }
    let f = fixture();
    let caps = strings(&f["plain"]["captions"], "captions");
    let got = tokenize_with_jar(&jar, &caps).unwrap();
    let bad = compare(
        &caps,
        &strings(&f["plain"]["categories"], "categories"),
        &got,
        &strings(&f["plain"]["tokens"], "tokens"),
    );
    assert!(
        bad.is_empty(),
        "{} of {} differ; first ones:\n{}",
        bad.len(),
        caps.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    // A caption with a line break inside would misalign pycocoevalcap's zip: jar mode refuses it.
    let err = tokenize_with_jar(&jar, &["a dog\u{2028}runs", "a cat"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("caption 0") && err.contains("line break"),
        "{err}"
    );
}
