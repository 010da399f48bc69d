//! The `drover` CLI, the built binary, against a live server, a `drover sim`
//! and a real agent; a second user's access changes with the project,
//! namespace and member commands; the interactive context picker runs in a
//! real terminal under tmux.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{cli, wait, Mgmt, Proc, SimProc, ADMIN_PASSWORD, BIN};
use serde_json::Value;

fn ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = cli(config, args, None);
    assert_eq!(code, 0, "drover {args:?}: {out}{err}");
    out
}

fn json(config: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let out = ok(config, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("drover {args:?} -o json: {e}: {out}"))
}

fn login(m: &Mgmt, config: &Path, user: &str, password: &str) {
    let url = m.server.url("");
    let ca = m.ca.display().to_string();
    let (code, out, err) = cli(
        config,
        &[
            "login",
            &url,
            "-u",
            user,
            "--password-stdin",
            "--cacert",
            &ca,
        ],
        Some(&format!("{password}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_cli_from_login_to_kubectl() {
    let m = Mgmt::start(&[]);
    let url = m.server.url("");
    let dir = m.dir.path();
    let admin_cfg: PathBuf = dir.join("admin/config.yaml");
    let bob_cfg: PathBuf = dir.join("bob/config.yaml");

    // An untrusted CA without a terminal: fails, naming the flag.
    let (code, _, err) = cli(
        &admin_cfg,
        &["login", &url, "-u", "admin", "--password-stdin"],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--cacert FILE") && err.contains("SHA-256 fingerprint"),
        "{err}"
    );
    assert!(!admin_cfg.exists(), "nothing saved");

    // A wrong password.
    let ca = m.ca.display().to_string();
    let (code, _, err) = cli(
        &admin_cfg,
        &[
            "login",
            &url,
            "-u",
            "admin",
            "--password-stdin",
            "--cacert",
            &ca,
        ],
        Some("not the password\n"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("invalid username or password"), "{err}");

    // By password; the config is private.
    login(&m, &admin_cfg, "admin", ADMIN_PASSWORD);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&admin_cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let me = json(&admin_cfg, &["whoami"]);
    assert_eq!(me["username"], "admin");

    // By token.
    let token = json(
        &admin_cfg,
        &["tokens", "create", "--description", "for the test"],
    );
    let secret = token["status"]["token"].as_str().unwrap().to_owned();
    let token_cfg = dir.join("token/config.yaml");
    let (code, out, err) = cli(
        &token_cfg,
        &["login", &url, "--token", &secret, "--cacert", &ca],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("as admin"), "{out}");

    // Usage errors exit 2.
    assert_eq!(cli(&admin_cfg, &["clusters"], None).0, 2);
    let (code, _, err) = cli(&admin_cfg, &["context", "switch"], None);
    assert_eq!(code, 2, "the picker needs a terminal: {err}");

    // clusters create prints the import command, which then works.
    let created = json(&admin_cfg, &["clusters", "create", "east"]);
    let insecure = created["import"]["insecureCommand"]
        .as_str()
        .unwrap()
        .to_owned();
    let table = ok(&admin_cfg, &["clusters", "create", "west"]);
    assert!(table.contains("kubectl apply -f https://"), "{table}");
    let sim = SimProc::start(dir, "east", 2);
    let out = Command::new("bash")
        .args(["-c", &format!("set -o pipefail; {insecure}")])
        .env("KUBECONFIG", &sim.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = dir.join("kube-cache");
    let (_, sa, _) = sim.kubectl(
        &cache,
        &["create", "token", "drover-agent", "-n", "drover-system"],
    );
    let agent_kc = dir.join("agent.kubeconfig");
    sim.kubeconfig_with_token(&agent_kc, sa.trim());
    let registration = insecure
        .rsplit('/')
        .next()
        .unwrap()
        .split(".yaml")
        .next()
        .unwrap()
        .to_owned();
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--server", &url, "--token", &registration])
        .args(["--ca-checksum", &common::ca_checksum(&m)])
        .arg("--kubeconfig")
        .arg(&agent_kc);
    let _agent = Proc::spawn(cmd);
    wait(
        "clusters ls shows east Active",
        Duration::from_secs(10),
        || {
            let out = ok(&admin_cfg, &["clusters", "ls"]);
            out.lines()
                .any(|l| l.contains(" east ") && l.contains("Active") && l.contains("v1.31.4"))
                .then_some(())
        },
    );
    let listed = json(&admin_cfg, &["clusters", "ls"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    // kubectl through Drover, as the current context.
    ok(&admin_cfg, &["context", "switch", "east"]);
    let nodes = ok(&admin_cfg, &["kubectl", "get", "nodes", "-o", "name"]);
    assert!(nodes.contains("node/east-node-0"), "{nodes}");
    let current = json(&admin_cfg, &["context", "current"]);
    assert_eq!(current["cluster"], created["cluster"]["metadata"]["name"]);

    // A second user: no access until the admin makes a project, a
    // namespace and a membership.
    let (code, out, err) = cli(
        &admin_cfg,
        &["users", "create", "bob", "--password-stdin"],
        Some("bob's long password\n"),
    );
    assert_eq!(code, 0, "{out}{err}");
    login(&m, &bob_cfg, "bob", "bob's long password");
    let (code, _, err) = cli(&bob_cfg, &["context", "switch", "east"], None);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    ok(&admin_cfg, &["projects", "create", "web"]);
    ok(
        &admin_cfg,
        &["namespaces", "create", "web-prod", "--project", "web"],
    );
    let nss = json(&admin_cfg, &["namespaces", "ls", "--project", "web"]);
    assert_eq!(nss["items"][0]["name"], "web-prod");
    ok(
        &admin_cfg,
        &[
            "members",
            "add",
            "--project",
            "web",
            "--user",
            "bob",
            "--role",
            "project-member",
        ],
    );
    ok(&bob_cfg, &["context", "switch", "east/web"]);
    wait(
        "bob may list pods in web-prod",
        Duration::from_secs(5),
        || {
            (cli(
                &bob_cfg,
                &["kubectl", "-n", "web-prod", "get", "pods"],
                None,
            )
            .0 == 0)
                .then_some(())
        },
    );
    let (code, _, err) = cli(&bob_cfg, &["kubectl", "-n", "default", "get", "pods"], None);
    assert_ne!(code, 0);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    let members = json(&admin_cfg, &["members", "ls", "--project", "web"]);
    assert!(members["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["spec"]["userName"] == "bob"));
    ok(
        &admin_cfg,
        &[
            "members",
            "rm",
            "--project",
            "web",
            "--user",
            "bob",
            "--role",
            "project-member",
        ],
    );
    wait("bob loses web-prod", Duration::from_secs(5), || {
        (cli(
            &bob_cfg,
            &["kubectl", "-n", "web-prod", "get", "pods"],
            None,
        )
        .0 != 0)
            .then_some(())
    });
    // Forbidden and not-found errors say what.
    let (code, _, err) = cli(
        &bob_cfg,
        &["users", "create", "carol", "--password-stdin"],
        Some("carol's long password\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with("drover: error: forbidden:") && err.contains("users"),
        "{err}"
    );
    let (code, _, err) = cli(&admin_cfg, &["clusters", "get", "nowhere"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("not found") && err.contains("nowhere"),
        "{err}"
    );

    // An expired token gives the login hint.
    let short = json(&admin_cfg, &["tokens", "create", "--ttl", "2"]);
    let short_cfg = dir.join("short/config.yaml");
    let secret = short["status"]["token"].as_str().unwrap();
    let (code, _, err) = cli(
        &short_cfg,
        &["login", &url, "--token", secret, "--cacert", &ca],
        None,
    );
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_secs(3));
    let (code, _, err) = cli(&short_cfg, &["clusters", "ls"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("expired") && err.contains("drover login"),
        "{err}"
    );

    // An unreachable server is named.
    let gone = dir.join("gone/config.yaml");
    let (code, _, err) = cli(
        &gone,
        &[
            "login",
            "https://127.0.0.1:9",
            "--token",
            "token-x:y",
            "--insecure-skip-tls-verify",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the Drover server at https://127.0.0.1:9"),
        "{err}"
    );

    // Logout revokes the token on the server.
    let saved: Value = yaml_serde::from_str(&std::fs::read_to_string(&bob_cfg).unwrap()).unwrap();
    let bob_token = saved["servers"][0]["token"].as_str().unwrap().to_owned();
    ok(&bob_cfg, &["logout"]);
    let (code, _) = m.http(
        "GET",
        "/apis/management.drover.io/v1/clusters",
        Some(&bob_token),
        None,
        &[],
    );
    assert_eq!(code, 401, "the token is revoked");

    // Completions.
    let bash = ok(&admin_cfg, &["completion", "bash"]);
    assert!(
        bash.contains("drover") && bash.contains("complete"),
        "{bash}"
    );

    // The picker, in a real terminal (tmux).
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for the picker test (scripts/test installs it)");
    }
    let session = format!("drover-picker-{}", std::process::id());
    let script = format!(
        "DROVER_CONFIG={} {BIN} context switch; echo picker-exit=$?; sleep 30",
        admin_cfg.display()
    );
    let status = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "40",
            &script,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let capture = || {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let screen = wait(
        "the picker lists the clusters",
        Duration::from_secs(15),
        || {
            let s = capture();
            s.contains("Select [1-").then_some(s)
        },
    );
    let west = screen
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("west"))
        .unwrap_or_else(|| panic!("{screen}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    Command::new("tmux")
        .args(["send-keys", "-t", &session, &west, "Enter"])
        .status()
        .unwrap();
    let screen = wait("the picker switches", Duration::from_secs(10), || {
        let s = capture();
        s.contains("picker-exit=").then_some(s)
    });
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    println!("--- the picker under tmux ---\n{screen}");
    assert!(
        screen.contains("Switched to west.") && screen.contains("picker-exit=0"),
        "{screen}"
    );
    let recorded = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("context-picker.txt");
    std::fs::write(recorded, &screen).unwrap();
}

/// The commands under `path` that `drover <path> --help` lists.
fn subcommands(path: &[String]) -> Vec<String> {
    let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = Vec::new();
    let mut listing = false;
    for line in help.lines() {
        if line == "Commands:" {
            listing = true;
            continue;
        }
        if listing {
            match line
                .strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
            {
                Some(name) if !line.starts_with("   ") => {
                    if name != "help" {
                        found.push(name.to_owned());
                    }
                }
                Some(_) => {}
                None => listing = false,
            }
        }
    }
    found
}

#[test]
fn every_help_names_real_commands_with_one_example_per_line() {
    // Every command path, from the top.
    let mut paths: Vec<Vec<String>> = vec![Vec::new()];
    let mut i = 0;
    while i < paths.len() {
        let path = paths[i].clone();
        for sub in subcommands(&path) {
            let mut p = path.clone();
            p.push(sub);
            paths.push(p);
        }
        i += 1;
    }
    assert!(paths.len() > 60, "found only {} commands", paths.len());
    let known: std::collections::BTreeSet<String> = paths.iter().map(|p| p.join(" ")).collect();
    let mut examples = 0;
    for path in &paths {
        let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        for line in help.lines() {
            let text = line.trim();
            assert!(
                text.split_whitespace().filter(|w| *w == "drover").count() <= 1,
                "`drover {}` --help runs examples together: {line:?}",
                path.join(" ")
            );
            let example = text
                .strip_prefix("Example: ")
                .or_else(|| text.starts_with("drover ").then_some(text));
            let Some(example) = example else { continue };
            // A pipeline's drover part (`echo … | drover users create …`).
            let Some(at) = example.find("drover ") else {
                continue;
            };
            let example = &example[at..];
            examples += 1;
            // The example's command path (words up to the first argument
            // that is not a command) must be a real one.
            let words: Vec<&str> = example.split_whitespace().skip(1).collect();
            let mut longest = String::new();
            for n in 1..=words.len() {
                let candidate = words[..n].join(" ");
                if known.contains(&candidate) {
                    longest = candidate;
                }
            }
            assert!(
                !longest.is_empty(),
                "`drover {}` --help shows an example of no command: {example:?}",
                path.join(" ")
            );
        }
        if path.first().map(String::as_str) == Some("clusters") && path.len() == 1 {
            assert!(!help.contains("show"), "`clusters` has no `show`: {help}");
        }
    }
    assert!(examples > 40, "only {examples} examples found");
    let top = Command::new(BIN).arg("--help").output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.contains("Clusters: ls, get, create (import), rm, import-command"),
        "{top}"
    );
}
