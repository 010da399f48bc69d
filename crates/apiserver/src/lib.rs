//! Drover's generic Kubernetes-conventions resource API over the store:
//! discovery, get/list/watch/create/update/patch/delete with
//! `metav1.Status` errors. It serves the management API and the simulator.
//! (Filled by the management API work; the layout is settled here.)
