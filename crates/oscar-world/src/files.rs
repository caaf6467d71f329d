//! Readers for the two files of a world that no reference format covers: `world.json` (how it was
//! generated and what it holds) and `scenes.json` (the ground truth behind every image). The
//! demo, the tasks and `oscar check` read them through these functions, so a truncated or
//! wrongly-typed file is reported once, with the file and the entry, wherever it is read.

use crate::scene::{categories, COLOURS, SIZES};
use crate::write::Summary;
use crate::{WorldConfig, WorldError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// One category as `world.json` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryMeta {
    pub name: String,
    pub supercategory: String,
}

/// `world.json`: the generation settings, the categories and the summary of what was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldMeta {
    pub config: WorldConfig,
    pub categories: Vec<CategoryMeta>,
    pub summary: Summary,
}

/// One object of a scene, by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRecord {
    pub category: String,
    pub colour: String,
    pub size: String,
    /// `[x1, y1, x2, y2]` in pixels of the 640 × 480 canvas.
    pub rect: [f32; 4],
}

/// One entry of `scenes.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneRecord {
    pub id: String,
    pub split: String,
    pub objects: Vec<ObjectRecord>,
    pub captions: Vec<String>,
}

/// The splits a world's images fall into.
pub const SPLITS: [&str; 4] = ["train", "val", "test", "novel"];

fn read_text(path: &Path) -> crate::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| WorldError::Io {
        path: path.into(),
        err: e,
    })?;
    if text.trim().is_empty() {
        return Err(invalid(path, "the file is empty"));
    }
    Ok(text)
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> WorldError {
    WorldError::Invalid(format!("{}: {what}", path.display()))
}

/// Reads and checks `world.json`: the summary's region width must be the configured feature
/// width plus the 6 box dimensions, and the categories must be the world's own.
pub fn read_world_meta(path: &Path) -> crate::Result<WorldMeta> {
    let text = read_text(path)?;
    let meta: WorldMeta = serde_json::from_str(&text).map_err(|e| {
        invalid(
            path,
            format!("not a world.json written by `oscar world generate`: {e}"),
        )
    })?;
    if meta.summary.region_dim != meta.config.feature_dim + 6 {
        return Err(invalid(
            path,
            format!(
                "summary.region_dim is {}, expected config.feature_dim + 6 = {}",
                meta.summary.region_dim,
                meta.config.feature_dim + 6
            ),
        ));
    }
    let known = categories();
    if meta.categories.len() != known.len()
        || meta
            .categories
            .iter()
            .zip(&known)
            .any(|(m, (k, _))| &m.name != k)
    {
        return Err(invalid(
            path,
            format!(
                "categories: expected the world's {} categories in order ({}, …)",
                known.len(),
                known[0].0
            ),
        ));
    }
    if meta.config.images == 0 || meta.summary.images.values().sum::<usize>() != meta.config.images
    {
        return Err(invalid(
            path,
            format!(
                "summary.images counts {} images, config.images says {}",
                meta.summary.images.values().sum::<usize>(),
                meta.config.images
            ),
        ));
    }
    Ok(meta)
}

/// Reads and checks `scenes.json`: unique ids, a known split, categories, colours and sizes by
/// name, boxes inside the canvas, and at least one caption per scene.
pub fn read_scenes(path: &Path) -> crate::Result<Vec<SceneRecord>> {
    let text = read_text(path)?;
    let scenes: Vec<SceneRecord> = serde_json::from_str(&text).map_err(|e| {
        invalid(
            path,
            format!("not a scenes.json written by `oscar world generate`: {e}"),
        )
    })?;
    if scenes.is_empty() {
        return Err(invalid(path, "no scenes"));
    }
    let cats: HashSet<String> = categories().into_iter().map(|(c, _)| c).collect();
    let mut ids = HashSet::new();
    for (i, s) in scenes.iter().enumerate() {
        let at = |what: String| invalid(path, format!("scene {i} ({}): {what}", s.id));
        if !ids.insert(s.id.as_str()) {
            return Err(at("the id appears twice".into()));
        }
        if !SPLITS.contains(&s.split.as_str()) {
            return Err(at(format!(
                "split {:?}, expected one of {SPLITS:?}",
                s.split
            )));
        }
        if s.objects.is_empty() || s.captions.is_empty() {
            return Err(at("expected at least one object and one caption".into()));
        }
        for (k, o) in s.objects.iter().enumerate() {
            if !cats.contains(&o.category)
                || !COLOURS.contains(&o.colour.as_str())
                || !SIZES.contains(&o.size.as_str())
            {
                return Err(at(format!(
                    "object {k}: {} {} {} is not a category, colour and size of the world",
                    o.size, o.colour, o.category
                )));
            }
            let [x1, y1, x2, y2] = o.rect;
            if !(0.0 <= x1 && x1 < x2 && 0.0 <= y1 && y1 < y2) {
                return Err(at(format!(
                    "object {k}: box {:?} is not [x1, y1, x2, y2] with x1 < x2, y1 < y2",
                    o.rect
                )));
            }
        }
    }
    Ok(scenes)
}
