//! Clusters, projects, namespaces, members (with directory search), users,
//! sign-in providers and tokens. Lists print
//! the server's own table columns (as `kubectl get` does); `-o json|yaml`
//! prints the objects.

use serde_json::{json, Value};

use crate::client::{Client, MGMT};
use crate::config::{Config, ServerEntry};
use crate::context::{cluster_of, resolve_cluster, resolve_project};
use crate::output::{self, Output};
use crate::CliError;

fn current() -> Result<(ServerEntry, Client), CliError> {
    let config = Config::load()?;
    let entry = config.server(None)?.clone();
    let client = Client::for_entry(&entry)?;
    Ok((entry, client))
}

/// The current server's entry and a client for it.
pub(crate) fn current_client() -> Result<(ServerEntry, Client), CliError> {
    current()
}

/// Print a list: the server's table, or the objects.
pub(crate) async fn list(client: &Client, path: &str, out: Output) -> Result<(), CliError> {
    if out.format == output::Format::Table {
        crate::out!("{}", output::server_table(&client.table(path).await?));
    } else {
        output::document(out, &client.get(path).await?)?;
    }
    Ok(())
}

/// `drover clusters …`.
#[derive(Debug, clap::Subcommand)]
pub enum ClustersCommand {
    /// List clusters with their state, version and nodes.
    ///
    /// Example: drover clusters ls -o json
    #[command(alias = "list")]
    Ls {
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Show one cluster.
    ///
    /// Example: drover clusters get prod-east -o yaml
    Get {
        /// Name or id.
        cluster: String,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Create a cluster to import, and print the command that imports it.
    ///
    /// Example: drover clusters create prod-east
    Create {
        /// Its display name.
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Remove a cluster from Drover (its agent cleans up what Drover made).
    ///
    /// Example: drover clusters rm prod-east
    #[command(alias = "delete")]
    Rm {
        /// Name or id.
        cluster: String,
    },
    /// Print the commands that import a cluster.
    ///
    /// Example: drover clusters import-command prod-east
    ImportCommand {
        /// Name or id.
        cluster: String,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
}

async fn import_commands(client: &Client, cluster: &str) -> Result<Value, CliError> {
    let t = client
        .get(&format!(
            "{MGMT}/namespaces/{cluster}/clusterregistrationtokens/default-token"
        ))
        .await?;
    Ok(json!({
        "cluster": cluster,
        "command": t["status"]["command"],
        "insecureCommand": t["status"]["insecureCommand"],
    }))
}

fn print_import(cmds: &Value) -> Result<(), CliError> {
    crate::outln!("Run this against the cluster to import it:\n");
    crate::outln!("    {}\n", cmds["command"].as_str().unwrap_or_default());
    crate::outln!(
        "If the Drover server's certificate is self-signed and the cluster does not trust it:\n"
    );
    crate::outln!(
        "    {}",
        cmds["insecureCommand"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// `drover clusters …`.
pub async fn clusters(cmd: ClustersCommand) -> Result<(), CliError> {
    let (_, client) = current()?;
    match cmd {
        ClustersCommand::Ls { out } => list(&client, &format!("{MGMT}/clusters"), out).await,
        ClustersCommand::Get { cluster, out } => {
            let (id, _) = resolve_cluster(&client, &cluster).await?;
            let path = format!("{MGMT}/clusters/{id}");
            if out.format == output::Format::Table {
                crate::out!("{}", output::server_table(&client.table(&path).await?));
            } else {
                output::document(out, &client.get(&path).await?)?;
            }
            Ok(())
        }
        ClustersCommand::Create {
            name,
            description,
            out,
        } => {
            let mut spec = json!({"displayName": name});
            if let Some(d) = description {
                spec["description"] = json!(d);
            }
            let c = client
                .post(
                    &format!("{MGMT}/clusters"),
                    &json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "spec": spec}),
                )
                .await?;
            let id = c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let cmds = import_commands(&client, &id).await?;
            if !output::document(out, &json!({"cluster": c, "import": cmds}))? {
                crate::outln!("Cluster {name} created ({id}).\n");
                print_import(&cmds)?;
            }
            Ok(())
        }
        ClustersCommand::Rm { cluster } => {
            let (id, name) = resolve_cluster(&client, &cluster).await?;
            client.delete(&format!("{MGMT}/clusters/{id}")).await?;
            crate::outln!("Cluster {name} ({id}) is being removed.");
            Ok(())
        }
        ClustersCommand::ImportCommand { cluster, out } => {
            let (id, _) = resolve_cluster(&client, &cluster).await?;
            let cmds = import_commands(&client, &id).await?;
            if !output::document(out, &cmds)? {
                print_import(&cmds)?;
            }
            Ok(())
        }
    }
}

/// `drover projects …`.
#[derive(Debug, clap::Subcommand)]
pub enum ProjectsCommand {
    /// List the projects of a cluster.
    ///
    /// Example: drover projects ls --cluster prod-east
    #[command(alias = "list")]
    Ls {
        /// The cluster (default: the current one).
        #[arg(long)]
        cluster: Option<String>,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Create a project.
    ///
    /// Example: drover projects create web --cluster prod-east
    Create {
        /// Its display name.
        name: String,
        /// The cluster (default: the current one).
        #[arg(long)]
        cluster: Option<String>,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Remove a project (refused while it holds namespaces, unless
    /// --move-namespaces-to-default).
    ///
    /// Example: drover projects rm web --move-namespaces-to-default
    #[command(alias = "delete")]
    Rm {
        /// Name or id.
        project: String,
        /// The cluster (default: the current one).
        #[arg(long)]
        cluster: Option<String>,
        /// Move its namespaces to the Default project first.
        #[arg(long)]
        move_namespaces_to_default: bool,
    },
    /// Show a project's quota, what its namespaces use and each one's share; or change them
    ///
    /// Examples:
    ///   drover projects quota web
    ///   drover projects quota web --limit pods=50 --limit requests.cpu=8 --namespace-default pods=10
    ///   drover projects quota web --namespace-limit web-prod:pods=20
    #[command(verbatim_doc_comment)]
    Quota(crate::project_secrets::QuotaArgs),
}

/// `drover projects …`.
pub async fn projects(cmd: ProjectsCommand) -> Result<(), CliError> {
    let (entry, client) = current()?;
    match cmd {
        ProjectsCommand::Quota(args) => crate::project_secrets::quota(args).await,
        ProjectsCommand::Ls { cluster, out } => {
            let c = cluster_of(&client, &entry, cluster.as_deref()).await?;
            list(&client, &format!("{MGMT}/namespaces/{c}/projects"), out).await
        }
        ProjectsCommand::Create { name, cluster, out } => {
            let c = cluster_of(&client, &entry, cluster.as_deref()).await?;
            let p = client
                .post(
                    &format!("{MGMT}/namespaces/{c}/projects"),
                    &json!({"apiVersion": "management.drover.io/v1", "kind": "Project", "spec": {"displayName": name}}),
                )
                .await?;
            if !output::document(out, &p)? {
                crate::outln!(
                    "Project {name} created ({}:{}).",
                    c,
                    p["metadata"]["name"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        ProjectsCommand::Rm {
            project,
            cluster,
            move_namespaces_to_default,
        } => {
            let c = cluster_of(&client, &entry, cluster.as_deref()).await?;
            let (id, name) = resolve_project(&client, &c, &project).await?;
            let path = format!("{MGMT}/namespaces/{c}/projects/{id}");
            if move_namespaces_to_default {
                client
                    .patch(&path, &json!({"metadata": {"annotations": {"drover.io/namespaces-on-delete": "move-to-default"}}}))
                    .await?;
            }
            client.delete(&path).await?;
            crate::outln!("Project {name} ({id}) removed.");
            Ok(())
        }
    }
}

/// `drover namespaces …`.
#[derive(Debug, clap::Subcommand)]
pub enum NamespacesCommand {
    /// List the namespaces of a cluster with their projects.
    ///
    /// Example: drover namespaces ls --project web
    #[command(alias = "list")]
    Ls {
        /// Only this project's (name or id).
        #[arg(long)]
        project: Option<String>,
        /// The cluster (default: the current one).
        #[arg(long)]
        cluster: Option<String>,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Create a namespace in a project.
    ///
    /// Example: drover namespaces create web-prod --project web
    Create {
        /// The namespace.
        name: String,
        /// The project (default: the current one).
        #[arg(long)]
        project: Option<String>,
        /// The cluster (default: the current one).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Move a namespace to another project (cluster owners).
    ///
    /// Example: drover namespaces move web-prod --project shop
    Move {
        /// The namespace.
        name: String,
        /// The project to move it to.
        #[arg(long)]
        project: String,
        /// The cluster (default: the current one).
        #[arg(long)]
        cluster: Option<String>,
    },
}

fn project_or_current(entry: &ServerEntry, named: Option<String>) -> Result<String, CliError> {
    named.or_else(|| entry.project.clone()).ok_or_else(|| {
        CliError::Usage(
            "no project given and none current: pass --project, or run drover context switch CLUSTER/PROJECT".into(),
        )
    })
}

/// `drover namespaces …`.
pub async fn namespaces(cmd: NamespacesCommand) -> Result<(), CliError> {
    let (entry, client) = current()?;
    match cmd {
        NamespacesCommand::Ls {
            project,
            cluster,
            out,
        } => {
            let c = cluster_of(&client, &entry, cluster.as_deref()).await?;
            let projects = client
                .get(&format!("{MGMT}/namespaces/{c}/projects"))
                .await?;
            let display = |id: &str| {
                projects["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["metadata"]["name"] == id)
                    .and_then(|p| p["spec"]["displayName"].as_str())
                    .map(str::to_owned)
            };
            let only = match project {
                Some(p) => Some(resolve_project(&client, &c, &p).await?.0),
                None => None,
            };
            let nss = client
                .get(&format!("/k8s/clusters/{c}/api/v1/namespaces"))
                .await?;
            let mut items = Vec::new();
            let mut rows = Vec::new();
            for ns in nss["items"].as_array().into_iter().flatten() {
                let name = ns["metadata"]["name"].as_str().unwrap_or_default();
                let pid = ns
                    .pointer("/metadata/annotations/drover.io~1project-id")
                    .and_then(Value::as_str)
                    .and_then(|a| a.split_once(':'))
                    .filter(|(cl, _)| *cl == c)
                    .map(|(_, p)| p.to_owned());
                if only.is_some() && only != pid {
                    continue;
                }
                let pname = pid.as_deref().and_then(display);
                rows.push(vec![
                    name.to_owned(),
                    pname.clone().unwrap_or_else(|| "-".into()),
                    ns["status"]["phase"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ]);
                items.push(json!({"name": name, "project": pid, "projectName": pname, "phase": ns["status"]["phase"]}));
            }
            if !output::document(out, &json!({"items": items}))? {
                crate::out!("{}", output::table(&["NAME", "PROJECT", "STATUS"], &rows));
            }
            Ok(())
        }
        NamespacesCommand::Create {
            name,
            project,
            cluster,
        } => {
            let c = cluster_of(&client, &entry, cluster.as_deref()).await?;
            let p = project_or_current(&entry, project)?;
            let (pid, pname) = resolve_project(&client, &c, &p).await?;
            client
                .post(
                    &format!("/k8s/clusters/{c}/api/v1/namespaces"),
                    &json!({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": name, "annotations": {"drover.io/project-id": format!("{c}:{pid}")}}}),
                )
                .await?;
            crate::outln!("Namespace {name} created in project {pname}.");
            Ok(())
        }
        NamespacesCommand::Move {
            name,
            project,
            cluster,
        } => {
            let c = cluster_of(&client, &entry, cluster.as_deref()).await?;
            let (pid, pname) = resolve_project(&client, &c, &project).await?;
            client
                .patch(
                    &format!("/k8s/clusters/{c}/api/v1/namespaces/{name}"),
                    &json!({"metadata": {"annotations": {"drover.io/project-id": format!("{c}:{pid}")}}}),
                )
                .await?;
            crate::outln!("Namespace {name} moved to project {pname}.");
            Ok(())
        }
    }
}

/// Who a membership is for.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct SubjectArgs {
    /// A user.
    #[arg(long)]
    pub user: Option<String>,
    /// A group.
    #[arg(long)]
    pub group: Option<String>,
}

/// Where a membership is.
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// The cluster (default: the current one).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The project (a project membership; else a cluster one).
    #[arg(long)]
    pub project: Option<String>,
}

/// `drover members …`.
#[derive(Debug, clap::Subcommand)]
pub enum MembersCommand {
    /// List the members of a cluster or project.
    ///
    /// Example: drover members ls --cluster prod-east --project web
    #[command(alias = "list")]
    Ls {
        /// Where.
        #[command(flatten)]
        scope: ScopeArgs,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Find directory users and groups by name, to add as members.
    ///
    /// Example: drover members search platform
    Search {
        /// Part of a user's or group's name (2 characters or more).
        query: String,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Give a user or group a role template in a cluster or project. A
    /// name that is not a local user is looked up in the directories: one
    /// user or group of exactly that name is bound by its principal id.
    ///
    /// Example: drover members add --cluster prod-east --project web --user bob --role project-member
    Add {
        /// Where.
        #[command(flatten)]
        scope: ScopeArgs,
        /// Who.
        #[command(flatten)]
        subject: SubjectArgs,
        /// The role template (e.g. cluster-member, project-member, read-only).
        #[arg(long)]
        role: String,
    },
    /// Take a role template away from a user or group.
    ///
    /// Example: drover members rm --cluster prod-east --project web --user bob --role project-member
    #[command(alias = "delete")]
    Rm {
        /// Where.
        #[command(flatten)]
        scope: ScopeArgs,
        /// Who.
        #[command(flatten)]
        subject: SubjectArgs,
        /// The role template.
        #[arg(long)]
        role: String,
    },
}

/// (collection path, kind, spec of the scope).
async fn member_scope(
    client: &Client,
    entry: &ServerEntry,
    scope: &ScopeArgs,
) -> Result<(String, &'static str, Value), CliError> {
    let c = cluster_of(client, entry, scope.cluster.as_deref()).await?;
    Ok(match &scope.project {
        Some(p) => {
            let (pid, _) = resolve_project(client, &c, p).await?;
            (
                format!("{MGMT}/namespaces/{pid}/projectroletemplatebindings"),
                "ProjectRoleTemplateBinding",
                json!({"projectName": format!("{c}:{pid}")}),
            )
        }
        None => (
            format!("{MGMT}/namespaces/{c}/clusterroletemplatebindings"),
            "ClusterRoleTemplateBinding",
            json!({"clusterName": c}),
        ),
    })
}

/// `drover members …`.
pub async fn members(cmd: MembersCommand) -> Result<(), CliError> {
    let (entry, client) = current()?;
    match cmd {
        MembersCommand::Ls { scope, out } => {
            let (path, _, _) = member_scope(&client, &entry, &scope).await?;
            list(&client, &path, out).await
        }
        MembersCommand::Search { query, out } => {
            let found = search_principals(&client, &query).await?;
            let doc = json!({"items": found});
            if !output::document(out, &doc)? {
                crate::out!(
                    "{}",
                    output::table(
                        &["KIND", "NAME", "DISPLAY NAME", "ID"],
                        &found
                            .iter()
                            .map(|p| {
                                ["kind", "name", "displayName", "id"]
                                    .map(|k| p[k].as_str().unwrap_or_default().to_owned())
                                    .to_vec()
                            })
                            .collect::<Vec<_>>(),
                    )
                );
            }
            Ok(())
        }
        MembersCommand::Add {
            scope,
            subject,
            role,
        } => {
            let (path, kind, mut spec) = member_scope(&client, &entry, &scope).await?;
            spec["roleTemplateName"] = json!(role);
            let who = match (&subject.user, &subject.group) {
                (Some(u), _) => {
                    spec["userName"] = json!(resolve_subject(&client, "user", u).await?);
                    u.clone()
                }
                (_, Some(g)) => {
                    spec["groupName"] = json!(resolve_subject(&client, "group", g).await?);
                    g.clone()
                }
                _ => unreachable!("clap requires one of them"),
            };
            let prefix: String = who
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .take(40)
                .collect();
            client
                .post(
                    &path,
                    &json!({"apiVersion": "management.drover.io/v1", "kind": kind,
                            "metadata": {"generateName": format!("{}-", prefix.trim_matches('-'))},
                            "spec": spec}),
                )
                .await?;
            crate::outln!("{who} is now {role}.");
            Ok(())
        }
        MembersCommand::Rm {
            scope,
            subject,
            role,
        } => {
            let (path, _, _) = member_scope(&client, &entry, &scope).await?;
            // The subject as `add` named it: a directory user's binding
            // names the Drover user linked to them.
            let (field, who) = match (&subject.user, &subject.group) {
                (Some(u), _) => (
                    "userName",
                    linked_user(&client, &resolve_subject(&client, "user", u).await?).await?,
                ),
                (_, Some(g)) => ("groupName", resolve_subject(&client, "group", g).await?),
                _ => unreachable!("clap requires one of them"),
            };
            let bindings = client.get(&path).await?;
            let mut removed = 0;
            for b in bindings["items"].as_array().into_iter().flatten() {
                let spec = &b["spec"];
                let matches =
                    spec["roleTemplateName"] == role.as_str() && spec[field] == who.as_str();
                if matches {
                    let name = b["metadata"]["name"].as_str().unwrap_or_default();
                    client.delete(&format!("{path}/{name}")).await?;
                    removed += 1;
                }
            }
            if removed == 0 {
                return Err(CliError::NotFound(format!(
                    "no {role} membership for {}",
                    subject.user.or(subject.group).unwrap_or_default()
                )));
            }
            crate::outln!("Removed.");
            Ok(())
        }
    }
}

/// `drover users …`.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// List users.
    ///
    /// Example: drover users ls
    #[command(alias = "list")]
    Ls {
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Create a user with a password (asked for, or --password-stdin).
    ///
    /// Example: echo 'a long password' | drover users create bob --password-stdin
    Create {
        /// The login name.
        username: String,
        /// The name people see.
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The user must change the password at first login.
        #[arg(long)]
        must_change_password: bool,
    },
    /// Set a user's password (yours: the current one is asked too).
    ///
    /// Example: drover users set-password bob --password-stdin < new.txt
    SetPassword {
        /// The login name.
        username: String,
        /// Read the new password (and, for your own, then the current one)
        /// from standard input, one per line.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: no login, their tokens stop working.
    ///
    /// Example: drover users disable bob
    Disable {
        /// The login name.
        username: String,
    },
    /// Enable a user again.
    ///
    /// Example: drover users enable bob
    Enable {
        /// The login name.
        username: String,
    },
    /// Read a provider user's groups from their provider now, rather
    /// than at the next scheduled refresh.
    ///
    /// Example: drover users refresh-groups user0001
    RefreshGroups {
        /// The login name.
        username: String,
    },
}

fn password(prompt: &str, from_stdin: bool) -> Result<String, CliError> {
    if from_stdin {
        return crate::read_stdin_line();
    }
    if !crate::interactive() {
        return Err(CliError::Usage(
            "no terminal to ask for the password: pass --password-stdin".into(),
        ));
    }
    rpassword::prompt_password(prompt)
        .map_err(|e| CliError::Config(format!("cannot read the password: {e}")))
}

/// The User object's name for a login name.
async fn user_id(client: &Client, username: &str) -> Result<String, CliError> {
    let users = client.get(&format!("{MGMT}/users")).await?;
    let users = users["items"].as_array().cloned().unwrap_or_default();
    // The object's own name first; else the one user of that login name (a
    // local user and a directory user may share one).
    if users.iter().any(|u| u["metadata"]["name"] == username) {
        return Ok(username.to_owned());
    }
    let named: Vec<&Value> = users
        .iter()
        .filter(|u| u["spec"]["username"] == username)
        .collect();
    match named.as_slice() {
        [one] => Ok(one["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()),
        [] => Err(CliError::NotFound(format!("user {username:?}"))),
        many => Err(CliError::Usage(format!(
            "{username:?} is the login name of several users; name one of: {}",
            many.iter()
                .map(|u| format!(
                    "{} ({})",
                    u["metadata"]["name"].as_str().unwrap_or_default(),
                    u["spec"]["principalIds"][0].as_str().unwrap_or("local")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `drover users …`.
pub async fn users(cmd: UsersCommand) -> Result<(), CliError> {
    let (entry, client) = current()?;
    match cmd {
        UsersCommand::Ls { out } => list(&client, &format!("{MGMT}/users"), out).await,
        UsersCommand::Create {
            username,
            display_name,
            password_stdin,
            must_change_password,
        } => {
            let pw = password(&format!("Password for {username}: "), password_stdin)?;
            let mut spec =
                json!({"username": username, "mustChangePassword": must_change_password});
            if let Some(d) = display_name {
                spec["displayName"] = json!(d);
            }
            let u = client
                .post(
                    &format!("{MGMT}/users"),
                    &json!({"apiVersion": "management.drover.io/v1", "kind": "User",
                            "metadata": {"name": username}, "spec": spec}),
                )
                .await?;
            let id = u["metadata"]["name"].as_str().unwrap_or_default();
            client
                .post(
                    &format!("{MGMT}/users/{id}/password"),
                    &json!({"newPassword": pw}),
                )
                .await?;
            crate::outln!("User {username} created.");
            Ok(())
        }
        UsersCommand::SetPassword {
            username,
            password_stdin,
        } => {
            let id = user_id(&client, &username).await?;
            let pw = password(&format!("New password for {username}: "), password_stdin)?;
            let mut body = json!({"newPassword": pw});
            if entry.username.as_deref() == Some(username.as_str()) {
                body["currentPassword"] = json!(password("Current password: ", password_stdin)?);
            }
            client
                .post(&format!("{MGMT}/users/{id}/password"), &body)
                .await?;
            crate::outln!("Password of {username} changed.");
            Ok(())
        }
        UsersCommand::Disable { username } => set_enabled(&client, &username, false).await,
        UsersCommand::Enable { username } => set_enabled(&client, &username, true).await,
        UsersCommand::RefreshGroups { username } => {
            let id = user_id(&client, &username).await?;
            let done = client
                .post(&format!("{MGMT}/users/{id}/refreshgroups"), &json!({}))
                .await?;
            crate::outln!(
                "User {username}: {}.",
                done["refreshed"].as_str().unwrap_or("refreshed")
            );
            Ok(())
        }
    }
}

/// `drover providers …`: the authentication providers (AuthConfig objects).
#[derive(Debug, clap::Subcommand)]
pub enum ProvidersCommand {
    /// List the providers.
    ///
    /// Example: drover providers ls
    #[command(alias = "list")]
    Ls {
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Create or replace a provider from a YAML or JSON file (an AuthConfig;
    /// its secrets are kept by the server and never shown again).
    ///
    /// Example: drover providers apply -f ldap.yaml
    Apply {
        /// The file (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Let a provider's users log in.
    ///
    /// Example: drover providers enable ldap
    Enable {
        /// ldap, activedirectory or oidc.
        name: String,
    },
    /// Stop a provider: its users cannot log in, and their tokens stop
    /// working at once.
    ///
    /// Example: drover providers disable ldap
    Disable {
        /// ldap, activedirectory or oidc.
        name: String,
    },
}

/// `drover providers …`.
pub async fn providers(cmd: ProvidersCommand) -> Result<(), CliError> {
    let (_, client) = current()?;
    match cmd {
        ProvidersCommand::Ls { out } => list(&client, &format!("{MGMT}/authconfigs"), out).await,
        ProvidersCommand::Apply { file } => {
            let text = if file == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .map_err(|e| CliError::Config(format!("cannot read standard input: {e}")))?;
                t
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| CliError::Config(format!("cannot read {file}: {e}")))?
            };
            let mut obj: Value = yaml_serde::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{file} is not YAML or JSON: {e}")))?;
            let name = obj["metadata"]["name"]
                .as_str()
                .ok_or_else(|| CliError::Usage(format!("{file} has no metadata.name")))?
                .to_owned();
            obj["apiVersion"] = json!(drover_core::api::API_VERSION);
            obj["kind"] = json!("AuthConfig");
            let path = format!("{MGMT}/authconfigs/{name}");
            match client.get(&path).await {
                Ok(current) => {
                    obj["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                    client.put(&path, &obj).await?;
                    crate::outln!("Provider {name} updated.");
                }
                Err(CliError::NotFound(_)) => {
                    client.post(&format!("{MGMT}/authconfigs"), &obj).await?;
                    crate::outln!("Provider {name} created.");
                }
                Err(e) => return Err(e),
            }
            Ok(())
        }
        ProvidersCommand::Enable { name } => set_provider(&client, &name, true).await,
        ProvidersCommand::Disable { name } => set_provider(&client, &name, false).await,
    }
}

async fn set_provider(client: &Client, name: &str, enabled: bool) -> Result<(), CliError> {
    client
        .patch(
            &format!("{MGMT}/authconfigs/{name}"),
            &json!({"spec": {"enabled": enabled}}),
        )
        .await?;
    crate::outln!(
        "Provider {name} {}.",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

/// Principals of the enabled directories whose names contain `query`.
async fn search_principals(client: &Client, query: &str) -> Result<Vec<Value>, CliError> {
    let q: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
    let found = client.get(&format!("/v1/principals?q={q}")).await?;
    Ok(found["items"].as_array().cloned().unwrap_or_default())
}

/// The Drover user a principal id is linked to (a name that is no
/// principal id is returned as it is).
async fn linked_user(client: &Client, principal: &str) -> Result<String, CliError> {
    if !principal.contains("://") {
        return Ok(principal.to_owned());
    }
    // One who may not list users (a project owner) finds the binding by
    // the name it was given.
    let Ok(users) = client.get(&format!("{MGMT}/users")).await else {
        return Ok(principal.to_owned());
    };
    Ok(users["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| {
            u["spec"]["principalIds"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i == principal))
        })
        .and_then(|u| u["metadata"]["name"].as_str())
        .unwrap_or(principal)
        .to_owned())
}

/// A `--user` or `--group` as a binding names it: a principal id or local
/// user as given, else the one directory user or group of exactly that name.
async fn resolve_subject(client: &Client, kind: &str, given: &str) -> Result<String, CliError> {
    if given.contains("://") || given.chars().count() < 2 {
        return Ok(given.to_owned());
    }
    if kind == "user" {
        match user_id(client, given).await {
            Ok(id) => return Ok(id),
            // Ambiguous: the caller must say which.
            Err(e @ CliError::Usage(_)) => return Err(e),
            // Not a local user, or users are not for this caller to list
            // (a project owner): the directory may know the name.
            Err(_) => {}
        }
    }
    let matches: Vec<Value> = match search_principals(client, given).await {
        Ok(found) => found
            .into_iter()
            .filter(|p| {
                p["kind"] == kind
                    && p["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(given))
            })
            .collect(),
        // No directory to ask: the name as given.
        Err(_) => return Ok(given.to_owned()),
    };
    match matches.as_slice() {
        [] => Ok(given.to_owned()),
        [one] => Ok(one["id"].as_str().unwrap_or(given).to_owned()),
        many => Err(CliError::Usage(format!(
            "{given:?} names several directory {kind}s; pass one of: {}",
            many.iter()
                .filter_map(|p| p["id"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn set_enabled(client: &Client, username: &str, enabled: bool) -> Result<(), CliError> {
    let id = user_id(client, username).await?;
    client
        .patch(
            &format!("{MGMT}/users/{id}"),
            &json!({"spec": {"enabled": enabled}}),
        )
        .await?;
    crate::outln!(
        "User {username} {}.",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

/// `drover tokens …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// List your tokens.
    ///
    /// Example: drover tokens ls
    #[command(alias = "list")]
    Ls {
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Create a token; its secret is shown once.
    ///
    /// Example: drover tokens create --description ci --ttl 86400
    Create {
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Lifetime in seconds (default: the server's longest).
        #[arg(long)]
        ttl: Option<u64>,
        /// Only for this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Revoke a token.
    ///
    /// Example: drover tokens rm token-abcde
    #[command(alias = "delete")]
    Rm {
        /// The token's name (token-xxxxx).
        name: String,
    },
}

/// `drover tokens …`.
pub async fn tokens(cmd: TokensCommand) -> Result<(), CliError> {
    let (entry, client) = current()?;
    match cmd {
        TokensCommand::Ls { out } => {
            let me = entry.username.clone().unwrap_or_default();
            list(
                &client,
                &format!("{MGMT}/tokens?labelSelector=drover.io%2Fuser%3D{me}"),
                out,
            )
            .await
        }
        TokensCommand::Create {
            description,
            ttl,
            cluster,
            out,
        } => {
            let mut spec = json!({"userName": entry.username.clone().unwrap_or_default()});
            if let Some(d) = description {
                spec["description"] = json!(d);
            }
            if let Some(t) = ttl {
                spec["ttlSeconds"] = json!(t);
            }
            if let Some(c) = cluster {
                spec["clusterName"] = json!(resolve_cluster(&client, &c).await?.0);
            }
            let t = client
                .post(
                    &format!("{MGMT}/tokens"),
                    &json!({"apiVersion": "management.drover.io/v1", "kind": "Token", "spec": spec}),
                )
                .await?;
            if !output::document(out, &t)? {
                crate::outln!(
                    "Token {} created. Its secret, shown only now:\n",
                    t["metadata"]["name"].as_str().unwrap_or_default()
                );
                crate::outln!("    {}", t["status"]["token"].as_str().unwrap_or_default());
                if let Some(e) = t["status"]["expiresAt"].as_str() {
                    crate::outln!("\nIt expires at {e}.");
                }
            }
            Ok(())
        }
        TokensCommand::Rm { name } => {
            client.delete(&format!("{MGMT}/tokens/{name}")).await?;
            crate::outln!("Token {name} revoked.");
            Ok(())
        }
    }
}
