//! The classes of the outside review's holes, swept across every path a
//! person has — the management API (curl, kubectl), the cluster proxy, the
//! web UI's forms and the CLI:
//! - no write grants rights its author does not hold;
//! - secrets written through any of them never come back: not in a log
//!   line, an audit line, an error message or a later answer;
//! - revocation reaches long-lived connections of the management API and
//!   the web UI as well as the proxy's (see security.rs).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{
    agent, ca_checksum, cli, import, kubectl, user_kubeconfig, wait_ready, Browser, Mgmt, Proc,
    SimProc, ADMIN_PASSWORD, MGMT,
};
use serde_json::{json, Value};

const API: &str = "management.drover.io/v1";

fn created(m: &Mgmt, token: &str, path: &str, body: Value) -> Value {
    let (code, out) = m.http("POST", path, Some(token), Some(&body), &[]);
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

fn items(m: &Mgmt, admin: &str, plural: &str) -> Vec<Value> {
    let (code, list) = m.http("GET", &format!("{MGMT}/{plural}"), Some(admin), None, &[]);
    assert_eq!(code, 200, "{list}");
    list["items"].as_array().unwrap().clone()
}

fn global_roles_of(m: &Mgmt, admin: &str, user: &str) -> Vec<String> {
    let mut roles: Vec<String> = items(m, admin, "globalrolebindings")
        .iter()
        .filter(|b| b["spec"]["userName"] == user)
        .map(|b| b["spec"]["globalRoleName"].as_str().unwrap().to_owned())
        .collect();
    roles.sort();
    roles
}

fn cli_login(m: &Mgmt, user: &str, password: &str) -> PathBuf {
    let config = m.dir.path().join(format!("{user}.cli.yaml"));
    let ca = m.ca.display().to_string();
    let (code, out, err) = cli(
        &config,
        &[
            "login",
            &m.server.url(""),
            "-u",
            user,
            "--password-stdin",
            "--cacert",
            &ca,
        ],
        Some(&format!("{password}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    config
}

#[test]
fn no_path_grants_what_its_author_does_not_hold() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let cluster = common::create_cluster(&m, &admin, "east");
    let project = created(
        &m,
        &admin,
        &format!("{MGMT}/namespaces/{cluster}/projects"),
        json!({"apiVersion": API, "kind": "Project", "spec": {"displayName": "web"}}),
    )["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    // A project-context template with every right, made by an admin.
    created(
        &m,
        &admin,
        &format!("{MGMT}/roletemplates"),
        json!({"apiVersion": API, "kind": "RoleTemplate", "metadata": {"name": "wide"},
               "spec": {"context": "project", "displayName": "Wide", "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}}),
    );
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        json!({"apiVersion": API, "kind": "GlobalRole", "metadata": {"name": "writer"},
               "spec": {"rules": [{"verbs": ["create", "update", "patch", "get", "list"], "apiGroups": ["management.drover.io"],
                                   "resources": ["globalroles", "roletemplates", "globalrolebindings", "users", "users/password", "tokens"]}]}}),
    );
    let owner = m.user(&admin, "owner");
    let writer = m.user(&admin, "writer");
    m.user(&admin, "bob");
    created(
        &m,
        &admin,
        &format!("{MGMT}/namespaces/{project}/projectroletemplatebindings"),
        json!({"apiVersion": API, "kind": "ProjectRoleTemplateBinding", "metadata": {"name": "owner"},
               "spec": {"userName": "owner", "roleTemplateName": "project-owner", "projectName": format!("{cluster}:{project}")}}),
    );
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalrolebindings"),
        json!({"apiVersion": API, "kind": "GlobalRoleBinding", "metadata": {"name": "writer"},
               "spec": {"userName": "writer", "globalRoleName": "writer"}}),
    );
    // A default role, made after the writer: the writer does not hold it.
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        json!({"apiVersion": API, "kind": "GlobalRole", "metadata": {"name": "staff"},
               "spec": {"newUserDefault": true, "rules": [{"verbs": ["list"], "apiGroups": ["management.drover.io"], "resources": ["clusters"]}]}}),
    );
    let prtbs = |m: &Mgmt| items(m, &admin, "projectroletemplatebindings").len();
    let grbs = |m: &Mgmt| items(m, &admin, "globalrolebindings").len();
    let (prtbs_before, grbs_before) = (prtbs(&m), grbs(&m));

    // The management API.
    let (code, out) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{project}/projectroletemplatebindings"),
        Some(&owner),
        Some(&json!({"apiVersion": API, "kind": "ProjectRoleTemplateBinding", "metadata": {"generateName": "b-"},
                     "spec": {"userName": "bob", "roleTemplateName": "wide", "projectName": format!("{cluster}:{project}")}})),
        &[],
    );
    assert_eq!(code, 403, "a project owner granted a wider template: {out}");
    for (path, body) in [
        (
            "globalroles",
            json!({"apiVersion": API, "kind": "GlobalRole", "metadata": {"name": "all"},
                   "spec": {"rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}}),
        ),
        (
            "roletemplates",
            json!({"apiVersion": API, "kind": "RoleTemplate", "metadata": {"name": "all"},
                   "spec": {"context": "project", "roleTemplateNames": ["wide"]}}),
        ),
        (
            "globalrolebindings",
            json!({"apiVersion": API, "kind": "GlobalRoleBinding", "metadata": {"generateName": "g-"},
                   "spec": {"userName": "bob", "globalRoleName": "admin"}}),
        ),
        (
            "tokens",
            json!({"apiVersion": API, "kind": "Token", "spec": {"userName": "admin"}}),
        ),
    ] {
        let (code, out) = m.http(
            "POST",
            &format!("{MGMT}/{path}"),
            Some(&writer),
            Some(&body),
            &[],
        );
        assert_eq!(code, 403, "the writer made {path}: {out}");
    }
    let (code, out) = m.http(
        "POST",
        &format!("{MGMT}/users/admin/password"),
        Some(&writer),
        Some(&json!({"newPassword": "the writer's password for admin"})),
        &[],
    );
    assert_eq!(code, 403, "the writer set the admin's password: {out}");
    let (code, out) = m.http(
        "POST",
        &format!("{MGMT}/users"),
        Some(&writer),
        Some(&json!({"apiVersion": API, "kind": "User", "metadata": {"name": "by-api"}, "spec": {"username": "by-api"}})),
        &[],
    );
    assert_eq!(code, 201, "{out}");
    assert_eq!(global_roles_of(&m, &admin, "by-api"), vec!["user"]);

    // The CLI.
    let owner_cli = cli_login(&m, "owner", "owner has a long password");
    let (code, out, err) = cli(
        &owner_cli,
        &[
            "members",
            "add",
            "--cluster",
            &cluster,
            "--project",
            &project,
            "--user",
            "bob",
            "--role",
            "wide",
        ],
        None,
    );
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("cannot grant"), "{err}");
    let writer_cli = cli_login(&m, "writer", "writer has a long password");
    let (code, out, err) = cli(
        &writer_cli,
        &["users", "set-password", "admin", "--password-stdin"],
        Some("the writer's password for admin\n"),
    );
    assert_ne!(code, 0, "the writer set the admin's password: {out}");
    assert!(
        err.contains("forbidden") || err.contains("more rights"),
        "{err}"
    );
    let (code, out, err) = cli(
        &writer_cli,
        &["users", "create", "by-cli", "--password-stdin"],
        Some("by-cli has a long password\n"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(global_roles_of(&m, &admin, "by-cli"), vec!["user"]);

    // The web UI's forms.
    let owner_ui = Browser::sign_in(&m, "owner", "owner has a long password");
    let project_page = format!("/dashboard/clusters/{cluster}/projects/{project}");
    let (code, page) = owner_ui.submit(
        &project_page,
        &format!("{project_page}/members"),
        &[("user", "bob"), ("role", "wide")],
    );
    assert_eq!(code, 403, "the UI granted a wider template: {page}");
    let writer_ui = Browser::sign_in(&m, "writer", "writer has a long password");
    let (code, page) = writer_ui.submit(
        "/dashboard/tokens",
        "/dashboard/users/bob/admin",
        &[("value", "true")],
    );
    assert_eq!(code, 403, "the UI made bob an admin: {page}");
    let (code, page) = writer_ui.submit(
        "/dashboard/tokens",
        "/dashboard/users",
        &[
            ("username", "by-ui"),
            ("password", "by-ui has a long password"),
        ],
    );
    assert_eq!(code, 303, "{page}");
    assert_eq!(global_roles_of(&m, &admin, "by-ui"), vec!["user"]);

    // Nothing was granted along the way: the only new bindings are the
    // new users' own.
    assert_eq!(prtbs(&m), prtbs_before);
    assert_eq!(grbs(&m), grbs_before + 3);
    assert_eq!(global_roles_of(&m, &admin, "bob"), vec!["user"]);
    assert!(m.login("admin", ADMIN_PASSWORD).starts_with("token-"));
}

#[test]
fn secrets_never_come_back_by_any_path() {
    // Debug logging: nothing secret may be logged even then.
    let m = Mgmt::start_env(&["--audit-level", "3"], &[("DROVER_LOG", "debug")]);
    let admin = m.admin();
    let sim = SimProc::start(m.dir.path(), "canary", 1);
    let imp = import(&m, &admin, &sim, "canary");
    let _agent = agent(&m, &imp, &ca_checksum(&m));
    wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(20));
    let akc = user_kubeconfig(&m, &admin, &imp.cluster, "admin");
    let mut canaries: Vec<String> = Vec::new();

    // The management API: passwords set, used and refused; a token.
    let api_password = "canary-api-password-5d1e";
    m.user(&admin, "carol");
    let (code, out) = m.http(
        "POST",
        &format!("{MGMT}/users/carol/password"),
        Some(&admin),
        Some(&json!({"newPassword": api_password})),
        &[],
    );
    assert_eq!(code, 200, "{out}");
    let carol = m.login("carol", api_password);
    let wrong = "canary-wrong-current-8c2a";
    let (code, out) = m.http(
        "POST",
        &format!("{MGMT}/users/carol/password"),
        Some(&carol),
        Some(&json!({"newPassword": "canary-new-password-a7e1", "currentPassword": wrong})),
        &[],
    );
    assert_eq!(code, 403, "{out}");
    assert!(!out.to_string().contains(wrong), "{out}");
    let (code, out) = m.http(
        "POST",
        "/v1-public/login",
        None,
        Some(&json!({"username": "carol", "password": "canary-bad-login-41bd"})),
        &[],
    );
    assert_eq!(code, 401);
    assert!(!out.to_string().contains("canary"), "{out}");
    let token = created(
        &m,
        &admin,
        &format!("{MGMT}/tokens"),
        json!({"apiVersion": API, "kind": "Token", "spec": {"description": "canary"}}),
    );
    let api_token = token["status"]["token"].as_str().unwrap().to_owned();
    canaries.extend([
        api_password.to_owned(),
        wrong.to_owned(),
        "canary-new-password-a7e1".to_owned(),
        "canary-bad-login-41bd".to_owned(),
        api_token.split(':').nth(1).unwrap().to_owned(),
        carol.split(':').nth(1).unwrap().to_owned(),
    ]);

    // The proxy: Secrets created (as protobuf), applied, and refused.
    let (code, _, err) = kubectl(
        &m,
        &akc,
        &[
            "create",
            "secret",
            "generic",
            "c1",
            "--from-literal=k=canary-proxy-literal-3f1a",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let file = m.dir.path().join("c2.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c2\nstringData:\n  k: canary-proxy-applied-9b7c\n",
    )
    .unwrap();
    let (code, _, err) = kubectl(&m, &akc, &["apply", "-f", &file.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    let bad = m.dir.path().join("c3.json");
    std::fs::write(
        &bad,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c3"}, "data": {"k": "canary-not-base64-!!"}}).to_string(),
    )
    .unwrap();
    let (code, out, err) = kubectl(&m, &akc, &["create", "-f", &bad.display().to_string()]);
    assert_ne!(code, 0, "{out}");
    assert!(
        !err.contains("canary-not-base64"),
        "the error echoes the value: {err}"
    );
    canaries.extend(
        [
            "canary-proxy-literal-3f1a",
            "canary-proxy-applied-9b7c",
            "canary-not-base64-!!",
        ]
        .map(str::to_owned),
    );

    // The web UI: a user made with a password, a sign-in, an API key.
    let ui = Browser::sign_in(&m, "admin", ADMIN_PASSWORD);
    let ui_password = "canary-ui-password-77f0";
    let (code, page) = ui.submit(
        "/dashboard/users",
        "/dashboard/users",
        &[("username", "dave"), ("password", ui_password)],
    );
    assert_eq!(code, 303, "{page}");
    let dave_ui = Browser::sign_in(&m, "dave", ui_password);
    let (code, page) = dave_ui.submit(
        "/dashboard/tokens",
        "/dashboard/tokens",
        &[("description", "canary key")],
    );
    assert_eq!(code, 200, "{page}");
    let key = page
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '-'))
        .find(|w| w.starts_with("token-") && w.contains(':'))
        .unwrap_or_else(|| panic!("no key shown: {page}"))
        .to_owned();
    let (_, again) = dave_ui.get("/dashboard/tokens");
    assert!(
        !again.contains(key.split(':').nth(1).unwrap()),
        "the key is shown twice"
    );
    canaries.extend([
        ui_password.to_owned(),
        key.split(':').nth(1).unwrap().to_owned(),
    ]);

    // The CLI: a login, a user with a password, a token.
    let cli_password = "canary-cli-password-0e4d";
    let admin_cli = cli_login(&m, "admin", ADMIN_PASSWORD);
    let (code, out, err) = cli(
        &admin_cli,
        &["users", "create", "erin", "--password-stdin"],
        Some(&format!("{cli_password}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    let erin_cli = cli_login(&m, "erin", cli_password);
    let (code, out, err) = cli(
        &erin_cli,
        &["tokens", "create", "--description", "canary", "-o", "json"],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let cli_token: Value = serde_json::from_str(&out).unwrap();
    let cli_token = cli_token["status"]["token"].as_str().unwrap().to_owned();
    canaries.extend([
        cli_password.to_owned(),
        cli_token.split(':').nth(1).unwrap().to_owned(),
    ]);

    // Every later answer: every management object, as kubectl and curl
    // see them, and the UI's pages.
    let kc = m.kubeconfig("admin-mgmt", &admin);
    let mut answers = String::new();
    for plural in [
        "users",
        "tokens",
        "clusters",
        "projects",
        "globalroles",
        "globalrolebindings",
        "roletemplates",
        "clusterroletemplatebindings",
        "projectroletemplatebindings",
    ] {
        let (code, out, err) = m.kubectl(&kc, &["get", plural, "-A", "-o", "yaml"]);
        assert_eq!(code, 0, "{err}");
        answers.push_str(&out);
    }
    for page in [
        "/dashboard/users",
        "/dashboard/tokens",
        "/dashboard/settings",
    ] {
        answers.push_str(&ui.get(page).1);
    }
    // The logs (at debug) and the audit log.
    let audit = std::fs::read_to_string(m.dir.path().join("data").join("audit.log")).unwrap();
    let logs = m.server.log();
    let agent_log = _agent.log();
    for canary in &canaries {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(canary);
        for (what, text) in [
            ("the audit log", &audit),
            ("the server's log", &logs),
            ("the agent's log", &agent_log),
            ("a later answer", &answers),
        ] {
            assert!(
                !text.contains(canary.as_str()) && !text.contains(&encoded),
                "{canary:?} is in {what}"
            );
        }
    }
}

#[test]
fn revocation_reaches_management_watches_and_ui_streams() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let cluster = common::create_cluster(&m, &admin, "east");
    let frank = m.user(&admin, "frank");
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        json!({"apiVersion": API, "kind": "GlobalRole", "metadata": {"name": "viewer"},
               "spec": {"rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["management.drover.io"], "resources": ["clusters"]}]}}),
    );
    let binding = created(
        &m,
        &admin,
        &format!("{MGMT}/globalrolebindings"),
        json!({"apiVersion": API, "kind": "GlobalRoleBinding", "metadata": {"generateName": "g-"},
               "spec": {"userName": "frank", "globalRoleName": "viewer"}}),
    )["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let watch_at = |token: &str, path: &str| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sN", "--cacert"])
            .arg(&m.ca)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(m.server.url(path));
        let p = Proc::spawn(cmd);
        p.wait_for(&cluster, Duration::from_secs(10));
        p
    };
    let watch = |token: &str| watch_at(token, &format!("{MGMT}/clusters?watch=1"));

    // A watch ends when its token expires.
    let (code, out) = m.http(
        "POST",
        "/v1-public/login",
        None,
        Some(
            &json!({"username": "frank", "password": "frank has a long password", "ttlSeconds": 3}),
        ),
        &[],
    );
    assert_eq!(code, 200, "{out}");
    let mut short = watch(out["token"].as_str().unwrap());
    short.ends_within("a watch of an expired token", Duration::from_secs(8));

    // kubectl get clusters -w, and a plain watch: a deleted token and a
    // removed binding end them.
    let kc = m.kubeconfig("frank", &frank);
    let mut kubectl_watch = Proc::spawn(common::kubectl_cmd(
        &kc,
        &m.dir.path().join("kube-cache"),
        &["get", "clusters", "-w"],
    ));
    kubectl_watch.wait_for(&cluster, Duration::from_secs(10));
    let second = m.login("frank", "frank has a long password");
    let mut by_second = watch(&second);
    let mut path_form = watch_at(&second, &format!("{MGMT}/watch/clusters"));
    let (code, out) = m.http(
        "DELETE",
        &format!("{MGMT}/tokens/{}", second.split(':').next().unwrap()),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    by_second.ends_within(
        "a management watch of a deleted token",
        Duration::from_secs(5),
    );
    path_form.ends_within("a /watch/ path of a deleted token", Duration::from_secs(5));
    assert!(kubectl_watch.running(), "another token's watch ended");
    let (code, out) = m.http(
        "DELETE",
        &format!("{MGMT}/globalrolebindings/{binding}"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    kubectl_watch.ends_within(
        "kubectl get -w after its binding went",
        Duration::from_secs(5),
    );
    // Listed again, the cluster is no longer there for frank.
    let (code, out, err) = m.kubectl(&kc, &["get", "clusters"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&cluster), "{out}");

    // The web UI's live rows end when their user is disabled.
    let ui = Browser::sign_in(&m, "admin", ADMIN_PASSWORD);
    let (code, page) = ui.submit(
        "/dashboard/users",
        "/dashboard/users",
        &[
            ("username", "gina"),
            ("password", "gina has a long password"),
            ("admin", "on"),
        ],
    );
    assert_eq!(code, 303, "{page}");
    let gina = Browser::sign_in(&m, "gina", "gina has a long password");
    let mut cmd = Command::new("curl");
    cmd.args(["-sN", "--cacert"])
        .arg(&m.ca)
        .arg("-b")
        .arg(&gina.jar)
        .arg(m.server.url("/dashboard/clusters/events?rv=1"));
    let mut sse = Proc::spawn(cmd);
    sse.wait_for("event: cluster", Duration::from_secs(10));
    let (code, out) = m.http(
        "PATCH",
        &format!("{MGMT}/users/gina"),
        Some(&admin),
        Some(&json!({"spec": {"enabled": false}})),
        &[],
    );
    assert_eq!(code, 200, "{out}");
    sse.ends_within(
        "the UI's live rows of a disabled user",
        Duration::from_secs(5),
    );
}

/// Revocation made through one replica reaches a connection open on
/// another: each follows the store.
#[test]
#[cfg_attr(
    not(drover_pg),
    ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested"
)]
fn revocation_reaches_connections_on_other_replicas() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(common::postgres_database());
    let a = Mgmt::start(&["--datastore", &db]);
    let b_dir = tempfile::tempdir().unwrap();
    let b = common::Server::start(
        b_dir.path(),
        &["--datastore", &db],
        &[("DROVER_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD)],
    );
    let admin = a.admin();
    let cluster = common::create_cluster(&a, &admin, "east");
    created(
        &a,
        &admin,
        &format!("{MGMT}/globalroles"),
        json!({"apiVersion": API, "kind": "GlobalRole", "metadata": {"name": "viewer"},
               "spec": {"rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["management.drover.io"], "resources": ["clusters"]}]}}),
    );
    let henry = a.user(&admin, "henry");
    let binding = created(
        &a,
        &admin,
        &format!("{MGMT}/globalrolebindings"),
        json!({"apiVersion": API, "kind": "GlobalRoleBinding", "metadata": {"generateName": "g-"},
               "spec": {"userName": "henry", "globalRoleName": "viewer"}}),
    )["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let open_on_b = |token: &str| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sN", "--cacert"])
            .arg(&a.ca)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(b.url(&format!("{MGMT}/clusters?watch=1")));
        let p = Proc::spawn(cmd);
        p.wait_for(&cluster, Duration::from_secs(10));
        p
    };
    let second = a.login("henry", "henry has a long password");
    let mut by_second = open_on_b(&second);
    let mut by_first = open_on_b(&henry);
    let (code, out) = a.http(
        "DELETE",
        &format!("{MGMT}/tokens/{}", second.split(':').next().unwrap()),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    by_second.ends_within(
        "a watch on the other replica, of a deleted token",
        Duration::from_secs(5),
    );
    assert!(by_first.running(), "another token's watch ended");
    let (code, out) = a.http(
        "DELETE",
        &format!("{MGMT}/globalrolebindings/{binding}"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    by_first.ends_within(
        "a watch on the other replica, after its binding went",
        Duration::from_secs(5),
    );
}
