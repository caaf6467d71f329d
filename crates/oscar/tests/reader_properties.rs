//! Random and corrupted inputs to the TSV / base64 / JSON readers never panic, and every error
//! names where it happened.

use oscar::data::features::{decode_features, parse_detections, parse_feature_row, FeatureStore};
use oscar::data::tsv::TsvFile;
use proptest::prelude::*;

fn valid_row(key: &str, vals: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
    format!(
        "{key}\t{}\t{}",
        vals.len() / 2,
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn feature_rows_never_panic_and_errors_name_the_row(fields in proptest::collection::vec("\\PC{0,40}", 0..5), dim in 1usize..6) {
        if let Err(e) = parse_feature_row(&fields, dim, "row 17", fields.first().map(String::as_str).unwrap_or("k")) {
            prop_assert!(e.starts_with("row 17"), "{}", e);
        }
        if let Err(e) = decode_features(fields.first().map(String::as_str).unwrap_or(""), None, dim, "row 3") {
            prop_assert!(e.starts_with("row 3"), "{}", e);
        }
    }

    #[test]
    fn detection_json_never_panics(s in "\\PC{0,80}") {
        if let Err(e) = parse_detections(&s, "row 5") {
            prop_assert!(e.starts_with("row 5"));
        }
    }

    #[test]
    fn corrupted_feature_files_error_with_file_and_row(vals in proptest::collection::vec(-10.0f32..10.0, 2..12), cut in 0usize..200, flip in 0usize..200) {
        let vals: Vec<f32> = vals.into_iter().take(10).collect();
        let vals = if vals.len() % 2 == 1 { vals[..vals.len() - 1].to_vec() } else { vals };
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("features.tsv");
        let mut text = format!("{}\n{}\n", valid_row("good", &vals), valid_row("bad", &vals)).into_bytes();
        let second = text.iter().position(|&b| b == b'\n').unwrap() + 1;
        // Corrupt the second row: flip one byte and maybe truncate the file inside it.
        let i = second + flip % (text.len() - second);
        text[i] = text[i].wrapping_add(1 + (flip % 200) as u8);
        let end = text.len() - (cut % (text.len() - second));
        text.truncate(end.max(second + 1));
        std::fs::write(&p, &text).unwrap();
        match FeatureStore::open(&p, 2) {
            Err(e) => prop_assert!(e.to_string().contains("features.tsv"), "{}", e),
            Ok(s) => {
                prop_assert_eq!(s.get("good").unwrap().data, vals.clone());
                for k in s.keys() {
                    if let Err(e) = s.get(&k) {
                        let msg = e.to_string();
                        prop_assert!(msg.contains("features.tsv") && msg.contains("row 2"), "{}", msg);
                    }
                }
            }
        }
        let _ = TsvFile::open(&p).map(|t| t.row(5));
    }
}
