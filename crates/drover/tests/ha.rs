//! High availability, end to end. Debian's haproxy balances TCP across
//! three `drover server` replicas on one PostgreSQL, with health checks on
//! `/healthz`; a simulated cluster is imported through the balancer and
//! its agent connects through it. Real clients: curl and kubectl.
//!
//! What a platform team would check: every replica serves the cluster
//! whichever holds the agent's link; a watch survives a replica's death;
//! kill -9 of any replica, nine times in turn, loses no acknowledged write
//! and moves its controllers within 10 s, with kubectl working again in
//! seconds; a frozen replica is routed around and does not mark the
//! cluster disconnected when it wakes; a dead agent shows as
//! `Connected=False` within 10 s; SIGTERM drains without one failed
//! request. That no two replicas write a cluster's projection at once is
//! read from the simulated cluster's own audit log: every write Drover
//! makes names its replica and lease generation in its User-Agent, and
//! the generations never go back.
//!
//! Figures (recovery times) are printed; the bounds asserted are the ones
//! docs/ha.md promises. Reported as ignored without PostgreSQL.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, wait, Proc, Server, ADMIN_PASSWORD, BIN, MGMT};
use serde_json::{json, Value};

const REPLICAS: usize = 3;
/// Clusters without an agent, so that every replica holds some leases.
const IDLE_CLUSTERS: usize = 8;

/// The whole installation: balancer, replicas, cluster, agent.
struct Ha {
    dir: tempfile::TempDir,
    db: String,
    ports: [u16; REPLICAS],
    replicas: Vec<Option<Server>>,
    lb: u16,
    _haproxy: Proc,
    ca: PathBuf,
    admin: String,
}

impl Ha {
    async fn start() -> Ha {
        let db = common::postgres_database().await;
        let dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port(), free_port()];
        let lb = free_port();
        let mut ha = Ha {
            db,
            ports,
            replicas: (0..REPLICAS).map(|_| None).collect(),
            lb,
            _haproxy: haproxy(dir.path(), lb, &ports),
            ca: dir.path().join("ca.pem"),
            admin: String::new(),
            dir,
        };
        // The first replica makes the CA and the admin; the others start
        // together.
        ha.start_replica(0);
        let (_, pem) = common::curl(&["--insecure"], &ha.direct(0, "/cacerts"));
        std::fs::write(&ha.ca, pem).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (1..REPLICAS)
                .map(|i| {
                    let (port, dir, db) =
                        (ha.ports[i], ha.dir.path().join(format!("r{i}")), &ha.db);
                    let url = format!("https://127.0.0.1:{lb}");
                    s.spawn(move || replica(port, &dir, db, &url))
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                ha.replicas[i + 1] = Some(h.join().unwrap());
            }
        });
        ha.wait_balanced();
        ha.admin = ha.login();
        ha
    }

    fn start_replica(&mut self, i: usize) {
        let dir = self.dir.path().join(format!("r{i}"));
        let url = format!("https://127.0.0.1:{}", self.lb);
        self.replicas[i] = Some(replica(self.ports[i], &dir, &self.db, &url));
    }

    fn server(&self, i: usize) -> &Server {
        self.replicas[i].as_ref().expect("running")
    }

    fn pid(&self, i: usize) -> String {
        self.server(i).child.id().to_string()
    }

    /// The id replica `i` registered with (it changes on every start).
    fn replica_id(&self, i: usize) -> String {
        let (code, body) = common::curl(&["--cacert", &self.ca_arg()], &self.direct(i, "/healthz"));
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["replica"].as_str().unwrap().to_owned()
    }

    fn index_of(&self, id: &str) -> usize {
        (0..REPLICAS)
            .find(|&i| self.replicas[i].is_some() && self.replica_id(i) == id)
            .unwrap_or_else(|| panic!("no running replica is {id}"))
    }

    fn ca_arg(&self) -> String {
        self.ca.display().to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.lb)
    }

    fn direct(&self, i: usize, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.ports[i])
    }

    /// Wait until the balancer sends to every running replica: as many
    /// distinct replicas answer `/healthz` through it as are running.
    fn wait_balanced(&self) {
        let want = self.replicas.iter().filter(|r| r.is_some()).count();
        wait(
            "the balancer sends to every replica",
            Duration::from_secs(30),
            || {
                let seen: BTreeSet<String> = (0..want * 3)
                    .filter_map(|_| {
                        let (code, body) =
                            try_curl(&["--cacert", &self.ca_arg()], &self.url("/healthz"))?;
                        (code == 200).then(|| serde_json::from_str::<Value>(&body).ok())??
                            ["replica"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect();
                (seen.len() == want).then_some(())
            },
        );
    }

    fn login(&self) -> String {
        let (code, body) = self.http(
            "POST",
            "/v1-public/login",
            None,
            Some(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
        );
        assert_eq!(code, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A request through the balancer; (status, JSON body or Null).
    fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        http(&self.ca, &self.url(path), method, token, body).unwrap_or((0, Value::Null))
    }

    /// `/v1-admin/replicas`, through the balancer.
    fn view(&self) -> Value {
        wait("the replicas' view", Duration::from_secs(10), || {
            let (code, v) = self.http("GET", "/v1-admin/replicas", Some(&self.admin), None);
            (code == 200).then_some(v)
        })
    }

    fn cluster(&self, name: &str) -> Value {
        self.http(
            "GET",
            &format!("{MGMT}/clusters/{name}"),
            Some(&self.admin),
            None,
        )
        .1
    }

    fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
        let out = common::kubectl_cmd(kubeconfig, &self.dir.path().join("kube-cache"), args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// One replica on PostgreSQL, reached by agents and kubeconfigs through the
/// balancer.
fn replica(port: u16, dir: &Path, db: &str, url: &str) -> Server {
    Server::start_on(
        port,
        dir,
        &[
            "--datastore",
            db,
            "--server-url",
            url,
            "--drain-delay-seconds",
            "2",
            // The alert test's webhook receiver is on 127.0.0.1.
            "--allow-private-outbound",
        ],
        &[
            ("DROVER_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD),
            ("DROVER_LOG", "info"),
        ],
    )
}

/// Debian's haproxy: TCP round robin, health checks on `/healthz` over TLS
/// every 500 ms (down after 2 failures, up after 2 successes), a failed
/// connection retried on another replica.
fn haproxy(dir: &Path, lb: u16, ports: &[u16]) -> Proc {
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server r{i} 127.0.0.1:{p}\n"))
        .collect();
    let cfg = format!(
        "global\n  maxconn 4000\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  timeout check 1s\n  retries 3\n  option redispatch\n\
         frontend drover\n  bind 127.0.0.1:{lb}\n  default_backend replicas\n\
         backend replicas\n  balance roundrobin\n  option httpchk GET /healthz\n  http-check expect status 200\n\
         \x20 default-server check check-ssl verify none inter 500ms fall 2 rise 2\n{servers}"
    );
    common::haproxy(dir, lb, &cfg)
}

/// curl, without failing the test on a transport error.
fn try_curl(args: &[&str], url: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.parse().ok()?, body.to_owned()))
}

/// A GET through curl with the admin token: `Ok` on 200, else what went
/// wrong (the status and body, or curl's error).
fn get_checked(ha: &Ha, path: &str) -> Result<(), String> {
    let auth = format!("Authorization: Bearer {}", ha.admin);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "--cacert",
            &ha.ca_arg(),
            "-H",
            &auth,
        ])
        .arg(ha.url(path))
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    match text.rsplit_once('\n') {
        Some((_, "200")) => Ok(()),
        _ => Err(text),
    }
}

fn http(
    ca: &Path,
    url: &str,
    method: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut args = vec![
        "--cacert".to_owned(),
        ca.display().to_string(),
        "-X".into(),
        method.into(),
    ];
    if let Some(t) = token {
        args.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            b.to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text) = try_curl(&args, url)?;
    Some((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The imported cluster and its agent.
struct Imported {
    cluster: String,
    token: String,
    agent_kubeconfig: PathBuf,
    sim: Proc,
    sim_kubeconfig: PathBuf,
    audit_log: PathBuf,
    /// The admin's kubeconfig from Drover, through the balancer.
    kubeconfig: PathBuf,
}

fn create_cluster(ha: &Ha, display: &str) -> String {
    let (code, body) = ha.http(
        "POST",
        &format!("{MGMT}/clusters"),
        Some(&ha.admin),
        Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "spec": {"displayName": display}})),
    );
    assert_eq!(code, 201, "{body}");
    body["metadata"]["name"].as_str().unwrap().to_owned()
}

/// Import a simulated cluster through the balancer, as a user would.
fn import(ha: &Ha) -> Imported {
    let dir = ha.dir.path();
    let sim_kubeconfig = dir.join("sim.kubeconfig");
    let audit_log = dir.join("sim-audit.log");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "ha",
        "--nodes",
        "2",
    ])
    .arg("--kubeconfig-out")
    .arg(&sim_kubeconfig)
    .arg("--audit-log")
    .arg(&audit_log);
    let sim = Proc::spawn(cmd);
    sim.wait_for("serving at", Duration::from_secs(30));

    let cluster = create_cluster(ha, "ha");
    let (code, crt) = ha.http(
        "GET",
        &format!("{MGMT}/namespaces/{cluster}/clusterregistrationtokens/default-token"),
        Some(&ha.admin),
        None,
    );
    assert_eq!(code, 200, "{crt}");
    let manifest = crt["status"]["manifestUrl"].as_str().unwrap().to_owned();
    assert!(
        manifest.starts_with(&ha.url("/")),
        "the manifest is served through the balancer: {manifest}"
    );
    let token = crt["status"]["token"].as_str().unwrap().to_owned();
    let cache = dir.join("kube-cache");
    let script = format!(
        "set -o pipefail; curl -sfL --cacert '{}' '{manifest}' | kubectl --kubeconfig '{}' --cache-dir '{}' apply -f -",
        ha.ca.display(),
        sim_kubeconfig.display(),
        cache.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, sa_token, err) = ha.kubectl(
        &sim_kubeconfig,
        &["create", "token", "drover-agent", "-n", "drover-system"],
    );
    assert_eq!(code, 0, "{err}");
    let agent_kubeconfig = dir.join("agent.kubeconfig");
    let admin_kc = std::fs::read_to_string(&sim_kubeconfig).unwrap();
    let replaced: String = admin_kc
        .lines()
        .map(|l| match l.trim_start().strip_prefix("token:") {
            Some(_) => format!(
                "{}token: {}\n",
                &l[..l.len() - l.trim_start().len()],
                sa_token.trim()
            ),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&agent_kubeconfig, replaced).unwrap();

    let (code, yaml) = common::curl(
        &[
            "--cacert",
            &ha.ca_arg(),
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {}", ha.admin),
        ],
        &ha.url(&format!("{MGMT}/clusters/{cluster}/kubeconfig")),
    );
    assert_eq!(code, 200, "{yaml}");
    let kubeconfig = dir.join("admin.kubeconfig");
    std::fs::write(&kubeconfig, yaml).unwrap();
    Imported {
        cluster,
        token,
        agent_kubeconfig,
        sim,
        sim_kubeconfig,
        audit_log,
        kubeconfig,
    }
}

fn agent(ha: &Ha, imp: &Imported) -> Proc {
    let out = Command::new("sha256sum").arg(&ha.ca).output().unwrap();
    let checksum = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--server", &ha.url("")])
        .args(["--token", &imp.token, "--ca-checksum", &checksum])
        .arg("--kubeconfig")
        .arg(&imp.agent_kubeconfig)
        .env("DROVER_LOG", "info");
    Proc::spawn(cmd)
}

fn condition(cluster: &Value, type_: &str) -> String {
    common::condition(cluster, type_)
}

/// The replica holding the cluster's link, as the store records it.
fn link_holder(ha: &Ha, cluster: &str) -> Option<String> {
    ha.view()["links"][cluster]["replica"]
        .as_str()
        .map(str::to_owned)
}

/// Leases by name: (holder, generation).
fn leases(view: &Value) -> BTreeMap<String, (String, u64)> {
    view["leases"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                (
                    v["holder"].as_str().unwrap_or_default().to_owned(),
                    v["generation"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn live(view: &Value) -> BTreeSet<String> {
    view["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["live"] == true)
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

/// A proxied GET through the balancer; whether it answered 200.
fn proxied_ok(ha: &Ha, cluster: &str) -> bool {
    http(
        &ha.ca,
        &ha.url(&format!(
            "/k8s/clusters/{cluster}/api/v1/namespaces/default"
        )),
        "GET",
        Some(&ha.admin),
        None,
    )
    .is_some_and(|(code, body)| code == 200 && body["metadata"]["name"] == "default")
}

/// [`proxied_ok`], giving up after `secs` (a request the balancer sent to a
/// frozen replica hangs: no server can answer for a stopped process).
fn proxied_ok_in(ha: &Ha, cluster: &str, secs: u64) -> bool {
    let auth = format!("Authorization: Bearer {}", ha.admin);
    let secs = secs.to_string();
    try_curl(
        &["--max-time", &secs, "--cacert", &ha.ca_arg(), "-H", &auth],
        &ha.url(&format!(
            "/k8s/clusters/{cluster}/api/v1/namespaces/default"
        )),
    )
    .is_some_and(|(code, body)| code == 200 && body.contains("\"default\""))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Creates ClusterRoleTemplateBindings through the balancer until told to
/// stop; each one acknowledged (201) is remembered. Each binding is
/// projected into the cluster by whichever replica owns it.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<Vec<String>>>,
    task: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(ha: &Ha, cluster: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (ca, url, token) = (
            ha.ca.clone(),
            ha.url(&format!(
                "{MGMT}/namespaces/{cluster}/clusterroletemplatebindings"
            )),
            ha.admin.clone(),
        );
        let (s, a, f) = (stop.clone(), acked.clone(), failed.clone());
        let task = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::SeqCst) && n < 5_000 {
                n += 1;
                let name = format!("w-{n}");
                let body = json!({"apiVersion": "management.drover.io/v1", "kind": "ClusterRoleTemplateBinding",
                    "metadata": {"name": name},
                    "spec": {"groupName": format!("group-{n}"), "roleTemplateName": "cluster-member"}});
                match http(&ca, &url, "POST", Some(&token), Some(&body)) {
                    Some((201, _)) => a.lock().unwrap().push(name),
                    Some((code, answer)) => {
                        f.lock().unwrap().push(format!("{name}: {code} {answer}"))
                    }
                    None => f
                        .lock()
                        .unwrap()
                        .push(format!("{name}: no answer (the connection ended)")),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Writer {
            stop,
            acked,
            failed,
            task: Some(task),
        }
    }

    /// Stop; the names acknowledged and the attempts that failed.
    fn finish(mut self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.take().unwrap().join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (acked, failed)
    }
}

/// The writes Drover made to the cluster under a lease, in the order the
/// cluster's audit log has them: (replica, lease generation, what).
fn projection_writes(audit_log: &Path) -> Vec<(String, u64, String)> {
    let text = std::fs::read_to_string(audit_log).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .filter_map(|e| {
            let ua = e["userAgent"].as_str()?;
            // drover-server/VERSION (replica ID; lease GENERATION)
            let inner = ua
                .strip_prefix("drover-server/")?
                .split_once(" (replica ")?
                .1;
            let (replica, rest) = inner.split_once("; lease ")?;
            let generation = rest.trim_end_matches(')').parse().ok()?;
            let what = format!(
                "{} {}/{}",
                e["verb"].as_str().unwrap_or_default(),
                e["objectRef"]["resource"].as_str().unwrap_or_default(),
                e["objectRef"]["name"].as_str().unwrap_or_default()
            );
            Some((replica.to_owned(), generation, what))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(drover_pg),
    ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested"
)]
async fn three_replicas_behind_haproxy() {
    tokio::task::block_in_place(scenario_body);
}

fn scenario_body() {
    let rt = tokio::runtime::Handle::current();
    let mut ha = rt.block_on(Ha::start());
    let imp = import(&ha);
    let mut agent_proc = agent(&ha, &imp);
    for i in 0..IDLE_CLUSTERS {
        create_cluster(&ha, &format!("idle-{i}"));
    }
    wait(
        "the imported cluster Ready",
        Duration::from_secs(60),
        || (condition(&ha.cluster(&imp.cluster), "Ready") == "True").then_some(()),
    );

    // --- Any replica serves the cluster --------------------------------
    let holder = link_holder(&ha, &imp.cluster).expect("the link is recorded");
    let served: Vec<bool> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..75)
                        .map(|_| proxied_ok(&ha, &imp.cluster))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let ok = served.iter().filter(|b| **b).count();
    eprintln!(
        "proxied through the balancer: {ok}/{} answered 200",
        served.len()
    );
    assert_eq!(
        ok, 300,
        "every proxied request through the balancer succeeds"
    );
    for i in 0..REPLICAS {
        let via = if ha.replica_id(i) == holder {
            "its own link"
        } else {
            "the peer connection"
        };
        let got = http(
            &ha.ca,
            &ha.direct(
                i,
                &format!("/k8s/clusters/{}/api/v1/namespaces/default", imp.cluster),
            ),
            "GET",
            Some(&ha.admin),
            None,
        );
        assert!(
            got.as_ref()
                .is_some_and(|(c, b)| *c == 200 && b["metadata"]["name"] == "default"),
            "replica {i} asked directly serves the cluster through {via}: {got:?}"
        );
    }
    // Streams and upgrades, kubeconfig downloads and the UI's cluster page
    // work on every replica: logs -f, exec and the page go down whichever
    // replica holds the link.
    let (code, _, err) = ha.kubectl(
        &imp.kubeconfig,
        &["create", "deployment", "web", "--image=nginx"],
    );
    assert_eq!(code, 0, "{err}");
    let pod = wait("a web pod runs", Duration::from_secs(20), || {
        let (_, out, _) = ha.kubectl(
            &imp.kubeconfig,
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
    for i in 0..REPLICAS {
        let kc = ha.dir.path().join(format!("direct-{i}.kubeconfig"));
        let text = std::fs::read_to_string(&imp.kubeconfig).unwrap().replace(
            &format!("127.0.0.1:{}/", ha.lb),
            &format!("127.0.0.1:{}/", ha.ports[i]),
        );
        std::fs::write(&kc, text).unwrap();
        let (code, out, err) = ha.kubectl(&kc, &["exec", &pod, "--", "echo", "hi"]);
        assert_eq!(
            (code, out.trim()),
            (0, "hi"),
            "exec through replica {i}: {err}"
        );
        let mut logs = Proc::spawn(common::kubectl_cmd(
            &kc,
            &ha.dir.path().join("kube-cache"),
            &["logs", "-f", &pod, "--tail=1"],
        ));
        wait(
            &format!("logs -f through replica {i}"),
            Duration::from_secs(10),
            || (logs.lines.lock().unwrap().len() >= 2).then_some(()),
        );
        logs.kill();
        let (code, yaml) = common::curl(
            &[
                "--cacert",
                &ha.ca_arg(),
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {}", ha.admin),
            ],
            &ha.direct(i, &format!("{MGMT}/clusters/{}/kubeconfig", imp.cluster)),
        );
        assert_eq!(code, 200, "kubeconfig from replica {i}: {yaml}");
        assert!(
            yaml.contains(&ha.url(&format!("/k8s/clusters/{}", imp.cluster))),
            "{yaml}"
        );
        let (code, page) = common::curl(
            &[
                "--cacert",
                &ha.ca_arg(),
                "-H",
                &format!("Cookie: __Host-drover-session={}", ha.admin),
            ],
            &ha.direct(i, &format!("/dashboard/clusters/{}", imp.cluster)),
        );
        assert_eq!(code, 200, "the cluster page on replica {i}");
        assert!(
            page.contains("ha-node-0") && page.contains("ha-node-1"),
            "the nodes on replica {i}'s page: {page}"
        );
    }
    // The peer listener answers only replicas: a client without a peer
    // certificate is refused in the handshake.
    let peer_url = ha.view()["replicas"][0]["peerURL"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = Command::new("curl")
        .args(["-sS", "--insecure", "--max-time", "5"])
        .arg(format!(
            "{peer_url}/v1-peer/clusters/{}/api/v1/namespaces",
            imp.cluster
        ))
        .output()
        .unwrap();
    // curl 35 (handshake failed) or 56 (the server's certificate_required
    // alert, read after a TLS 1.3 handshake): refused for want of a
    // client certificate, not for anything else.
    assert!(
        matches!(refused.status.code(), Some(35 | 56)),
        "a client without a peer certificate: {:?} {}{}",
        refused.status.code(),
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );

    // --- A watch ends cleanly when the link goes, and watching again works
    {
        let holder = link_holder(&ha, &imp.cluster).unwrap();
        let h = ha.index_of(&holder);
        let other = (h + 1) % REPLICAS;
        // curl judges the end of the stream: exit 0 only for a finished
        // response (a reset is exit 92 over HTTP/2, 18 or 56 over 1.1).
        let mut watch = Command::new("curl");
        watch
            .args(["-sS", "--http2", "-N", "--cacert", &ha.ca_arg()])
            .args(["-H", &format!("Authorization: Bearer {}", ha.admin)])
            .arg(ha.direct(
                other,
                &format!(
                    "/k8s/clusters/{}/api/v1/namespaces/default/pods?watch=true",
                    imp.cluster
                ),
            ));
        let mut curl_watch = Proc::spawn(watch);
        let mut kubectl_watch = Proc::spawn(common::kubectl_cmd(
            &imp.kubeconfig,
            &ha.dir.path().join("kube-cache"),
            &["get", "pods", "-n", "default", "-w"],
        ));
        std::thread::sleep(Duration::from_secs(1)); // both streams open
        let killed = Instant::now();
        ha.replicas[h].as_mut().unwrap().child.kill().unwrap();
        let _ = ha.replicas[h].as_mut().unwrap().child.wait();
        ha.replicas[h] = None;
        curl_watch.ends_within("the proxied watch", Duration::from_secs(15));
        let code = curl_watch.child.wait().unwrap().code();
        eprintln!(
            "a watch on another replica ended {:?} after its link's replica was killed (curl exit {code:?})",
            killed.elapsed()
        );
        assert_eq!(
            code,
            Some(0),
            "the watch ended as a finished response: {}",
            curl_watch.log()
        );
        kubectl_watch.ends_within("kubectl get -w", Duration::from_secs(15));
        // Watching again, through the balancer, sees what happens next.
        wait(
            "the cluster reachable again",
            Duration::from_secs(10),
            || proxied_ok(&ha, &imp.cluster).then_some(()),
        );
        let mut again = Proc::spawn(common::kubectl_cmd(
            &imp.kubeconfig,
            &ha.dir.path().join("kube-cache"),
            &[
                "get",
                "pods",
                "-n",
                "default",
                "-w",
                "--output-watch-events",
            ],
        ));
        let (code, _, err) = wait(
            "kubectl run through the balancer",
            Duration::from_secs(10),
            || {
                let r = ha.kubectl(
                    &imp.kubeconfig,
                    &["run", "after-kill", "-n", "default", "--image=nginx"],
                );
                (r.0 == 0).then_some(r)
            },
        );
        assert_eq!(code, 0, "{err}");
        again.wait_for("after-kill", Duration::from_secs(15));
        eprintln!(
            "watching again saw the pod made after the kill, {:?} after the kill",
            killed.elapsed()
        );
        again.kill();
        ha.start_replica(h);
        ha.wait_balanced();
    }

    // --- kill -9 of each replica in turn ---------------------------------
    let writer = Writer::start(&ha, &imp.cluster);
    let mut kubectl_back = Vec::new();
    let mut new_owner = Vec::new();
    for round in 0..9 {
        let victim = round % REPLICAS;
        let id = ha.replica_id(victim);
        let before = ha.view();
        let held: Vec<String> = leases(&before)
            .into_iter()
            .filter(|(_, (holder, _))| *holder == id)
            .map(|(name, _)| name)
            .collect();
        let killed = Instant::now();
        Command::new("kill")
            .args(["-KILL", &ha.pid(victim)])
            .status()
            .unwrap();
        let _ = ha.replicas[victim].as_mut().unwrap().child.wait();
        ha.replicas[victim] = None;
        // kubectl through the balancer.
        let mut last = String::new();
        loop {
            let (code, out, err) = ha.kubectl(
                &imp.kubeconfig,
                &["get", "namespace", "default", "-o", "name"],
            );
            if code == 0 && out.trim() == "namespace/default" {
                break;
            }
            last = format!(
                "{last}\n{:?}: exit {code}, {out:?}, {err}",
                killed.elapsed()
            );
            assert!(
                killed.elapsed() < Duration::from_secs(5),
                "kubectl did not work again within 5 s:{last}"
            );
        }
        kubectl_back.push(killed.elapsed());
        // Every lease the victim held has a new, live holder.
        wait(
            "the killed replica's leases move",
            Duration::from_secs(10),
            || {
                let view = ha.view();
                let (now, alive) = (leases(&view), live(&view));
                held.iter()
                    .all(|name| {
                        now.get(name)
                            .is_some_and(|(h, _)| *h != id && alive.contains(h))
                    })
                    .then_some(())
            },
        );
        let moved = killed.elapsed();
        if !held.is_empty() {
            new_owner.push(moved);
        }
        eprintln!(
            "kill -9 #{round} (replica {victim}, {} leases): kubectl again after {:?}, new owners after {moved:?}",
            held.len(),
            kubectl_back.last().unwrap()
        );
        ha.start_replica(victim);
        ha.wait_balanced();
    }
    let (acked, failed) = writer.finish();
    kubectl_back.sort();
    new_owner.sort();
    eprintln!(
        "kubectl works again: p50 {:?}, max {:?}; new owners: p50 {:?}, max {:?}",
        percentile(&kubectl_back, 0.5),
        kubectl_back.last().unwrap(),
        percentile(&new_owner, 0.5),
        new_owner.last().unwrap()
    );
    assert!(*new_owner.last().unwrap() <= Duration::from_secs(10));
    // No acknowledged write is lost.
    let (code, list) = ha.http(
        "GET",
        &format!(
            "{MGMT}/namespaces/{}/clusterroletemplatebindings",
            imp.cluster
        ),
        Some(&ha.admin),
        None,
    );
    assert_eq!(code, 200, "{list}");
    let stored: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    eprintln!(
        "writer: {} acknowledged, {} refused or failed {failed:?}, {} lost",
        acked.len(),
        failed.len(),
        lost.len()
    );
    assert!(acked.len() > 50, "the writer made progress");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // Each acknowledged binding reaches the cluster.
    let last = acked.last().unwrap().trim_start_matches("w-").to_owned();
    wait(
        "the last binding is projected",
        Duration::from_secs(30),
        || {
            let (code, out, _) = ha.kubectl(
                &imp.sim_kubeconfig,
                &[
                    "get",
                    "clusterrolebindings",
                    "-o",
                    "jsonpath={.items[*].subjects[*].name}",
                ],
            );
            let subject = format!("group-{last}");
            (code == 0 && out.split_whitespace().any(|s| s == subject)).then_some(())
        },
    );

    // --- No two replicas write the projection at once ----------------------
    let writes = projection_writes(&imp.audit_log);
    let mut by_generation: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut highest = 0;
    for (i, (replica, generation, what)) in writes.iter().enumerate() {
        by_generation
            .entry(*generation)
            .or_default()
            .insert(replica.clone());
        assert!(
            *generation >= highest,
            "write #{i} ({what}) by {replica} under lease {generation} after a write under lease {highest}"
        );
        highest = *generation;
    }
    eprintln!(
        "projection: {} writes under {} lease generations, in order, one replica each",
        writes.len(),
        by_generation.len()
    );
    assert!(
        by_generation.len() >= 2,
        "the projection changed hands: {by_generation:?}"
    );
    for (generation, writers) in &by_generation {
        assert_eq!(
            writers.len(),
            1,
            "lease {generation} written by {writers:?}"
        );
    }

    // --- SIGSTOP of the link's holder for 45 s ----------------------------
    {
        let holder = link_holder(&ha, &imp.cluster).unwrap();
        let h = ha.index_of(&holder);
        let stopped = Instant::now();
        Command::new("kill")
            .args(["-STOP", &ha.pid(h)])
            .status()
            .unwrap();
        wait("proxied requests recover", Duration::from_secs(10), || {
            proxied_ok_in(&ha, &imp.cluster, 3).then_some(())
        });
        let recovered = stopped.elapsed();
        eprintln!(
            "holder frozen: proxied requests through the balancer recover after {recovered:?}"
        );
        let mut false_during = 0;
        while stopped.elapsed() < Duration::from_secs(45) {
            if condition(&ha.cluster(&imp.cluster), "Connected") == "False" {
                false_during += 1;
            }
            assert!(
                proxied_ok_in(&ha, &imp.cluster, 3),
                "a proxied request failed after recovery"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Command::new("kill")
            .args(["-CONT", &ha.pid(h)])
            .status()
            .unwrap();
        let resumed = Instant::now();
        while resumed.elapsed() < Duration::from_secs(15) {
            let c = ha.cluster(&imp.cluster);
            assert_eq!(
                condition(&c, "Connected"),
                "True",
                "false Connected=False after SIGCONT: {c}"
            );
            assert!(
                proxied_ok_in(&ha, &imp.cluster, 3),
                "a proxied request failed after SIGCONT"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("after SIGCONT: Connected stayed True for 15 s (Connected=False seen {false_during} times while frozen)");
        ha.wait_balanced();
    }

    // --- SIGTERM drains without a failed request ---------------------------
    {
        let holder = link_holder(&ha, &imp.cluster).unwrap();
        let h = ha.index_of(&holder);
        let stop = Arc::new(AtomicBool::new(false));
        let draining = ha.replicas[h].take().unwrap();
        let (requests, failures) = std::thread::scope(|s| {
            let workers: Vec<_> = (0..3)
                .map(|w| {
                    let stop = stop.clone();
                    let ha = &ha;
                    let cluster = imp.cluster.clone();
                    s.spawn(move || {
                        let (mut n, mut failed) = (0, Vec::new());
                        let path = if w == 0 {
                            format!("{MGMT}/clusters/{cluster}")
                        } else {
                            format!("/k8s/clusters/{cluster}/api/v1/namespaces/default")
                        };
                        while !stop.load(Ordering::SeqCst) {
                            n += 1;
                            if let Err(e) = get_checked(ha, &path) {
                                failed.push(format!("{path} #{n}: {e}"));
                            }
                        }
                        (n, failed)
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs(1));
            let (status, log) = draining.stop();
            assert!(status.success(), "the drained replica exits 0:\n{log}");
            assert!(log.contains("draining"), "{log}");
            std::thread::sleep(Duration::from_secs(3));
            stop.store(true, Ordering::SeqCst);
            let results: Vec<(usize, Vec<String>)> =
                workers.into_iter().map(|w| w.join().unwrap()).collect();
            let requests: usize = results.iter().map(|r| r.0).sum();
            let failures: Vec<String> = results.into_iter().flat_map(|r| r.1).collect();
            (requests, failures)
        });
        eprintln!(
            "SIGTERM of the link's holder: {requests} requests through the balancer, {} failed",
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "requests failed during the drain: {failures:?}"
        );
        ha.start_replica(h);
        ha.wait_balanced();
    }

    // --- Server and agent both killed: Connected=False within 10 s ----------
    {
        wait("connected again", Duration::from_secs(30), || {
            (condition(&ha.cluster(&imp.cluster), "Connected") == "True").then_some(())
        });
        let holder = link_holder(&ha, &imp.cluster).unwrap();
        let h = ha.index_of(&holder);
        let killed = Instant::now();
        agent_proc.kill();
        Command::new("kill")
            .args(["-KILL", &ha.pid(h)])
            .status()
            .unwrap();
        let _ = ha.replicas[h].as_mut().unwrap().child.wait();
        ha.replicas[h] = None;
        ha.start_replica(h);
        let deadline = killed + Duration::from_secs(10);
        loop {
            let c = ha.cluster(&imp.cluster);
            if condition(&c, "Connected") == "False" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Connected=False not within 10 s of the kill: {c}\nview: {}",
                ha.view()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "server and agent killed: Connected=False after {:?}",
            killed.elapsed()
        );
        agent_proc = agent(&ha, &imp);
        wait("connected again", Duration::from_secs(30), || {
            (condition(&ha.cluster(&imp.cluster), "Connected") == "True").then_some(())
        });
    }
    drop(agent_proc);
    drop(imp.sim);
}

/// The one-replica case the issue started from: server and agent both die,
/// only the server comes back. The cluster must not stay Connected.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(drover_pg),
    ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested"
)]
async fn an_alert_is_sent_once_when_the_replica_sending_it_dies() {
    tokio::task::block_in_place(alert_failover_body);
}

/// One replica evaluates a cluster's rules (the holder of its lease): a
/// firing alert is sent once; when that replica is killed, the one taking
/// the lease over carries on from the rule's status, sending nothing
/// twice, and sends the resolution once.
fn alert_failover_body() {
    let rt = tokio::runtime::Handle::current();
    let mut ha = rt.block_on(Ha::start());
    let imp = import(&ha);
    let mut agent_proc = agent(&ha, &imp);
    wait(
        "the imported cluster Ready",
        Duration::from_secs(60),
        || (condition(&ha.cluster(&imp.cluster), "Ready") == "True").then_some(()),
    );
    let hook = common::webhook::Receiver::start();
    let (code, body) = ha.http(
        "POST",
        &format!("{MGMT}/notifiers"),
        Some(&ha.admin),
        Some(
            &json!({"apiVersion": "management.drover.io/v1", "kind": "Notifier",
            "metadata": {"name": "hook"}, "spec": {"webhook": {"url": hook.url()}}}),
        ),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = ha.http(
        "POST",
        &format!("{MGMT}/namespaces/{}/alertrules", imp.cluster),
        Some(&ha.admin),
        Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "AlertRule",
            "metadata": {"name": "down"},
            "spec": {"condition": {"clusterDisconnected": {"forSeconds": 0}}, "notifiers": ["hook"],
                     "groupWaitSeconds": 1, "groupIntervalSeconds": 3, "repeatIntervalSeconds": 3600}})),
    );
    assert_eq!(code, 201, "{body}");

    agent_proc.kill();
    wait("a firing message", Duration::from_secs(60), || {
        hook.first("down", "firing")
    });
    // It was recorded before it went out, and its result after.
    wait("the delivery recorded", Duration::from_secs(20), || {
        let (_, rule) = ha.http(
            "GET",
            &format!("{MGMT}/namespaces/{}/alertrules/down", imp.cluster),
            Some(&ha.admin),
            None,
        );
        (rule["status"]["lastNotification"]["deliveries"][0]["result"] == "Delivered").then_some(())
    });

    // The replica evaluating the cluster's rules dies.
    let lease = format!("clusters/{}", imp.cluster);
    let holder = leases(&ha.view())[&lease].0.clone();
    let victim = ha.index_of(&holder);
    Command::new("kill")
        .args(["-KILL", &ha.pid(victim)])
        .status()
        .unwrap();
    let _ = ha.replicas[victim].as_mut().unwrap().child.wait();
    ha.replicas[victim] = None;
    wait(
        "the cluster's lease taken over",
        Duration::from_secs(20),
        || {
            let view = ha.view();
            let (now, alive) = (leases(&view), live(&view));
            now.get(&lease)
                .is_some_and(|(h, _)| *h != holder && alive.contains(h))
                .then_some(())
        },
    );
    // The new holder carries on: nothing is sent again (the alert is
    // unchanged and its repeat interval an hour away).
    let moved = Instant::now();
    while moved.elapsed() < Duration::from_secs(8) {
        assert_eq!(
            hook.messages("down", "firing").len(),
            1,
            "the firing message was sent again after the takeover"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The agent comes back: resolved, once.
    agent_proc = agent(&ha, &imp);
    wait("a resolved message", Duration::from_secs(60), || {
        hook.first("down", "resolved")
    });
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        hook.messages("down", "resolved").len(),
        1,
        "{:?}",
        hook.all()
    );
    assert_eq!(hook.messages("down", "firing").len(), 1, "{:?}", hook.all());
    agent_proc.kill();
}

#[test]
fn a_restarted_server_without_its_agent_shows_the_cluster_disconnected() {
    let mut m = common::Mgmt::start(&[]);
    let admin = m.admin();
    let sim = common::SimProc::start(m.dir.path(), "lonely", 1);
    let imp = common::import(&m, &admin, &sim, "lonely");
    let checksum = common::ca_checksum(&m);
    let mut agent = common::agent(&m, &imp, &checksum);
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(60));
    // The server first, so that its record of the link stays behind.
    let killed = Instant::now();
    m.server.child.kill().unwrap();
    let _ = m.server.child.wait();
    agent.kill();
    m.restart_killed();
    let admin = m.admin();
    let after = disconnected_within_10s(&m, &admin, &imp.cluster, killed, "the kill");
    eprintln!("Connected=False {after:?} after the kill");
}

/// Wait until the cluster shows `Connected=False`, failing if that takes
/// 10 s from `since`; returns how long it took.
fn disconnected_within_10s(
    m: &common::Mgmt,
    admin: &str,
    cluster: &str,
    since: Instant,
    what: &str,
) -> Duration {
    let deadline = since + Duration::from_secs(10);
    loop {
        let c = common::cluster(m, admin, cluster);
        if common::condition(&c, "Connected") == "False" {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "still connected 10 s after {what}: {c}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A frozen agent (its process stopped, its connection open) shows as
/// `Connected=False` within 10 s, and as connected again once it resumes.
#[test]
fn a_frozen_agent_shows_the_cluster_disconnected() {
    let m = common::Mgmt::start(&[]);
    let admin = m.admin();
    let sim = common::SimProc::start(m.dir.path(), "frozen", 1);
    let imp = common::import(&m, &admin, &sim, "frozen");
    let checksum = common::ca_checksum(&m);
    let agent = common::agent(&m, &imp, &checksum);
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(60));
    let pid = agent.child.id().to_string();
    let stopped = Instant::now();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let after = disconnected_within_10s(&m, &admin, &imp.cluster, stopped, "the agent froze");
    eprintln!("agent frozen: Connected=False after {after:?}");
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(30));
    drop(agent);
}
