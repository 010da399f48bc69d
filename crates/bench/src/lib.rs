//! `drover bench`: measure Drover on this machine and print the figures (a
//! table for people, `--json FILE` for tools). Nothing here asserts a
//! target: the figures are reported, and docs/benchmarks.md reads them.
//!
//! - [`scale`]: many simulated clusters, each imported through the real
//!   path with a real agent over a TLS WebSocket, against a server in its
//!   own process: time to Ready, server memory and CPU.
//! - [`proxy`]: latency and throughput through Drover's proxy and directly
//!   to the same simulated cluster; memory while a large log streams.
//! - [`api`]: creating, listing and watching many management objects.
//! - [`ha`]: three replicas on PostgreSQL: the peer hop's added latency
//!   and failover times after kill -9.
//! - [`backup`]: a backup and a restore of 100,000 objects: times, the
//!   server's memory, and API write latency during a backup.
//! - [`ui`]: the web UI's clusters page with many clusters.
//! - [`login`]: directory logins against a real slapd, of users in many
//!   groups.
//! - [`env`]: the server process, sims, agents, `/proc` readings.
//! - [`demo`]: `drover demo`, the same parts kept running for a first look.
//!
//! Every loop is bounded in count and time, and everything listens on
//! 127.0.0.1 only.

pub mod api;
pub mod backup;
pub mod demo;
pub mod env;
pub mod ha;
pub mod login;
pub mod proxy;
pub mod scale;
pub mod ui;

use std::path::PathBuf;

use serde_json::Value;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up a part failed.
    #[error("bench setup: {0}")]
    Setup(String),
    /// A step of the benchmark failed.
    #[error("bench: {0}")]
    Run(String),
}

/// `drover bench` flags.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Write the figures as JSON here too.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// The server's datastore (default: embedded SQLite);
    /// postgres://… measures PostgreSQL.
    #[arg(long, global = true)]
    pub datastore: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// Import many simulated clusters and measure the server.
    ///
    /// Example: drover bench scale --clusters 1000 --nodes 10 --json scale.json
    Scale(scale::ScaleArgs),
    /// Latency and throughput through the proxy versus directly.
    ///
    /// Example: drover bench proxy --seconds 5 --json proxy.json
    Proxy(proxy::ProxyArgs),
    /// Create, list and watch many management objects.
    ///
    /// Example: drover bench api --objects 10000 --json api.json
    Api(api::ApiArgs),
    /// The web UI's clusters page with many clusters.
    ///
    /// Example: drover bench ui --clusters 10000 --json ui.json
    Ui(ui::UiArgs),
    /// Three replicas: the peer hop's added latency, failover times.
    ///
    /// Example: drover bench ha --datastore postgres://… --json ha.json
    Ha(ha::HaArgs),
    /// Back up and restore many objects; write latency during a backup.
    ///
    /// Example: drover bench backup --objects 100000 --json backup.json
    Backup(backup::BackupArgs),
    /// Directory logins (slapd, 1,000 users, 1,100 groups) of a user in
    /// 1,000 groups and one in nested groups.
    ///
    /// Example: drover bench login --logins 50 --json login.json
    Login(login::LoginArgs),
}

/// Run a scenario.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let (figures, common) = match args.scenario {
        Scenario::Scale(a) => {
            let common = a.common.clone();
            (scale::run(a).await?, common)
        }
        Scenario::Proxy(a) => {
            let common = a.common.clone();
            (proxy::run(a).await?, common)
        }
        Scenario::Api(a) => {
            let common = a.common.clone();
            (api::run(a).await?, common)
        }
        Scenario::Ui(a) => {
            let common = a.common.clone();
            (ui::run(a).await?, common)
        }
        Scenario::Ha(a) => {
            let common = a.common.clone();
            (ha::run(a).await?, common)
        }
        Scenario::Backup(a) => {
            let common = a.common.clone();
            (backup::run(a).await?, common)
        }
        Scenario::Login(a) => {
            let common = a.common.clone();
            (login::run(a).await?, common)
        }
    };
    if let Some(path) = common.json {
        let text = serde_json::to_string_pretty(&figures).expect("JSON");
        std::fs::write(&path, text + "\n")
            .map_err(|e| BenchError::Run(format!("{}: {e}", path.display())))?;
        println!("\nfigures written to {}", path.display());
    }
    Ok(())
}

/// `123.4 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// Round to three decimals, for JSON.
pub fn round3(x: f64) -> Value {
    Value::from((x * 1000.0).round() / 1000.0)
}
