//! A webhook receiver for the alert tests: an HTTP/1.1 server on
//! 127.0.0.1 that records every request (headers, raw body, JSON, arrival
//! time) and answers 200, with HMAC-SHA256 to check signatures.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// One request the webhook receiver took.
#[derive(Debug, Clone)]
pub struct Hook {
    /// When its body was read (wall clock, to compare with `status.since`).
    pub at: SystemTime,
    /// The same moment, monotonic.
    pub when: Instant,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub raw: Vec<u8>,
    pub body: Value,
}

impl Hook {
    pub fn rule(&self) -> &str {
        self.body["rule"]["name"].as_str().unwrap_or("")
    }

    pub fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or("")
    }

    pub fn affected(&self) -> Vec<String> {
        self.body["affected"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// The body is signed with `secret` in `X-Drover-Signature`.
    pub fn assert_signed(&self, secret: &str) {
        let want = format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), &self.raw)));
        assert_eq!(
            self.headers.get("x-drover-signature"),
            Some(&want),
            "signature of {}",
            String::from_utf8_lossy(&self.raw)
        );
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers
/// 200; stopped on drop.
pub struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Hook>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (got2, stop2) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let got = got2.clone();
                std::thread::spawn(move || serve_one(conn, &got));
            }
        });
        Receiver { port, got, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn all(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }

    /// The messages about `rule` with this status, in arrival order.
    pub fn messages(&self, rule: &str, status: &str) -> Vec<Hook> {
        self.all()
            .into_iter()
            .filter(|h| h.rule() == rule && h.status() == status)
            .collect()
    }

    pub fn first(&self, rule: &str, status: &str) -> Option<Hook> {
        self.messages(rule, status).into_iter().next()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Read one request, record it, answer 200 and close (no keep-alive, so a
/// client never reuses a connection the receiver already dropped).
fn serve_one(conn: TcpStream, got: &Mutex<Vec<Hook>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    if let Some(hook) = read_request(&mut reader) {
        got.lock().unwrap().push(hook);
        let _ = writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        );
        let _ = writer.flush();
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Hook> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let _method = parts.next()?;
    let path = parts.next()?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let mut raw = Vec::new();
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t).ok()? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk).ok()?;
            raw.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
        }
    } else {
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        raw = vec![0; len];
        r.read_exact(&mut raw).ok()?;
    }
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Some(Hook {
        at: SystemTime::now(),
        when: Instant::now(),
        path,
        headers,
        raw,
        body,
    })
}

/// HMAC-SHA256 (RFC 2104) over SHA-256 alone.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
