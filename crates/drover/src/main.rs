//! `drover`: one binary for the management server, the agent, the simulator
//! and the command-line client.
//!
//! This file only parses flags, sets up logging and signals, and runs the
//! chosen command; each command's work lives in its crate.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "drover",
    version,
    about = "Kubernetes multi-cluster management",
    propagate_version = true
)]
struct Cli {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, global = true, env = "DROVER_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the management server.
    ///
    /// Example: drover server --data-dir ./drover-data --listen 127.0.0.1:8443
    Server(Box<drover_server::ServerArgs>),
    /// Run the cluster agent: keep the tunnel to the server up and forward
    /// its requests to this cluster's API server.
    ///
    /// Example: drover agent --server https://drover.example:8443 --token TOKEN --ca-checksum SHA256 --kubeconfig cluster.kubeconfig
    Agent(drover_agent::AgentArgs),
    /// Measure scale, proxy overhead and memory on this machine.
    ///
    /// Example: drover bench scale --clusters 1000 --json scale.json
    Bench(drover_bench::BenchArgs),
    /// Start a server with simulated clusters, each imported through a real
    /// agent, and print the web UI's address and admin password.
    ///
    /// Example: drover demo --clusters 3 --nodes 3
    Demo(drover_bench::demo::DemoArgs),
    /// Print shell completions.
    ///
    /// Example: drover completion bash > /etc/bash_completion.d/drover
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Cli(drover_cli::Command),
    /// Run a simulated Kubernetes cluster (for tests, demos and benchmarks).
    ///
    /// Example: drover sim --nodes 3 --kubeconfig-out sim.kubeconfig
    Sim(drover_sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The client commands speak to people: only warnings and errors log.
    let quiet = matches!(
        cli.command,
        Command::Cli(_) | Command::Completion { .. } | Command::Bench(_) | Command::Demo(_)
    );
    init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    // One TLS implementation for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drover: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        // The long-running commands stop on a signal, cleaning up (a
        // benchmark stops the processes it started); the client commands
        // keep the default action.
        let signals = match cli.command {
            Command::Server(_)
            | Command::Agent(_)
            | Command::Sim(_)
            | Command::Demo(_)
            | Command::Bench(_) => Some(Signals::register()?),
            _ => None,
        };
        let shutdown = async move {
            match signals {
                Some(s) => s.shutdown().await,
                None => std::future::pending().await,
            }
        };
        match cli.command {
            Command::Server(args) => drover_server::run(*args, shutdown)
                .await
                .map_err(Into::into),
            Command::Sim(args) => run_sim(args, shutdown).await,
            Command::Agent(args) => drover_agent::run(args, shutdown)
                .await
                .map_err(Into::into),
            Command::Completion { shell } => {
                use clap::CommandFactory;
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "drover", &mut script);
                drover_cli::output::write_stdout(format_args!(
                    "{}",
                    String::from_utf8_lossy(&script)
                ))
                .map_err(Into::into)
            }
            Command::Cli(cmd) => drover_cli::run(cmd).await.map_err(Into::into),
            Command::Bench(args) => tokio::select! {
                done = drover_bench::run(args) => done.map_err(Into::into),
                () = shutdown => Err(anyhow::anyhow!("interrupted; stopped what the benchmark started")),
            },
            Command::Demo(args) => drover_bench::demo::run(args, shutdown)
                .await
                .map_err(Into::into),
        }
    });
    // Tasks still running (a failed benchmark's simulated clusters, say)
    // must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<drover_cli::CliError>() {
                // kubectl spoke for itself.
                Some(drover_cli::CliError::Exit(code)) => return ExitCode::from(*code as u8),
                // The reader stopped reading (`| head`): nothing to say.
                Some(drover_cli::CliError::ClosedPipe) => return ExitCode::SUCCESS,
                Some(cli) => cli.exit_code() as u8,
                None => 1,
            };
            // Our errors already carry their cause in the message: one line.
            eprintln!("drover: error: {e}");
            ExitCode::from(code)
        }
    }
}

/// Run `drover sim` until `shutdown` resolves.
async fn run_sim(
    args: drover_sim::SimArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let sim = drover_sim::Sim::start(&args).await?;
    // Whoever started the sim may read only the first line (`| head -1`):
    // a closed stdout must not stop it.
    let mut banner = format!("drover sim {} serving at {}\n", sim.name, sim.url);
    if let Some(path) = &args.kubeconfig_out {
        banner.push_str(&format!("admin kubeconfig: {}\n", path.display()));
    }
    let _ = drover_cli::output::write_stdout(format_args!("{banner}"));
    tracing::info!(name = %sim.name, url = %sim.url, nodes = args.nodes, version = %args.k8s_version, "simulated cluster running");
    shutdown.await;
    sim.stop().await;
    Ok(())
}

/// Logs go to stderr. The level comes from `DROVER_LOG` (or `RUST_LOG`),
/// default `info` (`warn` for the client commands).
fn init_logging(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("DROVER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    let filter = EnvFilter::try_new(format!("{filter},sqlx=warn,hyper=warn,rustls=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// SIGTERM and SIGINT, registered when the process starts so that a signal
/// arriving during start-up is not lost to the default action.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// Resolves on the first signal; a second one ends the process at once,
    /// without waiting for the drain.
    async fn shutdown(mut self) {
        self.next().await;
        tracing::info!("shutting down; a second signal stops at once");
        tokio::spawn(async move {
            self.next().await;
            eprintln!("drover: second signal: stopping now");
            std::process::exit(130);
        });
    }
}
