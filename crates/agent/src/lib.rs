//! `drover agent`: keeps the tunnel to the server up and forwards each
//! stream to the downstream kube-apiserver with its own credentials.
//! (Filled by the cluster import work; the layout is settled here.)
