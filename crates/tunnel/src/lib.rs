//! The agent tunnel: the agent dials the server over a WebSocket and both
//! ends run a yamux stream multiplexer over it. The server opens one stream
//! per proxied request; streams carry plain HTTP/1.1, so upgrades (exec,
//! attach, port-forward) and long watches pass through as bytes.
//!
//! - [`ws`]: the WebSocket as a byte pipe ([`ws::WsIo`]) with keep-alive
//!   pings both ways and a dead-peer timeout.
//! - [`mux`]: the yamux session, driven by one task, with a cloneable
//!   [`mux::Opener`] for outbound streams and a channel of inbound ones.
//! - [`upgrade`]: upgrade requests told by their headers, and the splice of
//!   two upgraded connections.
//!
//! Flow control is yamux's: each stream has its own receive window, so a
//! slow reader stalls only its stream, and a response is never held whole
//! in memory.

pub mod mux;
pub mod upgrade;
pub mod ws;

pub use mux::{Inbound, Mode, Opener, Session, TunnelStream};
pub use ws::{Keepalive, WsIo};

/// The path of the agent's WebSocket on the server.
pub const CONNECT_PATH: &str = "/v1-public/connect";

/// What went wrong in the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The session is closed (peer gone, replaced or timed out).
    #[error("the tunnel is closed")]
    Closed,
    /// The multiplexer failed.
    #[error("tunnel multiplexer: {0}")]
    Mux(#[from] yamux::ConnectionError),
}
