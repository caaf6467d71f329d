//! Every error the server answers, as text-embeddings-inference shapes them: JSON
//! `{"error", "error_type"}` with the status that says whose fault it is — including axum's own
//! rejections of a body (bad JSON, wrong content type, too large), which axum answers in plain
//! text unless mapped here.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

/// An error answer: status, machine-readable kind, and a message naming what was wrong where.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

/// The JSON body of every error.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub error_type: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 422: a well-formed request that cannot be served as asked.
    pub fn validation(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", m)
    }

    /// 400: nothing to do.
    pub fn empty(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "empty", m)
    }

    /// 413: more inputs than the server takes in one request.
    pub fn too_many(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_inputs", m)
    }

    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }

    /// 404: the endpoint's model was not given to `oscar serve`.
    pub fn not_loaded(task: &str, flag: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_loaded",
            format!("no {task} model is loaded: start the server with {flag} DIR"),
        )
    }

    /// 429: refused at once, the server is at its concurrency limit.
    pub fn overloaded(m: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", m)
    }

    /// 503: not answered in time.
    pub fn timeout(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", m)
    }

    pub fn unhealthy(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", m)
    }

    /// 500: the model failed on a valid request.
    pub fn backend(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "backend", m)
    }

    /// An error of the inference library: bad inputs (`Invalid`) are the client's (422), the
    /// rest the server's (500).
    pub fn from_oscar(e: oscar::Error) -> Self {
        match e {
            oscar::Error::Invalid(m) => Self::validation(m),
            other => Self::backend(other.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.kind, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("oscar_request_failure", "err" => self.kind).increment(1);
        tracing::warn!(
            status = self.status.as_u16(),
            kind = self.kind,
            "{}",
            self.message
        );
        let body = ErrorBody {
            error: self.message,
            error_type: self.kind.to_string(),
        };
        (self.status, Json(body)).into_response()
    }
}

/// axum's JSON body rejections, as our errors.
fn from_rejection(r: JsonRejection) -> ApiError {
    let text = r.body_text();
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", text)
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("{text}: send the body as JSON with content-type: application/json"),
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::validation(text),
        s => ApiError::new(s, "bad_json", text),
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(from_rejection(r)),
        }
    }
}
