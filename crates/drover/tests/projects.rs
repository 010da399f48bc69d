//! Projects and RBAC projection end to end: role templates and bindings in
//! Drover become ClusterRoles and (Role)Bindings in a `drover sim`, and the
//! real kubectl, through Drover's proxy, finds exactly the access they
//! grant. Every part runs in its own process.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    agent, ca_checksum, import, kubectl, user_kubeconfig, wait, wait_ready, Mgmt, SimProc, MGMT,
};
use serde_json::{json, Value};

fn post(m: &Mgmt, token: &str, path: &str, body: Value) -> Value {
    let (code, out) = m.http("POST", path, Some(token), Some(&body), &[]);
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

fn project(m: &Mgmt, admin: &str, cluster: &str, display: &str, spec: Value) -> String {
    let mut spec = spec;
    spec["displayName"] = json!(display);
    let p = post(
        m,
        admin,
        &format!("{MGMT}/namespaces/{cluster}/projects"),
        json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "spec": spec}),
    );
    p["metadata"]["name"].as_str().unwrap().to_owned()
}

fn bind(m: &Mgmt, admin: &str, cluster: &str, project: &str, user: &str, template: &str) -> String {
    let b = post(
        m,
        admin,
        &format!("{MGMT}/namespaces/{project}/projectroletemplatebindings"),
        json!({"apiVersion": "management.drover.io/v1", "kind": "ProjectRoleTemplateBinding",
               "metadata": {"generateName": format!("{user}-")},
               "spec": {"userName": user, "roleTemplateName": template, "projectName": format!("{cluster}:{project}")}}),
    );
    b["metadata"]["name"].as_str().unwrap().to_owned()
}

/// A namespace manifest in a project, as a file for `kubectl create -f`.
fn ns_file(m: &Mgmt, name: &str, cluster: &str, project: &str) -> String {
    let path: PathBuf = m.dir.path().join(format!("ns-{name}.json"));
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "annotations": {"drover.io/project-id": format!("{cluster}:{project}")}}});
    std::fs::write(&path, ns.to_string()).unwrap();
    path.display().to_string()
}

fn allowed(m: &Mgmt, kc: &std::path::Path, args: &[&str]) -> bool {
    let (code, _, err) = kubectl(m, kc, args);
    if code != 0 && !err.contains("Forbidden") && !err.contains("forbidden") {
        panic!("kubectl {args:?} failed for another reason than RBAC: {err}");
    }
    code == 0
}

/// Projected RoleBindings in the sim for a user: (namespace, role).
fn bindings_of(sim: &SimProc, cache: &std::path::Path, user: &str) -> Vec<(String, String)> {
    let (code, out, err) = sim.kubectl(
        cache,
        &[
            "get",
            "rolebindings",
            "-A",
            "-l",
            "drover.io/managed=true",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["subjects"][0]["name"] == user)
        .map(|b| {
            (
                b["metadata"]["namespace"].as_str().unwrap().to_owned(),
                b["roleRef"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn projects_and_role_templates_reach_the_cluster() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let sim = SimProc::start(m.dir.path(), "c1", 2);
    let imp = import(&m, &admin, &sim, "c1");
    let _agent = agent(&m, &imp, &ca_checksum(&m));
    let c = imp.cluster.clone();
    wait_ready(&m, &admin, &c, Duration::from_secs(10));
    let cache = m.dir.path().join("kube-cache");
    let akc = user_kubeconfig(&m, &admin, &c, "admin-c1");

    // Default and System projects hold their namespaces.
    let (_, projects) = m.http(
        "GET",
        &format!("{MGMT}/namespaces/{c}/projects"),
        Some(&admin),
        None,
        &[],
    );
    let find = |display: &str| {
        projects["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["spec"]["displayName"] == display)
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {display} project: {projects}"))
    };
    let (default_p, system_p) = (find("Default"), find("System"));
    wait(
        "default and kube-system are annotated",
        Duration::from_secs(5),
        || {
            let (_, d, _) = sim.kubectl(
                &cache,
                &[
                    "get",
                    "ns",
                    "default",
                    "-o",
                    "jsonpath={.metadata.annotations.drover\\.io/project-id}",
                ],
            );
            let (_, s, _) = sim.kubectl(
                &cache,
                &[
                    "get",
                    "ns",
                    "kube-system",
                    "-o",
                    "jsonpath={.metadata.annotations.drover\\.io/project-id}",
                ],
            );
            (d == format!("{c}:{default_p}") && s == format!("{c}:{system_p}")).then_some(())
        },
    );

    // p1 with a quota (2 pods a namespace, 5 in all) and container defaults.
    let p1 = project(
        &m,
        &admin,
        &c,
        "team one",
        json!({
            "resourceQuota": {"limit": {"pods": "5"}},
            "namespaceDefaultResourceQuota": {"limit": {"pods": "2"}},
            "containerDefaultResourceLimit": {"limitsCpu": "200m", "limitsMemory": "128Mi", "requestsCpu": "100m", "requestsMemory": "64Mi"},
        }),
    );
    let p2 = project(&m, &admin, &c, "team two", json!({}));
    let (code, out, err) = kubectl(&m, &akc, &["create", "-f", &ns_file(&m, "team-a", &c, &p1)]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = kubectl(&m, &akc, &["create", "-f", &ns_file(&m, "team-b", &c, &p2)]);
    assert_eq!(code, 0, "{err}");

    // bob: member of p1; carol: read-only in p1; dave: a custom template.
    let bob = m.user(&admin, "bob");
    let carol = m.user(&admin, "carol");
    let dave = m.user(&admin, "dave");
    post(
        &m,
        &admin,
        &format!("{MGMT}/roletemplates"),
        json!({
            "apiVersion": "management.drover.io/v1", "kind": "RoleTemplate",
            "metadata": {"name": "cm-reader"},
            "spec": {"context": "project", "displayName": "ConfigMap reader",
                     "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
        }),
    );
    let bob_binding = bind(&m, &admin, &c, &p1, "bob", "project-member");
    bind(&m, &admin, &c, &p1, "carol", "read-only");
    bind(&m, &admin, &c, &p1, "dave", "cm-reader");
    let bkc = user_kubeconfig(&m, &bob, &c, "bob");
    let ckc = user_kubeconfig(&m, &carol, &c, "carol");
    let dkc = user_kubeconfig(&m, &dave, &c, "dave");

    wait(
        "bob may list pods in team-a",
        Duration::from_secs(5),
        || allowed(&m, &bkc, &["-n", "team-a", "get", "pods"]).then_some(()),
    );
    assert!(
        allowed(&m, &bkc, &["get", "namespace", "team-a"]),
        "members read their namespaces"
    );
    // The cluster reports what is projected into it.
    wait(
        "status.projected counts bob's binding",
        Duration::from_secs(5),
        || {
            let status = common::cluster(&m, &admin, &c)["status"]["projected"].clone();
            (status["roleBindings"].as_u64() >= Some(1)
                && status["clusterRoles"].as_u64() >= Some(1))
            .then_some(())
        },
    );
    assert!(
        !allowed(&m, &bkc, &["-n", "team-b", "get", "pods"]),
        "not in p2"
    );
    assert!(
        !allowed(&m, &bkc, &["create", "namespace", "bobs-own"]),
        "no cluster-scoped writes"
    );
    assert!(!allowed(
        &m,
        &bkc,
        &[
            "create",
            "clusterrole",
            "x",
            "--verb=get",
            "--resource=pods"
        ]
    ));
    let (code, _, err) = kubectl(
        &m,
        &bkc,
        &[
            "-n",
            "team-a",
            "create",
            "deployment",
            "web",
            "--image=nginx",
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait("bob's pod runs", Duration::from_secs(15), || {
        let (_, out, _) = kubectl(
            &m,
            &bkc,
            &[
                "-n",
                "team-a",
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ],
        );
        (out == "Running").then_some(())
    });

    wait("carol may read team-a", Duration::from_secs(5), || {
        allowed(&m, &ckc, &["-n", "team-a", "get", "pods"]).then_some(())
    });
    assert!(
        !allowed(&m, &ckc, &["-n", "team-a", "create", "configmap", "x"]),
        "read-only cannot create"
    );
    wait("dave may list configmaps", Duration::from_secs(5), || {
        allowed(&m, &dkc, &["-n", "team-a", "get", "configmaps"]).then_some(())
    });
    assert!(
        !allowed(&m, &dkc, &["-n", "team-a", "get", "pods"]),
        "only configmaps"
    );
    assert!(
        !allowed(&m, &dkc, &["-n", "team-a", "create", "configmap", "y"]),
        "only get and list"
    );

    // Quota: 2 pods a namespace; the third is refused by the cluster.
    let (code, _, err) = kubectl(
        &m,
        &bkc,
        &["-n", "team-a", "run", "second", "--image=busybox"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kubectl(
        &m,
        &bkc,
        &["-n", "team-a", "run", "third", "--image=busybox"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("exceeded quota: drover-project-quota"),
        "{err}"
    );
    // A pod without resources gets the project's container defaults.
    let (_, limits, _) = kubectl(&m, &bkc, &["-n", "team-a", "get", "pod", "second", "-o", "jsonpath={.spec.containers[0].resources.limits.cpu} {.spec.containers[0].resources.requests.memory}"]);
    assert_eq!(limits, "200m 64Mi");

    // Members create namespaces in their project only; the project's quota
    // holds two namespaces of 2 pods within 5.
    let (code, _, err) = kubectl(
        &m,
        &bkc,
        &["create", "-f", &ns_file(&m, "team-a2", &c, &p1)],
    );
    assert_eq!(code, 0, "bob creates a namespace in p1: {err}");
    let (code, _, err) = kubectl(
        &m,
        &bkc,
        &["create", "-f", &ns_file(&m, "bob-in-p2", &c, &p2)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("may not create namespace"), "{err}");
    let (code, _, err) = kubectl(
        &m,
        &akc,
        &["create", "-f", &ns_file(&m, "team-a3", &c, &p1)],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("pods limit of 5 by 1"),
        "the refusal says by how much: {err}"
    );
    wait("bob may use team-a2", Duration::from_secs(5), || {
        allowed(&m, &bkc, &["-n", "team-a2", "get", "pods"]).then_some(())
    });

    // Drift: a projected RoleBinding deleted in the cluster comes back.
    assert!(bindings_of(&sim, &cache, "bob")
        .contains(&("team-a".into(), "drover-rt-project-member".into())));
    let (_, out, _) = sim.kubectl(
        &cache,
        &[
            "-n",
            "team-a",
            "get",
            "rolebindings",
            "-l",
            "drover.io/managed=true",
            "-o",
            "name",
        ],
    );
    for rb in out.lines() {
        let (code, _, err) = sim.kubectl(&cache, &["-n", "team-a", "delete", rb]);
        assert_eq!(code, 0, "{err}");
    }
    wait(
        "the deleted bindings come back",
        Duration::from_secs(10),
        || {
            bindings_of(&sim, &cache, "bob")
                .iter()
                .any(|(ns, _)| ns == "team-a")
                .then_some(())
        },
    );
    // A namespace annotated in the cluster directly is not adopted.
    let (code, _, err) = sim.kubectl(&cache, &["create", "-f", &ns_file(&m, "sneaky", &c, &p1)]);
    assert_eq!(code, 0, "{err}");
    wait(
        "the server logs the refusal",
        Duration::from_secs(5),
        || {
            m.server
                .log()
                .contains("namespace not adopted")
                .then_some(())
        },
    );
    assert!(!bindings_of(&sim, &cache, "bob")
        .iter()
        .any(|(ns, _)| ns == "sneaky"));

    // Moving team-a to p2: bob loses it within 5 s, the quota goes.
    let (code, _, err) = kubectl(
        &m,
        &akc,
        &[
            "annotate",
            "namespace",
            "team-a",
            &format!("drover.io/project-id={c}:{p2}"),
            "--overwrite",
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait("bob loses team-a", Duration::from_secs(5), || {
        (!allowed(&m, &bkc, &["-n", "team-a", "get", "pods"])).then_some(())
    });
    wait(
        "team-a's quota follows its project",
        Duration::from_secs(5),
        || {
            let (_, out, _) = sim.kubectl(
                &cache,
                &["-n", "team-a", "get", "resourcequotas", "-o", "name"],
            );
            out.trim().is_empty().then_some(())
        },
    );
    // bob (not a cluster owner) may not move namespaces.
    let (code, _, err) = kubectl(
        &m,
        &bkc,
        &[
            "annotate",
            "namespace",
            "team-a2",
            &format!("drover.io/project-id={c}:{p2}"),
            "--overwrite",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("may not move"), "{err}");

    // Removing bob removes every binding of his, and nothing else.
    let carol_before = bindings_of(&sim, &cache, "carol");
    let (code, out) = m.http(
        "DELETE",
        &format!("{MGMT}/namespaces/{p1}/projectroletemplatebindings/{bob_binding}"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    wait("bob's bindings are gone", Duration::from_secs(5), || {
        bindings_of(&sim, &cache, "bob").is_empty().then_some(())
    });
    assert_eq!(bindings_of(&sim, &cache, "carol"), carol_before);
    assert!(!allowed(&m, &bkc, &["-n", "team-a2", "get", "pods"]));

    // Deleting a project that holds namespaces is refused unless asked to
    // move them to Default.
    let (code, out) = m.http(
        "DELETE",
        &format!("{MGMT}/namespaces/{c}/projects/{p2}"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 409, "{out}");
    assert!(out["message"].as_str().unwrap().contains("team-b"), "{out}");
    let (code, out) = m.http(
        "PATCH",
        &format!("{MGMT}/namespaces/{c}/projects/{p2}"),
        Some(&admin),
        Some(&json!({"metadata": {"annotations": {"drover.io/namespaces-on-delete": "move-to-default"}}})),
        &[],
    );
    assert_eq!(code, 200, "{out}");
    let (code, out) = m.http(
        "DELETE",
        &format!("{MGMT}/namespaces/{c}/projects/{p2}"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{out}");
    wait("team-b moves to Default", Duration::from_secs(10), || {
        let (_, a, _) = sim.kubectl(
            &cache,
            &[
                "get",
                "ns",
                "team-b",
                "-o",
                "jsonpath={.metadata.annotations.drover\\.io/project-id}",
            ],
        );
        (a == format!("{c}:{default_p}")).then_some(())
    });
}
