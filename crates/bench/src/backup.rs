//! `drover bench backup`: a server whose datastore holds many objects
//! (100,000 by default, about 600 bytes each, written straight into its
//! datastore in batches before the measurement), then:
//!
//! - API write latency (GlobalRole creates, one at a time) for a few
//!   seconds without a backup, then while a backup runs;
//! - the backup's time and throughput, and the server's peak RSS during it
//!   (sampled every 20 ms) against its RSS before;
//! - the restore of that file into an empty datastore of the same kind
//!   (`drover backup restore`, in its own process): time and throughput.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::env::{self, percentile, Server, ServerOptions};
use crate::{mib, round3, BenchError, Common};

/// `drover bench backup` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// Objects in the datastore.
    #[arg(long, default_value_t = 100_000)]
    pub objects: usize,
    /// Seconds of API writes measured without a backup.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

fn object(i: usize) -> Vec<u8> {
    json!({"apiVersion": "bench.drover.io/v1", "kind": "Thing",
        "metadata": {"name": format!("thing-{i:07}"), "labels": {"bench": "backup", "shard": (i % 16).to_string()}},
        "spec": {"description": "x".repeat(420), "index": i}})
    .to_string()
    .into_bytes()
}

/// Latencies (ms) of GlobalRole creates, one at a time, until `done`
/// says stop (checked between writes) or `limit` passes.
async fn writes(
    server: &Server,
    tag: &str,
    limit: Duration,
    done: impl Fn() -> bool,
) -> Result<Vec<f64>, BenchError> {
    let mut out = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < limit && !done() {
        let t = Instant::now();
        server
            .call(
                reqwest::Method::POST,
                "/apis/management.drover.io/v1/globalroles",
                Some(
                    &json!({"apiVersion": "management.drover.io/v1", "kind": "GlobalRole",
                    "metadata": {"name": format!("bench-{tag}-{i}")}, "rules": []}),
                ),
            )
            .await?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        i += 1;
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Run the scenario.
pub async fn run(args: BackupArgs) -> Result<Value, BenchError> {
    let server = Server::start_with(ServerOptions {
        datastore: args.common.datastore.clone(),
        ..Default::default()
    })
    .await?;
    let url = args
        .common
        .datastore
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", server.data_dir.join("state.db").display()));
    // The objects go straight into the server's datastore: the API would
    // take minutes to make 100,000.
    let load = Instant::now();
    {
        let store = drover_store::Store::open(&url, drover_store::StoreOptions::default())
            .await
            .map_err(|e| BenchError::Setup(format!("datastore: {e}")))?;
        for start in (0..args.objects).step_by(1000) {
            let batch: Vec<(String, Vec<u8>)> = (start..(start + 1000).min(args.objects))
                .map(|i| {
                    (
                        format!("/registry/bench.drover.io/things/thing-{i:07}"),
                        object(i),
                    )
                })
                .collect();
            store
                .create_all(&batch)
                .await
                .map_err(|e| BenchError::Setup(format!("loading objects: {e}")))?;
        }
        store.close().await;
    }
    let load_seconds = load.elapsed().as_secs_f64();
    println!(
        "{} objects loaded in {load_seconds:.1} s; measuring writes without a backup for {} s",
        args.objects, args.seconds
    );
    let quiet = writes(&server, "quiet", Duration::from_secs(args.seconds), || {
        false
    })
    .await?;
    let rss_before = env::rss(server.pid());

    // The backup, with writes going on and the RSS sampled.
    let started = Instant::now();
    server
        .call(
            reqwest::Method::POST,
            "/apis/management.drover.io/v1/backups",
            Some(
                &json!({"apiVersion": "management.drover.io/v1", "kind": "Backup",
                "metadata": {"name": "bench"}, "spec": {}}),
            ),
        )
        .await?;
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let sampler = {
        let (finished, peak, pid) = (finished.clone(), peak.clone(), server.pid());
        tokio::spawn(async move {
            while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(env::rss(pid), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let watcher = {
        let finished = finished.clone();
        let (http, base, token) = (
            server.http.clone(),
            server.url.clone(),
            server.token.clone(),
        );
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(1800);
            let result = loop {
                let b: Value = match http
                    .get(format!("{base}/apis/management.drover.io/v1/backups/bench"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                let ready = b
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
                if let Some(ready) = ready {
                    break if ready["status"] == "True" {
                        Ok(b)
                    } else {
                        Err(BenchError::Run(format!(
                            "the backup failed: {}",
                            ready["message"]
                        )))
                    };
                }
                if Instant::now() > deadline {
                    break Err(BenchError::Run(
                        "the backup did not finish in 30 minutes".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        })
    };
    let during = {
        let finished = finished.clone();
        writes(&server, "during", Duration::from_secs(1800), move || {
            finished.load(std::sync::atomic::Ordering::SeqCst)
        })
        .await?
    };
    let backup = watcher
        .await
        .map_err(|e| BenchError::Run(format!("watching the backup: {e}")))??;
    let backup_seconds = started.elapsed().as_secs_f64();
    let _ = sampler.await;
    let peak_rss = peak.load(std::sync::atomic::Ordering::SeqCst);
    let file = backup["status"]["files"][0].clone();
    let file_name = file["name"].as_str().unwrap_or_default().to_owned();
    let file_bytes = file["size"].as_u64().unwrap_or(0);
    let objects_in_file = file["objects"].as_u64().unwrap_or(0);

    // Restore into an empty datastore of the same kind.
    let path = server.data_dir.join("backups").join(&file_name);
    let target = env::work_dir("drover-bench-restore-")?;
    let restore_target: Vec<String> = match &args.common.datastore {
        Some(pg) => {
            let db = fresh_database(pg).await?;
            vec!["--datastore".into(), db]
        }
        None => vec!["--data-dir".into(), target.path().display().to_string()],
    };
    let t = Instant::now();
    let out = std::process::Command::new(
        std::env::current_exe().map_err(|e| BenchError::Setup(e.to_string()))?,
    )
    .arg("backup")
    .arg("restore")
    .arg(&path)
    .args(&restore_target)
    .output()
    .map_err(|e| BenchError::Run(format!("restore: {e}")))?;
    let restore_seconds = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(BenchError::Run(format!(
            "restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }

    let p = |v: &[f64], q: f64| if v.is_empty() { 0.0 } else { percentile(v, q) };
    println!();
    println!(
        "datastore               {}",
        if args.common.datastore.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    );
    println!("objects in the backup   {objects_in_file}");
    println!(
        "backup                  {backup_seconds:.2} s, {:.0} objects/s, {} file ({:.1} MiB/s)",
        objects_in_file as f64 / backup_seconds,
        mib(file_bytes),
        file_bytes as f64 / 1048576.0 / backup_seconds
    );
    println!(
        "restore                 {restore_seconds:.2} s, {:.0} objects/s",
        objects_in_file as f64 / restore_seconds
    );
    println!(
        "server RSS              {} before, {} peak during the backup",
        mib(rss_before),
        mib(peak_rss)
    );
    println!(
        "API writes, no backup   p50 {:.2} ms, p99 {:.2} ms ({} writes)",
        p(&quiet, 50.0),
        p(&quiet, 99.0),
        quiet.len()
    );
    println!(
        "API writes, in backup   p50 {:.2} ms, p99 {:.2} ms ({} writes)",
        p(&during, 50.0),
        p(&during, 99.0),
        during.len()
    );
    Ok(json!({
        "scenario": "backup",
        "datastore": if args.common.datastore.is_some() { "postgres" } else { "sqlite" },
        "objects": objects_in_file,
        "load_seconds": round3(load_seconds),
        "backup_seconds": round3(backup_seconds),
        "backup_objects_per_second": round3(objects_in_file as f64 / backup_seconds),
        "backup_file_bytes": file_bytes,
        "restore_seconds": round3(restore_seconds),
        "restore_objects_per_second": round3(objects_in_file as f64 / restore_seconds),
        "server_rss_before_bytes": rss_before,
        "server_rss_peak_during_backup_bytes": peak_rss,
        "write_ms_without_backup": {"p50": round3(p(&quiet, 50.0)), "p99": round3(p(&quiet, 99.0)), "count": quiet.len()},
        "write_ms_during_backup": {"p50": round3(p(&during, 50.0)), "p99": round3(p(&during, 99.0)), "count": during.len()},
    }))
}

/// A new database next to the one `base` names.
async fn fresh_database(base: &str) -> Result<String, BenchError> {
    use sqlx::{Connection, Executor};
    let name = format!("drover_bench_restore_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .map_err(|e| BenchError::Setup(format!("PostgreSQL: {e}")))?;
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .map_err(|e| BenchError::Setup(format!("PostgreSQL: {e}")))?;
    let mut url = url::Url::parse(base).map_err(|e| BenchError::Setup(e.to_string()))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}
