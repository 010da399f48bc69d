//! `drover bench ui`: how fast the web UI's pages render at scale. Creates
//! the clusters through the API, signs in through the sign-in form as a
//! browser does (cookies and CSRF token), then times the clusters list's
//! first page, a filtered page and the last page; then imports one
//! simulated cluster through a real agent, creates `--pods` pods in it and
//! times the explorer's pods page (its first page of a namespace, and of
//! every namespace), which reads through the proxy and the agent.

use std::time::Instant;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::env::{percentile, Server};
use crate::{round3, BenchError, Common};

/// `drover bench ui` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    /// Clusters to create.
    #[arg(long, default_value_t = 10_000)]
    pub clusters: usize,
    /// Creates under way at once.
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
    /// Pods in the cluster the explorer's pods page shows (0: skip it).
    #[arg(long, default_value_t = 5_000)]
    pub pods: usize,
    /// Times each page is fetched.
    #[arg(long, default_value_t = 7)]
    pub repeat: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

/// `name=value` of the first cookie an answer sets.
fn first_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_owned()
}

/// Run the scenario.
pub async fn run(args: UiArgs) -> Result<Value, BenchError> {
    println!("ui: clusters page with {} clusters", args.clusters);
    let server = Server::start(args.common.datastore.as_deref()).await?;
    let started = Instant::now();
    let results = futures::stream::iter(0..args.clusters)
        .map(|i| {
            let server = &server;
            async move {
                server
                    .call(
                        reqwest::Method::POST,
                        "/apis/management.drover.io/v1/clusters",
                        Some(
                            &json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster",
                            "metadata": {"name": format!("ui-{i:05}")},
                            "spec": {"displayName": format!("cluster {i:05}")}}),
                        ),
                    )
                    .await
            }
        })
        .buffer_unordered(args.parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    println!(
        "  {} clusters created in {:.1} s",
        args.clusters,
        started.elapsed().as_secs_f64()
    );

    let browser = reqwest::Client::builder()
        .use_preconfigured_tls(
            drover_net::client::client_config(Some(&server.ca_pem), false)
                .map_err(BenchError::Setup)?,
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BenchError::Setup(format!("HTTP client: {e}")))?;
    let page = browser
        .get(format!("{}/dashboard/login", server.url))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| BenchError::Run(format!("sign-in page: {e}")))?;
    let signin_cookie = first_cookie(&page);
    let form = page.text().await.unwrap_or_default();
    let csrf = form
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_owned();
    let signed_in = browser
        .post(format!("{}/dashboard/login", server.url))
        .header(reqwest::header::COOKIE, signin_cookie)
        .form(&[
            ("_csrf", csrf.as_str()),
            ("username", "admin"),
            ("password", crate::env::PASSWORD),
        ])
        .send()
        .await
        .map_err(|e| BenchError::Run(format!("sign-in: {e}")))?;
    if signed_in.status() != reqwest::StatusCode::SEE_OTHER {
        return Err(BenchError::Run(format!(
            "sign-in answered {}",
            signed_in.status()
        )));
    }
    let session = first_cookie(&signed_in);
    let last = args.clusters.div_ceil(50).max(1);
    let mut pages = vec![
        (
            "first",
            "first page",
            "/dashboard/clusters".to_owned(),
            "<table id=\"clusters\"",
        ),
        (
            "filtered",
            "filtered (\"cluster 0999\")",
            "/dashboard/clusters?q=cluster+0999".to_owned(),
            "<table id=\"clusters\"",
        ),
        (
            "last",
            "last page",
            format!("/dashboard/clusters?page={last}"),
            "<table id=\"clusters\"",
        ),
    ];
    // The explorer: one cluster with `pods` pods, through a real agent.
    let dir = crate::env::work_dir("drover-bench-ui-")?;
    let mut _agent = None;
    let mut _imported = None;
    if args.pods > 0 {
        let (cluster, imp, agent) =
            explorer_cluster(&server, dir.path(), args.pods, args.parallel).await?;
        pages.push((
            "explorer_pods_namespace",
            "explorer pods, one namespace",
            format!("/dashboard/clusters/{cluster}/explore/pods?ns=bench"),
            "<table id=\"explorer\"",
        ));
        pages.push((
            "explorer_pods_all",
            "explorer pods, all namespaces",
            format!("/dashboard/clusters/{cluster}/explore/pods"),
            "<table id=\"explorer\"",
        ));
        _agent = Some(agent);
        _imported = Some(imp);
    }
    let mut rows = Vec::new();
    let mut figures = serde_json::Map::new();
    for (key, label, path, table) in pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.repeat.max(1) {
            let t = Instant::now();
            let resp = browser
                .get(format!("{}{path}", server.url))
                .header(reqwest::header::COOKIE, &session)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| BenchError::Run(format!("{path}: {e}")))?;
            let body = resp.bytes().await.unwrap_or_default();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = body.len();
            if !String::from_utf8_lossy(&body).contains(table) {
                return Err(BenchError::Run(format!("{path}: no {table} in the page")));
            }
        }
        times.sort_by(f64::total_cmp);
        let (p50, max) = (percentile(&times, 50.0), times[times.len() - 1]);
        rows.push((label, p50, max, bytes));
        figures.insert(
            key.to_owned(),
            json!({"path": path, "p50_ms": round3(p50), "max_ms": round3(max), "bytes": bytes}),
        );
    }
    println!();
    println!(
        "{:<32} {:>10} {:>10} {:>10}",
        "page", "p50 ms", "max ms", "bytes"
    );
    for (label, p50, max, bytes) in rows {
        println!("{label:<32} {p50:>10.1} {max:>10.1} {bytes:>10}");
    }
    Ok(json!({
        "scenario": "ui",
        "datastore": if server.datastore.is_some() { "postgres" } else { "sqlite" },
        "clusters": args.clusters,
        "pods": args.pods,
        "pages": figures,
    }))
}

/// Import a simulated cluster through a real agent and create `pods` pods
/// in its namespace `bench` (directly in the sim, `parallel` at a time);
/// the cluster's id, the import (which keeps the sim running) and the agent.
async fn explorer_cluster(
    server: &Server,
    dir: &std::path::Path,
    pods: usize,
    parallel: usize,
) -> Result<(String, crate::env::Imported, crate::env::KillOnDrop), BenchError> {
    let sims_http = crate::env::client(None, true)?;
    let imp = crate::env::import(server, &sims_http, dir, "explorer-bench", 3, 10).await?;
    let agent = crate::env::agent_process(&crate::env::agent_args(server, &imp))?;
    let cluster = imp.cluster.clone();
    let states = crate::env::wait_active(
        server,
        std::slice::from_ref(&cluster),
        std::time::Duration::from_secs(60),
    )
    .await?;
    if states.iter().any(|(_, s)| *s != "Active") {
        return Err(BenchError::Run(
            "the explorer's cluster did not turn Active in 60 s".into(),
        ));
    }
    let sim = |method: reqwest::Method, path: String, body: Value| {
        sims_http
            .request(method, format!("{}{path}", imp.sim.url))
            .bearer_auth(&imp.sim.admin_token)
            .json(&body)
            .send()
    };
    sim(
        reqwest::Method::POST,
        "/api/v1/namespaces".into(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )
    .await
    .map_err(|e| BenchError::Run(format!("namespace bench: {e}")))?;
    let started = Instant::now();
    let created = futures::stream::iter(0..pods)
        .map(|i| {
            sim(
                reqwest::Method::POST,
                "/api/v1/namespaces/bench/pods".into(),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}),
            )
        })
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    if let Some(failed) = created
        .iter()
        .find(|r| !r.as_ref().is_ok_and(|r| r.status().is_success()))
    {
        return Err(BenchError::Run(format!("creating pods: {failed:?}")));
    }
    println!(
        "  {pods} pods created in cluster {cluster} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((cluster, imp, agent))
}
