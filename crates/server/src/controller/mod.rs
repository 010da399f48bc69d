//! The server's controllers, and the small runtime they run on.
//!
//! ```text
//!   store ──▶ Ownership (leases, rendezvous hashing over the serving replicas)
//!               ├─ "leader"        ──▶ leader: token expiry, compaction, orphan sweep,
//!               │                       backups, provider users' groups
//!               └─ "clusters/{id}" ──▶ cluster: status, projection, membership, removal
//!                                  └─▶ alerts: the cluster's and its projects' alert rules
//!                                        └─ both reach the cluster through the Dialer
//! ```
//!
//! - [`lease`]: which replica runs what. Each cluster's controllers run on
//!   exactly one replica at a time, chosen by rendezvous hashing and held
//!   by a lease in the store; global controllers run on the leader. Writes
//!   made under a lease are fenced by it.
//! - [`cluster`]: one cluster's controller: its status (Connected and
//!   Ready from the store's record of its link, never from one replica's
//!   memory), and, while connected, its nodes, its namespaces' project
//!   membership ([`membership`]) and the RBAC, quotas, project secrets and
//!   isolation policies projected into it ([`projection`]), repaired as
//!   soon as they drift; the Pod Security levels of its template, and
//!   what it reports back about its projects ([`projects`]).
//! - [`alerts`]: the cluster's alert rules, evaluated beside its
//!   controller under the same lease, and their messages.
//! - [`removal`]: a deleting cluster's downstream cleanup.
//! - [`leader`]: token expiry, store compaction, the sweep of orphans.
//! - [`groups`]: provider users' groups and standing, refreshed from their
//!   directory.
//!
//! The runtime, as kube-runtime's: a reconcile returns an [`Action`]; a
//! failure goes to an error policy (jittered exponential backoff); one
//! cancellation tree stops everything.

pub mod alerts;
pub mod backups;
pub mod cluster;
pub mod groups;
pub mod leader;
pub mod lease;
pub mod membership;
pub mod projection;
pub mod projects;
pub mod removal;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use drover_auth::policy::RbacAuthorizer;
use drover_core::api::Condition;
use drover_core::meta;
use drover_store::Store;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::link::Dialer;
use crate::replicas::Registry;

/// What the controllers work with.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The datastore.
    pub store: Store,
    /// The policy (bindings, templates, projects).
    pub authz: Arc<RbacAuthorizer>,
    /// The way to every cluster.
    pub dialer: Arc<Dialer>,
    /// This replica's membership (whether it may act on its leases).
    pub registry: Arc<Registry>,
    /// Backups and the log archive.
    pub backups: Arc<backups::BackupConfig>,
    /// The authentication providers.
    pub providers: Arc<drover_auth::providers::Providers>,
    /// How often provider users' groups are refreshed.
    pub group_refresh: Duration,
    /// Changes of project secrets and Pod Security templates.
    pub project_inputs: Arc<projects::InputChanges>,
    /// Alerting: the fleet as it reads it, and the sender of messages.
    pub alerts: Arc<alerts::Alerts>,
}

/// What runs under a cluster's lease: its controller and its alert rules'
/// evaluator. The pair ends when the controller does (the cluster
/// removed), so that the lease is given up.
pub fn cluster_controllers() -> lease::Start {
    Arc::new(|ctx: Ctx, held: lease::Held, stop: CancellationToken| {
        let alerts_stop = stop.child_token();
        let alerts = alerts::start(ctx.clone(), held.clone(), alerts_stop.clone());
        let cluster = cluster::start(ctx, held, stop);
        tokio::spawn(async move {
            let _ = cluster.await;
            alerts_stop.cancel();
            let _ = alerts.await;
        })
    })
}

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run again after this long, or sooner on a change.
    Requeue(Duration),
    /// Run again on the next change only.
    AwaitChange,
}

/// Jittered exponential backoff: 0.5 s doubling up to 30 s, each wait
/// between half and all of its step, so that many failing together do not
/// retry in step.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let step = Duration::from_millis(500)
            .saturating_mul(1u32 << self.attempts.min(6))
            .min(Duration::from_secs(30));
        self.attempts = self.attempts.saturating_add(1);
        step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// Start again from the shortest wait (after a success).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// Run `reconcile` until `stop`: again when its [`Action`] says, or at once
/// when `changed` resolves; after a failure, after the error policy's
/// backoff. `name` names it in the logs.
pub async fn run<R, Fut, E, C, CFut>(
    name: &str,
    stop: CancellationToken,
    mut changed: C,
    mut reconcile: R,
) where
    R: FnMut() -> Fut,
    Fut: Future<Output = Result<Action, E>>,
    E: std::fmt::Display,
    C: FnMut() -> CFut,
    CFut: Future<Output = ()>,
{
    let mut backoff = Backoff::default();
    loop {
        let wait = match reconcile().await {
            Ok(Action::Requeue(d)) => {
                backoff.reset();
                Some(d)
            }
            Ok(Action::AwaitChange) => {
                backoff.reset();
                None
            }
            Err(e) => {
                let d = backoff.next_wait();
                tracing::warn!(controller = name, error = %e, retry_in_ms = d.as_millis() as u64, "reconcile failed");
                Some(d)
            }
        };
        let sleep = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep => {}
            () = changed() => {}
        }
    }
}

/// Set a condition, keeping its transition time while its status holds;
/// whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    state: &str,
    reason: &str,
    message: &str,
) -> bool {
    let wanted = |c: &Condition| {
        c.status == state
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if wanted(c) => false,
        Some(c) => {
            if c.status != state {
                c.last_transition_time = Some(meta::now_rfc3339());
            }
            c.status = state.to_owned();
            c.reason = Some(reason.to_owned());
            c.message = Some(message.to_owned());
            true
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_owned(),
                status: state.to_owned(),
                reason: Some(reason.to_owned()),
                message: Some(message.to_owned()),
                last_transition_time: Some(meta::now_rfc3339()),
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, "Ready", "True", "R", "m"));
        let first = conditions[0].last_transition_time.clone();
        assert!(!set_condition(&mut conditions, "Ready", "True", "R", "m"));
        assert!(set_condition(
            &mut conditions,
            "Ready",
            "True",
            "R",
            "other"
        ));
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(250) && waits[0] <= Duration::from_millis(500));
        assert!(waits[9] <= Duration::from_secs(30) && waits[9] >= Duration::from_secs(15));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn runs_on_requeue_and_on_change_until_stopped() {
        let stop = CancellationToken::new();
        let notify = Arc::new(tokio::sync::Notify::new());
        let changes = notify.clone();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = runs.clone();
        let task = tokio::spawn(run(
            "test",
            stop.clone(),
            move || {
                let changes = changes.clone();
                async move { changes.notified().await }
            },
            move || {
                let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 1 {
                        Err("failed once")
                    } else {
                        Ok(Action::Requeue(Duration::from_secs(60)))
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        notify.notify_one(); // a change: again at once (and it fails)
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(1)).await; // the backoff
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(61)).await; // the requeue
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 4);
        stop.cancel();
        task.await.unwrap();
    }
}
