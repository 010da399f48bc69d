//! The self-reviews `kubectl auth` uses, for any server built on this
//! crate: `SelfSubjectAccessReview` (`kubectl auth can-i`),
//! `SelfSubjectRulesReview` (`kubectl auth can-i --list`) and
//! `SelfSubjectReview` (`kubectl auth whoami`). kubectl sends them as
//! protobuf; they are answered from the server's [`Authorizer`] and never
//! stored.
//!
//! [`Authorizer`]: crate::Authorizer

use drover_rbac::Attributes;
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::protobuf::Message;
use crate::{ApiError, Context, FieldError, KindInfo, Registry, Strategy};

/// Register the review kinds.
pub fn register(reg: &mut Registry) {
    let review = |group, kind, plural, singular| KindInfo {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        short_names: &[],
        namespaced: false,
        status: false,
        list_filtered: false,
        name_prefix: None,
        create_only: true,
        streams: &[],
        scale: false,
        actions: &[],
        categories: &[],
    };
    reg.register(
        review(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
        ),
        AccessReview,
    );
    reg.register(
        review(
            "authorization.k8s.io",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            "selfsubjectrulesreview",
        ),
        RulesReview,
    );
    reg.register(
        review(
            "authentication.k8s.io",
            "SelfSubjectReview",
            "selfsubjectreviews",
            "selfsubjectreview",
        ),
        WhoAmI,
    );
}

fn review_schema() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// `SelfSubjectAccessReview`: may I do this? (`kubectl auth can-i`)
struct AccessReview;

impl Strategy for AccessReview {
    fn schema(&self) -> Value {
        review_schema()
    }

    fn kind_from_url(&self) -> bool {
        true
    }

    fn decode_protobuf(&self, raw: &[u8]) -> Option<Result<Value, ApiError>> {
        Some((|| {
            let review = Message::parse(raw)?;
            let spec = review.message(2)?;
            let mut out = json!({"spec": {}});
            if spec.bytes(1).is_some() {
                let a = spec.message(1)?;
                out["spec"]["resourceAttributes"] = json!({
                    "namespace": a.string(1)?, "verb": a.string(2)?, "group": a.string(3)?, "version": a.string(4)?,
                    "resource": a.string(5)?, "subresource": a.string(6)?, "name": a.string(7)?,
                });
            }
            if spec.bytes(2).is_some() {
                let n = spec.message(2)?;
                out["spec"]["nonResourceAttributes"] =
                    json!({"path": n.string(1)?, "verb": n.string(2)?});
            }
            Ok(out)
        })())
    }

    fn virtual_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> Option<BoxFuture<'a, Result<Value, ApiError>>> {
        Some(Box::pin(async move {
            let attrs = if let Some(r) = obj.pointer("/spec/resourceAttributes") {
                let f = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                Attributes::resource(
                    &f("verb"),
                    &f("group"),
                    &f("resource"),
                    &f("namespace"),
                    &f("name"),
                )
                .on_subresource(&f("subresource"))
            } else if let Some(n) = obj.pointer("/spec/nonResourceAttributes") {
                let f = |k: &str| {
                    n.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                Attributes {
                    verb: f("verb"),
                    path: f("path"),
                    ..Default::default()
                }
            } else {
                return Err(ApiError::invalid(
                    "SelfSubjectAccessReview",
                    "authorization.k8s.io",
                    "",
                    &[FieldError::required(
                        "spec.resourceAttributes",
                        "resourceAttributes or nonResourceAttributes is required",
                    )],
                ));
            };
            let allowed = ctx.authorizer.authorize(&ctx.user, &attrs).await?;
            // Like kube's RBAC authorizer: no reason on a plain denial.
            let status = json!({"allowed": allowed});
            Ok(json!({
                "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": null}, "spec": obj.get("spec").cloned().unwrap_or(json!({})), "status": status,
            }))
        }))
    }
}

/// `SelfSubjectRulesReview`: what may I do in this namespace? (`kubectl
/// auth can-i --list`) The rules that apply everywhere, then the
/// namespace's own, as kube's RBAC authorizer lists them.
struct RulesReview;

impl Strategy for RulesReview {
    fn schema(&self) -> Value {
        review_schema()
    }

    fn kind_from_url(&self) -> bool {
        true
    }

    fn decode_protobuf(&self, raw: &[u8]) -> Option<Result<Value, ApiError>> {
        Some((|| {
            let review = Message::parse(raw)?;
            let namespace = match review.bytes(2) {
                Some(_) => review.message(2)?.string(1)?,
                None => String::new(),
            };
            Ok(json!({"spec": {"namespace": namespace}}))
        })())
    }

    fn virtual_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> Option<BoxFuture<'a, Result<Value, ApiError>>> {
        Some(Box::pin(async move {
            let namespace = obj
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if namespace.is_empty() {
                return Err(ApiError::invalid(
                    "SelfSubjectRulesReview",
                    "authorization.k8s.io",
                    "",
                    &[FieldError::required("spec.namespace", "")],
                ));
            }
            let held = ctx.authorizer.rules(&ctx.user).await?;
            let mut resource_rules = Vec::new();
            let mut non_resource_rules = Vec::new();
            let namespaced = held.namespaced.get(namespace).into_iter().flatten();
            for rule in held.cluster.iter().chain(namespaced) {
                if rule.non_resource_urls.is_empty() {
                    let mut r = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups, "resources": rule.resources});
                    if !rule.resource_names.is_empty() {
                        r["resourceNames"] = json!(rule.resource_names);
                    }
                    resource_rules.push(r);
                } else {
                    non_resource_rules.push(
                        json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}),
                    );
                }
            }
            Ok(json!({
                "kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": null}, "spec": {"namespace": namespace},
                "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false},
            }))
        }))
    }
}

/// `SelfSubjectReview`: who am I? (`kubectl auth whoami`)
struct WhoAmI;

impl Strategy for WhoAmI {
    fn schema(&self) -> Value {
        review_schema()
    }

    fn kind_from_url(&self) -> bool {
        true
    }

    fn decode_protobuf(&self, _raw: &[u8]) -> Option<Result<Value, ApiError>> {
        Some(Ok(json!({})))
    }

    fn virtual_create<'a>(
        &'a self,
        ctx: &'a Context,
        _obj: &'a Value,
    ) -> Option<BoxFuture<'a, Result<Value, ApiError>>> {
        Some(Box::pin(async move {
            Ok(json!({
                "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "status": {"userInfo": {"username": ctx.user.name, "uid": ctx.user.uid, "groups": ctx.user.groups}},
            }))
        }))
    }
}
