//! Firing alerts, as the clusters list, a cluster and a project show them:
//! the rules the user may read whose status says `firing`, with their
//! condition, severity, since when and what is affected.

use maud::{html, Markup};
use serde_json::Value;

use crate::api::MGMT;
use crate::view::{self, s};
use crate::Ui;

/// The firing rules the user may read, in the namespaces `keep` accepts
/// (all of them when the list cannot be read: alerts never break a page).
pub(crate) async fn firing(ui: &Ui, token: &str, keep: impl Fn(&str) -> bool) -> Vec<Value> {
    ui.api
        .items(&format!("{MGMT}/alertrules"), token)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| s(r, "/status/state") == "firing" && keep(s(r, "/metadata/namespace")))
        .collect()
}

/// A section listing firing alerts (nothing when none fire).
pub(crate) fn section(rules: &[Value]) -> Markup {
    if rules.is_empty() {
        return html! {};
    }
    html! {
        section.alerts aria-labelledby="alerts-h" {
            h2 #alerts-h { (rules.len()) " alert" @if rules.len() != 1 { "s" } " firing" }
            div.scroll { table #alerts {
                thead { tr {
                    th scope="col" { "Rule" } th scope="col" { "Where" } th scope="col" { "Severity" }
                    th scope="col" { "Since" } th scope="col" { "What" }
                } }
                tbody { @for r in rules {
                    tr data-severity=(s(r, "/spec/severity")) {
                        td { (s(r, "/metadata/name")) }
                        td { code { (s(r, "/metadata/namespace")) } }
                        td { (match s(r, "/spec/severity") { "" => "warning", v => v }) }
                        td { (view::since(s(r, "/status/since"))) }
                        td { (s(r, "/status/message")) }
                    }
                } }
            } }
        }
    }
}
