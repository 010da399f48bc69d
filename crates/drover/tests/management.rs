//! The management API end to end: the real server, real kubectl, real curl.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{kubectl_cmd, Mgmt, ADMIN_PASSWORD, MGMT};
use serde_json::{json, Value};

fn cluster_yaml(dir: &Path, name: &str, display: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, format!("apiVersion: management.drover.io/v1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  displayName: {display}\n")).unwrap();
    path
}

#[test]
fn kubectl_manages_clusters_like_any_kubernetes_resource() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let kc = m.kubeconfig("admin", &admin);

    let (code, out, err) = m.kubectl(&kc, &["api-resources", "--api-group=management.drover.io"]);
    assert_eq!(code, 0, "{err}");
    for kind in [
        "Cluster",
        "ClusterRegistrationToken",
        "Project",
        "User",
        "Token",
        "GlobalRole",
        "GlobalRoleBinding",
        "RoleTemplate",
        "ClusterRoleTemplateBinding",
        "ProjectRoleTemplateBinding",
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().last() == Some(kind)),
            "{kind} missing:\n{out}"
        );
    }

    let file = cluster_yaml(m.dir.path(), "c-prod1", "Production");
    let file = file.to_str().unwrap();
    let (code, out, err) = m.kubectl(&kc, &["apply", "-f", file]);
    assert_eq!(
        (code, out.trim()),
        (0, "cluster.management.drover.io/c-prod1 created"),
        "{err}"
    );
    let (_, out, _) = m.kubectl(&kc, &["apply", "-f", file]);
    assert_eq!(out.trim(), "cluster.management.drover.io/c-prod1 unchanged");
    let changed = cluster_yaml(m.dir.path(), "c-prod1", "Production EU");
    let (_, out, err) = m.kubectl(&kc, &["apply", "-f", changed.to_str().unwrap()]);
    assert_eq!(
        out.trim(),
        "cluster.management.drover.io/c-prod1 configured",
        "{err}"
    );

    let (code, out, err) = m.kubectl(&kc, &["get", "clusters"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        ["NAME", "DISPLAY NAME", "STATE", "VERSION", "NODES", "AGE"]
    );
    assert!(
        lines[1].starts_with("c-prod1")
            && lines[1].contains("Production EU")
            && lines[1].contains("Pending"),
        "{out}"
    );

    // get -w prints a line when another client changes the cluster.
    let mut watch = kubectl_cmd(
        &kc,
        &m.dir.path().join("kube-cache"),
        &["get", "clusters", "-w"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    let (_, first) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("watch lists first");
    assert!(first.starts_with("NAME"), "{first}");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the existing cluster");
    let changed_at = Instant::now();
    let (code, body) = m.http(
        "PATCH",
        &format!("{MGMT}/clusters/c-prod1"),
        Some(&admin),
        Some(&json!({"spec": {"displayName": "Renamed"}})),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let (seen_at, line) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a line after the change");
    assert!(line.contains("Renamed"), "{line}");
    eprintln!(
        "kubectl get -w showed the change after {:?}",
        seen_at.duration_since(changed_at)
    );
    let _ = watch.kill();
    let _ = watch.wait();

    let (code, out, _) = m.kubectl(&kc, &["delete", "cluster", "c-prod1"]);
    assert_eq!(
        (code, out.trim()),
        (0, r#"cluster.management.drover.io "c-prod1" deleted"#)
    );
    let (code, _, err) = m.kubectl(&kc, &["get", "cluster", "c-prod1"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

#[test]
fn kubectl_auth_whoami_and_can_i() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let alice = m.user(&admin, "alice");
    let (akc, ukc) = (m.kubeconfig("admin", &admin), m.kubeconfig("alice", &alice));

    let (code, out, err) = m.kubectl(&akc, &["auth", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Username") && l.trim_end().ends_with("admin")),
        "{out}"
    );
    let (_, out, _) = m.kubectl(&ukc, &["auth", "whoami"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("Username") && l.trim_end().ends_with("alice")),
        "{out}"
    );
    assert!(out.contains("system:authenticated"), "{out}");

    let can = |kc: &Path, args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        let (code, out, _) = m.kubectl(kc, &full);
        (code, out.trim().to_owned())
    };
    assert_eq!(can(&akc, &["delete", "users"]), (0, "yes".into()));
    assert_eq!(
        can(&akc, &["create", "globalrolebindings"]),
        (0, "yes".into())
    );
    assert_eq!(can(&ukc, &["create", "clusters"]), (0, "yes".into()));
    assert_eq!(can(&ukc, &["delete", "users"]).1, "no");
    assert_eq!(can(&ukc, &["create", "globalrolebindings"]).1, "no");
    assert_eq!(can(&ukc, &["delete", "users"]).0, 1, "no means exit code 1");
}

#[test]
fn authorization_matrix() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let a = m.user(&admin, "alice");
    let b = m.user(&admin, "bob");

    // A creates cluster X and becomes its owner; creates a project there.
    let x = json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "metadata": {"generateName": "c-"}, "spec": {"displayName": "X"}});
    let (code, body) = m.http("POST", &format!("{MGMT}/clusters"), Some(&a), Some(&x), &[]);
    assert_eq!(code, 201, "{body}");
    let x = body["metadata"]["name"].as_str().unwrap().to_owned();
    let project = json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "metadata": {"name": "p-web"}, "spec": {"displayName": "Web"}});
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{x}/projects"),
        Some(&a),
        Some(&project),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let crt = json!({"apiVersion": "management.drover.io/v1", "kind": "ClusterRegistrationToken", "metadata": {"name": "default"}, "spec": {"clusterName": x}});
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{x}/clusterregistrationtokens"),
        Some(&a),
        Some(&crt),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        m.http("GET", &format!("{MGMT}/clusters/{x}"), Some(&a), None, &[])
            .0,
        200,
        "the owner sees it"
    );

    // B sees and changes none of it.
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .map(|i| {
                i.iter()
                    .map(|o| {
                        o["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for path in [
        format!("{MGMT}/clusters/{x}"),
        format!("{MGMT}/namespaces/{x}/projects/p-web"),
        format!("{MGMT}/namespaces/{x}/clusterregistrationtokens/default"),
        format!("{MGMT}/namespaces/{x}/clusterroletemplatebindings/owner-alice"),
        format!("{MGMT}/namespaces/p-web/projectroletemplatebindings/owner-alice"),
    ] {
        assert_eq!(
            m.http("GET", &path, Some(&b), None, &[]).0,
            403,
            "B got {path}"
        );
        assert_eq!(
            m.http("DELETE", &path, Some(&b), None, &[]).0,
            403,
            "B deleted {path}"
        );
        assert_eq!(
            m.http(
                "PATCH",
                &path,
                Some(&b),
                Some(&json!({"metadata": {"labels": {"b": "was-here"}}})),
                &[]
            )
            .0,
            403,
            "B patched {path}"
        );
    }
    for path in [
        format!("{MGMT}/clusters"),
        format!("{MGMT}/namespaces/{x}/projects"),
        format!("{MGMT}/namespaces/{x}/clusterroletemplatebindings"),
        format!("{MGMT}/namespaces/{x}/clusterregistrationtokens"),
        format!("{MGMT}/projects"),
    ] {
        let (code, body) = m.http("GET", &path, Some(&b), None, &[]);
        assert!(
            code == 403 || (code == 200 && names(&body).is_empty()),
            "B listed {path}: {code} {body}"
        );
    }
    assert_eq!(
        m.http("GET", &format!("{MGMT}/users"), Some(&b), None, &[])
            .0,
        403,
        "B cannot list users"
    );

    // B cannot read A's tokens (but sees its own).
    let (_, tokens) = m.http("GET", &format!("{MGMT}/tokens"), Some(&a), None, &[]);
    let a_token = names(&tokens)[0].clone();
    assert_eq!(
        m.http(
            "GET",
            &format!("{MGMT}/tokens/{a_token}"),
            Some(&b),
            None,
            &[]
        )
        .0,
        403
    );
    let (_, mine) = m.http("GET", &format!("{MGMT}/tokens"), Some(&b), None, &[]);
    assert!(
        !names(&mine).contains(&a_token) && !names(&mine).is_empty(),
        "{mine}"
    );

    // B cannot bind itself any role.
    let grb = |user: &str, role: &str| json!({"apiVersion": "management.drover.io/v1", "kind": "GlobalRoleBinding", "metadata": {"generateName": "grb-"}, "spec": {"userName": user, "globalRoleName": role}});
    for role in ["admin", "user", "user-base"] {
        assert_eq!(
            m.http(
                "POST",
                &format!("{MGMT}/globalrolebindings"),
                Some(&b),
                Some(&grb("bob", role)),
                &[]
            )
            .0,
            403
        );
    }
    let crtb = |user: &str, template: &str| json!({"apiVersion": "management.drover.io/v1", "kind": "ClusterRoleTemplateBinding", "metadata": {"generateName": "crtb-"}, "spec": {"userName": user, "roleTemplateName": template}});
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/namespaces/{x}/clusterroletemplatebindings"),
            Some(&b),
            Some(&crtb("bob", "cluster-owner")),
            &[]
        )
        .0,
        403
    );

    // A cannot make itself admin, nor grant admin to B.
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/globalrolebindings"),
        Some(&a),
        Some(&grb("alice", "admin")),
        &[],
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/globalrolebindings"),
        Some(&a),
        Some(&grb("bob", "admin")),
        &[],
    );
    assert_eq!(code, 403, "{body}");

    // A may make B a member of X (A holds those rules as owner) …
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{x}/clusterroletemplatebindings"),
        Some(&a),
        Some(&crtb("bob", "cluster-member")),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        m.http("GET", &format!("{MGMT}/clusters/{x}"), Some(&b), None, &[])
            .0,
        200,
        "B now sees X"
    );
    // … but cannot bind a template with rules A lacks. Admin makes A owner of
    // a project in another cluster, and adds a project template for CRDs (beyond project-owner).
    let y = json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "metadata": {"name": "c-other"}, "spec": {}});
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/clusters"),
            Some(&admin),
            Some(&y),
            &[]
        )
        .0,
        201
    );
    let p = json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "metadata": {"name": "p-api"}, "spec": {}});
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/namespaces/c-other/projects"),
            Some(&admin),
            Some(&p),
            &[]
        )
        .0,
        201
    );
    let prtb = |user: &str, template: &str| json!({"apiVersion": "management.drover.io/v1", "kind": "ProjectRoleTemplateBinding", "metadata": {"generateName": "prtb-"}, "spec": {"userName": user, "roleTemplateName": template, "projectName": "c-other:p-api"}});
    let prtbs = format!("{MGMT}/namespaces/p-api/projectroletemplatebindings");
    let (code, body) = m.http(
        "POST",
        &prtbs,
        Some(&admin),
        Some(&prtb("alice", "project-owner")),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let nodes = json!({"apiVersion": "management.drover.io/v1", "kind": "RoleTemplate", "metadata": {"name": "node-manager"},
        "spec": {"context": "project", "rules": [{"verbs": ["*"], "apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"]}]}});
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/roletemplates"),
            Some(&admin),
            Some(&nodes),
            &[]
        )
        .0,
        201
    );
    let (code, body) = m.http(
        "POST",
        &prtbs,
        Some(&a),
        Some(&prtb("bob", "project-member")),
        &[],
    );
    assert_eq!(code, 201, "A grants what A holds: {body}");
    let (code, body) = m.http(
        "POST",
        &prtbs,
        Some(&a),
        Some(&prtb("bob", "node-manager")),
        &[],
    );
    assert_eq!(code, 403, "A cannot grant rules A lacks: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not hold these permissions"),
        "{body}"
    );
    assert_eq!(
        m.http(
            "GET",
            &format!("{MGMT}/clusters/c-other"),
            Some(&a),
            None,
            &[]
        )
        .0,
        200,
        "a project owner sees its cluster"
    );
    assert_eq!(
        m.http(
            "DELETE",
            &format!("{MGMT}/clusters/c-other"),
            Some(&a),
            None,
            &[]
        )
        .0,
        403,
        "but cannot delete it"
    );

    // A disabled user's tokens fail on the next request.
    let (code, _) = m.http(
        "PATCH",
        &format!("{MGMT}/users/bob"),
        Some(&admin),
        Some(&json!({"spec": {"enabled": false}})),
        &[],
    );
    assert_eq!(code, 200);
    assert_eq!(
        m.http("GET", &format!("{MGMT}/tokens"), Some(&b), None, &[])
            .0,
        401
    );
    let (code, _) = m.http(
        "POST",
        "/v1-public/login",
        None,
        Some(&json!({"username": "bob", "password": "bob has a long password"})),
        &[],
    );
    assert_eq!(code, 401, "a disabled user cannot log in");
}

#[test]
fn tokens_end_when_deleted_or_expired_and_are_shown_once() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let token = json!({"apiVersion": "management.drover.io/v1", "kind": "Token", "metadata": {}, "spec": {"description": "ci", "ttlSeconds": 2}});
    let (code, created) = m.http(
        "POST",
        &format!("{MGMT}/tokens"),
        Some(&admin),
        Some(&token),
        &[],
    );
    assert_eq!(code, 201, "{created}");
    let secret = created["status"]["token"].as_str().unwrap().to_owned();
    let name = created["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("{name}:")));
    let (_, again) = m.http(
        "GET",
        &format!("{MGMT}/tokens/{name}"),
        Some(&admin),
        None,
        &[],
    );
    assert!(
        again["status"].get("token").is_none(),
        "the secret is shown only once: {again}"
    );
    assert!(!again
        .to_string()
        .contains(secret.split(':').nth(1).unwrap()));
    assert_eq!(
        m.http("GET", &format!("{MGMT}/clusters"), Some(&secret), None, &[])
            .0,
        200
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (code, body) = m.http("GET", &format!("{MGMT}/clusters"), Some(&secret), None, &[]);
    assert_eq!(code, 401, "expired: {body}");

    let second = m.admin();
    let (_, list) = m.http("GET", &format!("{MGMT}/tokens"), Some(&admin), None, &[]);
    let second_name = second.split(':').next().unwrap();
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["metadata"]["name"] == second_name));
    assert_eq!(
        m.http(
            "DELETE",
            &format!("{MGMT}/tokens/{second_name}"),
            Some(&admin),
            None,
            &[]
        )
        .0,
        200
    );
    assert_eq!(
        m.http("GET", &format!("{MGMT}/clusters"), Some(&second), None, &[])
            .0,
        401,
        "deleted: refused at once"
    );

    for bad in [
        "",
        "Bearer",
        "token-nope:secret",
        &format!("{}x", &admin),
        "garbage with spaces",
    ] {
        let (code, body) = m.http(
            "GET",
            &format!("{MGMT}/clusters"),
            None,
            None,
            &[&format!("Authorization: Bearer {bad}")],
        );
        assert_eq!(code, 401, "{bad:?}: {body}");
        assert_eq!(body["kind"], "Status");
    }
}

#[test]
fn login_rules() {
    let m = Mgmt::start(&[]);
    let login = |body: Value| m.http("POST", "/v1-public/login", None, Some(&body), &[]);
    let (unknown_code, unknown) =
        login(json!({"username": "nobody", "password": "whatever it is"}));
    let (wrong_code, wrong) = login(json!({"username": "admin", "password": "not the password"}));
    assert_eq!((unknown_code, wrong_code), (401, 401));
    assert_eq!(
        unknown, wrong,
        "the same answer for an unknown user and a wrong password"
    );
    assert_eq!(
        login(json!({"username": "admin"})).0,
        400,
        "missing password"
    );
    assert_eq!(
        login(json!({"username": "admin", "password": "x", "extra": 1})).0,
        400,
        "unknown field"
    );
    assert_eq!(
        m.http(
            "POST",
            "/v1-public/login",
            None,
            None,
            &["Content-Type: application/json"]
        )
        .0,
        400
    );

    // Five failures lock the username.
    for _ in 0..4 {
        assert_eq!(
            login(json!({"username": "admin", "password": "still wrong"})).0,
            401
        );
    }
    let (code, body) = login(json!({"username": "admin", "password": ADMIN_PASSWORD}));
    assert_eq!(code, 429, "locked even with the right password: {body}");
    let log = m.server.log();
    assert!(log.contains("login locked"), "the lockout is logged");
    assert!(
        !log.contains(ADMIN_PASSWORD) && !log.contains("still wrong"),
        "no password in the log"
    );

    // Client-sent impersonation headers change nothing on the management API.
    let m2 = Mgmt::start(&[]);
    let admin = m2.admin();
    let bob = m2.user(&admin, "bob");
    let (code, _) = m2.http(
        "GET",
        &format!("{MGMT}/users"),
        Some(&bob),
        None,
        &[
            "Impersonate-User: admin",
            "Impersonate-Group: system:masters",
        ],
    );
    assert_eq!(code, 403);
}

#[test]
fn users_and_passwords() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let carol = m.user(&admin, "carol");
    let change = |token: &str, body: Value| {
        m.http(
            "POST",
            &format!("{MGMT}/users/carol/password"),
            Some(token),
            Some(&body),
            &[],
        )
    };
    assert_eq!(
        change(&carol, json!({"newPassword": "carol new password"})).0,
        403,
        "own change needs the current password"
    );
    assert_eq!(
        change(
            &carol,
            json!({"newPassword": "carol new password", "currentPassword": "wrong"})
        )
        .0,
        403
    );
    assert_eq!(
        change(
            &carol,
            json!({"newPassword": "short", "currentPassword": "carol has a long password"})
        )
        .0,
        422
    );
    assert_eq!(
        change(
            &carol,
            json!({"newPassword": "carol", "currentPassword": "carol has a long password"})
        )
        .0,
        422
    );
    assert_eq!(change(&carol, json!({"newPassword": "carol new password", "currentPassword": "carol has a long password"})).0, 200);
    m.login("carol", "carol new password");
    let dave = m.user(&admin, "dave");
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/users/carol/password"),
            Some(&dave),
            Some(&json!({"newPassword": "dave took over carol"})),
            &[]
        )
        .0,
        403
    );
    // Deleting a user stops their tokens at once and frees the username.
    assert_eq!(
        m.http("GET", &format!("{MGMT}/users/dave"), Some(&dave), None, &[])
            .0,
        200,
        "users see themselves"
    );
    assert_eq!(
        m.http(
            "DELETE",
            &format!("{MGMT}/users/dave"),
            Some(&admin),
            None,
            &[]
        )
        .0,
        200
    );
    assert_eq!(
        m.http("GET", &format!("{MGMT}/users/dave"), Some(&dave), None, &[])
            .0,
        401
    );
    let (code, _) = m.http(
        "POST",
        "/v1-public/login",
        None,
        Some(&json!({"username": "dave", "password": "dave has a long password"})),
        &[],
    );
    assert_eq!(code, 401);
    m.user(&admin, "dave");
    let dup = json!({"apiVersion": "management.drover.io/v1", "kind": "User", "metadata": {"name": "carol2"}, "spec": {"username": "carol"}});
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/users"),
        Some(&admin),
        Some(&dup),
        &[],
    );
    assert_eq!(code, 409, "usernames are unique: {body}");
    let bad = json!({"apiVersion": "management.drover.io/v1", "kind": "User", "metadata": {"name": "x"}, "spec": {"username": "Has Spaces"}});
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/users"),
            Some(&admin),
            Some(&bad),
            &[]
        )
        .0,
        422
    );
}

#[test]
fn audit_level_3_records_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let m = Mgmt::start(&["--audit-level", "3", "--audit-log", log.to_str().unwrap()]);
    let admin = m.admin();
    let token = json!({"apiVersion": "management.drover.io/v1", "kind": "Token", "metadata": {}, "spec": {"description": "audit"}});
    let (code, created) = m.http(
        "POST",
        &format!("{MGMT}/tokens"),
        Some(&admin),
        Some(&token),
        &[],
    );
    assert_eq!(code, 201);
    let minted = created["status"]["token"].as_str().unwrap().to_owned();
    let erin = m.user(&admin, "erin");
    let (code, _) = m.http("POST", &format!("{MGMT}/users/erin/password"), Some(&erin), Some(&json!({"newPassword": "erin second password", "currentPassword": "erin has a long password"})), &[]);
    assert_eq!(code, 200);
    // The log is written by its own thread: wait for the last entry.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("/users/erin/password\"")
    {
        assert!(std::time::Instant::now() < deadline, "the audit log lags");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(m);
    let text = std::fs::read_to_string(&log).unwrap();
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |verb: &str, uri: &str| {
        entries
            .iter()
            .find(|e| e["verb"] == verb && e["requestURI"].as_str().unwrap().starts_with(uri))
            .unwrap_or_else(|| panic!("no {verb} {uri} in\n{text}"))
    };
    let login = find("post", "/v1-public/login");
    assert_eq!(login["responseStatus"]["code"], 200);
    assert_eq!(login["requestObject"]["username"], "admin");
    let created = find("create", "/apis/management.drover.io/v1/tokens");
    assert_eq!(created["user"]["username"], "admin");
    assert_eq!(created["level"], "RequestResponse");
    assert_eq!(created["responseObject"]["status"]["token"], "[REDACTED]");
    let own_change = entries
        .iter()
        .find(|e| {
            e["requestURI"] == "/apis/management.drover.io/v1/users/erin/password"
                && e["user"]["username"] == "erin"
        })
        .expect("erin's own password change is audited");
    assert_eq!(own_change["responseStatus"]["code"], 200);
    assert_eq!(own_change["requestObject"]["currentPassword"], "[REDACTED]");
    for secret in [
        ADMIN_PASSWORD,
        "erin has a long password",
        "erin second password",
        minted.split(':').nth(1).unwrap(),
        admin.split(':').nth(1).unwrap(),
        erin.split(':').nth(1).unwrap(),
    ] {
        assert!(!text.contains(secret), "a secret reached the audit log");
    }
}

#[test]
fn project_names_are_unique_across_clusters() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let alice = m.user(&admin, "alice");
    let mallory = m.user(&admin, "mallory");
    let cluster = |name: &str| json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "metadata": {"name": name}, "spec": {}});
    let project = |name: &str| json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "metadata": {"name": name}, "spec": {}});
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/clusters"),
            Some(&alice),
            Some(&cluster("c-alice")),
            &[]
        )
        .0,
        201
    );
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/namespaces/c-alice/projects"),
            Some(&alice),
            Some(&project("p-shop")),
            &[]
        )
        .0,
        201
    );
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/clusters"),
            Some(&mallory),
            Some(&cluster("c-mallory")),
            &[]
        )
        .0,
        201
    );
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/c-mallory/projects"),
        Some(&mallory),
        Some(&project("p-shop")),
        &[],
    );
    assert_eq!(
        code, 409,
        "a project name used in another cluster is refused: {body}"
    );
    let (code, _) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/c-mallory/projects"),
        Some(&mallory),
        Some(&project("c-alice")),
        &[],
    );
    assert_eq!(code, 409, "so is a cluster's name");
    let (_, list) = m.http(
        "GET",
        &format!("{MGMT}/namespaces/p-shop/projectroletemplatebindings"),
        Some(&mallory),
        None,
        &[],
    );
    assert!(
        list["items"].as_array().is_none_or(|i| i.is_empty()),
        "mallory sees none of alice's project bindings: {list}"
    );
    // Deleting the project frees the name.
    assert_eq!(
        m.http(
            "DELETE",
            &format!("{MGMT}/namespaces/c-alice/projects/p-shop"),
            Some(&alice),
            None,
            &[]
        )
        .0,
        200
    );
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/namespaces/c-mallory/projects"),
            Some(&mallory),
            Some(&project("p-shop")),
            &[]
        )
        .0,
        201
    );
}

#[test]
fn a_user_who_must_change_their_password_can_do_only_that() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let erin = m.user(&admin, "erin");
    assert_eq!(
        m.http(
            "PATCH",
            &format!("{MGMT}/users/erin"),
            Some(&admin),
            Some(&json!({"spec": {"mustChangePassword": true}})),
            &[]
        )
        .0,
        200
    );
    let (code, body) = m.http("GET", &format!("{MGMT}/clusters"), Some(&erin), None, &[]);
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("must change their password"),
        "{body}"
    );
    let change = json!({"newPassword": "erin's brand new password", "currentPassword": "erin has a long password"});
    assert_eq!(
        m.http(
            "POST",
            &format!("{MGMT}/users/erin/password"),
            Some(&erin),
            Some(&change),
            &[]
        )
        .0,
        200
    );
    assert_eq!(
        m.http("GET", &format!("{MGMT}/clusters"), Some(&erin), None, &[])
            .0,
        200,
        "free again after the change"
    );
}

/// `kubectl version` works against Drover, and discovery answers with a
/// trailing slash as kube-apiserver's does (`/api/`, `/apis/`,
/// `/version/`, which the Python client's `CoreApi`, `ApisApi` and
/// `VersionApi` ask for), on the management API and on a simulated
/// cluster alike.
#[test]
fn version_and_discovery_with_a_trailing_slash() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let kc = m.kubeconfig("admin", &admin);
    let (code, out, err) = m.kubectl(&kc, &["version", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let server = &v["serverVersion"];
    assert_eq!(server["major"], "1", "{out}");
    assert!(
        server["gitVersion"]
            .as_str()
            .is_some_and(|g| g.starts_with("v1.31.0+drover.")),
        "{out}"
    );
    // Anyone may read the version, as kube-apiserver lets them.
    let (code, body) = m.http("GET", "/version", None, None, &[]);
    assert_eq!(code, 200, "{body}");

    let sim = common::SimProc::start(m.dir.path(), "slash", 1);
    let sim_cache = m.dir.path().join("sim-cache");
    for (name, path, kind) in [
        ("api", "/api/", "APIVersions"),
        ("apis", "/apis/", "APIGroupList"),
    ] {
        let (code, out, err) = m.kubectl(&kc, &["get", "--raw", path]);
        assert_eq!(code, 0, "drover {name}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kind"], kind, "drover {path}: {out}");
        let (code, out, err) = sim.kubectl(&sim_cache, &["get", "--raw", path]);
        assert_eq!(code, 0, "sim {name}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kind"], kind, "sim {path}: {out}");
    }
    for (who, (code, out, err)) in [
        ("drover", m.kubectl(&kc, &["get", "--raw", "/version/"])),
        (
            "sim",
            sim.kubectl(&sim_cache, &["get", "--raw", "/version/"]),
        ),
    ] {
        assert_eq!(code, 0, "{who}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert!(
            v["gitVersion"]
                .as_str()
                .is_some_and(|g| g.starts_with("v1.")),
            "{who}: {out}"
        );
    }
}
