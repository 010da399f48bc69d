//! The holes an outside review found, each tried again as the attacker did,
//! against the real server, sims and agents in their own processes: rights
//! widened by writes, a failed create that destroyed a user, a namespace
//! create that moved a namespace out of its project, Secret values in the
//! audit log, a 413 lost over HTTP/2, revocation that did not reach open
//! connections, and a CLI that panicked on a closed pipe.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    agent, ca_checksum, condition, import, kubectl, kubectl_cmd, user_kubeconfig, wait, wait_ready,
    Mgmt, Proc, SimProc, ADMIN_PASSWORD, BIN, MGMT,
};
use serde_json::{json, Value};

const API: &str = "management.drover.io/v1";

fn post(m: &Mgmt, token: &str, path: &str, body: Value) -> (u16, Value) {
    m.http("POST", path, Some(token), Some(&body), &[])
}

fn created(m: &Mgmt, token: &str, path: &str, body: Value) -> Value {
    let (code, out) = post(m, token, path, body);
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

fn global_role(name: &str, rules: Value, new_user_default: bool) -> Value {
    json!({"apiVersion": API, "kind": "GlobalRole", "metadata": {"name": name},
           "spec": {"rules": rules, "newUserDefault": new_user_default}})
}

fn bind_global(m: &Mgmt, admin: &str, user: &str, role: &str) {
    created(
        m,
        admin,
        &format!("{MGMT}/globalrolebindings"),
        json!({"apiVersion": API, "kind": "GlobalRoleBinding", "metadata": {"generateName": "grb-"},
               "spec": {"userName": user, "globalRoleName": role}}),
    );
}

/// `kubectl auth can-i` against the management API, as the token's user.
fn can_i(m: &Mgmt, token: &str, args: &[&str]) -> bool {
    let kc = m.kubeconfig(&format!("can-i-{}", &token[..11]), token);
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let (code, out, err) = m.kubectl(&kc, &full);
    match out.trim() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl auth can-i {args:?}: {code} {out}{err}"),
    }
}

fn global_roles_of(m: &Mgmt, admin: &str, user: &str) -> Vec<String> {
    let (code, list) = m.http(
        "GET",
        &format!("{MGMT}/globalrolebindings"),
        Some(admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{list}");
    let mut roles: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["spec"]["userName"] == user)
        .map(|b| b["spec"]["globalRoleName"].as_str().unwrap().to_owned())
        .collect();
    roles.sort();
    roles
}

#[test]
fn roles_grant_only_what_their_author_holds() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    // A user whose only extra right is to write roles and templates.
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        global_role(
            "role-writer",
            json!([{"verbs": ["create", "update", "patch", "get", "list"], "apiGroups": ["management.drover.io"],
                    "resources": ["globalroles", "roletemplates"]}]),
            false,
        ),
    );
    let writer = m.user(&admin, "writer");
    bind_global(&m, &admin, "writer", "role-writer");

    // Rules the author does not hold: refused, with or without newUserDefault.
    for (name, default) in [("evil", false), ("evil-default", true)] {
        let (code, out) = post(
            &m,
            &writer,
            &format!("{MGMT}/globalroles"),
            global_role(
                name,
                json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
                default,
            ),
        );
        assert_eq!(code, 403, "{name}: {out}");
        assert!(
            out["message"].as_str().unwrap().contains("escalat")
                || out["message"].as_str().unwrap().contains("does not hold"),
            "{out}"
        );
    }
    // Nor by widening an existing role (their own) with an update.
    let (code, role) = m.http(
        "GET",
        &format!("{MGMT}/globalroles/role-writer"),
        Some(&writer),
        None,
        &[],
    );
    assert_eq!(code, 200, "{role}");
    let mut wider = role.clone();
    wider["spec"]["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
    let (code, out) = m.http(
        "PUT",
        &format!("{MGMT}/globalroles/role-writer"),
        Some(&writer),
        Some(&wider),
        &[],
    );
    assert_eq!(code, 403, "{out}");
    // Nor make a role of theirs a built-in that nobody may change.
    let mut locked = role.clone();
    locked["spec"]["builtin"] = json!(true);
    let (code, out) = m.http(
        "PUT",
        &format!("{MGMT}/globalroles/role-writer"),
        Some(&writer),
        Some(&locked),
        &[],
    );
    assert_eq!(code, 422, "{out}");
    // Role templates carry downstream rules: the same rule.
    let (code, out) = post(
        &m,
        &writer,
        &format!("{MGMT}/roletemplates"),
        json!({"apiVersion": API, "kind": "RoleTemplate", "metadata": {"name": "evil-template"},
               "spec": {"context": "cluster", "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}}),
    );
    assert_eq!(code, 403, "{out}");
    // A template that grants nothing may be made; one that inherits rights
    // is the same grant as having them.
    let (code, out) = post(
        &m,
        &writer,
        &format!("{MGMT}/roletemplates"),
        json!({"apiVersion": API, "kind": "RoleTemplate", "metadata": {"name": "empty"},
               "spec": {"context": "project", "rules": []}}),
    );
    assert_eq!(code, 201, "{out}");
    let (code, out) = post(
        &m,
        &writer,
        &format!("{MGMT}/roletemplates"),
        json!({"apiVersion": API, "kind": "RoleTemplate", "metadata": {"name": "evil-inherit"},
               "spec": {"context": "project", "rules": [], "roleTemplateNames": ["empty", "read-only"]}}),
    );
    assert_eq!(code, 403, "{out}");
    assert!(
        out["message"].as_str().unwrap().contains("get"),
        "names what is missing: {out}"
    );
    // What the author holds may be granted.
    let (code, out) = post(
        &m,
        &writer,
        &format!("{MGMT}/globalroles"),
        global_role(
            "list-templates",
            json!([{"verbs": ["list"], "apiGroups": ["management.drover.io"], "resources": ["roletemplates"]}]),
            false,
        ),
    );
    assert_eq!(code, 201, "{out}");

    // With `bind` on a role, a user may bind it to others, not to a group
    // of their own.
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        global_role(
            "binder",
            json!([{"verbs": ["bind"], "apiGroups": ["management.drover.io"], "resources": ["globalroles"], "resourceNames": ["admin"]},
                   {"verbs": ["create"], "apiGroups": ["management.drover.io"], "resources": ["globalrolebindings"]}]),
            false,
        ),
    );
    let binder = m.user(&admin, "binder");
    bind_global(&m, &admin, "binder", "binder");
    let (code, out) = post(
        &m,
        &binder,
        &format!("{MGMT}/globalrolebindings"),
        json!({"apiVersion": API, "kind": "GlobalRoleBinding", "metadata": {"generateName": "grb-"},
               "spec": {"groupName": "system:authenticated", "globalRoleName": "admin"}}),
    );
    assert_eq!(code, 403, "bound admin to a group of their own: {out}");
    assert!(!can_i(&m, &binder, &["*", "*"]));

    // Nothing of it reached the next user an admin creates.
    let next = m.user(&admin, "next");
    assert!(!can_i(&m, &next, &["*", "*"]));
    assert_eq!(global_roles_of(&m, &admin, "next"), vec!["user"]);
    // An admin may still make such a role.
    let (code, out) = post(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        global_role(
            "auditor",
            json!([{"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"]}]),
            false,
        ),
    );
    assert_eq!(code, 201, "{out}");
}

#[test]
fn default_roles_are_bound_only_if_the_creator_could_bind_them() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        global_role(
            "user-creator",
            json!([{"verbs": ["create"], "apiGroups": ["management.drover.io"], "resources": ["users"]}]),
            false,
        ),
    );
    let creator = m.user(&admin, "creator");
    bind_global(&m, &admin, "creator", "user-creator");
    // A default role with rights the user creator does not hold.
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        global_role(
            "staff",
            json!([{"verbs": ["get", "list"], "apiGroups": ["management.drover.io"], "resources": ["users"]}]),
            true,
        ),
    );

    let (code, out) = m.http(
        "POST",
        &format!("{MGMT}/users"),
        Some(&creator),
        Some(&json!({"apiVersion": API, "kind": "User", "metadata": {"name": "newbie"}, "spec": {"username": "newbie"}})),
        &[],
    );
    assert_eq!(code, 201, "{out}");
    assert_eq!(global_roles_of(&m, &admin, "newbie"), vec!["user"]);

    // An admin's new user gets every default role.
    let (code, out) = m.http(
        "POST",
        &format!("{MGMT}/users"),
        Some(&admin),
        Some(&json!({"apiVersion": API, "kind": "User", "metadata": {"name": "staffer"}, "spec": {"username": "staffer"}})),
        &[],
    );
    assert_eq!(code, 201, "{out}");
    assert_eq!(
        global_roles_of(&m, &admin, "staffer"),
        vec!["staff", "user"]
    );
}

#[test]
fn bindings_to_a_deleted_role_stay_dead() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let rules =
        json!([{"verbs": ["list"], "apiGroups": ["management.drover.io"], "resources": ["users"]}]);
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        global_role("lister", rules.clone(), false),
    );
    let carol = m.user(&admin, "carol");
    bind_global(&m, &admin, "carol", "lister");
    assert!(can_i(&m, &carol, &["list", "users.management.drover.io"]));

    let (code, out) = m.http(
        "DELETE",
        &format!("{MGMT}/globalroles/lister"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    assert!(!can_i(&m, &carol, &["list", "users.management.drover.io"]));
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        global_role("lister", rules, false),
    );
    assert!(
        !can_i(&m, &carol, &["list", "users.management.drover.io"]),
        "a binding to the deleted role came back to life"
    );
    assert_eq!(global_roles_of(&m, &admin, "carol"), vec!["user"]);
}

#[test]
fn a_refused_user_create_changes_nothing() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    created(
        &m,
        &admin,
        &format!("{MGMT}/globalroles"),
        global_role(
            "user-creator",
            json!([{"verbs": ["create"], "apiGroups": ["management.drover.io"], "resources": ["users"]}]),
            false,
        ),
    );
    let creator = m.user(&admin, "creator");
    bind_global(&m, &admin, "creator", "user-creator");
    let (_, before) = m.http(
        "GET",
        &format!("{MGMT}/users/admin"),
        Some(&admin),
        None,
        &[],
    );

    for body in [
        json!({"apiVersion": API, "kind": "User", "metadata": {"name": "admin"}, "spec": {"username": "someone-else"}}),
        json!({"apiVersion": API, "kind": "User", "metadata": {"name": "admin"}, "spec": {"username": "admin"}}),
        json!({"apiVersion": API, "kind": "User", "metadata": {"name": "u-other"}, "spec": {"username": "admin"}}),
    ] {
        let (code, out) = post(&m, &creator, &format!("{MGMT}/users"), body);
        assert_eq!(code, 409, "{out}");
    }
    // The admin's token, password and rights are all still there.
    let (code, after) = m.http(
        "GET",
        &format!("{MGMT}/users/admin"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "the admin's token stopped working: {after}");
    assert_eq!(before, after);
    let again = m.login("admin", ADMIN_PASSWORD);
    assert!(can_i(&m, &again, &["*", "*"]));
    assert!(can_i(&m, &admin, &["*", "*"]));
    assert_eq!(global_roles_of(&m, &admin, "admin"), vec!["admin"]);
}

#[test]
fn an_oversized_body_gets_413_over_http2_and_http1() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let body = m.dir.path().join("big.json");
    let padding = "x".repeat(4 * 1024 * 1024);
    std::fs::write(
        &body,
        json!({"apiVersion": API, "kind": "Cluster", "spec": {"displayName": padding}}).to_string(),
    )
    .unwrap();
    // Over the limit: 413. A body sent where the answer does not depend on
    // it (an unknown token, a cluster with no agent) is answered too.
    for (path, auth, expected) in [
        (format!("{MGMT}/clusters"), true, "413"),
        ("/v1-public/login".to_owned(), false, "413"),
        (format!("{MGMT}/clusters"), false, "401"),
        (
            "/k8s/clusters/c-nope/api/v1/namespaces".to_owned(),
            true,
            "503",
        ),
    ] {
        for version in ["--http2", "--http1.1"] {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", version, "-o", "/dev/null", "-w", "%{http_code}"])
                .arg("--cacert")
                .arg(&m.ca)
                .args(["-X", "POST", "-H", "Content-Type: application/json"])
                .arg("--data-binary")
                .arg(format!("@{}", body.display()));
            if auth {
                cmd.args(["-H", &format!("Authorization: Bearer {admin}")]);
            }
            let out = cmd.arg(m.server.url(&path)).output().unwrap();
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "curl {version} {path}: exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(code, expected, "{version} {path}");
        }
    }
}

#[test]
fn the_cli_exits_quietly_on_a_closed_pipe() {
    let m = Mgmt::start(&[]);
    let config = m.dir.path().join("cli.yaml");
    let out = Command::new(BIN)
        .args([
            "login",
            &m.server.url(""),
            "-u",
            "admin",
            "--password-stdin",
        ])
        .arg("--cacert")
        .arg(&m.ca)
        .env("DROVER_CONFIG", &config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = m.admin();
    for i in 0..3 {
        common::create_cluster(&m, &admin, &format!("pipe-{i}"));
    }
    for args in [
        "clusters ls -o json",
        "clusters ls -o yaml",
        "clusters ls",
        "users ls",
        "completion bash",
    ] {
        // `head -n 0` exits before drover writes: every write hits a
        // closed pipe.
        let script = format!(
            "'{BIN}' {args} 2>'{err}' | head -n 0; echo ${{PIPESTATUS[0]}}",
            err = m.dir.path().join("err.txt").display()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .env("DROVER_CONFIG", &config)
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let err = std::fs::read_to_string(m.dir.path().join("err.txt")).unwrap();
        assert!(
            !err.contains("panicked") && err.trim().is_empty(),
            "drover {args} | head -n 0: {err}"
        );
        assert!(
            status == "0" || status == "141",
            "drover {args}: exit {status}"
        );
    }
}

/// A server with a sim imported through a real agent, and a project with
/// one namespace.
struct Fleet {
    m: Mgmt,
    admin: String,
    sim: SimProc,
    agent: Proc,
    cluster: String,
    cache: PathBuf,
    admin_kc: PathBuf,
}

impl Fleet {
    fn start(extra: &[&str]) -> Fleet {
        let m = Mgmt::start(extra);
        let admin = m.admin();
        let sim = SimProc::start(m.dir.path(), "east", 1);
        let imp = import(&m, &admin, &sim, "east");
        let agent = agent(&m, &imp, &ca_checksum(&m));
        let cluster = imp.cluster.clone();
        wait_ready(&m, &admin, &cluster, Duration::from_secs(20));
        let cache = m.dir.path().join("kube-cache");
        let admin_kc = user_kubeconfig(&m, &admin, &cluster, "admin-east");
        Fleet {
            m,
            admin,
            sim,
            agent,
            cluster,
            cache,
            admin_kc,
        }
    }

    fn project(&self, display: &str) -> String {
        let p = created(
            &self.m,
            &self.admin,
            &format!("{MGMT}/namespaces/{}/projects", self.cluster),
            json!({"apiVersion": API, "kind": "Project", "spec": {"displayName": display}}),
        );
        p["metadata"]["name"].as_str().unwrap().to_owned()
    }

    fn bind(&self, project: &str, user: &str, template: &str) -> String {
        let b = created(
            &self.m,
            &self.admin,
            &format!("{MGMT}/namespaces/{project}/projectroletemplatebindings"),
            json!({"apiVersion": API, "kind": "ProjectRoleTemplateBinding",
                   "metadata": {"generateName": format!("{user}-")},
                   "spec": {"userName": user, "roleTemplateName": template,
                            "projectName": format!("{}:{project}", self.cluster)}}),
        );
        b["metadata"]["name"].as_str().unwrap().to_owned()
    }

    /// A namespace manifest in a project, for `kubectl create -f`.
    fn ns_file(&self, name: &str, project: &str) -> String {
        let path = self.m.dir.path().join(format!("ns-{name}-{project}.json"));
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": {"drover.io/project-id": format!("{}:{project}", self.cluster)}}});
        std::fs::write(&path, ns.to_string()).unwrap();
        path.display().to_string()
    }

    fn namespace(&self, name: &str, project: &str) {
        let file = self.ns_file(name, project);
        let (code, _, err) = kubectl(&self.m, &self.admin_kc, &["create", "-f", &file]);
        assert_eq!(code, 0, "{err}");
    }

    fn allowed(&self, kc: &Path, args: &[&str]) -> bool {
        let (code, _, err) = kubectl(&self.m, kc, args);
        if code != 0 && !err.to_lowercase().contains("forbidden") {
            panic!("kubectl {args:?} failed for another reason than RBAC: {err}");
        }
        code == 0
    }

    fn wait_allowed(&self, kc: &Path, args: &[&str]) {
        wait(
            &format!("kubectl {args:?} allowed"),
            Duration::from_secs(15),
            || self.allowed(kc, args).then_some(()),
        );
    }
}

#[test]
fn a_namespace_create_cannot_take_a_namespace_from_its_project() {
    let f = Fleet::start(&[]);
    let (m, admin) = (&f.m, &f.admin);
    let mine = f.project("mine");
    let theirs = f.project("theirs");
    f.namespace("theirs-ns", &theirs);
    let alice = m.user(admin, "alice");
    let bob = m.user(admin, "bob");
    f.bind(&mine, "alice", "project-member");
    f.bind(&theirs, "bob", "project-member");
    let akc = user_kubeconfig(m, &alice, &f.cluster, "alice");
    let bkc = user_kubeconfig(m, &bob, &f.cluster, "bob");
    f.wait_allowed(&bkc, &["get", "pods", "-n", "theirs-ns"]);
    // The System project's namespaces, as its member sees them.
    let (_, projects) = m.http(
        "GET",
        &format!("{MGMT}/namespaces/{}/projects", f.cluster),
        Some(admin),
        None,
        &[],
    );
    let system = projects["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["spec"]["displayName"] == "System")
        .unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let carol = m.user(admin, "carol");
    f.bind(&system, "carol", "read-only");
    let ckc = user_kubeconfig(m, &carol, &f.cluster, "carol");
    f.wait_allowed(&ckc, &["get", "pods", "-n", "kube-system"]);

    // Alice "creates" namespaces that exist, annotated with her project.
    for ns in ["theirs-ns", "kube-system"] {
        let file = f.ns_file(ns, &mine);
        let (code, _, err) = kubectl(m, &akc, &["create", "-f", &file]);
        assert_ne!(code, 0, "creating existing namespace {ns} succeeded");
        assert!(
            err.contains("AlreadyExists") || err.contains("already exists"),
            "{err}"
        );
    }
    // A later change makes the cluster's controller project again; once
    // it has (the new namespace is usable), the old ones are untouched.
    f.namespace("theirs-later", &theirs);
    f.wait_allowed(&bkc, &["get", "pods", "-n", "theirs-later"]);
    assert!(f.allowed(&bkc, &["get", "pods", "-n", "theirs-ns"]));
    assert!(f.allowed(&ckc, &["get", "pods", "-n", "kube-system"]));
    assert!(!f.allowed(&akc, &["get", "pods", "-n", "theirs-ns"]));
    assert!(!f.allowed(&akc, &["get", "pods", "-n", "kube-system"]));
    for (ns, project) in [("theirs-ns", &theirs), ("kube-system", &system)] {
        let (_, out, _) = f.sim.kubectl(
            &f.cache,
            &[
                "get",
                "ns",
                ns,
                "-o",
                "jsonpath={.metadata.annotations.drover\\.io/project-id}",
            ],
        );
        assert_eq!(out, format!("{}:{project}", f.cluster));
    }
}

#[test]
fn secret_values_never_reach_the_audit_log() {
    let f = Fleet::start(&["--audit-level", "3"]);
    let m = &f.m;
    let plain = "canary-plain-3f9a1c7e";
    let data = "canary-data-8b2d4e6f";
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let file = m.dir.path().join("secret.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: canary\n  namespace: default\nstringData:\n  plain: {plain}\ndata:\n  encoded: {}\n",
            b64(data)
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let (code, _, err) = kubectl(m, &f.admin_kc, &["apply", "-f", &file]);
    assert_eq!(code, 0, "{err}");
    // Applied again (a patch), patched as JSON, read, listed (items carry
    // no kind).
    let (code, _, err) = kubectl(m, &f.admin_kc, &["apply", "-f", &file]);
    assert_eq!(code, 0, "{err}");
    let patched = "canary-patched-c4e2a9";
    let patch =
        json!([{"op": "replace", "path": "/data/encoded", "value": b64(patched)}]).to_string();
    let (code, _, err) = kubectl(
        m,
        &f.admin_kc,
        &["patch", "secret", "canary", "--type=json", "-p", &patch],
    );
    assert_eq!(code, 0, "{err}");
    for args in [
        vec!["get", "secret", "canary", "-o", "yaml"],
        vec!["get", "secrets", "-o", "json"],
        vec!["get", "secrets", "-A", "-o", "json"],
    ] {
        let (code, out, err) = kubectl(m, &f.admin_kc, &args);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&b64(patched)),
            "kubectl shows the value to its reader"
        );
    }
    let (code, _, err) = kubectl(m, &f.admin_kc, &["delete", "secret", "canary"]);
    assert_eq!(code, 0, "{err}");
    let log_path = m.dir.path().join("data").join("audit.log");
    let log = wait(
        "the audit log has the delete",
        Duration::from_secs(5),
        || {
            let log = std::fs::read_to_string(&log_path).ok()?;
            log.lines()
                .any(|l| l.contains("\"verb\":\"delete\"") && l.contains("/secrets/canary"))
                .then_some(log)
        },
    );
    assert!(
        log.contains("\"verb\":\"patch\""),
        "the JSON patch is logged"
    );
    for canary in [
        plain.to_owned(),
        data.to_owned(),
        b64(plain),
        b64(data),
        patched.to_owned(),
        b64(patched),
    ] {
        assert!(!log.contains(&canary), "{canary} is in the audit log");
    }
    assert!(!f.m.server.log().contains(plain) && !f.m.server.log().contains(&b64(data)));
}

fn watch(f: &Fleet, token: &str, ns: &str) -> Proc {
    let mut cmd = Command::new("curl");
    cmd.args(["-sN", "--cacert"])
        .arg(&f.m.ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(f.m.server.url(&format!(
            "/k8s/clusters/{}/api/v1/namespaces/{ns}/pods?watch=1",
            f.cluster
        )));
    let p = Proc::spawn(cmd);
    // The watch is open once it has sent the pod that is there.
    p.wait_for("\"ADDED\"", Duration::from_secs(10));
    p
}

#[test]
fn revocation_reaches_open_connections() {
    let f = Fleet::start(&[]);
    let (m, admin) = (&f.m, &f.admin);
    let team = f.project("team");
    f.namespace("team-ns", &team);
    let (code, _, err) = kubectl(
        m,
        &f.admin_kc,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "-n",
            "team-ns",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let pod = wait("a web pod runs", Duration::from_secs(15), || {
        let (_, out, _) = kubectl(
            m,
            &f.admin_kc,
            &[
                "get",
                "pods",
                "-n",
                "team-ns",
                "-o",
                "jsonpath={.items[?(@.status.phase==\"Running\")].metadata.name}",
            ],
        );
        out.split_whitespace().next().map(str::to_owned)
    });
    let dave = m.user(admin, "dave");
    let binding = f.bind(&team, "dave", "project-member");
    let dkc = user_kubeconfig(m, &dave, &f.cluster, "dave");
    f.wait_allowed(&dkc, &["get", "pods", "-n", "team-ns"]);

    // A deleted token ends the watches opened with it, and only those.
    let second = m.login("dave", "dave has a long password");
    let mut kept = watch(&f, &dave, "team-ns");
    let mut cut = watch(&f, &second, "team-ns");
    let name = second.split(':').next().unwrap();
    let (code, out) = m.http(
        "DELETE",
        &format!("{MGMT}/tokens/{name}"),
        Some(admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    cut.ends_within("a watch of a deleted token", Duration::from_secs(5));
    assert!(kept.running(), "a watch of another token ended");

    // A removed binding ends the watches into the cluster it gave.
    let (code, out) = m.http(
        "DELETE",
        &format!("{MGMT}/namespaces/{team}/projectroletemplatebindings/{binding}"),
        Some(admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    kept.ends_within("a watch after its binding went", Duration::from_secs(5));
    f.bind(&team, "dave", "project-member");
    f.wait_allowed(&dkc, &["get", "pods", "-n", "team-ns"]);

    // A disabled user: watches (in either form), logs -f and exec
    // sessions end.
    let mut w = watch(&f, &dave, "team-ns");
    let mut path_form = {
        let mut cmd = Command::new("curl");
        cmd.args(["-sN", "--cacert"])
            .arg(&f.m.ca)
            .args(["-H", &format!("Authorization: Bearer {dave}")])
            .arg(f.m.server.url(&format!(
                "/k8s/clusters/{}/api/v1/watch/namespaces/team-ns/pods",
                f.cluster
            )));
        let p = Proc::spawn(cmd);
        p.wait_for("\"ADDED\"", Duration::from_secs(10));
        p
    };
    let mut logs = Proc::spawn(kubectl_cmd(
        &dkc,
        &f.cache,
        &["logs", "-f", &pod, "-n", "team-ns", "--tail=1"],
    ));
    let mut exec = kubectl_cmd(
        &dkc,
        &f.cache,
        &["exec", "-i", &pod, "-n", "team-ns", "--", "cat"],
    );
    let mut exec = exec
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exec_in = exec.stdin.take().unwrap();
    {
        use std::io::{BufRead, Write};
        exec_in.write_all(b"still here\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(exec.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "still here\n");
    }
    wait("logs -f streams", Duration::from_secs(10), || {
        (!logs.log().trim().is_empty()).then_some(())
    });
    assert!(logs.running(), "logs -f: {}", logs.log());
    let (code, out) = m.http(
        "PATCH",
        &format!("{MGMT}/users/dave"),
        Some(admin),
        Some(&json!({"spec": {"enabled": false}})),
        &[],
    );
    assert_eq!(code, 200, "{out}");
    let disabled = Instant::now();
    w.ends_within("a watch of a disabled user", Duration::from_secs(5));
    path_form.ends_within("a /watch/ path of a disabled user", Duration::from_secs(5));
    logs.ends_within("logs -f of a disabled user", Duration::from_secs(5));
    loop {
        if exec.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            disabled.elapsed() < Duration::from_secs(5),
            "an exec session of a disabled user is still open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(exec_in);

    // A revoked registration token cuts its agent's link.
    let (code, out) = m.http(
        "DELETE",
        &format!(
            "{MGMT}/namespaces/{}/clusterregistrationtokens/default-token",
            f.cluster
        ),
        Some(admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while condition(&common::cluster(m, admin, &f.cluster), "Connected") != "False" {
        assert!(
            Instant::now() < deadline,
            "the agent's link outlived its registration token:\n{}\n{}",
            f.m.server.log(),
            f.agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = m.http(
        "GET",
        &format!("/k8s/clusters/{}/api/v1/namespaces", f.cluster),
        Some(admin),
        None,
        &[],
    );
    assert_eq!(code, 503, "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = m.http(
        "GET",
        &format!("/k8s/clusters/{}/api/v1/namespaces", f.cluster),
        Some(admin),
        None,
        &[],
    );
    assert_eq!(code, 503, "the agent came back with a revoked token");
    assert!(
        f.agent.log().contains("401") || f.agent.log().contains("nauthorized"),
        "{}",
        f.agent.log()
    );
}
