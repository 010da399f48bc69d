//! A WebSocket as a byte pipe for the multiplexer: binary messages in both
//! directions, pings every [`Keepalive::interval`], and an error once nothing
//! at all (data, ping or pong) has come from the peer for
//! [`Keepalive::timeout`] — so a dead peer behind a silent network is noticed
//! without waiting for TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead as TokioRead, AsyncWrite as TokioWrite};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Keep-alive timing of a tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// How often each end pings.
    pub interval: Duration,
    /// Silence after which the peer counts as gone.
    pub timeout: Duration,
}

impl Default for Keepalive {
    /// A ping every 2 s, gone after 6 s of silence (checked every second):
    /// a frozen or cut-off peer is noticed within 7 s — an agent has moved
    /// to another replica before that replica's clusters would show as
    /// disconnected — while a slow moment is not mistaken for one.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(6),
        }
    }
}

/// Writes are gathered up to this size into one WebSocket message.
const WRITE_CHUNK: usize = 64 * 1024;

/// The WebSocket configuration both ends use: small buffers (a server holds
/// one tunnel per cluster) and messages no larger than a chunk needs.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(4 * WRITE_CHUNK))
        .max_frame_size(Some(4 * WRITE_CHUNK))
}

/// Wrap the server's side of an upgraded connection.
pub async fn server<S>(io: S) -> WebSocketStream<S>
where
    S: TokioRead + TokioWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await
}

/// The `Sec-WebSocket-Accept` answer to a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(client_key)
}

/// A WebSocket as `futures::io::AsyncRead + AsyncWrite`.
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    read: Bytes,
    write: BytesMut,
    ticker: Interval,
    last_seen: Instant,
    timeout: Duration,
    ping_due: bool,
    /// Whether the next tick pings (every other one does).
    ping_tick: bool,
}

impl<S> std::fmt::Debug for WsIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsIo").finish_non_exhaustive()
    }
}

impl<S> WsIo<S>
where
    S: TokioRead + TokioWrite + Unpin,
{
    /// Wrap an open WebSocket. Must be called inside a tokio runtime.
    pub fn new(ws: WebSocketStream<S>, keepalive: Keepalive) -> Self {
        // Ticks at half the ping interval: silence is noticed within half
        // an interval of the timeout, and every other tick pings.
        let tick = keepalive.interval / 2;
        let mut ticker = tokio::time::interval_at(Instant::now() + tick, tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            ws,
            read: Bytes::new(),
            write: BytesMut::new(),
            ticker,
            last_seen: Instant::now(),
            timeout: keepalive.timeout,
            ping_due: false,
            ping_tick: true,
        }
    }

    /// Send a due ping. The ticker also wakes the reader each tick, which
    /// then judges silence once nothing more is waiting.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.ticker.poll_tick(cx).is_ready() {
            self.ping_due |= self.ping_tick;
            self.ping_tick = !self.ping_tick;
        }
        if self.ping_due {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    Pin::new(&mut self.ws)
                        .start_send(Message::Ping(Bytes::new()))
                        .map_err(io::Error::other)?;
                    self.ping_due = false;
                    // Pushed out now or with the next flush.
                    let _ = Pin::new(&mut self.ws).poll_flush(cx);
                }
                Poll::Ready(Err(e)) => return Err(io::Error::other(e)),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    fn poll_send_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let chunk = self.write.split().freeze();
                Pin::new(&mut self.ws)
                    .start_send(Message::Binary(chunk))
                    .map_err(io::Error::other)?;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(io::Error::other(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> futures::io::AsyncRead for WsIo<S>
where
    S: TokioRead + TokioWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.poll_keepalive(cx)?;
        loop {
            if !this.read.is_empty() {
                let n = buf.len().min(this.read.len());
                buf[..n].copy_from_slice(&this.read[..n]);
                this.read.advance(n);
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    this.last_seen = Instant::now();
                    match msg {
                        Message::Binary(b) => this.read = b,
                        Message::Close(_) => return Poll::Ready(Ok(0)),
                        Message::Text(_) => {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "unexpected text message in the tunnel",
                            )))
                        }
                        // Pings are answered by tungstenite itself.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                // Silence is judged only once nothing more is waiting: what
                // arrived while this process itself was paused is a sign of
                // life, not its absence.
                Poll::Pending if this.last_seen.elapsed() > this.timeout => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no sign of life from the tunnel's other end",
                    )))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S> futures::io::AsyncWrite for WsIo<S>
where
    S: TokioRead + TokioWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write.len() >= WRITE_CHUNK {
            match this.poll_send_buffered(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other.map_ok(|()| 0),
            }
        }
        let n = buf.len().min(WRITE_CHUNK - this.write.len());
        this.write.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_send_buffered(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut this.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_send_buffered(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut this.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}
