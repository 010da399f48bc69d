//! TLS modes and the certificate lifecycle, end to end with real parts:
//! Debian's haproxy terminating TLS in front of two replicas in
//! `--tls-mode external`; Debian's pebble (Let's Encrypt's test CA) issuing
//! short-lived certificates to two replicas; Drover's own certificate
//! renewing under load; and a CA rotation with a cluster connected and a
//! watch open through the proxy. Clients: curl, kubectl, the drover CLI
//! and the agent.
//!
//! The tests on two replicas need PostgreSQL, and are reported as ignored
//! without it.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    csrf_of, curl, free_port, wait, Mgmt, Proc, Server, SimProc, ADMIN_PASSWORD, BIN, MGMT,
};
use drover_net::pki;
use sha2::{Digest, Sha256};

/// The certificate a TLS listener on 127.0.0.1:`port` serves (not
/// verified: the tests compare what they see).
fn served(port: u16) -> Option<pki::CertInfo> {
    use base64::Engine;
    let config = drover_net::client::client_config(None, true).ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).ok()?;
    }
    let der = conn.peer_certificates()?.first()?.clone();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    pki::inspect(&pem).ok()
}

/// The flag the import manifest's agent runs with (as an environment
/// variable): where it keeps its trust.
const TRUST_SECRET: [&str; 2] = ["--trust-secret", "drover-system/drover-credentials"];

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A test CA and a certificate for `localhost` and 127.0.0.1, as files:
/// (CA PEM path, certificate path, key path).
fn test_pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca = pki::generate_ca(2).unwrap();
    let serving = pki::generate_serving(&ca, &["localhost".into(), "127.0.0.1".into()], 2).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&paths.0, &ca.cert_pem).unwrap();
    std::fs::write(&paths.1, &serving.cert_pem).unwrap();
    std::fs::write(&paths.2, &serving.key_pem).unwrap();
    paths
}

fn replica(port: u16, dir: &Path, db: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--datastore", db, "--drain-delay-seconds", "1"];
    args.extend_from_slice(extra);
    Server::start_on(
        port,
        dir,
        &args,
        &[
            ("DROVER_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD),
            ("DROVER_LOG", "info"),
        ],
    )
}

/// Requests to every port in turn until `done` says so (or the deadline);
/// every one must succeed. Returns how many were made.
fn requests_until(
    ports: &[u16],
    ca: &Path,
    deadline: Duration,
    mut done: impl FnMut() -> bool,
) -> usize {
    let start = Instant::now();
    let mut n = 0;
    loop {
        for port in ports {
            let (code, body) = curl(
                &["--cacert", &ca.display().to_string()],
                &format!("https://localhost:{port}/ping"),
            );
            assert_eq!(
                (code, body.as_str()),
                (200, "pong"),
                "request {n} to :{port}"
            );
            n += 1;
        }
        if done() {
            return n;
        }
        assert!(
            start.elapsed() < deadline,
            "not done within {deadline:?} ({n} requests)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(drover_pg),
    ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested"
)]
async fn self_signed_certificate_renews_without_restart_and_replicas_follow() {
    let db = common::postgres_database().await;
    tokio::task::block_in_place(|| {
        let dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port()];
        // Two thirds of 24 s: renewed every 16 s.
        let flags = ["--tls-validity-seconds", "24"];
        let r0 = replica(ports[0], &dir.path().join("r0"), &db, &flags);
        let r1 = replica(ports[1], &dir.path().join("r1"), &db, &flags);
        let ca = dir.path().join("ca.pem");
        let (_, pem) = curl(&["--insecure"], &r0.url("/cacerts"));
        std::fs::write(&ca, &pem).unwrap();

        let first = served(ports[0]).unwrap();
        assert!(first.issuer.starts_with("drover-ca@"), "{first:?}");
        assert!(first.not_after - first.not_before <= 24 + 300, "{first:?}");
        wait(
            "both replicas serve one certificate",
            Duration::from_secs(10),
            || (served(ports[1])?.serial == first.serial).then_some(()),
        );
        // Requests all along, while one replica renews and the other picks
        // the renewal up; neither restarts.
        let mut seen = BTreeSet::new();
        let n = requests_until(&ports, &ca, Duration::from_secs(90), || {
            let (a, b) = (served(ports[0]), served(ports[1]));
            if let (Some(a), Some(b)) = (a, b) {
                seen.insert(a.serial.clone());
                a.serial == b.serial && seen.len() >= 3
            } else {
                false
            }
        });
        println!(
            "{n} requests, all answered, across {} serving certificates",
            seen.len()
        );
        let issued: usize = [&r0, &r1]
            .iter()
            .map(|r| r.log().matches("issued the serving certificate").count())
            .sum();
        assert!(issued >= 2, "{issued} certificates issued");
        // Expiry is visible.
        let (_, metrics) = curl(
            &["--cacert", &ca.display().to_string()],
            &r1.url("/metrics"),
        );
        let line = metrics
            .lines()
            .find(|l| l.starts_with("drover_certificate_expiry_seconds{certificate=\"serving\""))
            .unwrap_or_else(|| panic!("{metrics}"));
        let left: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((0..=24).contains(&left), "{line}");
        assert!(metrics.contains("drover_certificate_expiry_seconds{certificate=\"ca\""));
    });
}

/// Debian's pebble with its own TLS certificate (from a test CA), short
/// certificate lifetimes, and HTTP-01 validation on `http_port`.
struct Pebble {
    proc: Proc,
    directory: String,
    /// The CA of pebble's own HTTPS.
    api_ca: PathBuf,
    /// The root pebble issues under.
    root: PathBuf,
}

impl Pebble {
    fn start(dir: &Path, http_port: u16, validity_seconds: u64) -> Pebble {
        let (api_ca, cert, key) = test_pki(dir, "pebble");
        let (listen, manage) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{manage}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_seconds,
        }});
        let path = dir.join("pebble.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&path)
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Always a fresh authorization: every order is validated.
            .env("PEBBLE_AUTHZREUSE", "0");
        let proc = Proc::spawn(cmd);
        proc.wait_for("Pebble ACME server", Duration::from_secs(10));
        let root = dir.join("pebble-root.pem");
        let pem = wait("pebble's root", Duration::from_secs(10), || {
            let out = Command::new("curl")
                .args(["-sSf", "--cacert"])
                .arg(&api_ca)
                .arg(format!("https://localhost:{manage}/roots/0"))
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        });
        std::fs::write(&root, pem).unwrap();
        Pebble {
            proc,
            directory: format!("https://localhost:{listen}/dir"),
            api_ca,
            root,
        }
    }

    fn issued(&self) -> usize {
        self.proc.log().matches("Issued certificate serial").count()
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(drover_pg),
    ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested"
)]
async fn acme_certificate_from_pebble_is_shared_and_renewed() {
    let db = common::postgres_database().await;
    tokio::task::block_in_place(|| {
        let dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port()];
        let http = [free_port(), free_port()];
        // Pebble validates on the first replica's HTTP-01 port; whichever
        // replica orders, the answer comes from the datastore.
        let pebble = Pebble::start(dir.path(), http[0], 30);
        let replicas: Vec<Server> = (0..2)
            .map(|i| {
                let listen = format!("127.0.0.1:{}", http[i]);
                replica(
                    ports[i],
                    &dir.path().join(format!("r{i}")),
                    &db,
                    &[
                        "--acme-domain",
                        "localhost",
                        "--acme-email",
                        "ops@example.com",
                        "--acme-directory",
                        &pebble.directory,
                        "--acme-ca-bundle",
                        &pebble.api_ca.display().to_string(),
                        "--acme-http-listen",
                        &listen,
                        "--tls-ca",
                        &pebble.root.display().to_string(),
                    ],
                )
            })
            .collect();
        let first = wait("a certificate from pebble", Duration::from_secs(60), || {
            let a = served(ports[0])?;
            let b = served(ports[1])?;
            (a.issuer.starts_with("Pebble Intermediate") && a.serial == b.serial).then_some(a)
        });
        assert_eq!(first.names, ["localhost"]);
        // /cacerts is the root it chains to; curl checks the chain.
        let (_, cacerts) = curl(
            &["--cacert", &pebble.root.display().to_string()],
            &replicas[0]
                .url("/cacerts")
                .replace("127.0.0.1", "localhost"),
        );
        assert_eq!(cacerts, std::fs::read_to_string(&pebble.root).unwrap());

        // Renewed at two thirds of 30 s, twice, under requests; no restart.
        let mut seen = BTreeSet::from([first.serial.clone()]);
        let n = requests_until(&ports, &pebble.root, Duration::from_secs(120), || {
            match (served(ports[0]), served(ports[1])) {
                (Some(a), Some(b)) if a.serial == b.serial => {
                    seen.insert(a.serial);
                    seen.len() >= 3
                }
                _ => false,
            }
        });
        let orders: usize = replicas
            .iter()
            .map(|r| r.log().matches("ACME: ordering a certificate").count())
            .sum();
        let by_replica: Vec<usize> = replicas
            .iter()
            .map(|r| r.log().matches("ACME: certificate obtained").count())
            .collect();
        println!(
            "{n} requests, all answered; {} certificates served; orders {orders}, obtained by replica {by_replica:?}; pebble issued {}",
            seen.len(),
            pebble.issued()
        );
        // One order per certificate: never both replicas for one renewal.
        assert_eq!(
            orders,
            pebble.issued(),
            "orders placed vs certificates issued"
        );
        assert_eq!(by_replica.iter().sum::<usize>(), pebble.issued());
        assert!(pebble.issued() >= 3);
        for r in &replicas {
            assert!(!r.log().contains("the order failed"), "{}", r.log());
        }
    });
}

/// haproxy terminating TLS with `cert` (PEM with its key) in front of
/// `ports`, connecting from 127.0.0.2 (the trusted proxy address).
fn haproxy(dir: &Path, lb: u16, ports: &[u16], cert: &Path) -> Proc {
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server r{i} 127.0.0.1:{p}\n"))
        .collect();
    let cfg = format!(
        "global\n  maxconn 4000\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  timeout tunnel 1h\n  timeout check 1s\n  retries 3\n  option redispatch\n  option forwardfor\n\
         frontend drover\n  bind 127.0.0.1:{lb} ssl crt {} alpn h2,http/1.1\n  http-request set-header X-Forwarded-Proto https\n  default_backend replicas\n\
         backend replicas\n  balance roundrobin\n  option httpchk GET /healthz\n  http-check expect status 200\n\
         \x20 default-server check inter 500ms fall 2 rise 2 source 127.0.0.2\n{servers}",
        cert.display()
    );
    common::haproxy(dir, lb, &cfg)
}

/// The audit entries (JSON lines) of every replica's log whose user agent
/// is `agent`.
fn audited(dirs: &[PathBuf], agent: &str) -> Vec<serde_json::Value> {
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("audit.log")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .filter(|e| e["userAgent"] == agent)
        .collect()
}

/// curl with a cookie jar: (status, body).
fn browse(jar: &Path, ca: &Path, args: &[&str], url: &str) -> (u16, String) {
    let mut all = vec![
        "--cacert".to_owned(),
        ca.display().to_string(),
        "-c".into(),
        jar.display().to_string(),
        "-b".into(),
        jar.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    curl(&all, url)
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(drover_pg),
    ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested"
)]
async fn external_mode_behind_haproxy_terminating_tls() {
    let db = common::postgres_database().await;
    tokio::task::block_in_place(|| {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_pki(dir.path(), "balancer");
        let combined = dir.path().join("balancer.pem");
        std::fs::write(
            &combined,
            std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap(),
        )
        .unwrap();
        let ports = [free_port(), free_port()];
        let lb = free_port();
        let url = format!("https://127.0.0.1:{lb}");
        let data: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("r{i}"))).collect();
        let replicas: Vec<Server> = (0..2)
            .map(|i| {
                replica(
                    ports[i],
                    &data[i],
                    &db,
                    &[
                        "--tls-mode",
                        "external",
                        "--trusted-proxies",
                        "127.0.0.2/32",
                        "--server-url",
                        &url,
                        "--tls-ca",
                        &ca.display().to_string(),
                        "--audit-level",
                        "1",
                    ],
                )
            })
            .collect();
        let _haproxy = haproxy(dir.path(), lb, &ports, &combined);
        // Plain HTTP behind the balancer.
        let (code, body) = curl(&[], &format!("http://127.0.0.1:{}/ping", ports[0]));
        assert_eq!((code, body.as_str()), (200, "pong"));
        // Clients see the balancer's certificate and the CA it chains to.
        let m = Mgmt::attach(Server::elsewhere(lb), ca.clone());
        wait(
            "haproxy sends to both replicas",
            Duration::from_secs(20),
            || {
                let ids: BTreeSet<String> = (0..8)
                    .filter_map(|_| {
                        let (_, v) = m.http("GET", "/healthz", None, None, &[]);
                        v["replica"].as_str().map(str::to_owned)
                    })
                    .collect();
                (ids.len() == 2).then_some(())
            },
        );
        let (code, pem) = curl(
            &["--cacert", &ca.display().to_string()],
            &m.server.url("/cacerts"),
        );
        assert_eq!(code, 200);
        assert_eq!(pem, std::fs::read_to_string(&ca).unwrap());
        let admin = m.admin();

        // A cluster imported through the balancer; its agent's WebSocket
        // goes through it too.
        let sim = SimProc::start(dir.path(), "behind-lb", 1);
        let imp = common::import(&m, &admin, &sim, "behind-lb");
        assert!(imp.manifest_url.starts_with(&url), "{}", imp.manifest_url);
        let _agent = common::agent(&m, &imp, &common::ca_checksum(&m));
        common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(30));

        // kubectl through the balancer and the proxy: reads, writes, logs
        // and exec (an upgrade through haproxy).
        let kc = common::user_kubeconfig(&m, &admin, &imp.cluster, "admin-lb");
        let kubeconfig = std::fs::read_to_string(&kc).unwrap();
        assert!(
            kubeconfig.contains(&format!("server: {url}/k8s/clusters/")),
            "{kubeconfig}"
        );
        let (code, out, err) = m.kubectl(&kc, &["get", "nodes"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("behind-lb-node-"), "{out}");
        let (code, _, err) = m.kubectl(&kc, &["create", "deployment", "web", "--image=nginx"]);
        assert_eq!(code, 0, "{err}");
        let pod = wait("a web pod runs", Duration::from_secs(20), || {
            let (_, out, _) = m.kubectl(
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
        let (code, out, err) = m.kubectl(&kc, &["exec", &pod, "--", "echo", "through-haproxy"]);
        assert_eq!((code, out.trim()), (0, "through-haproxy"), "{err}");
        let (code, out, err) = m.kubectl(&kc, &["logs", &pod, "--tail=1"]);
        assert_eq!(code, 0, "{err}");
        assert!(!out.trim().is_empty());

        // The web UI through the balancer: sign in, see the cluster.
        let jar = dir.path().join("ui.jar");
        let (code, page) = browse(&jar, &ca, &[], &m.server.url("/dashboard/login"));
        assert_eq!(code, 200, "{page}");
        let csrf = csrf_of(&page);
        let (code, page) = browse(
            &jar,
            &ca,
            &[
                "--data-urlencode",
                "username=admin",
                "--data-urlencode",
                &format!("password={ADMIN_PASSWORD}"),
                "--data-urlencode",
                &format!("_csrf={csrf}"),
            ],
            &m.server.url("/dashboard/login"),
        );
        assert_eq!(code, 303, "{page}");
        let (code, page) = browse(&jar, &ca, &[], &m.server.url("/dashboard/clusters"));
        assert_eq!(code, 200);
        assert!(page.contains("behind-lb"), "{page}");

        // Client addresses: from the balancer, X-Forwarded-For is believed
        // (read from the right, so a forged first hop is not); from anyone
        // else it is ignored.
        let path = format!("{MGMT}/clusters");
        let bearer = format!("Authorization: Bearer {admin}");
        let (code, _) = curl(
            &[
                "--interface",
                "127.0.0.3",
                "--cacert",
                &ca.display().to_string(),
                "-H",
                &bearer,
                "-H",
                "X-Forwarded-For: 198.51.100.7",
                "-A",
                "xff-through-balancer",
            ],
            &m.server.url(&path),
        );
        assert_eq!(code, 200);
        let (code, _) = curl(
            &[
                "-H",
                &bearer,
                "-H",
                "X-Forwarded-For: 203.0.113.9",
                "-H",
                "X-Forwarded-Proto: http",
                "-A",
                "xff-direct",
            ],
            &format!("http://127.0.0.1:{}{path}", ports[0]),
        );
        assert_eq!(
            code, 200,
            "an untrusted peer's X-Forwarded-Proto is ignored too"
        );
        let sources = |agent: &str| {
            wait(
                &format!("audit entries of {agent}"),
                Duration::from_secs(10),
                || {
                    let found = audited(&data, agent);
                    (!found.is_empty()).then_some(found)
                },
            )
            .iter()
            .map(|e| e["sourceIPs"].clone())
            .collect::<Vec<_>>()
        };
        assert_eq!(
            sources("xff-through-balancer"),
            [serde_json::json!(["127.0.0.3"])]
        );
        assert_eq!(sources("xff-direct"), [serde_json::json!(["127.0.0.1"])]);
        // A trusted balancer saying the client used plain HTTP: redirected
        // to the server URL.
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
            ])
            .args(["--interface", "127.0.0.2", "-H", "X-Forwarded-Proto: http"])
            .arg(format!(
                "http://127.0.0.1:{}/dashboard/clusters?x=1",
                ports[1]
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("308 {url}/dashboard/clusters?x=1")
        );
        drop(replicas);
    });
}

#[test]
fn ca_rotation_keeps_clusters_connected_and_tells_old_kubeconfigs() {
    let mut m = Mgmt::start(&[]);
    let admin = m.admin();
    let cache = m.dir.path().join("kube-cache");
    let sim = SimProc::start(m.dir.path(), "rotating", 1);
    let imp = common::import(&m, &admin, &sim, "rotating");
    let old_pem = std::fs::read_to_string(&m.ca).unwrap();
    let old_checksum = common::ca_checksum(&m);
    let agent_cmd = |m: &Mgmt, checksum: &str, keeps_trust: bool| {
        let mut cmd = common::agent_cmd(m, &imp, checksum);
        if keeps_trust {
            cmd.args(TRUST_SECRET);
        }
        cmd
    };
    // First an agent that could not keep a new CA for a restart: the
    // rotation is refused and undone, and nothing changes.
    let mut agent = Proc::spawn(agent_cmd(&m, &old_checksum, false));
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(30));
    let cli_config = common::cli_login_token(&m, &admin);
    let (code, out, err) = common::cli(&cli_config, &["certs", "rotate-ca"], None);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("the CA was not rotated"), "{err}");
    let (_, pem) = curl(&["--insecure"], &m.server.url("/cacerts"));
    assert_eq!(pem, old_pem, "/cacerts after an undone rotation");
    let (code, out, _) = common::cli(&cli_config, &["certs", "ls"], None);
    assert_eq!(code, 0);
    assert!(!out.contains("under way"), "{out}");
    // The agent was told the new checksums, then the current one alone.
    wait(
        "the agent trusts the current CA alone again",
        Duration::from_secs(10),
        || (agent.log().matches("trusting them").count() >= 2).then_some(()),
    );
    agent.kill();

    // The agent as the import manifest runs it: it keeps its trust in its
    // Secret.
    let mut agent = Proc::spawn(agent_cmd(&m, &old_checksum, true));
    agent.wait_for("connected to the Drover server", Duration::from_secs(20));

    // A kubeconfig and a CLI login from before, and a watch open through
    // the proxy.
    let before = common::user_kubeconfig(&m, &admin, &imp.cluster, "before");
    let mut watch = common::kubectl_cmd(
        &before,
        &cache,
        &["get", "pods", "-n", "default", "-w", "-o", "name"],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (code, _, err) = sim.kubectl(
        &cache,
        &["run", "before-rotation", "--image=nginx", "-n", "default"],
    );
    assert_eq!(code, 0, "{err}");
    wait("the watch sees a pod", Duration::from_secs(15), || {
        rx.try_iter()
            .any(|l| l.contains("before-rotation"))
            .then_some(())
    });

    // Rotate, as an admin, with the CLI.
    let (code, out, err) = common::cli(&cli_config, &["certs", "rotate-ca"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("The CA was rotated"), "{out}");
    assert!(out.contains("Agents that now trust the new CA: 1"), "{out}");
    let (_, new_pem) = curl(&["--insecure"], &m.server.url("/cacerts"));
    assert_ne!(new_pem, old_pem);
    let new_checksum = sha256_hex(new_pem.as_bytes());
    assert!(out.contains(&new_checksum), "{out}");
    let new_ca = m.dir.path().join("new-ca.pem");
    std::fs::write(&new_ca, &new_pem).unwrap();
    let served_now = served(m.server.port).unwrap();
    assert_eq!(served_now.issuer, pki::inspect(&new_pem).unwrap().subject);

    // The agent took the new checksums, kept them in its Secret, and was
    // never re-imported; the watch opened before goes on.
    agent.wait_for("trusting them", Duration::from_secs(5));
    let (code, stored, err) = sim.kubectl(
        &cache,
        &[
            "get",
            "secret",
            "drover-credentials",
            "-n",
            "drover-system",
            "-o",
            "jsonpath={.data.ca-checksum}",
        ],
    );
    assert_eq!(code, 0, "{err}");
    use base64::Engine;
    let stored = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(stored.trim())
            .unwrap(),
    )
    .unwrap();
    assert!(stored.split(',').any(|c| c == new_checksum), "{stored}");
    let (code, _, err) = sim.kubectl(
        &cache,
        &["run", "after-rotation", "--image=nginx", "-n", "default"],
    );
    assert_eq!(code, 0, "{err}");
    wait(
        "the open watch sees a pod made after the rotation",
        Duration::from_secs(15),
        || {
            rx.try_iter()
                .any(|l| l.contains("after-rotation"))
                .then_some(())
        },
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // A kubeconfig downloaded now works; one from before is told what to do.
    let old_ca = std::mem::replace(&mut m.ca, new_ca.clone());
    let after = common::user_kubeconfig(&m, &admin, &imp.cluster, "after");
    let (code, out, err) = m.kubectl(&after, &["get", "pods", "-n", "default"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("after-rotation"), "{out}");
    let (_, certs) = m.http("GET", "/v1-admin/certificates", Some(&admin), None, &[]);
    println!("certificates after the rotation: {certs}");
    // curl (OpenSSL) trusting only the old CA reaches the server too.
    let (code, _) = curl(
        &["--cacert", &old_ca.display().to_string()],
        &m.server.url("/ping"),
    );
    assert_eq!(code, 200, "a client that trusts only the old CA");
    let (code, _, err) = m.kubectl(&before, &["get", "pods", "-n", "default"]);
    println!(
        "kubectl with a kubeconfig from before the rotation: {}",
        err.trim()
    );
    assert_ne!(code, 0);
    assert!(err.contains("download it again"), "{err}");

    // The agent, restarted with what it wrote into its Secret (as the
    // import manifest's Deployment would), connects to the new CA; with
    // only the old checksum it refuses, naming the fix.
    agent.kill();
    let mut stale = Proc::spawn(agent_cmd(&m, &old_checksum, true));
    stale.ends_within("an agent trusting only the old CA", Duration::from_secs(20));
    println!("an agent that trusts only the old CA: {}", stale.log());
    assert!(stale.log().contains("rotated"), "{}", stale.log());
    let restarted = Proc::spawn(agent_cmd(&m, &stored, true));
    restarted.wait_for("connected to the Drover server", Duration::from_secs(20));
    let (code, _, err) = m.kubectl(&after, &["get", "nodes"]);
    assert_eq!(code, 0, "{err}");

    // The CLI: logging in again shows the change and takes the new CA.
    let fingerprint = drover_net::client::fingerprint(&new_pem).unwrap();
    let (code, _, err) = common::cli(
        &cli_config,
        &[
            "login",
            &m.server.url(""),
            "--token",
            &admin,
            "--ca-fingerprint",
            &fingerprint,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("has changed since you last logged in"),
        "{err}"
    );
    let (code, out, err) = common::cli(&cli_config, &["certs", "ls"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("serving") && out.contains(&new_checksum),
        "{out}"
    );
    // The settings page lists the certificates with their expiry.
    let (code, page) = {
        let jar = m.dir.path().join("ui.jar");
        let (_, login) = browse(&jar, &new_ca, &[], &m.server.url("/dashboard/login"));
        let csrf = csrf_of(&login);
        browse(
            &jar,
            &new_ca,
            &[
                "--data-urlencode",
                "username=admin",
                "--data-urlencode",
                &format!("password={ADMIN_PASSWORD}"),
                "--data-urlencode",
                &format!("_csrf={csrf}"),
            ],
            &m.server.url("/dashboard/login"),
        );
        browse(&jar, &new_ca, &[], &m.server.url("/dashboard/settings"))
    };
    assert_eq!(code, 200);
    assert!(
        page.contains("id=\"certificates\"") && page.contains("Serving certificate"),
        "{page}"
    );
    assert!(page.contains("days ("), "{page}");
}

/// `drover server` with these flags must fail at once with one line, and
/// write nothing.
fn refused_start(extra: &[&str], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let mut args = vec!["server", "--data-dir", &data_arg];
    args.extend_from_slice(extra);
    common::assert_clean_failure(&args, expect);
    assert!(
        !data.join("state.db").exists(),
        "{extra:?} wrote a datastore"
    );
}

#[test]
fn bad_tls_starts_fail_with_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = test_pki(dir.path(), "a");
    let (_, _, other_key) = test_pki(dir.path(), "b");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (cert, key, other_key, not_pem) = (
        cert.display().to_string(),
        key.display().to_string(),
        other_key.display().to_string(),
        not_pem.display().to_string(),
    );
    refused_start(
        &["--listen", &listen, "--tls-mode", "external"],
        "--tls-mode external needs --trusted-proxies",
    );
    refused_start(
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-mode",
            "external",
            "--trusted-proxies",
            "10.0.0.0/8",
        ],
        "needs --server-url",
    );
    // A flag's value clap refuses: a usage error (exit 2), one line.
    let (code, stderr) = common::drover(&[
        "server",
        "--listen",
        &listen,
        "--trusted-proxies",
        "10.0.0.0/33",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not an address or a CIDR"), "{stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");

    refused_start(
        &[
            "--listen",
            &listen,
            "--tls-cert",
            &cert,
            "--tls-key",
            &other_key,
        ],
        "--tls-cert and --tls-key do not match",
    );
    refused_start(
        &[
            "--listen",
            &listen,
            "--tls-cert",
            &not_pem,
            "--tls-key",
            &key,
        ],
        "cannot use --tls-cert",
    );
    refused_start(
        &[
            "--listen",
            &listen,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &key,
        ],
        "cannot use --tls-ca",
    );
    refused_start(
        &["--listen", &listen, "--tls-ca", &cert],
        "with Drover's own certificate, leave it out",
    );
    refused_start(
        &[
            "--listen",
            &listen,
            "--acme-domain",
            "*.example.com",
            "--acme-email",
            "a@example.com",
        ],
        "wildcards need the DNS-01 challenge",
    );
    refused_start(
        &["--listen", &listen, "--acme-domain", "drover.example.com"],
        "needs --acme-email",
    );
    refused_start(
        &[
            "--listen",
            &listen,
            "--acme-domain",
            "10.0.0.1",
            "--acme-email",
            "a@example.com",
        ],
        "is not a DNS name",
    );
    refused_start(
        &[
            "--listen",
            &listen,
            "--acme-domain",
            "drover.example.com",
            "--acme-email",
            "a@example.com",
            "--acme-ca-bundle",
            &not_pem,
        ],
        "cannot use --acme-ca-bundle",
    );
    refused_start(
        &[
            "--listen",
            &listen,
            "--tls-mode",
            "external",
            "--trusted-proxies",
            "127.0.0.1",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        "belong on the balancer",
    );
}

#[test]
fn a_rotation_cut_short_by_a_killed_server_is_undone_with_abort() {
    let mut m = Mgmt::start(&[]);
    let admin = m.admin();
    let sim = SimProc::start(m.dir.path(), "cut-short", 1);
    let imp = common::import(&m, &admin, &sim, "cut-short");
    let old_pem = std::fs::read_to_string(&m.ca).unwrap();
    let mut cmd = common::agent_cmd(&m, &imp, &common::ca_checksum(&m));
    cmd.args(TRUST_SECRET);
    let agent = Proc::spawn(cmd);
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(30));
    let cli_config = common::cli_login_token(&m, &admin);

    // The server dies (SIGKILL) while the new CA signs but the old one is
    // not yet retired.
    let mut rotating = Command::new(BIN)
        .args(["certs", "rotate-ca"])
        .env("DROVER_CONFIG", &cli_config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait("the new CA signs", Duration::from_secs(20), || {
        m.server
            .log()
            .contains("CA rotation: the new CA signs the serving certificate")
            .then_some(())
    });
    let _ = m.server.child.kill();
    let _ = m.server.child.wait();
    let _ = rotating.wait();
    m.restart_killed();

    // Left under way; another rotation is refused until it is undone.
    let (_, bundle) = curl(&["--insecure"], &m.server.url("/cacerts"));
    assert!(bundle.starts_with(&old_pem) && bundle.len() > old_pem.len());
    let (code, out, _) = common::cli(&cli_config, &["certs", "ls"], None);
    assert_eq!(code, 0);
    assert!(out.contains("under way"), "{out}");
    let (code, _, err) = common::cli(&cli_config, &["certs", "rotate-ca"], None);
    assert_ne!(code, 0);
    assert!(err.contains("already under way"), "{err}");
    // The agent, told the new checksums before the kill, reconnects.
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent
        .log()
        .matches("connected to the Drover server")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the agent did not reconnect: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(30));

    let (code, out, err) = common::cli(&cli_config, &["certs", "rotate-ca", "--abort"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("undone"), "{out}");
    let (_, pem) = curl(&["--insecure"], &m.server.url("/cacerts"));
    assert_eq!(pem, old_pem);
    // The old CA signs the serving certificate again, and the agent trusts
    // it alone again.
    wait("the old CA serves again", Duration::from_secs(10), || {
        let served = served(m.server.port)?;
        (served.issuer == pki::inspect(&old_pem).unwrap().subject).then_some(())
    });
    wait(
        "the agent trusts the old CA alone",
        Duration::from_secs(15),
        || (agent.log().matches("trusting them").count() >= 2).then_some(()),
    );
    let kc = common::user_kubeconfig(&m, &admin, &imp.cluster, "after-abort");
    let (code, _, err) = m.kubectl(&kc, &["get", "nodes"]);
    assert_eq!(code, 0, "{err}");
}
