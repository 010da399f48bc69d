//! The current cluster and project (`drover context`), kubeconfigs, and
//! `drover kubectl`, which runs the real kubectl with a kubeconfig cached
//! per server and cluster (mode 0600) whose token is reused until an hour
//! before it expires.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::client::{Client, MGMT};
use crate::config::{self, Config, ServerEntry};
use crate::output::{self, Output};
use crate::CliError;

/// `drover context …`.
#[derive(Debug, clap::Subcommand)]
pub enum ContextCommand {
    /// Make a cluster (and a project) current. Without an argument, on a terminal, pick from a list
    ///
    /// Examples:
    ///   drover context switch prod-east
    ///   drover context switch prod-east/web
    ///   drover context switch
    #[command(verbatim_doc_comment)]
    Switch {
        /// CLUSTER or CLUSTER/PROJECT, by name or id.
        target: Option<String>,
        /// The server entry (default: the current one; switching to another
        /// entry makes it current).
        #[arg(long)]
        server: Option<String>,
    },
    /// Show the current server, cluster and project.
    ///
    /// Example: drover context current -o json
    Current {
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
}

/// `drover kubeconfig` flags.
#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {
    /// The cluster (name or id; default: the current one).
    pub cluster: Option<String>,
}

/// `drover kubectl` arguments.
#[derive(Debug, clap::Args)]
pub struct KubectlArgs {
    /// Everything after `kubectl`, passed on as is.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// A cluster's id and display name, from either.
pub async fn resolve_cluster(client: &Client, wanted: &str) -> Result<(String, String), CliError> {
    let list = client.get(&format!("{MGMT}/clusters")).await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let display = |c: &Value| {
        c["spec"]["displayName"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let id = |c: &Value| {
        c["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    if let Some(c) = items.iter().find(|c| id(c) == wanted) {
        return Ok((id(c), display(c)));
    }
    let matches: Vec<&Value> = items.iter().filter(|c| display(c) == wanted).collect();
    match matches.as_slice() {
        [c] => Ok((id(c), display(c))),
        [] => Err(CliError::NotFound(format!("cluster {wanted:?}"))),
        _ => Err(CliError::Usage(format!(
            "several clusters are called {wanted:?}; name one by id ({})",
            matches.iter().map(|c| id(c)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// A project's id and display name in a cluster, from either.
pub async fn resolve_project(
    client: &Client,
    cluster: &str,
    wanted: &str,
) -> Result<(String, String), CliError> {
    let list = client
        .get(&format!("{MGMT}/namespaces/{cluster}/projects"))
        .await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let display = |p: &Value| {
        p["spec"]["displayName"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let id = |p: &Value| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    items
        .iter()
        .find(|p| id(p) == wanted)
        .or_else(|| items.iter().find(|p| display(p) == wanted))
        .map(|p| (id(p), display(p)))
        .ok_or_else(|| CliError::NotFound(format!("project {wanted:?} in cluster {cluster}")))
}

/// The cluster to use: the one named, or the current one.
pub async fn cluster_of(
    client: &Client,
    entry: &ServerEntry,
    named: Option<&str>,
) -> Result<String, CliError> {
    match named {
        Some(n) => Ok(resolve_cluster(client, n).await?.0),
        None => entry.cluster.clone().ok_or_else(|| {
            CliError::Usage(
                "no cluster given and none current: pass --cluster, or run drover context switch"
                    .into(),
            )
        }),
    }
}

/// Pick an entry from a numbered list on the terminal.
fn pick(title: &str, choices: &[String]) -> Result<usize, CliError> {
    eprintln!("{title}");
    for (i, c) in choices.iter().enumerate() {
        eprintln!("  {:>2}  {c}", i + 1);
    }
    loop {
        eprint!("Select [1-{}]: ", choices.len());
        let line = crate::read_stdin_line()?;
        if line.is_empty() && choices.len() == 1 {
            return Ok(0);
        }
        match line.trim().parse::<usize>() {
            Ok(n) if (1..=choices.len()).contains(&n) => return Ok(n - 1),
            _ => eprintln!("Type a number from the list."),
        }
    }
}

/// `drover context …`.
pub async fn run(cmd: ContextCommand) -> Result<(), CliError> {
    match cmd {
        ContextCommand::Current { out } => {
            let config = Config::load()?;
            let entry = config.server(None)?;
            let doc = serde_json::json!({
                "server": entry.name, "url": entry.url, "user": entry.username,
                "cluster": entry.cluster, "project": entry.project,
            });
            if !output::document(out, &doc)? {
                let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                crate::out!(
                    "{}",
                    output::table(
                        &["SERVER", "URL", "USER", "CLUSTER", "PROJECT"],
                        &[vec![
                            entry.name.clone(),
                            entry.url.clone(),
                            dash(&entry.username),
                            dash(&entry.cluster),
                            dash(&entry.project),
                        ]]
                    )
                );
            }
            Ok(())
        }
        ContextCommand::Switch { target, server } => {
            let mut config = Config::load()?;
            let entry = config.server(server.as_deref())?.clone();
            let client = Client::for_entry(&entry)?;
            let (cluster, project, label) = match target {
                Some(t) => {
                    let (c, p) = match t.split_once('/') {
                        Some((c, p)) => (c, Some(p)),
                        None => (t.as_str(), None),
                    };
                    let (cid, cname) = resolve_cluster(&client, c).await?;
                    match p {
                        Some(p) => {
                            let (pid, pname) = resolve_project(&client, &cid, p).await?;
                            (cid, Some(pid), format!("{cname}/{pname}"))
                        }
                        None => (cid, None, cname),
                    }
                }
                None if crate::interactive() => {
                    let clusters = client.get(&format!("{MGMT}/clusters")).await?;
                    let mut choices = Vec::new();
                    let mut values = Vec::new();
                    for c in clusters["items"].as_array().into_iter().flatten() {
                        let cid = c["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                        let cname = c["spec"]["displayName"].as_str().unwrap_or_default().to_owned();
                        choices.push(format!("{cname}  ({cid})"));
                        values.push((cid.clone(), None, cname.clone()));
                        if let Ok(ps) = client.get(&format!("{MGMT}/namespaces/{cid}/projects")).await {
                            for p in ps["items"].as_array().into_iter().flatten() {
                                let pid = p["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                                let pname = p["spec"]["displayName"].as_str().unwrap_or_default();
                                choices.push(format!("{cname}/{pname}  ({cid}/{pid})"));
                                values.push((cid.clone(), Some(pid), format!("{cname}/{pname}")));
                            }
                        }
                    }
                    if choices.is_empty() {
                        return Err(CliError::NotFound("no cluster you may see".into()));
                    }
                    let i = pick("Clusters and projects:", &choices)?;
                    values.swap_remove(i)
                }
                None => {
                    return Err(CliError::Usage(
                        "name the cluster (drover context switch CLUSTER[/PROJECT]); the picker needs a terminal".into(),
                    ))
                }
            };
            config.current = Some(entry.name.clone());
            let e = config.server_mut(Some(&entry.name))?;
            e.cluster = Some(cluster);
            e.project = project;
            config.save()?;
            crate::outln!("Switched to {label}.");
            Ok(())
        }
    }
}

fn cache_paths(entry: &ServerEntry, cluster: &str) -> (PathBuf, PathBuf) {
    let dir = config::cache_dir().join(&entry.name);
    (
        dir.join(format!("{cluster}.kubeconfig")),
        dir.join(format!("{cluster}.expires")),
    )
}

/// The tokens of the entry's cached kubeconfigs.
pub fn cached_tokens(entry: &ServerEntry) -> Vec<String> {
    let dir = config::cache_dir().join(&entry.name);
    let Ok(files) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    files
        .filter_map(Result::ok)
        .filter(|f| f.path().extension().is_some_and(|e| e == "kubeconfig"))
        .filter_map(|f| std::fs::read_to_string(f.path()).ok())
        .filter_map(|text| token_in(&text))
        .collect()
}

/// Remove the entry's cached kubeconfigs.
pub fn forget_cache(entry: &ServerEntry) {
    let _ = std::fs::remove_dir_all(config::cache_dir().join(&entry.name));
}

fn token_in(kubeconfig: &str) -> Option<String> {
    let doc: Value = yaml_serde::from_str(kubeconfig).ok()?;
    doc["users"][0]["user"]["token"].as_str().map(str::to_owned)
}

/// A new kubeconfig for a cluster (a new cluster-scoped token).
async fn fetch_kubeconfig(client: &Client, cluster: &str) -> Result<String, CliError> {
    let (status, text) = client
        .raw(
            reqwest::Method::POST,
            &format!("{MGMT}/clusters/{cluster}/kubeconfig"),
            None,
            Some("application/yaml"),
        )
        .await?;
    if status.is_success() {
        return Ok(text);
    }
    Err(client.refusal_of(status, &text))
}

/// The cached kubeconfig for a cluster, renewed when missing or within an
/// hour of its token's expiry.
pub async fn cached_kubeconfig(
    client: &Client,
    entry: &ServerEntry,
    cluster: &str,
) -> Result<PathBuf, CliError> {
    let (path, expires_path) = cache_paths(entry, cluster);
    let fresh = std::fs::read_to_string(&expires_path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|_| path.exists())
        .is_some_and(|e| {
            e == "never"
                || drover_core::meta::parse_rfc3339(&e)
                    .is_some_and(|t| t > SystemTime::now() + Duration::from_secs(3600))
        });
    if fresh {
        return Ok(path);
    }
    if let Some(old) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| token_in(&t))
    {
        if let Some((name, _)) = old.split_once(':') {
            let _ = client.delete(&format!("{MGMT}/tokens/{name}")).await;
        }
    }
    let yaml = fetch_kubeconfig(client, cluster).await?;
    let token = token_in(&yaml)
        .ok_or_else(|| CliError::Config("the server's kubeconfig has no token".into()))?;
    let expires = match token.split_once(':') {
        Some((name, _)) => client
            .get(&format!("{MGMT}/tokens/{name}"))
            .await
            .ok()
            .and_then(|t| t["status"]["expiresAt"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "never".into()),
        None => "never".into(),
    };
    config::write_private(&path, yaml.as_bytes())?;
    config::write_private(&expires_path, expires.as_bytes())?;
    Ok(path)
}

/// `drover kubeconfig`.
pub async fn kubeconfig(args: KubeconfigArgs) -> Result<(), CliError> {
    let config = Config::load()?;
    let entry = config.server(None)?;
    let client = Client::for_entry(entry)?;
    let cluster = cluster_of(&client, entry, args.cluster.as_deref()).await?;
    crate::out!("{}", fetch_kubeconfig(&client, &cluster).await?);
    Ok(())
}

/// `drover kubectl`: the real kubectl (`$KUBECTL`, or `kubectl` on PATH).
pub async fn kubectl(args: KubectlArgs) -> Result<(), CliError> {
    let config = Config::load()?;
    let entry = config.server(None)?;
    let client = Client::for_entry(entry)?;
    let cluster = cluster_of(&client, entry, None).await?;
    let path = cached_kubeconfig(&client, entry, &cluster).await?;
    let program = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let status = tokio::process::Command::new(&program)
        .arg("--kubeconfig")
        .arg(&path)
        .args(&args.args)
        .status()
        .await
        .map_err(|e| {
            CliError::Config(format!(
                "cannot run {program}: {e} (set KUBECTL or put kubectl on PATH)"
            ))
        })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(CliError::Exit(code)),
        None => Err(CliError::Exit(1)),
    }
}
