//! The detector against scene_graph_benchmark's own modeling code: fixtures written by
//! `tools/reference/make_detector_goldens.py` (AttrRCNN with the real module tree at reduced
//! width, seeded random weights, a dozen photos and synthetic images; see `meta.json` there).
//! Each stage is fed the reference's inputs, then the whole pipeline runs from the image file.

use candle_core::{Device, Tensor};
use oscar_detect::boxes::{Box4, NmsRule};
use oscar_detect::picture::read_image;
use oscar_detect::preprocess::prepare;
use oscar_detect::roi_align::roi_align;
use oscar_detect::Detector;
use sha2::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detector")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    let p = fixtures()
        .join("goldens")
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&p, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn meta() -> serde_json::Value {
    let p = fixtures().join("meta.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn boxes(t: &Tensor) -> Vec<Box4> {
    f32s(t)
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect()
}

/// Largest |a-b| relative to the largest |b| (the scale of the tensor).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn detector() -> Detector {
    Detector::load(&fixtures()).expect("the fixture detector loads from its .pth")
}

/// The images and their golden names, from meta.json.
fn images() -> Vec<(String, PathBuf)> {
    let m = meta();
    let imgs = m["images"].as_object().expect("meta.json: images");
    let mut v: Vec<(String, PathBuf)> = imgs
        .iter()
        .map(|(file, info)| {
            (
                info["name"].as_str().unwrap().to_string(),
                fixtures().join("images").join(file),
            )
        })
        .collect();
    v.sort();
    assert!(v.len() >= 10, "a dozen images expected, got {}", v.len());
    v
}

#[test]
fn preprocessing_matches_pillow_and_the_transforms() {
    let det = detector();
    let m = meta();
    for (file, info) in m["images"].as_object().unwrap() {
        let img = read_image(&fixtures().join("images").join(file), 0).unwrap();
        let want_orig: Vec<u64> = info["orig_wh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            [img.width as u64, img.height as u64],
            [want_orig[0], want_orig[1]],
            "{file}: decoded size (EXIF orientation?)"
        );
        let p = prepare(&img, &det.config).unwrap();
        let want_resized: Vec<u64> = info["resized_wh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            [p.resized.width as u64, p.resized.height as u64],
            [want_resized[0], want_resized[1]],
            "{file}: resized size"
        );
        let decoded = hex(&sha2::Sha256::digest(&img.data));
        assert_eq!(
            decoded,
            info["decoded_rgb_u8_sha256"].as_str().unwrap(),
            "{file}: decoded pixels differ from OpenCV's"
        );
        let sha = hex(&sha2::Sha256::digest(&p.resized.data));
        let g = load(info["name"].as_str().unwrap());
        if let Some(u8s) = g.get("image_resized_u8") {
            let want: Vec<u8> = u8s.flatten_all().unwrap().to_vec1().unwrap();
            let diff = want
                .iter()
                .zip(&p.resized.data)
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(diff, 0, "{file}: {diff} resized bytes differ from Pillow's");
            let x = g
                .get("input_normalized")
                .expect("input_normalized beside image_resized_u8");
            assert_eq!(f32s(&p.tensor), f32s(x), "{file}: normalised input");
        }
        assert_eq!(
            sha,
            info["resized_rgb_u8_sha256"].as_str().unwrap(),
            "{file}: resized image differs from the reference's (Pillow resize or decoding)"
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn backbone_matches_from_the_reference_input() {
    let det = detector();
    let mut checked = 0;
    for (name, _) in images() {
        let g = load(&name);
        let Some(x) = g.get("input_normalized") else {
            continue;
        };
        let c4 = det.backbone(x).unwrap();
        assert_eq!(c4.dims(), g["c4"].dims(), "{name}: C4 shape");
        let e = rel_err(&f32s(&c4), &f32s(&g["c4"]));
        assert!(e < 1e-4, "{name}: C4 relative error {e}");
        checked += 1;
    }
    assert!(
        checked >= 2,
        "fixtures with the normalised input: {checked}"
    );
}

#[test]
fn rpn_matches_when_fed_the_reference_c4() {
    let det = detector();
    for (name, _) in images() {
        let g = load(&name);
        let (logits, deltas) = det.rpn_head(&g["c4"]).unwrap();
        let e1 = rel_err(&f32s(&logits), &f32s(&g["rpn_objectness_logits"]));
        let e2 = rel_err(&f32s(&deltas), &f32s(&g["rpn_box_deltas"]));
        assert!(e1 < 1e-4 && e2 < 1e-4, "{name}: RPN head errors {e1} {e2}");
        // Proposals from the reference's own head outputs: the same boxes in the same order.
        let wh = i64s(&g["resized_wh"]);
        let p = det
            .proposals(
                &g["rpn_objectness_logits"],
                &g["rpn_box_deltas"],
                (wh[0] as usize, wh[1] as usize),
            )
            .unwrap();
        let want = boxes(&g["proposals"]);
        assert_eq!(p.boxes.len(), want.len(), "{name}: proposal count");
        for (i, (a, b)) in p.boxes.iter().zip(&want).enumerate() {
            let d = (0..4).map(|k| (a[k] - b[k]).abs()).fold(0f32, f32::max);
            assert!(d < 1e-3, "{name}: proposal {i} {a:?} vs {b:?}");
        }
        let e = rel_err(&p.objectness, &f32s(&g["proposal_objectness"]));
        assert!(e < 1e-5, "{name}: objectness {e}");
    }
}

#[test]
fn box_head_matches_when_fed_the_reference_proposals() {
    let det = detector();
    for (name, _) in images() {
        let g = load(&name);
        let props = boxes(&g["proposals"]);
        let f = det.region_features(&g["c4"], &props).unwrap();
        let e = rel_err(&f32s(&f), &f32s(&g["box_features"]));
        assert!(e < 1e-4, "{name}: region features relative error {e}");
        let wh = i64s(&g["resized_wh"]);
        let (logits, _) = det
            .classify(&g["box_features"], &props, (wh[0] as usize, wh[1] as usize))
            .unwrap();
        let e = rel_err(&f32s(&logits), &f32s(&g["class_logits"]));
        assert!(e < 1e-5, "{name}: class logits relative error {e}");
    }
}

/// The post-processing run on the reference's class logits and proposals.
fn kept_from_reference_logits(
    det: &Detector,
    g: &HashMap<String, Tensor>,
) -> Vec<oscar_detect::postprocess::Kept> {
    let wh = i64s(&g["resized_wh"]);
    det.postprocess(
        &g["class_logits"],
        None,
        &boxes(&g["proposals"]),
        (wh[0] as usize, wh[1] as usize),
    )
    .unwrap()
}

#[test]
fn postprocessing_keeps_the_same_detections() {
    let det = detector();
    for (name, _) in images() {
        let g = load(&name);
        let kept = kept_from_reference_logits(&det, &g);
        let idx: Vec<i64> = kept.iter().map(|k| k.proposal as i64).collect();
        assert_eq!(
            idx,
            i64s(&g["det_proposal_index"]),
            "{name}: which proposals are kept, in order"
        );
        let labels: Vec<i64> = kept.iter().map(|k| k.label as i64).collect();
        assert_eq!(labels, i64s(&g["det_labels"]), "{name}: labels");
        let scores: Vec<f32> = kept.iter().map(|k| k.score).collect();
        let e = rel_err(&scores, &f32s(&g["det_scores"]));
        assert!(e < 1e-5, "{name}: scores {e}");
        let rects: Vec<f32> = kept.iter().flat_map(|k| k.rect).collect();
        assert_eq!(rects, f32s(&g["det_boxes"]), "{name}: boxes");
    }
}

#[test]
fn attributes_match_when_fed_the_reference_detections() {
    let det = detector();
    for (name, _) in images() {
        let g = load(&name);
        let kept = kept_from_reference_logits(&det, &g);
        let logits = det
            .attribute_logits(&g["c4"], &g["box_features"], &kept)
            .unwrap()
            .expect("attribute head");
        let e = rel_err(&f32s(&logits), &f32s(&g["attr_logits"]));
        assert!(e < 1e-5, "{name}: attribute logits {e}");
        let chosen = oscar_detect::attributes::select(
            &f32s(&g["attr_logits"]),
            det.config.num_attributes,
            &det.config,
        );
        let want_l = i64s(&g["attr_labels"]);
        let want_s = f32s(&g["attr_scores"]);
        let per = det.config.max_attr_per_obj;
        for (i, row) in chosen.iter().enumerate() {
            let want: Vec<(i64, f32)> = (0..per)
                .map(|j| (want_l[i * per + j], want_s[i * per + j]))
                .filter(|&(_, s)| s > 0.0)
                .collect();
            let got: Vec<(i64, f32)> = row.iter().map(|&(a, s)| (a as i64, s)).collect();
            assert_eq!(
                got.len(),
                want.len(),
                "{name}: detection {i} attribute count"
            );
            for (a, b) in got.iter().zip(&want) {
                assert_eq!(
                    a.0, b.0,
                    "{name}: detection {i} attribute ids {got:?} vs {want:?}"
                );
                assert!(
                    (a.1 - b.1).abs() < 1e-6,
                    "{name}: detection {i} attribute scores"
                );
            }
        }
    }
}

/// End to end from the file: the same detections (IoU > 0.99 in the original image's pixels,
/// in order), labels, scores and features.
#[test]
fn end_to_end_from_the_image_file() {
    let det = detector();
    for (name, path) in images() {
        let g = load(&name);
        let d = det.detect_file(&path).unwrap();
        let want = boxes(&g["det_boxes_orig"]);
        let labels = i64s(&g["det_labels"]);
        assert_eq!(d.objects.len(), want.len(), "{name}: number of detections");
        // The +1 convention's IoU: boxes clipped to a 20-pixel-high image can have zero height.
        let rule = NmsRule {
            plus_one: true,
            suppress_on_equal: false,
        };
        let feats = f32s(&g["box_features"]);
        let dim = g["box_features"].dims()[1];
        let pidx = i64s(&g["det_proposal_index"]);
        for (i, o) in d.objects.iter().enumerate() {
            let iou = rule.iou(&o.rect, &want[i]);
            assert!(iou > 0.99, "{name}: detection {i} IoU {iou}");
            assert_eq!(o.label as i64, labels[i], "{name}: detection {i} label");
            let p = pidx[i] as usize;
            let e = rel_err(&o.feature, &feats[p * dim..(p + 1) * dim]);
            assert!(e < 1e-4, "{name}: detection {i} feature relative error {e}");
        }
    }
}

#[test]
fn roi_align_matches_torchvision_legacy_on_edge_boxes() {
    let p = fixtures().join("goldens/roi_align.safetensors");
    let g = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    let out = roi_align(&g["features"], &boxes(&g["boxes"]), 14, 1.0 / 16.0).unwrap();
    let (got, want) = (f32s(&out), f32s(&g["pooled"]));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "ROIAlign max abs error {worst}");
}

#[test]
fn nms_matches_the_legacy_kernel_and_differs_from_torchvision() {
    let p = fixtures().join("goldens/nms.safetensors");
    let g = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    let b = boxes(&g["boxes"]);
    let s = f32s(&g["scores"]);
    let legacy_gt = NmsRule {
        plus_one: true,
        suppress_on_equal: false,
    };
    let legacy_ge = NmsRule {
        plus_one: true,
        suppress_on_equal: true,
    };
    let tv = NmsRule {
        plus_one: false,
        suppress_on_equal: false,
    };
    let sorted = |mut v: Vec<i64>| {
        v.sort();
        v
    };
    for (t, tag) in [(0.3f32, "03"), (0.5, "05"), (0.7, "07")] {
        let run = |r: NmsRule| sorted(r.nms(&b, &s, t).into_iter().map(|i| i as i64).collect());
        assert_eq!(
            run(legacy_gt),
            sorted(i64s(&g[&format!("keep_{tag}")])),
            "legacy (>) at {t}"
        );
        assert_eq!(
            run(legacy_ge),
            sorted(i64s(&g[&format!("keep_{tag}_legacy_ge")])),
            "legacy (>=) at {t}"
        );
        assert_eq!(
            run(tv),
            sorted(i64s(&g[&format!("keep_{tag}_torchvision")])),
            "torchvision at {t}"
        );
    }
}
