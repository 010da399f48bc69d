//! The [`Sender`]: one attempt at a time through one HTTP client (or SMTP),
//! retries with backoff, and the delivery [`Counters`].

use std::sync::Arc;
use std::time::Duration;

use drover_core::api::{
    AlertmanagerNotifier, Delivery, EmailNotifier, NotifierSpec, PagerDutyNotifier, SlackNotifier,
    WebhookNotifier,
};
use drover_net::outbound::{self, OutboundError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rand::Rng;

use super::{email, payload, DeliveryError, Message, Secrets, DELIVERED, FAILED};

/// The bound on one attempt, from resolving the name to the answer.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per message.
const ATTEMPTS: u32 = 4;
/// How much of a refusal's body is read (an error keeps less).
const BODY_READ: usize = 4096;

/// The labels of `notifier_deliveries`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The Notifier's name.
    pub notifier: String,
    /// `delivered` or `failed`.
    pub result: String,
}

/// The labels of `notifier_attempt_failures`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifierLabels {
    /// The Notifier's name.
    pub notifier: String,
}

/// Delivery counters, shared by every clone: messages delivered or finally
/// failed (`notifier_deliveries`), and failed attempts
/// (`notifier_attempt_failures`), by notifier.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    deliveries: Family<DeliveryLabels, Counter>,
    attempt_failures: Family<NotifierLabels, Counter>,
}

impl Counters {
    /// Counters at zero, registered nowhere yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register both in `registry` (with the server's `drover` prefix:
    /// `drover_notifier_deliveries_total{notifier,result}` and
    /// `drover_notifier_attempt_failures_total{notifier}`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "notifier_deliveries",
            "Alert messages a notifier was sent, by result: delivered, or failed after the last attempt",
            self.deliveries.clone(),
        );
        registry.register(
            "notifier_attempt_failures",
            "Failed attempts to deliver an alert message to a notifier",
            self.attempt_failures.clone(),
        );
    }

    /// Messages `notifier` had with `result` (`delivered` or `failed`).
    pub fn deliveries(&self, notifier: &str, result: &str) -> u64 {
        self.deliveries
            .get(&DeliveryLabels {
                notifier: notifier.to_owned(),
                result: result.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// Failed attempts to deliver to `notifier`.
    pub fn attempt_failures(&self, notifier: &str) -> u64 {
        self.attempt_failures
            .get(&NotifierLabels {
                notifier: notifier.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// Drop a deleted notifier's series.
    pub fn forget(&self, notifier: &str) {
        for result in ["delivered", "failed"] {
            self.deliveries.remove(&DeliveryLabels {
                notifier: notifier.to_owned(),
                result: result.to_owned(),
            });
        }
        self.attempt_failures.remove(&NotifierLabels {
            notifier: notifier.to_owned(),
        });
    }

    fn count(&self, notifier: &str, result: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                notifier: notifier.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    fn attempt_failed(&self, notifier: &str) {
        self.attempt_failures
            .get_or_create(&NotifierLabels {
                notifier: notifier.to_owned(),
            })
            .inc();
    }
}

/// The one kind a notifier sets.
enum Kind<'a> {
    Webhook(&'a WebhookNotifier),
    Slack(&'a SlackNotifier),
    Email(&'a EmailNotifier),
    PagerDuty(&'a PagerDutyNotifier),
    Alertmanager(&'a AlertmanagerNotifier),
}

const KINDS: &str = "webhook, slack, email, pagerduty, alertmanager";

fn kind(spec: &NotifierSpec) -> Result<Kind<'_>, DeliveryError> {
    let kinds = [
        spec.webhook.as_ref().map(Kind::Webhook),
        spec.slack.as_ref().map(Kind::Slack),
        spec.email.as_ref().map(Kind::Email),
        spec.pagerduty.as_ref().map(Kind::PagerDuty),
        spec.alertmanager.as_ref().map(Kind::Alertmanager),
    ];
    let mut set = kinds.into_iter().flatten();
    match (set.next(), set.next()) {
        (Some(k), None) => Ok(k),
        (None, _) => Err(DeliveryError::Config(format!(
            "the notifier sets none of {KINDS}"
        ))),
        (Some(_), Some(_)) => Err(DeliveryError::Config(format!(
            "the notifier sets more than one of {KINDS}"
        ))),
    }
}

/// The parts of a notifier's URL that may carry a token — its path, query
/// and password — to scrub from error texts.
fn hidden_parts(spec: &NotifierSpec) -> Vec<String> {
    let urls = [
        spec.webhook.as_ref().map(|w| w.url.as_str()),
        spec.slack.as_ref().map(|s| s.url.as_str()),
        spec.pagerduty.as_ref().and_then(|p| p.url.as_deref()),
        spec.alertmanager.as_ref().map(|a| a.url.as_str()),
    ];
    let mut hidden = Vec::new();
    for url in urls.into_iter().flatten() {
        let Ok(u) = url::Url::parse(url) else {
            hidden.push(url.to_owned());
            continue;
        };
        if u.path().len() > 1 {
            hidden.push(u.path().to_owned());
        }
        hidden.extend(u.query().filter(|q| !q.is_empty()).map(str::to_owned));
        hidden.extend(u.password().map(str::to_owned));
    }
    hidden
}

/// The reqwest client for notifiers: the system's roots, no redirects,
/// names resolved under the outbound rule.
fn http_client(allow_private: bool) -> Result<reqwest::Client, String> {
    let tls = drover_net::client::client_config(None, false)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the name itself, past the outbound check.
        .no_proxy()
        .dns_resolver(Arc::new(outbound::Resolver { allow_private }))
        .timeout(ATTEMPT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// A failed request as a [`DeliveryError`]: the outbound rule's refusal if
/// the resolver refused the name, else the error's chain without the URL.
fn transport(e: reqwest::Error) -> DeliveryError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<OutboundError>() {
            return DeliveryError::Refused(refused.clone());
        }
        source = s.source();
    }
    if e.is_timeout() {
        return timed_out();
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    DeliveryError::Transport(text)
}

fn timed_out() -> DeliveryError {
    DeliveryError::Transport(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))
}

/// Sends alert messages to notifiers: one HTTP client (built once), the
/// outbound rule, the counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The client, or why there is none (no system CA certificates).
    http: Result<reqwest::Client, String>,
    allow_private: bool,
    counters: Counters,
    /// The first retry's delay; each next one doubles it.
    backoff: Duration,
}

impl Sender {
    /// A sender that refuses internal destinations unless `allow_private`
    /// (`--allow-private-outbound`), counting in `counters`. Without the
    /// system's CA certificates HTTP notifiers fail, each with that reason.
    pub fn new(allow_private: bool, counters: Counters) -> Self {
        let http = http_client(allow_private);
        if let Err(e) = &http {
            tracing::warn!(error = %e, "alerts to HTTP notifiers will fail: no HTTP client");
        }
        Self {
            http,
            allow_private,
            counters,
            backoff: Duration::from_secs(1),
        }
    }

    /// The counters this sender counts in.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// One attempt to send `msg` to the notifier `name`, bounded at 10 s.
    /// A non-2xx answer is an error naming the status and at most 200
    /// characters of the body. The error's text holds no secret.
    pub async fn send_once(
        &self,
        name: &str,
        spec: &NotifierSpec,
        secrets: &Secrets,
        msg: &Message,
    ) -> Result<(), DeliveryError> {
        let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(name, spec, secrets, msg));
        let result = attempt.await.unwrap_or_else(|_| Err(timed_out()));
        result.map_err(|e| e.scrub(secrets, &hidden_parts(spec)))
    }

    /// Send `msg` to the notifier `name`: up to four attempts, the retries
    /// after about 1, 2 and 4 s (±20 %), none after a permanent failure, so
    /// at most about 50 s in all. Each failed attempt is logged (the
    /// notifier's name and the error, nothing else) and counted, and so is
    /// the outcome.
    pub async fn deliver(
        &self,
        name: &str,
        spec: &NotifierSpec,
        secrets: &Secrets,
        msg: &Message,
    ) -> Delivery {
        let mut attempts = 0;
        let mut error = None;
        while attempts < ATTEMPTS {
            if attempts > 0 {
                tokio::time::sleep(self.delay(attempts)).await;
            }
            attempts += 1;
            match self.send_once(name, spec, secrets, msg).await {
                Ok(()) => {
                    self.counters.count(name, "delivered");
                    tracing::debug!(notifier = %name, attempts, "alert delivered");
                    return Delivery {
                        notifier: name.to_owned(),
                        result: DELIVERED.to_owned(),
                        attempts,
                        error: None,
                    };
                }
                Err(e) => {
                    self.counters.attempt_failed(name);
                    tracing::warn!(notifier = %name, attempt = attempts, error = %e, "alert delivery failed");
                    let permanent = e.is_permanent();
                    error = Some(e.to_string());
                    if permanent {
                        break;
                    }
                }
            }
        }
        self.counters.count(name, "failed");
        Delivery {
            notifier: name.to_owned(),
            result: FAILED.to_owned(),
            attempts,
            error,
        }
    }

    /// The wait before attempt `done + 1`: the backoff doubled `done - 1`
    /// times, ±20 %.
    fn delay(&self, done: u32) -> Duration {
        let base = self.backoff * 2u32.pow(done.saturating_sub(1));
        base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
    }

    async fn attempt(
        &self,
        name: &str,
        spec: &NotifierSpec,
        secrets: &Secrets,
        msg: &Message,
    ) -> Result<(), DeliveryError> {
        match kind(spec)? {
            Kind::Webhook(w) => {
                let body = payload::webhook(msg).to_string().into_bytes();
                let signature = secrets
                    .webhook_secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| payload::signature(s, &body));
                self.post(&w.url, body, signature).await
            }
            Kind::Slack(s) => {
                let body = payload::slack(msg, s.channel.as_deref()).to_string();
                self.post(&s.url, body.into_bytes(), None).await
            }
            Kind::PagerDuty(p) => {
                let key = secrets
                    .routing_key
                    .as_deref()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        DeliveryError::Config("pagerduty: no routing key is recorded".into())
                    })?;
                let url = p
                    .url
                    .as_deref()
                    .filter(|u| !u.is_empty())
                    .unwrap_or(super::PAGERDUTY_EVENTS_URL);
                let body = payload::pagerduty(msg, key).to_string();
                self.post(url, body.into_bytes(), None).await
            }
            Kind::Alertmanager(a) => {
                let now = drover_core::meta::now_rfc3339();
                let body = payload::alertmanager(name, msg, &now).to_string();
                self.post(&a.url, body.into_bytes(), None).await
            }
            Kind::Email(e) => {
                let password = secrets.email_password.as_deref();
                email::send(e, password, msg, self.allow_private).await
            }
        }
    }

    /// POST a JSON body; a 2xx answer is success.
    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> Result<(), DeliveryError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| DeliveryError::Config(format!("no HTTP client: {e}")))?;
        let url = outbound::check_url(url, self.allow_private)?;
        let mut request = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, "drover")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("X-Drover-Signature", signature);
        }
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = Vec::new();
        while body.len() < BODY_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(BODY_READ);
        Err(DeliveryError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Check a notifier as it is created or changed: exactly one kind, and
/// each destination allowed by the outbound rule — URLs parsed, their
/// address literals checked and their names resolved; an SMTP host
/// resolved; mail addresses parsed. A name that does not resolve is
/// [`OutboundError::Unresolved`] inside [`DeliveryError::Refused`]; the
/// caller decides whether to accept it.
pub async fn check_notifier(spec: &NotifierSpec, allow_private: bool) -> Result<(), DeliveryError> {
    match kind(spec)? {
        Kind::Webhook(w) => outbound::check_destination(&w.url, allow_private).await?,
        Kind::Slack(s) => outbound::check_destination(&s.url, allow_private).await?,
        Kind::PagerDuty(p) => {
            let url = p.url.as_deref().unwrap_or(super::PAGERDUTY_EVENTS_URL);
            outbound::check_destination(url, allow_private).await?;
        }
        Kind::Alertmanager(a) => outbound::check_destination(&a.url, allow_private).await?,
        Kind::Email(e) => email::check(e, allow_private).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::notify::{sample, State};

    /// A request the test server received: its head (lowercased) and body.
    struct Received {
        head: String,
        body: Vec<u8>,
    }

    /// An HTTP server on loopback answering each connection in turn with
    /// the next of `answers`, then closing. Returns its base URL.
    async fn serve(answers: Vec<(u16, String)>) -> (String, mpsc::UnboundedReceiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for (status, body) in answers {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let received = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        break Some(Received { head, body });
                    }
                };
                if let Some(r) = received {
                    let _ = tx.send(r);
                }
                let answer = format!(
                    "HTTP/1.1 {status} Answer\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        (format!("http://{addr}"), rx)
    }

    fn sender(allow_private: bool) -> Sender {
        let mut s = Sender::new(allow_private, Counters::new());
        s.backoff = Duration::from_millis(1);
        s
    }

    fn webhook(url: String) -> NotifierSpec {
        NotifierSpec {
            webhook: Some(WebhookNotifier { url, secret: None }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn webhooks_are_posted_and_signed() {
        let (base, mut rx) = serve(vec![(200, "ok".into())]).await;
        let msg = sample(State::Firing);
        let secrets = Secrets {
            webhook_secret: Some("s3cret".into()),
            ..Default::default()
        };
        sender(true)
            .send_once("hook", &webhook(format!("{base}/hook?x=1")), &secrets, &msg)
            .await
            .unwrap();
        let r = rx.recv().await.unwrap();
        assert!(r.head.starts_with("post /hook?x=1 http/1.1"), "{}", r.head);
        assert!(r.head.contains("\r\ncontent-type: application/json"));
        assert!(r.head.contains("\r\nuser-agent: drover"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, payload::webhook(&msg));
        let expected = payload::signature("s3cret", &r.body);
        assert!(
            r.head
                .contains(&format!("\r\nx-drover-signature: {expected}")),
            "{}",
            r.head
        );
        // Without a secret, no signature.
        let (base, mut rx) = serve(vec![(204, String::new())]).await;
        sender(true)
            .send_once("hook", &webhook(base), &Secrets::default(), &msg)
            .await
            .unwrap();
        assert!(!rx.recv().await.unwrap().head.contains("x-drover-signature"));
    }

    #[tokio::test]
    async fn refusals_name_the_status_and_no_secret() {
        let key = "R0UT1NGKEY0123456789abcdef012345";
        let echo = format!(
            "invalid event {{\"routing_key\":\"{key}\"}} {}",
            "x".repeat(400)
        );
        let (base, mut rx) = serve(vec![(400, echo)]).await;
        let spec = NotifierSpec {
            pagerduty: Some(PagerDutyNotifier {
                routing_key: None,
                url: Some(format!("{base}/v2/enqueue")),
            }),
            ..Default::default()
        };
        let secrets = Secrets {
            routing_key: Some(key.into()),
            ..Default::default()
        };
        let msg = sample(State::Firing);
        let e = sender(true)
            .send_once("pd", &spec, &secrets, &msg)
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("HTTP 400: invalid event"), "{text}");
        assert!(!text.contains(key), "{text}");
        assert!(text.chars().count() <= "HTTP 400: ".len() + 201, "{text}");
        assert!(e.is_permanent());
        let sent: serde_json::Value =
            serde_json::from_slice(&rx.recv().await.unwrap().body).unwrap();
        assert_eq!(sent, payload::pagerduty(&msg, key));

        // No routing key recorded: a configuration error, nothing sent.
        let e = sender(true)
            .send_once("pd", &spec, &Secrets::default(), &msg)
            .await
            .unwrap_err();
        assert!(matches!(e, DeliveryError::Config(_)), "{e}");
    }

    #[tokio::test]
    async fn failures_are_retried_then_delivered() {
        let answers = vec![
            (500, "a".into()),
            (503, "b".into()),
            (429, "c".into()),
            (200, String::new()),
        ];
        let (base, _rx) = serve(answers).await;
        let s = sender(true);
        let msg = sample(State::Resolved);
        let d = s
            .deliver("hook", &webhook(base), &Secrets::default(), &msg)
            .await;
        assert_eq!(d.result, DELIVERED);
        assert_eq!(d.attempts, 4);
        assert_eq!(d.error, None);
        assert_eq!(s.counters().attempt_failures("hook"), 3);
        assert_eq!(s.counters().deliveries("hook", "delivered"), 1);
        assert_eq!(s.counters().deliveries("hook", "failed"), 0);

        let (base, _rx) = serve(vec![(502, "down".into()); 4]).await;
        let d = s
            .deliver("hook", &webhook(base), &Secrets::default(), &msg)
            .await;
        assert_eq!(d.result, FAILED);
        assert_eq!(d.attempts, 4);
        assert_eq!(d.error.as_deref(), Some("HTTP 502: down"));
        assert_eq!(s.counters().attempt_failures("hook"), 7);
        assert_eq!(s.counters().deliveries("hook", "failed"), 1);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let (base, _rx) = serve(vec![(404, "no_team".into()), (200, String::new())]).await;
        let s = sender(true);
        let d = s
            .deliver(
                "slack",
                &NotifierSpec {
                    slack: Some(SlackNotifier {
                        url: format!("{base}/services/T0/B0/T0K3N"),
                        channel: None,
                    }),
                    ..Default::default()
                },
                &Secrets::default(),
                &sample(State::Firing),
            )
            .await;
        assert_eq!((d.result.as_str(), d.attempts), (FAILED, 1));
        assert_eq!(d.error.as_deref(), Some("HTTP 404: no_team"));
        assert_eq!(s.counters().deliveries("slack", "failed"), 1);
    }

    #[tokio::test]
    async fn internal_destinations_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = sender(false);
        let msg = sample(State::Firing);
        for url in [
            format!("http://127.0.0.1:{port}/hook?token=T0K3N"),
            format!("http://localhost:{port}/hook?token=T0K3N"),
            format!("http://[::1]:{port}/hook"),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ] {
            let e = s
                .send_once("hook", &webhook(url.clone()), &Secrets::default(), &msg)
                .await
                .unwrap_err();
            assert!(
                matches!(e, DeliveryError::Refused(OutboundError::Internal(_))),
                "{url}: {e:?}"
            );
            assert!(!e.to_string().contains("T0K3N"), "{e}");
        }
        let d = s
            .deliver(
                "hook",
                &webhook(format!("http://10.0.0.1:{port}/")),
                &Secrets::default(),
                &msg,
            )
            .await;
        assert_eq!((d.result.as_str(), d.attempts), (FAILED, 1));
        // Nothing reached the listener.
        let nothing = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        assert!(nothing.is_err());
        // And a transport failure names no URL.
        drop(listener);
        let e = sender(true)
            .send_once(
                "hook",
                &webhook(format!("http://127.0.0.1:{port}/services/T0K3N")),
                &Secrets::default(),
                &msg,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, DeliveryError::Transport(_)), "{e:?}");
        assert!(!e.to_string().contains("T0K3N"), "{e}");
        assert!(!e.is_permanent());
    }

    #[tokio::test]
    async fn notifiers_need_exactly_one_kind() {
        let s = sender(true);
        let msg = sample(State::Firing);
        let none = NotifierSpec::default();
        let two = NotifierSpec {
            slack: Some(SlackNotifier::default()),
            alertmanager: Some(AlertmanagerNotifier::default()),
            ..Default::default()
        };
        for spec in [none, two] {
            let e = s
                .send_once("x", &spec, &Secrets::default(), &msg)
                .await
                .unwrap_err();
            assert!(matches!(e, DeliveryError::Config(_)), "{e}");
            assert!(check_notifier(&spec, true).await.is_err());
        }
    }

    #[tokio::test]
    async fn notifiers_are_checked_as_they_are_accepted() {
        let am = |url: &str| NotifierSpec {
            alertmanager: Some(AlertmanagerNotifier { url: url.into() }),
            ..Default::default()
        };
        assert!(check_notifier(&am("http://localhost:9093/"), false)
            .await
            .is_err());
        assert!(check_notifier(&am("http://10.0.0.1:9093/"), false)
            .await
            .is_err());
        assert!(check_notifier(&am("http://localhost:9093/"), true)
            .await
            .is_ok());
        assert!(check_notifier(&am("ftp://example.com/"), true)
            .await
            .is_err());
    }

    #[test]
    fn counters_are_registered() {
        let counters = Counters::new();
        let mut registry = Registry::with_prefix("drover");
        counters.register(&mut registry);
        counters.count("ops", "delivered");
        counters.attempt_failed("ops");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "drover_notifier_deliveries_total{notifier=\"ops\",result=\"delivered\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("drover_notifier_attempt_failures_total{notifier=\"ops\"} 1"),
            "{text}"
        );
        counters.forget("ops");
        assert_eq!(counters.deliveries("ops", "delivered"), 0);
    }

    #[test]
    fn retries_back_off_exponentially() {
        let s = Sender::new(false, Counters::new());
        for (done, secs) in [(1, 1.0), (2, 2.0), (3, 4.0)] {
            let d = s.delay(done).as_secs_f64();
            assert!((0.8 * secs..=1.2 * secs).contains(&d), "{done}: {d}");
        }
    }
}
