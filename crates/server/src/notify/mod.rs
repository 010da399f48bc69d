//! Alert delivery: one [`Message`] — an AlertRule's alert, firing or
//! resolved — sent to one Notifier, and the outcome as a
//! [`Delivery`](drover_core::api::Delivery) for the rule's status.
//!
//! When to send (group wait, group interval, repeat interval) and what a
//! rule found are the alert controller's business; this module formats and
//! delivers, nothing more.
//!
//! - [`payload`]: the body each kind gets — webhook JSON (signed with
//!   HMAC-SHA256 when a secret is recorded), Slack, PagerDuty Events API v2,
//!   Alertmanager's webhook payload (version 4), an email's subject and
//!   text. Pure functions.
//! - [`Sender`]: [`Sender::send_once`] makes one attempt, bounded at 10 s;
//!   [`Sender::deliver`] makes up to four (after about 0, 1, 2 and 4 s, with
//!   jitter; a permanent failure — a bad configuration, a refused
//!   destination, a 4xx answer, an SMTP 5xx — is not retried), counts them
//!   in [`Counters`] and logs failures by the notifier's name.
//! - HTTP goes through one client per [`Sender`]: system roots, no
//!   redirects, every URL checked and every name resolved by
//!   `drover_net::outbound`, so that without `--allow-private-outbound`
//!   nothing reaches loopback, private, link-local or metadata addresses.
//!   Mail (lettre) goes to the address the SMTP host resolved to, checked
//!   the same way, with the host's name for TLS.
//! - [`Secrets`]: a notifier's write-only fields, kept apart from the
//!   object at [`secrets_key`].
//!
//! Secrets never leave in an error, a log line or a metric: errors name
//! a host, not a URL (a Slack webhook's path is its token), and every
//! error's text is scrubbed of the notifier's secrets and its URL's path
//! and query before it is returned.

mod email;
pub mod payload;
mod sender;

use drover_net::outbound::OutboundError;
use serde::{Deserialize, Serialize};

pub use sender::{check_notifier, Counters, DeliveryLabels, NotifierLabels, Sender};

/// PagerDuty's Events API v2 endpoint, where a `pagerduty` notifier without
/// a `url` sends.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// `Delivery::result` of a message delivered.
pub const DELIVERED: &str = "Delivered";
/// `Delivery::result` of a message whose last attempt failed.
pub const FAILED: &str = "Failed";
/// `Delivery::result` of a message still being sent.
pub const SENDING: &str = "Sending";

/// A notifier's write-only secrets, as recorded at
/// `/drover/notifiersecrets/{name}` ([`secrets_key`]).
#[derive(Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Secrets {
    /// A webhook's HMAC key (`webhook.secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// An SMTP password (`email.password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_password: Option<String>,
    /// A PagerDuty routing key (`pagerduty.routingKey`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { [REDACTED] }")
    }
}

impl Secrets {
    /// Take the write-only fields out of a Notifier object (and out of the
    /// object `kubectl apply` keeps in its annotation).
    pub fn take(obj: &mut serde_json::Value) -> Self {
        let mut taken = drover_apiserver::object::take_write_only(
            obj,
            &[
                ("/spec/webhook", "secret"),
                ("/spec/email", "password"),
                ("/spec/pagerduty", "routingKey"),
            ],
        )
        .into_iter();
        Self {
            webhook_secret: taken.next().flatten(),
            email_password: taken.next().flatten(),
            routing_key: taken.next().flatten(),
        }
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.webhook_secret.is_none() && self.email_password.is_none() && self.routing_key.is_none()
    }

    /// The values set, for scrubbing text.
    fn values(&self) -> impl Iterator<Item = &str> {
        [
            &self.webhook_secret,
            &self.email_password,
            &self.routing_key,
        ]
        .into_iter()
        .filter_map(|s| s.as_deref())
        .filter(|s| !s.is_empty())
    }
}

/// Where a notifier's [`Secrets`] are recorded: `/drover/notifiersecrets/{name}`.
pub fn secrets_key(name: &str) -> String {
    format!("/drover/notifiersecrets/{name}")
}

/// Whether an alert is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The condition holds.
    Firing,
    /// It held, and no longer does.
    Resolved,
}

impl State {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// What is delivered: one alert of one rule, firing or resolved.
#[derive(Debug, Clone)]
pub struct Message {
    /// The AlertRule's name.
    pub rule: String,
    /// Its namespace: a cluster's id (`c-xxxxx`) or a project's (`p-xxxxx`).
    pub rule_namespace: String,
    /// Firing or resolved.
    pub state: State,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// The condition's name, e.g. `clusterDisconnected`.
    pub condition: String,
    /// One line of words, e.g. `cluster prod (c-abcde) disconnected for 12s`.
    pub summary: String,
    /// The cluster's id.
    pub cluster: String,
    /// The cluster's display name.
    pub cluster_name: String,
    /// The project's id, for a project's rule.
    pub project: Option<String>,
    /// The objects affected: `node/n1`, `deployment/ns/name`, `cluster/c-abcde`.
    pub affected: Vec<String>,
    /// When the state began (RFC 3339).
    pub since: String,
    /// The rule's description.
    pub description: Option<String>,
    /// A link to the alert in the UI (the server's URL + `/dashboard/…`).
    pub url: String,
}

impl Message {
    /// The message the notifiers' "send test" action sends: firing, of
    /// severity `info`, about no cluster and no real rule (rule `test`,
    /// namespace `-`), saying which notifier it tests and who asked.
    pub fn test(notifier: &str, user: &str) -> Self {
        Self {
            rule: "test".into(),
            rule_namespace: "-".into(),
            state: State::Firing,
            severity: "info".into(),
            condition: "test".into(),
            summary: format!("a test message to the notifier {notifier}, sent by {user}"),
            cluster: String::new(),
            cluster_name: String::new(),
            project: None,
            affected: Vec::new(),
            since: drover_core::meta::now_rfc3339(),
            description: Some("Sent by the notifiers' test action; no alert rule fired.".into()),
            url: String::new(),
        }
    }
}

/// Why an attempt to deliver failed. The text never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The destination is refused by the outbound rule, or its URL or host
    /// is unusable (it names the host, never the URL).
    #[error("{0}")]
    Refused(#[from] OutboundError),
    /// The receiver answered with a status other than 2xx.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// At most 200 characters of the answer's body, on one line.
        body: String,
    },
    /// The request could not be made or answered (connect, TLS, timeout).
    #[error("{0}")]
    Transport(String),
    /// The SMTP exchange failed.
    #[error("SMTP: {message}")]
    Smtp {
        /// What failed, with the server's answer if any.
        message: String,
        /// Whether the server refused for good (a 5xx answer).
        permanent: bool,
    },
    /// The notifier's settings cannot work (no kind, two kinds, no routing
    /// key, a bad address).
    #[error("{0}")]
    Config(String),
}

/// How much of a refusal's body an error keeps.
const BODY_CHARS: usize = 200;

impl DeliveryError {
    /// Whether trying again cannot help: bad settings, a refused
    /// destination, a 4xx answer other than 408 and 429, an SMTP 5xx.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Refused(e) => !matches!(e, OutboundError::Unresolved(_)),
            Self::Status { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            Self::Transport(_) => false,
            Self::Smtp { permanent, .. } => *permanent,
            Self::Config(_) => true,
        }
    }

    /// The error with every secret and every `hidden` text replaced by
    /// `[REDACTED]`, and a refusal's body cut to [`BODY_CHARS`] characters
    /// on one line.
    fn scrub(self, secrets: &Secrets, hidden: &[String]) -> Self {
        let clean = |text: String| {
            let mut text = text;
            for s in secrets.values().chain(hidden.iter().map(String::as_str)) {
                if !s.is_empty() && text.contains(s) {
                    text = text.replace(s, "[REDACTED]");
                }
            }
            text
        };
        match self {
            Self::Refused(e) => Self::Refused(e),
            Self::Status { status, body } => {
                let line = clean(body).split_whitespace().collect::<Vec<_>>().join(" ");
                let mut body: String = line.chars().take(BODY_CHARS).collect();
                if line.chars().count() > BODY_CHARS {
                    body.push('…');
                }
                Self::Status { status, body }
            }
            Self::Transport(m) => Self::Transport(clean(m)),
            Self::Smtp { message, permanent } => Self::Smtp {
                message: clean(message),
                permanent,
            },
            Self::Config(m) => Self::Config(clean(m)),
        }
    }
}

/// A message for tests.
#[cfg(test)]
fn sample(state: State) -> Message {
    Message {
        rule: "agent-down".into(),
        rule_namespace: "c-abcde".into(),
        state,
        severity: "critical".into(),
        condition: "clusterDisconnected".into(),
        summary: "cluster prod (c-abcde) disconnected for 12s".into(),
        cluster: "c-abcde".into(),
        cluster_name: "prod".into(),
        project: None,
        affected: vec!["cluster/c-abcde".into()],
        since: "2026-01-02T03:04:05Z".into(),
        description: Some("Page the platform team.".into()),
        url: "https://drover.example.com/dashboard/c/c-abcde/alerts/agent-down".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kept_apart_and_never_printed() {
        let mut spec = serde_json::json!({"spec": {"webhook": {
            "url": "https://hooks.example.com/x", "secret": "hmac-key"}}});
        let secrets = Secrets::take(&mut spec);
        assert_eq!(spec["spec"]["webhook"].get("secret"), None);
        assert_eq!(secrets.webhook_secret.as_deref(), Some("hmac-key"));
        assert!(!secrets.is_empty());
        assert_eq!(format!("{secrets:?}"), "Secrets { [REDACTED] }");
        assert_eq!(
            serde_json::to_value(&secrets).unwrap(),
            serde_json::json!({ "webhookSecret": "hmac-key" })
        );
        let back: Secrets = serde_json::from_str(r#"{"routingKey":"rk"}"#).unwrap();
        assert_eq!(back.routing_key.as_deref(), Some("rk"));
        assert!(Secrets::default().is_empty());

        let mut spec = serde_json::json!({"spec": {
            "email": {"password": "pw"},
            "pagerduty": {"routingKey": "rk"}}});
        let s = Secrets::take(&mut spec);
        assert_eq!(s.email_password.as_deref(), Some("pw"));
        assert_eq!(s.routing_key.as_deref(), Some("rk"));
        assert!(spec["spec"]["email"].get("password").is_none());
        assert!(spec["spec"]["pagerduty"].get("routingKey").is_none());
        assert_eq!(secrets_key("ops"), "/drover/notifiersecrets/ops");
    }

    #[test]
    fn error_texts_hold_no_secret() {
        let secrets = Secrets {
            webhook_secret: Some("HMAC-S3CRET".into()),
            email_password: Some("P4SSW0RD".into()),
            routing_key: Some("R0UT1NGKEY0123456789".into()),
        };
        let hidden = vec!["/services/T0/B0/T0K3N".to_owned(), "token=Q".to_owned()];
        let echo = format!(
            "bad request {} {} {} {} {}",
            "R0UT1NGKEY0123456789",
            "P4SSW0RD",
            "HMAC-S3CRET",
            "https://hooks.slack.com/services/T0/B0/T0K3N",
            "x".repeat(500)
        );
        let errors = [
            DeliveryError::Status {
                status: 400,
                body: echo.clone(),
            },
            DeliveryError::Transport(echo.clone()),
            DeliveryError::Smtp {
                message: echo.clone(),
                permanent: true,
            },
            DeliveryError::Config(echo),
            DeliveryError::Refused(OutboundError::Internal("10.0.0.1".into())),
        ];
        for e in errors {
            let text = e.scrub(&secrets, &hidden).to_string();
            for s in ["R0UT1NGKEY", "P4SSW0RD", "HMAC-S3CRET", "T0K3N"] {
                assert!(!text.contains(s), "{s} in {text}");
            }
        }
        let e = DeliveryError::Status {
            status: 502,
            body: format!("line one\nline two {}", "y".repeat(300)),
        }
        .scrub(&Secrets::default(), &[]);
        let DeliveryError::Status { body, .. } = &e else {
            unreachable!()
        };
        assert!(body.starts_with("line one line two y"));
        assert_eq!(body.chars().count(), BODY_CHARS + 1);
        assert!(e.to_string().starts_with("HTTP 502: line one"));
    }

    #[test]
    fn permanence() {
        let status = |status| DeliveryError::Status {
            status,
            body: String::new(),
        };
        assert!(status(400).is_permanent());
        assert!(status(404).is_permanent());
        assert!(!status(429).is_permanent());
        assert!(!status(408).is_permanent());
        assert!(!status(500).is_permanent());
        assert!(!status(503).is_permanent());
        assert!(DeliveryError::Config("x".into()).is_permanent());
        assert!(DeliveryError::Refused(OutboundError::Internal("h".into())).is_permanent());
        assert!(!DeliveryError::Refused(OutboundError::Unresolved("h".into())).is_permanent());
        assert!(!DeliveryError::Transport("x".into()).is_permanent());
    }
}
