//! The yamux session over the tunnel. One task drives the connection: it
//! hands out outbound streams to [`Opener::open`] callers and passes inbound
//! streams to [`Inbound`]. The server is yamux's client (it opens a stream
//! per proxied request); the agent is yamux's server (it accepts them).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::task::Poll;

use futures::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::TunnelError;

pub use yamux::Mode;

/// A stream of the tunnel, with tokio's I/O traits.
pub type TunnelStream = Compat<yamux::Stream>;

/// Streams open at once per tunnel; more wait for one to close.
const MAX_STREAMS: usize = 256;
/// How long a close waits for the peer to take what is still being sent
/// (a cut-off peer behind a full send buffer would otherwise hold it until
/// the kernel gives up).
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

type OpenReply = oneshot::Sender<Result<TunnelStream, TunnelError>>;

/// Opens streams to the other end; cheap to clone.
#[derive(Debug, Clone)]
pub struct Opener {
    requests: mpsc::UnboundedSender<OpenReply>,
    closed: watch::Receiver<bool>,
    close: mpsc::UnboundedSender<()>,
    /// Set by [`Opener::close`]: the session takes no more streams.
    closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Opener {
    /// Open a new stream.
    pub async fn open(&self) -> Result<TunnelStream, TunnelError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| TunnelError::Closed)?;
        rx.await.map_err(|_| TunnelError::Closed)?
    }

    /// Whether the session has ended, or was asked to close.
    pub fn is_closed(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire) || *self.closed.borrow()
    }

    /// Resolves when the session has ended.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Ask the session to close (idempotent); streams in flight are cut.
    /// The close is bounded: a peer that does not take it within
    /// [`CLOSE_WAIT`] is dropped.
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.close.send(());
    }
}

/// Streams opened by the other end.
#[derive(Debug)]
pub struct Inbound(mpsc::UnboundedReceiver<TunnelStream>);

impl Inbound {
    /// The next stream, or `None` once the session has ended.
    pub async fn next(&mut self) -> Option<TunnelStream> {
        self.0.recv().await
    }
}

/// A running session.
#[derive(Debug)]
pub struct Session {
    /// Opens outbound streams.
    pub opener: Opener,
    /// Inbound streams.
    pub inbound: Inbound,
    /// The driver; ends with the session (`Ok` on a clean close).
    pub driver: tokio::task::JoinHandle<Result<(), TunnelError>>,
}

/// The yamux configuration: a bounded number of streams and a connection
/// receive window of 256 KiB per stream, so memory per tunnel is bounded.
fn config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    // Lower the stream count first: the window must cover 256 KiB each.
    cfg.set_max_num_streams(MAX_STREAMS);
    cfg.set_max_connection_receive_window(Some(MAX_STREAMS * 256 * 1024));
    cfg
}

/// Start a session over `io` (for the tunnel, a [`crate::WsIo`]).
pub fn start<T>(io: T, mode: Mode) -> Session
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (req_tx, mut req_rx) = mpsc::unbounded_channel::<OpenReply>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = watch::channel(false);
    let (close_tx, mut close_rx) = mpsc::unbounded_channel::<()>();
    let mut conn = yamux::Connection::new(io, config(), mode);
    let driver = tokio::spawn(async move {
        let mut waiting: VecDeque<OpenReply> = VecDeque::new();
        let mut closing: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let result = poll_fn(|cx| {
            if closing.is_none() {
                if let Poll::Ready(Some(())) = close_rx.poll_recv(cx) {
                    closing = Some(Box::pin(tokio::time::sleep(CLOSE_WAIT)));
                }
            }
            if let Some(deadline) = closing.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(TunnelError::Closed));
                }
                return conn.poll_close(cx).map_err(TunnelError::from);
            }
            while let Poll::Ready(Some(reply)) = req_rx.poll_recv(cx) {
                waiting.push_back(reply);
            }
            waiting.retain(|r| !r.is_closed());
            while !waiting.is_empty() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(Ok(stream)) => {
                        if let Some(reply) = waiting.pop_front() {
                            let _ = reply.send(Ok(stream.compat()));
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => break,
                }
            }
            loop {
                match conn.poll_next_inbound(cx) {
                    Poll::Ready(Some(Ok(stream))) => {
                        // A closed receiver drops the stream, which resets it.
                        let _ = in_tx.send(stream.compat());
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        let _ = closed_tx.send(true);
        for reply in waiting {
            let _ = reply.send(Err(TunnelError::Closed));
        }
        result
    });
    Session {
        opener: Opener {
            requests: req_tx,
            closed: closed_rx,
            close: close_tx,
            closing: Default::default(),
        },
        inbound: Inbound(in_rx),
        driver,
    }
}
