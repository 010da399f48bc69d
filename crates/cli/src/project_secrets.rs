//! `drover secrets …`: project secrets (copied by the server into every
//! namespace of the project), made as kubectl's `create secret` makes
//! them — generic from literals and files, TLS from a certificate and key,
//! registry credentials — and `drover projects quota`: a project's quota,
//! what its namespaces use, and each namespace's share.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Value};

use crate::client::MGMT;
use crate::context::{cluster_of, resolve_project};
use crate::output::{self, Output};
use crate::resources::current_client;
use crate::CliError;

/// Which project.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// The project (name or id; default: the current one).
    #[arg(long)]
    pub project: Option<String>,
    /// The cluster (default: the current one).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// `drover secrets …`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// List a project's secrets: names, types and how many namespaces hold
    /// a copy (-o json|yaml prints the objects, values included).
    ///
    /// Example: drover secrets ls --project web
    #[command(alias = "list")]
    Ls {
        /// Which project.
        #[command(flatten)]
        project: ProjectArgs,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Create a project secret, copied into every namespace of the project
    ///
    /// Examples:
    ///   drover secrets create generic api --from-literal token=abc --from-file ca.crt --project web
    ///   drover secrets create tls web-cert --cert tls.crt --key tls.key --project web
    ///   drover secrets create docker-registry regcred --docker-server registry.example --docker-username ci --docker-password-stdin --project web < password.txt
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Create(CreateSecret),
    /// Remove a project secret (and its copies).
    ///
    /// Example: drover secrets rm api --project web
    #[command(alias = "delete")]
    Rm {
        /// The secret.
        name: String,
        /// Which project.
        #[command(flatten)]
        project: ProjectArgs,
    },
}

/// The kinds of secret `drover secrets create` makes.
#[derive(Debug, clap::Subcommand)]
pub enum CreateSecret {
    /// An Opaque secret from literals and files.
    Generic {
        /// Its name.
        name: String,
        /// KEY=VALUE (repeatable).
        #[arg(long = "from-literal")]
        literals: Vec<String>,
        /// [KEY=]PATH: the file's content under KEY (default: its file
        /// name; repeatable).
        #[arg(long = "from-file")]
        files: Vec<String>,
        /// Which project.
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// A kubernetes.io/tls secret from a PEM certificate and key.
    Tls {
        /// Its name.
        name: String,
        /// The certificate (chain), PEM.
        #[arg(long)]
        cert: std::path::PathBuf,
        /// The private key, PEM.
        #[arg(long)]
        key: std::path::PathBuf,
        /// Which project.
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// A kubernetes.io/dockerconfigjson registry credential, usable as
    /// imagePullSecrets in every namespace of the project.
    DockerRegistry {
        /// Its name.
        name: String,
        /// The registry (host[:port]).
        #[arg(long)]
        docker_server: String,
        /// The user name.
        #[arg(long)]
        docker_username: String,
        /// Read the password from stdin (one line).
        #[arg(long)]
        docker_password_stdin: bool,
        /// The password (visible to other users of this machine: prefer
        /// --docker-password-stdin).
        #[arg(long, conflicts_with = "docker_password_stdin")]
        docker_password: Option<String>,
        /// An e-mail address for the registry.
        #[arg(long)]
        docker_email: Option<String>,
        /// Which project.
        #[command(flatten)]
        project: ProjectArgs,
    },
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// The data of a generic secret: literals and files, each key once.
fn generic_data(literals: &[String], files: &[String]) -> Result<Value, CliError> {
    let mut data = serde_json::Map::new();
    let mut add = |key: String, value: &[u8]| -> Result<(), CliError> {
        if data.insert(key.clone(), json!(b64(value))).is_some() {
            return Err(CliError::Usage(format!("key {key:?} is given twice")));
        }
        Ok(())
    };
    for l in literals {
        let Some((k, v)) = l.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--from-literal must be KEY=VALUE, not {l:?}"
            )));
        };
        add(k.to_owned(), v.as_bytes())?;
    }
    for f in files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (k.to_owned(), std::path::PathBuf::from(p)),
            None => {
                let p = std::path::PathBuf::from(f);
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, p)
            }
        };
        add(key, &read(&path)?)?;
    }
    if data.is_empty() {
        return Err(CliError::Usage(
            "give the secret's data with --from-literal or --from-file".into(),
        ));
    }
    Ok(Value::Object(data))
}

/// That a TLS pair is PEM: a certificate and a private key (kubectl also
/// checks that they match; the server checks only that both are there).
fn check_pem(cert: &[u8], key: &[u8]) -> Result<(), CliError> {
    if !String::from_utf8_lossy(cert).contains("-----BEGIN CERTIFICATE-----") {
        return Err(CliError::Usage(
            "--cert must be a PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    if !String::from_utf8_lossy(key).contains("PRIVATE KEY-----") {
        return Err(CliError::Usage(
            "--key must be a PEM private key (-----BEGIN … PRIVATE KEY-----)".into(),
        ));
    }
    Ok(())
}

/// A registry credential's `.dockerconfigjson`, as kubectl writes it.
fn docker_config(server: &str, user: &str, password: &str, email: Option<&str>) -> Value {
    let mut entry = json!({"username": user, "password": password,
        "auth": b64(format!("{user}:{password}").as_bytes())});
    if let Some(e) = email {
        entry["email"] = json!(e);
    }
    json!({"auths": {server: entry}})
}

async fn project_id(
    client: &crate::client::Client,
    entry: &crate::config::ServerEntry,
    args: &ProjectArgs,
) -> Result<(String, String), CliError> {
    let cluster = cluster_of(client, entry, args.cluster.as_deref()).await?;
    let wanted = args
        .project
        .clone()
        .or_else(|| entry.project.clone())
        .ok_or_else(|| {
            CliError::Usage(
                "no project given and none current: pass --project, or run drover context switch CLUSTER/PROJECT".into(),
            )
        })?;
    let (id, _) = resolve_project(client, &cluster, &wanted).await?;
    Ok((cluster, id))
}

/// `drover secrets …`.
pub async fn secrets(cmd: SecretsCommand) -> Result<(), CliError> {
    let (entry, client) = current_client()?;
    match cmd {
        SecretsCommand::Ls { project, out } => {
            let (_, p) = project_id(&client, &entry, &project).await?;
            crate::resources::list(&client, &format!("/api/v1/namespaces/{p}/secrets"), out).await
        }
        SecretsCommand::Rm { name, project } => {
            let (_, p) = project_id(&client, &entry, &project).await?;
            client
                .delete(&format!("/api/v1/namespaces/{p}/secrets/{name}"))
                .await?;
            crate::outln!("Secret {name} removed from project {p}; its copies follow.");
            Ok(())
        }
        SecretsCommand::Create(create) => {
            let (name, ty, data, project) = match create {
                CreateSecret::Generic {
                    name,
                    literals,
                    files,
                    project,
                } => (name, "Opaque", generic_data(&literals, &files)?, project),
                CreateSecret::Tls {
                    name,
                    cert,
                    key,
                    project,
                } => {
                    let (cert, key) = (read(&cert)?, read(&key)?);
                    check_pem(&cert, &key)?;
                    let data = json!({"tls.crt": b64(&cert), "tls.key": b64(&key)});
                    (name, "kubernetes.io/tls", data, project)
                }
                CreateSecret::DockerRegistry {
                    name,
                    docker_server,
                    docker_username,
                    docker_password_stdin,
                    docker_password,
                    docker_email,
                    project,
                } => {
                    let password = match (docker_password, docker_password_stdin) {
                        (Some(p), _) => p,
                        (None, true) => crate::read_stdin_line()?,
                        (None, false) => return Err(CliError::Usage(
                            "give the password with --docker-password-stdin (or --docker-password)"
                                .into(),
                        )),
                    };
                    if password.is_empty() {
                        return Err(CliError::Usage("the registry password is empty".into()));
                    }
                    let config = docker_config(
                        &docker_server,
                        &docker_username,
                        &password,
                        docker_email.as_deref(),
                    );
                    let data = json!({".dockerconfigjson": b64(config.to_string().as_bytes())});
                    (name, "kubernetes.io/dockerconfigjson", data, project)
                }
            };
            let (_, p) = project_id(&client, &entry, &project).await?;
            client
                .post(
                    &format!("/api/v1/namespaces/{p}/secrets"),
                    &json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": name, "namespace": p}, "type": ty, "data": data}),
                )
                .await?;
            crate::outln!(
                "Secret {name} created in project {p}; it is copied into each of the project's namespaces."
            );
            Ok(())
        }
    }
}

/// `drover projects quota`: show a project's quota, or change it.
#[derive(Debug, clap::Args)]
pub struct QuotaArgs {
    /// The project (name or id).
    pub project: String,
    /// The cluster (default: the current one).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Set the project's limit: KEY=QUANTITY, e.g. pods=50 or
    /// requests.cpu=8 (cluster owners; repeatable; KEY= removes it).
    #[arg(long = "limit")]
    pub limits: Vec<String>,
    /// Set the namespace default: KEY=QUANTITY (cluster owners;
    /// repeatable; KEY= removes it).
    #[arg(long = "namespace-default")]
    pub defaults: Vec<String>,
    /// Give one namespace its own share: NAMESPACE:KEY=QUANTITY (project
    /// owners; repeatable; NAMESPACE:KEY= goes back to the default).
    #[arg(long = "namespace-limit")]
    pub namespace_limits: Vec<String>,
    /// How to print.
    #[command(flatten)]
    pub out: Output,
}

fn key_value(s: &str, flag: &str) -> Result<(String, Value), CliError> {
    let Some((k, v)) = s.split_once('=') else {
        return Err(CliError::Usage(format!(
            "{flag} must be KEY=QUANTITY, not {s:?}"
        )));
    };
    Ok((
        k.to_owned(),
        if v.is_empty() { Value::Null } else { json!(v) },
    ))
}

/// The merge patch of the project's spec the flags ask for (`None`: only
/// show).
fn quota_patch(args: &QuotaArgs) -> Result<Option<Value>, CliError> {
    let mut spec = serde_json::Map::new();
    let mut section = |field: &str, items: &[String], flag: &str| -> Result<(), CliError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut limit = serde_json::Map::new();
        for i in items {
            let (k, v) = key_value(i, flag)?;
            limit.insert(k, v);
        }
        spec.insert(field.into(), json!({"limit": limit}));
        Ok(())
    };
    section("resourceQuota", &args.limits, "--limit")?;
    section(
        "namespaceDefaultResourceQuota",
        &args.defaults,
        "--namespace-default",
    )?;
    let mut per_ns: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for item in &args.namespace_limits {
        let Some((ns, kv)) = item.split_once(':') else {
            return Err(CliError::Usage(format!(
                "--namespace-limit must be NAMESPACE:KEY=QUANTITY, not {item:?}"
            )));
        };
        let (k, v) = key_value(kv, "--namespace-limit")?;
        per_ns.entry(ns.to_owned()).or_default().insert(k, v);
    }
    if !per_ns.is_empty() {
        let map: serde_json::Map<String, Value> = per_ns
            .into_iter()
            .map(|(ns, limit)| (ns, json!({"limit": limit})))
            .collect();
        spec.insert("namespaceResourceQuotas".into(), Value::Object(map));
    }
    Ok((!spec.is_empty()).then(|| json!({"spec": spec})))
}

/// A bar of `width` cells for `used` of `limit`.
fn bar(used: &str, limit: &str, width: usize) -> String {
    let parse = |s: &str| drover_core::quantity::parse(s).unwrap_or(0);
    let (u, l) = (parse(used), parse(limit));
    if l <= 0 {
        return String::new();
    }
    let filled = ((u.min(l) * width as i128) / l) as usize;
    let percent = u * 100 / l;
    format!(
        "{}{} {percent}%",
        "#".repeat(filled),
        ".".repeat(width - filled)
    )
}

/// `drover projects quota …`.
pub async fn quota(args: QuotaArgs) -> Result<(), CliError> {
    let (entry, client) = current_client()?;
    let cluster = cluster_of(&client, &entry, args.cluster.as_deref()).await?;
    let (id, name) = resolve_project(&client, &cluster, &args.project).await?;
    let path = format!("{MGMT}/namespaces/{cluster}/projects/{id}");
    let project = match quota_patch(&args)? {
        Some(patch) => client.patch(&path, &patch).await?,
        None => client.get(&path).await?,
    };
    if output::document(args.out, &project)? {
        return Ok(());
    }
    let spec = &project["spec"];
    let Some(limit) = spec["resourceQuota"]["limit"].as_object() else {
        crate::outln!(
            "Project {name} ({id}) has no quota. Set one with --limit and --namespace-default."
        );
        return Ok(());
    };
    let used = &project["status"]["resourceQuota"]["used"];
    let defaults = &spec["namespaceDefaultResourceQuota"]["limit"];
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = limit
        .iter()
        .map(|(k, l)| {
            let u = used[k].as_str().unwrap_or("0");
            vec![
                k.clone(),
                u.to_owned(),
                s(l),
                s(&defaults[k]),
                bar(u, l.as_str().unwrap_or_default(), 20),
            ]
        })
        .collect();
    crate::outln!("Project {name} ({id})");
    crate::out!(
        "{}",
        output::table(
            &["RESOURCE", "USED", "LIMIT", "NAMESPACE DEFAULT", ""],
            &rows
        )
    );
    let namespaces = project["status"]["namespaces"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if !namespaces.is_empty() {
        let mut rows = Vec::new();
        for (ns, q) in &namespaces {
            // The share as the spec says now (the status may not have
            // caught up with a change just made): the override, else the
            // default.
            let own = &spec["namespaceResourceQuotas"][ns]["limit"];
            for k in limit.keys() {
                let u = q["used"][k].as_str().unwrap_or("0");
                let (share, mark) = match own.get(k) {
                    Some(v) => (s(v), " (own)"),
                    None => (s(&defaults[k]), ""),
                };
                rows.push(vec![
                    ns.clone(),
                    k.clone(),
                    u.to_owned(),
                    format!("{share}{mark}"),
                    bar(u, &share, 20),
                ]);
            }
        }
        crate::outln!();
        crate::out!(
            "{}",
            output::table(&["NAMESPACE", "RESOURCE", "USED", "SHARE", ""], &rows)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_as_kubectl_writes_it() {
        let c = docker_config("r.example", "ci", "pw", None);
        assert_eq!(c["auths"]["r.example"]["auth"], b64(b"ci:pw"));
        assert_eq!(c["auths"]["r.example"]["password"], "pw");
    }

    #[test]
    fn literals_and_keys() {
        let d = generic_data(&["a=1".into(), "b=x=y".into()], &[]).unwrap();
        assert_eq!(d, json!({"a": b64(b"1"), "b": b64(b"x=y")}));
        assert!(generic_data(&["a=1".into(), "a=2".into()], &[]).is_err());
        assert!(generic_data(&["novalue".into()], &[]).is_err());
        assert!(generic_data(&[], &[]).is_err());
    }

    #[test]
    fn quota_flags_make_a_merge_patch() {
        let args = QuotaArgs {
            project: "web".into(),
            cluster: None,
            limits: vec!["pods=10".into(), "requests.cpu=".into()],
            defaults: vec![],
            namespace_limits: vec!["team-a:pods=4".into()],
            out: Output::default(),
        };
        let patch = quota_patch(&args).unwrap().unwrap();
        assert_eq!(
            patch,
            json!({"spec": {"resourceQuota": {"limit": {"pods": "10", "requests.cpu": null}},
                "namespaceResourceQuotas": {"team-a": {"limit": {"pods": "4"}}}}})
        );
        assert_eq!(bar("5", "10", 10), "#####..... 50%");
    }
}
