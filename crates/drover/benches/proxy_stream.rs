//! Memory while streaming a 200 MiB pod log through Drover's proxy.
//!
//! Every part runs in its own process, as in production: `drover server`,
//! `drover sim` (the cluster), `drover agent`. A pod logs as fast as it is
//! read (sim annotations); `curl` follows 200 MiB of its log through
//! `/k8s/clusters/{id}/…` and then directly from the sim, while the server's
//! and the agent's resident memory are sampled every 50 ms. The figure that
//! matters: how far RSS grows over its value before the stream.
//!
//! Run: `cargo bench -p drover --bench proxy_stream`

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Mgmt, Proc, SimProc};
use serde_json::json;

const BYTES: u64 = 200 * 1024 * 1024;

fn main() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let sim = SimProc::start(m.dir.path(), "bench", 1);
    let cache = m.dir.path().join("kube-cache");

    // Import the cluster through the real path.
    let imp = common::import(&m, &admin, &sim, "bench");
    let cluster = imp.cluster.clone();
    let agent = common::agent(&m, &imp, &common::ca_checksum(&m));
    agent.wait_for("connected to the Drover server", Duration::from_secs(20));

    // A pod that logs 1 KiB lines as fast as they are read.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "chatty", "namespace": "default",
            "annotations": {"sim.drover.io/log-interval-ms": "0", "sim.drover.io/log-line-bytes": "1024"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    let pod_file = m.dir.path().join("pod.json");
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    let (code, _, err) = sim.kubectl(&cache, &["create", "-f", &pod_file.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, phase, _) = sim.kubectl(
            &cache,
            &["get", "pod", "chatty", "-o", "jsonpath={.status.phase}"],
        );
        if phase == "Running" {
            break;
        }
        assert!(Instant::now() < deadline, "the pod did not run");
        std::thread::sleep(Duration::from_millis(200));
    }

    let path = format!("/api/v1/namespaces/default/pods/chatty/log?follow=true&limitBytes={BYTES}");
    let via_proxy = m.server.url(&format!("/k8s/clusters/{cluster}{path}"));
    let sim_cfg = std::fs::read_to_string(&sim.kubeconfig).unwrap();
    let sim_server = sim_cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned();
    let sim_token = sim_cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_owned();

    println!(
        "Streaming {} MiB of a pod log with curl (memory sampled every 50 ms)\n",
        BYTES >> 20
    );
    println!(
        "{:<22} {:>9} {:>10} {:>14} {:>14} {:>14} {:>14}",
        "path", "seconds", "MiB/s", "server RSS", "server peak", "agent RSS", "agent peak"
    );
    let direct = stream(&format!("{sim_server}{path}"), &sim_token, None, &m, &agent);
    row("direct to the sim", &direct);
    let proxied = stream(
        &via_proxy,
        &admin,
        Some(&m.ca.display().to_string()),
        &m,
        &agent,
    );
    row("through Drover", &proxied);
    println!(
        "\nstream_rss_growth_bytes: server {} agent {}",
        proxied.server_peak.saturating_sub(proxied.server_before),
        proxied.agent_peak.saturating_sub(proxied.agent_before)
    );
}

struct Run {
    seconds: f64,
    bytes: u64,
    server_before: u64,
    server_peak: u64,
    agent_before: u64,
    agent_peak: u64,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn row(name: &str, r: &Run) {
    println!(
        "{:<22} {:>9.2} {:>10.1} {:>14} {:>14} {:>14} {:>14}",
        name,
        r.seconds,
        r.bytes as f64 / 1048576.0 / r.seconds,
        mib(r.server_before),
        mib(r.server_peak),
        mib(r.agent_before),
        mib(r.agent_peak)
    );
}

fn stream(url: &str, token: &str, cacert: Option<&str>, m: &Mgmt, agent: &Proc) -> Run {
    let server_rss = || drover_bench::env::rss(m.server.child.id());
    let server_before = server_rss();
    let agent_before = agent.rss();
    let mut args = vec!["-sS", "-o", "/dev/null", "-w", "%{size_download}"]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    match cacert {
        Some(ca) => args.extend(["--cacert".into(), ca.to_owned()]),
        None => args.push("--insecure".into()),
    }
    args.extend([
        "-H".into(),
        format!("Authorization: Bearer {token}"),
        url.to_owned(),
    ]);
    let (mut server_peak, mut agent_peak) = (server_before, agent_before);
    let start = Instant::now();
    let curl = std::thread::spawn(move || Command::new("curl").args(&args).output().unwrap());
    while !curl.is_finished() {
        server_peak = server_peak.max(server_rss());
        agent_peak = agent_peak.max(agent.rss());
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = start.elapsed().as_secs_f64();
    let out = curl.join().unwrap();
    let bytes: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        bytes >= BYTES,
        "curl read {bytes} bytes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        seconds,
        bytes,
        server_before,
        server_peak,
        agent_before,
        agent_peak,
    }
}
