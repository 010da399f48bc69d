//! `pods/log`: generated lines, as if the container had been logging one
//! line a second since it started. Query parameters as kubelet honours
//! them: `container` (required when the pod has several), `tailLines`,
//! `sinceSeconds`, `timestamps`, `limitBytes`, `follow` (then new lines keep
//! coming until the client goes).
//!
//! A pod that runs to completion (a Job's, or one with a command and
//! `restartPolicy` Never or OnFailure), or one whose command crash-loops,
//! logs instead what its command prints in the simulated container, all at
//! once (`tailLines` only; no follow). `previous=true` reads the instance
//! before the last restart (the same command's output), and is refused as
//! kubelet refuses it when the container never restarted.
//!
//! Pod annotations tune it, for benchmarks: `sim.drover.io/log-interval-ms`
//! (default 1000; 0 streams as fast as the client reads, following only)
//! and `sim.drover.io/log-line-bytes` (pads each line to at least that size).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use drover_apiserver::ApiError;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Most lines of history returned without `tailLines`.
const MAX_HISTORY: u64 = 10_000;

struct Params {
    container: Option<String>,
    follow: bool,
    tail: Option<u64>,
    since: Option<u64>,
    timestamps: bool,
    limit_bytes: Option<u64>,
    previous: bool,
}

fn params(query: &str) -> Result<Params, ApiError> {
    let mut p = Params {
        container: None,
        follow: false,
        tail: None,
        since: None,
        timestamps: false,
        limit_bytes: None,
        previous: false,
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid {k}: {v:?}")))
        };
        match &*k {
            "container" => p.container = Some(v.into_owned()).filter(|c| !c.is_empty()),
            "follow" => p.follow = v == "true" || v == "1",
            "tailLines" => p.tail = Some(num(&v)?),
            "sinceSeconds" => p.since = Some(num(&v)?),
            "timestamps" => p.timestamps = v == "true" || v == "1",
            "limitBytes" => p.limit_bytes = Some(num(&v)?),
            "previous" => p.previous = v == "true" || v == "1",
            _ => {}
        }
    }
    Ok(p)
}

fn annotation(pod: &Value, name: &str) -> Option<u64> {
    pod.pointer(&format!("/metadata/annotations/sim.drover.io~1{name}"))
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
}

fn timestamp(at: SystemTime) -> String {
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}.{nanos:09}Z",
        drover_core::meta::rfc3339(at).trim_end_matches('Z')
    )
}

/// The log of `pod` as a response.
pub(crate) fn stream(pod: Value, query: &str) -> Result<Response, ApiError> {
    let p = params(query)?;
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let container = match (&p.container, containers.as_slice()) {
        (Some(c), _) if containers.contains(c) => c.clone(),
        (Some(c), _) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if p.previous {
        let restarted = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                c["name"] == container.as_str() && c.pointer("/lastState/terminated").is_some()
            });
        if !restarted {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
    }
    // A pod that runs to completion, or crash-loops, logs what its command
    // printed (each instance the same).
    if matches!(phase, "Running" | "Succeeded" | "Failed")
        && (crate::workloads::completion(&pod).is_some() || crate::workloads::crash_loop(&pod))
    {
        let spec = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["name"] == container.as_str()))
            .cloned()
            .unwrap_or_default();
        let out =
            crate::container::Container::new(&pod, &spec).exec(&crate::exec::entrypoint(&spec));
        let mut text = out.out + &out.err;
        if let Some(n) = p.tail {
            let lines: Vec<&str> = text.lines().collect();
            text = lines[lines.len().saturating_sub(n as usize)..]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect();
        }
        return Ok(axum::response::IntoResponse::into_response((
            [(header::CONTENT_TYPE, "text/plain")],
            text,
        )));
    }
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    let start = pod
        .pointer("/status/startTime")
        .or_else(|| pod.pointer("/metadata/creationTimestamp"))
        .and_then(Value::as_str)
        .and_then(drover_core::meta::parse_rfc3339)
        .unwrap_or_else(SystemTime::now);
    let interval = Duration::from_millis(annotation(&pod, "log-interval-ms").unwrap_or(1000));
    // Bounded: a line is at most 64 KiB however the pod is annotated.
    let pad = annotation(&pod, "log-line-bytes")
        .unwrap_or(0)
        .min(64 * 1024) as usize;
    let now = SystemTime::now();
    let elapsed = now.duration_since(start).unwrap_or_default();
    let produced = if interval.is_zero() {
        0
    } else {
        (elapsed.as_millis() / interval.as_millis()) as u64 + 1
    };
    let mut first = produced.saturating_sub(MAX_HISTORY);
    if let Some(since) = p.since {
        let since_time = now
            .checked_sub(Duration::from_secs(since))
            .unwrap_or(std::time::UNIX_EPOCH);
        if let Ok(d) = since_time.duration_since(start) {
            if !interval.is_zero() {
                first = first.max((d.as_millis() / interval.as_millis()) as u64 + 1);
            }
        }
    }
    if let Some(tail) = p.tail {
        first = first.max(produced.saturating_sub(tail));
    }
    let line = move |i: u64| -> Bytes {
        let at = start + interval * (i as u32);
        let mut text = format!(
            "{name}/{container} request {i}: GET /api/items/{} 200 {}ms",
            i % 1000,
            1 + i % 17
        );
        if text.len() < pad {
            text.extend(std::iter::repeat_n('.', pad - text.len()));
        }
        let text = if p.timestamps {
            format!("{} {text}\n", timestamp(at))
        } else {
            format!("{text}\n")
        };
        Bytes::from(text)
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let follow = p.follow;
    let mut budget = p.limit_bytes.unwrap_or(u64::MAX);
    tokio::spawn(async move {
        let mut i = first;
        loop {
            if !follow && i >= produced {
                return;
            }
            if follow && !interval.is_zero() {
                let due = start + interval * (i as u32);
                if let Ok(wait) = due.duration_since(SystemTime::now()) {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = tx.closed() => return,
                    }
                }
            }
            let mut chunk = line(i);
            if chunk.len() as u64 >= budget {
                chunk.truncate(budget as usize);
                let _ = tx.send(Ok(chunk)).await;
                return;
            }
            budget -= chunk.len() as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            i += 1;
        }
    });
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain".parse().expect("valid"));
    Ok(resp)
}
