//! The released checkpoint's layout at full size: a `.pth` written with exactly the key names,
//! shapes and order of scene_graph_benchmark's `AttrRCNN` state dict for
//! `sgg_configs/vgattr/vinvl_x152c4.yaml` (listed by `make_detector_goldens.py` from the model it
//! instantiated: `fixtures/detector/full_size_keys.json`), random values, loaded with VinVL's
//! configuration inferred from the file alone (no detector.json).

#[path = "support/torch_zip.rs"]
mod torch_zip;

use oscar_detect::Detector;
use std::path::Path;

#[test]
fn released_x152c4_layout_loads_from_a_pth() {
    let keys_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detector/full_size_keys.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&keys_path).unwrap()).unwrap();
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 841);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut tensors = Vec::new();
    for k in keys {
        let name = k[0].as_str().unwrap().to_string();
        let shape: Vec<usize> = k[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        // BN variances must be positive; everything else small noise.
        let positive = name.ends_with("running_var");
        let values = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let u = (seed >> 40) as f32 / (1u64 << 24) as f32;
                if positive {
                    0.5 + u
                } else {
                    (u - 0.5) * 0.02
                }
            })
            .collect();
        tensors.push((name, shape, values));
    }
    let dir = tempfile::tempdir().unwrap();
    torch_zip::save_state_dict(&dir.path().join("vinvl_vg_x152c4.pth"), &tensors).unwrap();
    let classes: serde_json::Map<String, serde_json::Value> =
        (1..1595).map(|i| (format!("class{i}"), i.into())).collect();
    let attrs: serde_json::Map<String, serde_json::Value> =
        (1..525).map(|i| (format!("attr{i}"), i.into())).collect();
    let lm = serde_json::json!({"label_to_idx": classes, "attribute_to_idx": attrs});
    std::fs::write(
        dir.path().join("VG-SGG-dicts-vgoi6-clipped.json"),
        lm.to_string(),
    )
    .unwrap();
    drop(tensors);

    let det = Detector::load(dir.path()).expect("the released layout loads");
    let c = &det.config;
    assert_eq!(
        (c.num_classes, c.num_attributes, c.stage_blocks.clone()),
        (1595, 525, vec![3, 8, 36])
    );
    assert_eq!(
        (c.num_groups, c.width_per_group, c.feature_dim()),
        (32, 8, 2048)
    );
    // Only the anchors buffer and the (ignored) box regression stay unread.
    let unused: Vec<&str> = det.unused_keys().iter().map(String::as_str).collect();
    assert_eq!(
        unused,
        [
            "roi_heads.box.predictor.bbox_pred.bias",
            "roi_heads.box.predictor.bbox_pred.weight",
            "rpn.anchor_generator.cell_anchors.0"
        ]
    );

    // A label map for another checkpoint is refused, naming the file and both counts.
    let short: serde_json::Map<String, serde_json::Value> =
        (1..1601).map(|i| (format!("c{i}"), i.into())).collect();
    std::fs::write(
        dir.path().join("VG-SGG-dicts-vgoi6-clipped.json"),
        serde_json::json!({"label_to_idx": short}).to_string(),
    )
    .unwrap();
    let err = Detector::load(dir.path())
        .err()
        .expect("1601 names for 1595 logits")
        .to_string();
    assert!(
        err.contains("VG-SGG-dicts-vgoi6-clipped.json")
            && err.contains("1601")
            && err.contains("1595"),
        "{err}"
    );
}
