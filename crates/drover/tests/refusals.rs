//! A rejected request changes nothing: a property test over every
//! management kind, against the real server. For each way a request can be
//! refused — conflict, validation, authorization, admission, size — nothing
//! is written to the store between the revision (`/healthz`) before it and
//! the one after it, but the replica's own bookkeeping (its record, renewed
//! every 2 s, and leases), as the store's log shows; and at the end every
//! object is as it was. Every refusal is a `metav1.Status`.
//!
//! Also fuzzed here: the public endpoints, login and import, with generated
//! input; none may panic, log anyone in or answer other than a Status.
//!
//! Bounded in `./scripts/test`; `PROPTEST_CASES` sets a longer run.

mod common;

use std::time::Duration;

use common::{Mgmt, MGMT};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

const API: &str = "management.drover.io/v1";

/// A client for one server, with its CA.
struct Client {
    http: reqwest::Client,
    base: String,
    rt: tokio::runtime::Runtime,
}

struct Answer {
    status: u16,
    body: Value,
}

impl Client {
    fn new(m: &Mgmt) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(&m.ca).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Client {
            http,
            base: m.server.url(""),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", self.base),
                )
                .header("content-type", content_type)
                .body(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            Answer {
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            }
        })
    }

    fn json(&self, method: &str, path: &str, token: &str, body: &Value) -> Answer {
        self.send(
            method,
            path,
            Some(token),
            "application/json",
            body.to_string().into_bytes(),
        )
    }

    fn revision(&self) -> i64 {
        let a = self.send("GET", "/healthz", None, "application/json", Vec::new());
        a.body["datastore"]["revision"].as_i64().unwrap()
    }
}

/// What replicas write by themselves, whatever the requests: their records,
/// leases and the records of agent links.
const BOOKKEEPING: &[&str] = &["/drover/replicas/", "/drover/leases/", "/drover/links/"];

/// The keys written in revisions `(from, to]` but the replicas' own
/// bookkeeping, read from the server's SQLite log (read-only).
fn written_between(m: &Mgmt, from: i64, to: i64) -> Vec<String> {
    use sqlx::{Connection, Row};
    if from == to {
        return Vec::new();
    }
    let db = m.dir.path().join("data").join("state.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let rows = sqlx::query("SELECT key FROM drover_log WHERE revision > ? AND revision <= ?")
            .bind(from)
            .bind(to)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>("key"))
            .filter(|k| !BOOKKEEPING.iter().any(|p| k.starts_with(p)))
            .collect()
    })
}

/// Every management kind: (plural, namespace of the fixture, kind).
const KINDS: &[(&str, &str, &str)] = &[
    ("clusters", "", "Cluster"),
    ("projects", "c-fix", "Project"),
    (
        "clusterregistrationtokens",
        "c-fix",
        "ClusterRegistrationToken",
    ),
    ("users", "", "User"),
    ("tokens", "", "Token"),
    ("globalroles", "", "GlobalRole"),
    ("globalrolebindings", "", "GlobalRoleBinding"),
    ("roletemplates", "", "RoleTemplate"),
    (
        "clusterroletemplatebindings",
        "c-fix",
        "ClusterRoleTemplateBinding",
    ),
    (
        "projectroletemplatebindings",
        "PROJECT",
        "ProjectRoleTemplateBinding",
    ),
];

/// The world the refused requests are tried against.
struct Fixture {
    admin: String,
    /// No rights beyond every user's.
    nobody: String,
    /// May write roles, templates, global bindings and users, and owns a
    /// project: what it may not grant is an admission refusal.
    limited: String,
    project: String,
    /// An existing object of each kind: (plural, collection path, name).
    existing: Vec<(&'static str, String, String)>,
}

fn collection(plural: &str, ns: &str, project: &str) -> String {
    match ns {
        "" => format!("{MGMT}/{plural}"),
        "PROJECT" => format!("{MGMT}/namespaces/{project}/{plural}"),
        ns => format!("{MGMT}/namespaces/{ns}/{plural}"),
    }
}

/// A valid body of a kind, named `name`.
fn valid(kind: &str, name: &str, project: &str) -> Value {
    let spec = match kind {
        "Cluster" => json!({"displayName": "fixture"}),
        "Project" => json!({"displayName": "fixture"}),
        "ClusterRegistrationToken" => json!({}),
        "User" => json!({"username": name}),
        "Token" => json!({"description": "fixture"}),
        "GlobalRole" => {
            json!({"rules": [{"verbs": ["get"], "apiGroups": ["management.drover.io"], "resources": ["clusters"]}]})
        }
        "GlobalRoleBinding" => json!({"userName": "fix-user", "globalRoleName": "fix-role"}),
        "RoleTemplate" => json!({"context": "cluster", "rules": []}),
        "ClusterRoleTemplateBinding" => {
            json!({"userName": "fix-user", "roleTemplateName": "cluster-member"})
        }
        "ProjectRoleTemplateBinding" => {
            json!({"userName": "fix-user", "roleTemplateName": "project-member", "projectName": format!("c-fix:{project}")})
        }
        other => panic!("{other}"),
    };
    json!({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn fixture(m: &Mgmt, c: &Client) -> Fixture {
    let admin = m.admin();
    let ok = |a: Answer, what: &str| {
        assert!(a.status < 300, "{what}: {} {}", a.status, a.body);
        a.body
    };
    ok(
        c.json(
            "POST",
            &format!("{MGMT}/clusters"),
            &admin,
            &valid("Cluster", "c-fix", ""),
        ),
        "cluster",
    );
    let p = ok(
        c.json(
            "POST",
            &format!("{MGMT}/namespaces/c-fix/projects"),
            &admin,
            &json!({"apiVersion": API, "kind": "Project", "metadata": {"generateName": "p-"},
                    "spec": {"displayName": "fixture", "resourceQuota": {"limit": {"pods": "10"}},
                             "namespaceDefaultResourceQuota": {"limit": {"pods": "5"}}}}),
        ),
        "project",
    );
    let project = p["metadata"]["name"].as_str().unwrap().to_owned();
    let nobody = m.user(&admin, "nobody");
    let limited = m.user(&admin, "limited");
    m.user(&admin, "fix-user");
    ok(
        c.json(
            "POST",
            &format!("{MGMT}/globalroles"),
            &admin,
            &json!({"apiVersion": API, "kind": "GlobalRole", "metadata": {"name": "writer"},
                    "spec": {"rules": [{"verbs": ["create", "update", "patch", "delete", "get", "list"],
                                        "apiGroups": ["management.drover.io"],
                                        "resources": ["globalroles", "roletemplates", "globalrolebindings", "users", "users/password"]}]}}),
        ),
        "writer role",
    );
    ok(
        c.json(
            "POST",
            &format!("{MGMT}/globalrolebindings"),
            &admin,
            &json!({"apiVersion": API, "kind": "GlobalRoleBinding", "metadata": {"name": "limited-writer"},
                    "spec": {"userName": "limited", "globalRoleName": "writer"}}),
        ),
        "limited's binding",
    );
    ok(
        c.json(
            "POST",
            &format!("{MGMT}/namespaces/{project}/projectroletemplatebindings"),
            &admin,
            &json!({"apiVersion": API, "kind": "ProjectRoleTemplateBinding", "metadata": {"name": "limited-owner"},
                    "spec": {"userName": "limited", "roleTemplateName": "project-owner", "projectName": format!("c-fix:{project}")}}),
        ),
        "limited owns the project",
    );
    // One of each kind that names can collide with.
    let mut existing = Vec::new();
    for (plural, ns, kind) in KINDS {
        let path = collection(plural, ns, &project);
        let name = match *kind {
            "Cluster" => "c-fix".to_owned(),
            "User" => "fix-user".to_owned(),
            "Token" => {
                let t = ok(
                    c.json("POST", &path, &admin, &json!({"apiVersion": API, "kind": "Token", "spec": {"description": "fixture"}})),
                    "token",
                );
                t["metadata"]["name"].as_str().unwrap().to_owned()
            }
            "GlobalRole" => "fix-role".to_owned(),
            "RoleTemplate" => "fix-template".to_owned(),
            _ => format!("fix-{}", plural.len()),
        };
        if !matches!(*kind, "Cluster" | "User" | "Token") {
            ok(
                c.json("POST", &path, &admin, &valid(kind, &name, &project)),
                kind,
            );
        }
        existing.push((*plural, path, name));
    }
    // The cluster's controller reports it not connected once; from then on
    // nothing writes unasked.
    common::wait("c-fix reported", Duration::from_secs(30), || {
        let a = c.send(
            "GET",
            &format!("{MGMT}/clusters/c-fix"),
            Some(&admin),
            "application/json",
            Vec::new(),
        );
        (common::condition(&a.body, "Connected") == "False").then_some(())
    });
    Fixture {
        admin,
        nobody,
        limited,
        project,
        existing,
    }
}

/// How a request is refused.
#[derive(Debug, Clone)]
enum Refusal {
    /// A create of a name that exists.
    Taken,
    /// An update whose resourceVersion is stale.
    Stale,
    /// A field of the wrong type.
    WrongType(&'static str, Value),
    /// An unknown field under `fieldValidation=Strict`.
    Unknown(String),
    /// A name no kind takes.
    BadName(String),
    /// apiVersion or kind not the URL's.
    WrongKind(bool),
    /// Not JSON at all.
    Garbage(Vec<u8>),
    /// A write by someone without the right.
    Unauthorized(&'static str),
    /// What the kind itself refuses (escalation, references to nothing,
    /// built-ins, quotas).
    Admission(usize),
    /// Over the size limit, or nested too deep.
    TooLarge(bool),
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::Taken),
        Just(Refusal::Stale),
        (
            proptest::sample::select(
                &[
                    "/spec",
                    "/metadata",
                    "/metadata/labels",
                    "/metadata/name",
                    "/spec/rules",
                    "/spec/displayName"
                ][..]
            ),
            prop_oneof![
                Just(json!(7)),
                Just(json!(true)),
                Just(json!([1, 2])),
                Just(json!(1.5))
            ],
        )
            .prop_map(|(p, v)| Refusal::WrongType(p, v)),
        "[a-z]{1,12}".prop_map(Refusal::Unknown),
        prop_oneof![
            "[A-Z][A-Za-z0-9]{0,10}",
            "[a-z]{1,5}[_ /%:]{1,3}[a-z]{0,5}",
            "[a-z]{254,260}",
        ]
        .prop_map(Refusal::BadName),
        any::<bool>().prop_map(Refusal::WrongKind),
        proptest::collection::vec(any::<u8>(), 1..64)
            .prop_filter("not JSON", |b| serde_json::from_slice::<Value>(b).is_err())
            .prop_map(Refusal::Garbage),
        proptest::sample::select(&["POST", "PUT", "PATCH", "DELETE"][..])
            .prop_map(Refusal::Unauthorized),
        (0usize..16).prop_map(Refusal::Admission),
        any::<bool>().prop_map(Refusal::TooLarge),
    ]
}

/// A refused request: (method, path, token, content type, body).
type Request = (&'static str, String, String, &'static str, Vec<u8>);

/// Build the request that `refusal` describes for kind `k`, or `None` when
/// the refusal does not apply to the kind.
fn request(f: &Fixture, c: &Client, k: usize, refusal: &Refusal, salt: u32) -> Option<Request> {
    let (_, _, kind) = KINDS[k];
    let (_, path, existing) = &f.existing[k];
    let fresh = format!("fresh-{salt}");
    let body = |v: &Value| v.to_string().into_bytes();
    let json = "application/json";
    let admin = f.admin.clone();
    Some(match refusal {
        Refusal::Taken => {
            if kind == "Token" {
                return None; // token names are the server's to pick
            }
            (
                "POST",
                path.clone(),
                admin,
                json,
                body(&valid(kind, existing, &f.project)),
            )
        }
        Refusal::Stale => {
            let current = c.json("GET", &format!("{path}/{existing}"), &admin, &Value::Null);
            let mut obj = current.body;
            obj["metadata"]["resourceVersion"] = json!("1");
            obj["metadata"]["labels"] = json!({"changed": "yes"});
            ("PUT", format!("{path}/{existing}"), admin, json, body(&obj))
        }
        Refusal::WrongType(pointer, value) => {
            let mut obj = valid(kind, &fresh, &f.project);
            let (parent, field) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut obj
            } else {
                obj.pointer_mut(parent)?
            };
            // A string field given a string stays valid: give it a number.
            let value = if *pointer == "/metadata/name" && value.is_string() {
                json!(5)
            } else {
                value.clone()
            };
            if *pointer == "/spec/rules" && !matches!(kind, "GlobalRole" | "RoleTemplate") {
                return None;
            }
            if *pointer == "/spec/displayName" && !matches!(kind, "Cluster" | "Project") {
                return None;
            }
            if *pointer == "/spec/rules" && value.is_array() {
                target[field] = json!([{"verbs": "get"}]);
            } else {
                target[field] = value;
            }
            ("POST", path.clone(), admin, json, body(&obj))
        }
        Refusal::Unknown(field) => {
            let mut obj = valid(kind, &fresh, &f.project);
            obj["spec"][format!("unknown{field}")] = json!("x");
            (
                "POST",
                format!("{path}?fieldValidation=Strict"),
                admin,
                json,
                body(&obj),
            )
        }
        Refusal::BadName(name) => (
            "POST",
            path.clone(),
            admin,
            json,
            body(&valid(kind, name, &f.project)),
        ),
        Refusal::WrongKind(version) => {
            let mut obj = valid(kind, &fresh, &f.project);
            if *version {
                obj["apiVersion"] = json!("management.drover.io/v2");
            } else {
                obj["kind"] = json!("Something");
            }
            ("POST", path.clone(), admin, json, body(&obj))
        }
        Refusal::Garbage(bytes) => ("POST", path.clone(), admin, json, bytes.clone()),
        Refusal::Unauthorized(method) => {
            let nobody = f.nobody.clone();
            match *method {
                "POST" => {
                    if matches!(kind, "Cluster" | "Token") {
                        return None; // every user may create these
                    }
                    (
                        "POST",
                        path.clone(),
                        nobody,
                        json,
                        body(&valid(kind, &fresh, &f.project)),
                    )
                }
                "PUT" => {
                    let current =
                        c.json("GET", &format!("{path}/{existing}"), &admin, &Value::Null);
                    let mut obj = current.body;
                    obj["metadata"]["labels"] = json!({"changed": "yes"});
                    (
                        "PUT",
                        format!("{path}/{existing}"),
                        nobody,
                        json,
                        body(&obj),
                    )
                }
                "PATCH" => (
                    "PATCH",
                    format!("{path}/{existing}"),
                    nobody,
                    "application/merge-patch+json",
                    body(&json!({"metadata": {"labels": {"changed": "yes"}}})),
                ),
                _ => (
                    "DELETE",
                    format!("{path}/{existing}"),
                    nobody,
                    json,
                    Vec::new(),
                ),
            }
        }
        Refusal::Admission(which) => admission(f, k, *which, &fresh)?,
        Refusal::TooLarge(deep) => {
            let mut obj = valid(kind, &fresh, &f.project);
            if *deep {
                let mut nested = json!("bottom");
                for _ in 0..200 {
                    nested = json!({"a": nested});
                }
                obj["metadata"]["annotations"] = json!({"x": "y"});
                obj["spec"]["deep"] = nested;
            } else {
                obj["metadata"]["annotations"] = json!({"padding": "x".repeat(4 * 1024 * 1024)});
            }
            ("POST", path.clone(), admin, json, body(&obj))
        }
    })
}

/// What each kind itself refuses; `None` when `which` is not one of the
/// kind's.
fn admission(f: &Fixture, k: usize, which: usize, fresh: &str) -> Option<Request> {
    let (_, _, kind) = KINDS[k];
    let (_, path, _) = &f.existing[k];
    let json = "application/json";
    let body = |v: Value| v.to_string().into_bytes();
    let admin = f.admin.clone();
    let limited = f.limited.clone();
    let everything = json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]);
    let mut obj = valid(kind, fresh, &f.project);
    Some(match (kind, which % 4) {
        ("GlobalRole", 0) => {
            obj["spec"]["rules"] = everything;
            ("POST", path.clone(), limited, json, body(obj))
        }
        ("GlobalRole", 1) => {
            obj["spec"]["builtin"] = json!(true);
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("GlobalRole", 2) => ("DELETE", format!("{path}/admin"), admin, json, Vec::new()),
        ("GlobalRole", _) => {
            obj["spec"]["rules"] = everything;
            obj["spec"]["newUserDefault"] = json!(true);
            ("POST", path.clone(), limited, json, body(obj))
        }
        ("RoleTemplate", 0) => {
            obj["spec"]["rules"] = everything;
            ("POST", path.clone(), limited, json, body(obj))
        }
        ("RoleTemplate", 1) => {
            obj["spec"]["roleTemplateNames"] = json!(["cluster-owner"]);
            ("POST", path.clone(), limited, json, body(obj))
        }
        ("RoleTemplate", 2) => (
            "DELETE",
            format!("{path}/project-owner"),
            admin,
            json,
            Vec::new(),
        ),
        ("RoleTemplate", _) => {
            obj["spec"]["roleTemplateNames"] = json!(["no-such-template"]);
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("GlobalRoleBinding", 0) => {
            obj["spec"]["globalRoleName"] = json!("admin");
            ("POST", path.clone(), limited, json, body(obj))
        }
        ("GlobalRoleBinding", 1) => {
            obj["spec"]["globalRoleName"] = json!("no-such-role");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("GlobalRoleBinding", 2) => {
            obj["spec"]["userName"] = json!("no-such-user");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("GlobalRoleBinding", _) => {
            obj["spec"]["userName"] = json!("limited");
            obj["spec"]["globalRoleName"] = json!("user-base");
            ("POST", path.clone(), limited, json, body(obj))
        }
        ("ProjectRoleTemplateBinding", 0) => {
            obj["spec"]["roleTemplateName"] = json!("cluster-owner");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("ProjectRoleTemplateBinding", 1) => {
            obj["spec"]["roleTemplateName"] = json!("fix-template");
            ("POST", path.clone(), limited, json, body(obj))
        }
        ("ProjectRoleTemplateBinding", 2) => {
            obj["spec"]["projectName"] = json!("c-fix:p-other");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("ProjectRoleTemplateBinding", _) => {
            obj["spec"]["roleTemplateName"] = json!("no-such-template");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("ClusterRoleTemplateBinding", 0) => {
            obj["spec"]["roleTemplateName"] = json!("project-member");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("ClusterRoleTemplateBinding", 1) => {
            obj["spec"]["clusterName"] = json!("c-other");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("ClusterRoleTemplateBinding", _) => (
            "POST",
            format!("{MGMT}/namespaces/c-nowhere/clusterroletemplatebindings"),
            admin,
            json,
            body(obj),
        ),
        ("User", 0) => {
            obj["spec"]["username"] = json!("fix-user");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("User", 1) => ("DELETE", format!("{path}/admin"), limited, json, Vec::new()),
        ("User", 2) => (
            "POST",
            format!("{path}/admin/password"),
            limited,
            json,
            body(json!({"newPassword": "a long enough password"})),
        ),
        ("User", _) => (
            "PATCH",
            format!("{path}/admin"),
            limited,
            "application/merge-patch+json",
            body(json!({"spec": {"enabled": false}})),
        ),
        ("Token", 0) => {
            obj["spec"]["userName"] = json!("admin");
            ("POST", path.clone(), limited, json, body(obj))
        }
        ("Token", 1) => {
            obj["spec"]["userName"] = json!("no-such-user");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("Token", _) => return None,
        ("Project", 0) => {
            obj["spec"]["resourceQuota"] = json!({"limit": {"pods": "1"}});
            obj["spec"]["namespaceDefaultResourceQuota"] = json!({"limit": {"pods": "5"}});
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("Project", 1) => {
            obj["spec"]["resourceQuota"] = json!({"limit": {"bogus": "1"}});
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("Project", 2) => (
            "POST",
            format!("{MGMT}/namespaces/c-nowhere/projects"),
            admin,
            json,
            body(obj),
        ),
        ("Project", _) => {
            obj["spec"]["clusterName"] = json!("c-other");
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("ClusterRegistrationToken", _) => (
            "POST",
            format!("{MGMT}/namespaces/c-nowhere/clusterregistrationtokens"),
            admin,
            json,
            body(obj),
        ),
        ("Cluster", 0) => {
            obj["spec"]["displayName"] = json!("x".repeat(300));
            ("POST", path.clone(), admin, json, body(obj))
        }
        ("Cluster", _) => {
            // Its name is a project's: names are unique across both.
            obj["metadata"]["name"] = json!(f.project);
            ("POST", path.clone(), admin, json, body(obj))
        }
        _ => return None,
    })
}

/// Every object of every kind, as the admin lists them.
fn everything(c: &Client, f: &Fixture) -> Vec<Value> {
    let mut all = Vec::new();
    for (plural, _, _) in KINDS {
        let list = c.json("GET", &format!("{MGMT}/{plural}"), &f.admin, &Value::Null);
        assert_eq!(list.status, 200, "{plural}: {}", list.body);
        all.extend(list.body["items"].as_array().unwrap().iter().cloned());
    }
    all
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

#[test]
fn a_refused_request_changes_nothing() {
    let m = Mgmt::start(&[]);
    let c = Client::new(&m);
    let f = fixture(&m, &c);
    let before_all = everything(&c, &f);
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<String, u32>::new());
    let mut runner = TestRunner::new(config(400));
    runner
        .run(
            &(0..KINDS.len(), refusal(), any::<u32>()),
            |(k, refusal, salt)| {
                let Some((method, path, token, content_type, body)) =
                    request(&f, &c, k, &refusal, salt)
                else {
                    return Ok(());
                };
                let before = c.revision();
                let a = c.send(method, &path, Some(&token), content_type, body);
                let after = c.revision();
                let class = format!("{:?}", refusal)
                    .split('(')
                    .next()
                    .unwrap()
                    .to_owned();
                *seen.borrow_mut().entry(class.clone()).or_default() += 1;
                prop_assert!(
                    (400..500).contains(&a.status),
                    "{class} of {}: {method} {path} was answered {}: {}",
                    KINDS[k].2,
                    a.status,
                    a.body
                );
                prop_assert_eq!(&a.body["kind"], "Status", "{}", a.body);
                prop_assert_eq!(a.body["code"].as_u64(), Some(a.status as u64));
                let written = written_between(&m, before, after);
                prop_assert!(
                    written.is_empty(),
                    "{} of {}: {} {} ({}) wrote to the store: {:?}",
                    class,
                    KINDS[k].2,
                    method,
                    path,
                    a.status,
                    written
                );
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(everything(&c, &f), before_all, "an object changed");
    // Every class of refusal was tried.
    let seen = seen.into_inner();
    eprintln!("refusals tried, by class: {seen:?}");
    for class in [
        "Taken",
        "Stale",
        "WrongType",
        "Unknown",
        "BadName",
        "WrongKind",
        "Garbage",
        "Unauthorized",
        "Admission",
        "TooLarge",
    ] {
        assert!(
            seen.get(class).is_some_and(|n| *n > 0),
            "{class} never tried: {seen:?}"
        );
    }
}

/// Login and import, the endpoints anyone can reach, with generated input.
#[test]
fn login_and_import_take_any_input() {
    let m = Mgmt::start(&[]);
    let c = Client::new(&m);
    let field = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,40}".prop_map(Value::String),
        Just(json!("admin")),
        Just(json!("")),
        Just(json!("admin password for tests ")),
        Just(json!("*)(uid=*")),
        Just(json!("x".repeat(70_000))),
        Just(json!([1, 2])),
        Just(json!({"a": 1})),
    ];
    let login = prop_oneof![
        4 => (field.clone(), field.clone(), field.clone(), field.clone(), field)
            .prop_map(|(u, p, t, d, pr)| json!({"username": u, "password": p, "ttlSeconds": t, "description": d, "provider": pr}).to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => Just(vec![b'{'; 100_000]),
    ];
    let import = prop_oneof![
        "[A-Za-z0-9]{0,80}(\\.yaml)?",
        "\\PC{0,60}".prop_map(|s| percent_encoding_of(&s)),
        Just("..%2F..%2Fetc%2Fpasswd".to_owned()),
    ];
    let mut runner = TestRunner::new(config(300));
    runner
        .run(&(login, import), |(login, import)| {
            let a = c.send("POST", "/v1-public/login", None, "application/json", login);
            prop_assert!(a.status != 200, "a generated login succeeded: {}", a.body);
            prop_assert!(
                (400..500).contains(&a.status),
                "login: {}: {}",
                a.status,
                a.body
            );
            prop_assert_eq!(&a.body["kind"], "Status");
            let a = c.send(
                "GET",
                &format!("/v1-public/import/{import}"),
                None,
                "application/json",
                Vec::new(),
            );
            prop_assert!(
                (400..500).contains(&a.status),
                "import {}: {}: {}",
                import,
                a.status,
                a.body
            );
            prop_assert_eq!(&a.body["kind"], "Status", "import {}", import);
            Ok(())
        })
        .unwrap();
    assert!(!m.server.log().contains("panicked"), "{}", m.server.log());
}

fn percent_encoding_of(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
