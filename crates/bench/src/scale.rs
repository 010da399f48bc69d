//! `drover bench scale`: import many simulated clusters, each through the
//! real path (cluster created, manifest fetched and applied to the sim,
//! the agent's token issued, a real agent dialing a real TLS WebSocket), and
//! measure the server in its own process. The sims and all agents but one
//! run in this process; one agent runs in its own, to measure an agent's
//! memory. With `--alert-rules N`, N alert rules per cluster are created
//! once all are Ready, and the server's CPU and memory are measured again
//! over a second idle window: the cost of evaluating them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::env::{self, percentile, Server};
use crate::{mib, round3, BenchError, Common};

/// `drover bench scale` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Simulated clusters to import.
    #[arg(long, default_value_t = 1000)]
    pub clusters: usize,
    /// Nodes in each.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Seconds over which idle CPU is measured once all are Ready.
    #[arg(long, default_value_t = 60)]
    pub idle_seconds: u64,
    /// Seconds between the simulated kubelets' node status updates (a
    /// kubelet reports its status every 5 minutes when nothing changes).
    #[arg(long, default_value_t = 300)]
    pub sim_heartbeat: u64,
    /// Imports under way at once.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Alert rules to create in each cluster after the first idle window
    /// (a mix of every condition that reads the cluster; 0: none).
    #[arg(long, default_value_t = 0)]
    pub alert_rules: usize,
    /// Give up waiting for Ready after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

/// Record when each cluster is first seen Ready, from a watch.
fn follow_ready(
    server: &Server,
    ready: Arc<Mutex<HashMap<String, Instant>>>,
) -> tokio::task::JoinHandle<()> {
    let http = server.http.clone();
    let url = format!(
        "{}/apis/management.drover.io/v1/clusters?watch=true",
        server.url
    );
    let token = server.token.clone();
    tokio::spawn(async move {
        loop {
            let Ok(resp) = http.get(&url).bearer_auth(&token).send().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut events = std::pin::pin!(env::watch_events(resp));
            while let Some(event) = events.next().await {
                let obj = &event["object"];
                if drover_core::api::cluster_state(obj) == "Active" {
                    let name = obj["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    ready
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        }
    })
}

/// Run the scenario.
pub async fn run(args: ScaleArgs) -> Result<Value, BenchError> {
    println!(
        "scale: {} clusters x {} nodes, datastore {}",
        args.clusters,
        args.nodes,
        args.common
            .datastore
            .as_deref()
            .map(redact)
            .unwrap_or_else(|| "embedded SQLite".into())
    );
    // Each cluster costs this process about 14 open files (a sim's listener
    // and database, its agent's connections).
    let needed = args.clusters as u64 * 14 + 1000;
    if let Some(limit) = env::open_files_limit().filter(|l| *l < needed) {
        return Err(BenchError::Setup(format!(
            "{} clusters need about {needed} open files, but the limit is {limit}: run `ulimit -n {}` first",
            args.clusters,
            needed.next_power_of_two()
        )));
    }
    let server = Server::start(args.common.datastore.as_deref()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_empty = env::rss(server.pid());
    let dir = env::work_dir("drover-bench-clusters-")?;
    let sims_http = env::client_with_pool(None, true, 1)?;
    let ready: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watcher = follow_ready(&server, ready.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let started = Instant::now();
    let mut sims = Vec::new();
    let mut agent_started: HashMap<String, Instant> = HashMap::new();
    let mut agent_child = None;
    let mut imports = futures::stream::iter(0..args.clusters)
        .map(|i| {
            let (server, sims_http, dir) = (&server, &sims_http, dir.path());
            async move {
                env::import(
                    server,
                    sims_http,
                    dir,
                    &format!("sim-{i:05}"),
                    args.nodes,
                    args.sim_heartbeat,
                )
                .await
                .map(|imp| (i, imp))
            }
        })
        .buffer_unordered(args.parallel.max(1));
    let mut done = 0;
    while let Some(result) = imports.next().await {
        let (i, imp) = result?;
        let agent = env::agent_args(&server, &imp);
        if i == 0 {
            agent_child = Some(env::agent_process(&agent)?);
        } else {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let _ = drover_agent::run(agent, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            });
        }
        agent_started.insert(imp.cluster.clone(), Instant::now());
        sims.push(imp.sim);
        done += 1;
        if done % 100 == 0 {
            println!(
                "  {done} imported after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(imports);
    let imported_seconds = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let n = ready.lock().unwrap_or_else(|e| e.into_inner()).len();
        if n >= args.clusters || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_map = ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let last = ready_map
        .values()
        .max()
        .copied()
        .unwrap_or_else(Instant::now);
    let all_ready_seconds = last.duration_since(started).as_secs_f64();
    let mut per_cluster: Vec<f64> = ready_map
        .iter()
        .filter_map(|(c, t)| {
            Some(
                t.saturating_duration_since(*agent_started.get(c)?)
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    per_cluster.sort_by(f64::total_cmp);
    println!(
        "  {} of {} Ready after {all_ready_seconds:.1} s; settling",
        ready_map.len(),
        args.clusters
    );

    tokio::time::sleep(Duration::from_secs(10)).await;
    let server_rss = env::rss(server.pid());
    let cpu0 = env::cpu_seconds(server.pid());
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let cpu1 = env::cpu_seconds(server.pid());
    let idle_percent = (cpu1 - cpu0) / args.idle_seconds.max(1) as f64 * 100.0;
    let server_rss_after_idle = env::rss(server.pid());
    let agent_rss = agent_child
        .as_ref()
        .map(|c| env::rss(c.0.id()))
        .unwrap_or(0);
    let helper_rss = env::rss(std::process::id());
    let datastore_bytes = server.datastore_bytes().await;

    let alerts = if args.alert_rules > 0 {
        Some(alert_cost(&server, &ready_map, &args).await?)
    } else {
        None
    };
    let per_cluster_rss = server_rss.saturating_sub(rss_empty) / args.clusters.max(1) as u64;
    println!();
    let rows = [
        (
            "clusters Ready",
            format!("{} of {}", ready_map.len(), args.clusters),
        ),
        ("all imported after", format!("{imported_seconds:.1} s")),
        ("all Ready after", format!("{all_ready_seconds:.1} s")),
        (
            "per cluster, agent start to Ready p50",
            format!("{:.0} ms", percentile(&per_cluster, 50.0)),
        ),
        (
            "per cluster, agent start to Ready p99",
            format!("{:.0} ms", percentile(&per_cluster, 99.0)),
        ),
        ("server RSS, empty", mib(rss_empty)),
        ("server RSS, settled", mib(server_rss)),
        (
            "server RSS after the idle window",
            mib(server_rss_after_idle),
        ),
        (
            "server RSS per cluster",
            format!("{:.1} KiB", per_cluster_rss as f64 / 1024.0),
        ),
        (
            "server CPU while idle",
            format!(
                "{idle_percent:.1} % of one core over {} s",
                args.idle_seconds
            ),
        ),
        ("agent RSS (own process)", mib(agent_rss)),
        ("helper RSS (sims + agents)", mib(helper_rss)),
        ("datastore size", mib(datastore_bytes)),
    ];
    for (k, v) in rows {
        println!("{k:<42} {v}");
    }
    if let Some(a) = &alerts {
        for (k, v) in [
            (
                "alert rules",
                format!("{} ({} per cluster)", a.rules, args.alert_rules),
            ),
            (
                "alert rules created in",
                format!("{:.1} s", a.create_seconds),
            ),
            ("server RSS with alert rules", mib(a.rss)),
            (
                "server CPU with alert rules",
                format!(
                    "{:.1} % of one core over {} s",
                    a.cpu_percent, args.idle_seconds
                ),
            ),
        ] {
            println!("{k:<42} {v}");
        }
    }
    let _ = stop_tx.send(true);
    watcher.abort();
    drop(agent_child);
    // Dropping a sim stops it; waiting for each one's grace period would
    // only measure shutdown.
    drop(sims);
    Ok(json!({
        "scenario": "scale",
        "datastore": if server.datastore.is_some() { "postgres" } else { "sqlite" },
        "clusters": args.clusters,
        "nodes_per_cluster": args.nodes,
        "clusters_ready": ready_map.len(),
        "imported_seconds": round3(imported_seconds),
        "all_ready_seconds": round3(all_ready_seconds),
        "ready_p50_ms": round3(percentile(&per_cluster, 50.0)),
        "ready_p99_ms": round3(percentile(&per_cluster, 99.0)),
        "server_rss_empty_bytes": rss_empty,
        "server_rss_bytes": server_rss,
        "server_rss_per_cluster_bytes": per_cluster_rss,
        "server_cpu_idle_percent": round3(idle_percent),
        "idle_seconds": args.idle_seconds,
        "agent_rss_bytes": agent_rss,
        "helper_rss_bytes": helper_rss,
        "datastore_bytes": datastore_bytes,
        "sim_heartbeat_seconds": args.sim_heartbeat,
        "alert_rules": alerts.as_ref().map(|a| a.rules),
        "alert_rules_create_seconds": alerts.as_ref().map(|a| round3(a.create_seconds)),
        "server_rss_with_alert_rules_bytes": alerts.as_ref().map(|a| a.rss),
        "server_cpu_with_alert_rules_percent": alerts.as_ref().map(|a| round3(a.cpu_percent)),
    }))
}

/// What alert rules cost the server.
struct AlertCost {
    rules: usize,
    create_seconds: f64,
    rss: u64,
    cpu_percent: f64,
}

/// The conditions the bench's rules hold, in turn: every one that reads
/// the cluster (its status, nodes, pods, workloads, events, quotas).
fn bench_condition(i: usize) -> Value {
    match i % 10 {
        0 => json!({"clusterDisconnected": {"forSeconds": 60}}),
        1 => json!({"nodeNotReady": {"forSeconds": 60}}),
        2 => json!({"nodeResourceUsage": {"resource": "cpu", "percent": 90}}),
        3 => json!({"podNotRunning": {"forSeconds": 300}}),
        4 => json!({"podRestarts": {"count": 5, "windowSeconds": 600}}),
        5 => json!({"workloadUnavailable": {"forSeconds": 300}}),
        6 => json!({"quotaUsage": {"percent": 90}}),
        7 => json!({"event": {"reason": "BackOff"}}),
        8 => json!({"certificateExpiry": {"days": 14}}),
        _ => json!({"nodeResourceUsage": {"resource": "memory", "percent": 90}}),
    }
}

/// Create `--alert-rules` rules in every Ready cluster, let them settle,
/// and measure the server over an idle window.
async fn alert_cost(
    server: &Server,
    ready: &HashMap<String, Instant>,
    args: &ScaleArgs,
) -> Result<AlertCost, BenchError> {
    let started = Instant::now();
    let creates = ready
        .keys()
        .flat_map(|cluster| (0..args.alert_rules).map(move |i| (cluster.clone(), i)));
    let mut results = futures::stream::iter(creates)
        .map(|(cluster, i)| async move {
            let rule = json!({
                "apiVersion": "management.drover.io/v1",
                "kind": "AlertRule",
                "metadata": {"name": format!("bench-{i}"), "namespace": cluster},
                "spec": {"condition": bench_condition(i), "severity": "warning"},
            });
            server
                .call(
                    reqwest::Method::POST,
                    &format!("/apis/management.drover.io/v1/namespaces/{cluster}/alertrules"),
                    Some(&rule),
                )
                .await
        })
        .buffer_unordered(args.parallel.max(1));
    let mut rules = 0;
    while let Some(r) = results.next().await {
        r?;
        rules += 1;
    }
    let create_seconds = started.elapsed().as_secs_f64();
    println!("  {rules} alert rules created in {create_seconds:.1} s; settling");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu0 = env::cpu_seconds(server.pid());
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let cpu1 = env::cpu_seconds(server.pid());
    Ok(AlertCost {
        rules,
        create_seconds,
        rss: env::rss(server.pid()),
        cpu_percent: (cpu1 - cpu0) / args.idle_seconds.max(1) as f64 * 100.0,
    })
}

/// A datastore URL without its password.
pub fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((creds, rest)) => match creds.rsplit_once(':') {
            Some((user, _)) if user.contains("://") => format!("{user}:REDACTED@{rest}"),
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
