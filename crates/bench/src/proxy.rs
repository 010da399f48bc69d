//! `drover bench proxy`: the same requests to one simulated cluster, directly
//! and through Drover's proxy (server and agent each in their own
//! process), at several concurrencies; then the memory of both while a large
//! pod log streams through the proxy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::env::{self, percentile, Server};
use crate::{mib, round3, BenchError, Common};

/// `drover bench proxy` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent clients, one measurement each.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    pub clients: Vec<usize>,
    /// Pods in the listed namespace.
    #[arg(long, default_value_t = 500)]
    pub pods: usize,
    /// MiB of log streamed through the proxy.
    #[arg(long, default_value_t = 200)]
    pub stream_mib: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

struct Measured {
    p50: f64,
    p90: f64,
    p99: f64,
    rps: f64,
    errors: usize,
}

/// GET `url` from `clients` tasks for `seconds` (and at most 200,000
/// requests), reading each body whole.
async fn measure(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    clients: usize,
    seconds: u64,
) -> Measured {
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(200_000));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
            let (latencies, errors, budget) = (latencies.clone(), errors.clone(), budget.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while Instant::now() < deadline
                    && budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0
                {
                    let t = Instant::now();
                    let ok = match http.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    if ok {
                        mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    l.sort_by(f64::total_cmp);
    Measured {
        p50: percentile(&l, 50.0),
        p90: percentile(&l, 90.0),
        p99: percentile(&l, 99.0),
        rps: l.len() as f64 / elapsed,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn figures(m: &Measured) -> Value {
    json!({"p50_ms": round3(m.p50), "p90_ms": round3(m.p90), "p99_ms": round3(m.p99), "rps": round3(m.rps), "errors": m.errors})
}

/// Run the scenario.
pub async fn run(args: ProxyArgs) -> Result<Value, BenchError> {
    let server = Server::start(args.common.datastore.as_deref()).await?;
    let dir = env::work_dir("drover-bench-proxy-")?;
    let sims_http = env::client(None, true)?;
    let imp = env::import(&server, &sims_http, dir.path(), "proxy-bench", 3, 10).await?;
    let agent = env::agent_process(&env::agent_args(&server, &imp))?;
    let cluster = imp.cluster.clone();
    let states = env::wait_active(
        &server,
        std::slice::from_ref(&cluster),
        Duration::from_secs(60),
    )
    .await?;
    if states.iter().any(|(_, s)| *s != "Active") {
        return Err(BenchError::Run(
            "the cluster did not turn Active in 60 s".into(),
        ));
    }
    let sim = &imp.sim;
    let sim_post = |path: String, body: Value| {
        sims_http
            .post(format!("{}{path}", sim.url))
            .bearer_auth(&sim.admin_token)
            .json(&body)
            .send()
    };
    sim_post(
        "/api/v1/namespaces".into(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )
    .await
    .map_err(|e| BenchError::Run(format!("namespace: {e}")))?;
    let pods = futures::stream::iter(0..args.pods)
        .map(|i| {
            sim_post(
                "/api/v1/namespaces/bench/pods".into(),
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": format!("pod-{i:04}"), "labels": {"app": "bench"}},
                       "spec": {"containers": [{"name": "app", "image": "busybox"}]}}),
            )
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(e)) = pods.into_iter().find(|r| r.is_err()) {
        return Err(BenchError::Run(format!("pods: {e}")));
    }

    let paths = [
        "/api/v1/namespaces/default".to_owned(),
        "/api/v1/namespaces/bench/pods".to_owned(),
    ];
    let mut runs = Vec::new();
    println!(
        "\n{:<32} {:>7}  {:>28}  {:>28}  {:>7}",
        "path", "clients", "direct p50/p99 ms, req/s", "proxy p50/p99 ms, req/s", "ratio"
    );
    for path in &paths {
        for &clients in &args.clients {
            let direct = measure(
                &sims_http,
                &format!("{}{path}", sim.url),
                &sim.admin_token,
                clients,
                args.seconds,
            )
            .await;
            let proxied = measure(
                &server.http,
                &format!("{}/k8s/clusters/{cluster}{path}", server.url),
                &server.token,
                clients,
                args.seconds,
            )
            .await;
            let ratio = if direct.rps > 0.0 {
                proxied.rps / direct.rps
            } else {
                0.0
            };
            println!(
                "{:<32} {:>7}  {:>8.2} {:>8.2} {:>10.0}  {:>8.2} {:>8.2} {:>10.0}  {:>6.0} %",
                path,
                clients,
                direct.p50,
                direct.p99,
                direct.rps,
                proxied.p50,
                proxied.p99,
                proxied.rps,
                ratio * 100.0
            );
            runs.push(json!({
                "path": path, "clients": clients,
                "direct": figures(&direct), "proxy": figures(&proxied),
                "proxy_over_direct_rps": round3(ratio),
                "proxy_p50_overhead_ms": round3(proxied.p50 - direct.p50),
            }));
        }
    }

    // A pod logging as fast as it is read, followed through the proxy.
    sim_post(
        "/api/v1/namespaces/bench/pods".into(),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "chatty", "annotations": {"sim.drover.io/log-interval-ms": "0", "sim.drover.io/log-line-bytes": "1024"}},
               "spec": {"containers": [{"name": "app", "image": "busybox"}]}}),
    )
    .await
    .map_err(|e| BenchError::Run(format!("log pod: {e}")))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bytes_wanted = args.stream_mib * 1024 * 1024;
    let (server_pid, agent_pid) = (server.pid(), agent.0.id());
    let (server_before, agent_before) = (env::rss(server_pid), env::rss(agent_pid));
    let peaks = Arc::new(Mutex::new((server_before, agent_before)));
    let sampling = {
        let peaks = peaks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                p.0 = p.0.max(env::rss(server_pid));
                p.1 = p.1.max(env::rss(agent_pid));
            }
        })
    };
    let start = Instant::now();
    let resp = server
        .http
        .get(format!(
            "{}/k8s/clusters/{cluster}/api/v1/namespaces/bench/pods/chatty/log?follow=true&limitBytes={bytes_wanted}",
            server.url
        ))
        .bearer_auth(&server.token)
        .send()
        .await
        .map_err(|e| BenchError::Run(format!("log stream: {e}")))?;
    let mut body = resp.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = body.next().await {
        got += chunk
            .map_err(|e| BenchError::Run(format!("log stream: {e}")))?
            .len() as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    sampling.abort();
    let (server_peak, agent_peak) = *peaks.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "\nstreamed {} through the proxy in {seconds:.1} s ({:.0} MiB/s); server RSS {} -> peak {}, agent RSS {} -> peak {}",
        mib(got),
        got as f64 / 1048576.0 / seconds,
        mib(server_before),
        mib(server_peak),
        mib(agent_before),
        mib(agent_peak)
    );
    drop(agent);
    drop(imp);
    Ok(json!({
        "scenario": "proxy",
        "datastore": if server.datastore.is_some() { "postgres" } else { "sqlite" },
        "seconds_per_run": args.seconds,
        "pods": args.pods,
        "runs": runs,
        "stream_bytes": got,
        "stream_seconds": round3(seconds),
        "stream_rss_growth_bytes": server_peak.saturating_sub(server_before),
        "stream_agent_rss_growth_bytes": agent_peak.saturating_sub(agent_before),
    }))
}
