//! Kubernetes RBAC: evaluation of `PolicyRule`s (verbs, apiGroups,
//! resources, subresources, resourceNames, nonResourceURLs) for a user and
//! its groups, as kube-apiserver's RBAC authorizer does it.
//! (Filled by the management API work; the layout is settled here.)
