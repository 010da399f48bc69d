//! What a project gives its namespaces beyond RBAC, end to end with the real
//! kubectl against Drover's management API and, through Drover's proxy,
//! against a `drover sim`: project secrets copied into every namespace,
//! Pod Security templates enforced by the cluster, project network
//! isolation, and quota use, overrides and moves.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    agent, ca_checksum, cli, cli_login_token, import, user_kubeconfig, wait, wait_ready, Imported,
    Mgmt, Proc, SimProc, MGMT,
};
use serde_json::{json, Value};

/// A server with one simulated cluster, imported and Ready.
struct Fleet {
    m: Mgmt,
    admin: String,
    sim: SimProc,
    imp: Imported,
    _agent: Proc,
    /// The admin's kubeconfig for the cluster, through Drover's proxy.
    akc: PathBuf,
    /// The admin's kubeconfig for the management API.
    mkc: PathBuf,
    /// kubectl's cache for the sim, spoken to directly.
    cache: PathBuf,
}

impl Fleet {
    fn start(extra: &[&str]) -> Fleet {
        let m = Mgmt::start(extra);
        let admin = m.admin();
        let sim = SimProc::start(m.dir.path(), "c1", 2);
        let imp = import(&m, &admin, &sim, "c1");
        let agent = agent(&m, &imp, &ca_checksum(&m));
        let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(10))
        }));
        if let Err(e) = ready {
            eprintln!(
                "server log:\n{}\nagent log:\n{}",
                m.server.log(),
                agent.log()
            );
            std::panic::resume_unwind(e);
        }
        let akc = user_kubeconfig(&m, &admin, &imp.cluster, "admin-c1");
        let mkc = m.kubeconfig("admin-mgmt", &admin);
        let cache = m.dir.path().join("sim-cache");
        Fleet {
            m,
            admin,
            sim,
            imp,
            _agent: agent,
            akc,
            mkc,
            cache,
        }
    }

    fn cluster(&self) -> &str {
        &self.imp.cluster
    }

    fn project(&self, display: &str, spec: Value) -> String {
        let mut spec = spec;
        spec["displayName"] = json!(display);
        let (code, p) = self.m.http(
            "POST",
            &format!("{MGMT}/namespaces/{}/projects", self.cluster()),
            Some(&self.admin),
            Some(
                &json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "spec": spec}),
            ),
            &[],
        );
        assert_eq!(code, 201, "{p}");
        p["metadata"]["name"].as_str().unwrap().to_owned()
    }

    fn system_project(&self, display: &str) -> String {
        let (_, list) = self.m.http(
            "GET",
            &format!("{MGMT}/namespaces/{}/projects", self.cluster()),
            Some(&self.admin),
            None,
            &[],
        );
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["spec"]["displayName"] == display)
            .and_then(|p| p["metadata"]["name"].as_str())
            .unwrap()
            .to_owned()
    }

    fn bind(&self, project: &str, user: &str, template: &str) {
        let (code, b) = self.m.http(
            "POST",
            &format!("{MGMT}/namespaces/{project}/projectroletemplatebindings"),
            Some(&self.admin),
            Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "ProjectRoleTemplateBinding",
               "metadata": {"generateName": format!("{user}-")},
               "spec": {"userName": user, "roleTemplateName": template,
                        "projectName": format!("{}:{project}", self.cluster())}})),
            &[],
        );
        assert_eq!(code, 201, "{b}");
    }

    /// Create a namespace in a project through the proxy, as whoever
    /// `kubeconfig` names.
    fn namespace(&self, kubeconfig: &Path, name: &str, project: &str, annotations: Value) {
        let mut annotations = annotations;
        annotations["drover.io/project-id"] = json!(format!("{}:{project}", self.cluster()));
        let file = self.m.dir.path().join(format!("ns-{name}.json"));
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": annotations}});
        std::fs::write(&file, ns.to_string()).unwrap();
        let (code, _, err) = self
            .m
            .kubectl(kubeconfig, &["create", "-f", file.to_str().unwrap()]);
        assert_eq!(code, 0, "create namespace {name}: {err}");
    }

    /// Move a namespace to another project through the proxy.
    fn annotate_project(&self, kubeconfig: &Path, ns: &str, project: &str) -> (i32, String) {
        let value = format!("drover.io/project-id={}:{project}", self.cluster());
        let (code, _, err) = self
            .m
            .kubectl(kubeconfig, &["annotate", "ns", ns, "--overwrite", &value]);
        (code, err)
    }

    /// kubectl straight at the simulated cluster, as its admin.
    fn sim_get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let (code, out, _) = self.sim.kubectl(&self.cache, &all);
        (code == 0).then(|| serde_json::from_str(&out).unwrap())
    }

    /// Run kubectl against the management API.
    fn mgmt(&self, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
        self.m.kubectl(kubeconfig, args)
    }

    fn get_project(&self, project: &str) -> Value {
        let (code, p) = self.m.http(
            "GET",
            &format!("{MGMT}/namespaces/{}/projects/{project}", self.cluster()),
            Some(&self.admin),
            None,
            &[],
        );
        assert_eq!(code, 200, "{p}");
        p
    }

    fn patch_cluster(&self, spec: Value) {
        let (code, out) = self.m.http(
            "PATCH",
            &format!("{MGMT}/clusters/{}", self.cluster()),
            Some(&self.admin),
            Some(&json!({"spec": spec})),
            &[],
        );
        assert_eq!(code, 200, "{out}");
    }
}

fn b64(data: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(data: &Value) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap(),
    )
    .unwrap()
}

/// A self-signed certificate and key, as files.
fn tls_pair(dir: &Path) -> (String, String) {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=app.example"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn project_secrets_reach_every_namespace_of_the_project() {
    let f = Fleet::start(&["--audit-level", "3"]);
    let p = f.project("Shop", json!({}));
    let default_p = f.system_project("Default");
    for ns in ["shop-a", "shop-b", "shop-c"] {
        f.namespace(&f.akc, ns, &p, json!({}));
    }
    // shop-b already holds a Secret of its own named "shared".
    let (code, _, err) = f.m.kubectl(
        &f.akc,
        &[
            "-n",
            "shop-b",
            "create",
            "secret",
            "generic",
            "shared",
            "--from-literal=owner=shop-b",
        ],
    );
    assert_eq!(code, 0, "{err}");

    // Created with kubectl against the management API (typed creates,
    // sent as protobuf).
    let password = "pull-Secret-4711";
    let (code, _, err) = f.mgmt(
        &f.mkc,
        &[
            "-n",
            &p,
            "create",
            "secret",
            "docker-registry",
            "registry",
            "--docker-server=registry.example:5000",
            "--docker-username=shop",
            &format!("--docker-password={password}"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (cert, key) = tls_pair(f.m.dir.path());
    let (code, _, err) = f.mgmt(
        &f.mkc,
        &[
            "-n",
            &p,
            "create",
            "secret",
            "tls",
            "web",
            &format!("--cert={cert}"),
            &format!("--key={key}"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = f.mgmt(
        &f.mkc,
        &[
            "-n",
            &p,
            "create",
            "secret",
            "generic",
            "shared",
            "--from-literal=owner=project",
        ],
    );
    assert_eq!(code, 0, "{err}");

    // The copies in a namespace, by name (None: the cluster did not answer).
    let copies = |ns: &str| -> Option<Vec<String>> {
        let l = f.sim_get(&["secrets", "-n", ns, "-l", "drover.io/project-secret"])?;
        let mut names: Vec<String> = l["items"]
            .as_array()?
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        Some(names)
    };
    let copies_in = |ns: &str| copies(ns).unwrap_or_else(|| vec!["<no answer>".into()]);
    wait(
        "the copies in all three namespaces",
        Duration::from_secs(5),
        || {
            (copies_in("shop-a") == ["registry", "shared", "web"]
                && copies_in("shop-b") == ["registry", "web"]
                && copies_in("shop-c") == ["registry", "shared", "web"])
            .then_some(())
        },
    );
    let copy = f.sim_get(&["secret", "registry", "-n", "shop-a"]).unwrap();
    assert_eq!(copy["type"], "kubernetes.io/dockerconfigjson");
    let config: Value = serde_json::from_str(&unb64(&copy["data"][".dockerconfigjson"])).unwrap();
    assert_eq!(
        config["auths"]["registry.example:5000"]["password"],
        password
    );
    let web = f.sim_get(&["secret", "web", "-n", "shop-c"]).unwrap();
    assert_eq!(web["type"], "kubernetes.io/tls");
    assert_eq!(
        unb64(&web["data"]["tls.crt"]),
        std::fs::read_to_string(&cert).unwrap()
    );

    // The namespace's own Secret is left alone, and the conflict shows.
    let own = f.sim_get(&["secret", "shared", "-n", "shop-b"]).unwrap();
    assert_eq!(unb64(&own["data"]["owner"]), "shop-b");
    let status = wait(
        "the conflict in the secret's status",
        Duration::from_secs(5),
        || {
            let (_, out, _) = f.mgmt(&f.mkc, &["-n", &p, "get", "secret", "shared", "-o", "json"]);
            let s: Value = serde_json::from_str(&out).ok()?;
            s["status"]["conflicts"]
                .is_array()
                .then(|| s["status"].clone())
        },
    );
    assert_eq!(status["conflicts"][0]["namespace"], "shop-b", "{status}");
    assert_eq!(status["copies"], json!(["shop-a", "shop-c"]), "{status}");

    // A pod in each namespace names the registry credential.
    for ns in ["shop-a", "shop-b", "shop-c"] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": ns},
            "spec": {"imagePullSecrets": [{"name": "registry"}],
                     "containers": [{"name": "app", "image": "registry.example:5000/shop/app:1"}]}});
        let file = f.m.dir.path().join(format!("pod-{ns}.json"));
        std::fs::write(&file, pod.to_string()).unwrap();
        let (code, _, err) =
            f.m.kubectl(&f.akc, &["create", "-f", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = f.m.kubectl(
            &f.akc,
            &[
                "-n",
                ns,
                "get",
                "secret",
                "registry",
                "-o",
                "jsonpath={.type}",
            ],
        );
        assert_eq!(
            (code, out.as_str()),
            (0, "kubernetes.io/dockerconfigjson"),
            "{err}"
        );
    }

    // A fourth namespace joins and gets them.
    f.namespace(&f.akc, "shop-d", &p, json!({}));
    wait(
        "the copies in the fourth namespace",
        Duration::from_secs(5),
        || (copies_in("shop-d") == ["registry", "shared", "web"]).then_some(()),
    );
    // A namespace moved away loses them.
    let (code, err) = f.annotate_project(&f.akc, "shop-c", &default_p);
    assert_eq!(code, 0, "{err}");
    wait(
        "the copies gone from the moved namespace",
        Duration::from_secs(5),
        || copies("shop-c")?.is_empty().then_some(()),
    );
    // A copy deleted downstream comes back.
    let (code, _, err) =
        f.m.kubectl(&f.akc, &["-n", "shop-a", "delete", "secret", "registry"]);
    assert_eq!(code, 0, "{err}");
    wait("the deleted copy repaired", Duration::from_secs(5), || {
        f.sim_get(&["secret", "registry", "-n", "shop-a"]).map(drop)
    });
    // An update reaches the copies; a deletion removes them.
    let (code, _, err) = f.mgmt(
        &f.mkc,
        &[
            "-n",
            &p,
            "patch",
            "secret",
            "shared",
            "--type=merge",
            "-p",
            &json!({"data": {"owner": b64("project, v2")}}).to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait("the update copied", Duration::from_secs(5), || {
        let s = f.sim_get(&["secret", "shared", "-n", "shop-d"])?;
        (unb64(&s["data"]["owner"]) == "project, v2").then_some(())
    });
    let (code, _, err) = f.mgmt(&f.mkc, &["-n", &p, "delete", "secret", "web"]);
    assert_eq!(code, 0, "{err}");
    wait(
        "the deleted secret's copies gone",
        Duration::from_secs(5),
        || {
            (copies_in("shop-a") == ["registry", "shared"]
                && copies_in("shop-d") == ["registry", "shared"])
            .then_some(())
        },
    );
    // The namespace's own Secret was never touched.
    let own = f.sim_get(&["secret", "shared", "-n", "shop-b"]).unwrap();
    assert_eq!(unb64(&own["data"]["owner"]), "shop-b");

    // The CLI makes them as kubectl does, the password from stdin.
    let config = cli_login_token(&f.m, &f.admin);
    let c = f.cluster().to_owned();
    let (code, out, err) = cli(
        &config,
        &[
            "secrets",
            "create",
            "docker-registry",
            "cli-registry",
            "--docker-server",
            "cli.example",
            "--docker-username",
            "bot",
            "--docker-password-stdin",
            "--project",
            "Shop",
            "--cluster",
            &c,
        ],
        Some("cli-Secret-99\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("copied into each of the project's namespaces"),
        "{out}"
    );
    let (code, _, err) = cli(
        &config,
        &[
            "secrets",
            "create",
            "generic",
            "cli-generic",
            "--from-literal",
            "a=1",
            "--from-file",
            &format!("cert={cert}"),
            "--project",
            "Shop",
            "--cluster",
            &c,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    wait("the CLI's secrets copied", Duration::from_secs(5), || {
        let s = f.sim_get(&["secret", "cli-registry", "-n", "shop-d"])?;
        let config: Value = serde_json::from_str(&unb64(&s["data"][".dockerconfigjson"])).ok()?;
        let g = f.sim_get(&["secret", "cli-generic", "-n", "shop-a"])?;
        (config["auths"]["cli.example"]["password"] == "cli-Secret-99"
            && unb64(&g["data"]["cert"]) == std::fs::read_to_string(&cert).unwrap())
        .then_some(())
    });
    let (code, out, err) = cli(
        &config,
        &["secrets", "ls", "--project", "Shop", "--cluster", &c],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("cli-registry") && out.contains("kubernetes.io/dockerconfigjson"),
        "{out}"
    );
    assert!(
        !out.contains("cli-Secret-99"),
        "values are not listed: {out}"
    );
    let (code, _, err) = cli(
        &config,
        &[
            "secrets",
            "rm",
            "cli-generic",
            "--project",
            "Shop",
            "--cluster",
            &c,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    wait(
        "the removed secret's copies gone",
        Duration::from_secs(5),
        || {
            f.sim_get(&["secret", "cli-generic", "-n", "shop-a"])
                .is_none()
                .then_some(())
        },
    );
    let (code, _, err) = cli(
        &config,
        &[
            "secrets",
            "create",
            "generic",
            "empty",
            "--project",
            "Shop",
            "--cluster",
            &c,
        ],
        None,
    );
    assert_eq!(code, 2, "a usage error: {err}");

    // Who may read them: a member, not a read-only user.
    let member = f.m.user(&f.admin, "mia");
    let viewer = f.m.user(&f.admin, "vic");
    f.bind(&p, "mia", "project-member");
    f.bind(&p, "vic", "read-only");
    let mkc_member = f.m.kubeconfig("mia-mgmt", &member);
    let mkc_viewer = f.m.kubeconfig("vic-mgmt", &viewer);
    let (code, out, err) = f.mgmt(
        &mkc_member,
        &["-n", &p, "get", "secret", "registry", "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".dockerconfigjson"));
    let (code, _, err) = f.mgmt(&mkc_viewer, &["-n", &p, "get", "secret", "registry"]);
    assert_ne!(code, 0);
    assert!(err.contains("forbidden"), "{err}");
    // Only in a project's namespace, and bad input changes nothing.
    let (code, _, err) = f.mgmt(
        &f.mkc,
        &[
            "-n",
            f.cluster(),
            "create",
            "secret",
            "generic",
            "x",
            "--from-literal=a=b",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not one"), "{err}");
    let bad = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad", "namespace": p},
        "type": "kubernetes.io/tls", "data": {"tls.crt": b64("x")}});
    let (code, body) = f.m.http(
        "POST",
        &format!("/api/v1/namespaces/{p}/secrets"),
        Some(&f.admin),
        Some(&bad),
        &[],
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("tls.key"),
        "{body}"
    );

    // No secret value is in any log: not the passwords, not the stored
    // documents, not a value sent as JSON in a patch.
    let audit = std::fs::read_to_string(f.m.dir.path().join("data/audit.log")).unwrap();
    assert!(
        audit.contains("registry"),
        "the audit log records the writes"
    );
    for name in ["registry", "cli-registry"] {
        let (_, out, _) = f.mgmt(&f.mkc, &["-n", &p, "get", "secret", name, "-o", "json"]);
        let stored: Value = serde_json::from_str(&out).unwrap();
        let document = stored["data"][".dockerconfigjson"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!audit.contains(&document) && !f.m.server.log().contains(&document));
    }
    assert!(
        !audit.contains(&b64("project, v2")),
        "a patch's value is redacted"
    );
    for secret in [password, "cli-Secret-99"] {
        assert!(
            !audit.contains(secret) && !audit.contains(&b64(secret)),
            "{secret} in the audit log"
        );
        assert!(!f.m.server.log().contains(secret));
    }
}

#[test]
fn pod_security_templates_are_enforced_by_the_cluster() {
    let f = Fleet::start(&[]);
    let p = f.project("Apps", json!({}));
    let bob = f.m.user(&f.admin, "bob");
    f.bind(&p, "bob", "project-owner");
    let bkc = user_kubeconfig(&f.m, &bob, f.cluster(), "bob-c1");

    // The built-ins are there, read-only; a Cluster may only name one that
    // exists.
    let (code, out, err) = f.mgmt(
        &f.mkc,
        &["get", "podsecurityadmissionconfigurationtemplates"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("drover-privileged") && out.contains("drover-restricted"),
        "{out}"
    );
    let (code, _, err) = f.mgmt(
        &f.mkc,
        &[
            "patch",
            "psact",
            "drover-restricted",
            "--type=merge",
            "-p",
            r#"{"spec":{"defaults":{"enforce":"privileged"}}}"#,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("read-only"), "{err}");
    let (code, out) = f.m.http(
        "PATCH",
        &format!("{MGMT}/clusters/{}", f.cluster()),
        Some(&f.admin),
        Some(&json!({"spec": {"podSecurityAdmissionConfigurationTemplateName": "nope"}})),
        &[],
    );
    assert_eq!(code, 422, "{out}");

    f.namespace(&bkc, "apps", &p, json!({}));
    f.patch_cluster(json!({"podSecurityAdmissionConfigurationTemplateName": "drover-restricted"}));
    let labels = |ns: &str| {
        f.sim_get(&["ns", ns])
            .map(|n| n["metadata"]["labels"].clone())
    };
    wait(
        "the restricted labels on the namespace",
        Duration::from_secs(5),
        || {
            let l = labels("apps")?;
            (l["pod-security.kubernetes.io/enforce"] == "restricted"
                && l["pod-security.kubernetes.io/warn"] == "restricted"
                && l["pod-security.kubernetes.io/enforce-version"] == "latest")
                .then_some(())
        },
    );
    // A namespace made through Drover has the levels from its first moment.
    f.namespace(&bkc, "apps-two", &p, json!({}));
    let two = labels("apps-two").unwrap();
    assert_eq!(
        two["pod-security.kubernetes.io/enforce"], "restricted",
        "{two}"
    );
    // A protobuf write cannot be checked, so a project owner may not send
    // one; nor lower the version a level is checked at.
    let (code, _, err) = f.m.kubectl(
        &bkc,
        &[
            "label",
            "ns",
            "apps",
            "--overwrite",
            "pod-security.kubernetes.io/enforce-version=v1.0",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("enforce-version=v1.0 would lower it below restricted at latest"),
        "{err}"
    );
    // kube-system is exempt.
    assert!(labels("kube-system").unwrap()["pod-security.kubernetes.io/enforce"].is_null());

    // A privileged pod is refused with kube's message; a compliant one runs.
    let (code, _, err) = f.m.kubectl(
        &bkc,
        &["-n", "apps", "run", "priv", "--image=nginx", "--privileged"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"pods "priv" is forbidden: violates PodSecurity "restricted:latest": privileged (container "priv" must not set securityContext.privileged=true)"#),
        "{err}"
    );
    let good = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "good", "namespace": "apps"},
        "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "app", "image": "nginx", "securityContext": {
                     "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
    let file = f.m.dir.path().join("good.json");
    std::fs::write(&file, good.to_string()).unwrap();
    let (code, _, err) = f.m.kubectl(&bkc, &["create", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    wait("the compliant pod running", Duration::from_secs(10), || {
        let pod = f.sim_get(&["pod", "good", "-n", "apps"])?;
        (pod["status"]["phase"] == "Running").then_some(())
    });
    // A Deployment whose pods would be refused is admitted with a warning.
    let (code, _, err) = f.m.kubectl(
        &bkc,
        &["-n", "apps", "create", "deployment", "web", "--image=nginx"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(r#"would violate PodSecurity "restricted:latest""#),
        "{err}"
    );
    // The exempt kube-system admits it.
    let (code, _, err) = f.m.kubectl(
        &f.akc,
        &[
            "-n",
            "kube-system",
            "run",
            "priv",
            "--image=nginx",
            "--privileged",
        ],
    );
    assert_eq!(code, 0, "{err}");

    // The project owner may not lower the level; the refusal says why.
    let (code, _, err) = f.m.kubectl(
        &bkc,
        &[
            "label",
            "ns",
            "apps",
            "--overwrite",
            "pod-security.kubernetes.io/enforce=privileged",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("below restricted") && err.contains("drover-restricted"),
        "{err}"
    );
    assert_eq!(
        labels("apps").unwrap()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    // Nor remove it with a JSON patch.
    let (code, _, err) = f.m.kubectl(
        &bkc,
        &[
            "patch",
            "ns",
            "apps",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/labels/pod-security.kubernetes.io~1enforce"}]"#,
        ],
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("removing pod-security.kubernetes.io/enforce"),
        "{err}"
    );
    assert_eq!(
        labels("apps").unwrap()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    // A change made around Drover, in the cluster itself, is repaired.
    let (code, _, err) = f.sim.kubectl(
        &f.cache,
        &[
            "label",
            "ns",
            "apps",
            "--overwrite",
            "pod-security.kubernetes.io/enforce=privileged",
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait("the lowered level repaired", Duration::from_secs(5), || {
        (labels("apps")?["pod-security.kubernetes.io/enforce"] == "restricted").then_some(())
    });

    // kube-system stayed exempt throughout.
    assert!(labels("kube-system").unwrap()["pod-security.kubernetes.io/enforce"].is_null());
    // A level the cluster does not know is refused by it, as kube does.
    let (code, _, err) = f.sim.kubectl(
        &f.cache,
        &[
            "label",
            "ns",
            "kube-public",
            "pod-security.kubernetes.io/enforce=Restricted",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("must be one of privileged, baseline, restricted"),
        "{err}"
    );

    // Without a template, Drover's labels come off again.
    f.patch_cluster(json!({"podSecurityAdmissionConfigurationTemplateName": null}));
    wait("the labels removed", Duration::from_secs(5), || {
        labels("apps")?["pod-security.kubernetes.io/enforce"]
            .is_null()
            .then_some(())
    });
    let (code, _, err) = f.m.kubectl(
        &bkc,
        &["-n", "apps", "run", "priv", "--image=nginx", "--privileged"],
    );
    assert_eq!(code, 0, "{err}");

    // Admins may define their own; others may only read them.
    let custom = json!({"apiVersion": "management.drover.io/v1", "kind": "PodSecurityAdmissionConfigurationTemplate",
        "metadata": {"name": "baseline-everywhere"},
        "spec": {"defaults": {"enforce": "baseline", "audit": "restricted", "warn": "restricted"}}});
    let (code, body) = f.m.http(
        "POST",
        &format!("{MGMT}/podsecurityadmissionconfigurationtemplates"),
        Some(&bob),
        Some(&custom),
        &[],
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = f.m.http(
        "POST",
        &format!("{MGMT}/podsecurityadmissionconfigurationtemplates"),
        Some(&f.admin),
        Some(&custom),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let mut wrong = custom.clone();
    wrong["metadata"]["name"] = json!("wrong");
    wrong["spec"]["defaults"]["enforce"] = json!("strict");
    let (code, body) = f.m.http(
        "POST",
        &format!("{MGMT}/podsecurityadmissionconfigurationtemplates"),
        Some(&f.admin),
        Some(&wrong),
        &[],
    );
    assert_eq!(code, 422, "{body}");
}

#[test]
fn project_network_isolation_follows_namespaces() {
    let f = Fleet::start(&[]);
    let a = f.project("A", json!({}));
    let b = f.project("B", json!({}));
    f.namespace(&f.akc, "a1", &a, json!({}));
    f.namespace(&f.akc, "a2", &a, json!({}));
    f.namespace(&f.akc, "b1", &b, json!({}));
    f.namespace(
        &f.akc,
        "b2",
        &b,
        json!({"drover.io/project-network-isolation": "false"}),
    );
    f.patch_cluster(json!({"projectNetworkIsolation": true}));
    let peers = |ns: &str| -> Option<Vec<String>> {
        let p = f.sim_get(&["networkpolicy", "drover-project-isolation", "-n", ns])?;
        Some(
            p["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]
                ["values"]
                .as_array()?
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect(),
        )
    };
    let system = [
        "drover-system",
        "kube-node-lease",
        "kube-public",
        "kube-system",
    ];
    let with_system = |names: &[&str]| {
        let mut all: Vec<String> = names
            .iter()
            .chain(system.iter())
            .map(|s| s.to_string())
            .collect();
        all.sort();
        all
    };
    wait(
        "a policy in each project namespace",
        Duration::from_secs(5),
        || {
            (peers("a1")? == with_system(&["a1", "a2"])
                && peers("a2")? == with_system(&["a1", "a2"])
                && peers("b1")? == with_system(&["b1", "b2"]))
            .then_some(())
        },
    );
    wait(
        "the policies counted in the cluster's status",
        Duration::from_secs(5),
        || {
            let c = common::cluster(&f.m, &f.admin, f.cluster());
            (c["status"]["projected"]["networkPolicies"] == 4).then_some(())
        },
    );
    let list = f.sim_get(&["networkpolicies", "-A"]).unwrap();
    let mut holders: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["namespace"].as_str().unwrap())
        .collect();
    holders.sort_unstable();
    // The Default project's namespace is isolated too; none in b2 (opted
    // out) or the System project.
    assert_eq!(holders, ["a1", "a2", "b1", "default"]);
    let (code, out, _) = f.m.kubectl(&f.akc, &["get", "netpol", "-n", "a1"]);
    assert_eq!(code, 0);
    assert!(out.contains("drover-project-isolation"), "{out}");

    // A moved namespace's policy follows its new project.
    let (code, err) = f.annotate_project(&f.akc, "a2", &b);
    assert_eq!(code, 0, "{err}");
    wait(
        "the policies follow the move",
        Duration::from_secs(5),
        || {
            (peers("a2")? == with_system(&["a2", "b1", "b2"])
                && peers("a1")? == with_system(&["a1"]))
            .then_some(())
        },
    );
    // A policy deleted downstream comes back.
    let (code, _, err) = f.m.kubectl(
        &f.akc,
        &["-n", "b1", "delete", "netpol", "drover-project-isolation"],
    );
    assert_eq!(code, 0, "{err}");
    wait("the policy repaired", Duration::from_secs(5), || {
        peers("b1")
    });
    // Off again: every policy goes.
    f.patch_cluster(json!({"projectNetworkIsolation": false}));
    wait("the policies removed", Duration::from_secs(5), || {
        let list = f.sim_get(&["networkpolicies", "-A"])?;
        list["items"].as_array()?.is_empty().then_some(())
    });
}

#[test]
fn quota_use_overrides_and_moves() {
    let f = Fleet::start(&[]);
    let q = f.project(
        "Quota",
        json!({
            "resourceQuota": {"limit": {"pods": "6", "requests.cpu": "2"}},
            "namespaceDefaultResourceQuota": {"limit": {"pods": "2", "requests.cpu": "500m"}},
        }),
    );
    let olga = f.m.user(&f.admin, "olga");
    f.bind(&q, "olga", "project-owner");
    let okc_mgmt = f.m.kubeconfig("olga-mgmt", &olga);
    f.namespace(&f.akc, "q1", &q, json!({}));
    f.namespace(&f.akc, "q2", &q, json!({}));
    let pod = |ns: &str, name: &str, cpu: &str| {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": "nginx",
                "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}]}});
        let file = f.m.dir.path().join(format!("pod-{ns}-{name}.json"));
        std::fs::write(&file, pod.to_string()).unwrap();
        let (code, _, err) =
            f.m.kubectl(&f.akc, &["create", "-f", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    };
    pod("q1", "one", "200m");
    pod("q1", "two", "200m");
    pod("q2", "three", "100m");

    // Status sums what the namespaces use, live.
    let status = wait(
        "the project's use in its status",
        Duration::from_secs(10),
        || {
            let s = f.get_project(&q)["status"].clone();
            (s["resourceQuota"]["used"]["pods"] == "3").then_some(s)
        },
    );
    assert_eq!(
        status["resourceQuota"]["used"]["requests.cpu"], "500m",
        "{status}"
    );
    assert_eq!(status["resourceQuota"]["limit"]["pods"], "6", "{status}");
    assert_eq!(status["namespaces"]["q1"]["used"]["pods"], "2", "{status}");
    assert_eq!(status["namespaces"]["q1"]["limit"]["pods"], "2", "{status}");

    // The owner shares the quota out, within its limit.
    let override_q = |who: &Path, body: Value| {
        f.mgmt(
            who,
            &[
                "-n",
                f.cluster(),
                "patch",
                "project",
                &q,
                "--type=merge",
                "-p",
                &body.to_string(),
            ],
        )
    };
    let (code, _, err) = override_q(
        &okc_mgmt,
        json!({"spec": {"namespaceResourceQuotas": {"q1": {"limit": {"pods": "4", "requests.cpu": "1"}}}}}),
    );
    assert_eq!(code, 0, "{err}");
    wait(
        "the override in the namespace's quota",
        Duration::from_secs(5),
        || {
            let rq = f.sim_get(&["resourcequota", "drover-project-quota", "-n", "q1"])?;
            (rq["spec"]["hard"]["pods"] == "4").then_some(())
        },
    );
    let (code, _, err) = override_q(
        &okc_mgmt,
        json!({"spec": {"namespaceResourceQuotas": {"q2": {"limit": {"pods": "3"}}}}}),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("would exceed its pods limit of 6 by 1"),
        "{err}"
    );
    // The project's own limit is the cluster owners' to change.
    let (code, _, err) = override_q(
        &okc_mgmt,
        json!({"spec": {"resourceQuota": {"limit": {"pods": "60", "requests.cpu": "2"}}}}),
    );
    assert_ne!(code, 0);
    assert!(err.contains("only the owners of cluster"), "{err}");

    // A namespace that uses more than the project has left may not move in.
    let (code, _, err) = f.m.kubectl(&f.akc, &["create", "namespace", "m1"]);
    assert_eq!(code, 0, "{err}");
    pod("m1", "a", "300m");
    pod("m1", "b", "300m");
    pod("m1", "c", "300m");
    let (code, err) = f.annotate_project(&f.akc, "m1", &q);
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"namespace "m1" does not fit in project"#)
            && err.contains("pods (uses 3, 0 left of 6)")
            && err.contains("requests.cpu (uses 900m, 500m left of 2)"),
        "{err}"
    );
    // The cluster owner makes room; then m1 still needs a share that holds
    // what it uses, which the project owner gives it; then it moves.
    let (code, _, err) = override_q(
        &f.mkc,
        json!({"spec": {"resourceQuota": {"limit": {"pods": "9", "requests.cpu": "3"}}}}),
    );
    assert_eq!(code, 0, "{err}");
    let (code, err) = f.annotate_project(&f.akc, "m1", &q);
    assert_ne!(code, 0);
    assert!(
        err.contains("pods (uses 3, its share would be 2)")
            && err.contains("requests.cpu (uses 900m, its share would be 500m)"),
        "{err}"
    );
    let (code, _, err) = override_q(
        &okc_mgmt,
        json!({"spec": {"namespaceResourceQuotas": {"m1": {"limit": {"pods": "3", "requests.cpu": "1"}}}}}),
    );
    assert_eq!(code, 0, "{err}");
    let (code, err) = f.annotate_project(&f.akc, "m1", &q);
    assert_eq!(code, 0, "{err}");
    let status = wait(
        "the moved namespace counted",
        Duration::from_secs(10),
        || {
            let s = f.get_project(&q)["status"].clone();
            (s["resourceQuota"]["used"]["pods"] == "6").then_some(s)
        },
    );
    assert_eq!(
        status["resourceQuota"]["used"]["requests.cpu"], "1400m",
        "{status}"
    );
    assert_eq!(status["namespaces"]["m1"]["limit"]["pods"], "3", "{status}");
    assert_eq!(status["namespaces"]["m1"]["used"]["pods"], "3", "{status}");

    // The CLI shows the same, and changes it as the API does.
    let config = cli_login_token(&f.m, &olga);
    let c = f.cluster().to_owned();
    let (code, out, err) = cli(
        &config,
        &["projects", "quota", "Quota", "--cluster", &c],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let pods = out
        .lines()
        .find(|l| l.starts_with("pods"))
        .unwrap_or_default();
    assert!(
        pods.contains(" 6 ") && pods.contains(" 9 ") && pods.contains("66%"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("m1") && l.contains("3 (own)")),
        "{out}"
    );
    let (code, _, err) = cli(
        &config,
        &[
            "projects",
            "quota",
            "Quota",
            "--cluster",
            &c,
            "--namespace-limit",
            "q2:pods=4",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("would exceed its pods limit of 9 by 2"),
        "{err}"
    );
    let (code, _, err) = cli(
        &config,
        &[
            "projects",
            "quota",
            "Quota",
            "--cluster",
            &c,
            "--limit",
            "pods=12",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("only the owners of cluster"), "{err}");
    let (code, out, err) = cli(
        &config,
        &[
            "projects",
            "quota",
            "Quota",
            "--cluster",
            &c,
            "--namespace-limit",
            "q1:pods=",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let q1 = out
        .lines()
        .find(|l| l.starts_with("q1") && l.contains("pods"))
        .unwrap_or_default();
    assert!(
        q1.contains(" 2 ") && !q1.contains("(own)"),
        "q1 back on the default share of 2: {out}"
    );
}
