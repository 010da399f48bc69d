//! HTTPS plumbing shared by `drover server`, `drover sim`, the agent and
//! the CLI.
//!
//! - [`client`]: TLS client configurations (one CA, public roots, or none
//!   for a first contact) and CA fingerprints.
//! - [`pki`]: a CA and serving certificates made with rcgen, PEM parsing, and
//!   rustls server/client configurations.
//! - [`outbound`]: refusing user-supplied addresses inside the server's own
//!   network unless an admin allows it.
//! - [`serve`]: the accept loop — TLS handshakes with a deadline, HTTP/1.1
//!   and HTTP/2 with upgrades, a connection cap, graceful bounded shutdown.

pub mod client;
pub mod outbound;
pub mod pki;
pub mod serve;
