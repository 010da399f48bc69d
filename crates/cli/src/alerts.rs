//! `drover alerts ls`: the alert rules firing across the clusters and
//! projects the user may see (`--all`: every rule, with its state); and
//! `drover notifiers ls|test`: where alerts go, and a test message sent
//! through one.

use serde_json::Value;

use crate::client::MGMT;
use crate::output::{self, Output};
use crate::resources::current_client;
use crate::CliError;

/// `drover alerts …`.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// List firing alerts: rule, where, condition, severity, since when and what is affected
    ///
    /// Examples:
    ///   drover alerts ls
    ///   drover alerts ls --all -o yaml
    #[command(verbatim_doc_comment)]
    #[command(alias = "list")]
    Ls {
        /// Every rule, firing or not.
        #[arg(long)]
        all: bool,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
}

/// `drover notifiers …`.
#[derive(Debug, clap::Subcommand)]
pub enum NotifiersCommand {
    /// List notifiers (admins)
    ///
    /// Example:
    ///   drover notifiers ls
    #[command(verbatim_doc_comment)]
    #[command(alias = "list")]
    Ls {
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Send a test message through a notifier and say how it went (exit 1 when it failed)
    ///
    /// Example:
    ///   drover notifiers test ops-webhook
    #[command(verbatim_doc_comment)]
    Test {
        /// The notifier.
        name: String,
    },
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// `drover alerts …`.
pub async fn alerts(cmd: AlertsCommand) -> Result<(), CliError> {
    let (_, client) = current_client()?;
    let AlertsCommand::Ls { all, out } = cmd;
    let list = client.get(&format!("{MGMT}/alertrules")).await?;
    let items: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| all || r.pointer("/status/state").and_then(Value::as_str) == Some("firing"))
        .cloned()
        .collect();
    if output::document(
        out,
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
    )? {
        return Ok(());
    }
    if items.is_empty() {
        crate::outln!(
            "{}",
            if all {
                "No alert rules."
            } else {
                "No alerts firing."
            }
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            let condition = r
                .pointer("/spec/condition")
                .and_then(Value::as_object)
                .and_then(|c| c.keys().next().cloned())
                .unwrap_or_default();
            let affected: Vec<String> = r
                .pointer("/status/affected")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            let shown = match affected.len() {
                n if n > 3 => format!("{} +{}", affected[..3].join(","), n - 3),
                _ => affected.join(","),
            };
            let since = text(r, "/status/since");
            vec![
                text(r, "/metadata/namespace"),
                text(r, "/metadata/name"),
                condition,
                r.pointer("/spec/severity")
                    .and_then(Value::as_str)
                    .unwrap_or("warning")
                    .to_owned(),
                r.pointer("/status/state")
                    .and_then(Value::as_str)
                    .unwrap_or("inactive")
                    .to_owned(),
                if since.is_empty() {
                    "-".into()
                } else {
                    drover_core::meta::age(&since)
                },
                shown,
            ]
        })
        .collect();
    crate::out!(
        "{}",
        output::table(
            &[
                "NAMESPACE",
                "NAME",
                "CONDITION",
                "SEVERITY",
                "STATE",
                "SINCE",
                "AFFECTED"
            ],
            &rows
        )
    );
    Ok(())
}

/// `drover notifiers …`.
pub async fn notifiers(cmd: NotifiersCommand) -> Result<(), CliError> {
    let (_, client) = current_client()?;
    match cmd {
        NotifiersCommand::Ls { out } => {
            crate::resources::list(&client, &format!("{MGMT}/notifiers"), out).await
        }
        NotifiersCommand::Test { name } => {
            let answer = client
                .post(
                    &format!("{MGMT}/notifiers/{name}/test"),
                    &serde_json::json!({}),
                )
                .await?;
            if answer["result"] == "Delivered" {
                crate::outln!("Notifier {name}: test message delivered.");
                Ok(())
            } else {
                crate::outln!(
                    "Notifier {name}: test message failed: {}",
                    text(&answer, "/error")
                );
                Err(CliError::Exit(1))
            }
        }
    }
}
