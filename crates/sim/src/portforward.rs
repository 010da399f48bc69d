//! `pods/portforward`, in the three forms clients speak:
//!
//! - SPDY/3.1 (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version:
//!   portforward.k8s.io`), what kubectl used until 1.30 and falls back to;
//! - SPDY tunneled in a WebSocket (`SPDY/3.1+portforward.k8s.io`), what
//!   kubectl 1.30+ speaks first;
//! - the WebSocket channel protocol (`v4.channel.k8s.io`, ports in the
//!   query), what the Python client speaks.
//!
//! In the SPDY forms each forwarded connection is a pair of streams, one
//! for errors and one for data, named by their `port` and `requestID`
//! headers, as in kubelet's server.
//!
//! Behind each containerPort a pod declares, a simulated container answers
//! HTTP: one response (`200`, naming the pod, the port and the request)
//! per connection. A port the pod does not declare refuses the connection,
//! reported on the error stream as kubelet reports it.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use drover_apiserver::ApiError;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::exec::Stopping;

/// The WebSocket subprotocol of SPDY tunneled in a WebSocket.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol inside SPDY.
const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket channel protocol.
const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";
/// Largest header block or request the sim reads.
const LIMIT: usize = 64 * 1024;
/// Most ports one channel-protocol session forwards.
const MAX_CHANNEL_PORTS: usize = 64;
/// Most streams one SPDY session keeps open.
const MAX_STREAMS: usize = 1024;

/// The pod a session forwards to.
#[derive(Clone)]
struct Target {
    name: String,
    namespace: String,
    uid: String,
    ports: Vec<u16>,
}

impl Target {
    fn of(pod: &Value) -> Self {
        let s = |p: &str| {
            pod.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let ports = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["containerPort"].as_u64())
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        Target {
            name: s("/metadata/name"),
            namespace: s("/metadata/namespace"),
            uid: s("/metadata/uid"),
            ports,
        }
    }

    fn refused(&self, port: u16) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid : failed to connect to localhost:{port} inside namespace \"{}\", IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 [::1]:{port}: connect: connection refused ",
            self.uid, self.namespace
        )
    }

    /// The answer of the container listening on `port` to `request`.
    fn answer(&self, port: u16, request: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(request);
        let line = text.lines().next().unwrap_or_default();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("GET");
        let path = parts.next().unwrap_or("/");
        let body = format!(
            "{{\"pod\":\"{}\",\"namespace\":\"{}\",\"port\":{port},\"method\":\"{method}\",\"path\":\"{}\"}}\n",
            self.name,
            self.namespace,
            path.replace(['"', '\\'], "")
        );
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nServer: drover-sim\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Whether `buf` holds a whole HTTP request head.
fn request_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

fn header_list(req: &Request, name: header::HeaderName) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect()
}

/// Upgrade the request and forward its connections.
pub(crate) async fn portforward(pod: Value, req: Request) -> Result<Response, ApiError> {
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Err(ApiError::bad_request(format!(
            "pod {} is not running",
            pod.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )));
    }
    let target = Target::of(&pod);
    let stopping = req.extensions().get::<Stopping>().cloned();
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade == "websocket" {
        let protocols = header_list(&req, header::SEC_WEBSOCKET_PROTOCOL);
        let query_ports: Vec<u16> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
                .filter(|(k, _)| k == "ports")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .filter_map(|p| p.trim().parse().ok())
                        .collect::<Vec<u16>>()
                })
                .collect();
        let (mut parts, _) = req.into_parts();
        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|_| {
                ApiError::bad_request("port forwarding needs a WebSocket or SPDY upgrade")
            })?;
        if protocols.iter().any(|p| p == TUNNEL_PROTOCOL) {
            return Ok(ws
                .protocols([TUNNEL_PROTOCOL])
                .on_upgrade(move |socket| async move {
                    let (incoming, outgoing) = websocket_pipes(socket);
                    until_stopped(stopping, spdy_session(target, incoming, outgoing)).await;
                }));
        }
        if query_ports.is_empty() {
            return Err(ApiError::bad_request(
                "query parameter \"port\" is required",
            ));
        }
        // Two channels per port, numbered in one byte.
        if query_ports.len() > MAX_CHANNEL_PORTS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_CHANNEL_PORTS} ports may be forwarded at once"
            )));
        }
        return Ok(ws
            .protocols([CHANNEL_PROTOCOL])
            .on_upgrade(move |socket| async move {
                until_stopped(stopping, channels(target, query_ports, socket)).await;
            }));
    }
    if upgrade != "spdy/3.1" {
        return Err(ApiError::bad_request(
            "port forwarding needs a WebSocket or SPDY upgrade",
        ));
    }
    let versions = header_list(
        &req,
        header::HeaderName::from_static("x-stream-protocol-version"),
    );
    if !versions.iter().any(|v| v == PORTFORWARD_PROTOCOL) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("unable to upgrade: unable to negotiate protocol: client supports {versions:?}, server supports [\"{PORTFORWARD_PROTOCOL}\"]"),
        ));
    }
    let mut req = req;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let (incoming, outgoing) = io_pipes(io);
        until_stopped(stopping, spdy_session(target, incoming, outgoing)).await;
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(PORTFORWARD_PROTOCOL),
    );
    Ok(resp)
}

async fn until_stopped(stopping: Option<Stopping>, session: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = session => {}
        () = crate::exec::stopped(stopping) => {}
    }
}

/// Bytes in and out of an upgraded connection, through two tasks.
fn io_pipes<IO>(io: IO) -> (mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if in_tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if writer.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    (in_rx, out_tx)
}

/// Bytes in and out of a WebSocket carrying a SPDY session.
fn websocket_pipes(socket: WebSocket) -> (mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>) {
    let (mut sink, mut stream) = socket.split();
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            if in_tx.send(data).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if sink.send(Message::Binary(b)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    (in_rx, out_tx)
}

/// The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1):
/// length-prefixed common header names and values, then common strings.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::new();
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;

/// A SPDY frame.
enum Frame {
    Control { kind: u16, flags: u8, data: Bytes },
    Data { stream: u32, flags: u8, data: Bytes },
}

/// Take one whole frame off the front of `buf`, if there is one.
fn take_frame(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = ((buf[5] as usize) << 16) | ((buf[6] as usize) << 8) | buf[7] as usize;
    if len > LIMIT {
        return Err(format!("frame of {len} bytes is too large"));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let head = buf.split_to(8);
    let data = buf.split_to(len).freeze();
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(format!("unsupported SPDY version {version}"));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            data,
        }))
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        Ok(Some(Frame::Data {
            stream,
            flags,
            data,
        }))
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u16(0x8003);
    b.put_u16(kind);
    b.put_u8(flags);
    b.put_uint(payload.len() as u64, 3);
    b.put_slice(payload);
    b.freeze()
}

fn data(stream: u32, flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u32(stream & 0x7fff_ffff);
    b.put_u8(flags);
    b.put_uint(payload.len() as u64, 3);
    b.put_slice(payload);
    b.freeze()
}

/// The header blocks of one direction of a session: one zlib stream.
struct Headers {
    inflate: Decompress,
    deflate: Compress,
    dictionary: Vec<u8>,
}

impl Headers {
    fn new() -> Self {
        Headers {
            inflate: Decompress::new(true),
            deflate: Compress::new(Compression::default(), true),
            dictionary: dictionary(),
        }
    }

    fn read(&mut self, block: &[u8]) -> Result<HashMap<String, String>, String> {
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut consumed = 0usize;
        loop {
            let before = self.inflate.total_in();
            let produced = out.len();
            let result =
                self.inflate
                    .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.inflate.total_in() - before) as usize;
            match result {
                // The zlib stream of a session never ends; one that does is
                // broken, and what follows it can never be read.
                Ok(flate2::Status::StreamEnd) => {
                    return Err("the header stream ended".into());
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| format!("header dictionary refused: {e}"))?;
                    continue;
                }
                Err(e) => return Err(format!("bad header block: {e}")),
            }
            if consumed >= block.len() && out.len() < out.capacity() {
                break;
            }
            let progressed = self.inflate.total_in() != before || out.len() != produced;
            if !progressed && out.len() < out.capacity() {
                return Err("the header block does not decode".into());
            }
            if out.len() >= LIMIT {
                return Err("header block too large".into());
            }
            out.reserve(4096);
        }
        let mut buf = Bytes::from(out);
        let mut headers = HashMap::new();
        if buf.remaining() < 4 {
            return Err("short header block".into());
        }
        let count = buf.get_u32();
        for _ in 0..count {
            let mut field = || -> Result<String, String> {
                if buf.remaining() < 4 {
                    return Err("short header block".into());
                }
                let n = buf.get_u32() as usize;
                if buf.remaining() < n {
                    return Err("short header block".into());
                }
                Ok(String::from_utf8_lossy(&buf.split_to(n)).into_owned())
            };
            let name = field()?;
            let value = field()?;
            headers.insert(name.to_ascii_lowercase(), value);
        }
        Ok(headers)
    }

    fn write(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = BytesMut::new();
        raw.put_u32(headers.len() as u32);
        for (k, v) in headers {
            raw.put_u32(k.len() as u32);
            raw.put_slice(k.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            let before = self.deflate.total_in() as usize;
            let _ = self
                .deflate
                .compress_vec(&raw, &mut out, FlushCompress::Sync);
            let used = self.deflate.total_in() as usize - before;
            raw.advance(used);
            if raw.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(256);
        }
        out
    }
}

/// One forwarded connection: its streams.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
}

/// Serve one SPDY session until the client goes away.
async fn spdy_session(
    target: Target,
    mut incoming: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Bytes>,
) {
    let mut buf = BytesMut::new();
    let mut headers = Headers::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut inputs: HashMap<u32, mpsc::Sender<Option<Bytes>>> = HashMap::new();
    while let Some(chunk) = incoming.recv().await {
        buf.extend_from_slice(&chunk);
        loop {
            let frame = match take_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward session ended");
                    return;
                }
            };
            match frame {
                Frame::Control {
                    kind: SYN_STREAM,
                    flags,
                    data: body,
                } => {
                    if body.len() < 10 {
                        return;
                    }
                    let stream =
                        u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff;
                    let h = match headers.read(&body[10..]) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::debug!(error = %e, "port-forward: bad SYN_STREAM");
                            return;
                        }
                    };
                    let mut reply = stream.to_be_bytes().to_vec();
                    reply.extend(headers.write(&[]));
                    if out.send(control(SYN_REPLY, 0, &reply)).await.is_err() {
                        return;
                    }
                    if inputs.len() >= MAX_STREAMS || pairs.len() >= MAX_STREAMS {
                        tracing::debug!("port-forward: too many open streams");
                        return;
                    }
                    let request = h.get("requestid").cloned().unwrap_or_default();
                    let port: u16 = h.get("port").and_then(|p| p.parse().ok()).unwrap_or(0);
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = port;
                    match h.get("streamtype").map(String::as_str) {
                        Some("error") => pair.error = Some(stream),
                        Some("data") => {
                            pair.data = Some(stream);
                            let (tx, rx) = mpsc::channel(64);
                            if flags & FLAG_FIN != 0 {
                                let _ = tx.try_send(None);
                            }
                            inputs.insert(stream, tx);
                            let error = pair.error;
                            tokio::spawn(connection(
                                target.clone(),
                                port,
                                stream,
                                error,
                                rx,
                                out.clone(),
                            ));
                        }
                        _ => {}
                    }
                    if pair.error.is_some() && pair.data.is_some() {
                        pairs.remove(&request);
                    }
                }
                Frame::Control {
                    kind: PING,
                    data: body,
                    ..
                } => {
                    if out.send(control(PING, 0, &body)).await.is_err() {
                        return;
                    }
                }
                Frame::Control {
                    kind: RST_STREAM,
                    data: body,
                    ..
                } => {
                    if body.len() >= 4 {
                        let stream =
                            u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff;
                        inputs.remove(&stream);
                    }
                }
                Frame::Control { kind: GOAWAY, .. } => return,
                // SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do here.
                Frame::Control { .. } => {}
                Frame::Data {
                    stream,
                    flags,
                    data: body,
                } => {
                    if let Some(tx) = inputs.get(&stream) {
                        if !body.is_empty() {
                            let _ = tx.send(Some(body)).await;
                        }
                        if flags & FLAG_FIN != 0 {
                            let _ = tx.send(None).await;
                            inputs.remove(&stream);
                        }
                    }
                }
            }
        }
    }
}

/// One forwarded connection over SPDY streams: the simulated container's
/// answer on the data stream, or the refusal on the error stream.
async fn connection(
    target: Target,
    port: u16,
    data_stream: u32,
    error_stream: Option<u32>,
    mut input: mpsc::Receiver<Option<Bytes>>,
    out: mpsc::Sender<Bytes>,
) {
    if !target.ports.contains(&port) {
        if let Some(e) = error_stream {
            let _ = out
                .send(data(e, FLAG_FIN, target.refused(port).as_bytes()))
                .await;
        }
        let _ = out.send(data(data_stream, FLAG_FIN, &[])).await;
        return;
    }
    let mut request = Vec::new();
    while let Some(Some(chunk)) = input.recv().await {
        request.extend_from_slice(&chunk);
        if request_complete(&request) || request.len() > LIMIT {
            break;
        }
    }
    if request_complete(&request) {
        for chunk in target.answer(port, &request).chunks(16 * 1024) {
            if out.send(data(data_stream, 0, chunk)).await.is_err() {
                return;
            }
        }
    }
    let _ = out.send(data(data_stream, FLAG_FIN, &[])).await;
    if let Some(e) = error_stream {
        let _ = out.send(data(e, FLAG_FIN, &[])).await;
    }
}

/// The WebSocket channel protocol: per port `i`, channel `2i` carries
/// data and `2i+1` errors; each starts with the port (two bytes, little
/// endian). One connection per port.
async fn channels(target: Target, ports: Vec<u16>, mut socket: WebSocket) {
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i as u8, 2 * i as u8 + 1] {
            let mut frame = vec![channel];
            frame.extend_from_slice(&port.to_le_bytes());
            if socket
                .send(Message::Binary(Bytes::from(frame)))
                .await
                .is_err()
            {
                return;
            }
        }
        if !target.ports.contains(port) {
            let mut frame = vec![2 * i as u8 + 1];
            frame.extend_from_slice(target.refused(*port).as_bytes());
            let _ = socket.send(Message::Binary(Bytes::from(frame))).await;
        }
    }
    let mut requests: HashMap<u8, Vec<u8>> = HashMap::new();
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Binary(b) = msg else {
            if matches!(msg, Message::Close(_)) {
                return;
            }
            continue;
        };
        let Some((&channel, body)) = b.split_first() else {
            continue;
        };
        let index = usize::from(channel / 2);
        let Some(&port) = ports.get(index) else {
            continue;
        };
        if channel % 2 != 0 || !target.ports.contains(&port) {
            continue;
        }
        let request = requests.entry(channel).or_default();
        if request.len() + body.len() > LIMIT {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        request.extend_from_slice(body);
        if request_complete(request) {
            let mut frame = vec![channel];
            frame.extend(target.answer(port, request));
            if socket
                .send(Message::Binary(Bytes::from(frame)))
                .await
                .is_err()
            {
                return;
            }
            request.clear();
            // The container closes its side: with one port, the session ends.
            if ports.len() == 1 {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&control(PING, 0, &7u32.to_be_bytes()));
        buf.extend_from_slice(&data(3, FLAG_FIN, b"hi"));
        match take_frame(&mut buf).unwrap().unwrap() {
            Frame::Control { kind, data, .. } => {
                assert_eq!(kind, PING);
                assert_eq!(&data[..], &7u32.to_be_bytes());
            }
            Frame::Data { .. } => panic!("a control frame"),
        }
        match take_frame(&mut buf).unwrap().unwrap() {
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                assert_eq!((stream, flags, &data[..]), (3, FLAG_FIN, &b"hi"[..]));
            }
            Frame::Control { .. } => panic!("a data frame"),
        }
        assert!(take_frame(&mut buf).unwrap().is_none());
    }

    #[test]
    fn header_blocks_compressed_with_the_dictionary_are_read() {
        // What a client's compressor sends: zlib with the SPDY dictionary.
        let mut client = Compress::new(Compression::default(), true);
        client.set_dictionary(&dictionary()).unwrap();
        let mut server = Headers::new();
        for request in ["0", "1"] {
            let mut raw = BytesMut::new();
            let pairs = [
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", request),
            ];
            raw.put_u32(pairs.len() as u32);
            for (k, v) in pairs {
                raw.put_u32(k.len() as u32);
                raw.put_slice(k.as_bytes());
                raw.put_u32(v.len() as u32);
                raw.put_slice(v.as_bytes());
            }
            let mut block = Vec::with_capacity(1024);
            client
                .compress_vec(&raw, &mut block, FlushCompress::Sync)
                .unwrap();
            let h = server.read(&block).unwrap();
            assert_eq!(h["port"], "8080");
            assert_eq!(h["requestid"], request);
        }
        // And what the server writes reads back.
        let mut reader = Headers::new();
        let block = server.write(&[("a", "b")]);
        assert_eq!(reader.read(&block).unwrap()["a"], "b");
    }
}
