//! Drover's shared domain types, with no I/O: where objects live in the store,
//! how generated names look, quantities, and reading a watch's JSON lines. Every other crate may depend on this one.

pub mod api;
pub mod jsonl;
pub mod keys;
pub mod names;
pub mod pod_security;
pub mod quantity;
pub mod quota;

/// Drover's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub mod meta;
