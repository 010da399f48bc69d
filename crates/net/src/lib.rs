//! HTTPS plumbing shared by `drover server` and `drover sim`.
//!
//! - [`pki`]: a CA and serving certificates made with rcgen, PEM parsing, and
//!   rustls server/client configurations.
//! - [`serve`]: the accept loop — TLS handshakes with a deadline, HTTP/1.1
//!   and HTTP/2 with upgrades, a connection cap, graceful bounded shutdown.

pub mod pki;
pub mod serve;
