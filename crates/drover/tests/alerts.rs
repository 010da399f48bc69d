//! Alerts end to end: Notifiers and AlertRules on a real server, a
//! simulated cluster imported through a real agent that the tests kill and
//! start again, a webhook receiver run by the test (every request recorded
//! with its headers, body and arrival time), aiosmtpd (PyPI) as the mail
//! server, and Debian's Prometheus scraping `/metrics`.
//!
//! The mail server and Prometheus are optional outside `./scripts/test`,
//! which always sets `DROVER_TEST_AIOSMTPD_PYTHON` (aiosmtpd's venv python)
//! and `DROVER_TEST_PROMETHEUS` (the prometheus binary); without them the
//! parts that need them say they were skipped.

mod common;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::webhook::{Hook, Receiver};
use common::{
    agent, ca_checksum, cli, cli_login_token, import, user_kubeconfig, wait, wait_ready, Browser,
    Imported, Mgmt, Proc, SimProc, ADMIN_PASSWORD, MGMT,
};
use serde_json::{json, Value};

const HOOK_SECRET: &str = "hook-signing-secret-0d6f2a";
const MAIL_PASSWORD: &str = "mail-password-7c1e94";
const PAGER_KEY: &str = "pager-routing-key-51b3e8";

// --- tools the tests start ---------------------------------------------------

/// An optional external tool named by `var` (`./scripts/test` sets it);
/// `None` when unset.
fn tool(var: &str) -> Option<PathBuf> {
    let value = std::env::var_os(var).filter(|v| !v.is_empty())?;
    let path = PathBuf::from(value);
    assert!(
        path.exists(),
        "{var}={} does not exist (./scripts/test installs it)",
        path.display()
    );
    Some(path)
}

/// One message aiosmtpd stored.
#[derive(Debug, Clone)]
struct Mail {
    subject: String,
    to: String,
}

/// aiosmtpd on a free 127.0.0.1 port, storing each message in a maildir;
/// killed on drop.
struct Smtp {
    _proc: Proc,
    port: u16,
    maildir: PathBuf,
}

impl Smtp {
    fn start(python: &Path, dir: &Path) -> Smtp {
        let port = common::free_port();
        let maildir = dir.join("maildir");
        let mut cmd = Command::new(python);
        cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir);
        let mut proc = Proc::spawn(cmd);
        wait("aiosmtpd listening", Duration::from_secs(30), || {
            assert!(proc.running(), "aiosmtpd exited: {}", proc.log());
            TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        });
        Smtp {
            _proc: proc,
            port,
            maildir,
        }
    }

    /// Every message received so far.
    fn mails(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(bytes) = std::fs::read(entry.path()) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&bytes);
                out.push(Mail {
                    subject: header(&text, "subject"),
                    to: header(&text, "to"),
                });
            }
        }
        out
    }

    fn with_subject(&self, prefix: &str) -> Option<Mail> {
        self.mails()
            .into_iter()
            .find(|m| m.subject.starts_with(prefix))
    }
}

/// A header of a mail (unfolded, RFC 2047 words decoded); empty if absent.
fn header(text: &str, name: &str) -> String {
    let mut value: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case(name) {
                value = Some(v.trim().to_owned());
            }
        }
    }
    decode_words(&value.unwrap_or_default())
}

/// Decode RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`).
fn decode_words(v: &str) -> String {
    use base64::Engine;
    let mut out = String::new();
    let mut rest = v;
    let mut after_word = false;
    while let Some(i) = rest.find("=?") {
        let before = &rest[..i];
        // Whitespace between two encoded words is not part of the text.
        if !(after_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        let word = &rest[i + 2..];
        let mut parts = word.splitn(3, '?');
        let (Some(_charset), Some(encoding), Some(tail)) =
            (parts.next(), parts.next(), parts.next())
        else {
            out.push_str(&rest[i..]);
            return out;
        };
        let Some(end) = tail.find("?=") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let text = &tail[..end];
        let bytes = if encoding.eq_ignore_ascii_case("b") {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_default()
        } else {
            let mut bytes = Vec::new();
            let mut it = text.bytes();
            while let Some(c) = it.next() {
                match c {
                    b'_' => bytes.push(b' '),
                    b'=' => {
                        let hi = it.next().unwrap_or(b'0');
                        let lo = it.next().unwrap_or(b'0');
                        let pair = [hi, lo];
                        let pair = std::str::from_utf8(&pair).unwrap_or("00");
                        bytes.push(u8::from_str_radix(pair, 16).unwrap_or(b'?'));
                    }
                    c => bytes.push(c),
                }
            }
            bytes
        };
        out.push_str(&String::from_utf8_lossy(&bytes));
        rest = &tail[end + 2..];
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// Debian's Prometheus scraping the server's `/metrics` over HTTPS every
/// second; killed (by its PID) on drop.
struct Prometheus {
    proc: Proc,
    port: u16,
}

impl Prometheus {
    fn start(bin: &Path, m: &Mgmt) -> Prometheus {
        let dir = m.dir.path().join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        // JSON strings are YAML strings.
        let ca = serde_json::to_string(&m.ca.display().to_string()).unwrap();
        let config = [
            "global:".to_owned(),
            "  scrape_interval: 1s".into(),
            "  scrape_timeout: 1s".into(),
            "  evaluation_interval: 1s".into(),
            "scrape_configs:".into(),
            "  - job_name: drover".into(),
            "    scheme: https".into(),
            "    metrics_path: /metrics".into(),
            "    tls_config:".into(),
            format!("      ca_file: {ca}"),
            "    static_configs:".into(),
            format!("      - targets: ['127.0.0.1:{}']", m.server.port),
        ]
        .join("\n");
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = common::free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut proc = Proc::spawn(cmd);
        wait("prometheus ready", Duration::from_secs(60), || {
            assert!(proc.running(), "prometheus exited: {}", proc.log());
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/-/ready"))
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
        });
        Prometheus { proc, port }
    }

    fn api(&self, path: &str, query: Option<&str>) -> Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-G"]);
        if let Some(q) = query {
            cmd.arg("--data-urlencode").arg(format!("query={q}"));
        }
        let out = cmd
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The value of a query whose answer is one sample (`None`: no sample).
    fn query(&self, q: &str) -> Option<f64> {
        let answer = self.api("/api/v1/query", Some(q));
        let result = answer["data"]["result"].as_array()?;
        let [sample] = result.as_slice() else {
            return None;
        };
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Wait until `q` gives `want`; on failure, say what Prometheus saw.
    fn wait_for(&self, q: &str, want: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.query(q);
            if got == Some(want) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "prometheus: {q} gave {got:?}, not {want}, within {timeout:?}\ntargets: {}\nlog:\n{}",
                    self.api("/api/v1/targets", None),
                    self.proc.log()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

// --- the server's side -----------------------------------------------------

/// A server with one simulated cluster imported through an agent the test
/// may kill and start again.
struct Fleet {
    m: Mgmt,
    admin: String,
    sim: SimProc,
    imp: Imported,
    checksum: String,
    agent: Proc,
}

impl Fleet {
    fn start(extra: &[&str]) -> Fleet {
        let m = Mgmt::start(extra);
        let admin = m.admin();
        let sim = SimProc::start(m.dir.path(), "c1", 2);
        let imp = import(&m, &admin, &sim, "c1");
        let checksum = ca_checksum(&m);
        let agent = agent(&m, &imp, &checksum);
        let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(60))
        }));
        if let Err(e) = ready {
            eprintln!(
                "server log:\n{}\nagent log:\n{}",
                m.server.log(),
                agent.log()
            );
            std::panic::resume_unwind(e);
        }
        Fleet {
            m,
            admin,
            sim,
            imp,
            checksum,
            agent,
        }
    }

    fn cluster(&self) -> &str {
        &self.imp.cluster
    }

    /// Kill the agent (SIGKILL): the cluster is cut off.
    fn cut(&mut self) {
        self.agent.kill();
    }

    /// A new agent for the cluster.
    fn reconnect(&mut self) {
        self.agent = agent(&self.m, &self.imp, &self.checksum);
    }

    fn notifier(&self, name: &str, spec: Value) -> Value {
        create_notifier(&self.m, &self.admin, name, spec)
    }

    fn rule(&self, namespace: &str, name: &str, spec: Value) -> Value {
        let (code, body) = self.m.http(
            "POST",
            &format!("{MGMT}/namespaces/{namespace}/alertrules"),
            Some(&self.admin),
            Some(
                &json!({"apiVersion": "management.drover.io/v1", "kind": "AlertRule",
                "metadata": {"name": name}, "spec": spec}),
            ),
            &[],
        );
        assert_eq!(code, 201, "create alert rule {namespace}/{name}: {body}");
        body
    }

    fn rule_status(&self, namespace: &str, name: &str) -> Value {
        let (code, body) = self.m.http(
            "GET",
            &format!("{MGMT}/namespaces/{namespace}/alertrules/{name}"),
            Some(&self.admin),
            None,
            &[],
        );
        assert_eq!(code, 200, "{body}");
        body["status"].clone()
    }

    /// Wait until the rule's `status.state` is `state`; returns the status.
    fn wait_state(&self, namespace: &str, name: &str, state: &str, timeout: Duration) -> Value {
        wait(
            &format!("alert rule {namespace}/{name} {state}"),
            timeout,
            || {
                let s = self.rule_status(namespace, name);
                (s["state"] == state).then_some(s)
            },
        )
    }

    fn project(&self, display: &str, spec: Value) -> String {
        let mut spec = spec;
        spec["displayName"] = json!(display);
        let (code, p) = self.m.http(
            "POST",
            &format!("{MGMT}/namespaces/{}/projects", self.cluster()),
            Some(&self.admin),
            Some(
                &json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "spec": spec}),
            ),
            &[],
        );
        assert_eq!(code, 201, "{p}");
        p["metadata"]["name"].as_str().unwrap().to_owned()
    }

    /// kubectl straight at the simulated cluster, as its admin: the object
    /// as JSON, if there is one.
    fn sim_get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let cache = self.m.dir.path().join("sim-cache");
        let (code, out, _) = self.sim.kubectl(&cache, &all);
        (code == 0).then(|| serde_json::from_str(&out).unwrap())
    }
}

fn create_notifier(m: &Mgmt, admin: &str, name: &str, spec: Value) -> Value {
    let (code, body) = post_notifier(m, admin, name, spec);
    assert_eq!(code, 201, "create notifier {name}: {body}");
    body
}

fn post_notifier(m: &Mgmt, token: &str, name: &str, spec: Value) -> (u16, Value) {
    m.http(
        "POST",
        &format!("{MGMT}/notifiers"),
        Some(token),
        Some(
            &json!({"apiVersion": "management.drover.io/v1", "kind": "Notifier",
            "metadata": {"name": name}, "spec": spec}),
        ),
        &[],
    )
}

/// `POST …/notifiers/{name}/test`: one attempt, its result.
fn test_notifier(m: &Mgmt, admin: &str, name: &str) -> Value {
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/notifiers/{name}/test"),
        Some(admin),
        Some(&json!({})),
        &[],
    );
    // An action: 200, or 201 as the generic API answers creates.
    assert!(
        code == 200 || code == 201,
        "test notifier {name}: {code} {body}"
    );
    assert_eq!(body["notifier"], name, "{body}");
    body
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn since(status: &Value) -> SystemTime {
    let s = status["since"]
        .as_str()
        .unwrap_or_else(|| panic!("no status.since: {status}"));
    drover_core::meta::parse_rfc3339(s).unwrap_or_else(|| panic!("status.since {s:?}"))
}

/// `a - b` in seconds (negative when `a` is earlier).
fn secs_after(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The delivery of `notifier` in the rule's last notification.
fn delivery(status: &Value, notifier: &str) -> Value {
    status["lastNotification"]["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["notifier"] == notifier)
        .cloned()
        .unwrap_or(Value::Null)
}

// --- /metrics ------------------------------------------------------------

/// The values of the samples of `name` on the server's `/metrics` whose
/// labels include `labels`.
fn metric(m: &Mgmt, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let (code, text) = common::curl(
        &["--cacert", &m.ca.display().to_string()],
        &m.server.url("/metrics"),
    );
    assert_eq!(code, 200, "{text}");
    samples(&text, name)
        .into_iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).is_some_and(|got| got.eq_ignore_ascii_case(v)))
        })
        .map(|(_, v)| v)
        .collect()
}

/// The samples of `name` in Prometheus text: (labels, value).
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, labels, rest) = match line.find('{') {
            Some(i) => {
                let Some(j) = line[i..].find("} ").map(|j| i + j) else {
                    continue;
                };
                (&line[..i], parse_labels(&line[i + 1..j]), &line[j + 1..])
            }
            None => match line.split_once(' ') {
                Some((s, r)) => (s, BTreeMap::new(), r),
                None => continue,
            },
        };
        if series != name {
            continue;
        }
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.push((labels, v));
        }
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, tail)) = rest.split_once("=\"") {
        let key = key.trim_start_matches(',').trim().to_owned();
        let mut value = String::new();
        let mut end = tail.len();
        let mut escaped = false;
        for (i, c) in tail.char_indices() {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    c => c,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = i;
                break;
            } else {
                value.push(c);
            }
        }
        out.insert(key, value);
        rest = tail.get(end + 1..).unwrap_or("");
    }
    out
}

fn wait_metric(
    m: &Mgmt,
    what: &str,
    name: &str,
    labels: &[(&str, &str)],
    ok: impl Fn(f64) -> bool,
) {
    wait(what, Duration::from_secs(20), || {
        let values = metric(m, name, labels);
        let total: f64 = values.iter().sum();
        (!values.is_empty() && ok(total)).then_some(())
    });
}

// --- the tests ---------------------------------------------------------------

#[test]
fn cluster_disconnected_fires_and_resolves() {
    let smtp_python = tool("DROVER_TEST_AIOSMTPD_PYTHON");
    if smtp_python.is_none() {
        eprintln!("email part skipped: set DROVER_TEST_AIOSMTPD_PYTHON to aiosmtpd's python (./scripts/test does)");
    }
    let mut f = Fleet::start(&["--allow-private-outbound", "--audit-level", "3"]);
    let c = f.cluster().to_owned();
    let hook = Receiver::start();
    let smtp = smtp_python.map(|py| Smtp::start(&py, f.m.dir.path()));

    let created = f.notifier(
        "hook",
        json!({"webhook": {"url": hook.url(), "secret": HOOK_SECRET}}),
    );
    assert!(
        created["spec"]["webhook"].get("secret").is_none()
            && !created.to_string().contains(HOOK_SECRET),
        "the create answer holds no secret: {created}"
    );
    let mut notifiers = vec!["hook"];
    if let Some(s) = &smtp {
        f.notifier(
            "mail",
            json!({"email": {"host": "127.0.0.1", "port": s.port, "tls": "none",
                "from": "drover@example.com", "to": ["ops@example.com"]}}),
        );
        notifiers.push("mail");
    }
    secrets_are_write_only(&f);

    f.rule(
        &c,
        "cluster-down",
        json!({"condition": {"clusterDisconnected": {"forSeconds": 10}},
            "severity": "critical", "notifiers": notifiers,
            "groupWaitSeconds": 5, "groupIntervalSeconds": 5, "repeatIntervalSeconds": 3600}),
    );
    assert!(
        hook.messages("cluster-down", "firing").is_empty(),
        "nothing fires while the cluster is connected: {:?}",
        hook.all()
    );

    // The agent dies: a firing message by webhook and by mail within 45 s.
    let killed = Instant::now();
    f.cut();
    let deadline = killed + Duration::from_secs(45);
    let firing = wait("a firing webhook message", left(deadline), || {
        hook.first("cluster-down", "firing")
    });
    firing.assert_signed(HOOK_SECRET);
    assert_eq!(firing.path, "/hook");
    let body = &firing.body;
    assert_eq!(body["version"], "1", "{body}");
    assert_eq!(body["rule"]["namespace"], c.as_str(), "{body}");
    assert_eq!(body["severity"], "critical", "{body}");
    assert_eq!(body["cluster"]["id"], c.as_str(), "{body}");
    assert_eq!(body["cluster"]["name"], "c1", "{body}");
    assert!(
        body["condition"]
            .to_string()
            .contains("clusterDisconnected"),
        "{body}"
    );
    assert!(
        firing.affected().contains(&format!("cluster/{c}")),
        "{body}"
    );
    assert!(
        body["summary"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(
        drover_core::meta::parse_rfc3339(body["since"].as_str().unwrap_or("")).is_some(),
        "{body}"
    );
    // Not before forSeconds (10) and groupWait (5) after the disconnection,
    // which is after the kill.
    assert!(
        firing.when.duration_since(killed) >= Duration::from_secs(14),
        "the firing message came {:?} after the kill",
        firing.when.duration_since(killed)
    );
    if let Some(s) = &smtp {
        let mail = wait("a [FIRING] mail", left(deadline), || {
            s.with_subject("[FIRING]")
        });
        assert!(mail.to.contains("ops@example.com"), "{mail:?}");
    }

    let status = f.rule_status(&c, "cluster-down");
    assert_eq!(status["state"], "firing", "{status}");
    assert!(
        strings(&status["affected"]).contains(&format!("cluster/{c}")),
        "{status}"
    );
    let status = wait(
        "every notifier's delivery recorded",
        Duration::from_secs(20),
        || {
            let s = f.rule_status(&c, "cluster-down");
            notifiers
                .iter()
                .all(|n| delivery(&s, n)["result"] == "Delivered")
                .then_some(s)
        },
    );
    let last = &status["lastNotification"];
    assert_eq!(last["state"], "firing", "{status}");
    assert!(
        strings(&last["affected"]).contains(&format!("cluster/{c}")),
        "{status}"
    );
    assert!(last["time"].as_str().is_some(), "{status}");
    assert!(
        delivery(&status, "hook")["attempts"].as_u64() >= Some(1),
        "{status}"
    );

    // `drover alerts ls` lists it.
    let config = cli_login_token(&f.m, &f.admin);
    let (code, out, err) = cli(&config, &["alerts", "ls"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines().any(|l| l.contains("cluster-down")
            && l.contains(c.as_str())
            && l.to_lowercase().contains("firing")),
        "{out}"
    );

    // The UI shows it firing, on the clusters list and on the cluster.
    let ui = Browser::sign_in(&f.m, "admin", ADMIN_PASSWORD);
    for page in [
        "/dashboard/clusters".to_owned(),
        format!("/dashboard/clusters/{c}"),
    ] {
        let (code, html) = ui.get(&page);
        assert_eq!(code, 200, "{page}: {html}");
        let section = html
            .split("id=\"alerts\"")
            .nth(1)
            .unwrap_or_else(|| panic!("{page} shows no firing alerts: {html}"));
        assert!(section.contains("cluster-down"), "{page}: {html}");
        assert!(html.contains("1 alert firing"), "{page}: {html}");
    }

    // And /metrics counts it.
    wait_metric(
        &f.m,
        "drover_alert_rules_firing{severity=critical}",
        "drover_alert_rules_firing",
        &[("severity", "critical")],
        |v| v >= 1.0,
    );
    wait_metric(
        &f.m,
        "drover_notifier_deliveries_total{notifier=hook,result=Delivered}",
        "drover_notifier_deliveries_total",
        &[("notifier", "hook"), ("result", "Delivered")],
        |v| v >= 1.0,
    );
    wait_metric(
        &f.m,
        "drover_cluster_connected 0",
        "drover_cluster_connected",
        &[("cluster", c.as_str())],
        |v| v == 0.0,
    );

    // A new agent: resolved, by webhook and mail, within 60 s.
    let restarted = Instant::now();
    f.reconnect();
    let deadline = restarted + Duration::from_secs(60);
    let resolved = wait("a resolved webhook message", left(deadline), || {
        hook.first("cluster-down", "resolved")
    });
    resolved.assert_signed(HOOK_SECRET);
    assert_eq!(resolved.body["cluster"]["id"], c.as_str());
    assert!(
        // Status times have whole seconds: up to 1 s early.
        resolved.when.duration_since(firing.when) >= Duration::from_secs(4),
        "a resolution waits for groupInterval after the last message"
    );
    if let Some(s) = &smtp {
        let mail = wait("a [RESOLVED] mail", left(deadline), || {
            s.with_subject("[RESOLVED]")
        });
        assert!(mail.to.contains("ops@example.com"), "{mail:?}");
        assert_eq!(
            s.mails()
                .iter()
                .filter(|m| m.subject.starts_with("[FIRING]"))
                .count(),
            1,
            "{:?}",
            s.mails()
        );
    }
    let status = f.wait_state(&c, "cluster-down", "resolved", Duration::from_secs(10));
    assert!(status["since"].as_str().is_some(), "{status}");
    assert_eq!(
        hook.messages("cluster-down", "firing").len(),
        1,
        "one firing message: {:?}",
        hook.all()
    );
    wait_metric(
        &f.m,
        "drover_cluster_connected 1",
        "drover_cluster_connected",
        &[("cluster", c.as_str())],
        |v| v == 1.0,
    );
    wait(
        "no critical rule firing in /metrics",
        Duration::from_secs(20),
        || {
            let v: f64 = metric(
                &f.m,
                "drover_alert_rules_firing",
                &[("severity", "critical")],
            )
            .iter()
            .sum();
            (v == 0.0).then_some(())
        },
    );
}

/// Secrets of Notifiers are write-only: never in an answer, the audit log
/// or the server's log.
fn secrets_are_write_only(f: &Fleet) {
    // Never used by a rule: nothing is sent to these.
    let mut answers = vec![
        f.notifier(
            "pager",
            json!({"pagerduty": {"routingKey": PAGER_KEY, "url": "http://127.0.0.1:9/enqueue"}}),
        ),
        f.notifier(
            "mail-auth",
            json!({"email": {"host": "127.0.0.1", "port": 9, "tls": "none",
                "username": "drover", "password": MAIL_PASSWORD,
                "from": "drover@example.com", "to": ["ops@example.com"]}}),
        ),
    ];
    let get = |path: &str| {
        let (code, body) =
            f.m.http("GET", &format!("{MGMT}/{path}"), Some(&f.admin), None, &[]);
        assert_eq!(code, 200, "{body}");
        body
    };
    let list = get("notifiers");
    let hook = get("notifiers/hook");
    let pager = get("notifiers/pager");
    let mail = get("notifiers/mail-auth");
    assert!(hook["spec"]["webhook"]["url"].is_string(), "{hook}");
    assert!(hook["spec"]["webhook"].get("secret").is_none(), "{hook}");
    assert!(
        pager["spec"]["pagerduty"].get("routingKey").is_none(),
        "{pager}"
    );
    assert_eq!(mail["spec"]["email"]["username"], "drover", "{mail}");
    assert!(mail["spec"]["email"].get("password").is_none(), "{mail}");
    answers.extend([list, hook, pager, mail]);
    for answer in &answers {
        let text = answer.to_string();
        for secret in [HOOK_SECRET, MAIL_PASSWORD, PAGER_KEY] {
            assert!(!text.contains(secret), "a secret in an answer: {text}");
        }
    }
    // The audit log (level 3: request and response bodies) is written by
    // its own thread: wait for the last request.
    let audit_path = f.m.dir.path().join("data/audit.log");
    let audit = wait("the audit log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        text.contains("/notifiers/mail-auth\"").then_some(text)
    });
    assert!(
        audit.contains("/apis/management.drover.io/v1/notifiers"),
        "the creates are audited"
    );
    for secret in [HOOK_SECRET, MAIL_PASSWORD, PAGER_KEY] {
        assert!(!audit.contains(secret), "{secret} reached the audit log");
        assert!(
            !f.m.server.log().contains(secret),
            "{secret} reached the server's log"
        );
    }
}

#[test]
fn workload_rule_fires_on_quota_shortfall() {
    let mut f = Fleet::start(&["--allow-private-outbound"]);
    let c = f.cluster().to_owned();
    let hook = Receiver::start();
    let project = f.project(
        "shop",
        json!({"resourceQuota": {"limit": {"pods": "10"}},
               "namespaceDefaultResourceQuota": {"limit": {"pods": "2"}}}),
    );
    let akc = user_kubeconfig(&f.m, &f.admin, &c, "admin-c1");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "annotations": {"drover.io/project-id": format!("{c}:{project}")}}});
    let file = f.m.dir.path().join("ns-shop.json");
    std::fs::write(&file, ns.to_string()).unwrap();
    let (code, _, err) = f.m.kubectl(&akc, &["create", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "create namespace shop: {err}");
    wait(
        "the project's quota in namespace shop",
        Duration::from_secs(60),
        || {
            let rq = f.sim_get(&["resourcequota", "drover-project-quota", "-n", "shop"])?;
            (rq["spec"]["hard"]["pods"] == "2").then_some(())
        },
    );
    let (code, _, err) = f.m.kubectl(
        &akc,
        &["-n", "shop", "create", "deployment", "web", "--image=nginx"],
    );
    assert_eq!(code, 0, "{err}");
    wait("deployment web available", Duration::from_secs(60), || {
        let d = f.sim_get(&["deployment", "web", "-n", "shop"])?;
        (d["status"]["availableReplicas"] == 1).then_some(())
    });

    f.notifier("hook", json!({"webhook": {"url": hook.url()}}));
    f.rule(
        &project,
        "web-short",
        json!({"condition": {"workloadUnavailable": {"namespace": "shop", "forSeconds": 2}},
            "severity": "warning", "notifiers": ["hook"],
            "groupWaitSeconds": 1, "groupIntervalSeconds": 6, "repeatIntervalSeconds": 3600}),
    );

    // Four replicas wanted, room for two.
    let (code, _, err) = f.m.kubectl(
        &akc,
        &["-n", "shop", "scale", "deployment", "web", "--replicas=4"],
    );
    assert_eq!(code, 0, "{err}");
    let firing = wait(
        "a firing message about web",
        Duration::from_secs(60),
        || hook.first("web-short", "firing"),
    );
    let body = &firing.body;
    assert!(
        firing.affected().iter().any(|a| a == "deployment/shop/web"),
        "{body}"
    );
    assert_eq!(body["rule"]["namespace"], project.as_str(), "{body}");
    assert_eq!(body["cluster"]["id"], c.as_str(), "{body}");
    assert!(body["project"].to_string().contains(&project), "{body}");
    assert!(
        body["condition"]
            .to_string()
            .contains("workloadUnavailable"),
        "{body}"
    );
    assert!(
        !firing.headers.contains_key("x-drover-signature"),
        "no secret, no signature"
    );
    wait(
        "the quota holding web at two pods",
        Duration::from_secs(20),
        || {
            let d = f.sim_get(&["deployment", "web", "-n", "shop"])?;
            (d["status"]["availableReplicas"] == 2 && d["spec"]["replicas"] == 4).then_some(())
        },
    );
    let status = f.rule_status(&project, "web-short");
    assert_eq!(status["state"], "firing", "{status}");
    assert!(
        strings(&status["affected"])
            .iter()
            .any(|a| a == "deployment/shop/web"),
        "{status}"
    );

    // The nodes, as the cluster's controller watches them, with the pods
    // on them: a node whose pods take 1 % of its 110 pods fires a rule.
    f.rule(
        &c,
        "crowded",
        json!({"condition": {"nodeResourceUsage": {"resource": "pods", "percent": 1}}}),
    );
    let crowded = f.wait_state(&c, "crowded", "firing", Duration::from_secs(30));
    assert!(
        strings(&crowded["affected"])
            .iter()
            .any(|a| a.starts_with("node/")),
        "{crowded}"
    );

    // A change of what the alert names is sent no sooner than
    // groupInterval (6 s) after the last message: a second deployment
    // finds no room, then goes.
    let (code, _, err) = f.m.kubectl(
        &akc,
        &["-n", "shop", "create", "deployment", "api", "--image=nginx"],
    );
    assert_eq!(code, 0, "{err}");
    let naming = |n: usize| {
        move |h: &Hook| {
            h.affected()
                .iter()
                .filter(|a| a.starts_with("deployment/shop/"))
                .count()
                == n
        }
    };
    let both = wait(
        "a message naming web and api",
        Duration::from_secs(60),
        || {
            hook.messages("web-short", "firing")
                .into_iter()
                .find(naming(2))
        },
    );
    assert!(
        secs_between(&firing, &both) >= 5.0,
        "a change came {:.1} s after the last message (groupInterval 6)",
        secs_between(&firing, &both)
    );
    let (code, _, err) =
        f.m.kubectl(&akc, &["-n", "shop", "delete", "deployment", "api"]);
    assert_eq!(code, 0, "{err}");
    let web_only = wait(
        "a message naming web alone again",
        Duration::from_secs(60),
        || {
            hook.messages("web-short", "firing")
                .into_iter()
                .filter(|h| h.when > both.when)
                .find(naming(1))
        },
    );
    assert!(
        secs_between(&both, &web_only) >= 5.0,
        "a change came {:.1} s after the last message (groupInterval 6)",
        secs_between(&both, &web_only)
    );

    // The server restarts while web is still short: the evaluator that
    // starts again knows nothing of the cluster until its watches have
    // listed, and must hold the alert rather than resolve it.
    f.m.restart();
    wait_ready(&f.m, &f.admin, &c, Duration::from_secs(60));
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(8) {
        assert!(
            hook.messages("web-short", "resolved").is_empty(),
            "a restart resolved an alert that still holds"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let status = f.rule_status(&project, "web-short");
    assert_eq!(status["state"], "firing", "{status}");
    assert_eq!(
        hook.messages("web-short", "firing").len(),
        3,
        "no firing message after the restart"
    );

    // Back within the quota: resolved.
    let (code, _, err) = f.m.kubectl(
        &akc,
        &["-n", "shop", "scale", "deployment", "web", "--replicas=2"],
    );
    assert_eq!(code, 0, "{err}");
    let resolved = wait(
        "a resolved message about web",
        Duration::from_secs(60),
        || hook.first("web-short", "resolved"),
    );
    assert_eq!(resolved.body["rule"]["namespace"], project.as_str());
    f.wait_state(&project, "web-short", "resolved", Duration::from_secs(10));
}

#[test]
fn timing_is_honoured() {
    let mut f = Fleet::start(&["--allow-private-outbound"]);
    let c = f.cluster().to_owned();
    let hook = Receiver::start();
    f.notifier("hook", json!({"webhook": {"url": hook.url()}}));
    f.rule(
        &c,
        "timing",
        json!({"condition": {"clusterDisconnected": {"forSeconds": 0}},
            "severity": "warning", "notifiers": ["hook"],
            "groupWaitSeconds": 2, "groupIntervalSeconds": 6, "repeatIntervalSeconds": 10}),
    );
    f.cut();
    let status = f.wait_state(&c, "timing", "firing", Duration::from_secs(60));
    let since = since(&status);
    let first = wait("the first firing message", Duration::from_secs(30), || {
        hook.first("timing", "firing")
    });
    // `since` has whole seconds, rounded down.
    let wait_seen = secs_after(first.at, since);
    assert!(
        wait_seen >= 1.5,
        "the first message came {wait_seen:.1} s after the rule fired (groupWait 2)"
    );
    assert!(
        wait_seen <= 15.0,
        "the first message came {wait_seen:.1} s after the rule fired (groupWait 2)"
    );

    // Unchanged, it is sent again every repeatInterval (10 s): up to three
    // messages within 25 s of the first. Intervals are measured from status
    // times, which have whole seconds: a message may come up to 1 s early.
    let window = first.when + Duration::from_secs(25);
    while Instant::now() < window && hook.messages("timing", "firing").len() < 3 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent: Vec<Hook> = hook
        .messages("timing", "firing")
        .into_iter()
        .filter(|h| h.when <= window)
        .collect();
    let gaps: Vec<f64> = sent
        .windows(2)
        .map(|w| w[1].when.duration_since(w[0].when).as_secs_f64())
        .collect();
    assert!(
        (2..=3).contains(&sent.len()),
        "{} firing messages within 25 s of the first (gaps {gaps:?})",
        sent.len()
    );
    assert!(
        gaps.iter().all(|g| *g >= 9.0),
        "re-sent no sooner than repeatInterval (10 s): gaps {gaps:?}"
    );

    // Resolved at once after a message: the resolution waits for
    // groupInterval (6 s) after it.
    f.reconnect();
    let resolved = wait("the resolved message", Duration::from_secs(60), || {
        hook.first("timing", "resolved")
    });
    let before = hook
        .messages("timing", "firing")
        .into_iter()
        .rev()
        .find(|h| h.when <= resolved.when)
        .unwrap();
    let gap = resolved.when.duration_since(before.when).as_secs_f64();
    assert!(
        gap >= 5.0,
        "the resolution came {gap:.1} s after the last message (groupInterval 6)"
    );
    // No two messages closer than groupInterval.
    let all: Vec<Hook> = hook
        .all()
        .into_iter()
        .filter(|h| h.rule() == "timing")
        .collect();
    for w in all.windows(2) {
        let g = w[1].when.duration_since(w[0].when).as_secs_f64();
        assert!(g >= 5.0, "two messages {g:.1} s apart: {all:?}");
    }
}

#[test]
fn dead_notifier_does_not_delay_others() {
    let mut f = Fleet::start(&["--allow-private-outbound"]);
    let c = f.cluster().to_owned();
    let hook = Receiver::start();
    // A port nothing listens on.
    let dead_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    f.notifier(
        "dead",
        json!({"webhook": {"url": format!("http://127.0.0.1:{dead_port}/hook")}}),
    );
    f.notifier("live", json!({"webhook": {"url": hook.url()}}));
    f.rule(
        &c,
        "both",
        json!({"condition": {"clusterDisconnected": {"forSeconds": 0}},
            "severity": "warning", "notifiers": ["dead", "live"],
            "groupWaitSeconds": 2, "groupIntervalSeconds": 60, "repeatIntervalSeconds": 3600}),
    );
    f.cut();
    let status = f.wait_state(&c, "both", "firing", Duration::from_secs(60));
    let since = since(&status);
    let live = wait(
        "the live notifier's message",
        Duration::from_secs(30),
        || hook.first("both", "firing"),
    );
    // groupWait (2) + 5 s, and `since` is rounded down to the second; the
    // dead one's retries (0, 1, 2, 4 s) would take longer.
    let after = secs_after(live.at, since);
    assert!(
        after <= 8.0,
        "the live notifier got its message {after:.1} s after the rule fired"
    );

    let status = wait(
        "the dead notifier's delivery Failed",
        Duration::from_secs(20),
        || {
            let s = f.rule_status(&c, "both");
            (delivery(&s, "dead")["result"] == "Failed").then_some(s)
        },
    );
    let dead = delivery(&status, "dead");
    assert!(dead["attempts"].as_u64() > Some(1), "retried: {status}");
    assert!(
        dead["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{status}"
    );
    assert_eq!(delivery(&status, "live")["result"], "Delivered", "{status}");
    assert_eq!(status["lastNotification"]["state"], "firing", "{status}");
    wait_metric(
        &f.m,
        "drover_notifier_deliveries_total{notifier=dead,result=Failed}",
        "drover_notifier_deliveries_total",
        &[("notifier", "dead"), ("result", "Failed")],
        |v| v >= 1.0,
    );

    // The test action: one attempt each.
    let answer = test_notifier(&f.m, &f.admin, "dead");
    assert_eq!(answer["result"], "Failed", "{answer}");
    assert_eq!(answer["attempts"], 1, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer}"
    );
    let before = hook.all().len();
    let answer = test_notifier(&f.m, &f.admin, "live");
    assert_eq!(answer["result"], "Delivered", "{answer}");
    assert_eq!(answer["attempts"], 1, "{answer}");
    assert!(answer.get("error").is_none_or(Value::is_null), "{answer}");
    let got = hook.all();
    assert!(
        got.len() > before,
        "the receiver has the test message once it was Delivered"
    );
    assert!(
        got[before..].iter().all(|h| h.body.is_object()),
        "{:?}",
        &got[before..]
    );

    // The same from the settings page: "Send test" says how it went.
    let ui = Browser::sign_in(&f.m, "admin", ADMIN_PASSWORD);
    let (code, settings) = ui.get("/dashboard/settings");
    assert_eq!(code, 200, "{settings}");
    assert!(settings.contains("data-notifier=\"live\""), "{settings}");
    let before = hook.all().len();
    let (code, page) = ui.submit(
        "/dashboard/settings",
        "/dashboard/settings/notifiers/live/test",
        &[],
    );
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("The test message was delivered."), "{page}");
    assert!(
        hook.all().len() > before,
        "the UI's test reached the receiver"
    );
    let (code, page) = ui.submit(
        "/dashboard/settings",
        "/dashboard/settings/notifiers/dead/test",
        &[],
    );
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("The test message was not delivered: "),
        "{page}"
    );
}

#[test]
fn private_destinations_are_refused() {
    // No --allow-private-outbound.
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let refused = [
        (
            "loopback",
            json!({"webhook": {"url": "http://127.0.0.1:9/x"}}),
        ),
        ("private", json!({"webhook": {"url": "http://10.0.0.1/x"}})),
        (
            "metadata",
            json!({"webhook": {"url": "http://169.254.169.254/"}}),
        ),
        (
            "localhost",
            json!({"webhook": {"url": "http://localhost:9/"}}),
        ),
        (
            "slack",
            json!({"slack": {"url": "http://127.0.0.1:9/services/x"}}),
        ),
        (
            "smtp",
            json!({"email": {"host": "127.0.0.1", "port": 25, "tls": "none",
                "from": "drover@example.com", "to": ["ops@example.com"]}}),
        ),
    ];
    for (name, spec) in refused {
        let (code, body) = post_notifier(&m, &admin, name, spec);
        assert_eq!(code, 422, "{name}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|s| s.contains("--allow-private-outbound")),
            "{name}: {body}"
        );
        let (code, body) = m.http(
            "GET",
            &format!("{MGMT}/notifiers/{name}"),
            Some(&admin),
            None,
            &[],
        );
        assert_eq!(code, 404, "{name} was not stored: {body}");
    }

    // Only admins manage Notifiers.
    let bob = m.user(&admin, "bob");
    let (code, body) = post_notifier(
        &m,
        &bob,
        "bobs",
        json!({"webhook": {"url": "http://127.0.0.1:9/x"}}),
    );
    assert_eq!(code, 403, "{body}");
    let (code, _) = m.http(
        "GET",
        &format!("{MGMT}/notifiers/bobs"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 404);
}

#[test]
fn prometheus_counts_disconnected_clusters() {
    let Some(prometheus) = tool("DROVER_TEST_PROMETHEUS") else {
        eprintln!(
            "skipped: set DROVER_TEST_PROMETHEUS to a prometheus binary (./scripts/test does)"
        );
        return;
    };
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let checksum = ca_checksum(&m);
    let east_sim = SimProc::start(m.dir.path(), "east", 1);
    let east = import(&m, &admin, &east_sim, "east");
    let mut east_agent = agent(&m, &east, &checksum);
    let west_sim = SimProc::start(m.dir.path(), "west", 2);
    let west = import(&m, &admin, &west_sim, "west");
    let _west_agent = agent(&m, &west, &checksum);
    wait_ready(&m, &admin, &east.cluster, Duration::from_secs(60));
    wait_ready(&m, &admin, &west.cluster, Duration::from_secs(60));

    // The server's own text first.
    for (imp, nodes) in [(&east, 1.0), (&west, 2.0)] {
        let c = imp.cluster.as_str();
        wait_metric(
            &m,
            &format!("drover_cluster_connected{{cluster={c}}} 1"),
            "drover_cluster_connected",
            &[("cluster", c)],
            |v| v == 1.0,
        );
        wait_metric(
            &m,
            &format!("drover_cluster_nodes{{cluster={c}}} {nodes}"),
            "drover_cluster_nodes",
            &[("cluster", c)],
            |v| v == nodes,
        );
    }
    wait_metric(
        &m,
        "drover_clusters{state=Active} 2",
        "drover_clusters",
        &[("state", "Active")],
        |v| v == 2.0,
    );
    let (_, text) = common::curl(
        &["--cacert", &m.ca.display().to_string()],
        &m.server.url("/metrics"),
    );
    assert!(
        samples(&text, "drover_cluster_nodes")
            .iter()
            .all(|(l, _)| l.contains_key("ready")),
        "drover_cluster_nodes has a ready label: {text}"
    );

    // Prometheus scraping it.
    let prom = Prometheus::start(&prometheus, &m);
    prom.wait_for(
        "count(drover_cluster_connected == 1)",
        2.0,
        Duration::from_secs(60),
    );
    east_agent.kill();
    prom.wait_for(
        "count(drover_cluster_connected == 0)",
        1.0,
        Duration::from_secs(60),
    );
    prom.wait_for(
        &format!("drover_cluster_connected{{cluster=\"{}\"}}", east.cluster),
        0.0,
        Duration::from_secs(10),
    );
    prom.wait_for(
        "sum(drover_clusters{state=\"Unavailable\"})",
        1.0,
        Duration::from_secs(30),
    );
    prom.wait_for(
        "sum(drover_clusters{state=\"Active\"})",
        1.0,
        Duration::from_secs(30),
    );
    drop(prom);
}

/// Who may write which rules: a project's owners in their project only,
/// through the notifiers an admin lets them use; members read them; rules
/// about the server itself only in a cluster's namespace; a project's rules
/// go with it.
#[test]
fn rule_rights_and_lifecycle() {
    let m = Mgmt::start(&["--allow-private-outbound"]);
    let admin = m.admin();
    let post = |token: &str, path: &str, body: Value| {
        m.http(
            "POST",
            &format!("{MGMT}/{path}"),
            Some(token),
            Some(&body),
            &[],
        )
    };
    let (code, cluster) = post(
        &admin,
        "clusters",
        json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "spec": {"displayName": "rights"}}),
    );
    assert_eq!(code, 201, "{cluster}");
    let c = cluster["metadata"]["name"].as_str().unwrap().to_owned();
    let project = |display: &str| {
        let (code, p) = post(
            &admin,
            &format!("namespaces/{c}/projects"),
            json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "spec": {"displayName": display}}),
        );
        assert_eq!(code, 201, "{p}");
        p["metadata"]["name"].as_str().unwrap().to_owned()
    };
    let (web, shop) = (project("web"), project("shop"));
    let bob = m.user(&admin, "bob");
    let carol = m.user(&admin, "carol");
    for (user, template) in [("bob", "project-owner"), ("carol", "project-member")] {
        let (code, body) = post(
            &admin,
            &format!("namespaces/{web}/projectroletemplatebindings"),
            json!({"apiVersion": "management.drover.io/v1", "kind": "ProjectRoleTemplateBinding",
                "metadata": {"generateName": "b-"},
                "spec": {"userName": user, "roleTemplateName": template, "projectName": format!("{c}:{web}")}}),
        );
        assert_eq!(code, 201, "{body}");
    }
    let (code, body) = post_notifier(
        &m,
        &admin,
        "hook",
        json!({"webhook": {"url": "http://127.0.0.1:9/x"}}),
    );
    assert_eq!(code, 201, "{body}");
    let rule = |name: &str, spec: Value| {
        json!({"apiVersion": "management.drover.io/v1", "kind": "AlertRule",
            "metadata": {"name": name}, "spec": spec})
    };
    let quiet = json!({"condition": {"quotaUsage": {"percent": 90}}});
    let loud = json!({"condition": {"quotaUsage": {"percent": 90}}, "notifiers": ["hook"]});

    // The owner writes rules in their project, without notifiers…
    let (code, body) = post(
        &bob,
        &format!("namespaces/{web}/alertrules"),
        rule("quota", quiet.clone()),
    );
    assert_eq!(code, 201, "{body}");
    // …but not through a notifier nobody let them use,
    let (code, body) = post(
        &bob,
        &format!("namespaces/{web}/alertrules"),
        rule("loud", loud.clone()),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("use")),
        "{body}"
    );
    // nor in another project or the cluster's namespace.
    for ns in [&shop, &c] {
        let (code, body) = post(
            &bob,
            &format!("namespaces/{ns}/alertrules"),
            rule("quota", quiet.clone()),
        );
        assert_eq!(code, 403, "{ns}: {body}");
    }
    // Rules about the server are for a cluster's namespace.
    let (code, body) = post(
        &admin,
        &format!("namespaces/{web}/alertrules"),
        rule(
            "certs",
            json!({"condition": {"certificateExpiry": {"days": 14}}}),
        ),
    );
    assert_eq!(code, 422, "{body}");
    let (code, body) = post(
        &admin,
        &format!("namespaces/{c}/alertrules"),
        rule(
            "certs",
            json!({"condition": {"certificateExpiry": {"days": 14}}}),
        ),
    );
    assert_eq!(code, 201, "{body}");
    // Members read the project's rules, and write none.
    let (code, body) = m.http(
        "GET",
        &format!("{MGMT}/namespaces/{web}/alertrules/quota"),
        Some(&carol),
        None,
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(
        &carol,
        &format!("namespaces/{web}/alertrules"),
        rule("mine", quiet.clone()),
    );
    assert_eq!(code, 403, "{body}");
    // Notifiers are the admins': no read, no test for others.
    let (code, body) = m.http(
        "GET",
        &format!("{MGMT}/notifiers/hook"),
        Some(&bob),
        None,
        &[],
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = post(&bob, "notifiers/hook/test", json!({}));
    assert_eq!(code, 403, "{body}");

    // An admin lets bob use the notifier: now he may name it.
    let (code, body) = post(
        &admin,
        "globalroles",
        json!({"apiVersion": "management.drover.io/v1", "kind": "GlobalRole", "metadata": {"name": "use-hook"},
            "spec": {"rules": [{"apiGroups": ["management.drover.io"], "resources": ["notifiers"],
                                "resourceNames": ["hook"], "verbs": ["use"]}]}}),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = post(
        &admin,
        "globalrolebindings",
        json!({"apiVersion": "management.drover.io/v1", "kind": "GlobalRoleBinding", "metadata": {"generateName": "grb-"},
            "spec": {"userName": "bob", "globalRoleName": "use-hook"}}),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = wait("bob may use hook", Duration::from_secs(10), || {
        let (code, body) = post(
            &bob,
            &format!("namespaces/{web}/alertrules"),
            rule("loud", loud.clone()),
        );
        (code != 422).then_some((code, body))
    });
    assert_eq!(code, 201, "{body}");

    // The project's rules go with it.
    let (code, body) = m.http(
        "DELETE",
        &format!("{MGMT}/namespaces/{c}/projects/{web}"),
        Some(&admin),
        None,
        &[],
    );
    assert!(code == 200 || code == 202, "{body}");
    wait("the project's rules gone", Duration::from_secs(10), || {
        let (code, _) = m.http(
            "GET",
            &format!("{MGMT}/namespaces/{web}/alertrules/quota"),
            Some(&admin),
            None,
            &[],
        );
        (code == 404).then_some(())
    });
}

/// Seconds from one message to a later one.
fn secs_between(a: &Hook, b: &Hook) -> f64 {
    b.when.duration_since(a.when).as_secs_f64()
}
