//! Watch: `?watch=1` streams newline-delimited JSON events
//! `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`.
//!
//! From `resourceVersion` "" or "0" the stream starts with a synthetic ADDED
//! per existing object; from N it carries every change after N (an ERROR
//! event with a 410 Status when N was compacted). With selectors, an object
//! that starts matching arrives as ADDED and one that stops as DELETED, as
//! kube-apiserver's watch cache does. BOOKMARKs come only when asked for.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use drover_store::{EventType, ListOptions, StoreError};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::handlers::{key_of, prefix_of, wants_table, Filter, Query, Stored};
use crate::kind::{Context, Resource};
use crate::request::RequestInfo;
use crate::{object, table, ApiError, ApiServer};

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

impl ApiServer {
    pub(crate) async fn watch(
        &self,
        ctx: &Context,
        r: &std::sync::Arc<Resource>,
        info: &RequestInfo,
        headers: &HeaderMap,
        q: &Query,
        only_gettable: bool,
    ) -> Result<Response, ApiError> {
        let filter = Filter::new(ctx, r, q, only_gettable).await?;
        let from: Option<i64> = match q.get("resourceVersion") {
            None | Some("0") => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
            ),
        };
        let default_timeout = || Duration::from_secs(1800 + rand::random::<u64>() % 1800);
        let timeout = match q.get("timeoutSeconds") {
            // 0 means "the server's default", as in kube-apiserver.
            Some(t) => match t
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?
            {
                0 => default_timeout(),
                n => Duration::from_secs(n),
            },
            None => default_timeout(),
        };
        let as_table = wants_table(headers);
        let bookmarks = q.flag("allowWatchBookmarks");
        let include = table::Include::parse(q.get("includeObject"));
        let prefix = prefix_of(r, &info.namespace);
        // A named watch (`kubectl get x NAME -w`) arrives as a field selector.
        let single_key = (!info.name.is_empty()).then(|| key_of(r, &info.namespace, &info.name));

        // What matches at the start revision: the initial events (from "0")
        // or the set that later changes are compared with (from N).
        let mut initial = Vec::new();
        let mut matching = HashSet::new();
        let mut start_error = None;
        // A revision the store has not reached: kube answers "too large".
        if let Some(n) = from {
            let current = self
                .store
                .revisions()
                .await
                .map_err(|e| {
                    ApiError::from_store(
                        e,
                        crate::error::Subject {
                            group: r.info.group,
                            resource: r.info.plural,
                            name: "",
                        },
                    )
                })?
                .current;
            if n > current {
                return Err(ApiError::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {n}, current: {current}"),
                ));
            }
        }
        let start = match self
            .store
            .list(&ListOptions {
                prefix: prefix.clone(),
                revision: from,
                ..Default::default()
            })
            .await
        {
            Ok(page) => {
                for kv in &page.items {
                    if single_key.as_ref().is_some_and(|k| *k != kv.key) {
                        continue;
                    }
                    let stored = Stored::from_kv(kv)?;
                    if filter.matches(r, &stored.value) {
                        matching.insert(kv.key.clone());
                        if from.is_none() {
                            initial.push(stored.with_rv());
                        }
                    }
                }
                page.revision
            }
            Err(StoreError::TooOld {
                requested,
                compacted,
            }) => {
                start_error = Some(ApiError::expired(format!(
                    "too old resource version: {requested} ({compacted})"
                )));
                0
            }
            Err(e) => {
                return Err(ApiError::from_store(
                    e,
                    crate::error::Subject {
                        group: r.info.group,
                        resource: r.info.plural,
                        name: "",
                    },
                ))
            }
        };

        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        let store = self.store.clone();
        let r = r.clone();
        tokio::spawn(async move {
            let mut enc = Encoder {
                r: &r,
                as_table,
                include,
                sent_columns: false,
            };
            let send = |line: Value| {
                let mut bytes = serde_json::to_vec(&line).expect("JSON");
                bytes.push(b'\n');
                Ok(Bytes::from(bytes))
            };
            if let Some(e) = start_error {
                let _ = tx
                    .send(send(json!({"type": "ERROR", "object": e.status()})))
                    .await;
                return;
            }
            for obj in initial {
                if tx.send(send(enc.event("ADDED", obj))).await.is_err() {
                    return;
                }
            }
            let mut events = store.watch(&prefix, start);
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
            ticker.tick().await;
            let mut last_rv = start;
            loop {
                let line = tokio::select! {
                    () = &mut deadline => return,
                    () = tx.closed() => return,
                    _ = ticker.tick(), if bookmarks => {
                        send(json!({"type": "BOOKMARK", "object": {
                            "kind": r.info.kind, "apiVersion": r.info.api_version(),
                            "metadata": {"resourceVersion": last_rv.to_string()},
                        }}))
                    }
                    next = events.next() => match next {
                        None => return,
                        Some(Err(StoreError::TooOld { requested, compacted })) => {
                            let e = ApiError::expired(format!("too old resource version: {requested} ({compacted})"));
                            let _ = tx.send(send(json!({"type": "ERROR", "object": e.status()}))).await;
                            return;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "watch ended by a store failure");
                            let e = ApiError::unavailable("the datastore is unavailable");
                            let _ = tx.send(send(json!({"type": "ERROR", "object": e.status()}))).await;
                            return;
                        }
                        Some(Ok(ev)) => {
                            last_rv = ev.revision();
                            if single_key.as_ref().is_some_and(|k| *k != ev.kv.key) {
                                continue;
                            }
                            let Ok(stored) = Stored::from_kv(&ev.kv) else { continue };
                            let now = ev.kind != EventType::Deleted && filter.matches(&r, &stored.value);
                            let was = matching.contains(&ev.kv.key);
                            let kind = match (ev.kind, was, now) {
                                (EventType::Deleted, true, _) | (_, true, false) => "DELETED",
                                (EventType::Deleted, false, _) | (_, false, false) => continue,
                                (_, false, true) => "ADDED",
                                (_, true, true) => "MODIFIED",
                            };
                            if kind == "DELETED" {
                                matching.remove(&ev.kv.key);
                            } else {
                                matching.insert(ev.kv.key.clone());
                            }
                            send(enc.event(kind, stored.with_rv()))
                        }
                    },
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("valid"),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            "no-cache, private".parse().expect("valid"),
        );
        Ok(resp)
    }
}

/// Turns objects into watch events, as Tables when asked.
struct Encoder<'a> {
    r: &'a Resource,
    as_table: bool,
    include: table::Include,
    sent_columns: bool,
}

impl Encoder<'_> {
    fn event(&mut self, kind: &str, obj: Value) -> Value {
        if !self.as_table {
            return json!({"type": kind, "object": obj});
        }
        let rv = object::meta_str(&obj, "resourceVersion").to_owned();
        let mut t = table::table(
            self.r,
            std::slice::from_ref(&obj),
            json!({"resourceVersion": rv}),
            self.include,
        );
        if self.sent_columns {
            t["columnDefinitions"] = json!([]);
        }
        self.sent_columns = true;
        json!({"type": kind, "object": t})
    }
}
