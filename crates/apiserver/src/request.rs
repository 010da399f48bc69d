//! What a request path asks for, parsed as kube-apiserver's
//! `RequestInfoFactory` does: API prefix, group, version, namespace,
//! resource, name, subresource, and the verb from the method.

use axum::http::Method;

/// A parsed resource request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// API group (`""` for `/api`).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace, or empty.
    pub namespace: String,
    /// Resource (plural).
    pub resource: String,
    /// Object name, or empty for collections.
    pub name: String,
    /// Subresource, or empty.
    pub subresource: String,
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
}

/// What a path under `/api` or `/apis` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/api`: the core API versions.
    CoreVersions,
    /// `/apis`: the API groups.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`: the resources of a version.
    Resources {
        /// Group.
        group: String,
        /// Version.
        version: String,
    },
    /// A resource request.
    Resource(RequestInfo),
}

/// Subresources of a namespace that keep `namespaces/{name}` as the object.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parse a path and method; `None` when the path names nothing.
pub fn parse(method: &Method, path: &str, watch_param: bool) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    let (group, version, mut rest) = match parts.as_slice() {
        ["api"] => return Some(Target::CoreVersions),
        ["apis"] => return Some(Target::Groups),
        ["apis", g] => return Some(Target::Group((*g).to_owned())),
        ["api", v] => {
            return Some(Target::Resources {
                group: String::new(),
                version: (*v).to_owned(),
            })
        }
        ["apis", g, v] => {
            return Some(Target::Resources {
                group: (*g).to_owned(),
                version: (*v).to_owned(),
            })
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let mut info = RequestInfo {
        group: group.to_owned(),
        version: version.to_owned(),
        ..Default::default()
    };
    let mut watch = watch_param;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest = &rest[1..];
    }
    if rest.first() == Some(&"namespaces") && rest.len() >= 2 {
        info.namespace = rest[1].to_owned();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        } else {
            // The namespace object itself (or its status/finalize).
            // kube-apiserver authorizes a namespace object as being in
            // itself, so RoleBindings there can grant get on it.
            info.namespace = rest[1].to_owned();
            info.resource = "namespaces".into();
            info.name = rest[1].to_owned();
            info.subresource = rest.get(2).map(|s| (*s).to_owned()).unwrap_or_default();
            info.verb = verb(method, true, watch)?;
            return Some(Target::Resource(info));
        }
    }
    match rest {
        [resource] => info.resource = (*resource).to_owned(),
        [resource, name] => {
            info.resource = (*resource).to_owned();
            info.name = (*name).to_owned();
        }
        [resource, name, sub] => {
            info.resource = (*resource).to_owned();
            info.name = (*name).to_owned();
            info.subresource = (*sub).to_owned();
        }
        _ => return None,
    }
    info.verb = verb(method, !info.name.is_empty(), watch)?;
    Some(Target::Resource(info))
}

fn verb(method: &Method, named: bool, watch: bool) -> Option<String> {
    let v = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return None,
    };
    Some(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(method: Method, path: &str) -> RequestInfo {
        match parse(&method, path, false) {
            Some(Target::Resource(info)) => info,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let i = res(
            Method::GET,
            "/apis/management.drover.io/v1/namespaces/c-1/projects/p-1",
        );
        assert_eq!(
            (
                i.group.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.verb.as_str()
            ),
            ("management.drover.io", "c-1", "projects", "p-1", "get")
        );
        let i = res(Method::GET, "/apis/management.drover.io/v1/clusters");
        assert_eq!(i.verb, "list");
        let i = res(
            Method::PUT,
            "/apis/management.drover.io/v1/clusters/c-1/status",
        );
        assert_eq!(
            (i.subresource.as_str(), i.verb.as_str()),
            ("status", "update")
        );
        let i = res(Method::GET, "/api/v1/namespaces/default");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("namespaces", "default", "default")
        );
        let i = res(Method::PUT, "/api/v1/namespaces/x/finalize");
        assert_eq!(
            (i.resource.as_str(), i.subresource.as_str()),
            ("namespaces", "finalize")
        );
        let i = res(Method::GET, "/api/v1/watch/namespaces/x/pods");
        assert_eq!((i.verb.as_str(), i.namespace.as_str()), ("watch", "x"));
        let i = res(Method::DELETE, "/api/v1/namespaces/x/pods");
        assert_eq!(i.verb, "deletecollection");
        assert_eq!(parse(&Method::GET, "/apis", false), Some(Target::Groups));
        assert!(parse(&Method::GET, "/apis/g/v/a/b/c/d", false).is_none());
        assert!(parse(&Method::GET, "/apis/g/v/../x", false).is_none());
        assert!(parse(&Method::GET, "/apis/g/v//x", false).is_none());
    }
}
