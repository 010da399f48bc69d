//! What the signed-in user may do, asked once per page: a
//! `SelfSubjectRulesReview` of the management API (clusters, users,
//! members) or of a cluster through the proxy (its workloads), which the
//! pages read to hide the actions the server would refuse. Hiding is a
//! courtesy only: every action is still decided by the server.

use axum::http::Method;
use drover_rbac::{Attributes, PolicyRule};
use serde_json::{json, Value};

use crate::api::{seg, Api};

/// The rules the user holds in one namespace (cluster-wide ones included).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    rules: Vec<PolicyRule>,
    /// The server could not tell everything (another authorizer decides
    /// too): nothing is hidden, and the server still decides.
    incomplete: bool,
}

impl Rules {
    /// A review of the management API in `namespace`. A failed review
    /// allows nothing.
    pub(crate) async fn management(api: &Api, token: &str, namespace: &str) -> Rules {
        Self::review(api, token, "", namespace).await
    }

    /// A review of cluster `cluster` through the proxy, as the user.
    pub(crate) async fn cluster(api: &Api, token: &str, cluster: &str, namespace: &str) -> Rules {
        Self::review(
            api,
            token,
            &format!("/k8s/clusters/{}", seg(cluster)),
            namespace,
        )
        .await
    }

    async fn review(api: &Api, token: &str, prefix: &str, namespace: &str) -> Rules {
        let namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace}});
        let review = api
            .call(
                Method::POST,
                &format!("{prefix}/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"),
                token,
                Some(&body),
            )
            .await
            .unwrap_or(Value::Null);
        Rules::from_review(&review)
    }

    /// The rules of a `SelfSubjectRulesReview` answer (its resource rules
    /// are RBAC's `PolicyRule`s).
    pub(crate) fn from_review(review: &Value) -> Rules {
        let rules = review
            .pointer("/status/resourceRules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| serde_json::from_value(r.clone()).ok())
            .collect();
        Rules {
            rules,
            incomplete: review.pointer("/status/incomplete") == Some(&Value::Bool(true)),
        }
    }

    /// Whether `verb` on `resource` (`pods`, `pods/exec`) of `group` is
    /// allowed for every object of the kind (a rule limited to named
    /// objects is not).
    pub(crate) fn allows(&self, verb: &str, group: &str, resource: &str) -> bool {
        let (kind, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let wanted = Attributes::resource(verb, group, kind, "", "").on_subresource(sub);
        self.incomplete || self.rules.iter().any(|r| r.allows(&wanted))
    }
}

/// Why an action is not offered, for its tooltip.
pub(crate) fn why_not(verb: &str, resource: &str) -> String {
    format!("Your role does not allow you to {verb} {resource} here.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_allow_by_verb_group_and_resource() {
        let rules = Rules::from_review(&json!({"status": {"resourceRules": [
            {"verbs": ["get", "list"], "apiGroups": ["apps"], "resources": ["deployments"]},
            {"verbs": ["*"], "apiGroups": [""], "resources": ["pods", "pods/exec"]},
            {"verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["one"]},
        ]}}));
        assert!(rules.allows("list", "apps", "deployments"));
        assert!(
            !rules.allows("delete", "apps", "deployments"),
            "a named rule is not the kind"
        );
        assert!(!rules.allows("list", "", "deployments"), "groups count");
        assert!(rules.allows("create", "", "pods/exec"));
        assert!(!rules.allows("get", "", "secrets"));
        assert!(
            !Rules::default().allows("get", "", "pods"),
            "a failed review allows nothing"
        );
    }
}
