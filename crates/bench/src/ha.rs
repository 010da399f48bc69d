//! `drover bench ha`: three replicas on one PostgreSQL, a simulated cluster
//! whose agent reaches them through a small TCP balancer (round robin, the
//! next replica when one refuses), as haproxy would in production.
//!
//! Figures:
//! - the peer hop: the same proxied GET sent to the replica holding the
//!   agent's link and to one that forwards it there (p50, p99, and the
//!   difference);
//! - failover, over several rounds of kill -9 of the replica holding the
//!   link: how long until a proxied request through a surviving replica
//!   succeeds again, and until every lease the killed replica held has a
//!   new holder.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::env::{self, percentile, Server, ServerOptions};
use crate::{round3, BenchError, Common};

/// `drover bench ha` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct HaArgs {
    /// Proxied requests measured on each path (local link, peer hop).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Rounds of kill -9 of the replica holding the link.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

const REPLICAS: usize = 3;

/// A TCP balancer on 127.0.0.1: each connection goes to the next backend
/// in turn, or the one after when it refuses (the HA test runs the real
/// haproxy; this keeps `drover bench` free of it).
struct Balancer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(backends: Vec<u16>) -> Result<Self, BenchError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| BenchError::Setup(format!("balancer: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| BenchError::Setup(format!("balancer: {e}")))?
            .port();
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (backends, next) = (backends.clone(), next.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let port = backends[(first + i) % backends.len()];
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn replica(datastore: &str, port: u16, server_url: &str) -> Result<Server, BenchError> {
    Server::start_with(ServerOptions {
        datastore: Some(datastore.to_owned()),
        listen: Some(format!("127.0.0.1:{port}")),
        extra: vec!["--server-url".into(), server_url.to_owned()],
        ..Default::default()
    })
    .await
}

/// `/v1-admin/replicas` from `server`.
async fn view(server: &Server) -> Result<Value, BenchError> {
    server
        .call(reqwest::Method::GET, "/v1-admin/replicas", None)
        .await
}

/// Each replica's id (`None` for one not running).
async fn ids(servers: &[Option<Server>]) -> Vec<Option<String>> {
    let mut ids = Vec::new();
    for s in servers {
        let id = match s {
            Some(s) => view(s)
                .await
                .ok()
                .and_then(|v| v["self"].as_str().map(str::to_owned)),
            None => None,
        };
        ids.push(id);
    }
    ids
}

/// One proxied GET through `server`: its latency in ms.
async fn timed_get(server: &Server, path: &str) -> Result<f64, BenchError> {
    let t = Instant::now();
    let r = server.send(reqwest::Method::GET, path, None).await?;
    let ok = r.status().is_success();
    let _ = r.bytes().await;
    if !ok {
        return Err(BenchError::Run(format!("{path}: not answered")));
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// `n` proxied GETs through each of `a` and `b`, taken in turn so that
/// both see the same moments of the machine: their latencies in ms,
/// sorted.
async fn latencies(
    a: &Server,
    b: &Server,
    cluster: &str,
    n: usize,
) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
    let path = format!("/k8s/clusters/{cluster}/api/v1/namespaces/default");
    let (mut la, mut lb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        la.push(timed_get(a, &path).await?);
        lb.push(timed_get(b, &path).await?);
    }
    la.sort_by(f64::total_cmp);
    lb.sort_by(f64::total_cmp);
    Ok((la, lb))
}

/// Run the scenario.
pub async fn run(args: HaArgs) -> Result<Value, BenchError> {
    let Some(datastore) = args
        .common
        .datastore
        .clone()
        .filter(|d| d.starts_with("postgres"))
    else {
        return Err(BenchError::Setup(
            "drover bench ha needs --datastore postgres://… (replicas share it)".into(),
        ));
    };
    let ports: Vec<u16> = (0..REPLICAS).map(|_| env::free_port()).collect();
    let balancer = Balancer::start(ports.clone()).await?;
    let url = format!("https://127.0.0.1:{}", balancer.port);
    let mut servers: Vec<Option<Server>> = Vec::new();
    for port in &ports {
        servers.push(Some(replica(&datastore, *port, &url).await?));
    }
    let work = env::work_dir("drover-bench-ha-")?;
    let sims_http = env::client(None, true)?;
    let first = servers[0].as_ref().expect("started");
    let imp = env::import(first, &sims_http, work.path(), "ha", 3, 10).await?;
    let mut agent_args = env::agent_args(first, &imp);
    agent_args.server = url.parse().expect("a URL");
    let _agent = env::agent_process(&agent_args)?;
    let active = env::wait_active(
        first,
        std::slice::from_ref(&imp.cluster),
        Duration::from_secs(60),
    )
    .await?;
    if active.iter().any(|(_, s)| *s != "Active") {
        return Err(BenchError::Run(format!(
            "the cluster did not become Active: {active:?}"
        )));
    }

    // The peer hop.
    let holder_of = |v: &Value| {
        v["links"][&imp.cluster]["replica"]
            .as_str()
            .map(str::to_owned)
    };
    let holder = holder_of(&view(first).await?)
        .ok_or_else(|| BenchError::Run("no replica holds the link".into()))?;
    let replica_ids = ids(&servers).await;
    let h = replica_ids
        .iter()
        .position(|id| id.as_deref() == Some(holder.as_str()))
        .ok_or_else(|| BenchError::Run("the link's holder is not one of the replicas".into()))?;
    let other = (h + 1) % REPLICAS;
    // Warm both paths (connections, the peer pool) first.
    let (h_srv, o_srv) = (
        servers[h].as_ref().expect("running"),
        servers[other].as_ref().expect("running"),
    );
    latencies(h_srv, o_srv, &imp.cluster, 50).await?;
    let (local, peer) = latencies(h_srv, o_srv, &imp.cluster, args.requests).await?;
    let (l50, l99, p50, p99) = (
        percentile(&local, 50.0),
        percentile(&local, 99.0),
        percentile(&peer, 50.0),
        percentile(&peer, 99.0),
    );
    println!(
        "peer hop ({} proxied GETs on each path, in turn)",
        args.requests
    );
    println!("  {:<28} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    println!(
        "  {:<28} {:>9.2} {:>9.2}",
        "replica holding the link", l50, l99
    );
    println!(
        "  {:<28} {:>9.2} {:>9.2}",
        "another replica (peer hop)", p50, p99
    );
    println!(
        "  {:<28} {:>9.2} {:>9.2}",
        "added by the hop",
        p50 - l50,
        p99 - l99
    );

    // Failover.
    let mut requests_back = Vec::new();
    let mut leases_moved = Vec::new();
    for round in 0..args.kills {
        let current = ids(&servers).await;
        let Some(any) = servers.iter().flatten().next() else {
            break;
        };
        let v = view(any).await?;
        let Some(holder) = holder_of(&v) else {
            return Err(BenchError::Run("no replica holds the link".into()));
        };
        let Some(h) = current
            .iter()
            .position(|id| id.as_deref() == Some(holder.as_str()))
        else {
            return Err(BenchError::Run(
                "the link's holder is not one of the replicas".into(),
            ));
        };
        let held: Vec<String> = v["leases"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, l)| l["holder"] == holder.as_str())
            .map(|(name, _)| name.clone())
            .collect();
        let survivor = (h + 1) % REPLICAS;
        let killed = Instant::now();
        if let Some(mut s) = servers[h].take() {
            s.kill();
        }
        let survivor_ref = servers[survivor].as_ref().expect("running");
        let path = format!("/k8s/clusters/{}/api/v1/namespaces/default", imp.cluster);
        let deadline = killed + Duration::from_secs(60);
        loop {
            let ok = tokio::time::timeout(
                Duration::from_secs(2),
                survivor_ref.send(reqwest::Method::GET, &path, None),
            )
            .await
            .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success()));
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Run(
                    "proxied requests did not come back within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let back = killed.elapsed().as_secs_f64();
        loop {
            let v = view(survivor_ref).await?;
            let live: Vec<&str> = v["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["live"] == true)
                .filter_map(|r| r["id"].as_str())
                .collect();
            let moved = held.iter().all(|name| {
                v["leases"][name]["holder"]
                    .as_str()
                    .is_some_and(|h| h != holder && live.contains(&h))
            });
            if moved {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Run("leases did not move within 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let moved = killed.elapsed().as_secs_f64();
        println!(
            "kill -9 #{round} of the link's holder: proxied requests back after {back:.2} s, {} leases moved after {moved:.2} s",
            held.len()
        );
        requests_back.push(back);
        if !held.is_empty() {
            leases_moved.push(moved);
        }
        servers[h] = Some(replica(&datastore, ports[h], &url).await?);
    }
    requests_back.sort_by(f64::total_cmp);
    leases_moved.sort_by(f64::total_cmp);
    let max = |v: &Vec<f64>| v.last().copied().unwrap_or(0.0);
    println!("failover over {} rounds", requests_back.len());
    println!(
        "  proxied requests back: p50 {:.2} s, max {:.2} s",
        percentile(&requests_back, 50.0),
        max(&requests_back)
    );
    println!(
        "  leases moved:          p50 {:.2} s, max {:.2} s",
        percentile(&leases_moved, 50.0),
        max(&leases_moved)
    );
    Ok(json!({
        "scenario": "ha",
        "replicas": REPLICAS,
        "requests": args.requests,
        "peerHop": {
            "localP50Ms": round3(l50), "localP99Ms": round3(l99),
            "peerP50Ms": round3(p50), "peerP99Ms": round3(p99),
            "addedP50Ms": round3(p50 - l50), "addedP99Ms": round3(p99 - l99),
        },
        "failover": {
            "rounds": requests_back.len(),
            "requestsBackP50S": round3(percentile(&requests_back, 50.0)),
            "requestsBackMaxS": round3(max(&requests_back)),
            "leasesMovedP50S": round3(percentile(&leases_moved, 50.0)),
            "leasesMovedMaxS": round3(max(&leases_moved)),
        },
    }))
}
