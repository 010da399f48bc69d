//! The UI's client of the management API, in process: every page reads and
//! writes through the same router that serves `kubectl` and the CLI, with
//! the signed-in user's own token, so the UI can never do more than its
//! user may, and every write is authorised and audited as any other.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use tower::ServiceExt;

use crate::error::UiError;

/// Largest API answer a page reads whole (a list of 10,000 clusters is
/// about 15 MiB).
const MAX_ANSWER: usize = 256 * 1024 * 1024;

/// The management API group's path.
pub(crate) const MGMT: &str = "/apis/management.drover.io/v1";

/// The API, called in process.
#[derive(Clone)]
pub(crate) struct Api {
    router: Router,
}

impl Api {
    pub(crate) fn new(router: Router) -> Self {
        Self { router }
    }

    /// Send one request as the holder of `token`; the answer as it comes.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Response, UiError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, "application/json");
        if !token.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let req = req
            .body(body)
            .map_err(|e| UiError::Internal(format!("cannot build a request for {path}: {e}")))?;
        match self.router.clone().oneshot(req).await {
            Ok(resp) => Ok(resp),
            Err(never) => match never {},
        }
    }

    /// Hand a whole request (a WebSocket upgrade included) to the API as it
    /// is; its answer as it comes.
    pub(crate) async fn forward(&self, req: Request<Body>) -> Response {
        match self.router.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    /// A JSON request; a non-2xx answer becomes the matching [`UiError`].
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value, UiError> {
        self.call_as(method, path, token, body, "application/json")
            .await
    }

    /// [`Api::call`] with another body type (merge patches).
    pub(crate) async fn call_as(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Value, UiError> {
        let body = body.map(|b| (content_type, b.to_string().into_bytes()));
        let bytes = self.whole(method, path, token, body).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The whole answer as bytes; a non-2xx answer becomes an error.
    pub(crate) async fn bytes(
        &self,
        method: Method,
        path: &str,
        token: &str,
    ) -> Result<Bytes, UiError> {
        self.whole(method, path, token, None).await
    }

    async fn whole(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Bytes, UiError> {
        let resp = self.send(method, path, token, body).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| UiError::Internal(format!("cannot read the answer of {path}: {e}")))?;
        if status.is_success() {
            Ok(bytes)
        } else {
            // Also when the body is empty (the router's own 404 and 405).
            Err(refusal(status, &bytes))
        }
    }

    /// `GET path` as JSON.
    pub(crate) async fn get(&self, path: &str, token: &str) -> Result<Value, UiError> {
        self.call(Method::GET, path, token, None).await
    }

    /// The `items` of a list.
    pub(crate) async fn items(&self, path: &str, token: &str) -> Result<Vec<Value>, UiError> {
        let mut list = self.get(path, token).await?;
        Ok(match list["items"].take() {
            Value::Array(items) => items,
            _ => Vec::new(),
        })
    }

    /// The events of a watch, one JSON object per line.
    pub(crate) async fn watch(
        &self,
        path: &str,
        token: &str,
    ) -> Result<impl Stream<Item = Value> + Send + 'static, UiError> {
        let resp = self.send(Method::GET, path, token, None).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            return Err(refusal(status, &bytes));
        }
        Ok(drover_core::jsonl::values(
            resp.into_body().into_data_stream(),
            MAX_ANSWER,
        ))
    }
}

/// The error for a non-2xx answer with this body (a Status, or anything).
fn refusal(status: StatusCode, body: &[u8]) -> UiError {
    UiError::from_api(status, &serde_json::from_slice(body).unwrap_or(Value::Null))
}

/// What [`seg`] escapes: anything that could end or change a path segment
/// or a query value. Names in Kubernetes are DNS labels and pass as they are.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escape one path segment (a user-chosen name) for a URL.
pub(crate) fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}
