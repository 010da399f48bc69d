//! The CLI's HTTP client for one server: TLS as the entry says, the token
//! as bearer, and every failure turned into an error a person can act on.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::config::ServerEntry;
use crate::CliError;

/// The management API's path prefix.
pub const MGMT: &str = "/apis/management.drover.io/v1";

/// Talks to one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `https://host:port`, no trailing slash.
    pub url: String,
    token: Option<String>,
    /// Whether the server's CA was saved at login (a refusal then means it
    /// changed).
    saved_ca: bool,
}

/// A reqwest client trusting `ca_pem`, the public roots, or anything.
pub fn http(ca_pem: Option<&str>, insecure: bool) -> Result<reqwest::Client, CliError> {
    let tls = drover_net::client::client_config(ca_pem, insecure).map_err(CliError::Config)?;
    let mut tls = tls;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("drover-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CliError::Config(format!("cannot make an HTTP client: {e}")))
}

/// Whether a request failed because the server's certificate is not
/// trusted.
pub fn is_untrusted(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return matches!(inner, rustls::Error::InvalidCertificate(_));
        }
        // Layers between reqwest and rustls may hide the type; rustls's
        // wording of a certificate refusal does not change.
        if err.to_string().contains("invalid peer certificate") {
            return true;
        }
        source = err.source();
    }
    false
}

/// Why a request did not reach the server.
pub fn transport_error(url: &str, e: reqwest::Error) -> CliError {
    if is_untrusted(&e) {
        return CliError::Untrusted {
            url: url.to_owned(),
            fingerprint: None,
        };
    }
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    CliError::Unreachable {
        url: url.to_owned(),
        reason,
    }
}

impl Client {
    /// For a logged-in entry.
    pub fn for_entry(entry: &ServerEntry) -> Result<Self, CliError> {
        Ok(Self {
            http: http(entry.ca_data.as_deref(), entry.insecure_skip_tls_verify)?,
            url: entry.url.trim_end_matches('/').to_owned(),
            token: (!entry.token.is_empty()).then(|| entry.token.clone()),
            saved_ca: entry.ca_data.is_some(),
        })
    }

    /// For a server, before logging in.
    pub fn anonymous(url: &str, ca_pem: Option<&str>, insecure: bool) -> Result<Self, CliError> {
        Ok(Self {
            http: http(ca_pem, insecure)?,
            url: url.trim_end_matches('/').to_owned(),
            token: None,
            saved_ca: false,
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> CliError {
        if self.saved_ca && is_untrusted(&e) {
            return CliError::CaChanged {
                url: self.url.clone(),
            };
        }
        transport_error(&self.url, e)
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// Send a request; return the status and the body text.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
        accept: Option<&str>,
    ) -> Result<(StatusCode, String), CliError> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        if let Some((content_type, text)) = body {
            req = req.header("content-type", content_type).body(text);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport_error(e))?;
        Ok((status, text))
    }

    /// A JSON request; any error status becomes a [`CliError`].
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let content_type = if method == Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let (status, text) = self
            .raw(
                method,
                path,
                body.map(|b| (content_type, b.to_string())),
                Some("application/json"),
            )
            .await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        Err(self.refusal(status, &value))
    }

    /// A list as a server-side Table (the columns `kubectl get` shows).
    pub async fn table(&self, path: &str) -> Result<Value, CliError> {
        let (status, text) = self
            .raw(
                Method::GET,
                path,
                None,
                Some("application/json;as=Table;v=v1;g=meta.k8s.io"),
            )
            .await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        Err(self.refusal(status, &value))
    }

    /// `GET`.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.json(Method::GET, path, None).await
    }

    /// `POST`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// `PUT` (replace).
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.json(Method::PUT, path, Some(body)).await
    }

    /// `PATCH` (merge patch).
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.json(Method::PATCH, path, Some(body)).await
    }

    /// `DELETE`.
    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.json(Method::DELETE, path, None).await
    }

    /// The error for a failed answer's status and text.
    pub fn refusal_of(&self, status: StatusCode, text: &str) -> CliError {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()));
        self.refusal(status, &value)
    }

    fn refusal(&self, status: StatusCode, body: &Value) -> CliError {
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                body.as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect()
            });
        match status.as_u16() {
            401 if message.contains("expired") => CliError::Expired {
                url: self.url.clone(),
            },
            401 => CliError::Unauthorized {
                url: self.url.clone(),
                message,
            },
            403 => CliError::Forbidden(message),
            404 => CliError::NotFound(message),
            _ => CliError::Refused {
                status: status.as_u16(),
                message,
            },
        }
    }
}
