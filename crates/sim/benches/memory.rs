//! Memory of idle simulated clusters: one with 10 nodes, then 100 in one
//! process. Prints figures; asserts nothing (targets are read, not tested).
//!
//!     cargo bench -p drover-sim --bench memory
//!     SIMS=200 NODES=10 cargo bench -p drover-sim --bench memory

use std::time::Duration;

use drover_sim::{Sim, SimArgs};

/// Resident set size of this process, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn args(i: usize, nodes: usize) -> SimArgs {
    SimArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        name: format!("sim{i}"),
        nodes,
        k8s_version: drover_sim::DEFAULT_K8S_VERSION.into(),
        kubeconfig_out: None,
        data_dir: None,
        heartbeat_seconds: 10,
        node_flap: false,
        audit_log: None,
    }
}

fn main() {
    let sims: usize = std::env::var("SIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let nodes: usize = std::env::var("NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Warm the process (TLS, schemas, allocator) with one throw-away sim.
        Sim::start(&args(999, 1)).await.unwrap().stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let base = rss_bytes();

        let one = Sim::start(&args(0, nodes)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let with_one = rss_bytes();

        let started = std::time::Instant::now();
        let mut all = vec![one];
        for i in 1..sims {
            all.push(Sim::start(&args(i, nodes)).await.unwrap());
        }
        let start_time = started.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let with_all = rss_bytes();

        println!("simulated clusters, idle, {nodes} nodes each");
        println!("  process before           {:8.1} MiB", mib(base));
        println!(
            "  one sim                  {:8.1} MiB",
            mib(with_one.saturating_sub(base))
        );
        println!(
            "  {sims:>3} sims                 {:8.1} MiB  ({:.2} MiB per sim; target <= 3)",
            mib(with_all.saturating_sub(base)),
            mib(with_all.saturating_sub(base)) / sims as f64
        );
        println!("  started {sims} in {:.2} s", start_time.as_secs_f64());
        for s in all {
            s.stop().await;
        }
    });
}
