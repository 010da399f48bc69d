//! `drover bench ui`: how fast the web UI's clusters page renders with many
//! clusters. Creates the clusters through the API, signs in through the
//! sign-in form as a browser does (cookies and CSRF token), then times the
//! first page, a filtered page and the last page.

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
    let pages = [
        ("first page", "/dashboard/clusters".to_owned()),
        (
            "filtered (\"cluster 0999\")",
            "/dashboard/clusters?q=cluster+0999".to_owned(),
        ),
        ("last page", format!("/dashboard/clusters?page={last}")),
    ];
    let mut rows = Vec::new();
    let mut figures = serde_json::Map::new();
    for (label, path) in pages {
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
            if !String::from_utf8_lossy(&body).contains("<table id=\"clusters\"") {
                return Err(BenchError::Run(format!("{path}: no clusters table")));
            }
        }
        times.sort_by(f64::total_cmp);
        let (p50, max) = (percentile(&times, 50.0), times[times.len() - 1]);
        rows.push((label, p50, max, bytes));
        figures.insert(
            label.split_whitespace().next().unwrap_or(label).to_owned(),
            json!({"path": path, "p50_ms": round3(p50), "max_ms": round3(max), "bytes": bytes}),
        );
    }
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "clusters page", "p50 ms", "max ms", "bytes"
    );
    for (label, p50, max, bytes) in rows {
        println!("{label:<28} {p50:>10.1} {max:>10.1} {bytes:>10}");
    }
    Ok(json!({
        "scenario": "ui",
        "datastore": if server.datastore.is_some() { "postgres" } else { "sqlite" },
        "clusters": args.clusters,
        "pages": figures,
    }))
}
