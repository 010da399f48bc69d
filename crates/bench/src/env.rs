//! The pieces a benchmark runs: `drover server` in its own process (this
//! binary, re-executed), simulated clusters in this process, agents in this
//! process or in their own, and the server's resident memory and CPU time
//! read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::BenchError;

/// The admin password of benchmark servers.
pub const PASSWORD: &str = "drover bench admin password";

/// This process's limit on open files (from `/proc`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU time (user + system) of a process, in seconds. Linux reports clock
/// ticks of 1/100 s to user space on every common architecture.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// `drover server` running for a benchmark; killed on drop.
pub struct Server {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
    /// Its CA.
    pub ca_pem: String,
    /// An HTTP client trusting its CA.
    pub http: reqwest::Client,
    /// An admin token.
    pub token: String,
    /// The datastore URL given, if not the embedded one.
    pub datastore: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reqwest client over rustls (HTTP/2 where offered).
pub fn client(ca_pem: Option<&str>, insecure: bool) -> Result<reqwest::Client, BenchError> {
    client_with_pool(ca_pem, insecure, 256)
}

/// [`client`] keeping at most `idle` idle connections per host (the sims'
/// client talks to a thousand hosts).
pub fn client_with_pool(
    ca_pem: Option<&str>,
    insecure: bool,
    idle: usize,
) -> Result<reqwest::Client, BenchError> {
    let mut tls = drover_net::client::client_config(ca_pem, insecure).map_err(BenchError::Setup)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(idle)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| BenchError::Setup(format!("HTTP client: {e}")))
}

/// How to start a [`Server`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// The datastore URL (default: embedded SQLite in the data directory).
    pub datastore: Option<String>,
    /// The data directory (default: a temporary one).
    pub data_dir: Option<PathBuf>,
    /// The listen address (default: a free port on 127.0.0.1).
    pub listen: Option<String>,
    /// The admin password (default: [`PASSWORD`]).
    pub password: Option<String>,
    /// More flags for `drover server`.
    pub extra: Vec<String>,
}

impl Server {
    /// Start `drover server` on a free port and log in as admin.
    pub async fn start(datastore: Option<&str>) -> Result<Server, BenchError> {
        Self::start_with(ServerOptions {
            datastore: datastore.map(str::to_owned),
            ..Default::default()
        })
        .await
    }

    /// Start `drover server` as `opts` say and log in as admin.
    pub async fn start_with(opts: ServerOptions) -> Result<Server, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("drover-bench-")
            .tempdir()
            .map_err(|e| BenchError::Setup(format!("temp dir: {e}")))?;
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let listen = opts
            .listen
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let password = opts.password.as_deref().unwrap_or(PASSWORD);
        let datastore = opts.datastore.as_deref();
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::Setup(format!("cannot find this binary: {e}")))?;
        let mut cmd = Command::new(exe);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(&listen)
            .env("DROVER_BOOTSTRAP_PASSWORD", password)
            .env("DROVER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log"))
                    .map_err(|e| BenchError::Setup(format!("server log: {e}")))?,
            ));
        if let Some(ds) = datastore {
            cmd.arg("--datastore").arg(ds);
        }
        cmd.args(&opts.extra);
        let mut child = cmd
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start drover server: {e}")))?;
        let port = listen.rsplit(':').next().unwrap_or_default();
        let url = format!("https://127.0.0.1:{port}");
        let insecure = client(None, true)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let ca_pem = loop {
            if let Ok(r) = insecure.get(format!("{url}/cacerts")).send().await {
                if r.status().is_success() {
                    break r.text().await.unwrap_or_default();
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                return Err(BenchError::Setup(format!(
                    "drover server exited ({status}):\n{}",
                    log.trim_end()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(BenchError::Setup(
                    "drover server did not start in 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let http = client(Some(&ca_pem), false)?;
        let login: Value = http
            .post(format!("{url}/v1-public/login"))
            .json(&json!({"username": "admin", "password": password, "ttlSeconds": 86400}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| BenchError::Setup(format!("login: {e}")))?
            .json()
            .await
            .map_err(|e| BenchError::Setup(format!("login: {e}")))?;
        let token = login["token"].as_str().unwrap_or_default().to_owned();
        Ok(Server {
            child,
            url,
            data_dir,
            _dir: dir,
            ca_pem,
            http,
            token,
            datastore: datastore.map(str::to_owned),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the server and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A JSON request as admin; non-2xx is an error.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, BenchError> {
        let resp = self.send(method, path, body).await?;
        Self::json(path, resp).await
    }

    /// A request as admin; the answer whatever its status (watches and
    /// streams are read as they come).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, BenchError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send()
            .await
            .map_err(|e| BenchError::Run(format!("{path}: {e}")))
    }

    /// An answer's JSON; non-2xx is an error.
    async fn json(path: &str, resp: reqwest::Response) -> Result<Value, BenchError> {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(BenchError::Run(format!("{path}: {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| BenchError::Run(format!("{path}: {e}")))
    }

    /// Bytes the datastore takes (SQLite files, or the PostgreSQL database).
    pub async fn datastore_bytes(&self) -> u64 {
        match &self.datastore {
            Some(url) if url.starts_with("postgres") => {
                use sqlx::Connection;
                let Ok(mut conn) = sqlx::PgConnection::connect(url).await else {
                    return 0;
                };
                sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut conn)
                    .await
                    .map(|n| n as u64)
                    .unwrap_or(0)
            }
            _ => ["state.db", "state.db-wal"]
                .iter()
                .filter_map(|f| std::fs::metadata(self.data_dir.join(f)).ok())
                .map(|m| m.len())
                .sum(),
        }
    }
}

/// A temporary directory for sims and agent kubeconfigs: in memory
/// (`/dev/shm`) where there is one.
pub fn work_dir(prefix: &str) -> Result<tempfile::TempDir, BenchError> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = b.tempdir_in(shm) {
            return Ok(d);
        }
    }
    b.tempdir()
        .map_err(|e| BenchError::Setup(format!("temp dir: {e}")))
}

/// A cluster imported through the real path: its sim (in this process) and
/// what its agent needs.
pub struct Imported {
    /// The Drover cluster id.
    pub cluster: String,
    /// The simulated cluster.
    pub sim: drover_sim::Sim,
    /// The registration token.
    pub registration: String,
    /// A kubeconfig with the agent's service-account token.
    pub agent_kubeconfig: PathBuf,
}

/// Where each kind of the import manifest is created.
fn collection(obj: &Value) -> Option<String> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    Some(match obj["kind"].as_str()? {
        "Namespace" => "/api/v1/namespaces".into(),
        "ServiceAccount" => format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        "Secret" => format!("/api/v1/namespaces/{ns}/secrets"),
        "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
        "ClusterRoleBinding" => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
        "Deployment" => format!("/apis/apps/v1/namespaces/{ns}/deployments"),
        _ => return None,
    })
}

/// Start a sim with `nodes` nodes, create a Drover cluster, fetch its import
/// manifest from the server and create every object of it in the sim (what
/// `kubectl apply` does), then issue the agent's token.
pub async fn import(
    server: &Server,
    sims_http: &reqwest::Client,
    dir: &Path,
    name: &str,
    nodes: usize,
    heartbeat_seconds: u64,
) -> Result<Imported, BenchError> {
    // The sims stand in for clusters; their stores live in `dir`, which
    // [`work_dir`] puts in memory, so a thousand of them do not measure the
    // disk.
    let sim_dir = dir.join(format!("{name}.sim"));
    std::fs::create_dir_all(&sim_dir)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", sim_dir.display())))?;
    let sim = drover_sim::Sim::start(&drover_sim::SimArgs {
        listen: "127.0.0.1:0".parse().expect("an address"),
        name: name.to_owned(),
        nodes,
        k8s_version: drover_sim::DEFAULT_K8S_VERSION.to_owned(),
        kubeconfig_out: None,
        data_dir: Some(sim_dir),
        heartbeat_seconds,
        node_flap: false,
        audit_log: None,
    })
    .await
    .map_err(|e| BenchError::Setup(format!("sim {name}: {e}")))?;
    // Named, so that a create the HTTP client retried after the server
    // had done it (an HTTP/2 stream reset under load) finds its cluster.
    let path = "/apis/management.drover.io/v1/clusters";
    let body = json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster",
        "metadata": {"name": name}, "spec": {"displayName": name}});
    let created = server
        .send(reqwest::Method::POST, path, Some(&body))
        .await?;
    let c = if created.status() == reqwest::StatusCode::CONFLICT {
        server
            .call(reqwest::Method::GET, &format!("{path}/{name}"), None)
            .await?
    } else {
        Server::json(path, created).await?
    };
    let cluster = c["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let crt = server
        .call(
            reqwest::Method::GET,
            &format!("/apis/management.drover.io/v1/namespaces/{cluster}/clusterregistrationtokens/default-token"),
            None,
        )
        .await?;
    let registration = crt["status"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let manifest = server
        .http
        .get(crt["status"]["manifestUrl"].as_str().unwrap_or_default())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| BenchError::Run(format!("manifest: {e}")))?
        .text()
        .await
        .map_err(|e| BenchError::Run(format!("manifest: {e}")))?;
    let sim_call = |method: reqwest::Method, path: String, body: Value| {
        sims_http
            .request(method, format!("{}{path}", sim.url))
            .bearer_auth(&sim.admin_token)
            .json(&body)
            .send()
    };
    for doc in yaml_serde::Deserializer::from_str(&manifest) {
        let obj: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| BenchError::Run(format!("manifest YAML: {e}")))?;
        if let Some(path) = collection(&obj) {
            let r = sim_call(reqwest::Method::POST, path.clone(), obj)
                .await
                .map_err(|e| BenchError::Run(format!("apply {path}: {e}")))?;
            if !r.status().is_success() {
                return Err(BenchError::Run(format!("apply {path}: {}", r.status())));
            }
        }
    }
    let token: Value = sim_call(
        reqwest::Method::POST,
        "/api/v1/namespaces/drover-system/serviceaccounts/drover-agent/token".into(),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}}),
    )
    .await
    .map_err(|e| BenchError::Run(format!("token request: {e}")))?
    .json()
    .await
    .map_err(|e| BenchError::Run(format!("token request: {e}")))?;
    let sa_token = token["status"]["token"].as_str().unwrap_or_default();
    let kubeconfig = sim.kubeconfig().replace(&sim.admin_token, sa_token);
    let agent_kubeconfig = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&agent_kubeconfig, kubeconfig)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", agent_kubeconfig.display())))?;
    Ok(Imported {
        cluster,
        sim,
        registration,
        agent_kubeconfig,
    })
}

/// Wait until every cluster in `names` is Active (or `timeout` passes);
/// each one's state at the end.
pub async fn wait_active(
    server: &Server,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<(String, &'static str)>, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = server
            .call(
                reqwest::Method::GET,
                "/apis/management.drover.io/v1/clusters",
                None,
            )
            .await?;
        let states: Vec<(String, &'static str)> = names
            .iter()
            .map(|name| {
                let state = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["metadata"]["name"] == name.as_str())
                    .map(drover_core::api::cluster_state)
                    .unwrap_or("Pending");
                (name.clone(), state)
            })
            .collect();
        if states.iter().all(|(_, s)| *s == "Active") || Instant::now() > deadline {
            return Ok(states);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `drover agent` arguments for an imported cluster.
pub fn agent_args(server: &Server, imp: &Imported) -> drover_agent::AgentArgs {
    use sha2::{Digest, Sha256};
    drover_agent::AgentArgs {
        server: server.url.parse().expect("a URL"),
        token: imp.registration.clone(),
        ca_checksum: hex::encode(Sha256::digest(server.ca_pem.as_bytes())),
        kubeconfig: Some(imp.agent_kubeconfig.clone()),
        trust_secret: None,
    }
}

/// A child process killed when dropped, so a failed benchmark leaves none
/// behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run an agent in its own process (this binary, re-executed).
pub fn agent_process(args: &drover_agent::AgentArgs) -> Result<KillOnDrop, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Setup(format!("cannot find this binary: {e}")))?;
    Command::new(exe)
        .args([
            "agent",
            "--server",
            args.server.as_str(),
            "--token",
            &args.token,
        ])
        .args(["--ca-checksum", &args.ca_checksum])
        .arg("--kubeconfig")
        .arg(args.kubeconfig.as_ref().expect("set by agent_args"))
        .env("DROVER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .map_err(|e| BenchError::Setup(format!("cannot start drover agent: {e}")))
}

/// The events of a watch response, one JSON object per line.
pub fn watch_events(resp: reqwest::Response) -> impl futures::Stream<Item = Value> + Send {
    drover_core::jsonl::values(resp.bytes_stream(), 64 * 1024 * 1024)
}

/// Percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The test directory's configuration and generator, shared with the tests
/// (`crates/drover/tests/fixtures`).
const SLAPD_CONF: &str = include_str!("../../drover/tests/fixtures/slapd.conf");
const LDIF_GENERATOR: &str = include_str!("../../drover/tests/fixtures/gen.py");

/// A running OpenLDAP `slapd` (Debian's) with the test directory — 1,000
/// users and 1,100 groups, nested groups, a locked user; service account
/// `cn=readonly,dc=example,dc=org` — on two free 127.0.0.1 ports, LDAP
/// (and StartTLS) and LDAPS with a CA made here; stopped on drop. Needs
/// `slapd`, `slapadd` and `python3`.
pub struct Slapd {
    dir: tempfile::TempDir,
    _child: KillOnDrop,
    /// The LDAP port.
    pub port: u16,
    /// The LDAPS port.
    pub ldaps_port: u16,
    /// The CA that signs its certificate (for 127.0.0.1 and localhost).
    pub ca_pem: String,
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<(), BenchError> {
    let out = cmd
        .output()
        .map_err(|e| BenchError::Setup(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl Slapd {
    /// Generate the directory and start slapd (from /usr/sbin).
    pub fn start() -> Result<Slapd, BenchError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| BenchError::Setup(format!("{what}: {e}"));
        let dir = tempfile::tempdir().map_err(|e| setup("temp dir", &e))?;
        let d = dir.path();
        std::fs::create_dir(d.join("db")).map_err(|e| setup("db", &e))?;
        let ca = drover_net::pki::generate_ca(30).map_err(|e| setup("CA", &e))?;
        let serving = drover_net::pki::generate_serving(
            &ca,
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
            30,
        )
        .map_err(|e| setup("certificate", &e))?;
        let conf = SLAPD_CONF.replace("@DIR@", &d.display().to_string());
        for (file, text) in [
            ("ca.pem", ca.cert_pem.as_str()),
            ("server.pem", serving.cert_pem.as_str()),
            ("server.key", serving.key_pem.as_str()),
            ("gen.py", LDIF_GENERATOR),
            ("slapd.conf", conf.as_str()),
        ] {
            std::fs::write(d.join(file), text).map_err(|e| setup(file, &e))?;
        }
        run_tool(
            Command::new("python3")
                .arg(d.join("gen.py"))
                .arg("-o")
                .arg(d.join("data.ldif")),
            "python3 gen.py",
        )?;
        run_tool(
            Command::new("/usr/sbin/slapadd")
                .args(["-q", "-f"])
                .arg(d.join("slapd.conf"))
                .arg("-l")
                .arg(d.join("data.ldif")),
            "slapadd",
        )?;
        let (port, ldaps_port) = (free_port(), free_port());
        let log = std::fs::File::create(d.join("slapd.log")).map_err(|e| setup("log", &e))?;
        let err = log.try_clone().map_err(|e| setup("log", &e))?;
        // -d keeps it in the foreground: the child is the daemon.
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .args([
                "-h",
                &format!("ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/"),
                "-d",
                "none",
            ])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| setup("/usr/sbin/slapd", &e))?;
        let slapd = Slapd {
            dir,
            _child: KillOnDrop(child),
            port,
            ldaps_port,
            ca_pem: ca.cert_pem,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", ldaps_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(slapd.dir.path().join("slapd.log")).unwrap_or_default();
                return Err(BenchError::Setup(format!(
                    "slapd did not listen within 15 s: {log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(slapd)
    }

    /// Change the directory as its root, with an LDIF for `ldapmodify`.
    pub fn modify(&self, ldif: &str) -> Result<(), BenchError> {
        use std::io::Write;
        let mut child = Command::new("ldapmodify")
            .args([
                "-x",
                "-H",
                &format!("ldap://127.0.0.1:{}", self.port),
                "-D",
                "cn=admin,dc=example,dc=org",
                "-w",
                "admin-password",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Setup(format!("ldapmodify: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ldif.as_bytes())
                .map_err(|e| BenchError::Run(format!("ldapmodify: {e}")))?;
        }
        let status = child
            .wait()
            .map_err(|e| BenchError::Run(format!("ldapmodify: {e}")))?;
        if !status.success() {
            return Err(BenchError::Run(format!("ldapmodify failed: {status}")));
        }
        Ok(())
    }
}
