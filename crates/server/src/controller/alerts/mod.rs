//! Fleet alerts: each cluster's AlertRules — those in its namespace and in
//! its projects' — evaluated on the replica holding the cluster's lease,
//! beside its controller and fenced by the same lease, so exactly one
//! replica notifies for a rule.
//!
//! - What a rule reads: the shared view of the datastore ([`view`]: the
//!   cluster's status, its projects' quota use, notifiers, backups) and,
//!   only while a rule needs them, watches of the cluster's pods,
//!   workloads, events and namespaces ([`facts`]; the nodes are the
//!   cluster controller's, shared while it is connected; a project's namespaces
//!   are those Drover's records put in it); evaluation is in memory
//!   ([`conditions`]), once a second while the cluster has rules. A rule
//!   is held as it is — neither fired nor resolved — until everything it
//!   reads has been listed, and while a watch it reads is failing.
//! - Timing, as Alertmanager's: a rule that starts firing waits its group
//!   wait before the first message; a change of what it names, or its
//!   resolution, is sent no sooner than the group interval after the last
//!   message; an unchanged firing alert is sent again every repeat
//!   interval. A resolution is sent only for an alert whose firing was. A
//!   message a notifier did not take is sent to it again each group
//!   interval, up to the repeat interval.
//! - State lives in the rule's status (state, since, affected objects, the
//!   last message and each notifier's result), written under the lease:
//!   the replica that takes a cluster over carries on from it: no message
//!   is lost, none whose result was recorded is sent twice. A message goes
//!   out only once recorded (`Sending`); one cut off by the replica's
//!   death is marked failed, and sent again as a failed one is.
//! - Delivery ([`crate::notify`]) runs apart from evaluation, each notifier
//!   on its own with its retries, its result recorded as it comes: a slow
//!   or dead notifier delays no other notifier and no other rule (only
//!   this rule's next message waits for the last one's attempts to end).
//! - An object the firing rule names keeps its `forSeconds` when a clock
//!   starts again (a re-list, a takeover); an edited rule carries on.

pub mod conditions;
pub mod facts;
pub mod view;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_core::api::{AlertRule, AlertRuleStatus, Delivery, LastNotification};
use drover_core::meta;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::conditions::{Finding, Inputs};
use self::facts::{Facts, Needs, Watches};
use super::lease::{Held, Updated};
use super::{Action, Backoff, Ctx};
use crate::kinds::alerts::{
    condition_name, DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL,
};
use crate::kinds::namespaces;
use crate::link::kube::Client;
use crate::notify;

/// How often a cluster with rules evaluates them.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// What alerting shares across the process.
pub struct Alerts {
    /// The datastore as alerting reads it.
    pub fleet: view::Fleet,
    /// Sends messages.
    pub sender: Arc<notify::Sender>,
    /// Drover's certificates: name and expiry (Unix seconds).
    pub certificates: Arc<dyn Fn() -> Vec<(String, i64)> + Send + Sync>,
    /// The UI's address, for links in messages (`https://host/dashboard`).
    pub ui_url: String,
    /// Each cluster's nodes, as its controller's watch has them while it is
    /// connected.
    nodes: std::sync::Mutex<HashMap<String, Arc<NodeMap>>>,
}

/// Nodes by name, as rules see them.
pub type NodeMap = std::collections::BTreeMap<String, facts::Node>;

/// While held, the cluster's nodes are known to its rules.
pub struct SharedNodes {
    alerts: Arc<Alerts>,
    cluster: String,
}

impl Drop for SharedNodes {
    fn drop(&mut self) {
        self.alerts.lock_nodes().remove(&self.cluster);
    }
}

impl Alerts {
    /// Alerting over `fleet`, sending with `sender`.
    pub fn new(
        fleet: view::Fleet,
        sender: Arc<notify::Sender>,
        certificates: Arc<dyn Fn() -> Vec<(String, i64)> + Send + Sync>,
        ui_url: String,
    ) -> Self {
        Self {
            fleet,
            sender,
            certificates,
            ui_url,
            nodes: Default::default(),
        }
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<NodeMap>>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cluster's controller shares its nodes with the cluster's rules
    /// ([`Alerts::update_nodes`]) until the guard is dropped.
    pub fn share_nodes(self: &Arc<Self>, cluster: &str) -> SharedNodes {
        SharedNodes {
            alerts: self.clone(),
            cluster: cluster.to_owned(),
        }
    }

    /// The cluster's nodes are not known any more (it is not connected).
    pub fn forget_nodes(&self, cluster: &str) {
        self.lock_nodes().remove(cluster);
    }

    /// The cluster's nodes, as its controller's watch has them now.
    pub fn update_nodes(
        &self,
        cluster: &str,
        nodes: &std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        let map: NodeMap = nodes
            .iter()
            .map(|(name, n)| (name.clone(), facts::node(n)))
            .collect();
        self.lock_nodes().insert(cluster.to_owned(), Arc::new(map));
    }

    /// The cluster's nodes, if its controller is connected to it here.
    pub fn nodes(&self, cluster: &str) -> Option<Arc<NodeMap>> {
        self.lock_nodes().get(cluster).cloned()
    }
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("ui_url", &self.ui_url)
            .finish_non_exhaustive()
    }
}

/// Why an evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The datastore failed.
    #[error("the datastore failed: {0}")]
    Store(#[from] drover_store::StoreError),
    /// The lease changed hands: nothing more may be written.
    #[error("the cluster's lease changed hands")]
    LostLease,
}

/// One rule as this evaluator tracks it.
#[derive(Debug)]
struct Tracked {
    key: String,
    /// Its status as this evaluator knows it.
    status: AlertRuleStatus,
    /// Its status as last recorded in the store.
    stored: AlertRuleStatus,
    /// Notifiers whose delivery of the last message is under way.
    sending: BTreeSet<String>,
    /// When failed deliveries were last sent again.
    retried: Option<std::time::Instant>,
}

/// One notifier's finished delivery of a message: the rule's uid, the
/// message's time, the result.
type Done = (String, String, Delivery);

/// How often Drover's records of the cluster's namespaces are read again
/// while a project rule needs them.
const RECORDS_EVERY: Duration = Duration::from_secs(5);

/// Start evaluating the alert rules of the cluster whose lease is `held`,
/// until `stop`.
pub fn start(ctx: Ctx, held: Held, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let cluster = held.cluster().to_owned();
    let span = tracing::info_span!("alerts", %cluster);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let (done_tx, done_rx) = mpsc::channel(64);
            let client = Client::new(ctx.dialer.clone(), &cluster).without_waiting();
            let mut evaluator = Evaluator {
                ctx,
                cluster,
                held,
                client,
                stop,
                watches: None,
                tracked: HashMap::new(),
                done_tx,
                records: None,
            };
            evaluator.run(done_rx).await;
        },
        span,
    ))
}

struct Evaluator {
    ctx: Ctx,
    cluster: String,
    held: Held,
    client: Client,
    stop: CancellationToken,
    watches: Option<Watches>,
    tracked: HashMap<String, Tracked>,
    done_tx: mpsc::Sender<Done>,
    /// Drover's records of the cluster's namespaces, and when read.
    records: Option<(
        std::time::Instant,
        std::collections::BTreeMap<String, namespaces::Record>,
    )>,
}

/// A rule in scope, with where it lives.
struct Scoped {
    key: String,
    rule: Arc<AlertRule>,
    /// The project, for a project rule.
    project: Option<String>,
}

/// What one rule reads downstream.
fn needs_of(s: &Scoped) -> Needs {
    let c = &s.rule.spec.condition;
    let downstream = c.pod_not_running.is_some()
        || c.pod_restarts.is_some()
        || c.workload_unavailable.is_some()
        || c.event.is_some();
    Needs {
        nodes: c.node_not_ready.is_some() || c.node_resource_usage.is_some(),
        pods: c.pod_not_running.is_some()
            || c.pod_restarts.is_some()
            || c.node_resource_usage.is_some(),
        workloads: c.workload_unavailable.is_some(),
        events: c.event.is_some(),
        namespaces: s.project.is_some() && downstream,
    }
}

/// What all the rules read downstream.
fn needs_of_all(rules: &[Scoped]) -> Needs {
    rules
        .iter()
        .map(needs_of)
        .fold(Needs::default(), |a, b| Needs {
            nodes: a.nodes || b.nodes,
            pods: a.pods || b.pods,
            workloads: a.workloads || b.workloads,
            events: a.events || b.events,
            namespaces: a.namespaces || b.namespaces,
        })
}

fn seconds(s: Option<u64>, default: Duration) -> Duration {
    s.map(Duration::from_secs).unwrap_or(default)
}

fn elapsed_since(t: Option<&str>, now: SystemTime) -> Option<Duration> {
    conditions::time(t).map(|t| now.duration_since(t).unwrap_or_default())
}

impl Evaluator {
    async fn run(&mut self, mut done_rx: mpsc::Receiver<Done>) {
        let mut rule_changes = self.ctx.alerts.fleet.rules.changes();
        let mut backoff = Backoff::default();
        loop {
            let wait = match self.reconcile().await {
                Ok(Action::Requeue(d)) => {
                    backoff.reset();
                    Some(d)
                }
                Ok(Action::AwaitChange) => {
                    backoff.reset();
                    None
                }
                Err(AlertError::LostLease) => return,
                Err(e) => {
                    let d = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "alert evaluation failed");
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
                () = self.stop.cancelled() => return,
                () = sleep => {}
                changed = rule_changes.changed(), if wait.is_none() => {
                    if changed.is_err() {
                        return;
                    }
                }
                done = done_rx.recv() => {
                    let Some(done) = done else { return };
                    match self.delivered(done).await {
                        Err(AlertError::LostLease) => return,
                        Err(e) => tracing::warn!(error = %e, "cannot record a delivery"),
                        Ok(()) => {}
                    }
                }
            }
        }
    }

    /// The rules about this cluster: its own and its projects'.
    fn rules(&self) -> Vec<Scoped> {
        let fleet = &self.ctx.alerts.fleet;
        let mut out: Vec<Scoped> = fleet
            .rules
            .group(&self.cluster)
            .into_iter()
            .map(|(key, rule)| Scoped {
                key,
                rule,
                project: None,
            })
            .collect();
        for (key, _) in fleet.projects.group(&self.cluster) {
            let project = key.rsplit('/').next().unwrap_or_default().to_owned();
            out.extend(
                fleet
                    .rules
                    .group(&project)
                    .into_iter()
                    .map(|(key, rule)| Scoped {
                        key,
                        rule,
                        project: Some(project.clone()),
                    }),
            );
        }
        out
    }

    async fn reconcile(&mut self) -> Result<Action, AlertError> {
        if !self.ctx.registry.may_act() {
            // Cut off for a moment: nothing is written, nothing decided.
            return Ok(Action::Requeue(EVALUATE_EVERY));
        }
        if !self.ctx.alerts.fleet.loaded() {
            return Ok(Action::Requeue(EVALUATE_EVERY));
        }
        let rules = self.rules();
        if rules.is_empty() {
            self.watches = None;
            self.records = None;
            self.tracked.clear();
            return Ok(Action::AwaitChange);
        }
        let needs = needs_of_all(&rules);
        // Sources come and go with the rules; what the others hold stays.
        self.watches
            .get_or_insert_with(|| Watches::new(&self.client, &self.stop))
            .set(needs);
        self.seed(&rules).await?;
        if needs.namespaces {
            let stale = self
                .records
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= RECORDS_EVERY);
            if stale {
                if let Ok(records) = namespaces::records(&self.ctx.store, &self.cluster).await {
                    let records = records.into_iter().map(|(ns, (r, _))| (ns, r)).collect();
                    self.records = Some((std::time::Instant::now(), records));
                }
            }
        } else {
            self.records = None;
        }
        let alerts = self.ctx.alerts.clone();
        let fleet = &alerts.fleet;
        let cluster = fleet.cluster(&self.cluster);
        let projects = fleet.projects.group(&self.cluster);
        let certificates = if rules
            .iter()
            .any(|s| s.rule.spec.condition.certificate_expiry.is_some())
        {
            (self.ctx.alerts.certificates)()
        } else {
            Vec::new()
        };
        let failed_backups = if rules
            .iter()
            .any(|s| s.rule.spec.condition.backup_failed.is_some())
        {
            fleet.failed_backups()
        } else {
            Vec::new()
        };
        let now = SystemTime::now();
        let empty = Facts::default();
        let nodes = self.ctx.alerts.nodes(&self.cluster);
        let no_nodes = NodeMap::new();
        let mut work = Vec::new();
        {
            let guard = self
                .watches
                .as_ref()
                .map(|w| w.facts.lock().unwrap_or_else(|e| e.into_inner()));
            let tracked = &self.tracked;
            let facts = guard.as_deref().unwrap_or(&empty);
            for s in &rules {
                let uid = s.rule.metadata.uid.clone().unwrap_or_default();
                // What the rule reads must have been listed, and be
                // watched now: else it is held as it is.
                let paths = needs_of(s).paths();
                let blind = paths
                    .iter()
                    .find_map(|p| facts.errors.get(p).cloned())
                    .or_else(|| {
                        (needs_of(s).nodes && nodes.is_none()).then(|| {
                            "the cluster's nodes are not known now: it is not connected".to_owned()
                        })
                    })
                    .or_else(|| {
                        (s.project.is_some() && needs_of(s).namespaces && self.records.is_none())
                            .then(|| "cannot read Drover's records of the namespaces".to_owned())
                    });
                let synced = paths.iter().all(|p| facts.synced.contains(p));
                if blind.is_some() || !synced {
                    work.push((uid, None, blind));
                    continue;
                }
                let project_namespaces: Option<BTreeSet<String>> = s.project.as_ref().map(|p| {
                    let records = self.records.as_ref().map(|(_, r)| r);
                    facts
                        .namespaces
                        .iter()
                        .filter(|(ns, uid)| {
                            records
                                .and_then(|r| r.get(*ns))
                                .is_some_and(|r| r.project == *p && r.is_for(uid))
                        })
                        .map(|(ns, _)| ns.clone())
                        .collect()
                });
                let in_scope: Vec<(String, Arc<view::ProjectBrief>)> = projects
                    .iter()
                    .map(|(k, p)| {
                        (
                            k.rsplit('/').next().unwrap_or_default().to_owned(),
                            p.clone(),
                        )
                    })
                    .filter(|(id, _)| s.project.as_ref().is_none_or(|p| p == id))
                    .collect();
                // What the rule names now keeps its `forSeconds`: a clock
                // started again (a re-list, a takeover) resolves nothing.
                let affected: BTreeSet<String> = tracked
                    .get(&uid)
                    .filter(|t| t.status.state.as_deref() == Some("firing"))
                    .map(|t| t.status.affected.iter().cloned().collect())
                    .unwrap_or_default();
                let findings = conditions::evaluate(
                    &s.rule.spec.condition,
                    &Inputs {
                        now,
                        cluster_id: &self.cluster,
                        cluster: cluster.as_ref(),
                        namespaces: project_namespaces.as_ref(),
                        projects: &in_scope,
                        facts,
                        nodes: nodes.as_deref().unwrap_or(&no_nodes),
                        affected: &affected,
                        watched_since: facts.listed_at.get("/api/v1/pods").copied(),
                        certificates: &certificates,
                        failed_backups: &failed_backups,
                    },
                );
                work.push((uid, Some(findings), None));
            }
        }
        let live: BTreeSet<&String> = work.iter().map(|(uid, _, _)| uid).collect();
        self.tracked.retain(|uid, _| live.contains(uid));
        for (s, (uid, findings, blind)) in rules.iter().zip(work) {
            self.step(s, uid, findings, blind, now, cluster.as_ref())
                .await?;
        }
        Ok(Action::Requeue(EVALUATE_EVERY))
    }

    /// Move one rule on: its state, and a message if one is due.
    /// `findings: None` holds the rule as it is (what it reads is not
    /// known now; `blind` says why, if it can).
    async fn step(
        &mut self,
        s: &Scoped,
        uid: String,
        findings: Option<Vec<Finding>>,
        blind: Option<String>,
        now: SystemTime,
        cluster: Option<&view::ClusterBrief>,
    ) -> Result<(), AlertError> {
        let rule = &s.rule;
        let tracked = self
            .tracked
            .get_mut(&uid)
            .expect("seeded before evaluation");
        let mut status = tracked.status.clone();
        // A message another replica was sending when it stopped: its
        // outcome is unknown, so it counts as failed (and is sent again as
        // a failed one is).
        for d in status
            .last_notification
            .iter_mut()
            .flat_map(|n| n.deliveries.iter_mut())
            .filter(|d| d.result == notify::SENDING && !tracked.sending.contains(&d.notifier))
        {
            d.result = notify::FAILED.into();
            d.error = Some("interrupted: the replica sending it stopped before it finished".into());
        }
        let missing: Vec<&str> = rule
            .spec
            .notifiers
            .iter()
            .filter(|n| self.ctx.alerts.fleet.notifier(n).is_none())
            .map(String::as_str)
            .collect();
        status.error = (!missing.is_empty())
            .then(|| format!("no Notifier named {}", missing.join(", ")))
            .or(blind);
        let Some(findings) = findings else {
            tracked.status = status;
            return write_if_changed(&self.ctx, &self.held, tracked, &uid).await;
        };
        // The notifiers a failed delivery is sent again to: those the rule
        // still names and that exist.
        let all = rule.spec.notifiers.clone();
        let failed: Vec<String> = status
            .last_notification
            .as_ref()
            .map(|l| {
                l.deliveries
                    .iter()
                    .filter(|d| d.result == notify::FAILED)
                    .map(|d| d.notifier.clone())
                    .filter(|n| all.contains(n) && !missing.contains(&n.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        // Quiet, and nothing owed: nothing to do (most rules, most of the
        // time).
        let owes = status
            .last_notification
            .as_ref()
            .is_some_and(|l| l.state == "firing" || !failed.is_empty());
        if findings.is_empty()
            && status.state.as_deref() != Some("firing")
            && !owes
            && status == tracked.stored
        {
            tracked.status = status;
            return Ok(());
        }
        let condition = condition_name(&rule.spec.condition).0.unwrap_or_default();
        let cluster_name = cluster
            .map(|c| c.display_name.clone())
            .unwrap_or_else(|| self.cluster.clone());
        let affected: Vec<String> = findings.into_iter().map(|f| f.object).collect();
        let firing = !affected.is_empty();
        let now_text = meta::rfc3339(now);
        let was_firing = status.state.as_deref() == Some("firing");
        if firing {
            if !was_firing {
                status.state = Some("firing".into());
                status.since = Some(now_text.clone());
            }
            status.affected = affected.clone();
            status.message = Some(conditions::summary(condition, &cluster_name, &affected));
        } else if was_firing {
            status.state = Some("resolved".into());
            status.since = Some(now_text.clone());
            status.affected.clear();
            status.message = Some(format!("{condition} in {cluster_name}: resolved"));
        }
        // Is a message due, and to whom?
        let group_wait = seconds(rule.spec.group_wait_seconds, DEFAULT_GROUP_WAIT);
        let group_interval = seconds(rule.spec.group_interval_seconds, DEFAULT_GROUP_INTERVAL);
        let repeat = seconds(rule.spec.repeat_interval_seconds, DEFAULT_REPEAT_INTERVAL);
        let last = status.last_notification.as_ref();
        let since_last = last.and_then(|l| elapsed_since(Some(&l.time), now));
        let spaced = since_last.is_none_or(|d| d >= group_interval);
        // A retry waits a group interval after the message and after the
        // last retry, and is given up once the repeat interval has passed
        // (a firing alert is then sent to all again).
        let retry_due = !failed.is_empty()
            && spaced
            && since_last.is_some_and(|d| d < repeat)
            && tracked
                .retried
                .is_none_or(|at| at.elapsed() >= group_interval);
        // The last message belongs to this firing if sent since it began.
        let episode_start = conditions::time(status.since.as_deref());
        let sent_this_episode = last.is_some_and(|l| {
            l.state == "firing"
                && conditions::time(Some(&l.time))
                    .zip(episode_start)
                    .is_some_and(|(t, s)| t >= s)
        });
        // What to send: a new message to all, or the last one again to
        // those that did not take it.
        enum Due {
            New(notify::State),
            Retry(notify::State),
        }
        let due: Option<Due> = match (firing, last) {
            _ if !tracked.sending.is_empty() || all.is_empty() => None,
            (true, _) if !sent_this_episode => {
                let waited = elapsed_since(status.since.as_deref(), now).unwrap_or_default();
                (waited >= group_wait && spaced).then_some(Due::New(notify::State::Firing))
            }
            (true, Some(l)) => {
                let d = since_last.unwrap_or_default();
                if (l.affected != affected && d >= group_interval) || d >= repeat {
                    Some(Due::New(notify::State::Firing))
                } else {
                    retry_due.then_some(Due::Retry(notify::State::Firing))
                }
            }
            (false, Some(l)) if l.state == "firing" => {
                spaced.then_some(Due::New(notify::State::Resolved))
            }
            (false, Some(l)) if l.state == "resolved" => {
                retry_due.then_some(Due::Retry(notify::State::Resolved))
            }
            _ => None,
        };
        // A resolution names what the firing message named.
        let previously_named = last.map(|l| l.affected.clone()).unwrap_or_default();
        let (state, to, time, is_retry) = match due {
            None => {
                tracked.status = status;
                return write_if_changed(&self.ctx, &self.held, tracked, &uid).await;
            }
            Some(Due::New(state)) => {
                status.last_notification = Some(LastNotification {
                    time: now_text.clone(),
                    state: state.as_str().to_owned(),
                    affected: match state {
                        notify::State::Firing => affected.clone(),
                        notify::State::Resolved => previously_named.clone(),
                    },
                    deliveries: all
                        .iter()
                        .map(|n| Delivery {
                            notifier: n.clone(),
                            result: notify::SENDING.into(),
                            attempts: 0,
                            error: None,
                        })
                        .collect(),
                });
                (state, all.clone(), now_text.clone(), false)
            }
            Some(Due::Retry(state)) => {
                let last = status
                    .last_notification
                    .as_mut()
                    .expect("a message to retry");
                for d in last
                    .deliveries
                    .iter_mut()
                    .filter(|d| failed.contains(&d.notifier))
                {
                    d.result = notify::SENDING.into();
                }
                (state, failed.clone(), last.time.clone(), true)
            }
        };
        // A message goes out only once it is recorded.
        let before = std::mem::replace(&mut tracked.status, status.clone());
        write_if_changed(&self.ctx, &self.held, tracked, &uid).await?;
        if tracked.stored != status {
            tracked.status = before;
            return Ok(());
        }
        tracked.retried = is_retry.then(std::time::Instant::now);
        tracked.sending = to.iter().cloned().collect();
        let named = status
            .last_notification
            .as_ref()
            .map(|l| l.affected.clone())
            .unwrap_or_default();
        let message = notify::Message {
            rule: rule.metadata.name.clone().unwrap_or_default(),
            rule_namespace: rule.metadata.namespace.clone().unwrap_or_default(),
            state,
            severity: rule
                .spec
                .severity
                .clone()
                .unwrap_or_else(|| "warning".into()),
            condition: condition.to_owned(),
            summary: status.message.clone().unwrap_or_default(),
            cluster: self.cluster.clone(),
            cluster_name,
            project: s.project.clone(),
            affected: named,
            since: status.since.clone().unwrap_or_default(),
            description: rule.spec.description.clone(),
            url: match &s.project {
                Some(p) => format!(
                    "{}/clusters/{}/projects/{p}",
                    self.ctx.alerts.ui_url, self.cluster
                ),
                None => format!("{}/clusters/{}", self.ctx.alerts.ui_url, self.cluster),
            },
        };
        self.send(uid, time, to, message);
        Ok(())
    }

    /// Deliver a message to each notifier on its own; each result comes
    /// back on the evaluator's channel as it is known.
    fn send(&self, uid: String, time: String, notifiers: Vec<String>, message: notify::Message) {
        let message = Arc::new(message);
        for name in notifiers {
            let alerts = self.ctx.alerts.clone();
            let store = self.ctx.store.clone();
            let done = self.done_tx.clone();
            let message = message.clone();
            let (uid, time) = (uid.clone(), time.clone());
            tokio::spawn(async move {
                let failed = |error: String| Delivery {
                    notifier: name.clone(),
                    result: notify::FAILED.into(),
                    attempts: 0,
                    error: Some(error),
                };
                let delivery = match alerts.fleet.notifier(&name) {
                    None => failed(format!("no Notifier named {name}")),
                    Some(spec) => match crate::kinds::alerts::read_secrets(&store, &name).await {
                        Ok((secrets, _)) => {
                            alerts
                                .sender
                                .deliver(&name, &spec, &secrets, &message)
                                .await
                        }
                        Err(e) => failed(format!("cannot read its secrets: {e}")),
                    },
                };
                let _ = done.send((uid, time, delivery)).await;
            });
        }
    }

    /// Record one notifier's delivery (in memory at once; in the store as
    /// soon as a write goes through).
    async fn delivered(&mut self, (uid, time, delivery): Done) -> Result<(), AlertError> {
        let Some(tracked) = self.tracked.get_mut(&uid) else {
            return Ok(());
        };
        let Some(last) = tracked
            .status
            .last_notification
            .as_mut()
            .filter(|l| l.time == time)
        else {
            return Ok(()); // a message since superseded
        };
        tracked.sending.remove(&delivery.notifier);
        if let Some(d) = last
            .deliveries
            .iter_mut()
            .find(|d| d.notifier == delivery.notifier)
        {
            *d = delivery;
        }
        write_if_changed(&self.ctx, &self.held, tracked, &uid).await
    }

    /// Start tracking the rules not tracked yet, from the store (not the
    /// view, which may not have seen the last writes of the replica that
    /// held the lease before).
    async fn seed(&mut self, rules: &[Scoped]) -> Result<(), AlertError> {
        for s in rules {
            let uid = s.rule.metadata.uid.clone().unwrap_or_default();
            if self.tracked.contains_key(&uid) {
                continue;
            }
            let stored = self
                .ctx
                .store
                .get(&s.key)
                .await?
                .and_then(|kv| serde_json::from_slice::<AlertRule>(&kv.value).ok())
                .filter(|r| r.metadata.uid.as_deref() == Some(uid.as_str()))
                .and_then(|r| r.status)
                .unwrap_or_default();
            self.tracked.insert(
                uid,
                Tracked {
                    key: s.key.clone(),
                    status: stored.clone(),
                    stored,
                    sending: BTreeSet::new(),
                    retried: None,
                },
            );
        }
        Ok(())
    }
}

/// Write a rule's in-memory status if it differs from what was last
/// recorded.
async fn write_if_changed(
    ctx: &Ctx,
    held: &Held,
    tracked: &mut Tracked,
    uid: &str,
) -> Result<(), AlertError> {
    if tracked.status != tracked.stored
        && write_status(ctx, held, &tracked.key, uid, &tracked.status).await?
    {
        tracked.stored = tracked.status.clone();
    }
    Ok(())
}

/// Write a rule's status under the cluster's lease, if it is still the rule
/// of that uid; whether it was recorded.
async fn write_status(
    ctx: &Ctx,
    held: &Held,
    key: &str,
    uid: &str,
    status: &AlertRuleStatus,
) -> Result<bool, AlertError> {
    let value = serde_json::to_value(status).expect("plain data");
    let mut ours = false;
    let updated = held
        .update(&ctx.store, key, |obj| {
            ours = obj.pointer("/metadata/uid").and_then(|u| u.as_str()) == Some(uid);
            if !ours || obj["status"] == value {
                return false;
            }
            obj["status"] = value.clone();
            true
        })
        .await?;
    match updated {
        Updated::LostLease => Err(AlertError::LostLease),
        Updated::Done => Ok(ours),
        Updated::Gone | Updated::Contended => Ok(false),
    }
}
