//! The served world (`--world DIR`, a directory `oscar world generate` wrote): its images as
//! model inputs by id, so requests can name `{"world_id": …}`, and its scenes for the page's
//! gallery (objects with boxes, tags, captions).

use oscar::data::features::{parse_detections, FeatureStore};
use oscar::data::tsv::TsvFile;
use oscar::infer::ImageInput;
use oscar_world::files::{read_scenes, ObjectRecord};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One image of the world, as `GET /world` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorldImage {
    pub id: String,
    pub split: String,
    /// The detector's tags (what the models read).
    pub tags: Vec<String>,
    /// The scene's objects with their boxes on the canvas.
    #[schema(value_type = Vec<Object>)]
    pub objects: Vec<ObjectRecord>,
    pub captions: Vec<String>,
}

/// The world's images, by id.
pub struct ServedWorld {
    pub dir: PathBuf,
    pub images: Vec<WorldImage>,
    inputs: HashMap<String, ImageInput>,
}

impl ServedWorld {
    /// Reads `scenes.json`, `features/features.tsv` (rows `dim` wide) and `labels/predictions.tsv`.
    pub fn open(dir: &Path, dim: usize) -> anyhow::Result<Self> {
        let scenes = read_scenes(&dir.join("scenes.json"))?;
        let store = FeatureStore::open(&dir.join("features/features.tsv"), dim)?;
        let labels_path = dir.join("labels/predictions.tsv");
        let labels = TsvFile::open(&labels_path)?;
        let index = labels.key_index()?;
        let mut images = Vec::with_capacity(scenes.len());
        let mut inputs = HashMap::with_capacity(scenes.len());
        for s in scenes {
            let tags: Vec<String> = match index.get(&s.id) {
                Some(&row) => {
                    let f = labels.row(row)?;
                    let at = format!("{}: row {}", labels_path.display(), row + 1);
                    parse_detections(f.get(1).map(String::as_str).unwrap_or(""), &at)
                        .map_err(anyhow::Error::msg)?
                        .tags(0.0, false)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect()
                }
                None => Vec::new(),
            };
            inputs.insert(
                s.id.clone(),
                ImageInput::from_store(&store, &s.id, tags.clone())?,
            );
            images.push(WorldImage {
                id: s.id,
                split: s.split,
                tags,
                objects: s.objects,
                captions: s.captions,
            });
        }
        Ok(ServedWorld {
            dir: dir.to_path_buf(),
            images,
            inputs,
        })
    }

    /// The model input of image `id`.
    pub fn image(&self, id: &str) -> Option<&ImageInput> {
        self.inputs.get(id)
    }
}

/// An object of a scene (the schema of [`ObjectRecord`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Object {
    category: String,
    colour: String,
    size: String,
    /// `[x1, y1, x2, y2]` in pixels of the 640 × 480 canvas.
    rect: [f32; 4],
}
