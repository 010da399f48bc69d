//! `drover login`, `logout`, `whoami`.
//!
//! `--provider ldap|activedirectory` logs in with a directory account;
//! `--provider oidc` signs in through the OIDC provider's page: the CLI
//! listens on a loopback port, prints (or opens) the provider's URL, and
//! takes the code the browser is redirected back with. With `--no-browser`
//! nothing is opened: the URL is printed for a browser anywhere, and the
//! address the browser ends on can also be pasted back.
//!
//! Trust: `--cacert FILE` trusts that CA only; otherwise the machine's
//! public roots. A server whose CA is not trusted shows the CA's SHA-256
//! fingerprint and, on a terminal, asks whether to trust it (the CA is then
//! kept in the entry); without a terminal the login fails naming the flags
//! to pass. `--insecure-skip-tls-verify` exists and says it is dangerous.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::client::{Client, MGMT};
use crate::config::{Config, ServerEntry};
use crate::output::{self, Output};
use crate::CliError;

/// `drover login` flags.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The server, e.g. https://drover.example.com:8443.
    pub url: String,
    /// Log in with an API token (token-xxxxx:SECRET).
    #[arg(long, conflicts_with_all = ["username", "password_stdin"])]
    pub token: Option<String>,
    /// Log in with a username; the password is asked for (or read with
    /// --password-stdin).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Where the account is: local (default), ldap, activedirectory, oidc.
    #[arg(long, default_value = "local",
          value_parser = ["local", "ldap", "activedirectory", "oidc"])]
    pub provider: String,
    /// OIDC: print the sign-in URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// OIDC: the loopback port the browser comes back to (default: any
    /// free one; set it when the provider needs the exact redirect URI).
    #[arg(long, default_value_t = 0)]
    pub callback_port: u16,
    /// Trust this CA (PEM) for the server.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Trust the CA the server sends if its SHA-256 fingerprint is this
    /// (as `drover login` shows it; colons optional), without asking.
    #[arg(long, value_name = "SHA256", conflicts_with = "cacert")]
    pub ca_fingerprint: Option<String>,
    /// Do not check the server's certificate. Dangerous: anyone on the
    /// network path could read your password and token.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// The entry's name in the config (default: the server's host).
    #[arg(long)]
    pub name: Option<String>,
}

/// `drover logout` flags.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The server entry (default: the current one).
    #[arg(long)]
    pub server: Option<String>,
}

/// `drover whoami` flags.
#[derive(Debug, clap::Args)]
pub struct WhoamiArgs {
    /// The server entry (default: the current one).
    #[arg(long)]
    pub server: Option<String>,
    /// How to print.
    #[command(flatten)]
    pub out: Output,
}

fn normalise(url: &str) -> Result<String, CliError> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    };
    let parsed = url::Url::parse(&with_scheme)
        .map_err(|e| CliError::Usage(format!("{url:?} is not a URL: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(CliError::Usage("the server URL must be https://".into()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| CliError::Usage(format!("{url:?} has no host")))?;
    Ok(match parsed.port() {
        Some(p) => format!("https://{host}:{p}"),
        None => format!("https://{host}"),
    })
}

/// The first PEM certificate block of a text.
fn first_certificate(pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &pem[start..end]))
}

/// Decide what to trust for `url`: (CA PEM to keep, insecure).
async fn trust(url: &str, args: &LoginArgs) -> Result<(Option<String>, bool), CliError> {
    if args.insecure_skip_tls_verify {
        eprintln!("WARNING: --insecure-skip-tls-verify: the server's identity is not checked; anyone on the network path can read your password and token.");
        return Ok((None, true));
    }
    if let Some(path) = &args.cacert {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--cacert {}: {e}", path.display())))?;
        if drover_net::client::fingerprint(&pem).is_none() {
            return Err(CliError::Usage(format!(
                "--cacert {}: no PEM certificate in it",
                path.display()
            )));
        }
        return Ok((Some(pem), false));
    }
    // Publicly trusted?
    let public = Client::anonymous(url, None, false)?;
    match public.raw(reqwest::Method::GET, "/ping", None, None).await {
        Ok(_) => return Ok((None, false)),
        Err(CliError::Untrusted { .. }) => {}
        Err(e) => return Err(e),
    }
    // Not trusted: show the CA's fingerprint and ask.
    let first_contact = Client::anonymous(url, None, true)?;
    let (_, pem) = first_contact
        .raw(reqwest::Method::GET, "/cacerts", None, None)
        .await?;
    // Only the certificate whose fingerprint is checked is trusted: more
    // appended by someone in the middle would otherwise ride along.
    let pem = first_certificate(&pem).unwrap_or(pem);
    let fingerprint = drover_net::client::fingerprint(&pem);
    // A CA other than the one saved at the last login: say so.
    let saved = Config::load().ok().and_then(|c| {
        c.servers
            .iter()
            .find(|s| s.url == url)
            .and_then(|s| s.ca_data.as_deref())
            .and_then(drover_net::client::fingerprint)
    });
    if let (Some(before), Some(now)) = (&saved, &fingerprint) {
        if before != now {
            eprintln!("The CA of {url} has changed since you last logged in (it was {before}): an administrator may have rotated it.");
        }
    }
    if let Some(wanted) = &args.ca_fingerprint {
        let plain = |f: &str| f.replace(':', "").to_ascii_uppercase();
        return match &fingerprint {
            Some(fp) if plain(fp) == plain(wanted) => {
                Ok((Some(bundle_over(url, pem).await), false))
            }
            _ => Err(CliError::Untrusted {
                url: url.to_owned(),
                fingerprint,
            }),
        };
    }
    let Some(fp) = fingerprint.clone().filter(|_| crate::interactive()) else {
        return Err(CliError::Untrusted {
            url: url.to_owned(),
            fingerprint,
        });
    };
    eprintln!("The certificate of {url} is not signed by a CA this machine trusts.");
    eprintln!("Its CA's SHA-256 fingerprint is:\n\n    {fp}\n");
    eprint!("Compare it with the one your administrator gave you. Trust this CA for {url}? [y/N] ");
    let answer = crate::read_stdin_line()?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Err(CliError::Untrusted {
            url: url.to_owned(),
            fingerprint: Some(fp),
        });
    }
    Ok((Some(bundle_over(url, pem).await), false))
}

/// Once `trusted` (one CA) is trusted: `/cacerts` again, over a connection
/// it verifies, whole (both CAs during a CA rotation); `trusted` itself if
/// that fails.
async fn bundle_over(url: &str, trusted: String) -> String {
    let Ok(client) = Client::anonymous(url, Some(&trusted), false) else {
        return trusted;
    };
    match client
        .raw(reqwest::Method::GET, "/cacerts", None, None)
        .await
    {
        Ok((status, pem)) if status.is_success() && pem.contains(trusted.trim()) => pem,
        _ => trusted,
    }
}

/// The OIDC sign-in: a loopback listener for the redirect, the provider's
/// URL printed (and opened unless `no_browser`), then the code and state
/// exchanged for a Drover token. The CLI keeps its own PKCE verifier (the
/// server sees only its challenge), so a code and state that leak — from a
/// pasted address or a browser's history — are of no use to anyone else;
/// and it takes only the state it started with, so no other page or
/// process can sign it in as someone else. Returns the token and the login
/// name.
async fn oidc_login(
    anon: &Client,
    url: &str,
    no_browser: bool,
    port: u16,
) -> Result<(String, String), CliError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use rand::RngCore;
    use sha2::Digest;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| CliError::Config(format!("cannot listen on a loopback port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| CliError::Config(e.to_string()))?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let verifier = URL_SAFE_NO_PAD.encode(secret);
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let started = anon
        .post(
            "/v1-public/oidc/start",
            &json!({"redirectUri": redirect, "codeChallenge": challenge}),
        )
        .await?;
    let auth_url = started["url"].as_str().unwrap_or_default().to_owned();
    let expected_state = started["state"].as_str().unwrap_or_default().to_owned();
    eprintln!("Sign in at:\n\n  {auth_url}\n");
    let web = auth_url.starts_with("https://") || auth_url.starts_with("http://");
    if no_browser || !web {
        eprintln!("Waiting for the browser to come back to {redirect} (or paste the address it ends on here).");
    } else {
        let opened = std::process::Command::new("xdg-open")
            .arg(&auth_url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok();
        if !opened {
            eprintln!("Open that address in a browser (no browser could be started here).");
        }
    }
    // The answer to a callback: the code and state if they are this
    // sign-in's (or the provider's refusal), else keep waiting.
    let check = |target: &str| -> Option<Result<(String, String), String>> {
        let parsed = url::Url::parse(&format!("http://127.0.0.1{target}")).ok()?;
        if parsed.path() != "/callback" {
            return None;
        }
        let param = |k: &str| {
            parsed
                .query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
        };
        if param("state").as_deref() != Some(expected_state.as_str()) {
            return None;
        }
        Some(match (param("code"), param("error")) {
            (_, Some(err)) => Err(err),
            (Some(code), None) => Ok((code, expected_state.clone())),
            (None, None) => return None,
        })
    };
    let from_browser = async {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = vec![0u8; 8192];
            // A connection that sends nothing (a browser's preconnect) does
            // not hold up the next one for long.
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(2), conn.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => continue,
                };
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let target = head
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or_default()
                .to_owned();
            let outcome = check(&target);
            let (status, page) = match &outcome {
                Some(Ok(_)) => (
                    "200 OK",
                    "Signed in to Drover. You can close this tab and go back to the terminal.",
                ),
                Some(Err(_)) => (
                    "200 OK",
                    "The sign-in was refused. Go back to the terminal.",
                ),
                None => ("404 Not Found", "Not this sign-in."),
            };
            let page = format!("<!doctype html><title>Drover</title><p>{page}");
            let _ = conn
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}", page.len()).as_bytes())
                .await;
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    };
    let pasted = async {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.trim();
            let target = line
                .split_once("127.0.0.1")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
                .unwrap_or_default();
            match check(&target) {
                Some(outcome) => return outcome,
                None => eprintln!(
                    "That is not the address this sign-in ends on; paste the whole address."
                ),
            }
        }
        std::future::pending().await
    };
    let came_back = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        tokio::select! { u = from_browser => u, u = pasted => u }
    })
    .await
    .map_err(|_| CliError::Config("no sign-in within 5 minutes".into()))?;
    let (code, state) = came_back.map_err(|err| CliError::Unauthorized {
        url: url.to_owned(),
        message: format!("the provider refused the sign-in: {err}"),
    })?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "a terminal".into());
    let done = anon
        .post(
            "/v1-public/login",
            &json!({"provider": "oidc", "code": code, "state": state, "codeVerifier": verifier,
                    "description": format!("drover CLI on {host}")}),
        )
        .await
        .map_err(|e| match e {
            CliError::Unauthorized { .. } => CliError::Unauthorized {
                url: url.to_owned(),
                message: "the sign-in was refused (expired, used already, or not verified)".into(),
            },
            other => other,
        })?;
    Ok((
        done["token"].as_str().unwrap_or_default().to_owned(),
        done["username"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// `drover login`.
pub async fn login(args: LoginArgs) -> Result<(), CliError> {
    let url = normalise(&args.url)?;
    let (ca, insecure) = trust(&url, &args).await?;
    let anon = Client::anonymous(&url, ca.as_deref(), insecure)?;
    let (token, username) = match (&args.token, &args.username) {
        (None, _) if args.provider == "oidc" => {
            oidc_login(&anon, &url, args.no_browser, args.callback_port).await?
        }
        (Some(t), _) => {
            let me = whoami_with(&anon.with_token(t)).await?;
            (t.clone(), me.0)
        }
        (None, Some(user)) => {
            let password = if args.password_stdin {
                crate::read_stdin_line()?
            } else if crate::interactive() {
                rpassword::prompt_password(format!("Password for {user}: "))
                    .map_err(|e| CliError::Config(format!("cannot read the password: {e}")))?
            } else {
                return Err(CliError::Usage(
                    "no terminal to ask for the password: pass --password-stdin".into(),
                ));
            };
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "a terminal".into());
            let done = anon
                .post(
                    "/v1-public/login",
                    &json!({"provider": args.provider, "username": user, "password": password, "description": format!("drover CLI on {host}")}),
                )
                .await
                .map_err(|e| match e {
                    CliError::Unauthorized { .. } => CliError::Unauthorized {
                        url: url.clone(),
                        message: "invalid username or password".into(),
                    },
                    other => other,
                })?;
            let token = done["token"].as_str().unwrap_or_default().to_owned();
            (token, user.clone())
        }
        (None, None) => return Err(CliError::Usage(
            "pass --token TOKEN, --username NAME (the password is asked for), or --provider oidc"
                .into(),
        )),
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| url.trim_start_matches("https://").replace([':', '/'], "-"));
    let mut config = Config::load()?;
    let previous = config.servers.iter().find(|s| s.name == name);
    let (cluster, project) = previous
        .filter(|p| p.url == url)
        .map(|p| (p.cluster.clone(), p.project.clone()))
        .unwrap_or_default();
    config.upsert(ServerEntry {
        name: name.clone(),
        url: url.clone(),
        token,
        username: Some(username.clone()),
        ca_data: ca,
        insecure_skip_tls_verify: insecure,
        cluster,
        project,
    });
    config.save()?;
    crate::outln!(
        "Logged in to {url} as {username} (saved as {name:?} in {}).",
        crate::config::path().display()
    );
    Ok(())
}

/// (username, groups) of the token's user.
async fn whoami_with(client: &Client) -> Result<(String, Vec<String>), CliError> {
    let review = client
        .post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .await?;
    let info = &review["status"]["userInfo"];
    Ok((
        info["username"].as_str().unwrap_or_default().to_owned(),
        info["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    ))
}

/// `drover whoami`.
pub async fn whoami(args: WhoamiArgs) -> Result<(), CliError> {
    let config = Config::load()?;
    let entry = config.server(args.server.as_deref())?;
    let client = Client::for_entry(entry)?;
    let (user, groups) = whoami_with(&client).await?;
    let doc = json!({"server": entry.url, "username": user, "groups": groups});
    if !output::document(args.out, &doc)? {
        crate::out!(
            "{}",
            output::table(
                &["SERVER", "USERNAME", "GROUPS"],
                &[vec![entry.url.clone(), user, groups.join(",")]]
            )
        );
    }
    Ok(())
}

/// `drover logout`: revoke the token (and cached kubeconfig tokens).
pub async fn logout(args: LogoutArgs) -> Result<(), CliError> {
    let mut config = Config::load()?;
    let entry = config.server(args.server.as_deref())?.clone();
    let client = Client::for_entry(&entry)?;
    for token in crate::context::cached_tokens(&entry) {
        if let Some((name, _)) = token.split_once(':') {
            let _ = client.delete(&format!("{MGMT}/tokens/{name}")).await;
        }
    }
    crate::context::forget_cache(&entry);
    if let Some((name, _)) = entry.token.split_once(':') {
        match client.delete(&format!("{MGMT}/tokens/{name}")).await {
            Ok(_) | Err(CliError::Expired { .. } | CliError::Unauthorized { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let e = config.server_mut(Some(&entry.name))?;
    e.token.clear();
    config.save()?;
    crate::outln!("Logged out of {}.", entry.url);
    Ok(())
}
