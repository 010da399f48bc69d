//! Importing a cluster end to end, every part in its own process: `drover
//! server`, `drover sim` as the downstream cluster, `drover agent`, and the
//! real kubectl and curl as the users' clients.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    agent, ca_checksum, cluster, condition, create_cluster, import, kubeconfig_yaml, kubectl,
    kubectl_cmd, user_kubeconfig, wait, wait_ready, Mgmt, Proc, SimProc, BIN, MGMT,
};
use serde_json::{json, Value};

#[test]
fn import_proxy_and_status_end_to_end() {
    let mut m = Mgmt::start(&["--audit-level", "1"]);
    let admin = m.admin();
    let sim = SimProc::start(m.dir.path(), "east", 3);
    let imp = import(&m, &admin, &sim, "East <prod>");
    let checksum = ca_checksum(&m);

    // A wrong checksum: the agent refuses, saying why, and exits.
    let mut wrong = agent(&m, &imp, &"0".repeat(64));
    let status = wait(
        "the agent exits on a wrong checksum",
        Duration::from_secs(20),
        || wrong.child.try_wait().unwrap(),
    );
    assert!(!status.success());
    assert!(
        wrong.log().contains("refusing to connect"),
        "{}",
        wrong.log()
    );

    // A wrong registration token: 401, logged with the source address.
    let (code, _) = common::curl(
        &[
            "--cacert",
            &m.ca.display().to_string(),
            "-H",
            "Authorization: Bearer not-a-token",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
        &m.server.url("/v1-public/connect"),
    );
    assert_eq!(code, 401);
    // The server's log reaches the test through a pipe: wait for the line.
    wait(
        "the refusal in the server's log",
        Duration::from_secs(5),
        || {
            let log = m.server.log();
            (log.contains("agent connection refused") && log.contains("source=\"127.0.0.1:"))
                .then_some(())
        },
    );
    // Drover itself may have said "not connected" by now (after its grace
    // period); nothing the refused agent said reached the status.
    let seen = cluster(&m, &admin, &imp.cluster);
    assert!(
        common::condition(&seen, "Connected") != "True"
            && seen["status"]["version"].is_null()
            && seen["status"]["nodeCount"].is_null(),
        "a refused agent touches no cluster state: {seen}"
    );

    // The real agent: Ready with the sim's version and node count within 5 s.
    let started = Instant::now();
    let mut agent1 = agent(&m, &imp, &checksum);
    let c = wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(5));
    eprintln!("Ready {:?} after the agent started", started.elapsed());
    assert_eq!(c["status"]["version"], "v1.31.4");
    assert_eq!(c["status"]["nodeCount"], 3);
    assert_eq!(condition(&c, "Connected"), "True");
    assert_eq!(c["status"]["capacity"]["cpu"], "12");
    assert!(c["status"]["lastHeartbeat"].is_string());

    // A node added in the cluster shows within 5 s.
    let cache = m.dir.path().join("kube-cache");
    let node = m.dir.path().join("node.json");
    std::fs::write(
        &node,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "east-node-extra"},
               "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}}})
        .to_string(),
    )
    .unwrap();
    let (code, _, err) = sim.kubectl(&cache, &["create", "-f", &node.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    wait("nodeCount 4", Duration::from_secs(5), || {
        (cluster(&m, &admin, &imp.cluster)["status"]["nodeCount"] == 4).then_some(())
    });

    // The kubeconfig: kubectl reaches the sim through Drover.
    let kc = user_kubeconfig(&m, &admin, &imp.cluster, "admin-east");
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(
        text.contains(&format!("/k8s/clusters/{}", imp.cluster)),
        "{text}"
    );
    assert!(text.contains("current-context: East <prod>"), "{text}");
    assert!(text.contains("certificate-authority-data:"), "{text}");
    let (code, out, err) = kubectl(&m, &kc, &["get", "nodes"]);
    assert_eq!(code, 0, "{err}");
    for n in [
        "east-node-0",
        "east-node-1",
        "east-node-2",
        "east-node-extra",
    ] {
        assert!(out.contains(n), "{out}");
    }
    // Admins are cluster-admin downstream through a projected binding.
    let (code, out, err) = sim.kubectl(
        &cache,
        &[
            "get",
            "clusterrolebindings",
            "-l",
            "drover.io/managed=true",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let crbs: Value = serde_json::from_str(&out).unwrap();
    assert!(
        crbs["items"].as_array().unwrap().iter().any(|b| b["roleRef"]["name"] == "cluster-admin"
            && b["subjects"][0]["name"] == "admin"),
        "{out}"
    );

    // A watch streams a namespace created afterwards.
    let mut watch = kubectl_cmd(&kc, &cache, &["get", "ns", "-w", "--request-timeout=20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(watch_out)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    wait("the watch lists default", Duration::from_secs(10), || {
        rx.try_iter()
            .any(|l| l.starts_with("default"))
            .then_some(())
    });
    let (code, _, err) = kubectl(&m, &kc, &["create", "namespace", "afterwards"]);
    assert_eq!(code, 0, "{err}");
    wait(
        "the watch streams the new namespace",
        Duration::from_secs(5),
        || {
            rx.try_iter()
                .any(|l| l.starts_with("afterwards"))
                .then_some(())
        },
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // logs -f streams; exec prints.
    let (code, _, err) = kubectl(&m, &kc, &["create", "deployment", "web", "--image=nginx"]);
    assert_eq!(code, 0, "{err}");
    let pod = wait("a web pod runs", Duration::from_secs(15), || {
        let (_, out, _) = kubectl(
            &m,
            &kc,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[?(@.status.phase==\"Running\")].metadata.name}",
            ],
        );
        out.split_whitespace().next().map(str::to_owned)
    });
    let mut logs = kubectl_cmd(&kc, &cache, &["logs", "-f", &pod, "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut logs_out = std::io::BufReader::new(logs.stdout.take().unwrap());
    let mut first = String::new();
    let mut second = String::new();
    use std::io::BufRead;
    logs_out.read_line(&mut first).unwrap();
    logs_out.read_line(&mut second).unwrap();
    assert!(
        !first.is_empty() && !second.is_empty() && first != second,
        "{first}{second}"
    );
    let _ = logs.kill();
    let _ = logs.wait();
    let (code, out, err) = kubectl(&m, &kc, &["exec", &pod, "--", "echo", "hi"]);
    assert_eq!((code, out.trim()), (0, "hi"), "{err}");

    // A user without bindings: 403, whether or not the cluster exists.
    let bob = m.user(&admin, "bob");
    let (code, body) = m.http(
        "GET",
        &format!("/k8s/clusters/{}/api/v1/nodes", imp.cluster),
        Some(&bob),
        None,
        &[],
    );
    assert_eq!(code, 403, "{body}");
    let (code2, body2) = m.http(
        "GET",
        "/k8s/clusters/c-nosuch/api/v1/nodes",
        Some(&bob),
        None,
        &[],
    );
    assert_eq!(code2, 403);
    assert_eq!(
        body["message"].as_str().unwrap().replace(&imp.cluster, "X"),
        body2["message"].as_str().unwrap().replace("c-nosuch", "X"),
        "the same refusal either way"
    );
    // bob as a cluster member reaches the cluster, as bob: a client-sent
    // Impersonate-User is dropped.
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{}/clusterroletemplatebindings", imp.cluster),
        Some(&admin),
        Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "ClusterRoleTemplateBinding",
            "metadata": {"name": "bob-member"},
            "spec": {"userName": "bob", "roleTemplateName": "cluster-member", "clusterName": imp.cluster}})),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let bob_kc = wait("bob may get a kubeconfig", Duration::from_secs(5), || {
        let (code, yaml) = kubeconfig_yaml(&m, &bob, &imp.cluster);
        (code == 200).then(|| {
            let p = m.dir.path().join("bob.kubeconfig");
            std::fs::write(&p, yaml).unwrap();
            p
        })
    });
    let (code, out, err) = kubectl(
        &m,
        &bob_kc,
        &["auth", "whoami", "--as", "admin", "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let who: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "bob", "{out}");
    let (code, body) = m.http(
        "GET",
        &format!("/k8s/clusters/{}/api/v1/secrets", imp.cluster),
        Some(&bob),
        None,
        &[
            "Impersonate-User: admin",
            "Impersonate-Group: system:masters",
        ],
    );
    assert_eq!(code, 403, "bob's own rights apply downstream: {body}");

    // Paths cannot climb out of the cluster, encoded or not.
    for path in [
        format!("/k8s/clusters/{}/../../ping", imp.cluster),
        format!(
            "/k8s/clusters/{}/api/%2e%2e/%2E%2E/%2e%2e/ping",
            imp.cluster
        ),
        format!("/k8s/clusters/{}/api%2f..%2f..%2fping", imp.cluster),
    ] {
        let (code, out) = common::curl(
            &[
                "--cacert",
                &m.ca.display().to_string(),
                "--path-as-is",
                "-H",
                &format!("Authorization: Bearer {admin}"),
            ],
            &m.server.url(&path),
        );
        assert_eq!(code, 400, "{path}: {out}");
    }

    // A token scoped to another cluster fails here; a disconnected
    // cluster answers 503.
    let other = create_cluster(&m, &admin, "other");
    let other_kc = user_kubeconfig(&m, &admin, &other, "admin-other");
    let other_token = std::fs::read_to_string(&other_kc)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_owned))
        .unwrap();
    let (code, _) = m.http(
        "GET",
        &format!("/k8s/clusters/{}/api/v1/nodes", imp.cluster),
        Some(&other_token),
        None,
        &[],
    );
    assert_eq!(code, 401);
    let (code, body) = m.http(
        "GET",
        &format!("/k8s/clusters/{other}/version"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not connected"),
        "{body}"
    );

    // Killing the agent: Connected=False within 45 s; a new agent: Ready.
    agent1.kill();
    wait("Connected=False", Duration::from_secs(45), || {
        (condition(&cluster(&m, &admin, &imp.cluster), "Connected") == "False").then_some(())
    });
    let agent2 = agent(&m, &imp, &checksum);
    wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(10));

    // Restarting the server: the same agent process comes back by itself.
    let old_log = m.restart();
    assert!(old_log.contains("agent connected"), "{old_log}");
    let admin = m.admin();
    wait(
        "the agent reconnects to the restarted server",
        Duration::from_secs(40),
        || m.server.log().contains("agent connected").then_some(()),
    );
    let (code, out, err) = kubectl(&m, &kc, &["get", "nodes", "-o", "name"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("node/east-node-0"), "{out}");
    assert!(agent2.log().contains("reconnecting"), "{}", agent2.log());

    // The audit log has each proxied request with user, cluster, verb, path.
    let audit = std::fs::read_to_string(m.dir.path().join("data/audit.log")).unwrap();
    let proxied: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["cluster"] == imp.cluster.as_str())
        .collect();
    assert!(
        proxied.iter().any(|e| e["verb"] == "list"
            && e["user"]["username"] == "admin"
            && e["requestURI"].as_str().unwrap().ends_with("/api/v1/nodes")),
        "{proxied:?}"
    );
    assert!(
        !audit.contains(&imp.token),
        "the registration token never reaches the audit log"
    );

    // Removing the cluster: the agent removes Drover's objects downstream,
    // the registration token stops working, the Cluster goes.
    let (code, body) = m.http(
        "DELETE",
        &format!("{MGMT}/clusters/{}", imp.cluster),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{body}");
    wait("the cluster is gone", Duration::from_secs(30), || {
        let (code, _) = m.http(
            "GET",
            &format!("{MGMT}/clusters/{}", imp.cluster),
            Some(&admin),
            None,
            &[],
        );
        (code == 404).then_some(())
    });
    let (_, out, _) = sim.kubectl(
        &cache,
        &[
            "get",
            "clusterrolebindings",
            "-l",
            "drover.io/managed=true",
            "-o",
            "name",
        ],
    );
    assert_eq!(out.trim(), "", "projected bindings removed");
    let (_, out, _) = sim.kubectl(
        &cache,
        &[
            "get",
            "namespace",
            "drover-system",
            "-o",
            "jsonpath={.status.phase}",
            "--ignore-not-found",
        ],
    );
    assert!(
        out.is_empty() || out == "Terminating",
        "drover-system removed: {out}"
    );
    let (code, _) = common::curl(
        &["--cacert", &m.ca.display().to_string()],
        &imp.manifest_url,
    );
    assert_eq!(code, 404, "the registration token is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_agent_replaces_the_older_and_agents_outlive_network_cuts() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let sim = SimProc::start(m.dir.path(), "west", 1);
    let imp = import(&m, &admin, &sim, "west");
    let checksum = ca_checksum(&m);
    // The first agent reaches the server through a link the test can cut.
    let link = common::Proxy::start(format!("127.0.0.1:{}", m.server.port)).await;
    let mut cmd = Command::new(BIN);
    cmd.args([
        "agent",
        "--server",
        &format!("https://127.0.0.1:{}", link.port),
    ])
    .args(["--token", &imp.token, "--ca-checksum", &checksum])
    .arg("--kubeconfig")
    .arg(&imp.agent_kubeconfig);
    let first = Proc::spawn(cmd);
    tokio::task::block_in_place(|| wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(10)));

    // A second agent replaces the first; the cluster stays connected.
    let mut second = agent(&m, &imp, &checksum);
    tokio::task::block_in_place(|| {
        wait(
            "the second agent takes over",
            Duration::from_secs(10),
            || {
                m.server
                    .log()
                    .contains("replaces the previous one")
                    .then_some(())
            },
        );
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            condition(&cluster(&m, &admin, &imp.cluster), "Connected"),
            "True"
        );
        assert!(
            !m.server.log().contains("agent disconnected"),
            "{}",
            m.server.log()
        );
    });
    second.kill();

    // The first agent comes back by itself; then the network is cut.
    tokio::task::block_in_place(|| {
        wait(
            "the first agent reconnects",
            Duration::from_secs(40),
            || {
                (first
                    .log()
                    .matches("connected to the Drover server")
                    .count()
                    >= 2
                    && condition(&cluster(&m, &admin, &imp.cluster), "Ready") == "True")
                    .then_some(())
            },
        )
    });
    link.cut();
    tokio::task::block_in_place(|| {
        wait(
            "Connected=False after the cut",
            Duration::from_secs(45),
            || {
                (condition(&cluster(&m, &admin, &imp.cluster), "Connected") == "False")
                    .then_some(())
            },
        )
    });
    link.restore();
    tokio::task::block_in_place(|| wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(45)));
    assert!(first.log().contains("reconnecting") || first.log().contains("cannot connect"));
}
