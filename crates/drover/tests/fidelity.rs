//! Kubernetes fidelity with real kubectl against Drover itself: server-side
//! apply, the rules review and kube's AlreadyExists on the management API;
//! port-forward to a simulated cluster through Drover's proxy, in both
//! forms kubectl speaks.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Mgmt, SimProc};

#[test]
fn server_side_apply_rules_review_and_already_exists_on_the_management_api() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let kc = m.kubeconfig("admin", &admin);
    let dir = m.dir.path();
    let manifest = |display: &str| {
        let path = dir.join("cluster.yaml");
        std::fs::write(
            &path,
            format!("apiVersion: management.drover.io/v1\nkind: Cluster\nmetadata:\n  name: c-gitops\n  labels:\n    team: platform\nspec:\n  displayName: {display}\n"),
        )
        .unwrap();
        path.display().to_string()
    };
    let file = manifest("From Git");
    let (code, out, err) = m.kubectl(&kc, &["apply", "--server-side", "-f", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("cluster.management.drover.io/c-gitops serverside-applied"),
        "{out}"
    );
    let (_, yaml, _) = m.kubectl(
        &kc,
        &[
            "get",
            "cluster",
            "c-gitops",
            "-o",
            "yaml",
            "--show-managed-fields",
        ],
    );
    assert!(
        yaml.contains("manager: kubectl") && yaml.contains("operation: Apply"),
        "{yaml}"
    );
    assert!(yaml.contains("f:displayName: {}"), "{yaml}");
    // Someone edits the display name; the next apply names the conflict.
    let (code, _, err) = m.kubectl(
        &kc,
        &[
            "patch",
            "cluster",
            "c-gitops",
            "--type=merge",
            "-p",
            r#"{"spec":{"displayName":"By hand"}}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let file = manifest("From Git, again");
    let (code, _, err) = m.kubectl(&kc, &["apply", "--server-side", "-f", &file]);
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"conflict with "kubectl-patch""#) && err.contains(".spec.displayName"),
        "{err}"
    );
    let (code, _, err) = m.kubectl(
        &kc,
        &["apply", "--server-side", "--force-conflicts", "-f", &file],
    );
    assert_eq!(code, 0, "{err}");
    let (_, shown, _) = m.kubectl(
        &kc,
        &[
            "get",
            "cluster",
            "c-gitops",
            "-o",
            "jsonpath={.spec.displayName}",
        ],
    );
    assert_eq!(shown, "From Git, again");

    // kube's words for a name that is taken.
    let (code, _, err) = m.kubectl(&kc, &["create", "-f", &file]);
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"clusters.management.drover.io "c-gitops" already exists"#),
        "{err}"
    );

    // kubectl auth can-i --list: an admin may do anything; a new user
    // only what every user may.
    let (code, out, err) = m.kubectl(&kc, &["auth", "can-i", "--list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("*.*") || out.contains("*.management.drover.io"),
        "{out}"
    );
    let user = m.user(&admin, "rita");
    let user_kc = m.kubeconfig("rita", &user);
    let (code, out, err) = m.kubectl(&user_kc, &["auth", "can-i", "--list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("selfsubjectaccessreviews.authorization.k8s.io") && !out.contains("*.*"),
        "{out}"
    );
}

/// `kubectl port-forward` through the proxy; returns what curl read.
fn forward_and_fetch(m: &Mgmt, kc: &std::path::Path, websockets: &str, path: &str) -> String {
    let port = common::free_port();
    let mut cmd = common::kubectl_cmd(
        kc,
        &m.dir.path().join("pf-cache"),
        &["port-forward", "deployment/web", &format!("{port}:80")],
    );
    cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Forwarding from") {
                let _ = tx.send(());
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(30));
    let body = started.ok().map(|()| {
        let out = Command::new("curl")
            .args(["-sS", "-m", "10", &format!("http://127.0.0.1:{port}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    body.unwrap_or_else(|| {
        panic!(
            "port-forward did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn port_forward_reaches_a_pod_through_drover_in_both_forms() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let sim = SimProc::start(m.dir.path(), "pf", 1);
    let imp = common::import(&m, &admin, &sim, "pf");
    let _agent = common::agent(&m, &imp, &common::ca_checksum(&m));
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(60));
    let kc = common::user_kubeconfig(&m, &admin, &imp.cluster, "admin");
    for args in [
        vec![
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--port=80",
        ],
        vec!["rollout", "status", "deployment/web", "--timeout=30s"],
    ] {
        let (code, out, err) = m.kubectl(&kc, &args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    for (form, websockets) in [("websocket", "true"), ("spdy", "false")] {
        let body = forward_and_fetch(&m, &kc, websockets, &format!("/via-drover-{form}"));
        assert!(
            body.contains("\"port\":80") && body.contains(&format!("/via-drover-{form}")),
            "{form}: {body}"
        );
    }
}
