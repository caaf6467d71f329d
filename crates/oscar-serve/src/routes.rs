//! The endpoints: each checks its request, takes one concurrency permit per input (none left:
//! 429 at once), queues a job for the model thread, waits at most the request timeout, and
//! answers JSON with where the time went (`x-total-time`, `x-queue-time`, `x-inference-time`,
//! `x-batch-rows`).

use crate::error::{ApiError, ErrorBody};
use crate::schema::*;
use crate::upload::ApiBody;
use crate::worker::{Done, Job, Output, Task};
use crate::world::WorldImage;
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use oscar::data::items::Item;
use oscar::infer::{image_candidates, ranked, text_candidates, top_k, CaptionOptions, ImageInput};
use oscar::tasks::caption::Mode;
use oscar::tasks::first_stage::FirstStageChoice;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi;

type St = State<Arc<AppState>>;

/// An (image, text) pair to score.
type Pair = (ImageInput, String);

#[derive(OpenApi)]
#[openapi(
    paths(caption, vqa, rank, score, embed, detect, health, info, world),
    components(schemas(
        ErrorBody,
        ImageSpec,
        Features,
        GeneratedText,
        AnswerOut,
        RankOut,
        DetectRequest,
        DetectOut,
        DetectedObject,
        WorldImage
    ))
)]
struct ApiDoc;

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.payload_limit;
    Router::new()
        .route("/", get(page))
        .route("/caption", post(caption))
        .route("/vqa", post(vqa))
        .route("/rank", post(rank))
        .route("/score", post(score))
        .route("/embed", post(embed))
        .route("/detect", post(detect))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/world", get(world))
        .route("/metrics", get(metrics_text))
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .url("/api-doc/openapi.json", ApiDoc::openapi()),
        )
        .fallback(|| async { ApiError::not_found("no such route: see /docs") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route takes another method: see /docs",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

impl AppState {
    fn check_count(&self, n: usize, what: &str, most: usize) -> Result<(), ApiError> {
        if n == 0 {
            return Err(ApiError::empty(format!("no {what} given")));
        }
        if n > most {
            return Err(ApiError::too_many(format!(
                "{n} {what}: at most {most} per request"
            )));
        }
        Ok(())
    }

    /// Runs the detector on every photo of a request (`"image": base64`), one photo at a time
    /// off the async threads, and puts its regions, boxes and tags in the photo's place.
    async fn detect_photos(
        &self,
        req: &mut impl crate::schema::ImageSpecs,
    ) -> Result<(), ApiError> {
        for (at, spec) in req.image_specs() {
            let Some(b64) = spec.image.take() else {
                continue;
            };
            if spec.world_id.is_some() || spec.features.is_some() || spec.boxes.is_some() {
                return Err(ApiError::validation(format!(
                    "{at}: give image, world_id or features, one of them"
                )));
            }
            let found = self.detect(&b64, &format!("{at}.image")).await?;
            if found.objects.is_empty() {
                return Err(ApiError::validation(format!(
                    "{at}.image: the detector found no object"
                )));
            }
            spec.features = Some(crate::schema::Features::Rows(
                found.objects.iter().map(|o| o.feature.clone()).collect(),
            ));
            spec.boxes = Some(found.objects.iter().map(|o| o.rect).collect());
            spec.image_size = Some([found.image_size.0 as f32, found.image_size.1 as f32]);
            if spec.tags.is_none() {
                spec.tags = Some(found.objects.iter().map(|o| o.class.clone()).collect());
            }
        }
        Ok(())
    }

    /// Runs the detector on one photo (base64 JPEG or PNG, at `at`), one photo at a time, off
    /// the async threads.
    async fn detect(&self, b64: &str, at: &str) -> Result<oscar_detect::Detections, ApiError> {
        let Some(det) = self.detector.clone() else {
            return Err(ApiError::validation(format!(
                "{at}: photos need a server started with --detector DIR"
            )));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ApiError::validation(format!("{at}: not base64 ({e})")))?;
        let _one = self
            .detect_gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::backend("the detector is closed"))?;
        let found = tokio::task::spawn_blocking(move || {
            let rgb = oscar_detect::decode_image(&bytes, det.config.max_image_pixels)?;
            det.detect(&rgb).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ApiError::backend(format!("the detector stopped: {e}")))?
        .map_err(|e| ApiError::validation(format!("{at}: {e}")))?;
        metrics::counter!("oscar_photos_detected").increment(1);
        Ok(found)
    }

    fn resolve(&self, spec: &ImageSpec, at: &str) -> Result<ImageInput, ApiError> {
        spec.resolve(self.feature_dim, self.world.as_ref(), at)
    }

    /// Takes `n` permits now or refuses with 429; then queues `job` and waits for it.
    async fn run(&self, n: usize, job: Job, key: String) -> Result<Done, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::unhealthy("the server is shutting down"));
        }
        let task = job.task();
        metrics::counter!("oscar_request_count", "task" => task.name()).increment(1);
        let _permits = self.permits.clone().try_acquire_many_owned(n as u32).map_err(|_| {
            ApiError::overloaded(format!(
                "the model is overloaded: {} inputs may be in flight, this request adds {n}; retry later",
                self.limits.max_concurrent_requests
            ))
        })?;
        let rx = self.worker.submit(job, key)?;
        let done = match tokio::time::timeout(self.limits.request_timeout, rx).await {
            Ok(Ok(d)) => d,
            Ok(Err(_)) => return Err(ApiError::backend("the model thread stopped")),
            Err(_) => {
                return Err(ApiError::timeout(format!(
                    "not answered within {:.0} s",
                    self.limits.request_timeout.as_secs_f64()
                )))
            }
        };
        Ok(done)
    }
}

/// The JSON answer with its timing headers and metrics.
fn timed<T: Serialize>(task: Task, t0: Instant, done: &Done, body: &T) -> Response {
    let total = t0.elapsed();
    let name = task.name();
    metrics::counter!("oscar_request_success", "task" => name).increment(1);
    metrics::histogram!("oscar_request_duration_seconds", "task" => name)
        .record(total.as_secs_f64());
    metrics::histogram!("oscar_queue_duration_seconds", "task" => name)
        .record(done.queue.as_secs_f64());
    metrics::histogram!("oscar_inference_duration_seconds", "task" => name)
        .record(done.inference.as_secs_f64());
    tracing::info!(
        task = name,
        total_ms = total.as_secs_f64() * 1e3,
        queue_ms = done.queue.as_secs_f64() * 1e3,
        inference_ms = done.inference.as_secs_f64() * 1e3,
        batch_rows = done.batch_rows,
        "answered"
    );
    let mut r = Json(body).into_response();
    let h = r.headers_mut();
    let ms = |d: std::time::Duration| {
        HeaderValue::try_from(format!("{:.3}", d.as_secs_f64() * 1e3))
            .unwrap_or(HeaderValue::from_static("0"))
    };
    h.insert("x-total-time", ms(total));
    h.insert("x-queue-time", ms(done.queue));
    h.insert("x-inference-time", ms(done.inference));
    h.insert("x-batch-rows", HeaderValue::from(done.batch_rows));
    r
}

fn wrong_output() -> ApiError {
    ApiError::backend("the model thread answered another task's output")
}

/// Sampling draws from one random stream per batch: sampled requests never share a batch, so a
/// seed gives the same caption whatever else is waiting.
static SAMPLE_KEY: AtomicU64 = AtomicU64::new(0);

fn caption_options(
    p: &CaptionParameters,
    max_beams: usize,
    max_len: usize,
) -> Result<CaptionOptions, ApiError> {
    let d = CaptionOptions::default();
    let mode = match p.mode.as_deref() {
        None | Some("beam") => Mode::Beam,
        Some("greedy") => Mode::Greedy,
        Some("sample") => Mode::Sample,
        Some(m) => {
            return Err(ApiError::validation(format!(
                "parameters.mode {m:?}: expected beam, greedy or sample"
            )))
        }
    };
    let num_beams = p.num_beams.unwrap_or(d.num_beams);
    if num_beams == 0 || num_beams > max_beams {
        return Err(ApiError::validation(format!(
            "parameters.num_beams {num_beams}: expected 1 to {max_beams}"
        )));
    }
    let max_length = p.max_new_tokens.map_or(d.max_length, |n| n + 1);
    if max_length < 2 || max_length > max_len {
        return Err(ApiError::validation(format!(
            "parameters.max_new_tokens {}: expected 1 to {} (the model's caption slots)",
            max_length - 1,
            max_len - 1
        )));
    }
    let n = p.num_return_sequences.unwrap_or(1);
    let most = if mode == Mode::Beam { num_beams } else { 1 };
    if n == 0 || n > most {
        return Err(ApiError::validation(format!(
            "parameters.num_return_sequences {n}: expected 1 to {most} ({mode:?} decoding; beam search returns up to num_beams)"
        )));
    }
    let temperature = p.temperature.unwrap_or(d.temperature);
    let top_p = p.top_p.unwrap_or(d.top_p);
    if !(temperature > 0.0 && temperature.is_finite() && top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::validation(
            "parameters: temperature must be positive and top_p in (0, 1]",
        ));
    }
    Ok(CaptionOptions {
        mode,
        num_beams,
        max_length,
        temperature,
        top_k: p.top_k.unwrap_or(d.top_k),
        top_p,
        seed: p.seed.unwrap_or(0),
        num_return_sequences: n,
        use_cache: true,
    })
}

/// Captions, best first: a list per image (a single image: its list). With `--detector` the body
/// may also be one photo's bytes (`content-type: image/jpeg` or `image/png`) or a multipart form:
/// `image` (a file; repeated for several) and the parameters as fields (`num_beams=5`).
#[utoipa::path(post, path = "/caption", request_body = CaptionRequest,
    responses((status = 200, body = [GeneratedText]), (status = "4XX", body = ErrorBody)))]
async fn caption(
    State(st): St,
    ApiBody(mut req): ApiBody<CaptionRequest>,
) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    if !st.worker.loaded.caption {
        return Err(ApiError::not_loaded("captioning", "--caption"));
    }
    st.detect_photos(&mut req).await?;
    let (specs, one) = req.inputs.into_vec();
    st.check_count(specs.len(), "images", st.limits.max_client_batch_size)?;
    let opts = caption_options(
        &req.parameters,
        st.limits.max_beams,
        st.worker.loaded.max_caption_length,
    )?;
    let images = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            st.resolve(
                s,
                &if one {
                    "inputs".into()
                } else {
                    format!("inputs[{i}]")
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key = match opts.mode {
        Mode::Sample => format!("sample {}", SAMPLE_KEY.fetch_add(1, Ordering::Relaxed)),
        _ => format!(
            "caption {}",
            serde_json::to_string(&opts).unwrap_or_default()
        ),
    };
    let n = images.len();
    let done = st.run(n, Job::Caption { images, opts }, key).await?;
    let Output::Captions(c) = done.output.as_ref().map_err(Clone::clone)? else {
        return Err(wrong_output());
    };
    let c: Vec<Vec<GeneratedText>> = c
        .iter()
        .map(|v| {
            v.iter()
                .map(|o| GeneratedText {
                    generated_text: o.text.clone(),
                    score: o.score,
                    ended: o.ended,
                })
                .collect()
        })
        .collect();
    Ok(if one {
        timed(Task::Caption, t0, &done, &c[0])
    } else {
        timed(Task::Caption, t0, &done, &c)
    })
}

/// The top answers to each question, by probability. With `--detector`, also a multipart form:
/// `image` (a file), `question`, `top_k`.
#[utoipa::path(post, path = "/vqa", request_body = VqaRequest,
    responses((status = 200, body = [AnswerOut]), (status = "4XX", body = ErrorBody)))]
async fn vqa(State(st): St, ApiBody(mut req): ApiBody<VqaRequest>) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    if !st.worker.loaded.vqa {
        return Err(ApiError::not_loaded("question answering", "--vqa"));
    }
    st.detect_photos(&mut req).await?;
    let (inputs, one) = req.inputs.into_vec();
    st.check_count(inputs.len(), "questions", st.limits.max_client_batch_size)?;
    let top_k = req.parameters.top_k.unwrap_or(5);
    if top_k == 0 {
        return Err(ApiError::validation("parameters.top_k must be at least 1"));
    }
    let mut images = Vec::with_capacity(inputs.len());
    let mut questions = Vec::with_capacity(inputs.len());
    for (i, inp) in inputs.iter().enumerate() {
        let at = if one {
            "inputs".to_string()
        } else {
            format!("inputs[{i}]")
        };
        if inp.question.trim().is_empty() {
            return Err(ApiError::validation(format!("{at}.question is empty")));
        }
        images.push(st.resolve(&inp.image, &format!("{at}.image"))?);
        questions.push(inp.question.clone());
    }
    let n = images.len();
    let done = st
        .run(
            n,
            Job::Vqa {
                images,
                questions,
                top_k,
            },
            "vqa".into(),
        )
        .await?;
    let Output::Answers(a) = done.output.as_ref().map_err(Clone::clone)? else {
        return Err(wrong_output());
    };
    let a: Vec<Vec<AnswerOut>> = a
        .iter()
        .map(|v| {
            v.iter()
                .map(|x| AnswerOut {
                    answer: x.answer.clone(),
                    score: x.score,
                })
                .collect()
        })
        .collect();
    Ok(if one {
        timed(Task::Vqa, t0, &done, &a[0])
    } else {
        timed(Task::Vqa, t0, &done, &a)
    })
}

/// Texts ranked for an image, or images for a text, best first. With `--detector`, also a
/// multipart form: `image` (a file) and a `texts` field per text, or `text` and an `images` file
/// per image, and the other settings as fields.
#[utoipa::path(post, path = "/rank", request_body = RankRequest,
    responses((status = 200, body = [RankOut]), (status = "4XX", body = ErrorBody)))]
async fn rank(State(st): St, ApiBody(mut req): ApiBody<RankRequest>) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    if !st.worker.loaded.matching {
        return Err(ApiError::not_loaded("image-text matching", "--retrieval"));
    }
    st.detect_photos(&mut req).await?;
    let most = st.limits.max_candidates;
    let learned = req.first_stage == Some(FirstStageChoice::Learned);
    if learned && req.first_stage_k.is_none() {
        return Err(ApiError::validation(
            "first_stage \"learned\" needs first_stage_k (how many candidates it keeps)",
        ));
    }
    if learned && !st.worker.loaded.learned_first_stage {
        return Err(ApiError::validation(
            "the served retrieval model has no learned first stage: fit one with `oscar train \
             first-stage --checkpoint DIR --data DIR`, or ask for first_stage \"tags\"",
        ));
    }
    let (pairs, cand, texts): (Vec<Pair>, Vec<usize>, Option<Vec<String>>) =
        match (req.image, req.texts, req.text, req.images) {
            (Some(image), Some(texts), None, None) => {
                st.check_count(texts.len(), "texts", most)?;
                let image = st.resolve(&image, "image")?;
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let cand = match (learned, req.first_stage_k) {
                    (true, Some(k)) => {
                        let sims = similarities(&st, vec![image.clone()], texts.clone()).await?;
                        top_k(&sims[0], k)
                    }
                    _ => text_candidates(&image, &refs, req.first_stage_k),
                };
                let pairs = cand
                    .iter()
                    .map(|&i| (image.clone(), texts[i].clone()))
                    .collect();
                (pairs, cand, Some(texts))
            }
            (None, None, Some(text), Some(images)) => {
                st.check_count(images.len(), "images", most)?;
                let images = images
                    .iter()
                    .enumerate()
                    .map(|(i, s)| st.resolve(s, &format!("images[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                let cand = match (learned, req.first_stage_k) {
                    (true, Some(k)) => {
                        let sims = similarities(&st, images.clone(), vec![text.clone()]).await?;
                        let column: Vec<f32> = sims.iter().map(|row| row[0]).collect();
                        top_k(&column, k)
                    }
                    _ => image_candidates(&text, &images, req.first_stage_k),
                };
                let pairs = cand
                    .iter()
                    .map(|&i| (images[i].clone(), text.clone()))
                    .collect();
                (pairs, cand, None)
            }
            _ => {
                return Err(ApiError::validation(
                    "give an image and texts, or a text and images",
                ))
            }
        };
    if pairs.is_empty() {
        return Err(ApiError::validation(
            "first_stage_k 0 leaves nothing to rank",
        ));
    }
    let done = st
        .run(pairs.len(), Job::Score { pairs }, "score".into())
        .await?;
    let Output::Scores(s) = done.output.as_ref().map_err(Clone::clone)? else {
        return Err(wrong_output());
    };
    let mut out: Vec<RankOut> = ranked(&cand, s.clone())
        .into_iter()
        .map(|r| RankOut {
            index: r.index,
            score: r.score,
            text: texts
                .as_ref()
                .filter(|_| req.return_text)
                .map(|t| t[r.index].clone()),
        })
        .collect();
    if let Some(n) = req.top_n {
        out.truncate(n);
    }
    Ok(timed(Task::Score, t0, &done, &out))
}

/// The learned first stage's images × texts similarities, computed on the model thread.
async fn similarities(
    st: &AppState,
    images: Vec<ImageInput>,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let rows = images.len() + texts.len();
    let done = st
        .run(
            rows,
            Job::Similarities { images, texts },
            "shortlist".into(),
        )
        .await?;
    match done.output? {
        Output::Similarities(mut m) if m.len() == 1 => Ok(m.remove(0)),
        _ => Err(wrong_output()),
    }
}

/// Match probabilities of (image, text) pairs, in order. With `--detector`, also a multipart
/// form: `image` (a file) and a `text` field per text (a pair per text).
#[utoipa::path(post, path = "/score", request_body = ScoreRequest,
    responses((status = 200, body = [f32]), (status = "4XX", body = ErrorBody)))]
async fn score(
    State(st): St,
    ApiBody(mut req): ApiBody<ScoreRequest>,
) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    if !st.worker.loaded.matching {
        return Err(ApiError::not_loaded("image-text matching", "--retrieval"));
    }
    st.detect_photos(&mut req).await?;
    st.check_count(req.pairs.len(), "pairs", st.limits.max_candidates)?;
    let pairs = req
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok((
                st.resolve(&p.image, &format!("pairs[{i}].image"))?,
                p.text.clone(),
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let done = st
        .run(pairs.len(), Job::Score { pairs }, "score".into())
        .await?;
    let Output::Scores(s) = done.output.as_ref().map_err(Clone::clone)? else {
        return Err(wrong_output());
    };
    Ok(timed(Task::Score, t0, &done, s))
}

/// The pooled `[CLS]` state of each item (unit length with `normalize`). Also a multipart form:
/// `text`, optionally `image` (a file, with `--detector`), `normalize`.
#[utoipa::path(post, path = "/embed", request_body = EmbedRequest,
    responses((status = 200, body = [Vec<f32>]), (status = "4XX", body = ErrorBody)))]
async fn embed(
    State(st): St,
    ApiBody(mut req): ApiBody<EmbedRequest>,
) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    if !st.worker.loaded.embed {
        return Err(ApiError::not_loaded("embedding", "--embed or --retrieval"));
    }
    st.detect_photos(&mut req).await?;
    st.check_count(req.inputs.len(), "inputs", st.limits.max_client_batch_size)?;
    let items = req
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let (features, tags) = match &inp.image {
                Some(s) => {
                    let im = st.resolve(s, &format!("inputs[{i}].image"))?;
                    let tags = Some(im.tag_text()).filter(|t| !t.is_empty());
                    (im.features, tags)
                }
                None => (Vec::new(), None),
            };
            if inp.text.trim().is_empty() && features.is_empty() {
                return Err(ApiError::validation(format!(
                    "inputs[{i}]: give a text, an image or both"
                )));
            }
            Ok(Item {
                id: i.to_string(),
                text: inp.text.clone(),
                tags,
                features,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let done = st
        .run(items.len(), Job::Embed { items }, "embed".into())
        .await?;
    let Output::Embeddings(e) = done.output.as_ref().map_err(Clone::clone)? else {
        return Err(wrong_output());
    };
    let out: Vec<Vec<f32>> = e
        .iter()
        .map(|v| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if req.normalize && norm > 0.0 {
                v.iter().map(|x| x / norm).collect()
            } else {
                v.clone()
            }
        })
        .collect();
    Ok(timed(Task::Embed, t0, &done, &out))
}

/// 200 while the model thread runs; 503 once it stopped or the server is shutting down.
/// VinVL's detections on one photo (`--detector`): boxes in the photo's pixels, classes,
/// attributes, best first — what `oscar detect` writes to `predictions.tsv`. The body is
/// `{"image": base64}`, a multipart form with an `image` file, or the photo's raw bytes
/// (`content-type: image/jpeg` or `image/png`).
#[utoipa::path(post, path = "/detect", request_body = DetectRequest,
    responses((status = 200, body = DetectOut), (status = "4XX", body = ErrorBody)))]
async fn detect(State(st): St, ApiBody(req): ApiBody<DetectRequest>) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let found = st.detect(&req.image, "image").await?;
    let Some(labels) = st.detector.as_ref().map(|d| &d.labels) else {
        return Err(ApiError::backend("the detector went away"));
    };
    let name = |i: usize| {
        labels
            .attributes
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    };
    let out = DetectOut {
        image_w: found.image_size.0,
        image_h: found.image_size.1,
        objects: found
            .objects
            .iter()
            .map(|o| DetectedObject {
                rect: o.rect,
                class: o.class.clone(),
                conf: o.conf,
                attributes: o.attributes.iter().map(|&(a, _)| name(a)).collect(),
                attr_scores: o.attributes.iter().map(|&(_, p)| p).collect(),
            })
            .collect(),
    };
    let mut r = Json(out).into_response();
    if let Ok(v) = HeaderValue::try_from(format!("{:.3}", t0.elapsed().as_secs_f64() * 1e3)) {
        r.headers_mut().insert("x-total-time", v);
    }
    Ok(r)
}

#[utoipa::path(get, path = "/health", responses((status = 200), (status = 503, body = ErrorBody)))]
async fn health(State(st): St) -> Response {
    if st.shutting_down.load(Ordering::SeqCst) || !st.worker.healthy() {
        return ApiError::unhealthy("the model thread is not running").into_response();
    }
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// The models, the region width, the limits, the version and the served world.
#[utoipa::path(get, path = "/info", responses((status = 200)))]
async fn info(State(st): St) -> Json<serde_json::Value> {
    Json(st.info.clone())
}

/// The served world's images (for galleries): ids, splits, tags, objects with boxes, captions.
#[utoipa::path(get, path = "/world", responses((status = 200), (status = 404, body = ErrorBody)))]
async fn world(State(st): St) -> Result<Response, ApiError> {
    let w = st.world.as_ref().ok_or_else(|| {
        ApiError::not_found("no world is served: start the server with --world DIR")
    })?;
    let (cw, ch) = oscar_world::scene::CANVAS;
    Ok(Json(serde_json::json!({"canvas": [cw, ch], "images": w.images})).into_response())
}

async fn metrics_text(State(st): St) -> String {
    st.prometheus.render()
}
