//! Impersonation, as kube-apiserver does it: `Impersonate-User`,
//! `Impersonate-Group` (repeatable), `Impersonate-Uid` and
//! `Impersonate-Extra-{key}`. The caller needs the `impersonate` verb on
//! `users` (or `serviceaccounts` in their namespace), `groups`, `uids` and
//! `userextras/{key}` of the `authentication.k8s.io` group (core for users,
//! groups and service accounts), honouring resourceNames; then the request
//! proceeds as the impersonated identity, which also gets
//! `system:authenticated`.

use axum::http::HeaderMap;
use drover_apiserver::error::Subject;
use drover_apiserver::{ApiError, Authorizer};
use drover_rbac::{Attributes, UserInfo};

/// The identity a request acts as: the caller's own, or the one it may
/// impersonate.
pub async fn resolve(
    authz: &dyn Authorizer,
    caller: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    // A header that cannot be read is refused, never ignored: ignoring it
    // would run the request as the caller.
    let mut unreadable = false;
    let mut values = |name: &str| -> Vec<String> {
        let mut out = Vec::new();
        for v in headers.get_all(name) {
            match v.to_str() {
                Ok(s) if !s.is_empty() => out.push(s.to_owned()),
                Ok(_) => {}
                Err(_) => unreadable = true,
            }
        }
        out
    };
    let user = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let mut extras: Vec<(String, String)> = Vec::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-") {
            match v.to_str() {
                Ok(s) => extras.push((key.to_owned(), s.to_owned())),
                Err(_) => unreadable = true,
            }
        }
    }
    if unreadable {
        return Err(ApiError::bad_request(
            "an Impersonate-* header is not valid text",
        ));
    }
    let Some(user) = user else {
        if !groups.is_empty() || uid.is_some() || !extras.is_empty() {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, a uid or extras without impersonating a user",
            ));
        }
        return Ok(caller);
    };
    let check = |attrs: Attributes, resource: &'static str, name: String| {
        let caller = caller.clone();
        async move {
            if authz.authorize(&caller, &attrs).await? {
                Ok(())
            } else {
                let subject = Subject {
                    group: if resource == "userextras" || resource == "uids" {
                        "authentication.k8s.io"
                    } else {
                        ""
                    },
                    resource,
                    name: &name,
                };
                Err(ApiError::forbidden(
                    &caller.name,
                    "impersonate",
                    subject,
                    &attrs.namespace,
                    &attrs.subresource,
                ))
            }
        }
    };
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => {
            check(
                Attributes::resource("impersonate", "", "serviceaccounts", ns, sa),
                "serviceaccounts",
                sa.to_owned(),
            )
            .await?
        }
        None => {
            check(
                Attributes::resource("impersonate", "", "users", "", &user),
                "users",
                user.clone(),
            )
            .await?
        }
    }
    for g in &groups {
        check(
            Attributes::resource("impersonate", "", "groups", "", g),
            "groups",
            g.clone(),
        )
        .await?;
    }
    if let Some(u) = &uid {
        check(
            Attributes::resource("impersonate", "authentication.k8s.io", "uids", "", u),
            "uids",
            u.clone(),
        )
        .await?;
    }
    let mut extra = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (k, v) in extras {
        check(
            Attributes::resource("impersonate", "authentication.k8s.io", "userextras", "", &v)
                .on_subresource(&k),
            "userextras",
            v.clone(),
        )
        .await?;
        extra.entry(k).or_default().push(v);
    }
    let mut all_groups = groups;
    // A service account gets its groups when none are named, as in kube.
    if all_groups.is_empty() && user.starts_with("system:serviceaccount:") {
        let ns = user.split(':').nth(2).unwrap_or_default();
        all_groups.extend([
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
        ]);
    }
    if !all_groups.iter().any(|g| g == "system:authenticated") {
        all_groups.push("system:authenticated".to_owned());
    }
    tracing::debug!(caller = %caller.name, as_user = %user, "impersonating");
    Ok(UserInfo {
        name: user,
        uid: uid.unwrap_or_default(),
        groups: all_groups,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::SimAuthorizer;
    use axum::http::HeaderValue;
    use serde_json::json;

    #[tokio::test]
    async fn impersonating_needs_the_verb() {
        let dir = tempfile::tempdir().unwrap();
        let store = drover_store::Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        let rbac = "rbac.authorization.k8s.io";
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "impersonate-bob"},
            "rules": [{"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users"], "resourceNames": ["bob"]}]});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "carol"},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "impersonate-bob"}, "subjects": [{"kind": "User", "name": "carol"}]});
        store
            .create(
                &drover_core::keys::object(rbac, "clusterroles", None, "impersonate-bob"),
                role.to_string(),
            )
            .await
            .unwrap();
        store
            .create(
                &drover_core::keys::object(rbac, "clusterrolebindings", None, "carol"),
                binding.to_string(),
            )
            .await
            .unwrap();
        let authz = SimAuthorizer::new(store);
        let carol = UserInfo {
            name: "carol".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let as_bob = resolve(
            authz.as_ref(),
            carol.clone(),
            &headers(&[("impersonate-user", "bob")]),
        )
        .await
        .unwrap();
        assert_eq!(as_bob.name, "bob");
        assert_eq!(as_bob.groups, ["system:authenticated"]);
        let e = resolve(
            authz.as_ref(),
            carol.clone(),
            &headers(&[("impersonate-user", "admin")]),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"users "admin" is forbidden: User "carol" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let e = resolve(
            authz.as_ref(),
            carol.clone(),
            &headers(&[
                ("impersonate-user", "bob"),
                ("impersonate-group", "system:masters"),
            ]),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, 403, "groups need their own permission");
        let e = resolve(
            authz.as_ref(),
            carol.clone(),
            &headers(&[("impersonate-group", "x")]),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, 400);
        let same = resolve(authz.as_ref(), carol.clone(), &HeaderMap::new())
            .await
            .unwrap();
        assert_eq!(same, carol);
    }
}
