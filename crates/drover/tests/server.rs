//! `drover server` end to end: the real binary, real TLS, real curl.

mod common;

use common::{assert_clean_failure, curl, drover, printed_password, save_ca, Server};
use drover_store::{Store, StoreOptions};

/// The admin's stored password hash, read straight from the datastore.
async fn admin_hash(datastore: &str) -> String {
    let store = Store::open(datastore, StoreOptions::default())
        .await
        .unwrap();
    let kv = store
        .get("/drover/passwords/admin")
        .await
        .unwrap()
        .expect("admin has a password hash");
    store.close().await;
    String::from_utf8(kv.value.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_https_with_its_ca_and_keeps_ca_and_admin_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let datastore = format!("sqlite://{}/state.db", data.display());

    let server = Server::start(&data, &[], &[]);
    let (ca, pem) = save_ca(&server, dir.path());
    let ca = ca.to_str().unwrap();
    assert_eq!(
        curl(&["--cacert", ca], &server.url("/ping")),
        (200, "pong".to_owned())
    );
    let by_name = format!("https://localhost:{}/ping", server.port);
    assert_eq!(
        curl(&["--cacert", ca], &by_name).1,
        "pong",
        "the certificate names localhost"
    );

    let (code, health) = curl(&["--cacert", ca], &server.url("/healthz"));
    assert_eq!(code, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["datastore"]["backend"], "sqlite");
    assert_eq!(health["datastore"]["status"], "ok");

    let (code, _) = curl(&["--cacert", ca], &server.url("/dashboard/login"));
    assert_eq!(code, 200);
    let (_, metrics) = curl(&["--cacert", ca], &server.url("/metrics"));
    assert!(
        metrics.contains(r#"drover_http_requests_total{method="GET",route="/ping",code="200"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"drover_http_requests_total{method="GET",route="/dashboard/login",code="200"} 1"#
        ),
        "the web UI's pages are counted: {metrics}"
    );
    assert!(
        metrics.contains("drover_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    let password =
        printed_password(&server).expect("a generated password is printed on first start");
    assert_eq!(password.len(), 24);
    assert!(server.stop().0.success(), "SIGTERM ends the server cleanly");

    let hash = admin_hash(&datastore).await;
    assert!(hash.starts_with("$argon2id$"), "stored as an argon2id hash");
    assert!(!hash.contains(&password));
    assert!(drover_auth::password::verify(&password, &hash));

    // A restart — even with a bootstrap password set now — changes nothing.
    let again = Server::start(
        &data,
        &[],
        &[("DROVER_BOOTSTRAP_PASSWORD", "another password entirely")],
    );
    let (code, pem_again) = curl(&["--cacert", ca], &again.url("/cacerts"));
    assert_eq!(code, 200);
    assert_eq!(pem_again, pem, "/cacerts is byte-identical after a restart");
    assert_eq!(curl(&["--cacert", ca], &again.url("/ping")).1, "pong");
    assert_eq!(
        printed_password(&again),
        None,
        "no password is printed again"
    );
    assert!(again.stop().0.success());
    assert_eq!(
        admin_hash(&datastore).await,
        hash,
        "the admin's hash is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_password_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[],
        &[("DROVER_BOOTSTRAP_PASSWORD", "a very good password")],
    );
    assert_eq!(printed_password(&server), None);
    assert!(
        !server.log().contains("a very good password"),
        "the password never reaches the log"
    );
    assert!(server.stop().0.success());
    let hash = admin_hash(&format!("sqlite://{}/state.db", data.display())).await;
    assert!(drover_auth::password::verify("a very good password", &hash));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_for_machines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d"), &["--log-format", "json"], &[]);
    let (status, log) = server.stop();
    assert!(status.success());
    assert!(
        log.contains(r#""message":"drover server stopped""#),
        "{log}"
    );
    let listening = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "drover server listening")
        .unwrap_or_else(|| panic!("no JSON 'listening' line in:\n{log}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["backend"], "sqlite");
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_operators_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    openssl_cert(&cert, &key);
    let server = Server::start(
        &dir.path().join("d"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-ca",
            cert.to_str().unwrap(),
        ],
        &[],
    );
    let cert = cert.to_str().unwrap();
    assert_eq!(curl(&["--cacert", cert], &server.url("/ping")).1, "pong");
    let (_, served) = curl(&["--cacert", cert], &server.url("/cacerts"));
    assert_eq!(served, std::fs::read_to_string(cert).unwrap());
}

/// A self-signed certificate for 127.0.0.1 made by openssl.
fn openssl_cert(cert: &std::path::Path, key: &std::path::Path) {
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=drover-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn bad_starts_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let d = d.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let base = ["server", "--data-dir", d, "--listen", &listen];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    assert_clean_failure(
        &with(&["--datastore", "mysql://root@localhost/drover"]),
        "unsupported datastore \"mysql\"",
    );
    // Nothing listens on port 1.
    assert_clean_failure(
        &with(&[
            "--datastore",
            "postgres://drover:hunter2hunter2@127.0.0.1:1/drover",
        ]),
        "cannot connect to the postgres datastore",
    );
    let pg_args = with(&[
        "--datastore",
        "postgres://drover:hunter2hunter2@127.0.0.1:1/drover",
    ]);
    let (_, stderr) = drover(&pg_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !stderr.contains("hunter2hunter2"),
        "the datastore password leaked:\n{stderr}"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_file = file.join("data");
    assert_clean_failure(
        &[
            "server",
            "--data-dir",
            under_file.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        "cannot use data directory",
    );

    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    assert_clean_failure(
        &with(&["--tls-cert", missing, "--tls-key", missing]),
        "cannot use --tls-cert",
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let junk = junk.to_str().unwrap();
    assert_clean_failure(
        &with(&["--tls-cert", junk, "--tls-key", junk]),
        "no CERTIFICATE block",
    );

    let (c1, k1) = (dir.path().join("1.crt"), dir.path().join("1.key"));
    let (c2, k2) = (dir.path().join("2.crt"), dir.path().join("2.key"));
    openssl_cert(&c1, &k1);
    openssl_cert(&c2, &k2);
    assert_clean_failure(
        &with(&[
            "--tls-cert",
            c1.to_str().unwrap(),
            "--tls-key",
            k2.to_str().unwrap(),
        ]),
        "--tls-cert and --tls-key do not match",
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let fresh = dir.path().join("fresh");
    let fresh = fresh.to_str().unwrap();
    assert_clean_failure(
        &["server", "--data-dir", fresh, "--listen", &taken],
        &format!("cannot listen on {taken}"),
    );
    assert!(
        !std::path::Path::new(fresh).exists(),
        "a port-in-use failure leaves no state behind"
    );

    let out = std::process::Command::new(common::BIN)
        .args(with(&[]))
        .env("DROVER_BOOTSTRAP_PASSWORD", "short")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("drover: error: cannot create the admin user: the password must be at least 12 characters long"), "{stderr}");
}
