//! The `drover` command-line client: login, contexts, clusters, projects,
//! members, tokens and kubectl passthrough.
//! (Filled by the CLI work; the layout is settled here.)
