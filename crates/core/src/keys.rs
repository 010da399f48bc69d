//! Store key layout. Objects of the resource API live under
//! `/registry/{group}/{resource}/[{namespace}/]{name}` (as in kube-apiserver's
//! etcd layout); the server's own records (its CA, password hashes) live
//! under `/drover/…`, which the resource API never serves.

/// Where the server's CA certificate and key are kept.
pub const SERVER_CA: &str = "/drover/tls/ca";
/// Where the server's generated serving certificate and key are kept.
pub const SERVER_SERVING_CERT: &str = "/drover/tls/serving";

/// Where a user's password hash is kept (never inside the User object).
pub fn password_hash(user: &str) -> String {
    format!("/drover/passwords/{user}")
}

/// The prefix under which a resource's objects (in one namespace, if
/// given) live; the core group is spelled `core`.
pub fn prefix(group: &str, resource: &str, namespace: Option<&str>) -> String {
    let group = if group.is_empty() { "core" } else { group };
    match namespace {
        Some(ns) => format!("/registry/{group}/{resource}/{ns}/"),
        None => format!("/registry/{group}/{resource}/"),
    }
}

/// The key of a resource-API object.
pub fn object(group: &str, resource: &str, namespace: Option<&str>, name: &str) -> String {
    prefix(group, resource, namespace) + name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys() {
        assert_eq!(
            object("management.drover.io", "users", None, "admin"),
            "/registry/management.drover.io/users/admin"
        );
        assert_eq!(
            object("", "pods", Some("ns"), "p"),
            "/registry/core/pods/ns/p"
        );
    }
}
