//! Removing a cluster, by its owner: a deleting Cluster's registration
//! tokens are revoked (no agent may connect again; the one connected stays,
//! to clean up), its agent removes what Drover created downstream — every
//! labelled object it projects, then `drover-system`, then the agent's
//! ClusterRole — and the `drover.io/cluster-cleanup` finalizer goes, with
//! what lives in the cluster's namespace, in one transaction under the
//! cluster's lease. After [`REMOVAL_TIMEOUT`] without an agent to clean
//! up, the cluster goes from Drover anyway. The agent's link, wherever it
//! is, closes as its cluster goes (see [`crate::http::sessions`]).
//!
//! The agent's ClusterRoleBinding stays: once its role is gone it grants
//! nothing, and nobody is left with the right to delete it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lease::Held;
use super::projection::{self, Desired, Observed};
use super::Ctx;
use crate::kinds::registration::{self, AGENT_NAME, AGENT_NAMESPACE};
use crate::link::kube::{Client, DownstreamError};

/// How long a deleting Cluster waits for its agent to clean up.
pub const REMOVAL_TIMEOUT: Duration = Duration::from_secs(60);
const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

/// Remove what Drover created in the cluster.
async fn clean_downstream(client: &Client) -> Result<(), DownstreamError> {
    let mut observed = Observed::list(client).await?;
    projection::reconcile(client, &Desired::default(), &mut observed).await?;
    projection::delete(client, &format!("/api/v1/namespaces/{AGENT_NAMESPACE}")).await?;
    projection::delete(client, &format!("{RBAC}/clusterroles/{AGENT_NAME}")).await?;
    Ok(())
}

/// Finish removing the client's cluster under the lease `held` (the
/// client's writes are fenced by it), unless `stop`.
pub async fn run(ctx: &Ctx, client: &Client, held: &Held, stop: &CancellationToken) {
    let cluster = client.cluster();
    if let Err(e) = registration::revoke_all(&ctx.store, cluster).await {
        // Its removal deletes them in any case.
        tracing::warn!(%cluster, error = %e, "cannot revoke the cluster's registration tokens yet");
    }
    let deadline = tokio::time::Instant::now() + REMOVAL_TIMEOUT;
    loop {
        if stop.is_cancelled() || !ctx.registry.may_act() {
            return;
        }
        if client.connected() {
            match clean_downstream(client).await {
                Ok(()) => {
                    tracing::info!(%cluster, "removed Drover's objects from the cluster");
                    break;
                }
                Err(e) => {
                    tracing::warn!(%cluster, error = %e, "downstream cleanup failed; retrying")
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(%cluster, "no agent cleaned up the cluster in time; removing it from Drover anyway");
            break;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    crate::kinds::management::finish_cluster_removal(
        &ctx.store,
        &ctx.authz,
        cluster,
        Some(held.fence()),
    )
    .await;
}
