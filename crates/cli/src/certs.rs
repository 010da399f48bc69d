//! `drover certs …` (admins): the server's certificates with their expiry,
//! and the rotation of Drover's own CA.

use serde_json::Value;

use crate::output::{self, Output};
use crate::CliError;

/// `drover certs …`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// The certificates the server uses, with their expiry.
    ///
    /// Example: drover certs ls
    #[command(alias = "list")]
    Ls {
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Rotate Drover's own CA: trust a new CA beside the old, give every connected agent its checksum, serve a certificate from it, then retire the old. No cluster is imported again
    ///
    /// Afterwards, run drover login again (it shows the new CA) and
    /// download kubeconfigs again: the old CA is no longer trusted.
    ///
    /// Examples:
    ///   drover certs rotate-ca
    ///   drover certs rotate-ca --force
    ///   drover certs rotate-ca --abort
    #[command(verbatim_doc_comment)]
    RotateCa {
        /// Rotate even if a connected agent does not take the new checksum
        /// (its cluster then needs its import manifest applied again).
        #[arg(long, conflicts_with = "abort")]
        force: bool,
        /// Undo a rotation left unfinished (a server that stopped in the
        /// middle): the current CA stays.
        #[arg(long)]
        abort: bool,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    c.as_str().map_or_else(
                        || c["cluster"].as_str().unwrap_or_default().to_owned(),
                        str::to_owned,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Run `drover certs …`.
pub async fn run(cmd: CertsCommand) -> Result<(), CliError> {
    let (_, client) = crate::resources::current_client()?;
    match cmd {
        CertsCommand::Ls { out } => {
            let v = client.get("/v1-admin/certificates").await?;
            if output::document(out, &v)? {
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let left = c["expiresInSeconds"].as_i64().unwrap_or_default();
                    vec![
                        c["name"].as_str().unwrap_or_default().to_owned(),
                        c["subject"].as_str().unwrap_or_default().to_owned(),
                        c["issuer"].as_str().unwrap_or_default().to_owned(),
                        c["notAfter"].as_str().unwrap_or_default().to_owned(),
                        if left < 0 {
                            "expired".to_owned()
                        } else {
                            format!("{}d", left / 86_400)
                        },
                    ]
                })
                .collect();
            crate::out!(
                "{}",
                output::table(
                    &["CERTIFICATE", "SUBJECT", "ISSUER", "NOT AFTER", "LEFT"],
                    &rows
                )
            );
            let checksum = v["caChecksum"].as_str().unwrap_or_default();
            if !checksum.is_empty() {
                crate::outln!("CA checksum: {checksum}");
            }
            if v["caRotation"] == "in progress" {
                crate::outln!("A CA rotation is under way.");
            }
            Ok(())
        }
        CertsCommand::RotateCa {
            abort: true, out, ..
        } => {
            let v = client
                .post(
                    "/v1-admin/certificates/rotate-ca?abort=true",
                    &serde_json::json!({}),
                )
                .await?;
            if !output::document(out, &v)? {
                crate::outln!("The unfinished CA rotation was undone; the current CA stays.");
            }
            Ok(())
        }
        CertsCommand::RotateCa { force, out, .. } => {
            let path = if force {
                "/v1-admin/certificates/rotate-ca?force=true"
            } else {
                "/v1-admin/certificates/rotate-ca"
            };
            eprintln!("Rotating the CA; this takes a few seconds…");
            let v = client.post(path, &serde_json::json!({})).await?;
            if output::document(out, &v)? {
                return Ok(());
            }
            crate::outln!("The CA was rotated.");
            crate::outln!(
                "New CA checksum: {}",
                v["newChecksum"].as_str().unwrap_or_default()
            );
            let updated = names(&v["clusters"]["updated"]);
            crate::outln!("Agents that now trust the new CA: {}", updated.len());
            let failed = names(&v["clusters"]["failed"]);
            let away = names(&v["clusters"]["notConnected"]);
            if !failed.is_empty() || !away.is_empty() {
                let mut all = failed;
                all.extend(away);
                crate::outln!(
                    "These clusters' agents were not told, and need their import manifest applied again (or DROVER_CA_CHECKSUM set to the new checksum): {}",
                    all.join(", ")
                );
            }
            crate::outln!(
                "Run drover login again to trust the new CA here, and download kubeconfigs again."
            );
            Ok(())
        }
    }
}
