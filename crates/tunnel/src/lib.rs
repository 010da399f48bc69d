//! The agent tunnel: the agent dials the server over a WebSocket and both
//! ends run a stream multiplexer over it, one stream per proxied request.
//! (Filled by the cluster import work; the layout is settled here.)
