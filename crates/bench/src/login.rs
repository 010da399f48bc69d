//! `drover bench login`: directory logins against a real OpenLDAP `slapd`
//! (Debian's; `python3` generates its directory), started here over LDAPS
//! with the test directory Drover's own tests use: 1,000 users and 1,100
//! groups. Times logins through `POST /v1-public/login` of a user in 1,000
//! groups and of one in three nested groups, with nested-group lookup on
//! (the more searches), after one warm-up login each.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::env::{self, percentile, KillOnDrop, Server, ServerOptions};
use crate::{round3, BenchError, Common};

/// The directory's configuration and generator (shared with the tests).
const SLAPD_CONF: &str = include_str!("../../drover/tests/fixtures/slapd.conf");
const GENERATOR: &str = include_str!("../../drover/tests/fixtures/gen.py");

/// `drover bench login` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// Logins timed per user.
    #[arg(long, default_value_t = 50)]
    pub logins: usize,
    /// slapd's path.
    #[arg(long, default_value = "/usr/sbin/slapd")]
    pub slapd: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

fn setup(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("{what}: {e}"))
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<(), BenchError> {
    let out = cmd.output().map_err(|e| setup(what, e))?;
    if !out.status.success() {
        return Err(setup(what, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// Start slapd with the generated directory over LDAPS; returns it, its
/// LDAPS port and the CA that signs its certificate.
fn start_slapd(
    dir: &std::path::Path,
    slapd: &str,
) -> Result<(KillOnDrop, u16, String), BenchError> {
    std::fs::create_dir_all(dir.join("db")).map_err(|e| setup("directory", e))?;
    let ca = drover_net::pki::generate_ca(30).map_err(|e| setup("CA", e))?;
    let serving = drover_net::pki::generate_serving(&ca, &["127.0.0.1".to_owned()], 30)
        .map_err(|e| setup("certificate", e))?;
    for (file, text) in [
        ("ca.pem", ca.cert_pem.as_str()),
        ("server.pem", serving.cert_pem.as_str()),
        ("server.key", serving.key_pem.as_str()),
        ("gen.py", GENERATOR),
    ] {
        std::fs::write(dir.join(file), text).map_err(|e| setup(file, e))?;
    }
    let conf = SLAPD_CONF.replace("@DIR@", &dir.display().to_string());
    std::fs::write(dir.join("slapd.conf"), conf).map_err(|e| setup("slapd.conf", e))?;
    run_tool(
        Command::new("python3")
            .arg(dir.join("gen.py"))
            .arg("-o")
            .arg(dir.join("data.ldif")),
        "python3 gen.py",
    )?;
    let slapadd = std::path::Path::new(slapd).with_file_name("slapadd");
    run_tool(
        Command::new(slapadd)
            .args(["-q", "-f"])
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("data.ldif")),
        "slapadd",
    )?;
    let (port, ldaps) = (env::free_port(), env::free_port());
    let child = Command::new(slapd)
        .arg("-f")
        .arg(dir.join("slapd.conf"))
        .args([
            "-h",
            &format!("ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps}/"),
            "-d",
            "none",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| setup(slapd, e))?;
    let slapd = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", ldaps)).is_err() {
        if Instant::now() > deadline {
            return Err(BenchError::Setup("slapd did not listen within 15 s".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((slapd, ldaps, ca.cert_pem))
}

/// Run the scenario.
pub async fn run(args: LoginArgs) -> Result<Value, BenchError> {
    println!(
        "login: directory logins, {} per user, slapd over LDAPS",
        args.logins
    );
    let work = env::work_dir("drover-bench-ldap-")?;
    let (_slapd, ldaps, ca) = start_slapd(work.path(), &args.slapd)?;
    let server = Server::start_with(ServerOptions {
        datastore: args.common.datastore.clone(),
        extra: vec!["--allow-private-outbound".into()],
        ..Default::default()
    })
    .await?;
    server
        .call(
            reqwest::Method::POST,
            "/apis/management.drover.io/v1/authconfigs",
            Some(
                &json!({"apiVersion": "management.drover.io/v1", "kind": "AuthConfig",
                "metadata": {"name": "ldap"},
                "spec": {"enabled": true, "ldap": {
                    "servers": ["127.0.0.1"], "port": ldaps, "tls": true, "certificate": ca,
                    "serviceAccountDistinguishedName": "cn=readonly,dc=example,dc=org",
                    "serviceAccountPassword": "readonly-password",
                    "userSearchBase": "ou=people,dc=example,dc=org",
                    "groupSearchBase": "ou=groups,dc=example,dc=org",
                    "nestedGroupMembershipEnabled": true}}}),
            ),
        )
        .await?;
    let mut figures = serde_json::Map::new();
    println!(
        "  {:<34} {:>8} {:>8} {:>8} {:>7}",
        "user", "p50 ms", "p95 ms", "max ms", "groups"
    );
    for (user, label) in [
        ("user0000", "in 1,000 groups"),
        ("user0001", "in 3 nested groups"),
    ] {
        let mut times = Vec::with_capacity(args.logins);
        let mut groups = 0;
        for i in 0..=args.logins {
            let started = Instant::now();
            let resp = server
                .http
                .post(format!("{}/v1-public/login", server.url))
                .json(&json!({"provider": "ldap", "username": user, "password": "password", "ttlSeconds": 600}))
                .send()
                .await
                .map_err(|e| BenchError::Run(format!("login: {e}")))?;
            let took = started.elapsed().as_secs_f64() * 1e3;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or_default();
            if !status.is_success() {
                return Err(BenchError::Run(format!(
                    "login of {user}: {status}: {body}"
                )));
            }
            if i == 0 {
                // The warm-up: the pool's first connection and TLS handshake.
                let token = body["token"].as_str().unwrap_or_default();
                let review: Value = server
                    .http
                    .post(format!("{}/apis/authentication.k8s.io/v1/selfsubjectreviews", server.url))
                    .bearer_auth(token)
                    .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
                    .send()
                    .await
                    .map_err(|e| BenchError::Run(format!("whoami: {e}")))?
                    .json()
                    .await
                    .unwrap_or_default();
                groups = review["status"]["userInfo"]["groups"]
                    .as_array()
                    .map_or(0, |g| g.len().saturating_sub(1));
                continue;
            }
            times.push(took);
        }
        times.sort_by(f64::total_cmp);
        let (p50, p95, max) = (
            percentile(&times, 50.0),
            percentile(&times, 95.0),
            times.last().copied().unwrap_or_default(),
        );
        println!(
            "  {:<34} {p50:>8.1} {p95:>8.1} {max:>8.1} {groups:>7}",
            format!("{user} ({label})")
        );
        figures.insert(
            user.to_owned(),
            json!({"groups": groups, "p50Ms": round3(p50), "p95Ms": round3(p95), "maxMs": round3(max), "logins": times.len()}),
        );
    }
    Ok(Value::Object(figures))
}
