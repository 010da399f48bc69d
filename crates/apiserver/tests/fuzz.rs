//! Fuzzing the resource API with generated input (proptest, on stable
//! Rust): request paths and queries, JSON and protobuf bodies, merge,
//! strategic-merge and JSON patches, label and field selectors, and
//! quantities — each parser on its own, then whole requests through the
//! router. No input may panic, and every refusal is a `metav1.Status`
//! whose code is the HTTP status.
//!
//! `./scripts/test` runs a bounded number of cases (proptest's 256 per
//! property; 1,000 whole requests). A longer run:
//! `PROPTEST_CASES=100000 cargo test --release -p drover-apiserver --test fuzz`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use drover_apiserver::selector::{FieldSelector, LabelSelector};
use drover_apiserver::{
    ApiError, ApiServer, Authorizer, KindInfo, Namespaces, Registry, Strategy as KindStrategy,
};
use drover_rbac::{PolicyRule, RuleSet, UserInfo};
use drover_store::{Store, StoreOptions};
use futures::future::BoxFuture;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

/// Words the generators draw on, so that inputs reach the interesting
/// branches (Kubernetes' own field names, patch directives, operators).
const WORDS: &[&str] = &[
    "metadata",
    "name",
    "namespace",
    "spec",
    "status",
    "items",
    "kind",
    "apiVersion",
    "labels",
    "annotations",
    "finalizers",
    "resourceVersion",
    "generateName",
    "uid",
    "containers",
    "ports",
    "env",
    "volumes",
    "$patch",
    "$retainKeys",
    "$deleteFromPrimitiveList/finalizers",
    "$setElementOrder/containers",
    "op",
    "path",
    "value",
    "from",
    "add",
    "remove",
    "replace",
    "move",
    "copy",
    "test",
    "replicas",
    "size",
    "color",
    "n",
    "Widget",
    "Gadget",
    "test.drover.io/v1",
    "v1",
    "default",
    "delete",
    "merge",
    "replace",
    "x",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
        1 => "[a-z0-9./~-]{0,20}",
    ]
}

/// Any JSON value, leaning on Kubernetes-shaped keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((word(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON patch: ops that are mostly well formed, with generated paths.
fn json_patch() -> impl Strategy<Value = Value> {
    let pointer = proptest::collection::vec(
        prop_oneof![word(), "[0-9]{1,3}", Just("-".to_owned())],
        0..5,
    )
    .prop_map(|parts| parts.iter().map(|p| format!("/{p}")).collect::<String>());
    let op = (
        proptest::sample::select(
            &["add", "remove", "replace", "move", "copy", "test", "bogus"][..],
        ),
        pointer.clone(),
        pointer,
        json_value(),
    )
        .prop_map(
            |(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}),
        );
    prop_oneof![
        4 => proptest::collection::vec(op, 0..8).prop_map(Value::Array),
        1 => json_value(),
    ]
}

fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn request_paths_parse_or_are_refused(
        method in proptest::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"][..]),
        parts in proptest::collection::vec(prop_oneof![word(), Just("api".to_owned()), Just("apis".to_owned()), Just("%2e%2e".to_owned()), Just(String::new())], 0..9),
        watch in any::<bool>(),
    ) {
        let path = format!("/{}", parts.join("/"));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let _ = drover_apiserver::request::parse(&method, &path, watch);
    }

    #[test]
    fn label_selectors_parse_or_are_refused(s in "\\PC{0,60}", labels in proptest::collection::btree_map(word(), word(), 0..5)) {
        if let Ok(sel) = LabelSelector::parse(&s) {
            let _ = sel.matches(&labels);
        }
    }

    #[test]
    fn label_selectors_of_kubernetes_shape(
        terms in proptest::collection::vec((word(), proptest::sample::select(&["=", "==", "!=", " in ", " notin ", "", "!"][..]), proptest::collection::vec(word(), 0..3)), 0..4),
        labels in proptest::collection::btree_map(word(), word(), 0..5),
    ) {
        let s = terms
            .iter()
            .map(|(k, op, vs)| match *op {
                " in " | " notin " => format!("{k}{op}({})", vs.join(",")),
                "!" => format!("!{k}"),
                "" => k.clone(),
                op => format!("{k}{op}{}", vs.first().cloned().unwrap_or_default()),
            })
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(sel) = LabelSelector::parse(&s) {
            let _ = sel.matches(&labels);
        }
    }

    #[test]
    fn field_selectors_parse_or_are_refused(s in "\\PC{0,60}") {
        if let Ok(sel) = FieldSelector::parse(&s, &["metadata.name", "metadata.namespace"]) {
            let _ = sel.matches(|f| f.to_owned());
        }
    }

    #[test]
    fn quantities_parse_and_round_trip(s in "[+-]?[0-9]{0,20}(\\.[0-9]{0,6})?([eE][+-]?[0-9]{1,3}|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[a-zA-Z]{0,2})") {
        if let Some(q) = drover_core::quantity::parse(&s) {
            for memory in [false, true] {
                let text = drover_core::quantity::format(q, memory);
                prop_assert_eq!(drover_core::quantity::parse(&text), Some(q), "{} → {}", s, text);
            }
        }
    }

    #[test]
    fn any_text_as_a_quantity(s in "\\PC{0,40}") {
        let _ = drover_core::quantity::parse(&s);
    }

    #[test]
    fn strategic_merge_patches_apply_or_are_refused(mut doc in json_value(), patch in json_value()) {
        let _ = drover_apiserver::strategic::apply(&mut doc, &patch, drover_apiserver::strategic::kubernetes_lists);
    }

    #[test]
    fn json_patches_apply_or_are_refused(mut doc in json_value(), patch in json_patch()) {
        if let Ok(p) = serde_json::from_value::<json_patch::Patch>(patch) {
            let _ = drover_apiserver::limits::apply_json_patch(&mut doc, &p);
        }
    }

    #[test]
    fn protobuf_envelopes_decode_or_are_refused(body in proptest::collection::vec(any::<u8>(), 0..200), magic in any::<bool>()) {
        let mut bytes = if magic { b"k8s\0".to_vec() } else { Vec::new() };
        bytes.extend(body);
        if let Ok((_, _, raw)) = drover_apiserver::protobuf::unwrap_envelope(&bytes) {
            if let Ok(msg) = drover_apiserver::protobuf::Message::parse(raw) {
                for n in 0..8 {
                    let _ = msg.string(n);
                    let _ = msg.message(n);
                    let _ = msg.repeated(n);
                }
            }
        }
    }
}

// Whole requests, through the router.

struct Thing;
impl KindStrategy for Thing {
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {"type": "object", "properties": {
                "size": {"type": "integer"}, "color": {"type": "string"},
                "replicas": {"type": "integer"},
                "containers": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
        }})
    }
    fn list_strategies(&self) -> Option<drover_apiserver::strategic::ListStrategies> {
        Some(drover_apiserver::strategic::kubernetes_lists)
    }
}

struct Everything;
impl Authorizer for Everything {
    fn rules<'a>(&'a self, user: &'a UserInfo) -> BoxFuture<'a, Result<Arc<RuleSet>, ApiError>> {
        Box::pin(async move {
            let verbs: &[&str] = if user.name == "reader" {
                &["get", "list", "watch"]
            } else {
                &["*"]
            };
            Ok(Arc::new(RuleSet {
                cluster: vec![PolicyRule::resource(verbs, &["*"], &["*"])],
                ..Default::default()
            }))
        })
    }
}

struct DefaultOnly;
impl Namespaces for DefaultOnly {
    fn check<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if ns == "default" {
                Ok(())
            } else {
                Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("namespaces {ns:?} not found"),
                ))
            }
        })
    }
}

fn kind(kind: &'static str, plural: &'static str, namespaced: bool) -> KindInfo {
    KindInfo {
        group: "test.drover.io",
        version: "v1",
        kind,
        plural,
        singular: "",
        short_names: &[],
        namespaced,
        status: true,
        list_filtered: namespaced,
        name_prefix: Some("t-"),
        create_only: false,
        streams: &[],
        scale: true,
        actions: &[],
        categories: &[],
    }
}

async fn router(dir: &std::path::Path) -> Router {
    let store = Store::open(
        &format!("sqlite://{}/s.db", dir.display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let mut reg = Registry::default();
    reg.register(kind("Widget", "widgets", false), Thing);
    reg.register(kind("Gadget", "gadgets", true), Thing);
    drover_apiserver::reviews::register(&mut reg);
    let api =
        ApiServer::with_garbage_collector(store, reg, Arc::new(Everything), Arc::new(DefaultOnly));
    Router::new().fallback(move |mut req: axum::extract::Request| {
        let api = api.clone();
        async move {
            let name = req
                .headers()
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("admin")
                .to_owned();
            req.extensions_mut().insert(UserInfo {
                name,
                groups: vec!["system:authenticated".into()],
                ..Default::default()
            });
            api.handle(req).await
        }
    })
}

/// A whole request: method, path, query, content type, body, user.
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    path: String,
    query: String,
    content_type: &'static str,
    body: Vec<u8>,
    user: &'static str,
}

fn call() -> impl Strategy<Value = Call> {
    let segment = prop_oneof![
        6 => proptest::sample::select(&[
            "apis", "test.drover.io", "v1", "widgets", "gadgets", "namespaces", "default", "other",
            "status", "scale", "t-a", "a", "selfsubjectaccessreviews", "authorization.k8s.io",
            "api", "openapi", "v3", "", "..", "%2F", "%zz",
        ][..]).prop_map(str::to_owned),
        1 => word(),
    ];
    let path = prop_oneof![
        3 => proptest::sample::select(&[
            "/apis/test.drover.io/v1/widgets", "/apis/test.drover.io/v1/widgets/a",
            "/apis/test.drover.io/v1/widgets/a/status", "/apis/test.drover.io/v1/widgets/a/scale",
            "/apis/test.drover.io/v1/namespaces/default/gadgets",
            "/apis/test.drover.io/v1/namespaces/default/gadgets/a",
            "/apis/test.drover.io/v1/gadgets",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        ][..]).prop_map(str::to_owned),
        2 => proptest::collection::vec(segment, 0..8).prop_map(|s| format!("/{}", s.join("/"))),
    ];
    let param = prop_oneof![
        Just("watch=1".to_owned()),
        Just("watch=true".to_owned()),
        "[a-zA-Z]{1,16}=[ -~]{0,24}".prop_map(|s| s.replace(['#', ' '], "+")),
        "\\PC{0,40}".prop_map(|s| format!("labelSelector={}", url_encode(&s))),
        "\\PC{0,40}".prop_map(|s| format!("fieldSelector={}", url_encode(&s))),
        "-?[0-9]{0,20}".prop_map(|s| format!("limit={s}")),
        "[A-Za-z0-9_=-]{0,60}".prop_map(|s| format!("continue={s}")),
        "[0-9a-z]{0,12}".prop_map(|s| format!("resourceVersion={s}")),
        proptest::sample::select(
            &[
                "fieldValidation=Strict",
                "fieldValidation=Warn",
                "fieldValidation=Ignore",
                "fieldValidation=Bogus",
                "dryRun=All",
                "dryRun=x",
                "propagationPolicy=Orphan",
                "propagationPolicy=Foreground",
                "propagationPolicy=x",
                "includeObject=Object"
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    let body = prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => (json_value(), proptest::sample::select(&["Widget", "Gadget", "SelfSubjectAccessReview", "Other"][..]))
            .prop_map(|(spec, kind)| {
                let version = if kind == "SelfSubjectAccessReview" { "authorization.k8s.io/v1" } else { "test.drover.io/v1" };
                json!({"apiVersion": version, "kind": kind, "metadata": {"name": "a", "namespace": "default"}, "spec": spec}).to_string().into_bytes()
            }),
        2 => json_patch().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| [b"k8s\0".to_vec(), b].concat()),
        1 => Just(Vec::new()),
    ];
    (
        proptest::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE"][..]),
        path,
        proptest::collection::vec(param, 0..3),
        proptest::sample::select(
            &[
                "application/json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/json-patch+json",
                "application/apply-patch+yaml",
                "application/vnd.kubernetes.protobuf",
                "text/plain",
                "",
            ][..],
        ),
        body,
        proptest::sample::select(&["admin", "reader"][..]),
    )
        .prop_map(|(method, path, params, content_type, body, user)| Call {
            method,
            path,
            query: params.join("&"),
            content_type,
            body,
            user,
        })
}

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn whole_requests_get_an_answer_and_every_refusal_is_a_status() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = rt.block_on(router(dir.path()));
    // Some objects to update, patch and delete.
    rt.block_on(async {
        for path in ["/apis/test.drover.io/v1/widgets", "/apis/test.drover.io/v1/namespaces/default/gadgets"] {
            let kind = if path.ends_with("widgets") { "Widget" } else { "Gadget" };
            let obj = json!({"apiVersion": "test.drover.io/v1", "kind": kind, "metadata": {"name": "a"}, "spec": {"size": 1, "containers": [{"name": "c"}]}});
            let req = Request::post(path).header("content-type", "application/json").body(Body::from(obj.to_string())).unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
        }
    });
    let mut runner = TestRunner::new(config(1000));
    runner
        .run(&call(), |c| {
            let app = app.clone();
            rt.block_on(async move {
                let uri = if c.query.is_empty() {
                    c.path.clone()
                } else {
                    format!("{}?{}", c.path, c.query)
                };
                let Ok(req) = Request::builder()
                    .method(c.method)
                    .uri(&uri)
                    .header("content-type", c.content_type)
                    .header("x-user", c.user)
                    .body(Body::from(c.body.clone()))
                else {
                    return Ok(()); // not a request hyper would build either
                };
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status();
                if status.is_success() {
                    return Ok(()); // a watch may stream on: not read
                }
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                prop_assert_eq!(
                    &body["kind"],
                    "Status",
                    "{} {}: {} {}",
                    c.method,
                    uri,
                    status,
                    String::from_utf8_lossy(&bytes)
                );
                prop_assert_eq!(
                    body["code"].as_u64(),
                    Some(status.as_u16() as u64),
                    "{}",
                    body
                );
                prop_assert!(
                    status.as_u16() != 500,
                    "a 500 for {} {}: {}",
                    c.method,
                    uri,
                    body
                );
                Ok(())
            })
        })
        .unwrap();
}
