//! Directory login against a real OpenLDAP `slapd` (Debian), started here
//! with a generated directory of 1,000 users and 1,100 groups, over LDAPS
//! with a test CA: refusals, nested groups granting project access through
//! the proxy, a group removed with `ldapmodify` taking that access away,
//! the browser sign-in, the audit log, write-only secrets and disabling the
//! provider.

mod common;

use std::time::Duration;

use common::directory::{self, Slapd, READONLY_DN, READONLY_PASSWORD, USER_PASSWORD};
use common::*;
use serde_json::{json, Value};

const GROUPS: &str = "ou=groups,dc=example,dc=org";

fn ldap_login(m: &Mgmt, user: &str, password: &str) -> (u16, Value) {
    m.http(
        "POST",
        "/v1-public/login",
        None,
        Some(&json!({"provider": "ldap", "username": user, "password": password})),
        &[],
    )
}

fn whoami_groups(m: &Mgmt, token: &str, name: &str) -> Vec<String> {
    let kc = m.kubeconfig(name, token);
    let (code, out, err) = m.kubectl(&kc, &["auth", "whoami", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn directory_users_log_in_and_their_groups_grant_access() {
    let ldap = Slapd::start();
    let m = Mgmt::start(&[
        "--allow-private-outbound",
        "--group-refresh-seconds",
        "2",
        "--audit-level",
        "2",
    ]);
    let admin = m.admin();

    // The provider, over LDAPS with the test CA; its password is write-only.
    let config = json!({"apiVersion": "management.drover.io/v1", "kind": "AuthConfig",
        "metadata": {"name": "ldap"},
        "spec": {"enabled": true, "ldap": {
            "servers": ["127.0.0.1"], "port": ldap.ldaps_port, "tls": true,
            "certificate": ldap.ca_pem,
            "serviceAccountDistinguishedName": READONLY_DN,
            "serviceAccountPassword": READONLY_PASSWORD,
            "userSearchBase": "ou=people,dc=example,dc=org",
            "userSearchFilter": "(!(pwdAccountLockedTime=*))",
            "groupSearchBase": GROUPS,
            "nestedGroupMembershipEnabled": true}}});
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/authconfigs"),
        Some(&admin),
        Some(&config),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    assert!(!body.to_string().contains(READONLY_PASSWORD), "{body}");
    let akc = m.kubeconfig("admin", &admin);
    let (code, yaml, err) = m.kubectl(&akc, &["get", "authconfigs", "-o", "yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        yaml.contains("userSearchBase") && !yaml.contains(READONLY_PASSWORD),
        "{yaml}"
    );
    // A second create collides, with kube's words, and changes nothing.
    let (code, _) = m.http(
        "POST",
        &format!("{MGMT}/authconfigs"),
        Some(&admin),
        Some(&config),
        &[],
    );
    assert_eq!(code, 409);
    // Another name is not a provider.
    let mut other = config.clone();
    other["metadata"]["name"] = json!("kerberos");
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/authconfigs"),
        Some(&admin),
        Some(&other),
        &[],
    );
    assert_eq!(code, 422, "{body}");

    // Refusals: one message, nothing of the directory.
    for (user, password) in [
        ("user0001", ""),
        ("user0001", "wrong"),
        ("*", USER_PASSWORD),
        ("user0001)(uid=*", USER_PASSWORD),
        ("*)(objectClass=*", USER_PASSWORD),
        ("user0001\\00", USER_PASSWORD),
        ("disabled", USER_PASSWORD),
        ("nobody", USER_PASSWORD),
    ] {
        let (code, body) = ldap_login(&m, user, password);
        assert_eq!(code, 401, "{user:?}/{password:?}: {body}");
        assert_eq!(body["message"], "invalid username or password", "{body}");
        assert!(!body.to_string().contains("dc=example"), "{body}");
    }

    // A user in three nested groups.
    let (code, body) = ldap_login(&m, "user0001", USER_PASSWORD);
    assert_eq!(code, 200, "{body}");
    let u1 = body["token"].as_str().unwrap().to_owned();
    let groups = whoami_groups(&m, &u1, "u1");
    for g in ["devs", "platform", "engineering"] {
        assert!(
            groups.contains(&format!("ldap_group://cn={g},{GROUPS}")),
            "{g} missing from {groups:?}"
        );
    }
    // A user in 1,000 groups (`drover bench login` times it).
    let (code, body) = ldap_login(&m, "user0000", USER_PASSWORD);
    assert_eq!(code, 200, "{body}");
    let u0 = body["token"].as_str().unwrap().to_owned();
    assert!(whoami_groups(&m, &u0, "u0").len() > 1000);

    // The browser sign-in, with the LDAP account type.
    if directory::browser_ready() {
        let (code, out, err) =
            directory::sso("ui-ldap", &m.server.url(""), "user0002", USER_PASSWORD);
        assert_eq!(code, 0, "{out}\n{err}");
    } else {
        eprintln!("browser sign-in skipped: set DROVER_TEST_CHROMIUM (./scripts/test does)");
    }

    // A nested group bound to a project gives kubectl access to its
    // namespaces through the proxy.
    let checksum = ca_checksum(&m);
    let sim = SimProc::start(m.dir.path(), "ldap", 1);
    let imp = import(&m, &admin, &sim, "ldap");
    let _agent = agent(&m, &imp, &checksum);
    wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(60));
    let c = imp.cluster.clone();
    let (code, project) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{c}/projects"),
        Some(&admin),
        Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "spec": {"displayName": "platform"}})),
        &[],
    );
    assert_eq!(code, 201, "{project}");
    let p = project["metadata"]["name"].as_str().unwrap().to_owned();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team", "annotations": {"drover.io/project-id": format!("{c}:{p}")}}});
    let ns_file = m.dir.path().join("ns.json");
    std::fs::write(&ns_file, ns.to_string()).unwrap();
    let admin_kc = user_kubeconfig(&m, &admin, &c, "admin-c");
    let (code, _, err) = kubectl(
        &m,
        &admin_kc,
        &["create", "-f", &ns_file.display().to_string()],
    );
    assert_eq!(code, 0, "{err}");
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{p}/projectroletemplatebindings"),
        Some(&admin),
        Some(
            &json!({"apiVersion": "management.drover.io/v1", "kind": "ProjectRoleTemplateBinding",
            "metadata": {"generateName": "platform-"},
            "spec": {"groupName": format!("ldap_group://cn=platform,{GROUPS}"),
                     "roleTemplateName": "project-member", "projectName": format!("{c}:{p}")}}),
        ),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    // A directory user who has not logged in yet, found and bound with the
    // CLI by name: the binding names their principal, and their first login
    // is that very user.
    let cfg = m.dir.path().join("admin-cli.yaml");
    let url = m.server.url("");
    let ca = m.ca.display().to_string();
    let (code, _, err) = cli(
        &cfg,
        &[
            "login",
            &url,
            "--cacert",
            &ca,
            "-u",
            "admin",
            "--password-stdin",
        ],
        Some(ADMIN_PASSWORD),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&cfg, &["members", "search", "user000"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ldap_user://uid=user0003,ou=people,dc=example,dc=org"),
        "{out}"
    );
    let (code, out, err) = cli(
        &cfg,
        &[
            "members",
            "add",
            "--cluster",
            &c,
            "--project",
            &p,
            "--user",
            "user0003",
            "--role",
            "project-member",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, body) = ldap_login(&m, "user0003", USER_PASSWORD);
    assert_eq!(code, 200, "{body}");
    let u3 = body["token"].as_str().unwrap().to_owned();
    let (_, user) = m.http(
        "GET",
        &format!("{MGMT}/users/{}", body["user"].as_str().unwrap()),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(user["spec"]["username"], "user0003", "{user}");
    assert_eq!(user["spec"]["displayName"], "User 0003", "{user}");
    let u3kc = user_kubeconfig(&m, &u3, &c, "u3-c");
    wait(
        "the bound principal's access downstream",
        Duration::from_secs(30),
        || {
            let (code, _, _) = kubectl(&m, &u3kc, &["get", "pods", "-n", "team"]);
            (code == 0).then_some(())
        },
    );

    // A local user of the same name is another account.
    let _local = m.user(&admin, "user0004");
    let (code, body) = ldap_login(&m, "user0004", USER_PASSWORD);
    assert_eq!(code, 200, "{body}");
    assert_ne!(body["user"], "user0004", "{body}");

    let ukc = user_kubeconfig(&m, &u1, &c, "u1-c");
    wait(
        "the group's access downstream",
        Duration::from_secs(30),
        || {
            let (code, _, _) = kubectl(&m, &ukc, &["get", "pods", "-n", "team"]);
            (code == 0).then_some(())
        },
    );

    // A watch open through the proxy on that access.
    let (code, _, err) = kubectl(
        &m,
        &admin_kc,
        &[
            "create",
            "configmap",
            "settings",
            "-n",
            "team",
            "--from-literal=a=b",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut watch = Proc::spawn(kubectl_cmd(
        &ukc,
        &m.dir.path().join("u1-cache"),
        &["get", "configmaps", "-n", "team", "-w"],
    ));
    watch.wait_for("settings", Duration::from_secs(15));

    // Out of the group in the directory: the access ends within the
    // refresh interval, for the token already issued, and so does the
    // open watch.
    ldap.modify(&format!(
        "dn: cn=devs,{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid=user0001,ou=people,dc=example,dc=org\n"
    ));
    wait(
        "the removal to take the access away",
        Duration::from_secs(30),
        || {
            let (code, _, err) = kubectl(&m, &ukc, &["get", "pods", "-n", "team"]);
            (code != 0 && err.to_lowercase().contains("forbidden")).then_some(())
        },
    );
    watch.ends_within(
        "a watch that relied on the lost group",
        Duration::from_secs(30),
    );
    let groups = whoami_groups(&m, &u1, "u1");
    assert!(
        !groups.iter().any(|g| g.contains("cn=platform")),
        "{groups:?}"
    );

    // The audit log names the provider, the principal and the groups, and
    // holds no password.
    let audit = std::fs::read_to_string(m.dir.path().join("data/audit.log")).unwrap();
    let login_line = audit
        .lines()
        .find(|l| l.contains("drover.io/principal") && l.contains("uid=user0001"))
        .unwrap_or_else(|| panic!("no provider login in the audit log"));
    assert!(
        login_line.contains("\"ldap\"") && login_line.contains("cn=devs"),
        "{login_line}"
    );
    assert!(!audit.contains(READONLY_PASSWORD));
    assert!(
        !audit.contains("\"password\":\"password\""),
        "a password reached the audit log"
    );
    assert!(!m.server.log().contains(READONLY_PASSWORD));

    // The CLI signs a directory user in.
    let u2cfg = m.dir.path().join("user0002-cli.yaml");
    let (code, out, err) = cli(
        &u2cfg,
        &[
            "login",
            &url,
            "--cacert",
            &ca,
            "-u",
            "user0002",
            "--provider",
            "ldap",
            "--password-stdin",
        ],
        Some(USER_PASSWORD),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("as user0002"), "{out}");
    let (code, out, err) = cli(&u2cfg, &["whoami", "-o", "json"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ldap_group://cn=devs"), "{out}");

    // Groups read from the user's memberOf (Active Directory's way), the
    // nested ones through the groups' member.
    let (code, body) = m.http(
        "PATCH",
        &format!("{MGMT}/authconfigs/ldap"),
        Some(&admin),
        Some(&json!({"spec": {"ldap": {"groupMemberMappingAttribute": "memberOf"}}})),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = ldap_login(&m, "user0002", USER_PASSWORD);
    assert_eq!(code, 200, "{body}");
    let groups = whoami_groups(&m, body["token"].as_str().unwrap(), "u2-memberof");
    for g in ["devs", "platform", "engineering"] {
        assert!(
            groups.contains(&format!("ldap_group://cn={g},{GROUPS}")),
            "{g}: {groups:?}"
        );
    }

    // StartTLS on the plain port works as well.
    let (code, body) = m.http(
        "PATCH",
        &format!("{MGMT}/authconfigs/ldap"),
        Some(&admin),
        Some(&json!({"spec": {"ldap": {"port": ldap.port, "tls": false, "starttls": true}}})),
        &[],
    );
    assert_eq!(
        code, 422,
        "moving the provider needs its password again: {body}"
    );
    assert!(
        body.to_string().contains("serviceAccountPassword"),
        "{body}"
    );
    let (code, body) = m.http(
        "PATCH",
        &format!("{MGMT}/authconfigs/ldap"),
        Some(&admin),
        Some(
            &json!({"spec": {"ldap": {"port": ldap.port, "tls": false, "starttls": true,
                                       "serviceAccountPassword": READONLY_PASSWORD}}}),
        ),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = ldap_login(&m, "user0005", USER_PASSWORD);
    assert_eq!(code, 200, "{body}");

    // Disabling the provider stops its users' tokens at once.
    let (code, body) = m.http(
        "PATCH",
        &format!("{MGMT}/authconfigs/ldap"),
        Some(&admin),
        Some(&json!({"spec": {"enabled": false}})),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let (code, _) = m.http("GET", &format!("{MGMT}/clusters"), Some(&u0), None, &[]);
    assert_eq!(code, 401);
    let (code, _) = ldap_login(&m, "user0002", USER_PASSWORD);
    assert_eq!(code, 401);
    // Local users keep working.
    let (code, _) = m.http("GET", &format!("{MGMT}/clusters"), Some(&admin), None, &[]);
    assert_eq!(code, 200);
}

/// With the schedule far off, an admin's refresh takes a group away, and a
/// user locked in the directory loses their tokens.
#[test]
fn an_admin_refreshes_a_directory_user_now() {
    let ldap = Slapd::start();
    let m = Mgmt::start(&["--allow-private-outbound"]);
    let admin = m.admin();
    let config = json!({"apiVersion": "management.drover.io/v1", "kind": "AuthConfig",
        "metadata": {"name": "ldap"},
        "spec": {"enabled": true, "ldap": {
            "servers": ["127.0.0.1"], "port": ldap.port,
            "serviceAccountDistinguishedName": READONLY_DN,
            "serviceAccountPassword": READONLY_PASSWORD,
            "userSearchBase": "ou=people,dc=example,dc=org",
            "userSearchFilter": "(!(pwdAccountLockedTime=*))",
            "groupSearchBase": GROUPS}}});
    // The CLI applies it from a file.
    let file = m.dir.path().join("ldap.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let cfg = m.dir.path().join("admin-cli.yaml");
    let (code, _, err) = cli(
        &cfg,
        &[
            "login",
            &m.server.url(""),
            "--cacert",
            &m.ca.display().to_string(),
            "-u",
            "admin",
            "--password-stdin",
        ],
        Some(ADMIN_PASSWORD),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(
        &cfg,
        &["providers", "apply", "-f", &file.display().to_string()],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(&cfg, &["providers", "ls"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("ldap") && !out.contains(READONLY_PASSWORD),
        "{out}"
    );

    let (code, body) = ldap_login(&m, "user0002", USER_PASSWORD);
    assert_eq!(code, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let body_user = body["user"].clone();
    assert!(whoami_groups(&m, &token, "u2")
        .iter()
        .any(|g| g.contains("cn=devs")));

    ldap.modify(&format!(
        "dn: cn=devs,{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid=user0002,ou=people,dc=example,dc=org\n"
    ));
    let (code, out, err) = cli(&cfg, &["users", "refresh-groups", "user0002"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("groups changed"), "{out}");
    assert!(!whoami_groups(&m, &token, "u2")
        .iter()
        .any(|g| g.contains("cn=devs")));

    ldap.modify("dn: uid=user0002,ou=people,dc=example,dc=org\nchangetype: modify\nadd: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n");
    let (code, out, err) = cli(&cfg, &["users", "refresh-groups", "user0002"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("disabled or gone at their provider"), "{out}");
    // Its tokens are gone with it, not just refused.
    let (_, tokens) = m.http("GET", &format!("{MGMT}/tokens"), Some(&admin), None, &[]);
    assert!(
        !tokens["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["spec"]["userName"] == body_user),
        "{tokens}"
    );
    let (code, _) = m.http("GET", &format!("{MGMT}/clusters"), Some(&token), None, &[]);
    assert_eq!(code, 401);
    let (code, _) = ldap_login(&m, "user0002", USER_PASSWORD);
    assert_eq!(code, 401);
}

/// The settings page configures the directory, and a cluster's member
/// picker finds a directory group as one types and binds it.
#[test]
fn directory_settings_and_member_picker_in_the_browser() {
    if !directory::browser_ready() {
        eprintln!("skipped: set DROVER_TEST_CHROMIUM (./scripts/test does)");
        return;
    }
    let ldap = Slapd::start();
    let m = Mgmt::start(&["--allow-private-outbound"]);
    let admin = m.admin();
    let cluster = create_cluster(&m, &admin, "picker");
    let platform = format!("ldap_group://cn=platform,{GROUPS}");
    let settings = json!({
        "servers": "127.0.0.1", "port": ldap.ldaps_port, "tls": "ldaps", "ca": ldap.ca_pem,
        "serviceAccount": READONLY_DN, "serviceAccountPassword": READONLY_PASSWORD,
        "userSearchBase": "ou=people,dc=example,dc=org", "userSearchFilter": "(!(pwdAccountLockedTime=*))",
        "groupSearchBase": GROUPS, "cluster": cluster, "search": "platf", "principal": platform,
    });
    let file = m.dir.path().join("settings.json");
    std::fs::write(&file, settings.to_string()).unwrap();
    let (code, out, err) = directory::sso_with(
        "ui-directory",
        &m.server.url(""),
        "admin",
        ADMIN_PASSWORD,
        &[&file.display().to_string()],
    );
    assert_eq!(code, 0, "{out}\n{err}");

    // What the browser saved works, and keeps its secret.
    let (code, body) = m.http(
        "GET",
        &format!("{MGMT}/authconfigs/ldap"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200);
    assert!(!body.to_string().contains(READONLY_PASSWORD), "{body}");
    assert_eq!(
        body["spec"]["ldap"]["nestedGroupMembershipEnabled"], true,
        "{body}"
    );
    let (code, body) = ldap_login(&m, "user0001", USER_PASSWORD);
    assert_eq!(code, 200, "{body}");
    // The picked group is a member of the cluster.
    let (_, list) = m.http(
        "GET",
        &format!("{MGMT}/namespaces/{cluster}/clusterroletemplatebindings"),
        Some(&admin),
        None,
        &[],
    );
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["spec"]["groupName"] == json!(platform)),
        "{list}"
    );
}
