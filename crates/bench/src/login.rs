//! `drover bench login`: directory logins against a real OpenLDAP `slapd`
//! (Debian's; `python3` generates its directory), started here over LDAPS
//! with the test directory Drover's own tests use: 1,000 users and 1,100
//! groups. Times logins through `POST /v1-public/login` of a user in 1,000
//! groups and of one in three nested groups, with nested-group lookup on
//! (the more searches), after one warm-up login each.

use std::time::Instant;

use serde_json::{json, Value};

use crate::env::{percentile, Server, ServerOptions, Slapd};
use crate::{round3, BenchError, Common};

/// `drover bench login` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// Logins timed per user.
    #[arg(long, default_value_t = 50)]
    pub logins: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

/// Run the scenario.
pub async fn run(args: LoginArgs) -> Result<Value, BenchError> {
    println!(
        "login: directory logins, {} per user, slapd over LDAPS",
        args.logins
    );
    let slapd = Slapd::start()?;
    let (ldaps, ca) = (slapd.ldaps_port, slapd.ca_pem.clone());
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
