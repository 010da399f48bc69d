//! `drover sim`: a simulated downstream Kubernetes cluster built from the
//! store, resource API and rbac crates, for tests, demos and benchmarks.
//! (Filled by the simulator work; the layout is settled here.)
