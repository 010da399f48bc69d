//! The flags of `drover server` (DESIGN.md), each also read from the
//! `DROVER_*` environment variable of the same name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `drover server` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Directory for the embedded datastore and other local state.
    #[arg(long, env = "DROVER_DATA_DIR", default_value = "./drover-data")]
    pub data_dir: PathBuf,

    /// Address to serve HTTPS on (plain HTTP with `--tls-mode external`).
    #[arg(long, env = "DROVER_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Datastore: sqlite://PATH (default sqlite://DATA_DIR/state.db) or
    /// postgres://USER:PASSWORD@HOST:PORT/DB (required for several replicas).
    #[arg(long, env = "DROVER_DATASTORE", hide_env_values = true)]
    pub datastore: Option<String>,

    /// The URL agents and kubeconfigs use to reach this server
    /// (default: https://localhost:PORT, or the listen address if specific).
    #[arg(long, env = "DROVER_SERVER_URL", value_parser = parse_server_url)]
    pub server_url: Option<url::Url>,

    /// Where TLS ends: `drover` serves HTTPS itself; `external` serves
    /// plain HTTP for a load balancer or ingress that terminates TLS in
    /// front (needs --trusted-proxies and an https:// --server-url).
    #[arg(long, env = "DROVER_TLS_MODE", value_enum, default_value_t = TlsMode::Drover)]
    pub tls_mode: TlsMode,

    /// Peers (CIDRs, comma-separated) whose X-Forwarded-For and
    /// X-Forwarded-Proto are believed; from anyone else they are ignored.
    #[arg(long, env = "DROVER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Serving certificate chain (PEM) to use instead of the generated one.
    #[arg(long, env = "DROVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "DROVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate (PEM) that issued the certificate clients see —
    /// --tls-cert's, the ACME server's, or the balancer's with
    /// `--tls-mode external` — served at /cacerts and put in kubeconfigs.
    /// Leave out when that certificate chains to a publicly trusted CA.
    #[arg(long, env = "DROVER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Lifetime of the serving certificate Drover issues itself, in
    /// seconds; it is renewed when two thirds of it have passed.
    #[arg(long, env = "DROVER_TLS_VALIDITY_SECONDS", default_value_t = 365 * 86400,
          value_parser = clap::value_parser!(u64).range(20..=10 * 365 * 86400))]
    pub tls_validity_seconds: u64,

    /// Get the serving certificate from an ACME CA for these names
    /// (comma-separated or repeated).
    #[arg(long, env = "DROVER_ACME_DOMAIN", value_delimiter = ',')]
    pub acme_domain: Vec<String>,

    /// Contact email of the ACME account.
    #[arg(long, env = "DROVER_ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// The ACME directory (default Let's Encrypt's).
    #[arg(
        long,
        env = "DROVER_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    pub acme_directory: url::Url,

    /// CA certificate (PEM) to trust for the ACME directory's own HTTPS,
    /// for a private ACME server.
    #[arg(long, env = "DROVER_ACME_CA_BUNDLE")]
    pub acme_ca_bundle: Option<PathBuf>,

    /// Where to answer ACME HTTP-01 challenges (plain HTTP; the CA reaches
    /// it on port 80 of each name, directly or through a balancer).
    #[arg(long, env = "DROVER_ACME_HTTP_LISTEN", default_value = "0.0.0.0:80")]
    pub acme_http_listen: SocketAddr,

    /// Audit level: 0 off, 1 metadata, 2 + request bodies, 3 + response bodies.
    #[arg(long, env = "DROVER_AUDIT_LEVEL", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=3))]
    pub audit_level: u8,

    /// Audit log file (JSON lines; default DATA_DIR/audit.log).
    #[arg(long, env = "DROVER_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// Lifetime of a token made by a login, in seconds (default 16 h).
    #[arg(long, env = "DROVER_LOGIN_TTL", default_value_t = 16 * 3600)]
    pub login_ttl_seconds: u64,

    /// Longest lifetime any token may have, in seconds (default 90 days;
    /// 0 means no limit).
    #[arg(long, env = "DROVER_TOKEN_MAX_TTL", default_value_t = 90 * 86400)]
    pub token_max_ttl_seconds: u64,

    /// Rotate the audit log when it reaches this many MiB.
    #[arg(long, env = "DROVER_AUDIT_LOG_MAX_SIZE", default_value_t = 100)]
    pub audit_log_max_size_mb: u64,

    /// Rotated audit logs to keep.
    #[arg(long, env = "DROVER_AUDIT_LOG_MAX_BACKUPS", default_value_t = 5)]
    pub audit_log_max_backups: u32,

    /// The image the import manifest runs the agent with.
    #[arg(long, env = "DROVER_AGENT_IMAGE", default_value = concat!("drover/drover:", env!("CARGO_PKG_VERSION")))]
    pub agent_image: String,
    /// Lifetime of a kubeconfig's token, in seconds (default 30 days; cut to
    /// --token-max-ttl).
    #[arg(long, env = "DROVER_KUBECONFIG_TTL", default_value_t = 30 * 86400)]
    pub kubeconfig_ttl_seconds: u64,
    /// Seconds to let in-flight requests finish on shutdown.
    #[arg(long, env = "DROVER_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,
    /// Seconds a draining replica keeps answering, with `/healthz` at 503,
    /// before it stops taking requests (when other replicas are serving):
    /// time for the load balancer's health checks to notice.
    #[arg(long, env = "DROVER_DRAIN_DELAY", default_value_t = 3)]
    pub drain_delay_seconds: u64,
    /// Address of the replica-to-replica listener (mutual TLS; only other
    /// replicas can connect). Default: the --listen IP, any free port.
    #[arg(long, env = "DROVER_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// The host (name or IP) other replicas reach this one at. Default: the
    /// --peer-listen IP if specific, else this host's outward IP.
    #[arg(long, env = "DROVER_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// File holding the secret (16 bytes or more) that Backups with
    /// `spec.encrypt` and the log archive are encrypted with.
    #[arg(long, env = "DROVER_BACKUP_ENCRYPTION_KEY_FILE")]
    pub backup_encryption_key_file: Option<PathBuf>,
    /// Archive the datastore's log here for point-in-time recovery
    /// (`file:///DIR` or `s3://BUCKET/PREFIX`), a segment every few seconds.
    #[arg(long, env = "DROVER_BACKUP_LOG_ARCHIVE", value_parser = parse_location)]
    pub backup_log_archive: Option<String>,
    /// Days archived log segments are kept (point-in-time recovery reaches
    /// back this far, from the newest backup before it).
    #[arg(long, env = "DROVER_BACKUP_LOG_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub backup_log_retention_days: u64,
    /// Let user-supplied addresses (directory servers, identity providers,
    /// notifiers) be loopback or private ones; refused by default.
    #[arg(long, env = "DROVER_ALLOW_PRIVATE_OUTBOUND")]
    pub allow_private_outbound: bool,
    /// How often provider users' groups are read again, in seconds.
    #[arg(long, env = "DROVER_GROUP_REFRESH_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub group_refresh_seconds: u64,
}

/// Where TLS ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Drover serves HTTPS.
    Drover,
    /// A balancer in front terminates TLS; Drover serves plain HTTP.
    External,
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a CIDR (such as 10.0.0.0/8)"))
}

fn parse_location(url: &str) -> Result<String, String> {
    drover_backup::location::validate(url).map(|()| url.to_owned())
}

impl ServerArgs {
    /// Check the flags that only make sense together; one line says what
    /// is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.tls_mode == TlsMode::External {
            if self.trusted_proxies.is_empty() {
                return Err("--tls-mode external needs --trusted-proxies: the addresses of the balancer whose X-Forwarded-For and X-Forwarded-Proto Drover may believe".into());
            }
            if self.server_url.is_none() && !self.listen.ip().is_loopback() {
                return Err("--tls-mode external on a non-loopback address needs --server-url https://…: the balancer's address, which agents and kubeconfigs use".into());
            }
            if self.tls_cert.is_some() || !self.acme_domain.is_empty() {
                return Err("--tls-mode external serves plain HTTP: --tls-cert and --acme-domain belong on the balancer then".into());
            }
        }
        if self.tls_ca.is_some()
            && self.tls_mode == TlsMode::Drover
            && self.tls_cert.is_none()
            && self.acme_domain.is_empty()
        {
            return Err("--tls-ca names the CA of a certificate Drover does not make (--tls-cert, ACME, or a balancer's); with Drover's own certificate, leave it out".into());
        }
        if self.tls_cert.is_some() && !self.acme_domain.is_empty() {
            return Err("--tls-cert and --acme-domain both name where the serving certificate comes from; give one".into());
        }
        if !self.acme_domain.is_empty() {
            for d in &self.acme_domain {
                if d.is_empty()
                    || d.parse::<std::net::IpAddr>().is_ok()
                    || d.contains(['/', ':', ' '])
                {
                    return Err(format!("--acme-domain {d:?} is not a DNS name"));
                }
                if d.contains('*') {
                    return Err(format!("--acme-domain {d:?}: wildcards need the DNS-01 challenge, which Drover does not do; name each host"));
                }
            }
            match &self.acme_email {
                Some(e) if e.contains('@') && !e.contains([' ', ',']) => {}
                Some(e) => return Err(format!("--acme-email {e:?} is not an email address")),
                None => {
                    return Err(
                        "--acme-domain needs --acme-email: the ACME CA's contact for the account"
                            .into(),
                    )
                }
            }
            if self.acme_directory.scheme() != "https" {
                return Err("--acme-directory must be an https:// URL".into());
            }
        }
        Ok(())
    }

    /// The datastore URL, defaulting to SQLite in the data dir.
    pub fn datastore_url(&self) -> String {
        self.datastore
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("state.db").display()))
    }

    /// The externally visible URL of this server.
    pub fn server_url(&self) -> url::Url {
        if let Some(url) = &self.server_url {
            return url.clone();
        }
        let host = if self.listen.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            match self.listen.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            }
        };
        url::Url::parse(&format!("https://{host}:{}", self.listen.port()))
            .expect("a host and port form a valid URL")
    }

    /// Lifetime of login tokens.
    pub fn login_ttl(&self) -> Duration {
        Duration::from_secs(self.login_ttl_seconds)
    }

    /// Longest token lifetime (zero: no limit).
    pub fn token_max_ttl(&self) -> Duration {
        Duration::from_secs(self.token_max_ttl_seconds)
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// How long a draining replica answers `/healthz` 503 before it stops
    /// taking requests.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_seconds)
    }

    /// The peer listener's address.
    pub fn peer_listen(&self) -> SocketAddr {
        self.peer_listen
            .unwrap_or_else(|| SocketAddr::new(self.listen.ip(), 0))
    }

    /// The host other replicas reach this one at, given the peer
    /// listener's address (never an unspecified address).
    pub fn advertise_host(&self, peer: SocketAddr) -> String {
        if let Some(host) = self.advertise_address.as_deref().filter(|h| !h.is_empty()) {
            return host.to_owned();
        }
        let ip = if peer.ip().is_unspecified() {
            // No route out: only replicas on this host can reach it.
            outward_ip().unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        } else {
            peer.ip()
        };
        match ip {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    }
}

/// The IP this host sends from towards the outside (no packet is sent: a
/// UDP socket is only connected), or loopback.
fn outward_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn parse_server_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err("the server URL must start with https://".into());
    }
    if url.host_str().is_none() {
        return Err("the server URL needs a host".into());
    }
    Ok(url)
}

/// A datastore URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => url.split(['@', '?']).next().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://drover:s3cret@db:5432/drover"),
            "postgres://drover:REDACTED@db:5432/drover"
        );
        assert!(!redact_url("postgres://u:p@h/d?sslmode=require").contains(":p@"));
    }

    #[test]
    fn server_url_from_listen() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ServerArgs,
        }
        let cli = Cli::parse_from(["x", "--listen", "0.0.0.0:9443"]);
        assert_eq!(cli.args.server_url().as_str(), "https://localhost:9443/");
        let cli = Cli::parse_from(["x", "--listen", "127.0.0.1:9443"]);
        assert_eq!(cli.args.server_url().as_str(), "https://127.0.0.1:9443/");
        assert!(Cli::try_parse_from(["x", "--server-url", "http://plain"]).is_err());
    }
}
