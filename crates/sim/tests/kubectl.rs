//! Real kubectl against a running simulated cluster. Each test asserts on
//! kubectl's own output.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use drover_sim::{Sim, SimArgs};

struct Env {
    /// Kept alive for the test; dropping it stops the cluster.
    _sim: Sim,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(false).await
}

async fn env_with(node_flap: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let args = SimArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        name: "test".into(),
        nodes: 3,
        k8s_version: drover_sim::DEFAULT_K8S_VERSION.into(),
        kubeconfig_out: Some(kubeconfig.clone()),
        data_dir: None,
        heartbeat_seconds: 1,
        node_flap,
        audit_log: Some(dir.path().join("audit.log")),
    };
    let sim = Sim::start(&args).await.unwrap();
    Env {
        _sim: sim,
        kubeconfig,
        dir,
    }
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args);
        c
    }

    /// Run kubectl off the async runtime; (exit code, stdout, stderr).
    async fn kubectl(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = self.cmd(args);
        let out = tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().unwrap())
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.kubectl(args).await;
        assert_eq!(code, 0, "kubectl {args:?} failed: {err}");
        out
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn version_reports_the_simulated_kubernetes() {
    let e = env().await;
    let out = e.ok(&["version", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["serverVersion"]["gitVersion"],
        drover_sim::DEFAULT_K8S_VERSION
    );
    assert_eq!(v["serverVersion"]["minor"], "31");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_resources_lists_the_built_in_kinds() {
    let e = env().await;
    let out = e.ok(&["api-resources", "-o", "name"]).await;
    for r in [
        "namespaces",
        "nodes",
        "pods",
        "services",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "resourcequotas",
        "limitranges",
        "events",
        "deployments.apps",
        "replicasets.apps",
        "statefulsets.apps",
        "daemonsets.apps",
        "roles.rbac.authorization.k8s.io",
        "clusterrolebindings.rbac.authorization.k8s.io",
        "leases.coordination.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
    ] {
        assert!(out.lines().any(|l| l == r), "{r} missing from:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn default_namespaces_and_ready_nodes() {
    let e = env().await;
    let out = e.ok(&["get", "ns", "--no-headers"]).await;
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert!(out.lines().all(|l| l.contains("Active")), "{out}");
    let nodes = e.ok(&["get", "nodes"]).await;
    let rows: Vec<&str> = nodes.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{nodes}");
    assert!(
        rows.iter()
            .all(|r| r.contains(" Ready ") && r.contains("v1.31.4")),
        "{nodes}"
    );
    assert!(rows[0].contains("control-plane"));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_ns_and_watch_sees_it() {
    let e = env().await;
    let mut watch = e
        .cmd(&["get", "ns", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the existing namespaces");
    }
    let created = std::time::Instant::now();
    assert_eq!(
        e.ok(&["create", "ns", "team-a"]).await.trim(),
        "namespace/team-a created"
    );
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the watch sees the new namespace");
    eprintln!(
        "kubectl get ns -w showed the new namespace {:?} after the create started",
        created.elapsed()
    );
    assert!(
        line.starts_with("team-a") && line.contains("Active"),
        "{line}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_creates_arrive_as_protobuf_and_land_as_kubernetes_would_store_them() {
    let e = env().await;
    e.ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=mode=fast",
        "--from-literal=level=3",
    ])
    .await;
    let cm: serde_json::Value =
        serde_json::from_str(&e.ok(&["get", "cm", "app", "-o", "json"]).await).unwrap();
    assert_eq!(
        cm["data"],
        serde_json::json!({"mode": "fast", "level": "3"})
    );

    e.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=hunter2",
    ])
    .await;
    let secret: serde_json::Value =
        serde_json::from_str(&e.ok(&["get", "secret", "db", "-o", "json"]).await).unwrap();
    assert_eq!(
        secret["data"]["password"], "aHVudGVyMg==",
        "bytes arrive base64-encoded"
    );
    assert_eq!(secret["type"], "Opaque");

    e.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
    ])
    .await;
    let d: serde_json::Value =
        serde_json::from_str(&e.ok(&["get", "deployment", "web", "-o", "json"]).await).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (c["name"].as_str(), c["image"].as_str()),
        (Some("nginx"), Some("nginx:1.27"))
    );
    assert_eq!(c["ports"][0]["containerPort"], 80);

    e.ok(&["create", "serviceaccount", "robot"]).await;
    e.ok(&["get", "sa", "robot"]).await;
    e.ok(&[
        "create",
        "clusterrole",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ])
    .await;
    let role: serde_json::Value = serde_json::from_str(
        &e.ok(&["get", "clusterrole", "pod-reader", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["pods"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_deletion_lifecycle() {
    let e = env().await;
    e.ok(&["create", "ns", "doomed"]).await;
    e.ok(&[
        "create",
        "configmap",
        "left",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])
    .await;
    // An object with a finalizer holds the namespace in Terminating.
    let held = e.file("held.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: doomed\n  finalizers: [example.com/hold]\n");
    e.ok(&["apply", "-f", &held]).await;
    let out = e.ok(&["delete", "ns", "doomed", "--wait=false"]).await;
    assert_eq!(out.trim(), r#"namespace "doomed" deleted"#);
    let phase = e
        .ok(&["get", "ns", "doomed", "-o", "jsonpath={.status.phase}"])
        .await;
    assert_eq!(phase, "Terminating", "a deleted namespace terminates first");
    let (code, _, err) = e
        .kubectl(&["create", "configmap", "late", "-n", "doomed"])
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains(
            "unable to create new content in namespace doomed because it is being terminated"
        ),
        "{err}"
    );
    eventually("the plain content goes", || async {
        e.kubectl(&["get", "cm", "left", "-n", "doomed"]).await.0 != 0
    })
    .await;
    eventually("the held object is marked", || async {
        !e.ok(&[
            "get",
            "cm",
            "held",
            "-n",
            "doomed",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .await
        .is_empty()
    })
    .await;
    assert_eq!(
        e.ok(&["get", "ns", "doomed", "-o", "jsonpath={.status.phase}"])
            .await,
        "Terminating",
        "still held"
    );
    e.ok(&[
        "patch",
        "cm",
        "held",
        "-n",
        "doomed",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
    let (code, _, err) = e
        .kubectl(&["wait", "--for=delete", "ns/doomed", "--timeout=30s"])
        .await;
    assert_eq!(code, 0, "released, the namespace goes away: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_renew_leases_and_heartbeats_live() {
    let e = env().await;
    let leases = e
        .ok(&["get", "leases", "-n", "kube-node-lease", "--no-headers"])
        .await;
    assert_eq!(leases.lines().count(), 3, "{leases}");
    let mut watch = e
        .cmd(&[
            "get",
            "lease",
            "test-node-1",
            "-n",
            "kube-node-lease",
            "-w",
            "-o",
            "jsonpath={.spec.renewTime}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("the lease");
    let second = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a renewal, seen live");
    assert!(second > first, "{first} then {second}");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn serviceaccount_tokens_authenticate_until_the_account_goes() {
    let e = env().await;
    e.ok(&["create", "serviceaccount", "robot", "-n", "default"])
        .await;
    let token = e
        .ok(&["create", "token", "robot", "-n", "default"])
        .await
        .trim()
        .to_owned();
    assert!(token.len() >= 32, "{token}");
    let as_robot = |args: &[&str]| {
        let mut full = vec!["--token", token.as_str()];
        full.extend_from_slice(args);
        full.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = as_robot(&["auth", "whoami"]);
    let who = e
        .ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(
        who.contains("system:serviceaccount:default:robot")
            && who.contains("system:serviceaccounts:default"),
        "{who}"
    );
    let args = as_robot(&["get", "pods"]);
    let (code, _, err) = e
        .kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"User "system:serviceaccount:default:robot" cannot list resource "pods""#),
        "{err}"
    );
    e.ok(&["delete", "serviceaccount", "robot", "-n", "default"])
        .await;
    let args = as_robot(&["auth", "whoami"]);
    let (code, _, err) = e
        .kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("Unauthorized") || err.contains("401"),
        "a deleted account's token stops: {err}"
    );
    let (code, _, err) = e
        .kubectl(&["create", "token", "ghost", "-n", "default"])
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"serviceaccounts "ghost" not found"#),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_of_a_changed_deployment_merges_containers_by_name() {
    let e = env().await;
    let deployment = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: nginx\n        image: {image}\n        ports:\n        - containerPort: 80\n        env:\n        - {{name: MODE, value: fast}}\n      - name: sidecar\n        image: busybox:1.36\n"
        )
    };
    let first = e.file("d1.yaml", &deployment("nginx:1.27"));
    assert_eq!(
        e.ok(&["apply", "-f", &first]).await.trim(),
        "deployment.apps/web created"
    );
    e.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    let old_pods: Vec<String> = pods(&e, "app=web").await.into_iter().map(|p| p.0).collect();
    let second = e.file("d2.yaml", &deployment("nginx:1.28"));
    assert_eq!(
        e.ok(&["apply", "-f", &second]).await.trim(),
        "deployment.apps/web configured"
    );
    e.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    eventually("pods replaced by the new image", || async {
        let now = pods(&e, "app=web").await;
        now.len() == 2 && now.iter().all(|p| !old_pods.contains(&p.0))
    })
    .await;
    let d: serde_json::Value =
        serde_json::from_str(&e.ok(&["get", "deploy", "web", "-o", "json"]).await).unwrap();
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(cs.len(), 2, "{cs:?}");
    assert_eq!(
        (cs[0]["name"].as_str(), cs[0]["image"].as_str()),
        (Some("nginx"), Some("nginx:1.28"))
    );
    assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
    assert_eq!(cs[0]["env"][0]["name"], "MODE");
    assert_eq!(cs[1]["image"], "busybox:1.36");
    assert_eq!(d["metadata"]["generation"], 2);

    e.ok(&["patch", "deploy", "web", "--type=strategic", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"LEVEL","value":"3"}]}]}}}}"#]).await;
    let env = e
        .ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[*].name}",
        ])
        .await;
    assert_eq!(env, "MODE LEVEL", "strategic patches merge env by name");
}

/// Names of the pods with a label, and whether each is Running on a node.
async fn pods(e: &Env, selector: &str) -> Vec<(String, String, String)> {
    let out = e.ok(&["get", "pods", "-l", selector, "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName}{\"\\n\"}{end}"]).await;
    out.lines()
        .map(|l| {
            let mut p = l.split(' ');
            (
                p.next().unwrap_or_default().to_owned(),
                p.next().unwrap_or_default().to_owned(),
                p.next().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Wait until `check` holds, up to 20 s.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_commands_over_websocket() {
    let e = env().await;
    e.ok(&["run", "box", "--image=busybox:1.36", "--env=MODE=fast"])
        .await;
    eventually("box running", || async {
        pods(&e, "run=box")
            .await
            .first()
            .is_some_and(|p| p.1 == "Running")
    })
    .await;
    assert_eq!(e.ok(&["exec", "box", "--", "echo", "hi"]).await, "hi\n");
    assert_eq!(e.ok(&["exec", "box", "--", "hostname"]).await.trim(), "box");
    assert!(e
        .ok(&["exec", "box", "--", "env"])
        .await
        .lines()
        .any(|l| l == "MODE=fast"));
    let mut cat = e
        .cmd(&["exec", "-i", "box", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"through the stream\n").unwrap();
    }
    let out = tokio::task::spawn_blocking(move || cat.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through the stream\n");
    // A missing executable: the runtime cannot start it (126); in a shell,
    // the shell cannot find it (127); a missing file is the command's own
    // failure (1).
    let (code, out, err) = e.kubectl(&["exec", "box", "--", "nosuch"]).await;
    assert_eq!(code, 126, "{err}");
    assert!(
        out.contains(r#"exec: "nosuch": executable file not found in $PATH"#)
            && err.contains("command terminated with exit code 126"),
        "{out}{err}"
    );
    let (code, _, err) = e
        .kubectl(&["exec", "box", "--", "sh", "-c", "nosuch"])
        .await;
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("sh: nosuch: not found"), "{err}");
    let (code, _, err) = e.kubectl(&["exec", "box", "--", "cat", "/nope"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cat: can't open '/nope': No such file or directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_the_cluster_ends_open_exec_sessions() {
    let e = env().await;
    e.ok(&["run", "box", "--image=busybox:1.36"]).await;
    eventually("box running", || async {
        pods(&e, "run=box")
            .await
            .first()
            .is_some_and(|p| p.1 == "Running")
    })
    .await;
    let mut cat = e
        .cmd(&["exec", "-i", "box", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The session is open once a line comes back through it.
    let mut stdin = cat.stdin.take().unwrap();
    let stdout = cat.stdout.take().unwrap();
    let echoed = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, Write};
        stdin.write_all(b"ping\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        (stdin, line)
    })
    .await
    .unwrap();
    assert_eq!(echoed.1, "ping\n");
    let Env { _sim: sim, dir, .. } = e;
    sim.stop().await;
    // stdin stays open: only the server can end the session now.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = cat.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = cat.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop((echoed.0, dir));
    assert!(
        status.is_some(),
        "kubectl exec kept running after the cluster stopped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subject_access_and_token_reviews() {
    let e = env().await;
    let sar = e.file(
        "sar.yaml",
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: bob\n  groups: [system:authenticated]\n  resourceAttributes: {verb: list, resource: pods, namespace: default}\n",
    );
    let out: serde_json::Value =
        serde_json::from_str(&e.ok(&["create", "-f", &sar, "-o", "json"]).await).unwrap();
    assert_eq!(out["status"]["allowed"], false);
    let masters = e.file(
        "sar2.yaml",
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: alice\n  groups: [system:masters]\n  resourceAttributes: {verb: delete, resource: nodes}\n",
    );
    let out: serde_json::Value =
        serde_json::from_str(&e.ok(&["create", "-f", &masters, "-o", "json"]).await).unwrap();
    assert_eq!(out["status"]["allowed"], true);

    e.ok(&["create", "serviceaccount", "robot"]).await;
    let token = e.ok(&["create", "token", "robot"]).await.trim().to_owned();
    let review = e.file(
        "tr.yaml",
        &format!(
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n"
        ),
    );
    let out: serde_json::Value =
        serde_json::from_str(&e.ok(&["create", "-f", &review, "-o", "json"]).await).unwrap();
    assert_eq!(out["status"]["authenticated"], true);
    assert_eq!(
        out["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    let bogus = e.file(
        "tr2.yaml",
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: not-a-token\n",
    );
    let out: serde_json::Value =
        serde_json::from_str(&e.ok(&["create", "-f", &bogus, "-o", "json"]).await).unwrap();
    assert_eq!(out["status"]["authenticated"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_edit_changes_the_object() {
    let e = env().await;
    e.ok(&["create", "deployment", "web", "--image=nginx:1.27"])
        .await;
    let mut cmd = e.cmd(&["edit", "deployment", "web"]);
    cmd.env("KUBE_EDITOR", "sed -i s/nginx:1.27/nginx:1.29/");
    let out = tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment.apps/web edited"
    );
    let image = e
        .ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "nginx:1.29");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_flap_makes_nodes_not_ready_and_back() {
    let e = env_with(true).await;
    let mut watch = e
        .cmd(&["get", "nodes", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen_not_ready = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("node status changes");
        let name = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        match (&seen_not_ready, line.contains("NotReady")) {
            (None, true) => seen_not_ready = Some(name),
            (Some(n), false) if *n == name && line.contains(" Ready ") => break,
            _ => {}
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
}

/// A ConfigMap applied from a file, as most of the next tests start.
async fn with_settings(e: &Env) {
    let cm = e.file("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n  b: \"2\"\n");
    e.ok(&["apply", "-f", &cm]).await;
}

async fn settings_data(e: &Env) -> serde_json::Value {
    serde_json::from_str(
        &e.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"])
            .await,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_creates_then_is_unchanged_then_configured() {
    let e = env().await;
    let cm = e.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n",
    );
    assert_eq!(
        e.ok(&["apply", "-f", &cm]).await.trim(),
        "configmap/settings created"
    );
    assert_eq!(
        e.ok(&["apply", "-f", &cm]).await.trim(),
        "configmap/settings unchanged"
    );
    let changed = e.file(
        "cm2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"10\"\n",
    );
    assert_eq!(
        e.ok(&["apply", "-f", &changed]).await.trim(),
        "configmap/settings configured"
    );
    assert_eq!(settings_data(&e).await, serde_json::json!({"a": "10"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_a_wrong_shape_naming_the_field() {
    let e = env().await;
    let bad = e.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata: [1, 2]\n",
    );
    let (code, _, err) = e.kubectl(&["apply", "-f", &bad]).await;
    assert_ne!(code, 0);
    assert!(err.contains("data"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn label() {
    let e = env().await;
    with_settings(&e).await;
    assert_eq!(
        e.ok(&["label", "cm", "settings", "tier=web"]).await.trim(),
        "configmap/settings labeled"
    );
    assert!(e
        .ok(&["get", "cm", "-l", "tier=web", "--no-headers"])
        .await
        .starts_with("settings"));
}

#[tokio::test(flavor = "multi_thread")]
async fn annotate() {
    let e = env().await;
    with_settings(&e).await;
    assert_eq!(
        e.ok(&["annotate", "cm", "settings", "owner=platform"])
            .await
            .trim(),
        "configmap/settings annotated"
    );
    assert_eq!(
        e.ok(&[
            "get",
            "cm",
            "settings",
            "-o",
            "jsonpath={.metadata.annotations.owner}"
        ])
        .await,
        "platform"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_merge() {
    let e = env().await;
    with_settings(&e).await;
    assert_eq!(
        e.ok(&[
            "patch",
            "cm",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"c":"3"}}"#
        ])
        .await
        .trim(),
        "configmap/settings patched"
    );
    assert_eq!(
        settings_data(&e).await,
        serde_json::json!({"a": "1", "b": "2", "c": "3"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_json() {
    let e = env().await;
    with_settings(&e).await;
    e.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/a"}]"#,
    ])
    .await;
    assert_eq!(settings_data(&e).await, serde_json::json!({"b": "2"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_strategic() {
    let e = env().await;
    with_settings(&e).await;
    e.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=strategic",
        "-p",
        r#"{"data":{"d":"4"}}"#,
    ])
    .await;
    assert_eq!(
        settings_data(&e).await,
        serde_json::json!({"a": "1", "b": "2", "d": "4"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_whoami() {
    let e = env().await;
    let who = e.ok(&["auth", "whoami"]).await;
    assert!(
        who.contains("kubernetes-admin") && who.contains("system:masters"),
        "{who}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_can_i_as_another_user() {
    let e = env().await;
    assert_eq!(
        e.ok(&["auth", "can-i", "delete", "nodes"]).await.trim(),
        "yes"
    );
    let (code, out, _) = e
        .kubectl(&["auth", "can-i", "get", "pods", "--as", "bob"])
        .await;
    assert_eq!((code, out.trim()), (1, "no"));
    assert_eq!(
        e.ok(&[
            "auth",
            "can-i",
            "create",
            "configmaps",
            "--as",
            "alice",
            "--as-group",
            "system:masters"
        ])
        .await
        .trim(),
        "yes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_denies_an_impersonated_user_without_rights() {
    let e = env().await;
    let (code, _, err) = e.kubectl(&["get", "pods", "--as", "bob"]).await;
    assert_ne!(code, 0);
    assert!(err.contains(r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#), "{err}");
    // Bound to view in default (kubectl sends this as protobuf), bob reads
    // there but not elsewhere, and does not write.
    e.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "default",
    ])
    .await;
    assert_eq!(e.ok(&["get", "pods", "--as", "bob"]).await.trim(), "");
    let (_, out, _) = e
        .kubectl(&[
            "auth",
            "can-i",
            "list",
            "pods",
            "--as",
            "bob",
            "-n",
            "kube-system",
        ])
        .await;
    assert_eq!(out.trim(), "no", "a RoleBinding stays in its namespace");
    let (code, _, err) = e
        .kubectl(&["create", "configmap", "x", "--as", "bob"])
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"User "bob" cannot create resource "configmaps""#),
        "{err}"
    );
}

/// A one-replica Deployment whose logs advance every 100 ms.
async fn logger(e: &Env) -> String {
    let d = e.file(
        "logger.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: logger\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: logger}\n  template:\n    metadata:\n      labels: {app: logger}\n      annotations:\n        sim.drover.io/log-interval-ms: \"100\"\n    spec:\n      containers:\n      - name: app\n        image: busybox:1.36\n",
    );
    e.ok(&["apply", "-f", &d]).await;
    e.ok(&["rollout", "status", "deployment/logger", "--timeout=30s"])
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    pods(e, "app=logger").await.remove(0).0
}

#[tokio::test(flavor = "multi_thread")]
async fn logs() {
    let e = env().await;
    let pod = logger(&e).await;
    let out = e.ok(&["logs", &pod, "--tail=3"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("{pod}/app request "))),
        "{out}"
    );
    let stamped = e
        .ok(&["logs", "deployment/logger", "--tail=1", "--timestamps"])
        .await;
    assert!(
        stamped.split(' ').next().unwrap().ends_with('Z'),
        "{stamped}"
    );
    let (code, _, err) = e.kubectl(&["logs", &pod, "-c", "nope"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("container nope is not valid for pod {pod}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_streams() {
    let e = env().await;
    let pod = logger(&e).await;
    let mut follow = e
        .cmd(&["logs", "-f", &pod, "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut numbers = Vec::new();
    for _ in 0..5 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a streamed line");
        numbers.push(
            line.split("request ")
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive lines: {numbers:?}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn limitrange_defaults_show_on_a_created_pod() {
    let e = env().await;
    let lr = e.file(
        "lr.yaml",
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: defaults\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 100m, memory: 64Mi}\n",
    );
    e.ok(&["apply", "-f", &lr]).await;
    e.ok(&["run", "one", "--image=busybox:1.36"]).await;
    let res: serde_json::Value = serde_json::from_str(
        &e.ok(&[
            "get",
            "pod",
            "one",
            "-o",
            "jsonpath={.spec.containers[0].resources}",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(
        res,
        serde_json::json!({"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_rejects_a_pod_over_quota() {
    let e = env().await;
    let quota = e.file(
        "quota.yaml",
        // kube-root-ca.crt, in every namespace, is one of the two.
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: small\nspec:\n  hard:\n    pods: \"2\"\n    configmaps: \"2\"\n",
    );
    e.ok(&["apply", "-f", &quota]).await;
    e.ok(&["run", "one", "--image=busybox:1.36"]).await;
    e.ok(&["run", "two", "--image=busybox:1.36"]).await;
    let (code, _, err) = e.kubectl(&["run", "three", "--image=busybox:1.36"]).await;
    assert_ne!(code, 0);
    assert!(err.contains(r#"pods "three" is forbidden: exceeded quota: small, requested: pods=1, used: pods=2, limited: pods=2"#), "{err}");
    eventually("quota status", || async {
        e.ok(&[
            "get",
            "quota",
            "small",
            "-o",
            "jsonpath={.status.used.pods}",
        ])
        .await
            == "2"
    })
    .await;
    e.ok(&["create", "configmap", "a"]).await;
    let (code, _, err) = e.kubectl(&["create", "configmap", "b"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("exceeded quota: small") && err.contains("used: configmaps=2"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_on_compute_needs_requests() {
    let e = env().await;
    let strict = e.file("strict.yaml", "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: cpu\nspec:\n  hard:\n    requests.cpu: \"2\"\n");
    e.ok(&["apply", "-f", &strict]).await;
    let (code, _, err) = e.kubectl(&["run", "bare", "--image=busybox:1.36"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"pods "bare" is forbidden: failed quota: cpu: must specify requests.cpu"#),
        "{err}"
    );
}

/// A three-replica Deployment, rolled out.
async fn web(e: &Env) {
    e.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=3",
    ])
    .await;
    let done = e
        .ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    assert!(
        done.contains(r#"deployment "web" successfully rolled out"#),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_rolls_out_to_running_pods_on_the_nodes() {
    let e = env().await;
    web(&e).await;
    let first = pods(&e, "app=web").await;
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(
        first
            .iter()
            .all(|(_, phase, node)| phase == "Running" && node.starts_with("test-node-")),
        "{first:?}"
    );
    let nodes: std::collections::BTreeSet<_> = first.iter().map(|p| p.2.clone()).collect();
    assert_eq!(nodes.len(), 3, "spread over the nodes");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_pods_wide_shows_ips_and_nodes() {
    let e = env().await;
    web(&e).await;
    let wide = e.ok(&["get", "pods", "-o", "wide"]).await;
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{wide}"
    );
    assert!(
        wide.lines().skip(1).all(|l| l.contains("1/1")
            && l.contains("Running")
            && l.contains("10.244.")
            && l.contains("test-node-")),
        "{wide}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_up_and_down() {
    let e = env().await;
    web(&e).await;
    assert_eq!(
        e.ok(&["scale", "deployment", "web", "--replicas=5"])
            .await
            .trim(),
        "deployment.apps/web scaled"
    );
    eventually("5 pods", || async {
        pods(&e, "app=web")
            .await
            .iter()
            .filter(|p| p.1 == "Running")
            .count()
            == 5
    })
    .await;
    e.ok(&["scale", "deployment", "web", "--replicas=2"]).await;
    eventually("2 pods", || async { pods(&e, "app=web").await.len() == 2 }).await;
    assert_eq!(
        e.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn set_image_replaces_the_pods() {
    let e = env().await;
    web(&e).await;
    let before: Vec<String> = pods(&e, "app=web").await.into_iter().map(|p| p.0).collect();
    e.ok(&["set", "image", "deployment/web", "nginx=nginx:1.28"])
        .await;
    e.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    eventually("pods replaced", || async {
        let now = pods(&e, "app=web").await;
        now.len() == 3 && now.iter().all(|p| !before.contains(&p.0))
    })
    .await;
    let images = e
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])
        .await;
    assert_eq!(images, "nginx:1.28 nginx:1.28 nginx:1.28");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_restart_replaces_the_pods() {
    let e = env().await;
    web(&e).await;
    let before: Vec<String> = pods(&e, "app=web").await.into_iter().map(|p| p.0).collect();
    assert_eq!(
        e.ok(&["rollout", "restart", "deployment/web"]).await.trim(),
        "deployment.apps/web restarted"
    );
    e.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    eventually("pods restarted", || async {
        let now = pods(&e, "app=web").await;
        now.len() == 3 && now.iter().all(|p| !before.contains(&p.0))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_deployment_removes_its_replicasets_and_pods() {
    let e = env().await;
    web(&e).await;
    e.ok(&["delete", "deployment", "web"]).await;
    eventually("everything removed", || async {
        pods(&e, "app=web").await.is_empty()
            && e.ok(&["get", "rs", "--no-headers"]).await.trim().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cascade_orphan_keeps_dependents_and_foreground_deletes_them_first() {
    let e = env().await;
    web(&e).await;
    // Orphan: the Deployment goes (kubectl waits for it); its ReplicaSet
    // stays, no longer owned, and keeps its pods.
    e.ok(&["delete", "deployment", "web", "--cascade=orphan"])
        .await;
    let rs: serde_json::Value =
        serde_json::from_str(&e.ok(&["get", "rs", "-l", "app=web", "-o", "json"]).await).unwrap();
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{rs}");
    assert!(
        items[0]
            .pointer("/metadata/ownerReferences")
            .and_then(|r| r.as_array())
            .is_none_or(|r| r.is_empty()),
        "{rs}"
    );
    let rs_name = items[0]["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(pods(&e, "app=web").await.len(), 3);
    let (code, _, err) = e.kubectl(&["get", "deployment", "web"]).await;
    assert_ne!(code, 0, "{err}");
    // Foreground: by the time the ReplicaSet is gone, its pods are too.
    e.ok(&["delete", "rs", &rs_name, "--cascade=foreground"])
        .await;
    assert!(pods(&e, "app=web").await.is_empty());
    assert!(e.ok(&["get", "rs", "--no-headers"]).await.trim().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_names_and_namespace_objects_follow_kube_rules() {
    let e = env().await;
    assert_eq!(
        e.ok(&["label", "clusterrole", "system:basic-user", "team=platform"])
            .await
            .trim(),
        "clusterrole.rbac.authorization.k8s.io/system:basic-user labeled"
    );
    // A RoleBinding in a namespace can grant get on that namespace itself.
    let role = e.file(
        "ns-reader.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: ns-reader, namespace: default}\nrules:\n- {apiGroups: [\"\"], resources: [namespaces], verbs: [get]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: carol, namespace: default}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ns-reader}\nsubjects:\n- {kind: User, apiGroup: rbac.authorization.k8s.io, name: carol}\n",
    );
    e.ok(&["apply", "-f", &role]).await;
    assert!(e
        .ok(&["get", "ns", "default", "--as", "carol"])
        .await
        .contains("default"));
    let (code, _, _) = e
        .kubectl(&["get", "ns", "kube-system", "--as", "carol"])
        .await;
    assert_ne!(code, 0, "only the namespace the binding is in");
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_refuses_escalation() {
    let e = env().await;
    e.ok(&[
        "create",
        "rolebinding",
        "bob-admin",
        "--clusterrole=admin",
        "--user=bob",
        "-n",
        "default",
    ])
    .await;
    // Within bob's rights: allowed.
    assert!(e
        .ok(&[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
            "--as",
            "bob"
        ])
        .await
        .contains("created"));
    // Beyond them: refused, as kube-apiserver refuses.
    let (code, _, err) = e
        .kubectl(&[
            "create",
            "role",
            "everything",
            "--verb=*",
            "--resource=*.*",
            "--as",
            "bob",
        ])
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let (code, _, err) = e
        .kubectl(&[
            "create",
            "rolebinding",
            "bob-root",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "--as",
            "bob",
        ])
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    // roleRef cannot change.
    let (code, _, err) = e
        .kubectl(&[
            "patch",
            "rolebinding",
            "bob-admin",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"view"}}"#,
        ])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("cannot change roleRef"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_says_who_did_what_as_whom() {
    let e = env().await;
    e.ok(&["create", "namespace", "audited"]).await;
    e.ok(&[
        "get",
        "namespace",
        "audited",
        "--as",
        "alice",
        "--as-group",
        "system:masters",
    ])
    .await;
    let text = std::fs::read_to_string(e.dir.path().join("audit.log")).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let create = events
        .iter()
        .find(|ev| ev["verb"] == "create" && ev["objectRef"]["resource"] == "namespaces")
        .expect("the create is logged");
    assert_eq!(create["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(create["kind"], "Event");
    assert_eq!(create["stage"], "ResponseComplete");
    assert_eq!(create["user"]["username"], drover_sim::ADMIN_USER);
    assert_eq!(create["responseStatus"]["code"], 201);
    assert!(
        create["userAgent"].as_str().unwrap().starts_with("kubectl"),
        "{create}"
    );
    let get = events
        .iter()
        .find(|ev| ev["verb"] == "get" && ev["objectRef"]["name"] == "audited")
        .expect("the get is logged");
    assert_eq!(get["user"]["username"], drover_sim::ADMIN_USER);
    assert_eq!(get["impersonatedUser"]["username"], "alice");
    assert_eq!(get["objectRef"]["namespace"], "audited");
    let received =
        drover_core::meta::parse_rfc3339(get["requestReceivedTimestamp"].as_str().unwrap());
    let done = drover_core::meta::parse_rfc3339(get["stageTimestamp"].as_str().unwrap());
    assert!(received.unwrap() <= done.unwrap());
}

// Fidelity: everyday kubectl, as against kube-apiserver and its controllers.

/// `kubectl get … -o json`, parsed.
async fn json_of(e: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&e.ok(&all).await).unwrap()
}

async fn deployment(e: &Env, name: &str, replicas: &str) {
    e.ok(&[
        "create",
        "deployment",
        name,
        "--image=nginx:1.27",
        "--port=80",
        &format!("--replicas={replicas}"),
    ])
    .await;
    e.ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=20s",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn controllers_scheduler_and_kubelets_record_events() {
    let e = env().await;
    deployment(&e, "web", "2").await;
    let wanted = [
        "ScalingReplicaSet",
        "SuccessfulCreate",
        "Scheduled",
        "Pulled",
        "Created",
        "Started",
    ];
    eventually("every kind of event", || async {
        let out = e
            .ok(&[
                "get",
                "events",
                "-o",
                "custom-columns=R:.reason",
                "--no-headers",
            ])
            .await;
        wanted.iter().all(|w| out.lines().any(|l| l == *w))
    })
    .await;
    let table = e.ok(&["get", "events"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{table}"
    );
    assert!(table.contains("pod/web-"), "{table}");
    let pod = pods(&e, "app=web").await[0].0.clone();
    let described = e.ok(&["describe", "pod", &pod]).await;
    assert!(
        described.contains("Successfully assigned default/")
            && described.contains("Started container nginx"),
        "{described}"
    );
    // The same events in events.k8s.io/v1, which `kubectl events` reads.
    let newer = json_of(&e, &["get", "events.v1.events.k8s.io"]).await;
    let reasons: Vec<&str> = newer["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|ev| ev["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"Scheduled"), "{reasons:?}");
    let listed = e.ok(&["events", "--for", &format!("pod/{pod}")]).await;
    assert!(listed.contains("Started"), "{listed}");
    e.ok(&["delete", "pod", &pod, "--wait=false"]).await;
    eventually("Killing", || async {
        e.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=Killing"),
            "-o",
            "name",
        ])
        .await
        .lines()
        .count()
            > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn services_get_cluster_ips_node_ports_and_endpoints() {
    let e = env().await;
    let k = json_of(&e, &["get", "service", "kubernetes", "-n", "default"]).await;
    assert_eq!(k["spec"]["clusterIP"], "10.96.0.1");
    deployment(&e, "web", "2").await;
    e.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=8080",
        "--target-port=80",
    ])
    .await;
    let svc = json_of(&e, &["get", "service", "web"]).await;
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let n: std::net::Ipv4Addr = ip.parse().unwrap();
    assert!(
        n.octets()[0] == 10 && (96..112).contains(&n.octets()[1]) && ip != "10.96.0.1",
        "{ip} is in 10.96.0.0/12"
    );
    eventually("endpoints of both pods", || async {
        let ep = e
            .ok(&[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[0].addresses[*].ip}",
            ])
            .await;
        ep.split_whitespace().count() == 2
    })
    .await;
    let slices = e
        .ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[*].conditions.ready}",
        ])
        .await;
    assert_eq!(slices, "true true");
    e.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:80",
        "--node-port=31080",
    ])
    .await;
    let out = e.ok(&["get", "service", "np"]).await;
    assert!(out.contains("80:31080/TCP"), "{out}");
    // An address or port in use is refused, as kube refuses it.
    let taken = e.file(
        "taken.yaml",
        &format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: copy\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: 80\n"),
    );
    let (code, _, err) = e.kubectl(&["create", "-f", &taken]).await;
    assert_ne!(code, 0);
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let (code, _, err) = e
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "np2",
            "--tcp=80:80",
            "--node-port=31080",
        ])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("provided port is already allocated"), "{err}");
    // Deleting a Service frees its address.
    e.ok(&["delete", "service", "web"]).await;
    e.ok(&["create", "-f", &taken]).await;
    eventually("web's endpoints go with it", || async {
        e.kubectl(&["get", "endpoints", "web"]).await.0 != 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_run_to_completion_and_cronjobs_make_them() {
    let e = env().await;
    e.ok(&[
        "create",
        "job",
        "pi",
        "--image=perl:5.34",
        "--",
        "sh",
        "-c",
        "sleep 1; echo 3.14",
    ])
    .await;
    e.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=20s",
    ])
    .await;
    let out = e.ok(&["get", "job", "pi"]).await;
    assert!(out.contains("Complete") && out.contains("1/1"), "{out}");
    let pod = e
        .ok(&[
            "get",
            "pods",
            "-l",
            "job-name=pi",
            "-o",
            "jsonpath={.items[0].status.phase}",
        ])
        .await;
    assert_eq!(pod, "Succeeded");
    // A failing job stops after its backoff limit.
    let failing = e.file(
        "fail.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: broken\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: busybox\n        command: [sh, -c, 'exit 3']\n",
    );
    e.ok(&["apply", "-f", &failing]).await;
    e.ok(&[
        "wait",
        "--for=condition=failed",
        "job/broken",
        "--timeout=20s",
    ])
    .await;
    let status = json_of(&e, &["get", "job", "broken"]).await;
    assert_eq!(status["status"]["failed"], 2, "{status}");
    assert_eq!(
        status["status"]["conditions"][1]["reason"],
        "BackoffLimitExceeded"
    );
    // Parallel completions.
    let wide = e.file(
        "wide.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: wide\nspec:\n  completions: 4\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: busybox\n        command: [sh, -c, 'sleep 0.2']\n",
    );
    e.ok(&["apply", "-f", &wide]).await;
    e.ok(&[
        "wait",
        "--for=condition=complete",
        "job/wide",
        "--timeout=30s",
    ])
    .await;
    let pods = e
        .ok(&["get", "pods", "-l", "job-name=wide", "-o", "name"])
        .await;
    assert_eq!(pods.lines().count(), 4, "{pods}");
    // A CronJob, and a Job made from it by hand.
    e.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/1 * * * *",
        "--",
        "echo",
        "tick",
    ])
    .await;
    e.ok(&["create", "job", "manual", "--from=cronjob/tick"])
        .await;
    e.ok(&[
        "wait",
        "--for=condition=complete",
        "job/manual",
        "--timeout=20s",
    ])
    .await;
    let cj = json_of(&e, &["get", "cronjob", "tick"]).await;
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cronjob_makes_a_job_when_its_schedule_comes() {
    let e = env().await;
    e.ok(&[
        "create",
        "cronjob",
        "every-minute",
        "--image=busybox",
        "--schedule=* * * * *",
        "--",
        "echo",
        "hi",
    ])
    .await;
    // The next minute starts within 60 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let jobs = e
            .ok(&[
                "get",
                "jobs",
                "-o",
                "jsonpath={.items[*].metadata.ownerReferences[0].name}",
            ])
            .await;
        if jobs.contains("every-minute") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Job from the CronJob"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cj = json_of(&e, &["get", "cronjob", "every-minute"]).await;
    assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
}

#[tokio::test(flavor = "multi_thread")]
async fn statefulsets_and_daemonsets_run_their_pods() {
    let e = env().await;
    let sts = e.file(
        "sts.yaml",
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: 3\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: db}\n    spec:\n      containers:\n      - name: db\n        image: postgres:16\n  volumeClaimTemplates:\n  - metadata:\n      name: data\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources:\n        requests:\n          storage: 1Gi\n",
    );
    e.ok(&["apply", "-f", &sts]).await;
    e.ok(&["rollout", "status", "statefulset/db", "--timeout=20s"])
        .await;
    let names = e
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=db",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await;
    assert_eq!(names, "db-0 db-1 db-2");
    let claims = e.ok(&["get", "pvc", "--no-headers"]).await;
    assert_eq!(claims.matches("Bound").count(), 3, "{claims}");
    assert!(claims.contains("data-db-2"), "{claims}");
    let obj = json_of(&e, &["get", "statefulset", "db"]).await;
    assert_eq!(obj["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(obj["spec"]["updateStrategy"]["type"], "RollingUpdate");
    // Revisions, as ControllerRevisions: history and undo.
    e.ok(&["set", "image", "statefulset/db", "db=postgres:17"])
        .await;
    e.ok(&["rollout", "status", "statefulset/db", "--timeout=20s"])
        .await;
    e.ok(&["rollout", "undo", "statefulset/db"]).await;
    e.ok(&["rollout", "status", "statefulset/db", "--timeout=20s"])
        .await;
    let history = e.ok(&["rollout", "history", "statefulset/db"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    eventually("pods back on postgres:16", || async {
        e.ok(&[
            "get",
            "pods",
            "-l",
            "app=db",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])
        .await
            == "postgres:16 postgres:16 postgres:16"
    })
    .await;
    e.ok(&["scale", "statefulset", "db", "--replicas=1"]).await;
    eventually("db scaled to db-0", || async {
        pods(&e, "app=db").await.len() == 1
    })
    .await;
    assert_eq!(pods(&e, "app=db").await[0].0, "db-0");

    let ds = e.file(
        "ds.yaml",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {app: agent}\n  template:\n    metadata:\n      labels: {app: agent}\n    spec:\n      containers:\n      - name: a\n        image: busybox\n",
    );
    e.ok(&["apply", "-f", &ds]).await;
    e.ok(&["rollout", "status", "daemonset/agent", "--timeout=20s"])
        .await;
    let nodes: Vec<String> = pods(&e, "app=agent")
        .await
        .into_iter()
        .map(|(_, _, node)| node)
        .collect();
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        (nodes.len(), distinct.len()),
        (3, 3),
        "one per node: {nodes:?}"
    );
    let obj = json_of(&e, &["get", "daemonset", "agent"]).await;
    assert_eq!(obj["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(obj["status"]["desiredNumberScheduled"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_undo_makes_a_new_revision() {
    let e = env().await;
    deployment(&e, "web", "1").await;
    e.ok(&["set", "image", "deployment/web", "nginx=nginx:1.28"])
        .await;
    e.ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=to 1.28",
    ])
    .await;
    e.ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    e.ok(&["rollout", "undo", "deployment/web", "--to-revision=1"])
        .await;
    e.ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    eventually("revision 3", || async {
        e.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ])
        .await
            == "3"
    })
    .await;
    let history = e.ok(&["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    assert!(history.contains("to 1.28"), "{history}");
    let third = e
        .ok(&["rollout", "history", "deployment/web", "--revision=3"])
        .await;
    assert!(third.contains("nginx:1.27"), "{third}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_all_describe_node_and_field_selectors() {
    let e = env().await;
    deployment(&e, "web", "3").await;
    let all = e.ok(&["get", "all"]).await;
    for kind in [
        "pod/web-",
        "service/kubernetes",
        "deployment.apps/web",
        "replicaset.apps/web-",
    ] {
        assert!(all.contains(kind), "{kind} missing from:\n{all}");
    }
    let node = pods(&e, "app=web").await[0].2.clone();
    let described = e.ok(&["describe", "node", &node]).await;
    assert!(described.contains("Non-terminated Pods:"), "{described}");
    assert!(described.contains("web-"), "{described}");
    let running = e
        .ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(running.lines().count(), 3, "{running}");
    let on_node = e
        .ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .await;
    assert!(on_node.split_whitespace().all(|n| n == node), "{on_node}");
    let (code, _, err) = e
        .kubectl(&["get", "pods", "--field-selector", "spec.nope=x"])
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("field label not supported: spec.nope"),
        "{err}"
    );
    // A page with a continue token says how many follow.
    let page: serde_json::Value =
        serde_json::from_str(&e.ok(&["get", "--raw", "/api/v1/namespaces?limit=1"]).await).unwrap();
    assert_eq!(page["metadata"]["remainingItemCount"], 3, "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregated_roles_and_the_rules_review() {
    let e = env().await;
    let view = json_of(&e, &["get", "clusterrole", "view"]).await;
    assert!(!view["rules"].as_array().unwrap().is_empty(), "{view}");
    let extra = e.file(
        "agg.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widgets-view\n  labels:\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\nrules:\n- apiGroups: [example.com]\n  resources: [widgets]\n  verbs: [get, list]\n",
    );
    e.ok(&["apply", "-f", &extra]).await;
    eventually("view holds widgets", || async {
        e.ok(&["get", "clusterrole", "view", "-o", "json"])
            .await
            .contains("widgets")
    })
    .await;
    // can-i --list as a ServiceAccount bound to view in one namespace.
    e.ok(&["create", "serviceaccount", "reader"]).await;
    e.ok(&[
        "create",
        "rolebinding",
        "reader",
        "--clusterrole=view",
        "--serviceaccount=default:reader",
    ])
    .await;
    let token = e.ok(&["create", "token", "reader"]).await;
    let list = e
        .ok(&["auth", "can-i", "--list", "--token", token.trim()])
        .await;
    assert!(list.contains("widgets.example.com"), "{list}");
    assert!(list.contains("pods "), "{list}");
    let admin = e.ok(&["auth", "can-i", "--list"]).await;
    assert!(admin.contains("*.*"), "{admin}");
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_over_websocket_and_spdy() {
    let e = env().await;
    deployment(&e, "web", "1").await;
    for (form, websockets) in [("websocket", "true"), ("spdy", "false")] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pf = e.cmd(&["port-forward", "deployment/web", &format!("{port}:80")]);
        pf.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = pf.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Read on for as long as kubectl writes, or it dies of a closed pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Forwarding from") {
                    let _ = tx.send(());
                }
            }
        });
        let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)));
        assert!(
            ready.await.unwrap().is_ok(),
            "{form}: port-forward did not start"
        );
        let body = tokio::task::spawn_blocking(move || {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "-m",
                    "10",
                    &format!("http://127.0.0.1:{port}/{form}"),
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            body.contains("\"port\":80") && body.contains(&format!("\"path\":\"/{form}\"")),
            "{form}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn service_account_tokens_are_signed_and_verifiable() {
    let e = env().await;
    e.ok(&["create", "serviceaccount", "robot"]).await;
    let token = e
        .ok(&["create", "token", "robot", "--audience=vault"])
        .await
        .trim()
        .to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
    assert_eq!(claims["aud"], serde_json::json!(["vault"]));
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "robot");
    // Offline: the signature checks against the published key.
    let jwks: serde_json::Value =
        serde_json::from_str(&e.ok(&["get", "--raw", "/openid/v1/jwks"]).await).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], header["kid"]);
    let mut point = vec![4u8];
    point.extend(b64.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(b64.decode(key["y"].as_str().unwrap()).unwrap());
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &b64.decode(parts[2]).unwrap(),
        )
        .expect("the token verifies against /openid/v1/jwks");
    let discovery: serde_json::Value = serde_json::from_str(
        &e.ok(&["get", "--raw", "/.well-known/openid-configuration"])
            .await,
    )
    .unwrap();
    assert_eq!(discovery["issuer"], claims["iss"]);
    // Online: TokenReview for its audience, until the account goes.
    let review = |token: String| {
        e.file(
            "review.yaml",
            &format!("apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n  audiences: [vault]\n"),
        )
    };
    let file = review(token.clone());
    let out = e
        .ok(&[
            "create",
            "-f",
            &file,
            "-o",
            "jsonpath={.status.authenticated}",
        ])
        .await;
    assert_eq!(out, "true");
    e.ok(&["delete", "serviceaccount", "robot"]).await;
    let out = e
        .ok(&[
            "create",
            "-f",
            &file,
            "-o",
            "jsonpath={.status.authenticated}",
        ])
        .await;
    assert_eq!(out, "false");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_and_metrics_read_as_kube_apiservers() {
    let e = env().await;
    let ready = e.ok(&["get", "--raw", "/readyz?verbose"]).await;
    assert!(ready.contains("[+]etcd ok"), "{ready}");
    assert!(ready.trim_end().ends_with("readyz check passed"), "{ready}");
    assert_eq!(e.ok(&["get", "--raw", "/livez/etcd"]).await, "ok");
    e.ok(&["get", "pods"]).await;
    let metrics = e.ok(&["get", "--raw", "/metrics"]).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("apiserver_request_total{") && l.contains("resource=\"pods\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("apiserver_storage_objects{resource=\"nodes\"} 3"),
        "{metrics}"
    );
    // Not for everyone: a ServiceAccount without the right is refused.
    e.ok(&["create", "serviceaccount", "nobody"]).await;
    let token = e.ok(&["create", "token", "nobody"]).await;
    let (code, _, err) = e
        .kubectl(&["get", "--raw", "/metrics", "--token", token.trim()])
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_owns_fields_and_names_conflicts() {
    let e = env().await;
    let manifest = |replicas: u32, sidecar: bool| {
        let side = if sidecar {
            "      - name: side\n        image: busybox\n"
        } else {
            ""
        };
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n        ports:\n        - containerPort: 80\n{side}")
    };
    let file = e.file("web.yaml", &manifest(2, true));
    let out = e.ok(&["apply", "--server-side", "-f", &file]).await;
    assert!(out.contains("serverside-applied"), "{out}");
    let obj = json_of(&e, &["get", "deployment", "web", "--show-managed-fields"]).await;
    let managed = &obj["metadata"]["managedFields"];
    assert_eq!(managed[0]["manager"], "kubectl", "{managed}");
    assert_eq!(managed[0]["operation"], "Apply");
    let fields = managed[0]["fieldsV1"].to_string();
    assert!(
        fields.contains(r#"k:{\"containerPort\":80,\"protocol\":\"TCP\"}"#)
            && fields.contains(r#"k:{\"name\":\"side\"}"#),
        "{fields}"
    );
    // Another manager changes replicas: the next apply conflicts on it.
    e.ok(&["scale", "deployment", "web", "--replicas=4"]).await;
    let file = e.file("web.yaml", &manifest(3, true));
    let (code, _, err) = e.kubectl(&["apply", "--server-side", "-f", &file]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("Apply failed with 1 conflict") && err.contains(".spec.replicas"),
        "{err}"
    );
    e.ok(&["apply", "--server-side", "--force-conflicts", "-f", &file])
        .await;
    assert_eq!(
        e.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ])
        .await,
        "3"
    );
    // A container left out of the next apply goes.
    let file = e.file("web.yaml", &manifest(3, false));
    e.ok(&["apply", "--server-side", "-f", &file]).await;
    assert_eq!(
        e.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ])
        .await,
        "web"
    );
    // A server-side dry run changes nothing.
    let file = e.file("web.yaml", &manifest(9, false));
    e.ok(&["apply", "--server-side", "--dry-run=server", "-f", &file])
        .await;
    assert_eq!(
        e.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ])
        .await,
        "3"
    );
    // Other writes are recorded too.
    e.ok(&["create", "configmap", "c", "--from-literal=a=1"])
        .await;
    let cm = json_of(&e, &["get", "configmap", "c", "--show-managed-fields"]).await;
    assert_eq!(
        cm["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    assert_eq!(cm["metadata"]["managedFields"][0]["operation"], "Update");
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_evicts_within_disruption_budgets() {
    let e = env().await;
    deployment(&e, "web", "2").await;
    e.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=2",
    ])
    .await;
    eventually("the budget allows nothing", || async {
        e.ok(&[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}",
        ])
        .await
            == "2/0"
    })
    .await;
    let node = pods(&e, "app=web").await[0].2.clone();
    let (code, out, err) = e
        .kubectl(&["drain", &node, "--ignore-daemonsets", "--timeout=3s"])
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    e.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":1}}"#,
    ])
    .await;
    // A server-side dry run evicts nothing.
    e.ok(&["uncordon", &node]).await;
    let out = e
        .ok(&["drain", &node, "--ignore-daemonsets", "--dry-run=server"])
        .await;
    assert!(out.contains("(server dry run)"), "{out}");
    let now = pods(&e, "app=web").await;
    assert!(
        now.len() == 2 && now.iter().any(|(_, _, n)| *n == node),
        "{now:?}"
    );
    let out = e
        .ok(&["drain", &node, "--ignore-daemonsets", "--timeout=20s"])
        .await;
    assert!(out.contains("evicted") && out.contains("drained"), "{out}");
    // The replacement lands on a node that is not cordoned.
    eventually("two pods again, none on the drained node", || async {
        let now = pods(&e, "app=web").await;
        now.len() == 2
            && now
                .iter()
                .all(|(_, phase, n)| phase == "Running" && *n != node)
    })
    .await;
    let classes = e.ok(&["get", "priorityclasses", "-o", "name"]).await;
    assert!(classes.contains("system-node-critical"), "{classes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_attaches_and_jobs_log_what_they_print() {
    let e = env().await;
    let out = e
        .ok(&[
            "run",
            "-i",
            "--rm",
            "once",
            "--image=busybox",
            "--restart=Never",
            "--",
            "echo",
            "hello from run",
        ])
        .await;
    assert!(out.contains("hello from run"), "{out}");
    // Attached to a shell, stdin runs in it.
    let mut cmd = e.cmd(&[
        "run",
        "-i",
        "--rm",
        "shell",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo typed in; hostname\n").unwrap();
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("typed in\nshell"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    e.ok(&[
        "create",
        "job",
        "pi",
        "--image=perl:5.34",
        "--",
        "sh",
        "-c",
        "echo 3.14159",
    ])
    .await;
    e.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=20s",
    ])
    .await;
    assert_eq!(e.ok(&["logs", "job/pi"]).await, "3.14159\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_looping_containers_restart_and_keep_their_previous_logs() {
    let e = env().await;
    // kubectl run makes a Pod that restarts Always; its command ends after
    // five seconds.
    e.ok(&[
        "run",
        "crasher",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo starting up; sleep 5; exit 3",
    ])
    .await;
    e.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/crasher",
        "--timeout=20s",
    ])
    .await;
    // Not restarted yet: kubelet's refusal.
    let (code, _, err) = e.kubectl(&["logs", "crasher", "--previous"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("previous terminated container \"crasher\" in pod \"crasher\" not found"),
        "{err}"
    );
    assert_eq!(e.ok(&["logs", "crasher"]).await, "starting up\n");
    let pod_when = |what: &'static str, done: fn(&serde_json::Value) -> bool| {
        let e = &e;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let out = e.ok(&["get", "pod", "crasher", "-o", "json"]).await;
                let pod: serde_json::Value = serde_json::from_str(&out).unwrap();
                if done(&pod["status"]["containerStatuses"][0]) {
                    return pod;
                }
                assert!(std::time::Instant::now() < deadline, "{what}: {out}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // The first exit is restarted at once, its run kept in lastState.
    let pod = pod_when("a restart", |c| c["restartCount"] == 1).await;
    let c = &pod["status"]["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3, "{c}");
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
    assert!(c["state"]["running"].is_object(), "{c}");
    assert_eq!(
        e.ok(&["logs", "crasher", "--previous"]).await,
        "starting up\n"
    );
    // The second waits: CrashLoopBackOff, not Ready, a BackOff warning.
    let pod = pod_when("a back-off", |c| {
        c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    let c = &pod["status"]["containerStatuses"][0];
    assert_eq!(c["ready"], false);
    assert_eq!(c["restartCount"], 1, "counted when restarted: {c}");
    assert!(
        c["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("back-off 10s restarting failed container=crasher pod=crasher_default("),
        "{c}"
    );
    let table = e.ok(&["get", "pod", "crasher"]).await;
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    assert!(table.contains("0/1"), "{table}");
    assert!(table.contains(" ago)"), "restarts with when: {table}");
    let events = e
        .ok(&["events", "--for", "pod/crasher", "--types", "Warning"])
        .await;
    assert!(
        events.contains("Back-off restarting failed container crasher"),
        "{events}"
    );
}
