//! Reviews about other identities: `SubjectAccessReview` (may this user do
//! that?) and `TokenReview` (whose token is this?), as kube-apiserver
//! answers them. Neither is stored.

use std::sync::Arc;

use drover_apiserver::{ApiError, Context, KindInfo, Registry, Strategy};
use drover_core::api::schema_for;
use drover_rbac::{Attributes, UserInfo};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::SimState;

fn info(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
) -> KindInfo {
    KindInfo {
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
        scale: false,
        streams: &[],
        actions: &[],
        categories: &[],
    }
}

/// Register both review kinds.
pub(crate) fn register(
    reg: &mut Registry,
    state: Arc<std::sync::OnceLock<std::sync::Weak<SimState>>>,
) {
    reg.register(
        info(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "subjectaccessreviews",
            "subjectaccessreview",
        ),
        AccessReview,
    );
    reg.register(
        info(
            "authentication.k8s.io",
            "TokenReview",
            "tokenreviews",
            "tokenreview",
        ),
        TokenReview { state },
    );
}

struct AccessReview;

impl Strategy for AccessReview {
    fn kind_from_url(&self) -> bool {
        true
    }

    fn schema(&self) -> Value {
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
    }

    fn decode_protobuf(&self, raw: &[u8]) -> Option<Result<Value, ApiError>> {
        let schema = crate::kinds::shared(
            "SubjectAccessReview",
            schema_for::<k8s_openapi::api::authorization::v1::SubjectAccessReview>,
        );
        Some(drover_apiserver::typed::decode(
            "api.authorization.v1.SubjectAccessReview",
            raw,
            &schema,
        ))
    }

    fn virtual_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> Option<BoxFuture<'a, Result<Value, ApiError>>> {
        Some(Box::pin(async move {
            let spec = obj.get("spec").cloned().unwrap_or_default();
            let user = UserInfo {
                name: spec["user"].as_str().unwrap_or_default().to_owned(),
                uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
                groups: spec["groups"]
                    .as_array()
                    .map(|g| {
                        g.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                extra: Default::default(),
            };
            let field = |o: &Value, k: &str| o[k].as_str().unwrap_or_default().to_owned();
            let attrs = if let Some(r) = spec.get("resourceAttributes") {
                Attributes::resource(
                    &field(r, "verb"),
                    &field(r, "group"),
                    &field(r, "resource"),
                    &field(r, "namespace"),
                    &field(r, "name"),
                )
                .on_subresource(&field(r, "subresource"))
            } else if let Some(n) = spec.get("nonResourceAttributes") {
                Attributes {
                    verb: field(n, "verb"),
                    path: field(n, "path"),
                    ..Default::default()
                }
            } else {
                return Err(ApiError::invalid(
                    "SubjectAccessReview",
                    "authorization.k8s.io",
                    "",
                    &[drover_apiserver::FieldError::required(
                        "spec.resourceAttributes",
                        "resourceAttributes or nonResourceAttributes is required",
                    )],
                ));
            };
            if user.name.is_empty() && user.groups.is_empty() {
                return Err(ApiError::invalid(
                    "SubjectAccessReview",
                    "authorization.k8s.io",
                    "",
                    &[drover_apiserver::FieldError::required(
                        "spec.user",
                        "at least one of user or group must be specified",
                    )],
                ));
            }
            let allowed = ctx.authorizer.authorize(&user, &attrs).await?;
            Ok(
                json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": null}, "spec": spec, "status": {"allowed": allowed}}),
            )
        }))
    }
}

struct TokenReview {
    state: Arc<std::sync::OnceLock<std::sync::Weak<SimState>>>,
}

impl Strategy for TokenReview {
    fn kind_from_url(&self) -> bool {
        true
    }

    fn schema(&self) -> Value {
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
    }

    fn decode_protobuf(&self, raw: &[u8]) -> Option<Result<Value, ApiError>> {
        let schema = crate::kinds::shared(
            "TokenReview",
            schema_for::<k8s_openapi::api::authentication::v1::TokenReview>,
        );
        Some(drover_apiserver::typed::decode(
            "api.authentication.v1.TokenReview",
            raw,
            &schema,
        ))
    }

    fn virtual_create<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a Value,
    ) -> Option<BoxFuture<'a, Result<Value, ApiError>>> {
        Some(Box::pin(async move {
            let token = obj
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let state = self
                .state
                .get()
                .and_then(std::sync::Weak::upgrade)
                .ok_or_else(|| ApiError::unavailable("the cluster is stopping"))?;
            let audiences: Option<Vec<String>> = obj
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .filter(|a| !a.is_empty());
            let found = if crate::is_admin_token(&state, token) {
                crate::identify(&state, token)
                    .await
                    .map(|u| (u, vec![crate::tokens::ISSUER.to_owned()]))
            } else {
                crate::tokens::authenticate(
                    &state.store,
                    &state.signer,
                    token,
                    audiences.as_deref(),
                )
                .await
            };
            let status = match found {
                Some((u, audiences)) => {
                    let mut user = json!({"username": u.name, "uid": u.uid, "groups": u.groups});
                    if !u.extra.is_empty() {
                        user["extra"] = json!(u.extra);
                    }
                    json!({"authenticated": true, "user": user, "audiences": audiences})
                }
                None => {
                    json!({"authenticated": false, "user": {}, "error": "[invalid bearer token, service account token has been invalidated]"})
                }
            };
            Ok(
                json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": null}, "spec": obj.get("spec"), "status": status}),
            )
        }))
    }
}
