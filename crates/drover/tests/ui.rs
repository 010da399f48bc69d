//! The web UI in a real browser: Debian's chromium driven by playwright-core
//! (`ui-tests/ui.test.mjs`) against a real server, simulated clusters and
//! agents. The browser imports a cluster; when it asks, this harness runs
//! the command the page showed against a sim and starts the agent, and the
//! browser watches the row turn Active. Screenshots go to
//! `target/ui-screenshots/`.
//!
//! Needs `DROVER_TEST_CHROMIUM` (the browser) and `npm ci` in `ui-tests`;
//! `./scripts/test` provides both.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// How long the browser test may take before it is stopped.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(480);

#[test]
fn web_ui_in_a_real_browser() {
    let Some(chromium) = std::env::var_os("DROVER_TEST_CHROMIUM") else {
        eprintln!("skipped: set DROVER_TEST_CHROMIUM to a chromium binary (./scripts/test does)");
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ui_tests = root.join("ui-tests");
    assert!(
        ui_tests.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix ui-tests`"
    );
    let shots = root.join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let m = Mgmt::start(&[]);
    let admin = m.admin();
    let checksum = ca_checksum(&m);
    // A cluster already Active when the browser opens.
    let sim1 = SimProc::start(m.dir.path(), "existing", 3);
    let imp1 = import(&m, &admin, &sim1, "existing");
    let _agent1 = agent(&m, &imp1, &checksum);
    wait_ready(&m, &admin, &imp1.cluster, Duration::from_secs(30));
    // A project with a quota, a namespace and two pods, for the quota bars.
    let c = &imp1.cluster;
    let (code, project) = m.http(
        "POST",
        &format!("{MGMT}/namespaces/{c}/projects"),
        Some(&admin),
        Some(
            &serde_json::json!({"apiVersion": "management.drover.io/v1", "kind": "Project",
            "spec": {"displayName": "team", "resourceQuota": {"limit": {"pods": "10"}},
                     "namespaceDefaultResourceQuota": {"limit": {"pods": "5"}}}}),
        ),
        &[],
    );
    assert_eq!(code, 201, "{project}");
    let pid = project["metadata"]["name"].as_str().unwrap();
    let (code, body) = m.http(
        "POST",
        &format!("/k8s/clusters/{c}/api/v1/namespaces"),
        Some(&admin),
        Some(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team-ns", "annotations": {"drover.io/project-id": format!("{c}:{pid}")}}})),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    wait(
        "the project quota in team-ns",
        Duration::from_secs(20),
        || {
            let (code, _) = m.http(
            "GET",
            &format!("/k8s/clusters/{c}/api/v1/namespaces/team-ns/resourcequotas/drover-project-quota"),
            Some(&admin),
            None,
            &[],
        );
            (code == 200).then_some(())
        },
    );
    for pod in ["web-1", "web-2"] {
        let (code, body) = m.http(
            "POST",
            &format!("/k8s/clusters/{c}/api/v1/namespaces/team-ns/pods"),
            Some(&admin),
            Some(
                &serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}),
            ),
            &[],
        );
        assert_eq!(code, 201, "{body}");
    }
    // A project member and a read-only member of "team", for what each
    // may see and do.
    let mut member_token = String::new();
    for (user, role) in [("pm", "project-member"), ("ro", "read-only")] {
        let token = m.user(&admin, user);
        if user == "pm" {
            member_token = token;
        }
        let (code, body) = m.http(
            "POST",
            &format!("{MGMT}/namespaces/{pid}/projectroletemplatebindings"),
            Some(&admin),
            Some(&serde_json::json!({"apiVersion": "management.drover.io/v1", "kind": "ProjectRoleTemplateBinding",
                "metadata": {"name": format!("{user}-binding")},
                "spec": {"userName": user, "roleTemplateName": role, "projectName": format!("{c}:{pid}")}})),
            &[],
        );
        assert_eq!(code, 201, "{body}");
    }
    // kubectl as the member lists the project's namespaces, and no other.
    let pm_kubeconfig = user_kubeconfig(&m, &member_token, c, "pm");
    for args in [&["get", "ns", "-o", "name"][..], &["get", "ns"]] {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&pm_kubeconfig)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl {args:?} as pm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("NAME")).collect();
        assert_eq!(names.len(), 1, "{stdout}");
        assert!(names[0].contains("team-ns"), "{stdout}");
    }
    // kubectl through Drover as the admin, for the explorer's steps.
    let admin_kubeconfig = user_kubeconfig(&m, &admin, c, "ui-admin");
    // The cluster the browser imports.
    let sim2 = SimProc::start(m.dir.path(), "fresh", 3);

    let mut node = Command::new("node")
        .arg(ui_tests.join("ui.test.mjs"))
        .current_dir(&ui_tests)
        .env("DROVER_URL", m.server.url(""))
        .env("DROVER_PASSWORD", ADMIN_PASSWORD)
        .env("DROVER_CLUSTER", &imp1.cluster)
        .env("DROVER_PROJECT", pid)
        .env("DROVER_CHROMIUM", &chromium)
        .env("DROVER_SCREENSHOTS", &shots)
        .env("DROVER_WORK", m.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Node.js) runs");
    let pid = node.id();
    std::thread::spawn(move || {
        std::thread::sleep(BROWSER_TIMEOUT);
        // Bounded: a hung browser does not hang the suite.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let errors = Arc::new(Mutex::new(String::new()));
    {
        let errors = errors.clone();
        let stderr = node.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                errors.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
    }
    let mut to_node = node.stdin.take().unwrap();
    let mut output = String::new();
    let mut agents = Vec::new();
    for line in BufReader::new(node.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        output.push_str(&line);
        output.push('\n');
        if let Some(args) = line.strip_prefix("@@kubectl ") {
            // Words, or a JSON array of them (for arguments with spaces).
            let args: Vec<String> = serde_json::from_str(args)
                .unwrap_or_else(|_| args.split_whitespace().map(str::to_owned).collect());
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&admin_kubeconfig)
                .args(&args)
                .output()
                .unwrap();
            let answer = if out.status.success() {
                "ok".to_owned()
            } else {
                format!(
                    "kubectl failed: {}",
                    String::from_utf8_lossy(&out.stderr).replace('\n', " ")
                )
            };
            writeln!(to_node, "{answer}").unwrap();
            continue;
        }
        let Some(rest) = line.strip_prefix("@@import ") else {
            continue;
        };
        let (cluster, command) = rest.split_once(' ').unwrap();
        // The command exactly as the page showed it, run where a user would
        // run it: a shell whose kubectl points at the cluster.
        let out = Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {command}")])
            .env("KUBECONFIG", &sim2.kubeconfig)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("deployment.apps/drover-agent created"),
            "the import command failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (code, crt) = m.http(
            "GET",
            &format!("{MGMT}/namespaces/{cluster}/clusterregistrationtokens/default-token"),
            Some(&admin),
            None,
            &[],
        );
        assert_eq!(code, 200, "{crt}");
        let imp = Imported {
            cluster: cluster.to_owned(),
            manifest_url: crt["status"]["manifestUrl"].as_str().unwrap().to_owned(),
            token: crt["status"]["token"].as_str().unwrap().to_owned(),
            agent_kubeconfig: agent_kubeconfig(&m, &sim2, cluster),
        };
        agents.push(agent(&m, &imp, &checksum));
        writeln!(to_node, "ok").unwrap();
    }
    let status = node.wait().unwrap();
    let errors = errors.lock().unwrap().clone();
    println!("{output}");
    assert!(
        status.success() && output.contains("@@done"),
        "the browser test failed ({status}):\n{output}\n{errors}\nserver log:\n{}",
        m.server.log()
    );
    for name in [
        "01-login",
        "02-clusters",
        "03-import",
        "04-cluster",
        "06-project",
        "10-explorer-deployments",
        "11-deployment-scaled",
        "12-rollback-diff",
        "13-pod-logs",
        "14-pod-shell",
        "14-pod-previous-log",
        "15-yaml-refused",
        "16-member-explorer",
        "17-read-only",
        "18-narrow-deployment",
        "19-dark-clusters",
    ] {
        assert!(
            shots.join(format!("{name}.png")).is_file(),
            "screenshot {name}"
        );
    }
}
