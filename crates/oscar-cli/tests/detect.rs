//! `oscar detect` and the `--image-file` inputs end to end, on the detector fixture that
//! `tools/reference/make_detector_goldens.py` wrote (reduced-width VinVL, random weights: the
//! detections and captions are meaningless; what is checked is that the pieces fit).

use oscar::data::features::{parse_detections, FeatureStore};
use std::path::{Path, PathBuf};
use std::process::Command;

fn detector() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../oscar-detect/tests/fixtures/detector")
}

fn oscar(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oscar"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The fixture's images plus three bad files.
fn images_with_bad_files(dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(detector().join("images")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        n += 1;
    }
    std::fs::write(dir.join("empty.jpg"), b"").unwrap();
    std::fs::write(dir.join("notes.png"), b"not a picture at all").unwrap();
    let jpeg = std::fs::read(detector().join("images/astronaut.jpg")).unwrap();
    std::fs::write(dir.join("cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    n
}

#[test]
fn detect_writes_vinvl_files_reports_bad_images_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("images");
    let good = images_with_bad_files(&imgs);
    let out = tmp.path().join("out");
    let det = detector();
    let args = [
        "detect",
        "--detector",
        s(&det),
        "--images-dir",
        s(&imgs),
        "--out",
        s(&out),
        "--threads",
        "1",
    ];
    let (code, stdout, stderr) = oscar(&args);
    assert_eq!(code, Some(1), "bad images make the exit status 1\n{stderr}");
    for bad in ["empty.jpg", "notes.png", "cut.jpg"] {
        assert!(stderr.contains(bad), "{bad} named in: {stderr}");
    }
    assert!(
        stderr.contains("empty file") && stderr.contains("truncated JPEG"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["detected"], good);
    assert_eq!(summary["failed"].as_array().unwrap().len(), 3);

    // Every reader of VinVL files takes the output: 128-d features + 6 box dims.
    let store = FeatureStore::open(&out.join("features.tsv"), 134).unwrap();
    assert_eq!(store.len(), good);
    let rocket = store.get("rocket").unwrap();
    assert!(
        rocket.num_boxes >= 10,
        "at least MIN_DETECTIONS_PER_IMG boxes"
    );
    let preds = std::fs::read_to_string(out.join("predictions.tsv")).unwrap();
    let row = preds.lines().find(|l| l.starts_with("rocket\t")).unwrap();
    let d = parse_detections(row.split_once('\t').unwrap().1, "rocket").unwrap();
    assert_eq!(d.objects.len(), rocket.num_boxes);
    assert!(!d.tags(0.0, false).is_empty());
    // The 6 box dims are the rects over the image size (rocket.jpg is 240 × 240).
    let (x1, w) = (d.objects[0].rect.unwrap()[0], 240.0);
    assert!((rocket.data[128] - x1 / w).abs() < 1e-6);

    // A second run only retries the failures; an interrupted row is dropped and redone.
    let feats = out.join("features.tsv");
    let mut text = std::fs::read(&feats).unwrap();
    text.truncate(text.len() - 100);
    std::fs::write(&feats, text).unwrap();
    let (code, stdout, stderr) = oscar(&args);
    assert_eq!(code, Some(1));
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["already_done"], good - 1, "{stderr}");
    assert_eq!(summary["detected"], 1);
    let store = FeatureStore::open(&out.join("features.tsv"), 134).unwrap();
    assert_eq!(store.len(), good);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("imageid2idx.json")).unwrap())
            .unwrap();
    assert_eq!(index.as_object().unwrap().len(), good);
}

#[test]
fn a_photo_goes_through_the_detector_into_captioning_and_scoring() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("world");
    let (code, _, err) = oscar(&[
        "world",
        "generate",
        "--out",
        s(&w),
        "--images",
        "40",
        "--feature-dim",
        "128",
        "--render",
        "0",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let tiny = ["--steps", "2", "--batch-size", "4"];
    for (task, extra) in [
        ("caption", vec!["--eval-images", "2"]),
        ("retrieval", vec!["--test-images", "4"]),
        ("vqa", vec![]),
    ] {
        let out = tmp.path().join(task);
        let (code, _, err) = oscar(
            &[
                &["train", task, "--data", s(&w), "--out", s(&out)][..],
                &tiny,
                &extra,
            ]
            .concat(),
        );
        assert_eq!(code, Some(0), "{task}: {err}");
    }
    let photo = detector().join("images/coffee_exif6.jpg");
    let det = detector();
    let (code, stdout, stderr) = oscar(&[
        "caption",
        "--checkpoint",
        s(&tmp.path().join("caption")),
        "--image-file",
        s(&photo),
        "--detector",
        s(&det),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("objects"),
        "the detections are reported: {stderr}"
    );
    let line = stdout.lines().next().unwrap();
    assert!(
        line.starts_with(s(&photo)) && line.split('\t').count() >= 2,
        "{stdout}"
    );

    let (code, stdout, stderr) = oscar(&[
        "score",
        "--checkpoint",
        s(&tmp.path().join("retrieval")),
        "--image-file",
        s(&photo),
        "--detector",
        s(&det),
        "--text",
        "a cup of coffee",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let p = v[0]["match_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));

    let (code, stdout, stderr) = oscar(&[
        "answer",
        "--checkpoint",
        s(&tmp.path().join("vqa")),
        "--image-file",
        s(&photo),
        "--detector",
        s(&det),
        "--question",
        "what color is the cup?",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("answers"), "{stdout}");
}

/// Three shards merged equal one run, row for row; a repeated id is refused.
#[test]
fn three_shards_merged_equal_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let det = detector();
    let imgs = det.join("images");
    let run = |out: &Path, shard: &str| {
        let (code, _, err) = oscar(&[
            "detect",
            "--detector",
            s(&det),
            "--images-dir",
            s(&imgs),
            "--out",
            s(out),
            "--shard",
            shard,
        ]);
        assert_eq!(code, Some(0), "{err}");
    };
    let whole = tmp.path().join("whole");
    run(&whole, "0/1");
    let parts: Vec<PathBuf> = (0..3)
        .map(|k| tmp.path().join(format!("part{k}")))
        .collect();
    for (k, p) in parts.iter().enumerate() {
        run(p, &format!("{k}/3"));
    }
    let merged = tmp.path().join("merged");
    let mut args = vec!["merge-detections", "--out", s(&merged)];
    args.extend(parts.iter().map(|p| s(p)));
    let (code, stdout, err) = oscar(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("11 images from 3 folders"), "{stdout}");
    let rows = |dir: &Path, file: &str| {
        let mut v: Vec<String> = std::fs::read_to_string(dir.join(file))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    for file in ["features.tsv", "predictions.tsv"] {
        assert_eq!(rows(&merged, file), rows(&whole, file), "{file}");
    }
    assert_eq!(
        FeatureStore::open(&merged.join("features.tsv"), 134)
            .unwrap()
            .len(),
        11
    );
    let (code, _, err) = oscar(&[
        "merge-detections",
        "--out",
        s(&tmp.path().join("twice")),
        s(&parts[0]),
        s(&parts[0]),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is in both"), "{err}");
    let (code, _, err) = oscar(&[
        "detect",
        "--detector",
        s(&det),
        "--out",
        s(&whole),
        "--shard",
        "3/3",
        s(&imgs.join("rocket.jpg")),
    ]);
    assert_eq!(code, Some(2), "a bad --shard is a usage error");
    assert!(err.contains("0 ≤ K < N"), "{err}");
}

/// `oscar convert --detector`: safetensors + detector.json + labelmap.json that detect exactly
/// as the `.pth` folder does.
#[test]
fn a_converted_detector_detects_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let det = detector();
    let conv = tmp.path().join("converted");
    let (code, stdout, err) = oscar(&["convert", "--detector", s(&det), s(&conv)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("detector converted"), "{stdout}");
    for f in ["model.safetensors", "detector.json", "labelmap.json"] {
        assert!(conv.join(f).is_file(), "{f}");
    }
    let photo = det.join("images/wide_strip.jpg");
    let run = |d: &Path, out: &Path| {
        let (code, _, err) = oscar(&["detect", "--detector", s(d), "--out", s(out), s(&photo)]);
        assert_eq!(code, Some(0), "{err}");
        std::fs::read_to_string(out.join("features.tsv")).unwrap()
    };
    assert_eq!(
        run(&det, &tmp.path().join("a")),
        run(&conv, &tmp.path().join("b"))
    );
    // A folder without weights says what it needs.
    let (code, _, err) = oscar(&[
        "convert",
        "--detector",
        s(tmp.path()),
        s(&tmp.path().join("c")),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no detector weights"), "{err}");
}

/// A model whose region width is not the detector's says so, naming both widths.
#[test]
fn a_model_of_another_width_refuses_the_detector() {
    let tmp = tempfile::tempdir().unwrap();
    let det = detector();
    let photo = det.join("images/coffee_exif6.jpg");
    let tiny = ["--steps", "2", "--batch-size", "4"];
    let small = tmp.path().join("w8");
    oscar(&[
        "world",
        "generate",
        "--out",
        s(&small),
        "--images",
        "30",
        "--feature-dim",
        "8",
        "--render",
        "0",
    ]);
    let m8 = tmp.path().join("cap8");
    let (code, _, err) = oscar(
        &[
            &[
                "train",
                "caption",
                "--data",
                s(&small),
                "--out",
                s(&m8),
                "--eval-images",
                "2",
            ][..],
            &tiny,
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, stderr) = oscar(&[
        "caption",
        "--checkpoint",
        s(&m8),
        "--image-file",
        s(&photo),
        "--detector",
        s(&det),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("134") && stderr.contains("14"),
        "widths named: {stderr}"
    );
}
