//! A pod's streams: its log tail as server-sent events (a `line` event per
//! line, its text as a JSON string; `end` when the log ends; `failure`
//! with the cluster's reason), the log as a download, and
//! its shell — the browser's WebSocket, checked for this site's origin,
//! handed to the proxy's `pods/exec` as the signed-in user, so the
//! terminal speaks the `v4.channel.k8s.io` protocol with the cluster and
//! the session ends when the user's rights are revoked, as kubectl's do.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::find;
use crate::api::seg;
use crate::error::UiError;
use crate::session::{cookie, Bearer, SESSION_COOKIE};
use crate::Ui;

/// Lines of the tail a log view starts with.
const TAIL: u32 = 500;

/// Largest log a download carries.
const DOWNLOAD_BYTES: u64 = 16 * 1024 * 1024;

/// Longest line sent as one event (a longer one is cut there).
const MAX_LINE: usize = 64 * 1024;

#[derive(Deserialize, Default)]
pub(crate) struct LogQuery {
    #[serde(default)]
    container: String,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default)]
    follow: Option<String>,
}

fn log_path(id: &str, ns: &str, name: &str, q: &LogQuery) -> Result<String, UiError> {
    let pods = find("pods")?;
    let mut path = format!("{}/log?", pods.item(id, ns, name));
    if !q.container.is_empty() {
        path.push_str(&format!("container={}&", seg(&q.container)));
    }
    if q.previous.as_deref() == Some("true") {
        path.push_str("previous=true&");
    }
    Ok(path)
}

/// `GET …/pods/{ns}/{name}/log?container=&previous=&follow=`: the tail, then
/// new lines as they come (with `follow=true`).
pub(crate) async fn tail(
    State(ui): State<Arc<Ui>>,
    Bearer(token): Bearer,
    Path((id, ns, name)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let mut path = log_path(&id, &ns, &name, &q)?;
    path.push_str(&format!("tailLines={TAIL}"));
    if q.follow.as_deref() != Some("false") {
        path.push_str("&follow=true");
    }
    let resp = ui.api.send(Method::GET, &path, &token, None).await?;
    let status = resp.status();
    let stream: futures::stream::BoxStream<'static, Result<Event, Infallible>> = if status
        .is_success()
    {
        lines(resp.into_body().into_data_stream())
            .map(|line| {
                let text = serde_json::Value::String(line).to_string();
                Ok(Event::default().event("line").data(text))
            })
            // The log ended (the container did, or it was read whole): the
            // page stops rather than reconnect and read it again.
            .chain(futures::stream::once(async {
                Ok(Event::default().event("end").data("end"))
            }))
            .boxed()
    } else {
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        futures::stream::once(async move { Ok(Event::default().event("failure").data(message)) })
            .boxed()
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The complete lines of a byte stream (a last unfinished one too), each
/// cut at [`MAX_LINE`], lossily decoded.
fn lines<S, E>(body: S) -> impl Stream<Item = String> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
{
    futures::stream::unfold(
        (Box::pin(body), BytesMut::new(), false),
        |(mut body, mut buf, mut done)| async move {
            loop {
                if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line = buf.split_to(i + 1);
                    let text = String::from_utf8_lossy(&line[..i.min(MAX_LINE)])
                        .trim_end_matches('\r')
                        .to_owned();
                    return Some((text, (body, buf, done)));
                }
                if buf.len() > MAX_LINE {
                    let line = buf.split_to(MAX_LINE);
                    return Some((
                        String::from_utf8_lossy(&line).into_owned(),
                        (body, buf, done),
                    ));
                }
                if done {
                    if buf.is_empty() {
                        return None;
                    }
                    let rest = buf.split();
                    return Some((
                        String::from_utf8_lossy(&rest).into_owned(),
                        (body, buf, true),
                    ));
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    // The end of the body, or a broken one: what is left goes.
                    _ => done = true,
                }
            }
        },
    )
}

/// `GET …/pods/{ns}/{name}/log/download`: the log as a file.
pub(crate) async fn download(
    State(ui): State<Arc<Ui>>,
    Bearer(token): Bearer,
    Path((id, ns, name)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, UiError> {
    let mut path = log_path(&id, &ns, &name, &q)?;
    path.push_str(&format!("limitBytes={DOWNLOAD_BYTES}"));
    let bytes = ui.api.bytes(Method::GET, &path, &token).await?;
    let file: String = format!("{name}-{}", q.container)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.log\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct ShellQuery {
    #[serde(default)]
    container: String,
}

/// `GET …/pods/{ns}/{name}/shell?container=` (a WebSocket): the pod's
/// `exec` of `sh` with a terminal, through the proxy as the user.
pub(crate) async fn shell(
    State(ui): State<Arc<Ui>>,
    Path((id, ns, name)): Path<(String, String, String)>,
    Query(q): Query<ShellQuery>,
    req: Request,
) -> Response {
    let refuse = |status: StatusCode, why: &str| (status, why.to_owned()).into_response();
    let Some(token) = cookie(req.headers(), SESSION_COOKIE) else {
        return refuse(StatusCode::UNAUTHORIZED, "not signed in");
    };
    // A WebSocket is not bound by the same-origin policy: only this site's
    // own pages may open one with the session's cookie.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if host.is_empty() || origin != format!("https://{host}") {
        tracing::info!(%origin, "UI shell refused: not opened by a Drover page");
        return refuse(
            StatusCode::FORBIDDEN,
            "a shell opens only from a Drover page of this site",
        );
    }
    let Ok(pods) = find("pods") else {
        return refuse(StatusCode::NOT_FOUND, "no pods");
    };
    let mut path = format!(
        "{}/exec?command=sh&stdin=true&stdout=true&stderr=false&tty=true",
        pods.item(&id, &ns, &name)
    );
    if !q.container.is_empty() {
        path.push_str(&format!("&container={}", seg(&q.container)));
    }
    let (mut parts, body) = req.into_parts();
    let Ok(uri) = path.parse() else {
        return refuse(StatusCode::BAD_REQUEST, "a bad pod name");
    };
    parts.uri = uri;
    parts.headers.remove(header::COOKIE);
    parts.headers.remove(header::ORIGIN);
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return refuse(StatusCode::UNAUTHORIZED, "not signed in");
    };
    parts.headers.insert(header::AUTHORIZATION, bearer);
    let req = Request::from_parts(parts, Body::new(body));
    ui.api.forward(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_split_across_chunks() {
        let chunks: Vec<Result<Bytes, Infallible>> = vec![
            Ok(Bytes::from_static(b"one\ntw")),
            Ok(Bytes::from_static(b"o\r\nthree")),
        ];
        let got: Vec<String> = lines(futures::stream::iter(chunks)).collect().await;
        assert_eq!(got, ["one", "two", "three"]);
    }
}
