//! Mail over SMTP (lettre, rustls with ring): the host is resolved under
//! the outbound rule first and the connection made to the address found,
//! so a name cannot be re-resolved to an internal one in between; TLS
//! checks the certificate against the configured host name and the
//! system's roots.

use std::net::SocketAddr;

use drover_core::api::{EmailNotifier, SmtpTls};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::sender::ATTEMPT_TIMEOUT;
use super::{payload, DeliveryError, Message};

/// The port: the configured one, or 587 (STARTTLS), 465 (TLS), 25 (none).
fn port(spec: &EmailNotifier) -> u16 {
    spec.port.unwrap_or(match spec.tls {
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    })
}

/// The host without IPv6 brackets, or a configuration error when empty.
fn host(spec: &EmailNotifier) -> Result<&str, DeliveryError> {
    let host = spec
        .host
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(DeliveryError::Config("email: no SMTP host".into()));
    }
    Ok(host)
}

fn mailbox(what: &str, address: &str) -> Result<Mailbox, DeliveryError> {
    address
        .parse()
        .map_err(|e| DeliveryError::Config(format!("email: the {what} address {address:?}: {e}")))
}

/// The mail for `msg`: from, to, subject, plain text.
fn mail(spec: &EmailNotifier, msg: &Message) -> Result<lettre::Message, DeliveryError> {
    if spec.to.is_empty() {
        return Err(DeliveryError::Config("email: no recipients".into()));
    }
    let mut builder = lettre::Message::builder()
        .from(mailbox("from", &spec.from)?)
        .subject(payload::email_subject(msg))
        .header(ContentType::TEXT_PLAIN);
    for to in &spec.to {
        builder = builder.to(mailbox("to", to)?);
    }
    builder
        .body(payload::email_body(msg))
        .map_err(|e| DeliveryError::Config(format!("email: {e}")))
}

/// Check an email notifier as it is accepted: its addresses parse and its
/// host resolves to addresses the outbound rule allows.
pub(super) async fn check(spec: &EmailNotifier, allow_private: bool) -> Result<(), DeliveryError> {
    mailbox("from", &spec.from)?;
    if spec.to.is_empty() {
        return Err(DeliveryError::Config("email: no recipients".into()));
    }
    for to in &spec.to {
        mailbox("to", to)?;
    }
    drover_net::outbound::resolve(host(spec)?, port(spec), allow_private).await?;
    Ok(())
}

fn smtp(e: &lettre::transport::smtp::Error) -> DeliveryError {
    DeliveryError::Smtp {
        message: e.to_string(),
        permanent: e.is_permanent(),
    }
}

/// Send `msg` by mail: one connection to each address the host resolved
/// to, in turn, until one takes it or answers with an SMTP error.
pub(super) async fn send(
    spec: &EmailNotifier,
    password: Option<&str>,
    msg: &Message,
    allow_private: bool,
) -> Result<(), DeliveryError> {
    let mail = mail(spec, msg)?;
    let host = host(spec)?;
    let port = port(spec);
    let credentials = match (&spec.username, password) {
        (None, _) => None,
        (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.to_owned())),
        (Some(_), None) => {
            return Err(DeliveryError::Config(
                "email: a username is set but no password is recorded".into(),
            ))
        }
    };
    let tls_for = |host: &str| {
        TlsParameters::new(host.to_owned())
            .map_err(|e| DeliveryError::Config(format!("email: TLS for {host}: {e}")))
    };
    let tls = match spec.tls {
        SmtpTls::Starttls => Tls::Required(tls_for(host)?),
        SmtpTls::Tls => Tls::Wrapper(tls_for(host)?),
        SmtpTls::None => Tls::None,
    };
    let addrs: Vec<SocketAddr> = drover_net::outbound::resolve(host, port, allow_private).await?;
    let mut last = None;
    for addr in addrs {
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
                .port(port)
                .tls(tls.clone())
                .timeout(Some(ATTEMPT_TIMEOUT));
        if let Some(credentials) = &credentials {
            builder = builder.credentials(credentials.clone());
        }
        match builder.build().send(mail.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                // The server answered: another of its addresses would too.
                let answered = e.is_permanent() || e.is_transient() || e.is_response();
                last = Some(smtp(&e));
                if answered {
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| DeliveryError::Config(format!("email: {host} has no address"))))
}

#[cfg(test)]
mod tests {
    use drover_core::api::NotifierSpec;
    use drover_net::outbound::OutboundError;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::notify::{sample, Counters, Secrets, Sender, State};

    /// A minimal SMTP server on loopback that takes one mail and returns
    /// the commands and the data it was given.
    async fn smtp_server(
        reject_rcpt: bool,
    ) -> (u16, tokio::task::JoinHandle<(Vec<String>, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (read, mut write) = sock.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut commands = Vec::new();
            let mut data = String::new();
            write.write_all(b"220 test ESMTP\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                commands.push(line.clone());
                let answer: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 test\r\n",
                    "RCPT" if reject_rcpt => b"550 5.1.1 no such user\r\n",
                    "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                    "DATA" => {
                        write.write_all(b"354 go on\r\n").await.unwrap();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        b"250 queued\r\n"
                    }
                    "QUIT" => {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    }
                    _ => b"502 no\r\n",
                };
                if write.write_all(answer).await.is_err() {
                    break;
                }
            }
            (commands, data)
        });
        (port, task)
    }

    fn email(port: u16) -> NotifierSpec {
        NotifierSpec {
            email: Some(EmailNotifier {
                host: "127.0.0.1".into(),
                port: Some(port),
                tls: SmtpTls::None,
                username: None,
                password: None,
                from: "Drover <drover@example.com>".into(),
                to: vec!["ops@example.com".into(), "oncall@example.com".into()],
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn mail_is_sent_to_the_resolved_address() {
        let (port, server) = smtp_server(false).await;
        let mut msg = sample(State::Firing);
        msg.affected = vec!["node/n1".into()];
        Sender::new(true, Counters::new())
            .send_once("mail", &email(port), &Secrets::default(), &msg)
            .await
            .unwrap();
        let (commands, data) = server.await.unwrap();
        assert!(
            commands
                .iter()
                .any(|c| c.starts_with("MAIL FROM:<drover@example.com>")),
            "{commands:?}"
        );
        assert!(
            commands.iter().any(|c| c == "RCPT TO:<ops@example.com>"),
            "{commands:?}"
        );
        assert!(
            commands.iter().any(|c| c == "RCPT TO:<oncall@example.com>"),
            "{commands:?}"
        );
        assert!(
            data.contains(
                "Subject: [FIRING] critical: cluster prod (c-abcde) disconnected for 12s"
            ),
            "{data}"
        );
        assert!(
            data.contains("Firing: cluster prod (c-abcde) disconnected for 12s"),
            "{data}"
        );
        assert!(data.contains("  - node/n1"), "{data}");
    }

    #[tokio::test]
    async fn refusals_are_permanent_smtp_errors() {
        let (port, server) = smtp_server(true).await;
        let e = Sender::new(true, Counters::new())
            .send_once(
                "mail",
                &email(port),
                &Secrets::default(),
                &sample(State::Firing),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                DeliveryError::Smtp {
                    permanent: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("SMTP: "), "{e}");
        server.abort();
    }

    #[tokio::test]
    async fn internal_smtp_hosts_are_refused() {
        let s = Sender::new(false, Counters::new());
        for host in ["127.0.0.1", "localhost", "[::1]", "10.0.0.1"] {
            let mut spec = email(2525);
            spec.email.as_mut().unwrap().host = host.into();
            let e = s
                .send_once("mail", &spec, &Secrets::default(), &sample(State::Firing))
                .await
                .unwrap_err();
            assert!(
                matches!(e, DeliveryError::Refused(OutboundError::Internal(_))),
                "{host}: {e:?}"
            );
            assert!(check(spec.email.as_ref().unwrap(), false).await.is_err());
        }
    }

    #[tokio::test]
    async fn bad_settings_are_configuration_errors() {
        let s = Sender::new(true, Counters::new());
        let msg = sample(State::Firing);
        let secrets = Secrets {
            email_password: Some("P4SSW0RD".into()),
            ..Default::default()
        };
        let mut cases = Vec::new();
        let mut spec = email(2525);
        spec.email.as_mut().unwrap().to.clear();
        cases.push(spec);
        let mut spec = email(2525);
        spec.email.as_mut().unwrap().from = "not an address".into();
        cases.push(spec);
        let mut spec = email(2525);
        spec.email.as_mut().unwrap().host = String::new();
        cases.push(spec);
        for spec in cases {
            let e = s
                .send_once("mail", &spec, &secrets, &msg)
                .await
                .unwrap_err();
            assert!(matches!(e, DeliveryError::Config(_)), "{e:?}");
            assert!(!e.to_string().contains("P4SSW0RD"));
        }
        // A username without a recorded password.
        let mut spec = email(2525);
        spec.email.as_mut().unwrap().username = Some("drover".into());
        let e = s
            .send_once("mail", &spec, &Secrets::default(), &msg)
            .await
            .unwrap_err();
        assert!(matches!(e, DeliveryError::Config(_)), "{e:?}");
    }

    #[test]
    fn default_ports() {
        let mut e = EmailNotifier::default();
        assert_eq!(port(&e), 587);
        e.tls = SmtpTls::Tls;
        assert_eq!(port(&e), 465);
        e.tls = SmtpTls::None;
        assert_eq!(port(&e), 25);
        e.port = Some(2525);
        assert_eq!(port(&e), 2525);
    }
}
