//! The `drover` command-line client: login, contexts, clusters, projects,
//! namespaces, members, users, tokens and kubectl passthrough.
//!
//! - [`config`]: `~/.drover/config.yaml`, one named entry per server.
//! - [`client`]: HTTP to a server, each failure an actionable [`CliError`].
//! - [`output`]: aligned tables, `-o json|yaml`.
//! - [`login`]: `login` (trusting the server's CA knowingly), `logout`,
//!   `whoami`.
//! - [`context`]: the current cluster and project, the picker, and
//!   `kubectl` with a cached kubeconfig.
//! - [`resources`]: clusters, projects, namespaces, members, users, tokens.
//! - [`project_secrets`]: project secrets, and a project's quota and use.
//! - [`alerts`]: `alerts ls` (firing alert rules), `notifiers ls|test`.
//! - [`backups`]: `backup create|ls` through the server, `verify|restore`
//!   on files.
//!
//! Exit codes: 0 ok, 1 error, 2 usage.

/// `print!` to stdout that ends the command quietly when the pipe is
/// closed, instead of panicking ([`CliError::ClosedPipe`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))?
    };
}

/// `println!` to stdout that ends the command quietly when the pipe is
/// closed ([`CliError::ClosedPipe`]).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub mod alerts;
pub mod backups;
pub mod certs;
pub mod client;
pub mod config;
pub mod context;
pub mod login;
pub mod output;
pub mod project_secrets;
pub mod resources;

use clap::Subcommand;

/// What went wrong, said so that a person knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command was used wrongly (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No login yet.
    #[error("not logged in; run drover login URL")]
    NotLoggedIn,
    /// The server cannot be reached.
    #[error("cannot reach the Drover server at {url}: {reason}")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server's certificate is not trusted.
    #[error("the certificate of {url} is not trusted{}. Check it with the server's administrator, then pass --cacert FILE (the CA, from {url}/cacerts), or --insecure-skip-tls-verify (dangerous: no check of whom you talk to)", fingerprint.as_ref().map(|f| format!(" (its CA's SHA-256 fingerprint is {f})")).unwrap_or_default())]
    Untrusted {
        /// The server.
        url: String,
        /// The CA's SHA-256 fingerprint, when it could be fetched.
        fingerprint: Option<String>,
    },
    /// The server's certificate is no longer signed by the CA saved at
    /// login.
    #[error("the certificate of {url} is no longer signed by the CA saved when you logged in: the server's CA was probably rotated. Run drover login {url} to check and trust the new one, and download your kubeconfigs again")]
    CaChanged {
        /// The server.
        url: String,
    },
    /// The token expired.
    #[error("your token for {url} has expired; run drover login {url}")]
    Expired {
        /// The server.
        url: String,
    },
    /// The token was not accepted.
    #[error("{url} did not accept the credentials ({message}); run drover login {url}")]
    Unauthorized {
        /// The server.
        url: String,
        /// The server's words.
        message: String,
    },
    /// Not allowed.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such thing.
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other refusal.
    #[error("the server refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's words.
        message: String,
    },
    /// The config file or a local file.
    #[error("{0}")]
    Config(String),
    /// A child process (kubectl) ended with this code.
    #[error("exited with {0}")]
    Exit(i32),
    /// Whoever read the output stopped reading (`drover … | head`): the
    /// command ends quietly, with success, as ripgrep and friends do.
    #[error("the output was closed")]
    ClosedPipe,
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Exit(code) => *code,
            CliError::ClosedPipe => 0,
            _ => 1,
        }
    }
}

/// The CLI's commands (subcommands of `drover`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to a Drover server and make it current
    ///
    /// Examples:
    ///   drover login https://drover.example.com --username alice
    ///   drover login https://127.0.0.1:8443 --token token-abcde:SECRET --cacert ca.pem
    #[command(verbatim_doc_comment)]
    Login(login::LoginArgs),
    /// Log out: revoke the token on the server and forget it here.
    ///
    /// Example: drover logout
    Logout(login::LogoutArgs),
    /// Who the server knows you as.
    ///
    /// Example: drover whoami -o json
    Whoami(login::WhoamiArgs),
    /// The current cluster and project
    ///
    /// Examples:
    ///   drover context switch prod-east/web
    ///   drover context current
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Context(context::ContextCommand),
    /// Clusters: ls, get, create (import), rm, import-command
    ///
    /// Examples:
    ///   drover clusters ls
    ///   drover clusters create prod-east
    #[command(verbatim_doc_comment)]
    #[command(subcommand, alias = "cluster")]
    Clusters(resources::ClustersCommand),
    /// Print a kubeconfig that reaches a cluster through Drover.
    ///
    /// Example: drover kubeconfig prod-east > prod-east.yaml
    Kubeconfig(context::KubeconfigArgs),
    /// Run kubectl against the current cluster, as you.
    ///
    /// Example: drover kubectl get pods -A
    Kubectl(context::KubectlArgs),
    /// Projects of a cluster, and their quotas
    ///
    /// Examples:
    ///   drover projects create web --cluster prod-east
    ///   drover projects quota web --limit pods=50 --namespace-default pods=10
    #[command(verbatim_doc_comment)]
    #[command(subcommand, alias = "project")]
    Projects(resources::ProjectsCommand),
    /// Project secrets: copied into every namespace of their project
    ///
    /// Examples:
    ///   drover secrets create generic api --from-literal token=abc --project web
    ///   drover secrets ls --project web
    #[command(verbatim_doc_comment)]
    #[command(subcommand, alias = "secret")]
    Secrets(project_secrets::SecretsCommand),
    /// Alerts firing across your clusters and projects
    ///
    /// Example:
    ///   drover alerts ls
    #[command(verbatim_doc_comment)]
    #[command(subcommand, alias = "alert")]
    Alerts(alerts::AlertsCommand),
    /// Where alerts go (admins): list, and send a test message
    ///
    /// Example:
    ///   drover notifiers test ops-webhook
    #[command(verbatim_doc_comment)]
    #[command(subcommand, alias = "notifier")]
    Notifiers(alerts::NotifiersCommand),
    /// Namespaces of a cluster and their projects.
    ///
    /// Example: drover namespaces create web-prod --project web
    #[command(subcommand, alias = "namespace", alias = "ns")]
    Namespaces(resources::NamespacesCommand),
    /// Who may do what in a cluster or project.
    ///
    /// Example: drover members add --cluster prod-east --project web --user bob --role project-member
    #[command(subcommand, alias = "member")]
    Members(resources::MembersCommand),
    /// Local users (admins).
    ///
    /// Example: drover users create bob --password-stdin < password.txt
    #[command(subcommand, alias = "user")]
    Users(resources::UsersCommand),
    /// Authentication providers: LDAP, Active Directory, OIDC (admins)
    ///
    /// Examples:
    ///   drover providers apply -f ldap.yaml
    ///   drover providers disable ldap
    #[command(verbatim_doc_comment)]
    #[command(subcommand, alias = "provider")]
    Providers(resources::ProvidersCommand),
    /// Your API tokens.
    ///
    /// Example: drover tokens create --description ci --ttl 86400
    #[command(subcommand, alias = "token")]
    Tokens(resources::TokensCommand),
    /// Backups of the server: create, list, verify, restore.
    ///
    /// Example: drover backup create --wait
    #[command(subcommand, alias = "backups")]
    Backup(backups::BackupCommand),
    /// The server's certificates, and CA rotation (admins)
    ///
    /// Examples:
    ///   drover certs ls
    ///   drover certs rotate-ca
    #[command(verbatim_doc_comment)]
    #[command(subcommand, alias = "cert")]
    Certs(certs::CertsCommand),
}

/// Run a CLI command.
pub async fn run(cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Login(a) => login::login(a).await,
        Command::Logout(a) => login::logout(a).await,
        Command::Whoami(a) => login::whoami(a).await,
        Command::Context(c) => context::run(c).await,
        Command::Clusters(c) => resources::clusters(c).await,
        Command::Kubeconfig(a) => context::kubeconfig(a).await,
        Command::Kubectl(a) => context::kubectl(a).await,
        Command::Projects(c) => resources::projects(c).await,
        Command::Secrets(c) => project_secrets::secrets(c).await,
        Command::Alerts(c) => alerts::alerts(c).await,
        Command::Notifiers(c) => alerts::notifiers(c).await,
        Command::Namespaces(c) => resources::namespaces(c).await,
        Command::Members(c) => resources::members(c).await,
        Command::Users(c) => resources::users(c).await,
        Command::Providers(c) => resources::providers(c).await,
        Command::Tokens(c) => resources::tokens(c).await,
        Command::Backup(c) => backups::run(c).await,
        Command::Certs(c) => certs::run(c).await,
    }
}

/// Whether a person is at the terminal (stdin and stderr are TTYs).
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Read one line from stdin (a password given with `--password-stdin`).
pub fn read_stdin_line() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Config(format!("cannot read stdin: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
