//! The management API's own kinds, as this server serves them, and the
//! records that go with them. Nothing here reaches a cluster or knows of
//! replicas: the controllers and the HTTP edge build on it.
//!
//! - [`alerts`]: Notifier (write-only secrets, destinations checked, a
//!   test action) and AlertRule.
//! - [`management`]: Cluster, Project, the namespace rule of the management
//!   API, what a Cluster's or Project's deletion takes with it.
//! - [`registration`]: ClusterRegistrationToken and the import manifest.
//! - [`backups`]: the Backup kind (the leader's controller does the work).
//! - [`pod_security`]: PodSecurityAdmissionConfigurationTemplate and its
//!   built-ins.
//! - [`project_secrets`]: core v1 Secrets in a project's namespace, which
//!   the cluster's controller copies into the project's namespaces.
//! - [`namespaces`]: which downstream namespace is in which project
//!   (Drover's records, tied to the namespace's UID), and how a namespace
//!   write through the proxy is decided.

pub mod alerts;
pub mod backups;
pub mod management;
pub mod namespaces;
pub mod pod_security;
pub mod project_secrets;
pub mod registration;

pub use management::api_server;
