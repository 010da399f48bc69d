//! What each kind of notifier is sent: pure functions of a [`Message`], so
//! the bodies can be tested, and shown in docs/alerts.md, apart from any
//! network.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{Message, State};

/// The key that ties a rule's messages together: `drover/{namespace}/{rule}`
/// (PagerDuty's `dedup_key`, Alertmanager's `groupKey`).
pub fn group_key(msg: &Message) -> String {
    format!("drover/{}/{}", msg.rule_namespace, msg.rule)
}

/// `FIRING` or `RESOLVED`, as subjects and Slack texts open.
fn tag(state: State) -> &'static str {
    match state {
        State::Firing => "FIRING",
        State::Resolved => "RESOLVED",
    }
}

/// The object a message is about when it names none: `cluster/{id}`, or
/// `drover` for a message about no cluster (a test).
fn default_object(msg: &Message) -> String {
    if msg.cluster.is_empty() {
        "drover".to_owned()
    } else {
        format!("cluster/{}", msg.cluster)
    }
}

/// `prod (c-abcde)`, or the id alone when the name is it or is empty.
fn cluster_words(msg: &Message) -> String {
    if msg.cluster_name.is_empty() || msg.cluster_name == msg.cluster {
        msg.cluster.clone()
    } else {
        format!("{} ({})", msg.cluster_name, msg.cluster)
    }
}

/// One line: newlines and other control characters become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` characters of `s`, with `…` when cut.
fn at_most(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The generic webhook's JSON (`"version": "1"`).
pub fn webhook(msg: &Message) -> Value {
    json!({
        "version": "1",
        "status": msg.state.as_str(),
        "rule": { "name": msg.rule, "namespace": msg.rule_namespace },
        "severity": msg.severity,
        "condition": msg.condition,
        "summary": msg.summary,
        "cluster": { "id": msg.cluster, "name": msg.cluster_name },
        "project": msg.project,
        "affected": msg.affected,
        "since": msg.since,
        "description": msg.description,
        "url": msg.url,
    })
}

/// The `X-Drover-Signature` header's value for `body`:
/// `sha256=` and the lowercase hex HMAC-SHA256 of the body's bytes, keyed
/// with the webhook's secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Slack's escaping of `&`, `<` and `>` in message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The objects affected as a short list: at most `max` of them, then how
/// many more.
fn affected_words(affected: &[String], max: usize) -> String {
    let mut words = affected
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if affected.len() > max {
        words.push_str(&format!(" and {} more", affected.len() - max));
    }
    words
}

/// The one-line text of a Slack message:
/// `[FIRING] warning: SUMMARY — cluster prod (c-abcde), since TIME. <URL>`
/// (`, project p-xxxxx` after the cluster for a project's rule; no
/// cluster or link when the message has none).
pub fn slack_text(msg: &Message) -> String {
    let mut text = format!(
        "[{}] {}: {}",
        tag(msg.state),
        slack_escape(&msg.severity),
        slack_escape(&one_line(&msg.summary)),
    );
    if !msg.cluster.is_empty() {
        text.push_str(&format!(" — cluster {}", slack_escape(&cluster_words(msg))));
    }
    if let Some(p) = &msg.project {
        text.push_str(&format!(", project {}", slack_escape(p)));
    }
    text.push_str(&format!(", since {}.", msg.since));
    if !msg.url.is_empty() {
        text.push_str(&format!(" <{}>", msg.url));
    }
    text
}

/// A Slack incoming webhook's JSON: the text, and one attachment coloured
/// by state and severity (`danger` for critical and warning alerts
/// firing, blue for info, `good` when resolved) with the details.
pub fn slack(msg: &Message, channel: Option<&str>) -> Value {
    let text = slack_text(msg);
    let color = match (msg.state, msg.severity.as_str()) {
        (State::Resolved, _) => "good",
        (State::Firing, "info") => "#439FE0",
        (State::Firing, _) => "danger",
    };
    let field = |title: &str, value: String, short: bool| json!({ "title": title, "value": slack_escape(&value), "short": short });
    let mut fields = vec![
        field("Rule", format!("{}/{}", msg.rule_namespace, msg.rule), true),
        field("Condition", msg.condition.clone(), true),
    ];
    if !msg.cluster.is_empty() {
        fields.push(field("Cluster", cluster_words(msg), true));
    }
    if let Some(p) = &msg.project {
        fields.push(field("Project", p.clone(), true));
    }
    if !msg.affected.is_empty() {
        fields.push(field("Affected", affected_words(&msg.affected, 10), false));
    }
    let mut attachment = json!({
        "color": color,
        "fallback": text,
        "fields": fields,
        "footer": "Drover",
    });
    if let Some(d) = &msg.description {
        attachment["text"] = Value::String(slack_escape(d));
    }
    let mut body = json!({ "text": text, "attachments": [attachment] });
    if let Some(c) = channel.filter(|c| !c.is_empty()) {
        body["channel"] = Value::String(c.to_owned());
    }
    body
}

/// PagerDuty's severity for a rule's: `critical`, `warning` and `info` as
/// they are, anything else `warning`.
fn pagerduty_severity(severity: &str) -> &'static str {
    match severity {
        "critical" => "critical",
        "info" => "info",
        "error" => "error",
        _ => "warning",
    }
}

/// A PagerDuty Events API v2 event: `trigger` when firing, `resolve` when
/// resolved, deduplicated by [`group_key`].
pub fn pagerduty(msg: &Message, routing_key: &str) -> Value {
    let action = match msg.state {
        State::Firing => "trigger",
        State::Resolved => "resolve",
    };
    let component = msg
        .affected
        .first()
        .cloned()
        .unwrap_or_else(|| default_object(msg));
    let source = [&msg.cluster_name, &msg.cluster]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("drover", String::as_str);
    let mut payload = json!({
        // PagerDuty takes at most 1024 characters.
        "summary": at_most(&one_line(&msg.summary), 1024),
        "source": source,
        "severity": pagerduty_severity(&msg.severity),
        "timestamp": msg.since,
        "component": component,
        "class": msg.condition,
        "custom_details": {
            "rule": msg.rule,
            "namespace": msg.rule_namespace,
            "cluster": msg.cluster,
            "clusterName": msg.cluster_name,
            "project": msg.project,
            "affected": msg.affected,
            "description": msg.description,
        },
    });
    if let Some(p) = &msg.project {
        payload["group"] = Value::String(p.clone());
    }
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": group_key(msg),
        "payload": payload,
        "client": "Drover",
    });
    if !msg.url.is_empty() {
        event["client_url"] = Value::String(msg.url.clone());
        event["links"] = json!([{ "href": msg.url, "text": "Drover" }]);
    }
    event
}

/// The first 16 hex digits of the SHA-256 of the labels, each name and
/// value followed by a 0xff byte, in name order.
fn fingerprint(labels: &BTreeMap<&str, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    let mut hex = hex::encode(h.finalize());
    hex.truncate(16);
    hex
}

/// Alertmanager's webhook payload (version 4), as a `webhook_config`
/// receiver takes it: one alert per affected object (one for the cluster
/// when none is named), all in one group keyed by [`group_key`].
/// `receiver` is the Notifier's name; `now` (RFC 3339) is a resolved
/// alert's `endsAt` — a firing one's is the zero time.
pub fn alertmanager(receiver: &str, msg: &Message, now: &str) -> Value {
    let status = msg.state.as_str();
    let ends_at = match msg.state {
        State::Firing => "0001-01-01T00:00:00Z",
        State::Resolved => now,
    };
    let objects = if msg.affected.is_empty() {
        vec![default_object(msg)]
    } else {
        msg.affected.clone()
    };
    let mut annotations = Map::new();
    annotations.insert("summary".into(), Value::String(msg.summary.clone()));
    if let Some(d) = &msg.description {
        annotations.insert("description".into(), Value::String(d.clone()));
    }
    let label_sets: Vec<BTreeMap<&str, String>> = objects
        .into_iter()
        .map(|object| {
            let mut labels = BTreeMap::from([
                ("alertname", msg.rule.clone()),
                ("severity", msg.severity.clone()),
                ("cluster", msg.cluster.clone()),
                ("object", object),
                ("condition", msg.condition.clone()),
            ]);
            if let Some(p) = &msg.project {
                labels.insert("project", p.clone());
            }
            labels
        })
        .collect();
    // The labels every alert has with the same value.
    let mut common = label_sets[0].clone();
    for labels in &label_sets[1..] {
        common.retain(|k, v| labels.get(k) == Some(v));
    }
    let alerts: Vec<Value> = label_sets
        .iter()
        .map(|labels| {
            json!({
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": msg.since,
                "endsAt": ends_at,
                "generatorURL": msg.url,
                "fingerprint": fingerprint(labels),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": group_key(msg),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": { "alertname": msg.rule },
        "commonLabels": common,
        "commonAnnotations": annotations,
        "externalURL": msg.url,
        "alerts": alerts,
    })
}

/// An email's subject: `[FIRING] warning: SUMMARY` or `[RESOLVED] …`.
pub fn email_subject(msg: &Message) -> String {
    at_most(
        &format!(
            "[{}] {}: {}",
            tag(msg.state),
            msg.severity,
            one_line(&msg.summary)
        ),
        250,
    )
}

/// An email's plain-text body: what, where (cluster, project, affected
/// objects), since when, how severe, the rule's description and a link.
pub fn email_body(msg: &Message) -> String {
    let mut b = String::new();
    let what = match msg.state {
        State::Firing => "Firing",
        State::Resolved => "Resolved",
    };
    b.push_str(&format!("{what}: {}\n\n", one_line(&msg.summary)));
    b.push_str(&format!(
        "Rule:       {} in {} ({})\n",
        msg.rule, msg.rule_namespace, msg.condition
    ));
    b.push_str(&format!("Severity:   {}\n", msg.severity));
    if !msg.cluster.is_empty() {
        b.push_str(&format!("Cluster:    {}\n", cluster_words(msg)));
    }
    if let Some(p) = &msg.project {
        b.push_str(&format!("Project:    {p}\n"));
    }
    let since = match msg.state {
        State::Firing => "Since:     ",
        State::Resolved => "Resolved:  ",
    };
    b.push_str(&format!("{since} {}\n", msg.since));
    if !msg.affected.is_empty() {
        b.push_str("\nAffected:\n");
        for a in &msg.affected {
            b.push_str(&format!("  - {a}\n"));
        }
    }
    if let Some(d) = &msg.description {
        b.push_str(&format!("\n{d}\n"));
    }
    if !msg.url.is_empty() {
        b.push_str(&format!("\nOpen in Drover: {}\n", msg.url));
    }
    b.push_str(&format!(
        "\n-- \nSent by Drover for the alert rule {} in {}.\n",
        msg.rule, msg.rule_namespace
    ));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::notify::sample as message;

    #[test]
    fn webhook_shape() {
        let mut m = message(State::Firing);
        m.project = Some("p-xyz12".into());
        assert_eq!(
            webhook(&m),
            json!({
                "version": "1",
                "status": "firing",
                "rule": { "name": "agent-down", "namespace": "c-abcde" },
                "severity": "critical",
                "condition": "clusterDisconnected",
                "summary": "cluster prod (c-abcde) disconnected for 12s",
                "cluster": { "id": "c-abcde", "name": "prod" },
                "project": "p-xyz12",
                "affected": ["cluster/c-abcde"],
                "since": "2026-01-02T03:04:05Z",
                "description": "Page the platform team.",
                "url": "https://drover.example.com/dashboard/c/c-abcde/alerts/agent-down",
            })
        );
        let resolved = webhook(&Message {
            description: None,
            ..message(State::Resolved)
        });
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["project"], Value::Null);
        assert_eq!(resolved["description"], Value::Null);
    }

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // And as a receiver would check it, on a real body.
        let body = serde_json::to_vec(&webhook(&message(State::Firing))).unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"s3cret").unwrap();
        mac.update(&body);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(signature("s3cret", &body), format!("sha256={expected}"));
    }

    #[test]
    fn slack_shape() {
        let m = message(State::Firing);
        let v = slack(&m, Some("#ops"));
        assert_eq!(
            v["text"],
            "[FIRING] critical: cluster prod (c-abcde) disconnected for 12s — cluster prod (c-abcde), since 2026-01-02T03:04:05Z. <https://drover.example.com/dashboard/c/c-abcde/alerts/agent-down>"
        );
        assert_eq!(v["channel"], "#ops");
        assert_eq!(v["attachments"][0]["color"], "danger");
        assert_eq!(v["attachments"][0]["fallback"], v["text"]);
        assert_eq!(v["attachments"][0]["text"], "Page the platform team.");
        assert_eq!(
            v["attachments"][0]["fields"][0]["value"],
            "c-abcde/agent-down"
        );
        let r = slack(&message(State::Resolved), None);
        assert!(r.get("channel").is_none());
        assert_eq!(r["attachments"][0]["color"], "good");
        assert!(r["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED] critical: "));

        let mut odd = message(State::Firing);
        odd.severity = "info".into();
        odd.summary = "a <b> & c\nsecond line".into();
        odd.project = Some("p-xyz12".into());
        odd.affected = (0..12).map(|i| format!("node/n{i}")).collect();
        let v = slack(&odd, Some(""));
        assert!(v.get("channel").is_none());
        assert_eq!(v["attachments"][0]["color"], "#439FE0");
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("a &lt;b&gt; &amp; c second line"), "{text}");
        assert!(text.contains(", project p-xyz12, since "), "{text}");
        let fields = v["attachments"][0]["fields"].as_array().unwrap();
        let affected = fields.iter().find(|f| f["title"] == "Affected").unwrap();
        assert!(affected["value"]
            .as_str()
            .unwrap()
            .ends_with("node/n9 and 2 more"));
    }

    #[test]
    fn pagerduty_shape() {
        let v = pagerduty(&message(State::Firing), "R0UT1NGKEY");
        assert_eq!(
            v,
            json!({
                "routing_key": "R0UT1NGKEY",
                "event_action": "trigger",
                "dedup_key": "drover/c-abcde/agent-down",
                "payload": {
                    "summary": "cluster prod (c-abcde) disconnected for 12s",
                    "source": "prod",
                    "severity": "critical",
                    "timestamp": "2026-01-02T03:04:05Z",
                    "component": "cluster/c-abcde",
                    "class": "clusterDisconnected",
                    "custom_details": {
                        "rule": "agent-down",
                        "namespace": "c-abcde",
                        "cluster": "c-abcde",
                        "clusterName": "prod",
                        "project": null,
                        "affected": ["cluster/c-abcde"],
                        "description": "Page the platform team.",
                    },
                },
                "client": "Drover",
                "client_url": "https://drover.example.com/dashboard/c/c-abcde/alerts/agent-down",
                "links": [{ "href": "https://drover.example.com/dashboard/c/c-abcde/alerts/agent-down", "text": "Drover" }],
            })
        );
        let mut m = message(State::Resolved);
        m.severity = "bogus".into();
        m.affected.clear();
        m.project = Some("p-xyz12".into());
        let v = pagerduty(&m, "k");
        assert_eq!(v["event_action"], "resolve");
        assert_eq!(v["dedup_key"], "drover/c-abcde/agent-down");
        assert_eq!(v["payload"]["severity"], "warning");
        assert_eq!(v["payload"]["component"], "cluster/c-abcde");
        assert_eq!(v["payload"]["group"], "p-xyz12");
    }

    #[test]
    fn alertmanager_shape() {
        let mut m = message(State::Firing);
        m.rule_namespace = "p-xyz12".into();
        m.project = Some("p-xyz12".into());
        m.condition = "workloadUnavailable".into();
        m.affected = vec!["deployment/web/api".into(), "deployment/web/db".into()];
        let v = alertmanager("ops-am", &m, "2026-01-02T04:00:00Z");
        assert_eq!(v["version"], "4");
        assert_eq!(v["groupKey"], "drover/p-xyz12/agent-down");
        assert_eq!(v["truncatedAlerts"], 0);
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "ops-am");
        assert_eq!(v["groupLabels"], json!({ "alertname": "agent-down" }));
        assert_eq!(
            v["commonLabels"],
            json!({
                "alertname": "agent-down",
                "severity": "critical",
                "cluster": "c-abcde",
                "project": "p-xyz12",
                "condition": "workloadUnavailable",
            })
        );
        assert_eq!(
            v["commonAnnotations"],
            json!({
                "summary": "cluster prod (c-abcde) disconnected for 12s",
                "description": "Page the platform team.",
            })
        );
        assert_eq!(v["externalURL"], m.url);
        let alerts = v["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        let a = &alerts[0];
        assert_eq!(a["status"], "firing");
        assert_eq!(a["labels"]["object"], "deployment/web/api");
        assert_eq!(a["labels"]["alertname"], "agent-down");
        assert_eq!(a["startsAt"], "2026-01-02T03:04:05Z");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["generatorURL"], m.url);
        let fp = a["fingerprint"].as_str().unwrap();
        assert_eq!(fp.len(), 16);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fp, alerts[1]["fingerprint"].as_str().unwrap());
        // Stable: the same labels, the same fingerprint.
        assert_eq!(
            alertmanager("x", &m, "now")["alerts"][0]["fingerprint"],
            a["fingerprint"]
        );

        let mut r = message(State::Resolved);
        r.affected.clear();
        r.description = None;
        let v = alertmanager("ops-am", &r, "2026-01-02T04:00:00Z");
        assert_eq!(v["status"], "resolved");
        let alerts = v["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0]["labels"]["object"], "cluster/c-abcde");
        assert!(alerts[0]["labels"].get("project").is_none());
        assert_eq!(alerts[0]["endsAt"], "2026-01-02T04:00:00Z");
        assert_eq!(v["commonLabels"]["object"], "cluster/c-abcde");
        assert!(v["commonAnnotations"].get("description").is_none());
    }

    #[test]
    fn test_messages_name_no_cluster_and_no_link() {
        let m = Message::test("ops", "admin");
        let text = slack_text(&m);
        assert!(text.starts_with("[FIRING] info: "), "{text}");
        assert!(!text.contains("cluster") && !text.contains('<'), "{text}");
        assert!(text.contains("ops") && text.contains("admin"), "{text}");
        let pd = pagerduty(&m, "k");
        assert_eq!(pd["payload"]["source"], "drover");
        assert_eq!(pd["payload"]["component"], "drover");
        assert!(pd.get("links").is_none());
        let am = alertmanager("ops", &m, "now");
        assert_eq!(am["alerts"][0]["labels"]["object"], "drover");
        let body = email_body(&m);
        assert!(
            !body.contains("Cluster:") && !body.contains("Open in Drover"),
            "{body}"
        );
        assert_eq!(webhook(&m)["status"], "firing");
    }

    #[test]
    fn email_shape() {
        let mut m = message(State::Firing);
        m.project = Some("p-xyz12".into());
        m.affected = vec!["node/n1".into(), "node/n2".into()];
        assert_eq!(
            email_subject(&m),
            "[FIRING] critical: cluster prod (c-abcde) disconnected for 12s"
        );
        let body = email_body(&m);
        for line in [
            "Firing: cluster prod (c-abcde) disconnected for 12s",
            "Rule:       agent-down in c-abcde (clusterDisconnected)",
            "Severity:   critical",
            "Cluster:    prod (c-abcde)",
            "Project:    p-xyz12",
            "Since:      2026-01-02T03:04:05Z",
            "  - node/n1",
            "  - node/n2",
            "Page the platform team.",
            "Open in Drover: https://drover.example.com/dashboard/c/c-abcde/alerts/agent-down",
        ] {
            assert!(body.lines().any(|l| l == line), "{line:?} in\n{body}");
        }
        let r = message(State::Resolved);
        assert!(email_subject(&r).starts_with("[RESOLVED] critical: "));
        assert!(email_body(&r).contains("\nResolved:   2026-01-02T03:04:05Z\n"));
        let mut long = message(State::Firing);
        long.summary = "x".repeat(400) + "\nBcc: someone@example.com";
        let s = email_subject(&long);
        assert!(s.chars().count() <= 250 && !s.contains('\n'));
    }
}
