//! OIDC sign-in against a real provider (npm's `oidc-provider`, started
//! here), with headless chromium on the provider's page: `drover login
//! --provider oidc --no-browser`, the web UI's single sign-on, a `groups`
//! claim granting a cluster role, codes that cannot be replayed, the
//! client secret write-only, internal addresses refused unless allowed,
//! and the provider disabled.

mod common;

use std::process::Command;
use std::time::Duration;

use common::directory::{self, OidcProvider};
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "oidc-client-secret-for-tests";

fn oidc_config(issuer: &str) -> Value {
    json!({"apiVersion": "management.drover.io/v1", "kind": "AuthConfig",
        "metadata": {"name": "oidc"},
        "spec": {"enabled": true, "oidc": {"issuer": issuer, "clientId": "drover", "clientSecret": SECRET,
                 "scopes": ["profile", "email", "groups", "offline_access"]}}})
}

/// `drover login --provider oidc --no-browser`, completed in chromium as
/// `user`; returns the CLI's config file and what the CLI printed.
fn cli_login(m: &Mgmt, name: &str, user: &str, password: &str) -> (std::path::PathBuf, String) {
    let config = m.dir.path().join(format!("{name}.yaml"));
    let mut cmd = Command::new(BIN);
    cmd.args([
        "login",
        &m.server.url(""),
        "--cacert",
        &m.ca.display().to_string(),
        "--provider",
        "oidc",
        "--no-browser",
    ])
    .env("DROVER_CONFIG", &config)
    .env_remove("DROVER_LOG");
    let mut login = Proc::spawn(cmd);
    login.wait_for("Sign in at:", Duration::from_secs(15));
    let url = login
        .log()
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http://") || l.starts_with("https://"))
        .unwrap()
        .to_owned();
    // Another page or process cannot sign the CLI in: a callback with a
    // state it did not start is turned away, and it keeps waiting.
    let waiting = login
        .log()
        .lines()
        .find_map(|l| {
            l.split("come back to ")
                .nth(1)
                .map(|r| r.split_whitespace().next().unwrap_or_default().to_owned())
        })
        .unwrap();
    let (code, _) = curl(
        &["-sS"],
        &format!("{waiting}?code=forged&state=not-this-one"),
    );
    assert_eq!(code, 404);
    assert!(
        login.running(),
        "a forged callback ended the login: {}",
        login.log()
    );
    let (code, landed, err) = directory::sso("authorize", &url, user, password);
    assert_eq!(code, 0, "{err}");
    assert!(
        landed.starts_with("http://127.0.0.1:") && landed.contains("code="),
        "{landed}"
    );
    login.ends_within("drover login", Duration::from_secs(20));
    assert!(login.child.wait().unwrap().success(), "{}", login.log());
    (config, login.log())
}

/// A sign-in started through the API and completed in chromium as `user`:
/// the query (code, state) the provider redirected back with.
fn code_and_state(
    m: &Mgmt,
    start: Value,
    user: &str,
    password: &str,
) -> std::collections::HashMap<String, String> {
    let (code, started) = m.http("POST", "/v1-public/oidc/start", None, Some(&start), &[]);
    assert_eq!(code, 200, "{started}");
    let (code, landed, err) = directory::sso(
        "authorize",
        started["url"].as_str().unwrap(),
        user,
        password,
    );
    assert_eq!(code, 0, "{err}");
    url::Url::parse(&landed)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[test]
fn oidc_users_sign_in_through_the_provider() {
    if !directory::browser_ready() {
        eprintln!("skipped: set DROVER_TEST_CHROMIUM and run `npm ci --prefix ui-tests` (./scripts/test does)");
        return;
    }
    let m = Mgmt::start(&["--allow-private-outbound", "--audit-level", "2"]);
    let admin = m.admin();
    let users = json!({
        "alice": {"password": "alice-password", "groups": ["admins", "devs"], "sub": "a1b2c3"},
        "bob": {"password": "bob-password", "groups": []},
    });
    let idp = OidcProvider::start(
        "drover",
        SECRET,
        &m.server.url("/dashboard/login/oidc/callback"),
        &users,
    );

    // The provider, with a write-only client secret.
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/authconfigs"),
        Some(&admin),
        Some(&oidc_config(&idp.issuer)),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    assert!(!body.to_string().contains(SECRET));
    let akc = m.kubeconfig("admin", &admin);
    let (code, yaml, err) = m.kubectl(&akc, &["get", "authconfig", "oidc", "-o", "yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        yaml.contains("clientId") && !yaml.contains(SECRET),
        "{yaml}"
    );

    // The `admins` group owns a cluster.
    let cluster = create_cluster(&m, &admin, "sso-owned");
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{cluster}/clusterroletemplatebindings"),
        Some(&admin),
        Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "ClusterRoleTemplateBinding",
            "metadata": {"name": "admins-own"},
            "spec": {"groupName": "oidc_group://admins", "roleTemplateName": "cluster-owner", "clusterName": cluster}})),
        &[],
    );
    assert_eq!(code, 201, "{body}");

    // The CLI, with the browser elsewhere.
    let (alice_cfg, printed) = cli_login(&m, "alice", "alice", "alice-password");
    assert!(printed.contains("as alice"), "{printed}");
    let (code, out, err) = cli(&alice_cfg, &["clusters", "ls"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sso-owned"),
        "the group claim grants the cluster: {out}"
    );
    let (bob_cfg, _) = cli_login(&m, "bob", "bob", "bob-password");
    let (code, out, err) = cli(&bob_cfg, &["clusters", "ls"], None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("sso-owned"), "bob has no group: {out}");

    // A wrong password stays on the provider's page.
    let (code, _, err) = directory::sso("ui-oidc", &m.server.url(""), "alice", "not her password");
    assert_ne!(code, 0);
    assert!(err.contains("Invalid username or password"), "{err}");

    // A client that keeps its own PKCE verifier: the code and state are
    // of no use without it.
    let verifier = "a-verifier-only-this-client-knows-0123456789";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let q = code_and_state(
        &m,
        json!({"redirectUri": "http://127.0.0.1:9/callback", "codeChallenge": challenge}),
        "bob",
        "bob-password",
    );
    for wrong in [None, Some("not-the-verifier-of-this-sign-in-0123456789")] {
        let mut body = json!({"provider": "oidc", "code": q["code"], "state": q["state"]});
        if let Some(v) = wrong {
            body["codeVerifier"] = json!(v);
        }
        let (code, _) = m.http("POST", "/v1-public/login", None, Some(&body), &[]);
        assert_eq!(code, 401, "{wrong:?}");
    }

    // A code and state are good once; a made-up state is refused.
    let q = code_and_state(
        &m,
        json!({"redirectUri": "http://127.0.0.1:9/callback"}),
        "alice",
        "alice-password",
    );
    let body = json!({"provider": "oidc", "code": q["code"], "state": q["state"]});
    let (code, first) = m.http("POST", "/v1-public/login", None, Some(&body), &[]);
    assert_eq!(code, 200, "{first}");
    let (code, _) = m.http("POST", "/v1-public/login", None, Some(&body), &[]);
    assert_eq!(code, 401, "a code is used once");
    let forged = json!({"provider": "oidc", "code": q["code"], "state": "made-up-state"});
    let (code, _) = m.http("POST", "/v1-public/login", None, Some(&forged), &[]);
    assert_eq!(code, 401);
    // Only loopback redirects may be asked for.
    for bad in [
        "https://attacker.example/cb",
        "http://127.0.0.1/cb",
        "http://127.0.0.1.attacker.example:80/cb",
    ] {
        let (code, _) = m.http(
            "POST",
            "/v1-public/oidc/start",
            None,
            Some(&json!({"redirectUri": bad})),
            &[],
        );
        assert_eq!(code, 400, "{bad}");
    }

    // The web UI's single sign-on.
    let (code, heading, err) =
        directory::sso("ui-oidc", &m.server.url(""), "alice", "alice-password");
    assert_eq!(code, 0, "{err}");
    assert!(heading.contains("Clusters"), "{heading}");

    // The audit log has the principal and groups, not the secret.
    let audit = std::fs::read_to_string(m.dir.path().join("data/audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("oidc_user://a1b2c3") && l.contains("oidc_group://admins")),
        "no OIDC login in the audit log"
    );
    assert!(!audit.contains(SECRET) && !m.server.log().contains(SECRET));
    assert!(
        !audit.contains(q["code"].as_str())
            && !audit.contains("not-the-verifier-of-this-sign-in-0123456789"),
        "an OIDC code or verifier reached the audit log"
    );

    // Disabled: its users' tokens answer 401 at once.
    let alice_token = first["token"].as_str().unwrap();
    let (code, _) = m.http(
        "GET",
        &format!("{MGMT}/clusters"),
        Some(alice_token),
        None,
        &[],
    );
    assert_eq!(code, 200);
    let (code, body) = m.http(
        "PATCH",
        &format!("{MGMT}/authconfigs/oidc"),
        Some(&admin),
        Some(&json!({"spec": {"enabled": false}})),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let (code, _) = m.http(
        "GET",
        &format!("{MGMT}/clusters"),
        Some(alice_token),
        None,
        &[],
    );
    assert_eq!(code, 401);
    let (code, _, err) = cli(&alice_cfg, &["clusters", "ls"], None);
    assert_ne!(code, 0);
    assert!(err.contains("run drover login"), "{err}");

    // Enabled again, the refresh token keeps alice's groups fresh: a group
    // taken away at the provider goes, and so does alice when the provider
    // deletes her.
    let (code, _) = m.http(
        "PATCH",
        &format!("{MGMT}/authconfigs/oidc"),
        Some(&admin),
        Some(&json!({"spec": {"enabled": true}})),
        &[],
    );
    assert_eq!(code, 200);
    let alice_user = first["user"].as_str().unwrap();
    idp.put_user(
        "alice",
        &json!({"password": "alice-password", "groups": ["devs"], "sub": "a1b2c3"}),
    );
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/users/{alice_user}/refreshgroups"),
        Some(&admin),
        Some(&json!({})),
        &[],
    );
    assert_eq!(
        (code, body["refreshed"].as_str()),
        (200, Some("groups changed")),
        "{body}"
    );
    let (code, out, err) = cli(&alice_cfg, &["clusters", "ls"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("sso-owned"),
        "the admins group is gone: {out}"
    );
    idp.delete_user("alice");
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/users/{alice_user}/refreshgroups"),
        Some(&admin),
        Some(&json!({})),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["refreshed"], "disabled or gone at their provider",
        "{body}"
    );
    let (code, _) = m.http(
        "GET",
        &format!("{MGMT}/clusters"),
        Some(alice_token),
        None,
        &[],
    );
    assert_eq!(code, 401);
}

#[test]
fn providers_at_internal_addresses_need_the_admins_allowance() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/authconfigs"),
        Some(&admin),
        Some(&oidc_config("http://127.0.0.1:9")),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = m.http(
        "POST",
        "/v1-public/oidc/start",
        None,
        Some(&json!({"redirectUri": "http://127.0.0.1:9/callback"})),
        &[],
    );
    assert_eq!(code, 503, "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1:9"),
        "no detail of the provider: {body}"
    );
    wait("the refusal in the log", Duration::from_secs(5), || {
        m.server
            .log()
            .contains("--allow-private-outbound")
            .then_some(())
    });
    // A directory at a private address: refused the same way.
    let ldap = json!({"apiVersion": "management.drover.io/v1", "kind": "AuthConfig",
        "metadata": {"name": "ldap"},
        "spec": {"enabled": true, "ldap": {"servers": ["10.0.0.1"], "serviceAccountDistinguishedName": "cn=x",
                 "serviceAccountPassword": "pw", "userSearchBase": "dc=x"}}});
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/authconfigs"),
        Some(&admin),
        Some(&ldap),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = m.http(
        "POST",
        "/v1-public/login",
        None,
        Some(&json!({"provider": "ldap", "username": "someone", "password": "x"})),
        &[],
    );
    assert_eq!(code, 503, "{body}");
    wait(
        "the directory's refusal in the log",
        Duration::from_secs(5),
        || {
            m.server
                .log()
                .contains("10.0.0.1 is a loopback or private address")
                .then_some(())
        },
    );

    // Bad configurations are refused with the field named, and change nothing.
    for (spec, field) in [
        (json!({"oidc": {"issuer": "not a url"}}), "spec.oidc.issuer"),
        (json!({"oidc": null}), "spec.oidc"),
        (json!({"oidc": {"bogus": 1}}), "bogus"),
        (json!({"ldap": {"servers": ["x"]}}), "spec.ldap"),
    ] {
        let patch = json!({"spec": spec});
        let (code, body) = m.http(
            "PATCH",
            &format!("{MGMT}/authconfigs/oidc?fieldValidation=Strict"),
            Some(&admin),
            Some(&patch),
            &[],
        );
        assert!(code == 422 || code == 400, "{patch}: {code} {body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
    let (_, now) = m.http(
        "GET",
        &format!("{MGMT}/authconfigs/oidc"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(now["spec"]["oidc"]["issuer"], "http://127.0.0.1:9");
}
