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

/// Paths under this prefix, on a tunnel stream, are for the agent itself
/// and never forwarded to the cluster; the server's cluster proxy refuses
/// them, so only the server can send them.
pub const AGENT_PREFIX: &str = "/drover-agent/";

/// `PUT` here, with `{"caChecksums": [...]}`, tells the agent which CA
/// checksums to trust from now on (a CA rotation).
pub const TRUST_PATH: &str = "/drover-agent/v1/trust";

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

impl TunnelError {
    /// Whether the session ended because the other end fell silent for the
    /// keep-alive's timeout.
    /// yamux reports the transport's failure as an I/O or a frame-decode
    /// error depending on which side noticed it, so the cause is looked
    /// for along the error's sources.
    pub fn is_silence(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return true;
                }
            }
            cause = e.source();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::TunnelError;
    use std::io;

    #[test]
    fn silence_is_found_whichever_side_noticed_it() {
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "silent");
        let read = TunnelError::Mux(yamux::ConnectionError::Decode(yamux::FrameDecodeError::Io(
            timed_out(),
        )));
        let write = TunnelError::Mux(yamux::ConnectionError::Io(timed_out()));
        assert!(read.is_silence());
        assert!(write.is_silence());
        let reset = TunnelError::Mux(yamux::ConnectionError::Io(
            io::ErrorKind::ConnectionReset.into(),
        ));
        assert!(!reset.is_silence());
        assert!(!TunnelError::Closed.is_silence());
    }
}
