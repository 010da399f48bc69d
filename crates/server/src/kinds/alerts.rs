//! The alerting kinds of `management.drover.io/v1`:
//!
//! - `Notifier` (cluster-scoped; admins): where alerts go. Exactly one of
//!   webhook, Slack, email, PagerDuty or an Alertmanager-compatible
//!   receiver. Its secrets (`webhook.secret`, `email.password`,
//!   `pagerduty.routingKey`) are write-only: a write that carries one moves
//!   it to the record [`notify::secrets_key`] in the same transaction, so no
//!   read, list, watch or log shows it; a write that points the notifier
//!   elsewhere must give it again. A destination at a loopback, private or
//!   link-local address is refused unless the server runs with
//!   `--allow-private-outbound`. `POST …/notifiers/{name}/test` sends a
//!   test message once and answers with the result.
//! - `AlertRule` (in a cluster's or a project's namespace): one condition,
//!   a severity, the notifiers and the timing; the cluster's controller
//!   evaluates it and writes its status ([`crate::controller::alerts`]).
//!   Who holds rights on `alertrules` in the namespace manages them (a
//!   cluster's owners, a project's owners).

use std::sync::Arc;
use std::time::Duration;

use drover_apiserver::{ApiError, Column, Context, FieldError, Prepared, Strategy};
use drover_core::api::{self, schema_for};
use drover_store::{Op, Store};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::notify::{self, Secrets};

/// The longest duration a rule may name (30 days).
const MAX_SECONDS: u64 = 30 * 24 * 3600;

/// Default timing, as Rancher's alerts had it.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// See [`DEFAULT_GROUP_WAIT`].
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(180);
/// See [`DEFAULT_GROUP_WAIT`].
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// The severities a rule may have.
pub const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

/// Which notifier kind a spec holds, and how many it holds.
pub fn notifier_type(spec: &api::NotifierSpec) -> (Option<&'static str>, usize) {
    let kinds = [
        ("webhook", spec.webhook.is_some()),
        ("slack", spec.slack.is_some()),
        ("email", spec.email.is_some()),
        ("pagerduty", spec.pagerduty.is_some()),
        ("alertmanager", spec.alertmanager.is_some()),
    ];
    let set: Vec<&'static str> = kinds.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
    (set.first().copied(), set.len())
}

/// The URLs a notifier sends to, by field.
fn urls(spec: &api::NotifierSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(w) = &spec.webhook {
        out.push(("spec.webhook.url", w.url.clone()));
    }
    if let Some(s) = &spec.slack {
        out.push(("spec.slack.url", s.url.clone()));
    }
    if let Some(p) = &spec.pagerduty {
        out.push((
            "spec.pagerduty.url",
            p.url
                .clone()
                .unwrap_or_else(|| notify::PAGERDUTY_EVENTS_URL.to_owned()),
        ));
    }
    if let Some(a) = &spec.alertmanager {
        out.push(("spec.alertmanager.url", a.url.clone()));
    }
    out
}

/// A URL as an error may show it: its scheme and host, never its path or
/// query (a Slack webhook's path is its token).
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or_default()),
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// Where a notifier's secrets are sent, as a comparable value.
fn destination(obj: &Value) -> Value {
    let spec = &obj["spec"];
    json!([
        spec.pointer("/webhook/url"),
        spec.pointer("/email/host"),
        spec.pointer("/email/port"),
        spec.pointer("/email/tls"),
        spec.pointer("/email/username"),
        spec.pointer("/pagerduty/url"),
    ])
}

/// Read a notifier's secrets.
pub async fn read_secrets(
    store: &Store,
    name: &str,
) -> Result<(Secrets, Option<drover_store::KeyValue>), drover_store::StoreError> {
    let kv = store.get(&notify::secrets_key(name)).await?;
    let secrets = kv
        .as_ref()
        .and_then(|kv| serde_json::from_slice(&kv.value).ok())
        .unwrap_or_default();
    Ok((secrets, kv))
}

fn unavailable(_: drover_store::StoreError) -> ApiError {
    ApiError::unavailable("the datastore is unavailable")
}

fn invalid(name: &str, errors: &[FieldError]) -> ApiError {
    ApiError::invalid("Notifier", api::GROUP, name, errors)
}

/// The Notifier kind's strategy.
pub struct Notifiers {
    /// Sends the test messages.
    pub sender: Arc<notify::Sender>,
    /// Whether destinations may be internal addresses.
    pub allow_private: bool,
}

impl Notifiers {
    /// Refuse destinations on the server's own network (unless allowed).
    async fn check_destinations(&self, name: &str, obj: &Value) -> Result<(), ApiError> {
        let Ok(spec) = serde_json::from_value::<api::NotifierSpec>(obj["spec"].clone()) else {
            return Ok(()); // the schema check reports it
        };
        let Err(e) = notify::check_notifier(&spec, self.allow_private).await else {
            return Ok(());
        };
        let (field, value) = match (&spec.email, urls(&spec).into_iter().next()) {
            (Some(email), _) => ("spec.email.host", email.host.clone()),
            (None, Some((field, url))) => (field, shown(&url)),
            (None, None) => ("spec", String::new()),
        };
        Err(invalid(
            name,
            &[FieldError::invalid(field, value, e.to_string())],
        ))
    }

    /// Record the secrets a write carries (over those recorded).
    async fn secret_ops(
        ctx: &Context,
        name: &str,
        given: Secrets,
        create: bool,
    ) -> Result<Vec<Op>, ApiError> {
        let (mut secrets, kv) = read_secrets(&ctx.store, name).await.map_err(unavailable)?;
        if create {
            // A record left by a deleted object is not inherited.
            secrets = Secrets::default();
        }
        let changed = !given.is_empty();
        if given.webhook_secret.is_some() {
            secrets.webhook_secret = given.webhook_secret;
        }
        if given.email_password.is_some() {
            secrets.email_password = given.email_password;
        }
        if given.routing_key.is_some() {
            secrets.routing_key = given.routing_key;
        }
        if !changed && !create {
            return Ok(Vec::new());
        }
        let value = serde_json::to_vec(&secrets).expect("JSON");
        Ok(vec![match kv {
            Some(kv) => Op::update(notify::secrets_key(name), value, kv.mod_revision),
            None => Op::create(notify::secrets_key(name), value),
        }])
    }
}

impl Strategy for Notifiers {
    fn schema(&self) -> Value {
        schema_for::<api::Notifier>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("Type", "string", "Where alerts go", "/spec"),
            Column::new("Destination", "string", "The URL or mail server", "/spec"),
        ]
    }

    fn cell(&self, column: &Column, obj: &Value) -> Value {
        let spec: api::NotifierSpec =
            serde_json::from_value(obj["spec"].clone()).unwrap_or_default();
        let text = match column.name {
            "Type" => notifier_type(&spec).0.unwrap_or_default().to_owned(),
            _ => match &spec.email {
                Some(e) => format!("smtp://{}:{}", e.host, e.port.unwrap_or(0)),
                // URLs without their query, which may carry a token.
                None => urls(&spec)
                    .first()
                    .map(|(_, u)| u.split('?').next().unwrap_or_default().to_owned())
                    .unwrap_or_default(),
            },
        };
        Value::String(text)
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let Ok(spec) = serde_json::from_value::<api::NotifierSpec>(obj["spec"].clone()) else {
            return Vec::new(); // the schema check reports it
        };
        let mut errors = Vec::new();
        match notifier_type(&spec).1 {
            1 => {}
            0 => errors.push(FieldError::required(
                "spec",
                "one of webhook, slack, email, pagerduty or alertmanager",
            )),
            _ => errors.push(FieldError::invalid(
                "spec",
                "several".to_owned(),
                "give exactly one of webhook, slack, email, pagerduty or alertmanager",
            )),
        }
        for (field, url) in urls(&spec) {
            if let Err(e) = drover_net::outbound::check_url(&url, true) {
                errors.push(FieldError::invalid(field, shown(&url), e.to_string()));
            }
        }
        if let Some(email) = &spec.email {
            if email.host.trim().is_empty() || email.host.contains(['/', ' ', '@']) {
                errors.push(FieldError::invalid(
                    "spec.email.host",
                    email.host.clone(),
                    "a host name or address",
                ));
            }
            if !email.from.contains('@') {
                errors.push(FieldError::invalid(
                    "spec.email.from",
                    email.from.clone(),
                    "an email address",
                ));
            }
            if email.to.is_empty() {
                errors.push(FieldError::required(
                    "spec.email.to",
                    "at least one address",
                ));
            }
            for (i, to) in email.to.iter().enumerate() {
                if !to.contains('@') {
                    errors.push(FieldError::invalid(
                        format!("spec.email.to[{i}]"),
                        to.clone(),
                        "an email address",
                    ));
                }
            }
        }
        errors
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let given = Secrets::take(obj);
            if obj.pointer("/spec/pagerduty").is_some() && given.routing_key.is_none() {
                return Err(invalid(
                    &name,
                    &[FieldError::required(
                        "spec.pagerduty.routingKey",
                        "the integration's routing key",
                    )],
                ));
            }
            self.check_destinations(&name, obj).await?;
            Ok(Prepared {
                ops: Self::secret_ops(ctx, &name, given, true).await?,
                ..Default::default()
            })
        })
    }

    fn update_ops<'a>(
        &'a self,
        ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let name = new["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let given = Secrets::take(new);
            // A kept secret goes only where it went before: whoever can
            // point the notifier elsewhere could otherwise have it sent to
            // a server of theirs.
            let (recorded, _) = read_secrets(&ctx.store, &name).await.map_err(unavailable)?;
            if !recorded.is_empty() && given.is_empty() && destination(new) != destination(old) {
                return Err(invalid(
                    &name,
                    &[FieldError::required(
                        "spec",
                        "give the secret (webhook.secret, email.password or pagerduty.routingKey) again when the destination changes: it is sent there",
                    )],
                ));
            }
            if urls_changed(new, old) {
                self.check_destinations(&name, new).await?;
            }
            Self::secret_ops(ctx, &name, given, false).await
        })
    }

    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let kv = ctx
                .store
                .get(&notify::secrets_key(name))
                .await
                .map_err(unavailable)?;
            Ok(kv
                .map(|kv| Op::delete(kv.key.clone(), kv.mod_revision))
                .into_iter()
                .collect())
        })
    }

    fn create_subresource<'a>(
        &'a self,
        ctx: &'a Context,
        _namespace: &'a str,
        name: &'a str,
        subresource: &'a str,
        _body: Value,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async move {
            if subresource != "test" {
                return Err(ApiError::method_not_allowed(subresource));
            }
            let key = drover_core::keys::object(api::GROUP, "notifiers", None, name);
            let obj: api::Notifier = match ctx.store.get(&key).await.map_err(unavailable)? {
                Some(kv) => serde_json::from_slice(&kv.value)
                    .map_err(|_| ApiError::unavailable("the notifier cannot be read"))?,
                None => {
                    return Err(ApiError::not_found(drover_apiserver::error::Subject {
                        group: api::GROUP,
                        resource: "notifiers",
                        name,
                    }))
                }
            };
            let (secrets, _) = read_secrets(&ctx.store, name).await.map_err(unavailable)?;
            let message = notify::Message::test(name, &ctx.user.name);
            let delivery = match self
                .sender
                .send_once(name, &obj.spec, &secrets, &message)
                .await
            {
                Ok(()) => api::Delivery {
                    notifier: name.to_owned(),
                    result: notify::DELIVERED.into(),
                    attempts: 1,
                    error: None,
                },
                Err(e) => api::Delivery {
                    notifier: name.to_owned(),
                    result: notify::FAILED.into(),
                    attempts: 1,
                    error: Some(e.to_string()),
                },
            };
            let mut answer = serde_json::to_value(&delivery).expect("plain data");
            answer["apiVersion"] = json!(api::API_VERSION);
            answer["kind"] = json!("NotifierTest");
            Ok(answer)
        })
    }
}

fn urls_changed(new: &Value, old: &Value) -> bool {
    let of = |v: &Value| {
        serde_json::from_value::<api::NotifierSpec>(v["spec"].clone())
            .map(|s| {
                let mut u = urls(&s);
                if let Some(e) = &s.email {
                    u.push(("email", format!("{}:{:?}", e.host, e.port)));
                }
                u
            })
            .unwrap_or_default()
    };
    of(new) != of(old)
}

/// The AlertRule kind's strategy.
pub struct AlertRules;

impl AlertRules {
    /// Checks that need the store and the writer's rights: a rule sends
    /// only through notifiers whoever writes its spec may `use` (admins
    /// may use all; an admin grants others `use` on `notifiers`, by name if
    /// they like), and rules about the server itself are written by those
    /// who may list backups, in a cluster's namespace only.
    async fn check(ctx: &Context, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let Ok(spec) = serde_json::from_value::<api::AlertRuleSpec>(obj["spec"].clone()) else {
            return Ok(()); // the schema check reports it
        };
        // An edit that changes nothing of the spec (labels, say) needs no
        // right on the notifiers; any other needs `use` on every one, or
        // whoever may edit a rule could make an admin's notifier send
        // what they like, as often as they like.
        let unchanged = old.is_some_and(|o| o["spec"] == obj["spec"]);
        let mut errors = Vec::new();
        for (i, n) in spec.notifiers.iter().enumerate() {
            if unchanged {
                break;
            }
            let attrs = drover_rbac::Attributes::resource("use", api::GROUP, "notifiers", "", n);
            if !ctx.authorizer.authorize(&ctx.user, &attrs).await? {
                errors.push(FieldError::forbidden(
                    format!("spec.notifiers[{i}]"),
                    format!("you may not use the Notifier {n:?}: an administrator grants `use` on notifiers"),
                ));
            }
        }
        let server_wide =
            spec.condition.certificate_expiry.is_some() || spec.condition.backup_failed.is_some();
        // They tell of the server's certificates and backups: for those
        // who may see its backups (admins).
        let backups = drover_rbac::Attributes::resource("list", api::GROUP, "backups", "", "");
        if server_wide && !unchanged && !ctx.authorizer.authorize(&ctx.user, &backups).await? {
            errors.push(FieldError::forbidden(
                "spec.condition",
                "certificateExpiry and backupFailed rules are for those who may list backups",
            ));
        }
        if server_wide {
            let key = drover_core::keys::object(api::GROUP, "clusters", None, namespace);
            if ctx.store.get(&key).await.map_err(unavailable)?.is_none() {
                errors.push(FieldError::invalid(
                    "spec.condition",
                    namespace.to_owned(),
                    "certificateExpiry and backupFailed rules are about the server: put them in a cluster's namespace",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid("AlertRule", api::GROUP, name, &errors))
        }
    }
}

/// Check a duration field.
fn seconds(errors: &mut Vec<FieldError>, field: &str, value: Option<u64>, min: u64) {
    if let Some(v) = value {
        if v < min || v > MAX_SECONDS {
            errors.push(FieldError::invalid(
                field,
                v.to_string(),
                format!("must be between {min} and {MAX_SECONDS} seconds"),
            ));
        }
    }
}

/// Check a number's range.
fn in_range(errors: &mut Vec<FieldError>, field: String, value: u32, min: u32, max: u32) {
    if !(min..=max).contains(&value) {
        errors.push(FieldError::invalid(
            field,
            value.to_string(),
            format!("must be between {min} and {max}"),
        ));
    }
}

/// The name of the condition a rule holds, and how many it holds.
pub fn condition_name(c: &api::AlertCondition) -> (Option<&'static str>, usize) {
    let set: Vec<&'static str> = [
        ("clusterDisconnected", c.cluster_disconnected.is_some()),
        ("nodeNotReady", c.node_not_ready.is_some()),
        ("nodeResourceUsage", c.node_resource_usage.is_some()),
        ("podNotRunning", c.pod_not_running.is_some()),
        ("podRestarts", c.pod_restarts.is_some()),
        ("workloadUnavailable", c.workload_unavailable.is_some()),
        ("quotaUsage", c.quota_usage.is_some()),
        ("event", c.event.is_some()),
        ("certificateExpiry", c.certificate_expiry.is_some()),
        ("backupFailed", c.backup_failed.is_some()),
    ]
    .into_iter()
    .filter(|(_, s)| *s)
    .map(|(n, _)| n)
    .collect();
    (set.first().copied(), set.len())
}

/// Semantic checks of a rule's spec.
pub fn validate_rule(spec: &api::AlertRuleSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let c = &spec.condition;
    match condition_name(c).1 {
        1 => {}
        0 => errors.push(FieldError::required(
            "spec.condition",
            "one of clusterDisconnected, nodeNotReady, nodeResourceUsage, podNotRunning, podRestarts, workloadUnavailable, quotaUsage, event, certificateExpiry, backupFailed",
        )),
        _ => errors.push(FieldError::invalid(
            "spec.condition",
            "several".to_owned(),
            "give exactly one condition",
        )),
    }
    let f = "spec.condition";
    if let Some(x) = &c.cluster_disconnected {
        seconds(
            &mut errors,
            &format!("{f}.clusterDisconnected.forSeconds"),
            Some(x.for_seconds),
            0,
        );
    }
    if let Some(x) = &c.node_not_ready {
        seconds(
            &mut errors,
            &format!("{f}.nodeNotReady.forSeconds"),
            Some(x.for_seconds),
            0,
        );
    }
    if let Some(x) = &c.node_resource_usage {
        if !["cpu", "memory", "pods"].contains(&x.resource.as_str()) {
            errors.push(FieldError::invalid(
                format!("{f}.nodeResourceUsage.resource"),
                x.resource.clone(),
                "one of cpu, memory, pods",
            ));
        }
        in_range(
            &mut errors,
            format!("{f}.nodeResourceUsage.percent"),
            x.percent,
            1,
            1000,
        );
    }
    let selector = |errors: &mut Vec<FieldError>, field: String, s: &Option<String>| {
        if let Some(s) = s {
            if let Err(e) = drover_apiserver::selector::LabelSelector::parse(s) {
                errors.push(FieldError::invalid(field, s.clone(), e.message));
            }
        }
    };
    let namespace = |errors: &mut Vec<FieldError>, field: String, ns: &Option<String>| {
        if let Some(ns) = ns {
            if !drover_apiserver::object::is_dns_label(ns) {
                errors.push(FieldError::invalid(field, ns.clone(), "a namespace name"));
            }
        }
    };
    if let Some(x) = &c.pod_not_running {
        seconds(
            &mut errors,
            &format!("{f}.podNotRunning.forSeconds"),
            Some(x.for_seconds),
            0,
        );
        selector(
            &mut errors,
            format!("{f}.podNotRunning.selector"),
            &x.selector,
        );
        namespace(
            &mut errors,
            format!("{f}.podNotRunning.namespace"),
            &x.namespace,
        );
    }
    if let Some(x) = &c.pod_restarts {
        seconds(
            &mut errors,
            &format!("{f}.podRestarts.windowSeconds"),
            Some(x.window_seconds),
            1,
        );
        selector(
            &mut errors,
            format!("{f}.podRestarts.selector"),
            &x.selector,
        );
        namespace(
            &mut errors,
            format!("{f}.podRestarts.namespace"),
            &x.namespace,
        );
    }
    if let Some(x) = &c.workload_unavailable {
        seconds(
            &mut errors,
            &format!("{f}.workloadUnavailable.forSeconds"),
            Some(x.for_seconds),
            0,
        );
        namespace(
            &mut errors,
            format!("{f}.workloadUnavailable.namespace"),
            &x.namespace,
        );
        if let Some(name) = &x.name {
            if !drover_apiserver::object::is_dns_subdomain(name) {
                errors.push(FieldError::invalid(
                    format!("{f}.workloadUnavailable.name"),
                    name.clone(),
                    "a workload's name",
                ));
            }
        }
    }
    if let Some(x) = &c.quota_usage {
        in_range(
            &mut errors,
            format!("{f}.quotaUsage.percent"),
            x.percent,
            1,
            100,
        );
    }
    if let Some(x) = &c.event {
        if x.reason.trim().is_empty() {
            errors.push(FieldError::required(
                format!("{f}.event.reason"),
                "the event's reason",
            ));
        }
        if let Some(t) = &x.type_ {
            if t != "Warning" && t != "Normal" {
                errors.push(FieldError::invalid(
                    format!("{f}.event.type"),
                    t.clone(),
                    "Warning or Normal",
                ));
            }
        }
    }
    if let Some(x) = &c.certificate_expiry {
        in_range(
            &mut errors,
            format!("{f}.certificateExpiry.days"),
            x.days,
            1,
            3650,
        );
    }
    if let Some(s) = &spec.severity {
        if !SEVERITIES.contains(&s.as_str()) {
            errors.push(FieldError::invalid(
                "spec.severity",
                s.clone(),
                "one of critical, warning, info",
            ));
        }
    }
    for (i, n) in spec.notifiers.iter().enumerate() {
        if spec.notifiers[..i].contains(n) {
            errors.push(FieldError::invalid(
                format!("spec.notifiers[{i}]"),
                n.clone(),
                "named twice",
            ));
        }
        if !drover_apiserver::object::is_dns_subdomain(n) {
            errors.push(FieldError::invalid(
                format!("spec.notifiers[{i}]"),
                n.clone(),
                "a Notifier's name",
            ));
        }
    }
    seconds(
        &mut errors,
        "spec.groupWaitSeconds",
        spec.group_wait_seconds,
        0,
    );
    seconds(
        &mut errors,
        "spec.groupIntervalSeconds",
        spec.group_interval_seconds,
        1,
    );
    seconds(
        &mut errors,
        "spec.repeatIntervalSeconds",
        spec.repeat_interval_seconds,
        1,
    );
    errors
}

impl Strategy for AlertRules {
    fn schema(&self) -> Value {
        schema_for::<api::AlertRule>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new(
                "Condition",
                "string",
                "What the rule watches for",
                "/spec/condition",
            ),
            Column::new("Severity", "string", "How bad", "/spec/severity"),
            Column::new("State", "string", "Firing or resolved", "/status/state"),
            Column::new("Since", "date", "When the state began", "/status/since"),
            Column::new("Affected", "string", "What is wrong", "/status/affected"),
        ]
    }

    fn cell(&self, column: &Column, obj: &Value) -> Value {
        match column.name {
            "Condition" => {
                let c: api::AlertCondition =
                    serde_json::from_value(obj["spec"]["condition"].clone()).unwrap_or_default();
                json!(condition_name(&c).0.unwrap_or_default())
            }
            "Severity" => obj
                .pointer("/spec/severity")
                .cloned()
                .unwrap_or_else(|| json!("warning")),
            "State" => obj
                .pointer("/status/state")
                .cloned()
                .unwrap_or_else(|| json!("inactive")),
            "Affected" => {
                let list: Vec<&str> = obj
                    .pointer("/status/affected")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let shown = list.iter().take(3).copied().collect::<Vec<_>>().join(",");
                json!(match list.len() {
                    n if n > 3 => format!("{shown} +{}", n - 3),
                    _ => shown,
                })
            }
            _ => obj.pointer(column.pointer).cloned().unwrap_or(Value::Null),
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let Ok(spec) = serde_json::from_value::<api::AlertRuleSpec>(obj["spec"].clone()) else {
            return Vec::new(); // the schema check reports it
        };
        validate_rule(&spec)
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            Self::check(ctx, obj, None).await?;
            Ok(Prepared::default())
        })
    }

    fn prepare_update<'a>(
        &'a self,
        ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { Self::check(ctx, new, Some(old)).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_leave_the_object_and_its_applied_annotation() {
        let mut obj = json!({
            "metadata": {"name": "n", "annotations": {drover_apiserver::object::LAST_APPLIED:
                r#"{"spec":{"webhook":{"url":"https://x","secret":"s3cret"}}}"#}},
            "spec": {"webhook": {"url": "https://x", "secret": "s3cret"}},
        });
        let s = Secrets::take(&mut obj);
        assert_eq!(s.webhook_secret.as_deref(), Some("s3cret"));
        assert!(!obj.to_string().contains("s3cret"));
    }

    #[test]
    fn exactly_one_condition() {
        let mut spec = api::AlertRuleSpec::default();
        assert_eq!(validate_rule(&spec).len(), 1);
        spec.condition.cluster_disconnected = Some(api::ForSeconds { for_seconds: 10 });
        assert!(validate_rule(&spec).is_empty());
        spec.condition.quota_usage = Some(api::QuotaUsageCondition { percent: 90 });
        assert_eq!(validate_rule(&spec).len(), 1);
        spec.condition.quota_usage = None;
        spec.severity = Some("dire".into());
        spec.group_interval_seconds = Some(0);
        assert_eq!(validate_rule(&spec).len(), 2);
    }
}
