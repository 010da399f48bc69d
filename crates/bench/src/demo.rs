//! `drover demo`: a server and a few simulated clusters, each imported
//! through the real path with its own agent over a real TLS WebSocket, so
//! that a newcomer sees Drover working with one command. It prints the
//! web UI's address and the admin password, and runs until stopped.

use std::path::PathBuf;
use std::time::Duration;

use crate::env::{self, Server, ServerOptions};
use crate::BenchError;

/// `drover demo` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Simulated clusters to import.
    #[arg(long, default_value_t = 3)]
    pub clusters: usize,
    /// Nodes in each.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Keep the server's data here (a new or empty directory); default: a
    /// temporary directory, removed at exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the server listens.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// Run the demo until `stop` resolves (or `--seconds` pass).
pub async fn run(
    args: DemoArgs,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BenchError> {
    if let Some(dir) = &args.data_dir {
        let used = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if used {
            return Err(BenchError::Setup(format!(
                "{} is not empty: give drover demo a new directory, or run `drover server --data-dir {}` to use that one",
                dir.display(),
                dir.display()
            )));
        }
    }
    let password = format!("demo-{}", drover_core::names::random_suffix(16));
    println!(
        "Starting Drover on {} with {} simulated clusters of {} nodes…",
        args.listen, args.clusters, args.nodes
    );
    let server = Server::start_with(ServerOptions {
        data_dir: args.data_dir.clone(),
        listen: Some(args.listen.clone()),
        password: Some(password.clone()),
        ..Default::default()
    })
    .await?;
    let dir = env::work_dir("drover-demo-")?;
    let sims_http = env::client(None, true)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sims = Vec::new();
    let mut names = Vec::new();
    for i in 1..=args.clusters {
        let imp = env::import(
            &server,
            &sims_http,
            dir.path(),
            &format!("demo-{i}"),
            args.nodes,
            30,
        )
        .await?;
        let agent = env::agent_args(&server, &imp);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = drover_agent::run(agent, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        });
        names.push(imp.cluster);
        sims.push(imp.sim);
    }
    let clusters = env::wait_active(&server, &names, Duration::from_secs(60)).await?;
    let ca = dir.path().join("drover-ca.pem");
    let _ = std::fs::write(&ca, &server.ca_pem);
    println!();
    println!("Drover is running.");
    println!("  Web UI:    {}/dashboard/", server.url);
    println!("  User:      admin");
    println!("  Password:  {password}");
    println!(
        "  CA:        {} (the browser warns once: the certificate is Drover's own)",
        ca.display()
    );
    println!();
    for c in &clusters {
        println!("  cluster {:<12} {}", c.0, c.1);
    }
    println!();
    println!("From a shell:");
    println!(
        "  drover login {} --username admin --cacert {}",
        server.url,
        ca.display()
    );
    println!("  drover clusters ls");
    println!("  drover context switch demo-1");
    println!("  drover kubectl get nodes");
    println!();
    match args.seconds {
        Some(s) => {
            println!("Stopping after {s} s.");
            tokio::time::sleep(Duration::from_secs(s)).await;
        }
        None => {
            println!("Press Ctrl-C to stop.");
            stop.await;
        }
    }
    let _ = stop_tx.send(true);
    drop(sims);
    drop(server);
    Ok(())
}
