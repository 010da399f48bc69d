//! The generic resource API, driven through its router without a socket,
//! with two test kinds: cluster-scoped `Widget` (with status) and namespaced
//! `Gadget`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use drover_apiserver::{
    ApiError, ApiServer, Authorizer, Column, KindInfo, Namespaces, Registry, Strategy,
};
use drover_rbac::{PolicyRule, RuleSet, UserInfo};
use drover_store::{Store, StoreOptions};
use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const G: &str = "test.drover.io";

struct Widget;
impl Strategy for Widget {
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {"type": "object", "properties": {"size": {"type": "integer"}, "color": {"type": "string"}}},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        }})
    }
    fn columns(&self) -> Vec<Column> {
        vec![Column::new("Color", "string", "color", "/spec/color")]
    }
}

struct Gadget;
impl Strategy for Gadget {
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {"type": "object", "properties": {"n": {"type": "integer"}}},
        }})
    }
}

/// Allows everything, except what the test puts in `deny` (by user).
#[derive(Default)]
struct TestAuthz {
    limited: Mutex<Option<(String, RuleSet)>>,
}
impl Authorizer for TestAuthz {
    fn rules<'a>(
        &'a self,
        user: &'a UserInfo,
    ) -> BoxFuture<'a, Result<std::sync::Arc<RuleSet>, ApiError>> {
        Box::pin(async move {
            match &*self.limited.lock().unwrap() {
                Some((name, rules)) if *name == user.name => Ok(std::sync::Arc::new(rules.clone())),
                _ => Ok(std::sync::Arc::new(RuleSet {
                    cluster: vec![PolicyRule::resource(&["*"], &["*"], &["*"])],
                    ..Default::default()
                })),
            }
        })
    }
}

struct OnlyDefault;
impl Namespaces for OnlyDefault {
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

struct Env {
    app: Router,
    store: Store,
    authz: Arc<TestAuthz>,
    _dir: tempfile::TempDir,
}

fn info(kind: &'static str, plural: &'static str, namespaced: bool, status: bool) -> KindInfo {
    KindInfo {
        group: G,
        version: "v1",
        kind,
        plural,
        singular: "",
        short_names: &[],
        namespaced,
        status,
        list_filtered: false,
        name_prefix: None,
        create_only: false,
        streams: &[],
        scale: false,
        actions: &[],
        categories: &[],
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &format!("sqlite://{}/s.db", dir.path().display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let mut reg = Registry::default();
    let mut w = info("Widget", "widgets", false, true);
    w.singular = "widget";
    w.short_names = &["wd"];
    reg.register(w, Widget);
    let mut g = info("Gadget", "gadgets", true, false);
    g.list_filtered = true;
    reg.register(g, Gadget);
    let authz = Arc::new(TestAuthz::default());
    let api = ApiServer::new(store.clone(), reg, authz.clone(), Arc::new(OnlyDefault));
    let app = Router::new().fallback(move |mut req: axum::extract::Request| {
        let api = api.clone();
        async move {
            let user = req
                .headers()
                .get("x-test-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("admin")
                .to_owned();
            req.extensions_mut().insert(UserInfo {
                name: user,
                groups: vec!["system:authenticated".into()],
                ..Default::default()
            });
            api.handle(req).await
        }
    });
    Env {
        app,
        store,
        authz,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Env {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, bytes.into_bytes(), headers).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        let mut has_ct = false;
        for (k, v) in headers {
            has_ct |= k.eq_ignore_ascii_case("content-type");
            req = req.header(*k, *v);
        }
        if !has_ct && !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn revision(&self) -> i64 {
        self.store.revisions().await.unwrap().current
    }
}

fn widget(name: &str, size: i64) -> Value {
    json!({"apiVersion": "test.drover.io/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size, "color": "red"}})
}

const WIDGETS: &str = "/apis/test.drover.io/v1/widgets";

#[tokio::test]
async fn discovery_lists_kinds_and_subresources() {
    let e = env().await;
    let groups = e.call(Method::GET, "/apis", None, &[]).await;
    assert_eq!(groups.body["groups"][0]["name"], G);
    let list = e
        .call(Method::GET, "/apis/test.drover.io/v1", None, &[])
        .await;
    let names: Vec<_> = list.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["widgets", "widgets/status", "gadgets"]);
    assert_eq!(list.body["resources"][0]["shortNames"], json!(["wd"]));
    assert_eq!(
        e.call(Method::GET, "/api", None, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let index = e.call(Method::GET, "/openapi/v3", None, &[]).await;
    let url = index.body["paths"]["apis/test.drover.io/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = e.call(Method::GET, &url, None, &[]).await;
    let patch = &doc.body["paths"]["/apis/test.drover.io/v1/widgets/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Widget");
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
}

#[tokio::test]
async fn create_get_and_conflicting_create() {
    let e = env().await;
    let c = e
        .call(Method::POST, WIDGETS, Some(widget("a", 1)), &[])
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let m = &c.body["metadata"];
    assert_eq!(m["generation"], 1);
    assert_eq!(m["uid"].as_str().unwrap().len(), 36);
    assert!(m["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["resourceVersion"], e.revision().await.to_string());
    let g = e
        .call(Method::GET, &format!("{WIDGETS}/a"), None, &[])
        .await;
    assert_eq!(g.body, c.body);
    let dup = e
        .call(Method::POST, WIDGETS, Some(widget("a", 2)), &[])
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.body["reason"], "AlreadyExists");
    assert_eq!(
        dup.body["message"],
        r#"widgets.test.drover.io "a" already exists"#
    );
    let missing = e
        .call(Method::GET, &format!("{WIDGETS}/nope"), None, &[])
        .await;
    assert_eq!(
        (missing.status, missing.body["reason"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );

    let mut gen = widget("", 1);
    gen["metadata"] = json!({"generateName": "w-"});
    let made = e.call(Method::POST, WIDGETS, Some(gen), &[]).await;
    assert_eq!(made.status, StatusCode::CREATED);
    let name = made.body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("w-") && name.len() == 7, "{name}");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let e = env().await;
    e.call(Method::POST, WIDGETS, Some(widget("keep", 1)), &[])
        .await;
    let before = e.revision().await;
    let mut wrong_type = widget("x", 1);
    wrong_type["spec"]["size"] = json!("big");
    let mut unknown = widget("x", 1);
    unknown["spec"]["shape"] = json!("round");
    let mut bad_name = widget("x", 1);
    bad_name["metadata"]["name"] = json!("Not_OK");
    let mut other_version = widget("x", 1);
    other_version["apiVersion"] = json!("test.drover.io/v2");
    let gadget =
        json!({"apiVersion": "test.drover.io/v1", "kind": "Gadget", "metadata": {"name": "g"}});
    /// Method, path, body, headers, expected code, expected message part.
    type Case<'a> = (
        Method,
        String,
        Vec<u8>,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            WIDGETS.into(),
            wrong_type.to_string().into_bytes(),
            vec![],
            422,
            "spec.size: Invalid value: \"string\": spec.size in body must be of type integer",
        ),
        (
            Method::POST,
            format!("{WIDGETS}?fieldValidation=Strict"),
            unknown.to_string().into_bytes(),
            vec![],
            400,
            "strict decoding error: unknown field \"spec.shape\"",
        ),
        (
            Method::POST,
            WIDGETS.into(),
            b"{\"apiVersion\": ".to_vec(),
            vec![],
            400,
            "not valid JSON",
        ),
        (
            Method::POST,
            WIDGETS.into(),
            b"[1, 2]".to_vec(),
            vec![],
            400,
            "must be a JSON object",
        ),
        (
            Method::POST,
            WIDGETS.into(),
            bad_name.to_string().into_bytes(),
            vec![],
            422,
            "metadata.name: Invalid value: \"Not_OK\"",
        ),
        (
            Method::POST,
            WIDGETS.into(),
            other_version.to_string().into_bytes(),
            vec![],
            400,
            "does not match the expected API version",
        ),
        (
            Method::POST,
            WIDGETS.into(),
            widget("x", 1).to_string().into_bytes(),
            vec![("content-type", "text/plain")],
            415,
            "unknown format",
        ),
        (
            Method::POST,
            WIDGETS.into(),
            vec![b' '; 3 * 1024 * 1024 + 1],
            vec![],
            413,
            "larger than the limit",
        ),
        (
            Method::POST,
            "/apis/test.drover.io/v1/namespaces/nowhere/gadgets".into(),
            gadget.to_string().into_bytes(),
            vec![],
            404,
            "namespaces \"nowhere\" not found",
        ),
        (
            Method::POST,
            format!("{WIDGETS}?fieldValidation=Sometimes"),
            widget("x", 1).to_string().into_bytes(),
            vec![],
            400,
            "fieldValidation",
        ),
        (
            Method::PATCH,
            format!("{WIDGETS}/keep"),
            b"{\"spec\": {\"size\": []}}".to_vec(),
            vec![("content-type", "application/merge-patch+json")],
            422,
            "spec.size",
        ),
        (
            Method::PATCH,
            format!("{WIDGETS}/keep"),
            b"not json".to_vec(),
            vec![("content-type", "application/merge-patch+json")],
            400,
            "not valid JSON",
        ),
        (
            Method::PATCH,
            format!("{WIDGETS}/keep"),
            b"[{\"op\": \"test\", \"path\": \"/spec/size\", \"value\": 9}]".to_vec(),
            vec![("content-type", "application/json-patch+json")],
            422,
            "could not be applied",
        ),
        (
            Method::GET,
            format!("{WIDGETS}?labelSelector=a%20in%20b"),
            vec![],
            vec![],
            400,
            "unable to parse requirement",
        ),
        (
            Method::GET,
            format!("{WIDGETS}?fieldSelector=spec.size%3D1"),
            vec![],
            vec![],
            400,
            "field label not supported: spec.size",
        ),
        (
            Method::GET,
            format!("{WIDGETS}?continue=garbage"),
            vec![],
            vec![],
            400,
            "continue token",
        ),
        (
            Method::GET,
            format!("{WIDGETS}?limit=-1"),
            vec![],
            vec![],
            400,
            "invalid limit",
        ),
        (
            Method::GET,
            "/apis/test.drover.io/v1/widgets/keep/scale".into(),
            vec![],
            vec![],
            404,
            "could not find",
        ),
        (
            Method::GET,
            "/apis/test.drover.io/v1/namespaces/default/widgets".into(),
            vec![],
            vec![],
            404,
            "could not find",
        ),
    ];
    for (method, path, body, headers, code, text) in cases {
        let r = e.raw(method.clone(), &path, body, &headers).await;
        assert_eq!(r.status.as_u16(), code, "{method} {path}: {}", r.body);
        assert_eq!(r.body["kind"], "Status", "{path}");
        assert_eq!(r.body["code"], code);
        let msg = r.body["message"].as_str().unwrap();
        assert!(
            msg.contains(text),
            "{method} {path}: {msg:?} lacks {text:?}"
        );
        assert_eq!(
            e.revision().await,
            before,
            "{method} {path} changed the store"
        );
    }
}

#[tokio::test]
async fn unknown_fields_warn_or_are_ignored() {
    let e = env().await;
    let mut w = widget("w", 1);
    w["spec"]["shape"] = json!("round");
    let r = e
        .call(
            Method::POST,
            &format!("{WIDGETS}?fieldValidation=Warn"),
            Some(w.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.headers.get("warning").unwrap(),
        r#"299 - "unknown field \"spec.shape\"""#
    );
    assert!(r.body["spec"].get("shape").is_none(), "pruned");
    w["metadata"]["name"] = json!("v");
    let r = e
        .call(
            Method::POST,
            &format!("{WIDGETS}?fieldValidation=Ignore"),
            Some(w),
            &[],
        )
        .await;
    assert!(r.headers.get("warning").is_none());
    assert!(r.body["spec"].get("shape").is_none());
}

#[tokio::test]
async fn update_rules() {
    let e = env().await;
    let c = e
        .call(Method::POST, WIDGETS, Some(widget("u", 1)), &[])
        .await;
    let rv = c.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut no_rv = c.body.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let r = e
        .call(Method::PUT, &format!("{WIDGETS}/u"), Some(no_rv), &[])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    // Same object again: no write, same resourceVersion.
    let same = e
        .call(
            Method::PUT,
            &format!("{WIDGETS}/u"),
            Some(c.body.clone()),
            &[],
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body["metadata"]["resourceVersion"], rv.as_str());

    // Spec change bumps generation; status on the main resource is ignored.
    let mut changed = c.body.clone();
    changed["spec"]["size"] = json!(2);
    changed["status"] = json!({"phase": "Hacked"});
    let up = e
        .call(
            Method::PUT,
            &format!("{WIDGETS}/u"),
            Some(changed.clone()),
            &[],
        )
        .await;
    assert_eq!(up.status, StatusCode::OK);
    assert_eq!(up.body["metadata"]["generation"], 2);
    assert!(up.body.get("status").is_none());
    let stale = e
        .call(Method::PUT, &format!("{WIDGETS}/u"), Some(changed), &[])
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert!(stale.body["message"]
        .as_str()
        .unwrap()
        .contains("the object has been modified"));

    // The status subresource takes status only.
    let mut st = up.body.clone();
    st["status"] = json!({"phase": "Ready"});
    st["spec"]["size"] = json!(99);
    let s = e
        .call(Method::PUT, &format!("{WIDGETS}/u/status"), Some(st), &[])
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    assert_eq!(s.body["status"]["phase"], "Ready");
    assert_eq!(s.body["spec"]["size"], 2);
    assert_eq!(
        s.body["metadata"]["generation"], 2,
        "status changes keep generation"
    );
}

const MERGE: (&str, &str) = ("content-type", "application/merge-patch+json");

#[tokio::test]
async fn patches() {
    let e = env().await;
    e.call(Method::POST, WIDGETS, Some(widget("p", 1)), &[])
        .await;
    let merged = e
        .call(
            Method::PATCH,
            &format!("{WIDGETS}/p"),
            Some(json!({"spec": {"color": "blue"}, "metadata": {"labels": {"a": "1"}}})),
            &[MERGE],
        )
        .await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    assert_eq!(
        (
            merged.body["spec"]["color"].as_str(),
            merged.body["spec"]["size"].as_i64()
        ),
        (Some("blue"), Some(1))
    );
    let strategic = e
        .call(
            Method::PATCH,
            &format!("{WIDGETS}/p"),
            Some(json!({"spec": {"size": 3}})),
            &[("content-type", "application/strategic-merge-patch+json")],
        )
        .await;
    assert_eq!(
        strategic.body["spec"]["size"], 3,
        "strategic merge acts as merge patch here"
    );
    let jp = json!([{"op": "test", "path": "/spec/size", "value": 3}, {"op": "replace", "path": "/spec/size", "value": 4}]);
    let json_patched = e
        .call(
            Method::PATCH,
            &format!("{WIDGETS}/p"),
            Some(jp),
            &[("content-type", "application/json-patch+json")],
        )
        .await;
    assert_eq!(json_patched.body["spec"]["size"], 4);
    assert_eq!(json_patched.body["metadata"]["generation"], 4);
    let stale = e
        .call(
            Method::PATCH,
            &format!("{WIDGETS}/p"),
            Some(json!({"metadata": {"resourceVersion": "1"}, "spec": {"size": 5}})),
            &[MERGE],
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    let status = e
        .call(
            Method::PATCH,
            &format!("{WIDGETS}/p/status"),
            Some(json!({"status": {"phase": "Up"}, "spec": {"size": 0}})),
            &[MERGE],
        )
        .await;
    assert_eq!(
        (
            status.body["status"]["phase"].as_str(),
            status.body["spec"]["size"].as_i64()
        ),
        (Some("Up"), Some(4))
    );
    let missing = e
        .call(
            Method::PATCH,
            &format!("{WIDGETS}/none"),
            Some(json!({})),
            &[MERGE],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let e = env().await;
    let mut w = widget("f", 1);
    w["metadata"]["finalizers"] = json!(["test.drover.io/cleanup"]);
    e.call(Method::POST, WIDGETS, Some(w), &[]).await;
    let d = e
        .call(Method::DELETE, &format!("{WIDGETS}/f"), None, &[])
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(d.body["metadata"]["deletionTimestamp"].is_string());
    let still = e
        .call(Method::GET, &format!("{WIDGETS}/f"), None, &[])
        .await;
    assert_eq!(still.status, StatusCode::OK);
    let add = e
        .call(
            Method::PATCH,
            &format!("{WIDGETS}/f"),
            Some(json!({"metadata": {"finalizers": ["test.drover.io/cleanup", "x.io/more"]}})),
            &[MERGE],
        )
        .await;
    assert_eq!(
        add.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no new finalizers while deleting"
    );
    let released = e
        .call(
            Method::PATCH,
            &format!("{WIDGETS}/f"),
            Some(json!({"metadata": {"finalizers": null}})),
            &[MERGE],
        )
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(
        e.call(Method::GET, &format!("{WIDGETS}/f"), None, &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    e.call(Method::POST, WIDGETS, Some(widget("g", 1)), &[])
        .await;
    let wrong_uid = e
        .call(
            Method::DELETE,
            &format!("{WIDGETS}/g"),
            Some(json!({"preconditions": {"uid": "nope"}})),
            &[],
        )
        .await;
    assert_eq!(wrong_uid.status, StatusCode::CONFLICT);
    let gone = e
        .call(Method::DELETE, &format!("{WIDGETS}/g"), None, &[])
        .await;
    assert_eq!(
        (gone.status, gone.body["metadata"]["name"].as_str()),
        (StatusCode::OK, Some("g"))
    );
}

#[tokio::test]
async fn lists_filter_and_page_at_one_revision() {
    let e = env().await;
    for i in 0..12 {
        let mut w = widget(&format!("w{i:02}"), i);
        w["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        e.call(Method::POST, WIDGETS, Some(w), &[]).await;
    }
    let even = e
        .call(
            Method::GET,
            &format!("{WIDGETS}?labelSelector=parity%3Deven"),
            None,
            &[],
        )
        .await;
    assert_eq!(even.body["kind"], "WidgetList");
    assert_eq!(even.body["items"].as_array().unwrap().len(), 6);
    let one = e
        .call(
            Method::GET,
            &format!("{WIDGETS}?fieldSelector=metadata.name%3Dw03"),
            None,
            &[],
        )
        .await;
    assert_eq!(one.body["items"][0]["metadata"]["name"], "w03");

    let p1 = e
        .call(Method::GET, &format!("{WIDGETS}?limit=5"), None, &[])
        .await;
    let token = p1.body["metadata"]["continue"].as_str().unwrap().to_owned();
    e.call(Method::DELETE, &format!("{WIDGETS}/w07"), None, &[])
        .await; // after page 1
    let p2 = e
        .call(
            Method::GET,
            &format!("{WIDGETS}?limit=5&continue={token}"),
            None,
            &[],
        )
        .await;
    let names: Vec<_> = p2.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["w05", "w06", "w07", "w08", "w09"],
        "page 2 is consistent with page 1"
    );
    assert_eq!(
        p2.body["metadata"]["resourceVersion"],
        p1.body["metadata"]["resourceVersion"]
    );
    let token2 = p2.body["metadata"]["continue"].as_str().unwrap().to_owned();
    let p3 = e
        .call(
            Method::GET,
            &format!("{WIDGETS}?limit=5&continue={token2}"),
            None,
            &[],
        )
        .await;
    assert_eq!(p3.body["items"].as_array().unwrap().len(), 2);
    assert!(p3.body["metadata"].get("continue").is_none());

    e.store.compact(0).await.unwrap();
    let expired = e
        .call(
            Method::GET,
            &format!("{WIDGETS}?limit=5&continue={token}"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (expired.status, expired.body["reason"].as_str()),
        (StatusCode::GONE, Some("Expired"))
    );

    let dc = e
        .call(
            Method::DELETE,
            &format!("{WIDGETS}?labelSelector=parity%3Dodd"),
            None,
            &[],
        )
        .await;
    assert_eq!(dc.body["items"].as_array().unwrap().len(), 5);
    let left = e.call(Method::GET, WIDGETS, None, &[]).await;
    assert_eq!(left.body["items"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn tables_for_kubectl_get() {
    let e = env().await;
    e.call(Method::POST, WIDGETS, Some(widget("t", 1)), &[])
        .await;
    let accept = ("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json");
    let t = e.call(Method::GET, WIDGETS, None, &[accept]).await;
    assert_eq!(t.body["kind"], "Table");
    let cols: Vec<_> = t.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cols, ["Name", "Color", "Age"]);
    let cells = &t.body["rows"][0]["cells"];
    assert_eq!(
        (cells[0].as_str(), cells[1].as_str()),
        (Some("t"), Some("red"))
    );
    assert!(
        cells[2].as_str().unwrap().ends_with('s'),
        "age like 0s: {}",
        cells[2]
    );
    assert_eq!(t.body["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let one = e
        .call(Method::GET, &format!("{WIDGETS}/t"), None, &[accept])
        .await;
    assert_eq!(one.body["rows"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn filtered_lists_show_what_the_caller_may_get() {
    let e = env().await;
    let gadgets = "/apis/test.drover.io/v1/namespaces/default/gadgets";
    for n in ["mine", "theirs"] {
        let g =
            json!({"apiVersion": "test.drover.io/v1", "kind": "Gadget", "metadata": {"name": n}});
        assert_eq!(
            e.call(Method::POST, gadgets, Some(g), &[]).await.status,
            StatusCode::CREATED
        );
    }
    let mut rules = RuleSet::default();
    rules.add_namespaced(
        "default",
        [PolicyRule::resource(&["get"], &[G], &["gadgets"]).named(&["mine"])],
    );
    *e.authz.limited.lock().unwrap() = Some(("bob".into(), rules));
    let bob = ("x-test-user", "bob");
    let list = e.call(Method::GET, gadgets, None, &[bob]).await;
    let names: Vec<_> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"]);
    let theirs = e
        .call(Method::GET, &format!("{gadgets}/theirs"), None, &[bob])
        .await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    assert_eq!(
        theirs.body["message"],
        r#"gadgets.test.drover.io "theirs" is forbidden: User "bob" cannot get resource "gadgets" in API group "test.drover.io" in the namespace "default""#
    );
    let widgets = e.call(Method::GET, WIDGETS, None, &[bob]).await;
    assert_eq!(
        widgets.status,
        StatusCode::FORBIDDEN,
        "unfiltered kinds need list"
    );
}

/// Read watch events from a streaming response.
async fn events(
    e: &Env,
    path: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> (
    Vec<Value>,
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Value>,
) {
    let mut req = Request::builder().uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = e
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let task = tokio::spawn(async move {
        let mut stream = resp.into_body().into_data_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if tx
                    .send(serde_json::from_slice(&line).unwrap())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let mut rx = rx;
    let mut got = Vec::new();
    while got.len() < n {
        got.push(
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("watch event in time")
                .expect("stream open"),
        );
    }
    (got, task, rx)
}

#[tokio::test]
async fn watch_streams_changes_in_order() {
    let e = env().await;
    e.call(Method::POST, WIDGETS, Some(widget("before", 1)), &[])
        .await;
    // From "0": the existing object as ADDED first.
    let (initial, _t0, mut rx0) =
        events(&e, &format!("{WIDGETS}?watch=1&resourceVersion=0"), 1, &[]).await;
    assert_eq!(
        (
            initial[0]["type"].as_str(),
            initial[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("before"))
    );

    let rv = e.revision().await;
    let e2 = &e;
    let writer = async move {
        e2.call(Method::POST, WIDGETS, Some(widget("w", 1)), &[])
            .await;
        e2.call(
            Method::PATCH,
            &format!("{WIDGETS}/w"),
            Some(json!({"spec": {"size": 2}})),
            &[MERGE],
        )
        .await;
        e2.call(Method::DELETE, &format!("{WIDGETS}/w"), None, &[])
            .await;
    };
    writer.await;
    let (evs, _t, _rx) = events(
        &e,
        &format!("{WIDGETS}?watch=1&resourceVersion={rv}"),
        3,
        &[],
    )
    .await;
    let kinds: Vec<_> = evs.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(evs[1]["object"]["spec"]["size"], 2);
    let later = tokio::time::timeout(Duration::from_secs(5), rx0.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(later["type"], "ADDED", "the live watch saw the create");

    // A label selector turns "stops matching" into DELETED.
    let (_, _t2, mut rx2) = events(
        &e,
        &format!("{WIDGETS}?watch=1&labelSelector=keep%3Dyes"),
        0,
        &[],
    )
    .await;
    let mut w = widget("sel", 1);
    w["metadata"]["labels"] = json!({"keep": "yes"});
    e.call(Method::POST, WIDGETS, Some(w), &[]).await;
    e.call(
        Method::PATCH,
        &format!("{WIDGETS}/sel"),
        Some(json!({"metadata": {"labels": {"keep": "no"}}})),
        &[MERGE],
    )
    .await;
    let a = tokio::time::timeout(Duration::from_secs(5), rx2.recv())
        .await
        .unwrap()
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), rx2.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a["type"].as_str(), d["type"].as_str()),
        (Some("ADDED"), Some("DELETED"))
    );

    // From a compacted revision: an ERROR event with a 410 Status.
    e.store.compact(0).await.unwrap();
    let (err, _t3, _rx3) = events(
        &e,
        &format!("{WIDGETS}?watch=1&resourceVersion={rv}"),
        1,
        &[],
    )
    .await;
    assert_eq!(err[0]["type"], "ERROR");
    assert_eq!(
        (
            err[0]["object"]["code"].as_i64(),
            err[0]["object"]["reason"].as_str()
        ),
        (Some(410), Some("Expired"))
    );
}

#[tokio::test]
async fn watch_as_table_sends_columns_once() {
    let e = env().await;
    let accept = (
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    );
    let (_, _t, mut rx) = events(
        &e,
        &format!("{WIDGETS}?watch=1&resourceVersion=0"),
        0,
        &[accept],
    )
    .await;
    e.call(Method::POST, WIDGETS, Some(widget("a", 1)), &[])
        .await;
    e.call(Method::POST, WIDGETS, Some(widget("b", 1)), &[])
        .await;
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(
        first["object"]["columnDefinitions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(second["object"]["columnDefinitions"], json!([]));
    assert_eq!(second["object"]["rows"][0]["cells"][0], "b");
}

/// Garbage in every shape: never a 500, always a Status, and the server
/// keeps working. Bounded: a fixed number of seeded cases.
#[tokio::test]
async fn garbage_never_causes_a_server_error() {
    use rand::{Rng, SeedableRng};
    let e = env().await;
    e.call(Method::POST, WIDGETS, Some(widget("target", 1)), &[])
        .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let valid = widget("fuzz", 1).to_string().into_bytes();
    let content_types = [
        "application/json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/vnd.kubernetes.protobuf",
        "text/plain",
        "",
    ];
    let paths = [
        WIDGETS.to_owned(),
        format!("{WIDGETS}/target"),
        format!("{WIDGETS}/target/status"),
        "/apis/test.drover.io/v1/namespaces/default/gadgets".to_owned(),
        format!("{WIDGETS}?watch=1&resourceVersion=abc"),
        format!("{WIDGETS}?limit=x&continue=%00"),
        "/apis/test.drover.io/v1/widgets/%2e%2e/x".to_owned(),
    ];
    for i in 0..400 {
        let mut body = valid.clone();
        match i % 4 {
            0 => (0..rng.gen_range(1..8)).for_each(|_| {
                let at = rng.gen_range(0..body.len());
                body[at] = rng.gen();
            }),
            1 => body.truncate(rng.gen_range(0..body.len())),
            2 => body = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
            _ => body = format!("{{\"apiVersion\":\"test.drover.io/v1\",\"kind\":\"Widget\",\"metadata\":{{\"name\":\"w{i}\",\"labels\":{}}},\"spec\":{}}}", ["null", "5", "[]", "{\"a\":[1]}", "\"x\""][i % 5], ["null", "[[[]]]", "{\"size\":1e999}", "{\"size\":-9223372036854775809}", "\"\\ud800\""][(i / 5) % 5]).into_bytes(),
        }
        let method = [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::GET,
        ][i % 5]
            .clone();
        let path = &paths[i % paths.len()];
        let ct = content_types[i % content_types.len()];
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", ct)]
        };
        let r = e.raw(method.clone(), path, body, &headers).await;
        assert!(
            r.status.as_u16() < 500,
            "{method} {path} ({ct}) gave {}: {}",
            r.status,
            r.body
        );
        if !r.status.is_success() && !path.contains("watch") {
            assert_eq!(r.body["kind"], "Status", "{method} {path}: {}", r.body);
        }
    }
    assert_eq!(
        e.call(Method::GET, WIDGETS, None, &[]).await.status,
        StatusCode::OK,
        "still serving"
    );
}

#[tokio::test]
async fn subresources_take_only_their_verbs_and_patches_are_bounded() {
    let e = env().await;
    e.call(Method::POST, WIDGETS, Some(widget("s", 1)), &[])
        .await;
    let before = e.revision().await;
    let post = e
        .call(
            Method::POST,
            &format!("{WIDGETS}/s/status"),
            Some(widget("other", 1)),
            &[],
        )
        .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED, "{}", post.body);
    let delete = e
        .call(Method::DELETE, &format!("{WIDGETS}/s/status"), None, &[])
        .await;
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(e.revision().await, before, "nothing created or deleted");

    let ops: Vec<Value> = (0..40).map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/metadata/annotations/k{i}")})).collect();
    let r = e
        .raw(
            Method::PATCH,
            &format!("{WIDGETS}/s"),
            Value::Array(ops).to_string().into_bytes(),
            &[("content-type", "application/json-patch+json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let big = json!({"metadata": {"annotations": {"big": "x".repeat(3 * 1024 * 1024 - 200)}}});
    let r = e
        .call(Method::PATCH, &format!("{WIDGETS}/s"), Some(big), &[MERGE])
        .await;
    assert!(matches!(r.status.as_u16(), 413 | 422), "{}", r.status);
    assert_eq!(e.revision().await, before, "nothing written");
}

#[tokio::test]
async fn preconditions_dry_run_values_and_future_versions() {
    let e = env().await;
    let c = e
        .call(Method::POST, WIDGETS, Some(widget("p", 1)), &[])
        .await;
    let before = e.revision().await;
    let mut other_uid = c.body.clone();
    other_uid["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    other_uid["spec"]["size"] = json!(2);
    let r = e
        .call(Method::PUT, &format!("{WIDGETS}/p"), Some(other_uid), &[])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID"),
        "{}",
        r.body
    );
    let r = e
        .call(
            Method::POST,
            &format!("{WIDGETS}?dryRun=Sometimes"),
            Some(widget("q", 1)),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(e.revision().await, before, "nothing written");
    let r = e
        .call(
            Method::GET,
            &format!("{WIDGETS}?watch=1&resourceVersion={}", before + 1000),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status.as_u16(), 504);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Too large resource version"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn propagation_policy_is_checked_and_needs_no_collector_here() {
    let e = env().await;
    e.call(Method::POST, WIDGETS, Some(widget("d", 1)), &[])
        .await;
    let before = e.revision().await;
    for bad in [
        json!({"propagationPolicy": "Sideways"}),
        json!({"propagationPolicy": "Orphan", "orphanDependents": true}),
    ] {
        let r = e
            .call(Method::DELETE, &format!("{WIDGETS}/d"), Some(bad), &[])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .unwrap()
                .starts_with("DeleteOptions.meta.k8s.io \"\" is invalid"),
            "{}",
            r.body
        );
    }
    assert_eq!(e.revision().await, before, "nothing written");
    // Without a garbage collector nothing would serve an `orphan`
    // finalizer, so the object goes at once.
    let r = e
        .call(
            Method::DELETE,
            &format!("{WIDGETS}/d"),
            Some(json!({"propagationPolicy": "Orphan"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = e
        .call(Method::GET, &format!("{WIDGETS}/d"), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
