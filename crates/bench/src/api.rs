//! `drover bench api`: create many management objects (registration tokens
//! in one cluster's namespace: a write of the object and of its hash
//! record each), list them whole and by pages, and measure how long an
//! object takes to reach 100 watchers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::env::{percentile, Server};
use crate::{round3, BenchError, Common};

/// `drover bench api` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Objects to create.
    #[arg(long, default_value_t = 10_000)]
    pub objects: usize,
    /// Creates under way at once.
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
    /// Watchers for the fan-out measurement.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Objects created while they watch.
    #[arg(long, default_value_t = 20)]
    pub events: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

fn token_object(name: &str) -> Value {
    json!({"apiVersion": "management.drover.io/v1", "kind": "ClusterRegistrationToken", "metadata": {"name": name}})
}

/// Run the scenario.
pub async fn run(args: ApiArgs) -> Result<Value, BenchError> {
    let server = Server::start(args.common.datastore.as_deref()).await?;
    let c = server
        .call(
            reqwest::Method::POST,
            "/apis/management.drover.io/v1/clusters",
            Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "spec": {"displayName": "api-bench"}})),
        )
        .await?;
    let cluster = c["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let collection =
        format!("/apis/management.drover.io/v1/namespaces/{cluster}/clusterregistrationtokens");

    let start = Instant::now();
    let results = futures::stream::iter(0..args.objects)
        .map(|i| {
            let (server, collection) = (&server, &collection);
            async move {
                server
                    .call(
                        reqwest::Method::POST,
                        collection,
                        Some(&token_object(&format!("t-{i:06}"))),
                    )
                    .await
            }
        })
        .buffer_unordered(args.parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    let create_seconds = start.elapsed().as_secs_f64();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    let create_per_second = args.objects as f64 / create_seconds;

    // Full lists: the median of three.
    let mut full = Vec::new();
    let mut listed = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let l = server.call(reqwest::Method::GET, &collection, None).await?;
        full.push(t.elapsed().as_secs_f64() * 1000.0);
        listed = l["items"].as_array().map(Vec::len).unwrap_or(0);
    }
    full.sort_by(f64::total_cmp);
    let list_ms = full[1];

    let t = Instant::now();
    let mut pages = 0;
    let mut paged = 0;
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(c) => format!("{collection}?limit=500&continue={c}"),
            None => format!("{collection}?limit=500"),
        };
        let page = server.call(reqwest::Method::GET, &path, None).await?;
        pages += 1;
        paged += page["items"].as_array().map(Vec::len).unwrap_or(0);
        next = page["metadata"]["continue"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        if next.is_none() || pages > 10_000 {
            break;
        }
    }
    let paginated_ms = t.elapsed().as_secs_f64() * 1000.0;

    // Fan-out: watchers from the current revision; each object created is
    // timed until every watcher has it.
    let rv = server
        .call(reqwest::Method::GET, &format!("{collection}?limit=1"), None)
        .await?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let seen: Arc<Mutex<Vec<Vec<Option<Instant>>>>> =
        Arc::new(Mutex::new(vec![vec![None; args.watchers]; args.events]));
    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        let resp = server
            .http
            .get(format!(
                "{}{collection}?watch=true&resourceVersion={rv}",
                server.url
            ))
            .bearer_auth(&server.token)
            .send()
            .await
            .map_err(|e| BenchError::Run(format!("watch: {e}")))?;
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut events = std::pin::pin!(crate::env::watch_events(resp));
            while let Some(event) = events.next().await {
                let name = event["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default();
                if let Some(k) = name
                    .strip_prefix("w-")
                    .and_then(|k| k.parse::<usize>().ok())
                {
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = s.get_mut(k).and_then(|row| row.get_mut(w)) {
                        slot.get_or_insert_with(Instant::now);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for k in 0..args.events {
        let t0 = Instant::now();
        server
            .call(
                reqwest::Method::POST,
                &collection,
                Some(&token_object(&format!("w-{k}"))),
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = seen.lock().unwrap_or_else(|e| e.into_inner())[k]
                .iter()
                .all(Option::is_some);
            if all || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let s = seen.lock().unwrap_or_else(|e| e.into_inner());
        latencies.extend(
            s[k].iter()
                .flatten()
                .map(|t| t.duration_since(t0).as_secs_f64() * 1000.0),
        );
    }
    for t in tasks {
        t.abort();
    }
    latencies.sort_by(f64::total_cmp);
    let delivered = latencies.len();

    println!(
        "\napi: {} objects, {} watchers",
        args.objects, args.watchers
    );
    let rows = [
        (
            "creates per second",
            format!("{create_per_second:.0} ({} at once)", args.parallel),
        ),
        (
            "list of all, median of 3",
            format!("{list_ms:.1} ms ({listed} items)"),
        ),
        (
            "list by pages of 500",
            format!("{paginated_ms:.1} ms ({pages} pages, {paged} items)"),
        ),
        (
            "watch fan-out p50",
            format!("{:.1} ms", percentile(&latencies, 50.0)),
        ),
        (
            "watch fan-out p99",
            format!("{:.1} ms", percentile(&latencies, 99.0)),
        ),
        (
            "events delivered",
            format!("{delivered} of {}", args.events * args.watchers),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<28} {v}");
    }
    Ok(json!({
        "scenario": "api",
        "datastore": if server.datastore.is_some() { "postgres" } else { "sqlite" },
        "objects": args.objects,
        "create_per_second": round3(create_per_second),
        "list_10k_ms": round3(list_ms),
        "listed_items": listed,
        "list_paginated_ms": round3(paginated_ms),
        "pages": pages,
        "watchers": args.watchers,
        "watch_fanout_p50_ms": round3(percentile(&latencies, 50.0)),
        "watch_fanout_p99_ms": round3(percentile(&latencies, 99.0)),
        "watch_events_delivered": delivered,
    }))
}
