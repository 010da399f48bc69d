//! Helpers for end-to-end tests: run the real `drover` binary in a temp dir,
//! talk to it with the real `curl`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod directory;
pub mod webhook;

pub const BIN: &str = env!("CARGO_BIN_EXE_drover");

/// A free 127.0.0.1 port (released before use; the window is small).
pub use drover_bench::env::free_port;

/// A running `drover server`; killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Everything the server wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Start `drover server` with extra args and env, and wait until it
    /// accepts connections.
    pub fn start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_on(free_port(), data_dir, extra, env)
    }

    /// [`Server::start`] on a given port (a restart keeps its URL).
    pub fn start_on(port: u16, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env_remove("DROVER_BOOTSTRAP_PASSWORD")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            child,
            port,
            stderr,
            reader: Some(reader),
        };
        server.wait_ready();
        server
    }

    /// Wait until the server says it is serving (it binds its port before
    /// opening the datastore, so an open port alone is not enough).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        while !self.log().contains("drover server listening")
            || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
        {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100)); // the last lines
                panic!("server exited ({status}); stderr:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// No process: a name for a server reached at `port` through something
    /// else (a load balancer in front of replicas the test holds).
    pub fn elsewhere(port: u16) -> Server {
        Server {
            child: Command::new("true").spawn().unwrap(),
            port,
            stderr: Arc::default(),
            reader: None,
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGTERM, then wait for the exit; returns the status and all of stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run curl; returns (HTTP status, body).
pub fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// Fetch `/cacerts` without verification (as a first contact would) and save
/// it as `ca.pem` in `dir`.
pub fn save_ca(server: &Server, dir: &Path) -> (PathBuf, String) {
    let (code, pem) = curl(&["--insecure"], &server.url("/cacerts"));
    assert_eq!(code, 200);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let path = dir.join("ca.pem");
    std::fs::write(&path, &pem).unwrap();
    (path, pem)
}

/// The password `drover server` printed on its first start.
pub fn printed_password(server: &Server) -> Option<String> {
    let log = server.stderr.lock().unwrap();
    let i = log
        .iter()
        .position(|l| l.contains("shown only this once"))?;
    log[i + 1..]
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// The CLI (`drover …`) with a config file of its own and, if given, text
/// on its stdin; returns (exit code, stdout, stderr).
pub fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env("DROVER_CONFIG", config)
        .env_remove("DROVER_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `drover` with args; returns (exit code, stderr).
pub fn drover(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("DROVER_BOOTSTRAP_PASSWORD")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each bad start fails with one `drover: error:` line naming the problem,
/// and no panic or backtrace.
pub fn assert_clean_failure<S: AsRef<str> + std::fmt::Debug>(args: &[S], expect: &str) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let args = &args[..];
    let (code, stderr) = drover(args);
    assert_ne!(code, 0, "{args:?} should fail");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("drover: error: "),
        "{args:?}: last line {last:?}\n{stderr}"
    );
    assert!(last.contains(expect), "{args:?}: {last:?} lacks {expect:?}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("drover: error:").count(), 1, "{stderr}");
}

/// moto's S3 server on a free 127.0.0.1 port, with one bucket; stopped on
/// drop.
pub struct S3 {
    pub proc: Proc,
    pub endpoint: String,
    pub bucket: String,
}

impl S3 {
    /// Start `$DROVER_TEST_MOTO` and create `bucket`.
    pub fn start(bucket: &str) -> S3 {
        let bin =
            std::env::var("DROVER_TEST_MOTO").expect("DROVER_TEST_MOTO (./scripts/test sets it)");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let proc = Proc::spawn(cmd);
        let endpoint = format!("http://127.0.0.1:{port}");
        let s3 = S3 {
            proc,
            endpoint,
            bucket: bucket.to_owned(),
        };
        wait("moto's S3 server", Duration::from_secs(60), || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .arg(format!("{}/{bucket}", s3.endpoint))
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
        });
        s3
    }

    /// The AWS environment a client of this server needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "drover-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "drover-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    /// The keys under `prefix` in the bucket, as S3 lists them.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new("curl")
            .args(["-sf"])
            .arg(format!(
                "{}/{}?list-type=2&prefix={prefix}",
                self.endpoint, self.bucket
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "listing the bucket failed");
        let xml = String::from_utf8_lossy(&out.stdout);
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }
}

/// A fresh database on the test PostgreSQL server.
pub async fn postgres_database() -> String {
    use sqlx::{Connection, Executor};
    let base = std::env::var("DROVER_TEST_POSTGRES_URL").expect("DROVER_TEST_POSTGRES_URL");
    let name = format!("drover_e2e_{}_{}", std::process::id(), free_port());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A TCP proxy on 127.0.0.1 that a test can cut and restore, to play a
/// datastore that becomes unreachable.
pub struct Proxy {
    pub port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (open2, conns2) = (open.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !open2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection closed at once
                }
                let target = target.clone();
                conns2.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Proxy {
            port,
            open,
            conns,
            accept,
        }
    }

    /// Drop every connection and refuse new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

pub const ADMIN_PASSWORD: &str = "admin password for tests";
pub const MGMT: &str = "/apis/management.drover.io/v1";

/// A server with the admin password set, and clients for it.
pub struct Mgmt {
    pub server: Server,
    pub ca: PathBuf,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Mgmt {
    pub fn start(extra: &[&str]) -> Mgmt {
        Self::start_env(extra, &[])
    }

    /// [`Mgmt::start`] with more environment for the server.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Mgmt {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![("DROVER_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD)];
        all.extend_from_slice(env);
        let server = Server::start(&dir.path().join("data"), extra, &all);
        let (ca, _) = save_ca(&server, dir.path());
        Mgmt {
            server,
            ca,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Stop the server (SIGTERM) and start it again on the same port and
    /// data; returns the old server's stderr.
    pub fn restart(&mut self) -> String {
        let extra = self.extra.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let data = self.dir.path().join("data");
        self.replace(
            &data,
            &extra,
            &[("DROVER_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD)],
        )
    }

    /// Clients for a server started otherwise, trusting `ca`.
    pub fn attach(server: Server, ca: PathBuf) -> Mgmt {
        Mgmt {
            server,
            ca,
            dir: tempfile::tempdir().unwrap(),
            extra: Vec::new(),
        }
    }

    /// Stop the server (SIGTERM) and start another on the same port (its
    /// URL stays, so agents and kubeconfigs keep working) with this data
    /// directory, flags and environment; returns the old server's stderr.
    pub fn replace(&mut self, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> String {
        let port = self.server.port;
        // Start the new one only after the old one let go of the port.
        let placeholder = Server {
            child: Command::new("true").spawn().unwrap(),
            port,
            stderr: Arc::default(),
            reader: None,
        };
        let old = std::mem::replace(&mut self.server, placeholder);
        let (_, log) = old.stop();
        self.server = Server::start_on(port, data_dir, extra, env);
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        log
    }

    /// Start the server again on the same port and data after its process
    /// died (killed by the test).
    pub fn restart_killed(&mut self) {
        let port = self.server.port;
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.server = Server::start_on(
            port,
            &self.dir.path().join("data"),
            &extra,
            &[("DROVER_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD)],
        );
    }

    /// curl with the CA; returns (code, JSON body or Null).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[&str],
    ) -> (u16, Value) {
        let mut args = vec![
            "-sS".to_owned(),
            "--cacert".into(),
            self.ca.display().to_string(),
            "-X".into(),
            method.into(),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        if let Some(t) = token {
            args.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
        }
        for h in headers {
            args.extend(["-H".into(), (*h).to_owned()]);
        }
        if let Some(b) = body {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            args.extend([
                "-H".into(),
                format!("Content-Type: {ct}"),
                "--data-binary".into(),
                b.to_string(),
            ]);
        }
        args.push(self.server.url(path));
        let out = Command::new("curl").args(&args).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    pub fn login(&self, username: &str, password: &str) -> String {
        let (code, body) = self.http(
            "POST",
            "/v1-public/login",
            None,
            Some(&json!({"username": username, "password": password})),
            &[],
        );
        assert_eq!(code, 200, "login {username}: {body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD)
    }

    /// Create a user with a password and return a token for them.
    pub fn user(&self, admin: &str, name: &str) -> String {
        let user = json!({"apiVersion": "management.drover.io/v1", "kind": "User", "metadata": {"name": name}, "spec": {"username": name}});
        let (code, body) = self.http(
            "POST",
            &format!("{MGMT}/users"),
            Some(admin),
            Some(&user),
            &[],
        );
        assert_eq!(code, 201, "{body}");
        let password = format!("{name} has a long password");
        let (code, body) = self.http(
            "POST",
            &format!("{MGMT}/users/{name}/password"),
            Some(admin),
            Some(&json!({"newPassword": password})),
            &[],
        );
        assert_eq!(code, 200, "{body}");
        self.login(name, &password)
    }

    pub fn kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: drover, cluster: {{server: \"https://127.0.0.1:{}\", certificate-authority: \"{}\"}}}}]\nusers: [{{name: {name}, user: {{token: \"{token}\"}}}}]\ncontexts: [{{name: drover, context: {{cluster: drover, user: {name}}}}}]\ncurrent-context: drover\n",
            self.server.port,
            self.ca.display()
        );
        std::fs::write(&path, cfg).unwrap();
        path
    }

    pub fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
        let out = kubectl_cmd(kubeconfig, &self.dir.path().join("kube-cache"), args)
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

pub fn kubectl_cmd(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args);
    cmd
}

/// A child process whose stderr (and stdout) lines are collected; killed on
/// drop.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for pipe in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, lines }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Wait until a line contains `text`.
    pub fn wait_for(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} within {timeout:?}; output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the process ends by itself, or fail naming `what`.
    pub fn ends_within(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{what} still open after {timeout:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory in bytes.
    pub fn rss(&self) -> u64 {
        drover_bench::env::rss(self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A simulated cluster in its own process, with its admin kubeconfig.
pub struct SimProc {
    pub proc: Proc,
    pub kubeconfig: PathBuf,
}

impl SimProc {
    pub fn start(dir: &Path, name: &str, nodes: u32) -> SimProc {
        let kubeconfig = dir.join(format!("{name}.admin.kubeconfig"));
        let mut cmd = Command::new(BIN);
        cmd.args(["sim", "--listen", "127.0.0.1:0", "--name", name])
            .args(["--nodes", &nodes.to_string()])
            .arg("--kubeconfig-out")
            .arg(&kubeconfig);
        let proc = Proc::spawn(cmd);
        proc.wait_for("serving at", Duration::from_secs(30));
        SimProc { proc, kubeconfig }
    }

    /// Run kubectl against the sim as its admin.
    pub fn kubectl(&self, cache: &Path, args: &[&str]) -> (i32, String, String) {
        let out = kubectl_cmd(&self.kubeconfig, cache, args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A kubeconfig for the sim with another bearer token (e.g. the agent's
    /// service account token).
    pub fn kubeconfig_with_token(&self, path: &Path, token: &str) {
        let admin = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let mut out = String::new();
        for line in admin.lines() {
            match line.trim_start().strip_prefix("token:") {
                Some(_) => {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    out.push_str(&format!("{indent}token: {token}\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        assert!(out.contains(token), "the sim kubeconfig has a token line");
        std::fs::write(path, out).unwrap();
    }
}

// Importing clusters (shared by the import and projects tests).

/// Poll until `f` gives `Some`, or fail naming `what`.
pub fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Imported {
    pub cluster: String,
    pub manifest_url: String,
    pub token: String,
    pub agent_kubeconfig: PathBuf,
}

pub fn create_cluster(m: &Mgmt, admin: &str, display: &str) -> String {
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/clusters"),
        Some(admin),
        Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "spec": {"displayName": display}})),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    body["metadata"]["name"].as_str().unwrap().to_owned()
}

pub fn cluster(m: &Mgmt, admin: &str, name: &str) -> Value {
    m.http(
        "GET",
        &format!("{MGMT}/clusters/{name}"),
        Some(admin),
        None,
        &[],
    )
    .1
}

pub fn condition(cluster: &Value, type_: &str) -> String {
    cluster["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// Create a cluster, apply its manifest into the sim as a user would
/// (`curl --cacert … | kubectl apply -f -`), and make the agent's
/// kubeconfig from `kubectl create token drover-agent -n drover-system`.
pub fn import(m: &Mgmt, admin: &str, sim: &SimProc, display: &str) -> Imported {
    let cluster = create_cluster(m, admin, display);
    let (code, crt) = m.http(
        "GET",
        &format!("{MGMT}/namespaces/{cluster}/clusterregistrationtokens/default-token"),
        Some(admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{crt}");
    let manifest_url = crt["status"]["manifestUrl"].as_str().unwrap().to_owned();
    let token = crt["status"]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        crt["status"]["command"],
        format!("kubectl apply -f {manifest_url}")
    );
    assert_eq!(
        crt["status"]["insecureCommand"],
        format!("curl --insecure -sfL {manifest_url} | kubectl apply -f -")
    );
    let cache = m.dir.path().join("kube-cache");
    let script = format!(
        "set -o pipefail; curl -sfL --cacert '{}' '{manifest_url}' | kubectl --kubeconfig '{}' --cache-dir '{}' apply -f -",
        m.ca.display(),
        sim.kubeconfig.display(),
        cache.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "apply: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deployment.apps/drover-agent created"),
        "{stdout}"
    );
    let agent_kubeconfig = agent_kubeconfig(m, sim, &cluster);
    Imported {
        cluster,
        manifest_url,
        token,
        agent_kubeconfig,
    }
}

/// The kubeconfig the agent of `cluster` would run with in the sim: its
/// service account's token (`kubectl create token drover-agent -n
/// drover-system`), once the import manifest was applied.
pub fn agent_kubeconfig(m: &Mgmt, sim: &SimProc, cluster: &str) -> PathBuf {
    let cache = m.dir.path().join("kube-cache");
    let (code, sa_token, err) = sim.kubectl(
        &cache,
        &["create", "token", "drover-agent", "-n", "drover-system"],
    );
    assert_eq!(code, 0, "{err}");
    let path = m.dir.path().join(format!("{cluster}.agent.kubeconfig"));
    sim.kubeconfig_with_token(&path, sa_token.trim());
    path
}

pub fn ca_checksum(m: &Mgmt) -> String {
    let out = Command::new("sha256sum").arg(&m.ca).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The `drover agent` command for an imported cluster (more flags can be
/// added before it is spawned).
pub fn agent_cmd(m: &Mgmt, imp: &Imported, checksum: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--server", &m.server.url("")])
        .args(["--token", &imp.token, "--ca-checksum", checksum])
        .arg("--kubeconfig")
        .arg(&imp.agent_kubeconfig)
        .env("DROVER_LOG", "info");
    cmd
}

pub fn agent(m: &Mgmt, imp: &Imported, checksum: &str) -> Proc {
    Proc::spawn(agent_cmd(m, imp, checksum))
}

/// `drover login` with a token, trusting the server's CA file; returns
/// the CLI's config file.
pub fn cli_login_token(m: &Mgmt, token: &str) -> PathBuf {
    let config = m.dir.path().join("cli.yaml");
    let (code, _, err) = cli(
        &config,
        &[
            "login",
            &m.server.url(""),
            "--token",
            token,
            "--cacert",
            &m.ca.display().to_string(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    config
}

pub fn wait_ready(m: &Mgmt, admin: &str, name: &str, timeout: Duration) -> Value {
    wait(&format!("cluster {name} Ready"), timeout, || {
        let c = cluster(m, admin, name);
        (condition(&c, "Ready") == "True").then_some(c)
    })
}

pub fn kubectl(m: &Mgmt, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    m.kubectl(kubeconfig, args)
}

pub fn user_kubeconfig(m: &Mgmt, token: &str, cluster: &str, name: &str) -> PathBuf {
    let (code, yaml) = kubeconfig_yaml(m, token, cluster);
    assert_eq!(code, 200, "{yaml}");
    let path = m.dir.path().join(format!("{name}.kubeconfig"));
    std::fs::write(&path, yaml).unwrap();
    path
}

pub fn kubeconfig_yaml(m: &Mgmt, token: &str, cluster: &str) -> (u16, String) {
    curl(
        &[
            "--cacert",
            &m.ca.display().to_string(),
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ],
        &m.server
            .url(&format!("{MGMT}/clusters/{cluster}/kubeconfig")),
    )
}

/// The CSRF field of a web UI form page.
pub fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"_csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in the page: {page}"));
    let rest = &page[at + "name=\"_csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Debian's haproxy with this configuration (written to `dir`), once it
/// listens on 127.0.0.1:`port`.
pub fn haproxy(dir: &Path, port: u16, config: &str) -> Proc {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    let p = Proc::spawn(cmd);
    wait("haproxy listening", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    });
    p
}

/// The web UI as a browser drives it: a cookie jar, its forms and their
/// CSRF field, with curl.
pub struct Browser<'a> {
    m: &'a Mgmt,
    /// The cookie jar (curl's file).
    pub jar: PathBuf,
}

impl<'a> Browser<'a> {
    pub fn sign_in(m: &'a Mgmt, user: &str, password: &str) -> Browser<'a> {
        let jar = m.dir.path().join(format!("{user}-{}.jar", meta_nanos()));
        let b = Browser { m, jar };
        let (_, page) = b.get("/dashboard/login");
        let csrf = csrf_of(&page);
        let (code, page) = b.post(
            "/dashboard/login",
            &[("username", user), ("password", password), ("_csrf", &csrf)],
        );
        assert_eq!(code, 303, "sign-in as {user}: {page}");
        b
    }

    pub fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&self.m.ca)
            .arg("-c")
            .arg(&self.jar)
            .arg("-b")
            .arg(&self.jar)
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .arg(self.m.server.url(path))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_owned())
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.curl(&[], path)
    }

    /// POST a form; the CSRF field is added from `page` unless given.
    pub fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut args = Vec::new();
        for (k, v) in fields {
            args.push("--data-urlencode".to_owned());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(&args, path)
    }

    /// A form POST with the session's CSRF field, read from `page_path`.
    pub fn submit(&self, page_path: &str, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let (_, page) = self.get(page_path);
        let csrf = csrf_of(&page);
        let mut all = fields.to_vec();
        all.push(("_csrf", &csrf));
        self.post(path, &all)
    }
}

fn meta_nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}
