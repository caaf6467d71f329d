//! Request bodies beyond JSON, for photos: every task endpoint also reads a `multipart/form-data`
//! form (`curl -F image=@photo.jpg -F question='what color is the dog?' …/vqa`, or a browser's
//! `FormData`), and `/caption` and `/detect` one photo's raw bytes with `content-type: image/…` (Hugging Face
//! image-to-text's binary upload). A form is laid out into the endpoint's JSON request, so both
//! go through the same checks and a form answers exactly what the JSON with the photo in base64
//! answers. The fields of each endpoint are in [`FromUpload`]'s implementations and docs/serve.md.

use crate::error::{ApiError, ApiJson};
use crate::schema::{
    CaptionRequest, DetectRequest, EmbedRequest, RankRequest, ScoreRequest, VqaRequest,
};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// One part of a form: a file (its bytes, base64 as the JSON carries photos) or a text field.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Photo(String),
    Text(String),
}

/// A `multipart/form-data` body, its parts in order. The layouts take the parts they know;
/// a part left over is an error that names it.
#[derive(Debug, Default)]
pub struct Form {
    parts: Vec<(String, Part)>,
}

impl Form {
    pub fn new(parts: Vec<(String, Part)>) -> Self {
        Form { parts }
    }

    /// Reads every part. A part with a file name, or with a content type other than text, is a
    /// file; the others are text and must be UTF-8.
    pub async fn read(mut mp: Multipart) -> Result<Form, ApiError> {
        let mut parts = Vec::new();
        loop {
            let field = match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(multipart_error(e.status(), e.body_text())),
            };
            let name = field.name().unwrap_or_default().to_string();
            if name.is_empty() {
                return Err(ApiError::validation("form: a part without a name"));
            }
            let is_file = field.file_name().is_some()
                || field
                    .content_type()
                    .is_some_and(|ct| !ct.starts_with("text/"));
            let bytes = field
                .bytes()
                .await
                .map_err(|e| multipart_error(e.status(), e.body_text()))?;
            let part = if is_file {
                Part::Photo(base64::engine::general_purpose::STANDARD.encode(&bytes))
            } else {
                Part::Text(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::validation(format!("form field {name}: text that is not UTF-8"))
                })?)
            };
            parts.push((name, part));
        }
        Ok(Form { parts })
    }

    /// Takes the parts named `name`, in order.
    fn take(&mut self, name: &str) -> Vec<Part> {
        let (taken, kept) = std::mem::take(&mut self.parts)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.parts = kept;
        taken.into_iter().map(|(_, p)| p).collect()
    }

    /// The files sent as `name`, each as an image (`{"image": base64}`).
    fn photos(&mut self, name: &str) -> Result<Vec<Value>, ApiError> {
        self.take(name)
            .into_iter()
            .map(|p| match p {
                Part::Photo(b64) => Ok(json!({ "image": b64 })),
                Part::Text(_) => Err(ApiError::validation(format!(
                    "form field {name}: expected a file (a JPEG or PNG photo), got a text field"
                ))),
            })
            .collect()
    }

    /// The text fields sent as `name`.
    fn texts(&mut self, name: &str) -> Result<Vec<Value>, ApiError> {
        self.take(name)
            .into_iter()
            .map(|p| match p {
                Part::Text(t) => Ok(Value::String(t)),
                Part::Photo(_) => Err(ApiError::validation(format!(
                    "form field {name}: expected text, got a file"
                ))),
            })
            .collect()
    }

    /// The one value of `name`, if sent; sent twice is an error.
    fn at_most_one(name: &str, mut v: Vec<Value>) -> Result<Option<Value>, ApiError> {
        if v.len() > 1 {
            return Err(ApiError::validation(format!(
                "form field {name}: sent {} times, expected once",
                v.len()
            )));
        }
        Ok(v.pop())
    }

    /// The one value of `name`, which must be sent.
    fn exactly_one(name: &str, v: Vec<Value>) -> Result<Value, ApiError> {
        Self::at_most_one(name, v)?
            .ok_or_else(|| ApiError::validation(format!("form field {name}: missing")))
    }

    /// The remaining parts as settings (`num_beams=5`, `return_text=true`): numbers, booleans
    /// and JSON lists or objects as such, anything else as a string. A file among them, or a
    /// setting sent twice, is an error.
    fn settings(self) -> Result<Map<String, Value>, ApiError> {
        let mut out = Map::new();
        for (name, part) in self.parts {
            let Part::Text(t) = part else {
                return Err(ApiError::validation(format!(
                    "form field {name}: a file where none is expected (photos go in the image \
                     field)"
                )));
            };
            let v = serde_json::from_str::<Value>(t.trim())
                .ok()
                .filter(|v| !v.is_string() && !v.is_null())
                .unwrap_or(Value::String(t));
            if out.insert(name.clone(), v).is_some() {
                return Err(ApiError::validation(format!(
                    "form field {name}: sent twice, expected once"
                )));
            }
        }
        Ok(out)
    }
}

fn multipart_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "payload_too_large", text)
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_body", format!("form: {text}"))
    }
}

/// The endpoint's request from the JSON a form was laid out into: its errors say "form".
fn from_layout<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::validation(format!("form: {e}")))
}

/// A request read from a form, or from one photo's bytes.
pub trait FromUpload: Sized {
    fn from_form(form: Form) -> Result<Self, ApiError>;

    /// Only `/caption` and `/detect` read a bare photo: the others need a question or texts too.
    fn from_photo(_base64: String) -> Result<Self, ApiError> {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a bare photo is read by /caption and /detect only: send a multipart form \
             (image=@photo.jpg and the endpoint's fields) or JSON",
        ))
    }
}

/// `/caption`: `image` (a file; several give a list of answers), every other field a parameter
/// (`num_beams`, `max_new_tokens`, `mode`, …).
impl FromUpload for CaptionRequest {
    fn from_form(mut form: Form) -> Result<Self, ApiError> {
        let mut images = form.photos("image")?;
        let inputs = match images.len() {
            0 => return Err(ApiError::validation("form field image: missing")),
            1 => images.remove(0),
            _ => Value::Array(images),
        };
        from_layout(json!({ "inputs": inputs, "parameters": form.settings()? }))
    }

    fn from_photo(base64: String) -> Result<Self, ApiError> {
        from_layout(json!({ "inputs": { "image": base64 } }))
    }
}

/// `/vqa`: `image` (a file) and `question`, every other field a parameter (`top_k`).
impl FromUpload for VqaRequest {
    fn from_form(mut form: Form) -> Result<Self, ApiError> {
        let image = Form::exactly_one("image", form.photos("image")?)?;
        let question = Form::exactly_one("question", form.texts("question")?)?;
        from_layout(json!({
            "inputs": { "image": image, "question": question },
            "parameters": form.settings()?,
        }))
    }
}

/// `/rank`: `image` (a file) and one `texts` field per text, or `text` and one `images` file
/// per image; `top_n`, `first_stage`, `first_stage_k`, `return_text` as in the JSON.
impl FromUpload for RankRequest {
    fn from_form(mut form: Form) -> Result<Self, ApiError> {
        let mut v = Map::new();
        if let Some(image) = Form::at_most_one("image", form.photos("image")?)? {
            v.insert("image".into(), image);
        }
        let images = form.photos("images")?;
        if !images.is_empty() {
            v.insert("images".into(), Value::Array(images));
        }
        let texts = form.texts("texts")?;
        if !texts.is_empty() {
            v.insert("texts".into(), Value::Array(texts));
        }
        if let Some(text) = Form::at_most_one("text", form.texts("text")?)? {
            v.insert("text".into(), text);
        }
        v.extend(form.settings()?);
        from_layout(Value::Object(v))
    }
}

/// `/score`: `image` (a file) and one `text` field per text: a pair per text.
impl FromUpload for ScoreRequest {
    fn from_form(mut form: Form) -> Result<Self, ApiError> {
        let image = Form::exactly_one("image", form.photos("image")?)?;
        let pairs: Vec<Value> = form
            .texts("text")?
            .into_iter()
            .map(|text| json!({ "image": image, "text": text }))
            .collect();
        if pairs.is_empty() {
            return Err(ApiError::validation("form field text: missing"));
        }
        let mut v = form.settings()?;
        v.insert("pairs".into(), Value::Array(pairs));
        from_layout(Value::Object(v))
    }
}

/// `/embed`: `text` and, optionally, `image` (a file): one input; `normalize` as in the JSON.
impl FromUpload for EmbedRequest {
    fn from_form(mut form: Form) -> Result<Self, ApiError> {
        let text = Form::exactly_one("text", form.texts("text")?)?;
        let mut input = json!({ "text": text });
        if let Some(image) = Form::at_most_one("image", form.photos("image")?)? {
            input["image"] = image;
        }
        let mut v = form.settings()?;
        v.insert("inputs".into(), json!([input]));
        from_layout(Value::Object(v))
    }
}

/// `/detect`: `image` (a file).
impl FromUpload for DetectRequest {
    fn from_form(mut form: Form) -> Result<Self, ApiError> {
        let image = Form::exactly_one("image", form.photos("image")?)?;
        let mut v = form.settings()?;
        v.insert("image".into(), image["image"].clone());
        from_layout(Value::Object(v))
    }

    fn from_photo(base64: String) -> Result<Self, ApiError> {
        Ok(DetectRequest { image: base64 })
    }
}

/// The endpoint's JSON, a `multipart/form-data` form, or (where the endpoint takes one) a bare
/// photo with `content-type: image/…`.
pub struct ApiBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + FromUpload> FromRequest<S> for ApiBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if ct.starts_with("multipart/form-data") {
            let mp = Multipart::from_request(req, state)
                .await
                .map_err(|r| multipart_error(r.status(), r.body_text()))?;
            return T::from_form(Form::read(mp).await?).map(ApiBody);
        }
        if ct.starts_with("image/") {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|r| {
                    let kind = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        "payload_too_large"
                    } else {
                        "bad_body"
                    };
                    ApiError::new(r.status(), kind, r.body_text())
                })?;
            return T::from_photo(base64::engine::general_purpose::STANDARD.encode(bytes))
                .map(ApiBody);
        }
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| ApiBody(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, Part)]) -> Form {
        Form::new(
            parts
                .iter()
                .map(|(n, p)| (n.to_string(), p.clone()))
                .collect(),
        )
    }

    fn photo() -> Part {
        Part::Photo("AAAA".into())
    }

    fn text(t: &str) -> Part {
        Part::Text(t.into())
    }

    #[test]
    fn forms_lay_out_into_the_json_requests() {
        let c = CaptionRequest::from_form(form(&[
            ("image", photo()),
            ("num_beams", text("3")),
            ("mode", text("beam")),
        ]))
        .unwrap();
        let (specs, one) = c.inputs.into_vec();
        assert!(one && specs[0].image.as_deref() == Some("AAAA"));
        assert_eq!(c.parameters.num_beams, Some(3));
        assert_eq!(c.parameters.mode.as_deref(), Some("beam"));
        let c = CaptionRequest::from_form(form(&[("image", photo()), ("image", photo())])).unwrap();
        assert_eq!(c.inputs.into_vec().0.len(), 2);

        // A question that reads as a number stays text.
        let q = VqaRequest::from_form(form(&[
            ("question", text("42")),
            ("image", photo()),
            ("top_k", text("2")),
        ]))
        .unwrap();
        let (inputs, _) = q.inputs.into_vec();
        assert_eq!(inputs[0].question, "42");
        assert_eq!(q.parameters.top_k, Some(2));

        let r = RankRequest::from_form(form(&[
            ("image", photo()),
            ("texts", text("a dog")),
            ("texts", text("a cat")),
            ("return_text", text("true")),
        ]))
        .unwrap();
        assert_eq!(r.texts.unwrap(), ["a dog", "a cat"]);
        assert!(r.return_text && r.image.is_some());
        let r = RankRequest::from_form(form(&[
            ("text", text("a dog")),
            ("images", photo()),
            ("images", photo()),
        ]))
        .unwrap();
        assert_eq!(r.images.unwrap().len(), 2);

        let s = ScoreRequest::from_form(form(&[
            ("image", photo()),
            ("text", text("x")),
            ("text", text("y")),
        ]))
        .unwrap();
        assert_eq!(s.pairs.len(), 2);
        assert_eq!(s.pairs[1].text, "y");

        let e = EmbedRequest::from_form(form(&[("text", text("a dog"))])).unwrap();
        assert!(e.inputs[0].image.is_none());
    }

    #[test]
    fn bad_forms_name_the_field() {
        let err = |r: Result<(), ApiError>| r.unwrap_err().message;
        let cap = |f| CaptionRequest::from_form(f).map(|_| ());
        let vqa = |f| VqaRequest::from_form(f).map(|_| ());
        for (msg, needle) in [
            (err(cap(form(&[]))), "image: missing"),
            (err(cap(form(&[("image", text("x"))]))), "expected a file"),
            (
                err(cap(form(&[("image", photo()), ("beams", text("3"))]))),
                "unknown field `beams`",
            ),
            (
                err(cap(form(&[
                    ("image", photo()),
                    ("num_beams", text("many")),
                ]))),
                "invalid type",
            ),
            (
                err(cap(form(&[("image", photo()), ("other", photo())]))),
                "other: a file where none is expected",
            ),
            (err(vqa(form(&[("image", photo())]))), "question: missing"),
            (
                err(vqa(form(&[
                    ("image", photo()),
                    ("image", photo()),
                    ("question", text("q")),
                ]))),
                "sent 2 times",
            ),
            (
                err(vqa(form(&[("image", photo()), ("question", photo())]))),
                "question: expected text",
            ),
            (
                err(ScoreRequest::from_form(form(&[("image", photo())])).map(|_| ())),
                "text: missing",
            ),
            (
                err(VqaRequest::from_photo("AAAA".into()).map(|_| ())),
                "/caption and /detect only",
            ),
        ] {
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
    }
}
