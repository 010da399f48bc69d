//! The official Python `kubernetes` client, unchanged, against a simulated
//! cluster (directly, and through Drover's proxy as an admin) and against
//! the management API. The checks live in `fixtures/python_client.py`,
//! which prints one line per check; every line must pass.
//!
//! `./scripts/test` installs the client into a venv and names its Python
//! in `DROVER_TEST_KUBE_PYTHON`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Mgmt, SimProc};
use serde_json::Value;

fn python() -> String {
    std::env::var("DROVER_TEST_KUBE_PYTHON")
        .expect("DROVER_TEST_KUBE_PYTHON (./scripts/test sets it)")
}

/// Run the checks; returns how many client calls they made.
fn run(args: &[&str]) -> u64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python_client.py");
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    let mut failed = Vec::new();
    let mut checks = 0;
    let mut calls = None;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{line}\n{stderr}"));
        if let Some(n) = v["calls"].as_u64() {
            calls = Some(n);
            continue;
        }
        checks += 1;
        if v["ok"] != true {
            failed.push(format!("{}: {}", v["check"], v["detail"]));
        }
    }
    assert!(failed.is_empty(), "{args:?}:\n{}", failed.join("\n\n"));
    assert!(checks > 0, "{args:?}: no checks ran: {stderr}");
    calls.unwrap_or_else(|| panic!("{args:?}: no call count: {stdout}"))
}

#[test]
fn the_python_client_works_against_the_sim_directly_and_through_drover() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let sim = SimProc::start(m.dir.path(), "py", 2);
    let direct = run(&["sim", &sim.kubeconfig.display().to_string(), "2", "direct"]);
    let imp = common::import(&m, &admin, &sim, "py");
    let _agent = common::agent(&m, &imp, &common::ca_checksum(&m));
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(60));
    let through = common::user_kubeconfig(&m, &admin, &imp.cluster, "admin");
    let proxied = run(&["sim", &through.display().to_string(), "2", "proxied"]);
    eprintln!("python client calls: {direct} direct, {proxied} through Drover");
}

#[test]
fn the_python_client_works_against_the_management_api() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let kc = m.kubeconfig("admin", &admin);
    let calls = run(&["mgmt", &kc.display().to_string()]);
    eprintln!("python client calls: {calls} against the management API");
}
