//! The JSON the endpoints read and write (docs/serve.md), shaped after Hugging Face's pipelines
//! (`generated_text`; `answer`/`score`) and text-embeddings-inference's rerank (`index`/`score`,
//! best first), and the checks that turn a request's image into the models' [`ImageInput`].

use crate::error::ApiError;
use base64::Engine;
use oscar::infer::ImageInput;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One value or a list of them: a list answers with a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values, and whether a single one was given.
    pub fn into_vec(self) -> (Vec<T>, bool) {
        match self {
            OneOrMany::One(t) => (vec![t], true),
            OneOrMany::Many(v) => (v, false),
        }
    }
}

/// Region features: one row per region, or the rows as base64 little-endian float32.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Features {
    Rows(Vec<Vec<f32>>),
    Base64(String),
}

/// An image: an id of the served world, a photo (with a server started with `--detector`), or
/// region features (with the detector's boxes and the image size, or already with the 6 box
/// dimensions) and tags.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// An image of the served world (`GET /world`).
    pub world_id: Option<String>,
    /// A JPEG or PNG file, base64: VinVL's detector gives its regions and tags (`--detector`).
    pub image: Option<String>,
    pub features: Option<Features>,
    /// `[x1, y1, x2, y2]` in pixels, one per feature row (then rows are `feature_dim − 6` wide).
    pub boxes: Option<Vec<[f32; 4]>>,
    /// `[width, height]` in pixels, with `boxes`.
    pub image_size: Option<[f32; 2]>,
    /// The detector's object tags; with `world_id`, replaces the world's tags.
    pub tags: Option<Vec<String>>,
}

/// Decodes and checks the feature rows of `at`: all finite, each `width` values.
fn feature_rows(f: &Features, width: usize, at: &str) -> Result<Vec<f32>, ApiError> {
    let data = match f {
        Features::Rows(rows) => {
            if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
                return Err(ApiError::validation(format!(
                    "{at}.features[{i}] has {} values, expected {width}",
                    r.len()
                )));
            }
            rows.concat()
        }
        Features::Base64(s) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| ApiError::validation(format!("{at}.features: not base64 ({e})")))?;
            if bytes.len() % (4 * width) != 0 {
                return Err(ApiError::validation(format!(
                    "{at}.features: {} bytes are not whole rows of {width} float32 values",
                    bytes.len()
                )));
            }
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }
    };
    if data.is_empty() {
        return Err(ApiError::validation(format!(
            "{at}.features: no regions (at least one row is needed)"
        )));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::validation(format!(
            "{at}.features: value {} of row {} is not finite",
            i % width,
            i / width
        )));
    }
    Ok(data)
}

impl ImageSpec {
    /// The model input, for models reading `dim`-wide regions; `world` resolves `world_id`.
    pub fn resolve(
        &self,
        dim: usize,
        world: Option<&crate::world::ServedWorld>,
        at: &str,
    ) -> Result<ImageInput, ApiError> {
        if self.image.is_some() {
            return Err(ApiError::validation(format!(
                "{at}.image: photos need a server started with --detector DIR"
            )));
        }
        match (&self.world_id, &self.features) {
            (Some(id), None) => {
                if self.boxes.is_some() || self.image_size.is_some() {
                    return Err(ApiError::validation(format!(
                        "{at}: boxes and image_size go with features, not world_id"
                    )));
                }
                let w = world.ok_or_else(|| {
                    ApiError::validation(format!(
                        "{at}.world_id: no world is served (start the server with --world DIR)"
                    ))
                })?;
                let mut im = w.image(id).cloned().ok_or_else(|| {
                    ApiError::not_found(format!(
                        "{at}.world_id: no image {id:?} in the served world"
                    ))
                })?;
                if let Some(t) = &self.tags {
                    im.tags = t.clone();
                }
                Ok(im)
            }
            (None, Some(f)) => {
                let tags = self.tags.clone().unwrap_or_default();
                match (&self.boxes, self.image_size) {
                    (None, None) => Ok(ImageInput::new(feature_rows(f, dim, at)?, tags)),
                    (Some(boxes), Some([w, h])) => {
                        let det = dim.checked_sub(6).filter(|d| *d > 0).ok_or_else(|| {
                            ApiError::validation(format!("{at}: the model's {dim}-d regions leave no room for boxes"))
                        })?;
                        let rows = feature_rows(f, det, at)?;
                        if rows.len() != boxes.len() * det {
                            return Err(ApiError::validation(format!(
                                "{at}: {} feature rows for {} boxes",
                                rows.len() / det,
                                boxes.len()
                            )));
                        }
                        ImageInput::with_boxes(&rows, det, boxes, (w, h), tags)
                            .map_err(|e| ApiError::validation(format!("{at}: {e}")))
                    }
                    _ => Err(ApiError::validation(format!(
                        "{at}: boxes need image_size ([width, height] in pixels) and the other way round"
                    ))),
                }
            }
            (Some(_), Some(_)) => Err(ApiError::validation(format!(
                "{at}: give world_id or features, not both"
            ))),
            (None, None) => Err(ApiError::validation(format!(
                "{at}: an image needs world_id or features"
            ))),
        }
    }
}

/// `POST /caption`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptionRequest {
    pub inputs: OneOrMany<ImageSpec>,
    #[serde(default)]
    pub parameters: CaptionParameters,
}

/// Decoding parameters (the reference's test-time defaults: beam 5, 20 tokens).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptionParameters {
    /// `beam` (default), `greedy` or `sample`.
    pub mode: Option<String>,
    pub num_beams: Option<usize>,
    /// Tokens generated, `[SEP]` included (the reference's `max_gen_length` − 1 = 19).
    pub max_new_tokens: Option<usize>,
    /// Captions per image, best first (beam search: at most `num_beams`).
    pub num_return_sequences: Option<usize>,
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
}

/// A caption (Hugging Face's image-to-text shape, with the beam score).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GeneratedText {
    pub generated_text: String,
    /// Beam: sum of log-probabilities / length^penalty; greedy and sampling: the sum.
    pub score: f64,
    /// Ended with `[SEP]` rather than at the length limit.
    pub ended: bool,
}

/// One question about one image.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VqaInput {
    pub image: ImageSpec,
    pub question: String,
}

/// `POST /vqa`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VqaRequest {
    pub inputs: OneOrMany<VqaInput>,
    #[serde(default)]
    pub parameters: VqaParameters,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VqaParameters {
    /// Answers per question (default 5).
    pub top_k: Option<usize>,
}

/// An answer and its probability (sigmoid for VQA's independent answers, softmax for GQA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnswerOut {
    pub answer: String,
    pub score: f32,
}

/// `POST /rank`: one image and texts, or one text and images.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RankRequest {
    pub image: Option<ImageSpec>,
    pub texts: Option<Vec<String>>,
    pub text: Option<String>,
    pub images: Option<Vec<ImageSpec>>,
    /// Return only the best `top_n`.
    pub top_n: Option<usize>,
    /// Score only the first stage's best `k` candidates (two-stage retrieval).
    pub first_stage_k: Option<usize>,
    /// The first stage: `tags` (sharing most words with the tags; the default) or `learned`
    /// (nearest in the embedding space `oscar train first-stage` fitted beside the model).
    #[schema(value_type = Option<String>)]
    pub first_stage: Option<oscar::tasks::first_stage::FirstStageChoice>,
    /// With `texts`: each result carries its text.
    #[serde(default)]
    pub return_text: bool,
}

/// A candidate's place in a ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RankOut {
    /// Index into the request's `texts` or `images`.
    pub index: usize,
    /// Match probability.
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One (image, text) pair.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairSpec {
    pub image: ImageSpec,
    pub text: String,
}

/// `POST /score`: match probabilities of pairs, in order.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    pub pairs: Vec<PairSpec>,
}

/// One item to embed: a text, with an image or without.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedInput {
    #[serde(default)]
    pub text: String,
    pub image: Option<ImageSpec>,
}

/// `POST /embed`: the pooled `[CLS]` state of each item.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    pub inputs: Vec<EmbedInput>,
    /// Scale each embedding to unit length (default true).
    #[serde(default = "yes")]
    pub normalize: bool,
}

fn yes() -> bool {
    true
}

/// `POST /detect`: one photo.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectRequest {
    /// A JPEG or PNG file, base64.
    pub image: String,
}

/// VinVL's detections on one photo, as its `predictions.tsv` holds them (`oscar detect`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DetectOut {
    pub image_w: usize,
    pub image_h: usize,
    /// Best first.
    pub objects: Vec<DetectedObject>,
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DetectedObject {
    /// `[x1, y1, x2, y2]` in the photo's pixels.
    pub rect: [f32; 4],
    pub class: String,
    /// The class probability.
    pub conf: f32,
    /// Attribute names above the detector's threshold, best first, with their probabilities.
    pub attributes: Vec<String>,
    pub attr_scores: Vec<f32>,
}

/// Every image of a request, for the detector's pass over photos before the model's.
pub trait ImageSpecs {
    fn image_specs(&mut self) -> Vec<(String, &mut ImageSpec)>;
}

impl<T> OneOrMany<T> {
    fn each_mut(&mut self) -> Vec<(String, &mut T)> {
        match self {
            OneOrMany::One(t) => vec![("inputs".to_string(), t)],
            OneOrMany::Many(v) => v
                .iter_mut()
                .enumerate()
                .map(|(i, t)| (format!("inputs[{i}]"), t))
                .collect(),
        }
    }
}

impl ImageSpecs for CaptionRequest {
    fn image_specs(&mut self) -> Vec<(String, &mut ImageSpec)> {
        self.inputs.each_mut()
    }
}

impl ImageSpecs for VqaRequest {
    fn image_specs(&mut self) -> Vec<(String, &mut ImageSpec)> {
        self.inputs
            .each_mut()
            .into_iter()
            .map(|(at, i)| (format!("{at}.image"), &mut i.image))
            .collect()
    }
}

impl ImageSpecs for RankRequest {
    fn image_specs(&mut self) -> Vec<(String, &mut ImageSpec)> {
        let mut v: Vec<(String, &mut ImageSpec)> = self
            .image
            .iter_mut()
            .map(|s| ("image".to_string(), s))
            .collect();
        if let Some(images) = &mut self.images {
            v.extend(
                images
                    .iter_mut()
                    .enumerate()
                    .map(|(i, s)| (format!("images[{i}]"), s)),
            );
        }
        v
    }
}

impl ImageSpecs for ScoreRequest {
    fn image_specs(&mut self) -> Vec<(String, &mut ImageSpec)> {
        self.pairs
            .iter_mut()
            .enumerate()
            .map(|(i, p)| (format!("pairs[{i}].image"), &mut p.image))
            .collect()
    }
}

impl ImageSpecs for EmbedRequest {
    fn image_specs(&mut self) -> Vec<(String, &mut ImageSpec)> {
        self.inputs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, inp)| {
                inp.image
                    .as_mut()
                    .map(|s| (format!("inputs[{i}].image"), s))
            })
            .collect()
    }
}
