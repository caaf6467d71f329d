//! Scenes and their detector view: objects (category, colour, size, box), region features
//! `ReLU(W2·tanh(W1·[cat|colour|size]) + b2 + noise)` plus the 6 box dims, clutter regions, and
//! detector tags with misses, within-supercategory confusions and spurious detections.

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// (supercategory, [(category, synonyms…)]) — COCO-like, 32 categories in 6 supercategories.
pub const CATEGORIES: &[(&str, &[&[&str]])] = &[
    (
        "person",
        &[
            &["man", "guy", "gentleman"],
            &["woman", "lady"],
            &["child", "kid"],
            &["player", "athlete"],
        ],
    ),
    (
        "animal",
        &[
            &["dog", "puppy"],
            &["cat", "kitten"],
            &["horse", "pony"],
            &["bird"],
            &["elephant"],
            &["giraffe"],
            &["zebra"],
            &["sheep", "lamb"],
        ],
    ),
    (
        "vehicle",
        &[
            &["car", "vehicle"],
            &["bus"],
            &["truck", "lorry"],
            &["bicycle", "bike"],
            &["motorcycle", "motorbike"],
            &["boat"],
        ],
    ),
    (
        "food",
        &[&["pizza"], &["banana"], &["cake", "dessert"], &["apple"]],
    ),
    (
        "furniture",
        &[&["chair"], &["bench"], &["bed"], &["table", "desk"]],
    ),
    (
        "object",
        &[
            &["umbrella", "parasol"],
            &["kite"],
            &["frisbee", "disc"],
            &["surfboard"],
            &["laptop", "computer"],
            &["clock"],
        ],
    ),
];
pub const COLOURS: &[&str] = &[
    "red", "blue", "green", "yellow", "black", "white", "brown", "orange",
];
pub const SIZES: &[&str] = &["small", "large"];
pub const CANVAS: (f32, f32) = (640.0, 480.0);

/// Category names in id order, with their supercategory index.
pub fn categories() -> Vec<(String, usize)> {
    CATEGORIES
        .iter()
        .enumerate()
        .flat_map(|(s, (_, cats))| cats.iter().map(move |c| (c[0].to_string(), s)))
        .collect()
}

/// Generation settings (`oscar world generate` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldConfig {
    pub images: usize,
    pub seed: u64,
    /// Detector feature width before the 6 box dims (real detectors: 2048).
    pub feature_dim: usize,
    /// Feature noise σ: higher makes the features less decodable than the tags.
    pub noise: f32,
    pub max_objects: usize,
    pub max_clutter: usize,
    /// Tag error rates (per object): missed, confused within its supercategory, spurious extra.
    pub tag_miss: f64,
    pub tag_confuse: f64,
    pub tag_spurious: f64,
    /// Chance that one of a VQA question's ten annotators gives a wrong answer. 0.05 puts the
    /// "always yes" baseline near VQA v2's yes/no prior; 0.2 made binary answers so noisy
    /// that the soft BCE targets barely told right from wrong (worlds written before default 0.2).
    #[serde(default = "legacy_answer_noise")]
    pub answer_noise: f64,
    /// Categories held out of the caption training data (novel-object captioning).
    pub novel_categories: Vec<String>,
}

fn legacy_answer_noise() -> f64 {
    0.2
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            images: 1000,
            seed: 0,
            feature_dim: 2048,
            noise: 1.5,
            max_objects: 4,
            max_clutter: 2,
            tag_miss: 0.1,
            tag_confuse: 0.1,
            tag_spurious: 0.1,
            answer_noise: 0.05,
            novel_categories: vec!["zebra".into(), "laptop".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Object {
    pub category: usize,
    pub colour: usize,
    pub size: usize,
    /// x1, y1, x2, y2 in pixels.
    pub rect: [f32; 4],
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tag {
    pub class: String,
    pub conf: f32,
    pub rect: [f32; 4],
}

/// One image of the world.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scene {
    pub id: String,
    pub objects: Vec<Object>,
    /// `num_regions × (feature_dim + 6)` floats: objects and clutter, shuffled.
    pub regions: Vec<f32>,
    pub num_regions: usize,
    /// Detector tags (noisy).
    pub tags: Vec<Tag>,
    pub split: String,
}

/// The generated world: scenes plus the fixed random projection that made the features.
pub struct World {
    pub config: WorldConfig,
    pub scenes: Vec<Scene>,
    pub category_names: Vec<(String, usize)>,
}

struct FeatureMap {
    w1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    inp: usize,
    hid: usize,
    dim: usize,
}

impl FeatureMap {
    fn new(rng: &mut StdRng, inp: usize, dim: usize) -> Self {
        let hid = 96;
        let n1 = Normal::new(0.0f32, (1.0f32 / 3.0).sqrt()).expect("valid σ");
        let n2 = Normal::new(0.0f32, (4.0f32 / hid as f32).sqrt()).expect("valid σ");
        FeatureMap {
            w1: (0..hid * inp).map(|_| n1.sample(rng)).collect(),
            w2: (0..dim * hid).map(|_| n2.sample(rng)).collect(),
            b2: (0..dim).map(|_| n2.sample(rng)).collect(),
            inp,
            hid,
            dim,
        }
    }

    fn apply(&self, x: &[f32], noise: &Normal<f32>, rng: &mut StdRng) -> Vec<f32> {
        let h: Vec<f32> = (0..self.hid)
            .map(|i| {
                (0..self.inp)
                    .map(|j| self.w1[i * self.inp + j] * x[j])
                    .sum::<f32>()
                    .tanh()
            })
            .collect();
        (0..self.dim)
            .map(|d| {
                ((0..self.hid)
                    .map(|i| self.w2[d * self.hid + i] * h[i])
                    .sum::<f32>()
                    + self.b2[d]
                    + noise.sample(rng))
                .max(0.0)
            })
            .collect()
    }
}

fn box_dims(r: [f32; 4]) -> [f32; 6] {
    let (w, h) = CANVAS;
    [
        r[0] / w,
        r[1] / h,
        r[2] / w,
        r[3] / h,
        (r[2] - r[0]) / w,
        (r[3] - r[1]) / h,
    ]
}

fn random_rect(rng: &mut StdRng, size: usize) -> [f32; 4] {
    let (cw, ch) = CANVAS;
    let (lo, hi) = if size == 0 {
        (60.0, 160.0)
    } else {
        (180.0, 320.0)
    };
    let w: f32 = rng.random_range(lo..hi);
    let h: f32 = rng.random_range(lo * 0.75..hi * 0.75);
    let x1: f32 = rng.random_range(0.0..cw - w);
    let y1: f32 = rng.random_range(0.0..ch - h);
    [x1.round(), y1.round(), (x1 + w).round(), (y1 + h).round()]
}

/// Every task reads pairs or sets from train, val and test (NLVR2 pairs two images of a split),
/// so each gets at least two images: in a small world whose novel-category scenes took the
/// positions of val or test, the last training scenes move there. Worlds of a few hundred
/// images never need it and are unchanged.
fn fill_small_splits(scenes: &mut [Scene], config: &WorldConfig) -> crate::Result<()> {
    const MIN: usize = 2;
    for target in ["test", "val"] {
        while scenes.iter().filter(|s| s.split == target).count() < MIN {
            let train = scenes.iter().filter(|s| s.split == "train").count();
            match scenes.iter_mut().rev().find(|s| s.split == "train") {
                Some(s) if train > MIN => s.split = target.into(),
                _ => {
                    let usable = scenes.iter().filter(|s| s.split != "novel").count();
                    return Err(crate::WorldError::Invalid(format!(
                        "--images {} with seed {} leaves {usable} images outside the novel categories; train, val and test need {MIN} each: use more images",
                        config.images, config.seed
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Generates the world (deterministic in `config.seed`).
pub fn generate(config: &WorldConfig) -> crate::Result<World> {
    let cats = categories();
    validate(config, &cats)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let inputs = cats.len() + COLOURS.len() + SIZES.len();
    let draw = SceneDraw {
        config,
        cats: &cats,
        fmap: FeatureMap::new(&mut rng, inputs, config.feature_dim),
        noise: Normal::new(0.0f32, config.noise.max(1e-6))
            .map_err(|e| crate::WorldError::Invalid(e.to_string()))?,
        clutter: Normal::new(0.2f32, 0.8).expect("valid σ"),
    };
    let novel: Vec<usize> = config
        .novel_categories
        .iter()
        .filter_map(|n| cats.iter().position(|(c, _)| c == n))
        .collect();
    let dim = config.feature_dim + 6;
    let mut scenes = Vec::with_capacity(config.images);
    for i in 0..config.images {
        // The draws, in this order, are what a seed fixes.
        let objects = draw.objects(&mut rng);
        let regions = draw.regions(&mut rng, &objects);
        let tags = draw.tags(&mut rng, &objects);
        let is_novel = objects.iter().any(|o| novel.contains(&o.category));
        let u = (i as f64 + 0.5) / config.images as f64;
        let split = if is_novel {
            "novel"
        } else if u < 0.8 {
            "train"
        } else if u < 0.9 {
            "val"
        } else {
            "test"
        };
        let num_regions = regions.len();
        scenes.push(Scene {
            id: format!("img{i:06}"),
            objects,
            regions: regions.into_iter().flatten().collect(),
            num_regions,
            tags,
            split: split.into(),
        });
        debug_assert_eq!(
            scenes.last().map(|s| s.regions.len()),
            Some(num_regions * dim)
        );
    }
    fill_small_splits(&mut scenes, config)?;
    Ok(World {
        config: config.clone(),
        scenes,
        category_names: cats,
    })
}

/// The configuration's values a world can be drawn from, or what is wrong with them.
fn validate(config: &WorldConfig, cats: &[(String, usize)]) -> crate::Result<()> {
    if config.images < 10 {
        return Err(crate::WorldError::Invalid(format!(
            "--images {} is too few: at least 10 are needed for the splits",
            config.images
        )));
    }
    if !(0.0..=1.0).contains(&config.answer_noise) {
        return Err(crate::WorldError::Invalid(format!(
            "--answer-noise {} is not a probability in [0, 1]",
            config.answer_noise
        )));
    }
    if config.feature_dim == 0 || config.max_objects == 0 {
        return Err(crate::WorldError::Invalid(
            "--feature-dim and the object count must be positive".into(),
        ));
    }
    for n in &config.novel_categories {
        if !cats.iter().any(|(c, _)| c == n) {
            return Err(crate::WorldError::Invalid(format!(
                "novel category {n:?} is not one of the world's categories"
            )));
        }
    }
    Ok(())
}

/// What every scene is drawn with: the categories, the map from an object's attributes to its
/// region feature, and the noise of features and clutter.
struct SceneDraw<'a> {
    config: &'a WorldConfig,
    cats: &'a [(String, usize)],
    fmap: FeatureMap,
    noise: Normal<f32>,
    clutter: Normal<f32>,
}

impl SceneDraw<'_> {
    /// 1 to `max_objects` objects; 30 % of the objects after the first repeat its category, so
    /// counts appear.
    fn objects(&self, rng: &mut StdRng) -> Vec<Object> {
        let n_obj = rng.random_range(1..=self.config.max_objects);
        let mut objects: Vec<Object> = Vec::with_capacity(n_obj);
        for k in 0..n_obj {
            let category = if k > 0 && rng.random_bool(0.3) {
                objects[0].category
            } else {
                rng.random_range(0..self.cats.len())
            };
            let size = rng.random_range(0..SIZES.len());
            objects.push(Object {
                category,
                colour: rng.random_range(0..COLOURS.len()),
                size,
                rect: random_rect(rng, size),
            });
        }
        objects
    }

    /// One region per object (its attributes through the feature map, plus its box), up to
    /// `max_clutter` clutter regions, shuffled, at most 50.
    fn regions(&self, rng: &mut StdRng, objects: &[Object]) -> Vec<Vec<f32>> {
        let ncat = self.cats.len();
        let mut regions: Vec<Vec<f32>> = objects
            .iter()
            .map(|o| {
                let mut x = vec![0f32; ncat + COLOURS.len() + SIZES.len()];
                x[o.category] = 1.0;
                x[ncat + o.colour] = 1.0;
                x[ncat + COLOURS.len() + o.size] = 1.0;
                let mut f = self.fmap.apply(&x, &self.noise, rng);
                f.extend_from_slice(&box_dims(o.rect));
                f
            })
            .collect();
        for _ in 0..rng.random_range(0..=self.config.max_clutter) {
            let mut f: Vec<f32> = (0..self.config.feature_dim)
                .map(|_| self.clutter.sample(rng).max(0.0))
                .collect();
            let size = rng.random_range(0..2);
            f.extend_from_slice(&box_dims(random_rect(rng, size)));
            regions.push(f);
        }
        regions.shuffle(rng);
        regions.truncate(50);
        regions
    }

    /// The detector's tags: each object missed, confused with a category of its supercategory,
    /// or found, at the configured rates, and sometimes a spurious tag beside it.
    fn tags(&self, rng: &mut StdRng, objects: &[Object]) -> Vec<Tag> {
        let (cats, config) = (self.cats, self.config);
        let mut tags = Vec::new();
        for o in objects {
            let r: f64 = rng.random();
            if r < config.tag_miss {
            } else if r < config.tag_miss + config.tag_confuse {
                let sup = cats[o.category].1;
                let same: Vec<usize> = (0..cats.len())
                    .filter(|&c| cats[c].1 == sup && c != o.category)
                    .collect();
                let c = *same.choose(rng).unwrap_or(&o.category);
                tags.push(Tag {
                    class: cats[c].0.clone(),
                    conf: rng.random_range(0.3..0.8),
                    rect: o.rect,
                });
            } else {
                tags.push(Tag {
                    class: cats[o.category].0.clone(),
                    conf: rng.random_range(0.5..1.0),
                    rect: o.rect,
                });
            }
            if rng.random_bool(config.tag_spurious) {
                let c = rng.random_range(0..cats.len());
                tags.push(Tag {
                    class: cats[c].0.clone(),
                    conf: rng.random_range(0.2..0.6),
                    rect: random_rect(rng, 0),
                });
            }
        }
        tags
    }
}
