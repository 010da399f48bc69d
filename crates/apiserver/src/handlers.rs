//! The verbs: get, list, create, update, patch, delete, deletecollection,
//! on objects and their `status` subresource, with kube-apiserver's rules
//! for server-owned metadata, generation, finalizers and preconditions.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use drover_core::{keys, meta as m};
use drover_rbac::{Attributes, RuleSet};
use drover_store::{KeyValue, ListOptions, Op, StoreError};
use serde_json::{json, Map, Value};

use crate::error::Subject;
use crate::kind::{Context, Resource};
use crate::object::{self, finalizers, is_deleting, meta_mut};
use crate::request::RequestInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::{schema, table, ApiError, ApiServer, FieldError};

/// Fields a field selector may use on every kind.
pub(crate) const SELECTABLE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];
/// Page size for reading the store while filtering.
const STORE_PAGE: usize = 500;
/// Attempts at a read-modify-write that lost a race.
const RETRIES: usize = 5;

/// Query parameters (last value wins).
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub(crate) fn set(&mut self, k: &str, v: &str) {
        self.0.insert(k.to_owned(), v.to_owned());
    }

    /// The field manager of a write (always set for writes by dispatch).
    pub(crate) fn manager(&self) -> &str {
        self.get("fieldManager").unwrap_or("unknown")
    }

    pub(crate) fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "True"))
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }

    /// `dryRun` takes only `All`, as in kube-apiserver.
    pub(crate) fn check_dry_run(&self) -> Result<(), ApiError> {
        match self.get("dryRun") {
            None | Some("All") => Ok(()),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid value: {other:?}: supported values: \"All\""
            ))),
        }
    }
}

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    fn from_query(q: &Query) -> Result<Self, ApiError> {
        match q.get("fieldValidation") {
            None | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other:?}; must be one of Ignore, Warn, Strict"
            ))),
        }
    }
}

/// An object read from the store, with its revision.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) value: Value,
    pub(crate) revision: i64,
}

impl Stored {
    pub(crate) fn from_kv(kv: &KeyValue) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(&kv.value).map_err(|e| {
            tracing::error!(key = %kv.key, error = %e, "unreadable object in the store");
            ApiError::internal("an object in the datastore is unreadable")
        })?;
        Ok(Self {
            value,
            revision: kv.mod_revision,
        })
    }

    /// The object as clients see it: with `metadata.resourceVersion`.
    pub(crate) fn with_rv(self) -> Value {
        let mut v = self.value;
        if v.is_object() {
            meta_mut(&mut v).insert(
                "resourceVersion".into(),
                Value::String(self.revision.to_string()),
            );
        }
        v
    }
}

/// A `…List` of `items`. The items are moved in: `json!` would copy each
/// one, which for a list of 10,000 objects was most of the list's time.
fn list_of(r: &Resource, metadata: Value, items: Vec<Value>) -> Value {
    let mut list = serde_json::Map::new();
    list.insert("kind".into(), Value::String(format!("{}List", r.info.kind)));
    list.insert("apiVersion".into(), Value::String(r.info.api_version()));
    list.insert("metadata".into(), metadata);
    list.insert("items".into(), Value::Array(items));
    Value::Object(list)
}

/// The object's key.
pub(crate) fn key_of(r: &Resource, namespace: &str, name: &str) -> String {
    let ns = r.info.namespaced.then_some(namespace);
    keys::object(r.info.group, r.info.plural, ns, name)
}

/// The prefix under which a kind's objects (in one namespace) live.
pub(crate) fn prefix_of(r: &Resource, namespace: &str) -> String {
    let ns = (r.info.namespaced && !namespace.is_empty()).then_some(namespace);
    keys::prefix(r.info.group, r.info.plural, ns)
}

fn subject<'a>(r: &'a Resource, name: &'a str) -> Subject<'a> {
    Subject {
        group: r.info.group,
        resource: r.info.plural,
        name,
    }
}

/// Parse a request body as one JSON object.
pub(crate) fn parse_object(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// The finalizer kube's garbage collector serves for `propagationPolicy:
/// Orphan`: dependents lose their owner reference, then the owner goes.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer for `propagationPolicy: Foreground`: dependents go first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The deletion's propagation policy, from the options or the query
/// (`orphanDependents: true` is the old spelling of Orphan).
fn propagation_policy<'a>(q: &'a Query, options: &'a Value) -> Result<Option<&'a str>, ApiError> {
    let policy = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| q.get("propagationPolicy"));
    let orphan = options.get("orphanDependents").and_then(Value::as_bool);
    let invalid = |e: FieldError| ApiError::invalid("DeleteOptions", "meta.k8s.io", "", &[e]);
    if let (Some(p), Some(o)) = (policy, orphan) {
        return Err(invalid(FieldError::invalid(
            "orphanDependents",
            o,
            format!("cannot set both orphanDependents and propagationPolicy ({p})"),
        )));
    }
    match (policy, orphan) {
        (Some(p @ ("Orphan" | "Foreground" | "Background")), _) => Ok(Some(p)),
        (Some(other), _) => Err(invalid(FieldError::not_supported(
            "propagationPolicy",
            other,
            &["Foreground", "Background", "Orphan"],
        ))),
        (None, Some(true)) => Ok(Some("Orphan")),
        (None, _) => Ok(None),
    }
}

/// Total characters of warnings one response carries, as kube-apiserver.
const WARNINGS_TOTAL_CHARS: usize = 4 * 1024;
/// Each warning's length once the total is over, as kube-apiserver.
const WARNING_ITEM_CHARS: usize = 256;

/// Deduplicate warnings and bound them the way kube-apiserver does: past
/// 4 KiB in total, each is cut to 256 characters, then the rest are dropped.
pub(crate) fn bounded_warnings(warnings: &[String]) -> Vec<String> {
    let mut unique: Vec<&str> = Vec::new();
    for w in warnings {
        if !unique.contains(&w.as_str()) {
            unique.push(w);
        }
    }
    let total: usize = unique.iter().map(|w| w.chars().count()).sum();
    if total <= WARNINGS_TOTAL_CHARS {
        return unique.into_iter().map(str::to_owned).collect();
    }
    let mut out = Vec::new();
    let mut used = 0;
    for w in unique {
        let cut: String = w.chars().take(WARNING_ITEM_CHARS).collect();
        let len = cut.chars().count();
        if used + len > WARNINGS_TOTAL_CHARS {
            break;
        }
        used += len;
        out.push(cut);
    }
    out
}

/// JSON response with a status code and optional `Warning` headers.
pub(crate) fn respond(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, axum::Json(body)).into_response();
    for w in bounded_warnings(warnings) {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

impl ApiServer {
    pub(crate) async fn read(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Stored, ApiError> {
        let key = key_of(r, namespace, name);
        match self.store.get(&key).await {
            Ok(Some(kv)) => Stored::from_kv(&kv),
            Ok(None) => Err(ApiError::not_found(subject(r, name))),
            Err(e) => Err(ApiError::from_store(e, subject(r, name))),
        }
    }

    /// Check apiVersion/kind, then validate against the schema, pruning
    /// unknown fields; returns warnings.
    fn check_body(
        &self,
        r: &Resource,
        obj: &mut Value,
        q: &Query,
    ) -> Result<Vec<String>, ApiError> {
        let mode = FieldValidation::from_query(q)?;
        // The server keeps managedFields itself; what a client sends there
        // is neither validated nor kept.
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        let api_version = r.info.api_version();
        if r.strategy.kind_from_url() {
            if let Some(m) = obj.as_object_mut() {
                let missing = |v: Option<&Value>| v.is_none_or(|v| v.as_str() == Some(""));
                if missing(m.get("apiVersion")) {
                    m.insert("apiVersion".into(), Value::String(api_version.clone()));
                }
                if missing(m.get("kind")) {
                    m.insert("kind".into(), Value::String(r.info.kind.to_owned()));
                }
            }
        }
        match obj.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )))
            }
            None => return Err(ApiError::bad_request("Object 'apiVersion' is missing in the request body")),
        }
        match obj.get("kind").and_then(Value::as_str) {
            Some(k) if k == r.info.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    r.info.kind
                )))
            }
            None => {
                return Err(ApiError::bad_request(
                    "Object 'Kind' is missing in the request body",
                ))
            }
        }
        let outcome = schema::validate(obj, &r.schema);
        if let Some(why) = &outcome.undecodable {
            return Err(ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {kind}: {why}",
                kind = r.info.kind,
                version = r.info.version,
            )));
        }
        let name = object::name(obj).to_owned();
        if !outcome.errors.is_empty() {
            return Err(ApiError::invalid(
                r.info.kind,
                r.info.group,
                &name,
                &outcome.errors,
            ));
        }
        let unknown: Vec<String> = outcome
            .unknown
            .iter()
            .map(|p| format!("unknown field {p:?}"))
            .collect();
        match mode {
            FieldValidation::Strict if !unknown.is_empty() => Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                unknown.join(", ")
            ))),
            FieldValidation::Warn => Ok(unknown),
            _ => Ok(Vec::new()),
        }
    }

    fn validate_all(&self, r: &Resource, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        if let Err(e) = crate::limits::check_object(obj) {
            return Err(ApiError::new(413, "RequestEntityTooLarge", e));
        }
        let mut errors = object::validate_meta(obj);
        let name = object::name(obj);
        if !name.is_empty() {
            if let Some(why) = r.strategy.invalid_name(name) {
                errors.push(FieldError::invalid("metadata.name", name, why));
            }
        }
        errors.extend(r.strategy.validate(obj, old));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                r.info.kind,
                r.info.group,
                object::name(obj),
                &errors,
            ))
        }
    }

    pub(crate) async fn get(
        &self,
        r: &Resource,
        info: &RequestInfo,
        headers: &HeaderMap,
        q: &Query,
    ) -> Result<Response, ApiError> {
        let stored = self.read(r, &info.namespace, &info.name).await?;
        let revision = stored.revision;
        let obj = stored.with_rv();
        if wants_table(headers) {
            let t = table::table(
                r,
                std::slice::from_ref(&obj),
                json!({"resourceVersion": revision.to_string()}),
                table::Include::parse(q.get("includeObject")),
            );
            return Ok(respond(StatusCode::OK, &t, &[]));
        }
        Ok(respond(StatusCode::OK, &obj, &[]))
    }

    /// List, filtered by selectors and (for `list_filtered` kinds without
    /// list permission) by what the caller may get.
    pub(crate) async fn list(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        headers: &HeaderMap,
        q: &Query,
        only_gettable: bool,
    ) -> Result<Response, ApiError> {
        let filter = Filter::new(ctx, r, q, only_gettable).await?;
        let limit = match q.get("limit") {
            None => None,
            Some(l) => match l.parse::<usize>() {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => return Err(ApiError::bad_request(format!("invalid limit {l:?}"))),
            },
        };
        let (mut revision, mut start_after) = match q.get("continue") {
            Some(token) => {
                let (rev, key) = decode_continue(token)?;
                (Some(rev), Some(key))
            }
            None => (None, None),
        };
        let prefix = prefix_of(r, &info.namespace);
        let mut items = Vec::new();
        let mut continue_key = None;
        'pages: loop {
            let page = self
                .store
                .list(&ListOptions { prefix: prefix.clone(), start_after: start_after.clone(), limit: Some(STORE_PAGE), revision })
                .await
                .map_err(|e| match e {
                    StoreError::TooOld { .. } => ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."),
                    other => ApiError::from_store(other, subject(r, "")),
                })?;
            revision = Some(page.revision);
            let count = page.items.len();
            for (i, kv) in page.items.iter().enumerate() {
                let Ok(stored) = Stored::from_kv(kv) else {
                    continue;
                };
                if filter.matches(r, &stored.value) {
                    items.push(stored.with_rv());
                }
                start_after = Some(kv.key.clone());
                if limit.is_some_and(|l| items.len() >= l) {
                    if i + 1 < count || page.more {
                        continue_key = Some(kv.key.clone());
                    }
                    break 'pages;
                }
            }
            if !page.more {
                break;
            }
        }
        let revision = revision.unwrap_or_default();
        let mut list_meta = json!({"resourceVersion": revision.to_string()});
        if let Some(k) = continue_key {
            // As kube's storage: how many follow, when nothing filters them.
            if filter.selects_all() {
                let rest = self
                    .store
                    .count(&ListOptions {
                        prefix: prefix.clone(),
                        start_after: Some(k.clone()),
                        limit: None,
                        revision: Some(revision),
                    })
                    .await;
                if let Ok(n) = rest {
                    list_meta["remainingItemCount"] = json!(n);
                }
            }
            list_meta["continue"] = Value::String(encode_continue(revision, &k));
        }
        if wants_table(headers) {
            let t = table::table(
                r,
                &items,
                list_meta,
                table::Include::parse(q.get("includeObject")),
            );
            return Ok(respond(StatusCode::OK, &t, &[]));
        }
        Ok(respond(StatusCode::OK, &list_of(r, list_meta, items), &[]))
    }

    pub(crate) async fn create(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        q: &Query,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let obj = parse_object(body)?;
        self.create_value(ctx, r, info, q, obj, None).await
    }

    /// Create `obj`; `applied` is the managedFields of a server-side apply
    /// that creates it (else the creator owns every field, as an Update).
    pub(crate) async fn create_value(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        q: &Query,
        mut obj: Value,
        applied: Option<Value>,
    ) -> Result<Response, ApiError> {
        let warnings = self.check_body(r, &mut obj, q)?;
        if let Some(result) = r.strategy.virtual_create(ctx, &obj) {
            let out = result.await?;
            return Ok(respond(StatusCode::CREATED, &out, &warnings));
        }
        // The namespace comes from the URL; a different one in the body is refused.
        let body_ns = object::meta_str(&obj, "namespace").to_owned();
        if r.info.namespaced {
            if !body_ns.is_empty() && body_ns != info.namespace {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            self.namespaces.check(&info.namespace).await?;
        }
        let given_name = object::name(&obj).to_owned();
        let generate = object::meta_str(&obj, "generateName").to_owned();
        let prefix = if !generate.is_empty() {
            Some(generate.clone())
        } else {
            r.info.name_prefix.map(str::to_owned)
        };
        if given_name.is_empty() && prefix.is_none() {
            return Err(ApiError::invalid(
                r.info.kind,
                r.info.group,
                "",
                &[FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        let template = obj;
        for _attempt in 0..3 {
            let mut obj = template.clone();
            let name = if given_name.is_empty() {
                drover_core::names::generate(prefix.as_deref().unwrap_or_default())
            } else {
                given_name.clone()
            };
            init_metadata(&mut obj, r, &info.namespace, &name, true);
            self.validate_all(r, &obj, None)?;
            let prepared = r.strategy.prepare_create(ctx, &mut obj).await?;
            match &applied {
                Some(fields) => {
                    crate::object::meta_mut(&mut obj)
                        .insert("managedFields".into(), fields.clone());
                }
                None => {
                    let lists = list_types(r);
                    let writer = writer(r, q, "");
                    crate::managed::record_update(&Value::Null, &mut obj, &writer, &lists);
                }
            }
            let mut extra = Vec::new();
            for mut new in prepared.extra {
                let er = self
                    .registry
                    .by_plural(new.group, new.plural)
                    .ok_or_else(|| {
                        ApiError::internal(format!("no kind {}/{}", new.group, new.plural))
                    })?
                    .clone();
                let ns = object::meta_str(&new.object, "namespace").to_owned();
                let mut ename = object::name(&new.object).to_owned();
                if ename.is_empty() {
                    ename =
                        drover_core::names::generate(object::meta_str(&new.object, "generateName"));
                }
                // Extras are the server's own making: their status stays.
                init_metadata(&mut new.object, &er, &ns, &ename, false);
                extra.push((key_of(&er, &ns, &ename), new.object));
            }
            let mut warnings = warnings.clone();
            warnings.extend(prepared.warnings.iter().cloned());
            if q.dry_run() {
                return Ok(respond(StatusCode::CREATED, &obj, &warnings));
            }
            let key = key_of(r, &info.namespace, &name);
            let mut ops = vec![Op::create(
                key.clone(),
                serde_json::to_vec(&obj).expect("JSON"),
            )];
            ops.extend(
                extra
                    .iter()
                    .map(|(k, v)| Op::create(k.clone(), serde_json::to_vec(v).expect("JSON"))),
            );
            ops.extend(
                prepared
                    .records
                    .iter()
                    .map(|(k, v)| Op::create(k.clone(), v.clone())),
            );
            ops.extend(prepared.ops);
            match self.store.txn(&ops).await {
                Ok(kvs) => {
                    r.strategy.committed();
                    let mut out = Stored {
                        value: obj,
                        revision: kvs[0].mod_revision,
                    }
                    .with_rv();
                    if let Some(overlay) = prepared.response_overlay {
                        json_patch::merge(&mut out, &overlay);
                    }
                    return Ok(respond(StatusCode::CREATED, &out, &warnings));
                }
                Err(StoreError::AlreadyExists(k)) if k == key && given_name.is_empty() => continue,
                Err(e) => return Err(txn_error(e, &key, subject(r, &name))),
            }
        }
        Err(ApiError::new(
            409,
            "AlreadyExists",
            "could not generate a unique name; try again",
        ))
    }

    pub(crate) async fn update(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        q: &Query,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let mut obj = parse_object(body)?;
        let warnings = self.check_body(r, &mut obj, q)?;
        let body_name = object::name(&obj).to_owned();
        if !body_name.is_empty() && body_name != info.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                info.name
            )));
        }
        let body_ns = object::meta_str(&obj, "namespace");
        if r.info.namespaced && !body_ns.is_empty() && body_ns != info.namespace {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        let current = self.read(r, &info.namespace, &info.name).await?;
        let rv = object::meta_str(&obj, "resourceVersion").to_owned();
        if rv.is_empty() {
            return Err(ApiError::invalid(
                r.info.kind,
                r.info.group,
                &info.name,
                &[FieldError::invalid(
                    "metadata.resourceVersion",
                    "0x0",
                    "must be specified for an update",
                )],
            ));
        }
        if rv != current.revision.to_string() {
            return Err(ApiError::conflict(subject(r, &info.name)));
        }
        let uid = object::meta_str(&obj, "uid");
        let have = object::meta_str(&current.value, "uid");
        if !uid.is_empty() && uid != have {
            return Err(ApiError::conflict_because(
                subject(r, &info.name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
        let out = self.replace(ctx, r, info, current, obj, q, false).await?;
        Ok(respond(StatusCode::OK, &out, &warnings))
    }

    /// An applied config, checked against the URL: its name (taken from
    /// the URL when left out) and namespace.
    fn apply_config(
        &self,
        r: &Resource,
        info: &RequestInfo,
        config: &Value,
    ) -> Result<Value, ApiError> {
        let mut config = config.clone();
        let name = object::name(&config).to_owned();
        if !name.is_empty() && name != info.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                info.name
            )));
        }
        let ns = object::meta_str(&config, "namespace").to_owned();
        if r.info.namespaced && !ns.is_empty() && ns != info.namespace {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        let m = meta_mut(&mut config);
        m.insert("name".into(), json!(info.name));
        if r.info.namespaced {
            m.insert("namespace".into(), json!(info.namespace));
        }
        Ok(config)
    }

    /// Server-side apply of an object that does not exist: a create, which
    /// the caller must also be allowed.
    async fn apply_create(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        q: &Query,
        config: &Value,
        force: bool,
    ) -> Result<Response, ApiError> {
        let attrs = Attributes::resource(
            "create",
            &info.group,
            &info.resource,
            &info.namespace,
            &info.name,
        );
        if !ctx.authorizer.authorize(&ctx.user, &attrs).await? {
            return Err(ApiError::forbidden(
                &ctx.user.name,
                "create",
                subject(r, &info.name),
                &info.namespace,
                "",
            ));
        }
        let config = self.apply_config(r, info, config)?;
        let lists = list_types(r);
        let writer = writer(r, q, "");
        let created = crate::managed::apply(&Value::Null, &config, &writer, force, &lists)
            .map_err(|conflicts| apply_conflict(r, info, &conflicts))?;
        let fields = created
            .pointer("/metadata/managedFields")
            .cloned()
            .unwrap_or_else(|| json!([]));
        let mut obj = created;
        meta_mut(&mut obj).remove("managedFields");
        let mut create_info = info.clone();
        create_info.name = String::new();
        let response = self
            .create_value(ctx, r, &create_info, q, obj, Some(fields))
            .await?;
        Ok(response)
    }

    pub(crate) async fn patch(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        q: &Query,
        content_type: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        enum Kind {
            Merge(Value),
            Strategic(Value, crate::strategic::ListStrategies),
            Json(json_patch::Patch),
            Apply(Value),
        }
        // As Go's strconv.ParseBool, which kube-apiserver uses.
        let force = match q.get("force") {
            None => false,
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for force: {other:?}"
                )))
            }
        };
        if force && content_type != "application/apply-patch+yaml" {
            return Err(ApiError::bad_request(
                "force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        let parse_json = |body: &Bytes| -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
        };
        let patch = match content_type {
            "application/strategic-merge-patch+json" if r.strategy.list_strategies().is_some() => {
                Kind::Strategic(
                    parse_json(body)?,
                    r.strategy.list_strategies().expect("checked"),
                )
            }
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                Kind::Merge(serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("the patch is not valid JSON: {e}"))
                })?)
            }
            "application/json-patch+json" => {
                Kind::Json(serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("the JSON patch is invalid: {e}"))
                })?)
            }
            "application/apply-patch+yaml" => {
                if q.get("fieldManager").is_none() {
                    return Err(ApiError::bad_request(
                        "fieldManager is required for apply requests",
                    ));
                }
                Kind::Apply(parse_apply(body)?)
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        };
        let mut last_conflict = None;
        for _ in 0..RETRIES {
            let current = match (self.read(r, &info.namespace, &info.name).await, &patch) {
                (Ok(c), _) => c,
                // Apply creates what does not exist yet.
                (Err(e), Kind::Apply(config)) if e.code == 404 && info.subresource.is_empty() => {
                    match self.apply_create(ctx, r, info, q, config, force).await {
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        other => return other,
                    }
                }
                (Err(e), _) => return Err(e),
            };
            let mut doc = current.clone().with_rv();
            match &patch {
                Kind::Apply(config) => {
                    let config = self.apply_config(r, info, config)?;
                    let lists = list_types(r);
                    let writer = writer(r, q, &info.subresource);
                    doc = crate::managed::apply(&doc, &config, &writer, force, &lists)
                        .map_err(|conflicts| apply_conflict(r, info, &conflicts))?;
                }
                Kind::Merge(p) => {
                    if !p.is_object() {
                        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                    }
                    json_patch::merge(&mut doc, p);
                }
                Kind::Strategic(p, lists) => {
                    crate::strategic::apply(&mut doc, p, *lists).map_err(|e| {
                        ApiError::invalid(
                            r.info.kind,
                            r.info.group,
                            &info.name,
                            &[FieldError::invalid(
                                "",
                                Value::Null,
                                format!("the strategic merge patch could not be applied: {e}"),
                            )],
                        )
                    })?
                }
                Kind::Json(p) => crate::limits::apply_json_patch(&mut doc, p).map_err(|e| {
                    ApiError::invalid(
                        r.info.kind,
                        r.info.group,
                        &info.name,
                        &[FieldError::invalid(
                            "",
                            Value::Null,
                            format!("the JSON patch could not be applied: {e}"),
                        )],
                    )
                })?,
            }
            if !doc.is_object() {
                return Err(ApiError::bad_request(
                    "the patched object is not a JSON object",
                ));
            }
            let applied_fields = doc.pointer("/metadata/managedFields").cloned();
            let warnings = self.check_body(r, &mut doc, q)?;
            if let (Kind::Apply(_), Some(fields)) = (&patch, applied_fields) {
                meta_mut(&mut doc).insert("managedFields".into(), fields);
            }
            if object::name(&doc) != info.name
                || (r.info.namespaced && object::meta_str(&doc, "namespace") != info.namespace)
            {
                return Err(ApiError::invalid(
                    r.info.kind,
                    r.info.group,
                    &info.name,
                    &[FieldError::forbidden("metadata.name", "field is immutable")],
                ));
            }
            let precondition =
                object::meta_str(&doc, "resourceVersion") != current.revision.to_string();
            if precondition {
                return Err(ApiError::conflict(subject(r, &info.name)));
            }
            let applied = matches!(patch, Kind::Apply(_));
            match self.replace(ctx, r, info, current, doc, q, applied).await {
                Err(e) if e.reason == "Conflict" => last_conflict = Some(e),
                Ok(out) => return Ok(respond(StatusCode::OK, &out, &warnings)),
                Err(e) => return Err(e),
            }
        }
        Err(last_conflict.unwrap_or_else(|| ApiError::conflict(subject(r, &info.name))))
    }

    /// Replace `current` with `new` (from an update or patch): carry the
    /// server-owned fields over, bump generation on spec changes, release
    /// an object whose last finalizer went, and skip no-op writes.
    #[allow(clippy::too_many_arguments)]
    async fn replace(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        current: Stored,
        mut new: Value,
        q: &Query,
        applied: bool,
    ) -> Result<Value, ApiError> {
        let dry_run = q.dry_run();
        let old = &current.value;
        let status_only = info.subresource == "status";
        if status_only {
            let status = new.get("status").cloned();
            let fields = new.pointer("/metadata/managedFields").cloned();
            new = old.clone();
            // An apply to the status brought its own record of owners.
            if applied {
                match fields {
                    Some(f) => {
                        meta_mut(&mut new).insert("managedFields".into(), f);
                    }
                    None => {
                        meta_mut(&mut new).remove("managedFields");
                    }
                }
            }
            match status {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
        } else if r.info.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
        }
        {
            let old_meta = object::meta(old).cloned().unwrap_or_default();
            let nm = meta_mut(&mut new);
            nm.remove("resourceVersion");
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "name",
                "namespace",
            ] {
                match old_meta.get(f) {
                    Some(v) => nm.insert(f.to_owned(), v.clone()),
                    None => nm.remove(f),
                };
            }
        }
        if is_deleting(old) {
            let before: Vec<String> = finalizers(old);
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    r.info.kind,
                    r.info.group,
                    &info.name,
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        if !status_only && spec_changed(old, &new) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        self.validate_all(r, &new, Some(old))?;
        r.strategy.prepare_update(ctx, &mut new, old).await?;
        let extra = r.strategy.update_ops(ctx, &mut new, old).await?;
        // Who owns what: an apply brought its own record; any other write
        // takes the fields it changed (clients cannot rewrite the record).
        if !applied {
            match old.pointer("/metadata/managedFields") {
                Some(m) => {
                    meta_mut(&mut new).insert("managedFields".into(), m.clone());
                }
                None => {
                    meta_mut(&mut new).remove("managedFields");
                }
            }
            let lists = list_types(r);
            let writer = writer(r, q, &info.subresource);
            crate::managed::record_update(old, &mut new, &writer, &lists);
        }
        if new == *old && extra.is_empty() {
            return Ok(current.with_rv());
        }
        if dry_run {
            return Ok(Stored {
                value: new,
                revision: current.revision,
            }
            .with_rv());
        }
        let key = key_of(r, &info.namespace, &info.name);
        if is_deleting(&new) && !r.strategy.holds_deletion(&new) {
            let kv = self.remove(ctx, r, &key, &new, current.revision).await?;
            return Ok(Stored {
                value: new,
                revision: kv.mod_revision,
            }
            .with_rv());
        }
        let bytes = serde_json::to_vec(&new).expect("JSON");
        let kv = if extra.is_empty() {
            self.store.update(&key, bytes, current.revision).await
        } else {
            let mut ops = vec![Op::update(key.clone(), bytes, current.revision)];
            ops.extend(extra);
            self.store.txn(&ops).await.and_then(|kvs| {
                kvs.into_iter()
                    .next()
                    .ok_or(drover_store::StoreError::NotFound(key.clone()))
            })
        }
        .map_err(|e| ApiError::from_store(e, subject(r, &info.name)))?;
        r.strategy.committed();
        Ok(Stored {
            value: new,
            revision: kv.mod_revision,
        }
        .with_rv())
    }

    pub(crate) async fn delete(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        q: &Query,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let options = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice::<Value>(body).map_err(|e| {
                ApiError::bad_request(format!("the delete options are not valid JSON: {e}"))
            })?
        };
        let dry_run = q.dry_run()
            || options
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        let policy = propagation_policy(q, &options)?;
        let finalizer = match policy {
            _ if !self.garbage_collector => None,
            Some("Orphan") => Some(ORPHAN_FINALIZER),
            Some("Foreground") => Some(FOREGROUND_FINALIZER),
            _ => None,
        };
        for _ in 0..RETRIES {
            let mut current = self.read(r, &info.namespace, &info.name).await?;
            if let Some(f) = finalizer {
                if !is_deleting(&current.value)
                    && !finalizers(&current.value).iter().any(|have| have == f)
                {
                    let mm = meta_mut(&mut current.value);
                    let list = mm.entry("finalizers").or_insert_with(|| json!([]));
                    if let Some(a) = list.as_array_mut() {
                        a.push(json!(f));
                    }
                }
            }
            // A kind's refusal is final; only a lost write race is retried.
            r.strategy.prepare_delete(ctx, &current.value).await?;
            match self.delete_one(ctx, r, current, &options, dry_run).await {
                Err(e) if e.reason == "Conflict" && options.pointer("/preconditions").is_none() => {
                    continue
                }
                Ok(obj) => return Ok(respond(StatusCode::OK, &obj, &[])),
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(subject(r, &info.name)))
    }

    /// Delete one object whose deletion the kind already allowed
    /// ([`Strategy::prepare_delete`]).
    async fn delete_one(
        &self,
        ctx: &Context,
        r: &Resource,
        current: Stored,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let name = object::name(&current.value).to_owned();
        if let Some(uid) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
        {
            let have = object::meta_str(&current.value, "uid");
            if uid != have {
                return Err(ApiError::conflict_because(subject(r, &name), &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}")));
            }
        }
        if let Some(rv) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            if rv != current.revision.to_string() {
                return Err(ApiError::conflict_because(subject(r, &name), &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", current.revision)));
            }
        }
        let key = key_of(r, object::meta_str(&current.value, "namespace"), &name);
        if r.strategy.holds_deletion(&current.value) {
            if is_deleting(&current.value) {
                return Ok(current.with_rv());
            }
            let mut marked = current.value.clone();
            let mm = meta_mut(&mut marked);
            mm.insert("deletionTimestamp".into(), Value::String(m::now_rfc3339()));
            mm.insert("deletionGracePeriodSeconds".into(), json!(0));
            r.strategy.mark_deleting(&mut marked);
            let generation = marked
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut marked).insert("generation".into(), json!(generation + 1));
            if dry_run {
                return Ok(Stored {
                    value: marked,
                    revision: current.revision,
                }
                .with_rv());
            }
            let kv = self
                .store
                .update(
                    &key,
                    serde_json::to_vec(&marked).expect("JSON"),
                    current.revision,
                )
                .await
                .map_err(|e| ApiError::from_store(e, subject(r, &name)))?;
            r.strategy.committed();
            return Ok(Stored {
                value: marked,
                revision: kv.mod_revision,
            }
            .with_rv());
        }
        if dry_run {
            return Ok(current.with_rv());
        }
        self.remove(ctx, r, &key, &current.value, current.revision)
            .await?;
        Ok(current.with_rv())
    }

    /// Remove an object read at `revision` from the store, with what goes
    /// with it ([`crate::Strategy::delete_ops`]), in one transaction.
    async fn remove(
        &self,
        ctx: &Context,
        r: &Resource,
        key: &str,
        obj: &Value,
        revision: i64,
    ) -> Result<KeyValue, ApiError> {
        let mut ops = vec![Op::delete(key, revision)];
        ops.extend(r.strategy.delete_ops(ctx, obj).await?);
        let kvs = self
            .store
            .txn(&ops)
            .await
            .map_err(|e| txn_error(e, key, subject(r, object::name(obj))))?;
        r.strategy.committed();
        r.strategy.after_delete(ctx, obj).await;
        Ok(kvs.into_iter().next().expect("the delete wrote"))
    }

    pub(crate) async fn delete_collection(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        q: &Query,
    ) -> Result<Response, ApiError> {
        let filter = Filter::new(ctx, r, q, false).await?;
        let listed = self
            .store
            .list(&ListOptions {
                prefix: prefix_of(r, &info.namespace),
                ..Default::default()
            })
            .await
            .map_err(|e| ApiError::from_store(e, subject(r, "")))?;
        let mut deleted = Vec::new();
        for kv in &listed.items {
            let Ok(current) = Stored::from_kv(kv) else {
                continue;
            };
            if !filter.matches(r, &current.value) {
                continue;
            }
            // What a kind refuses to delete stays, as with other refusals.
            if r.strategy
                .prepare_delete(ctx, &current.value)
                .await
                .is_err()
            {
                continue;
            }
            match self
                .delete_one(ctx, r, current, &Value::Null, q.dry_run())
                .await
            {
                Ok(obj) => deleted.push(obj),
                Err(e) if e.code == 404 || e.reason == "Conflict" => {}
                Err(e) => return Err(e),
            }
        }
        let meta = json!({"resourceVersion": listed.revision.to_string()});
        Ok(respond(StatusCode::OK, &list_of(r, meta, deleted), &[]))
    }
}

/// Who writes, for field management: the request's field manager.
fn writer<'a>(r: &Resource, q: &'a Query, subresource: &'a str) -> crate::managed::Writer<'a> {
    crate::managed::Writer {
        manager: q.manager(),
        subresource,
        has_status: r.info.status,
    }
}

/// The list types of a kind's fields, for field management.
pub(crate) fn list_types(r: &Resource) -> impl Fn(&[&str]) -> crate::managed::ListType + '_ {
    let strategies = r.strategy.list_strategies();
    move |path: &[&str]| match strategies {
        Some(s) => crate::managed::from_strategies(s)(path),
        None => crate::managed::from_schema(&r.schema, path),
    }
}

/// An applied config: YAML or JSON, one object.
fn parse_apply(body: &Bytes) -> Result<Value, ApiError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => yaml_serde::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    Ok(value)
}

/// The 409 for apply conflicts, with a cause per field.
fn apply_conflict(
    r: &Resource,
    info: &RequestInfo,
    conflicts: &[crate::managed::Conflict],
) -> ApiError {
    let (message, causes) = crate::managed::conflict_status(conflicts);
    ApiError::new(409, "Conflict", message).with_details(json!({
        "name": info.name, "group": r.info.group, "kind": r.info.plural, "causes": causes,
    }))
}

/// The answer to a failed transaction about `key`: the object's own
/// failures as usual; a related step that no longer held (a record taken,
/// a role changed, a list grown) as a conflict to try again.
fn txn_error(e: StoreError, key: &str, s: Subject<'_>) -> ApiError {
    let own = match &e {
        StoreError::AlreadyExists(k) | StoreError::NotFound(k) => k == key,
        StoreError::Conflict { key: k, .. } => k == key,
        StoreError::PrefixChanged { .. } => false,
        _ => true,
    };
    if own {
        return ApiError::from_store(e, s);
    }
    match e {
        StoreError::AlreadyExists(_) => {
            ApiError::conflict_because(s, "a related object exists already")
        }
        _ => ApiError::conflict_because(s, "a related object changed meanwhile; try again"),
    }
}

/// Whether anything but metadata and status changed (what bumps
/// `metadata.generation` for custom resources).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    strip(old) != strip(new)
}

/// Set the server-owned metadata of a new object; with `client_status`,
/// drop the status a client sent for a kind whose status only its
/// subresource sets.
fn init_metadata(obj: &mut Value, r: &Resource, namespace: &str, name: &str, client_status: bool) {
    let api_version = r.info.api_version();
    let root = obj.as_object_mut().expect("object");
    root.insert("apiVersion".into(), Value::String(api_version));
    root.insert("kind".into(), Value::String(r.info.kind.to_owned()));
    if r.info.status && client_status {
        root.remove("status");
    }
    let mm = meta_mut(obj);
    for f in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
        "managedFields",
    ] {
        mm.remove(f);
    }
    mm.insert("name".into(), Value::String(name.to_owned()));
    if r.info.namespaced {
        mm.insert("namespace".into(), Value::String(namespace.to_owned()));
    } else {
        mm.remove("namespace");
    }
    mm.insert("uid".into(), Value::String(m::new_uid()));
    mm.insert("creationTimestamp".into(), Value::String(m::now_rfc3339()));
    mm.insert("generation".into(), json!(1));
}

pub(crate) fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(table::wanted)
}

fn encode_continue(revision: i64, key: &str) -> String {
    let raw = json!({"v": "drover/v1", "rv": revision, "start": key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("the continue token is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let key = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rev, key.to_owned()))
}

/// Selectors plus, for filtered lists, the caller's rules.
pub(crate) struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
    rules: Option<(std::sync::Arc<RuleSet>, String)>,
    ctx: Context,
}

impl Filter {
    pub(crate) async fn new(
        ctx: &Context,
        r: &Resource,
        q: &Query,
        only_gettable: bool,
    ) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?;
        let supported: Vec<&str> = SELECTABLE_FIELDS
            .iter()
            .chain(r.strategy.selectable_fields())
            .copied()
            .collect();
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default(), &supported)?;
        let rules = if only_gettable {
            Some((
                ctx.authorizer.rules(&ctx.user).await?,
                r.info.group.to_owned(),
            ))
        } else {
            None
        };
        Ok(Self {
            labels,
            fields,
            rules,
            ctx: ctx.clone(),
        })
    }

    /// Whether every object passes (no selector, no per-object check).
    pub(crate) fn selects_all(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty() && self.rules.is_none()
    }

    pub(crate) fn matches(&self, r: &Resource, obj: &Value) -> bool {
        let name = object::name(obj);
        let ns = object::meta_str(obj, "namespace");
        if !self.labels.matches(&object::labels(obj)) {
            return false;
        }
        if !self.fields.matches(|f| r.strategy.field_value(obj, f)) {
            return false;
        }
        match &self.rules {
            Some((rules, group)) => {
                rules.allows(&Attributes::resource("get", group, r.info.plural, ns, name))
                    || self
                        .ctx
                        .authorizer
                        .owns(&self.ctx.user, r.info.plural, "get", obj)
            }
            None => true,
        }
    }
}

impl ApiServer {
    /// The `scale` subresource: an `autoscaling/v1` Scale over the object's
    /// `spec.replicas`; get, update (PUT a Scale) and patch.
    pub(crate) async fn scale(
        &self,
        ctx: &Context,
        r: &Resource,
        info: &RequestInfo,
        q: &Query,
        content_type: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        for _ in 0..RETRIES {
            let current = self.read(r, &info.namespace, &info.name).await?;
            let view = scale_view(&current);
            let wanted = match info.verb.as_str() {
                "get" => return Ok(respond(StatusCode::OK, &view, &[])),
                "update" => {
                    let scale = if content_type == crate::protobuf::MEDIA_TYPE {
                        let (_, _, raw) = crate::protobuf::unwrap_envelope(body)?;
                        // autoscaling/v1 Scale: metadata=1, spec=2{replicas=1}.
                        let msg = crate::protobuf::Message::parse(raw)?;
                        let replicas = msg.message(2)?.varint(1).unwrap_or(0) as i64;
                        let rv = msg.message(1)?.string(6)?;
                        json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": replicas}})
                    } else {
                        parse_object(body)?
                    };
                    let rv = object::meta_str(&scale, "resourceVersion");
                    if !rv.is_empty() && rv != current.revision.to_string() {
                        return Err(ApiError::conflict(subject(r, &info.name)));
                    }
                    scale
                }
                "patch" => {
                    let patch: Value = serde_json::from_slice(body).map_err(|e| {
                        ApiError::bad_request(format!("the patch is not valid JSON: {e}"))
                    })?;
                    let mut patched = view.clone();
                    match content_type {
                        "application/json-patch+json" => {
                            let p: json_patch::Patch =
                                serde_json::from_value(patch).map_err(|e| {
                                    ApiError::bad_request(format!("the JSON patch is invalid: {e}"))
                                })?;
                            crate::limits::apply_json_patch(&mut patched, &p).map_err(|e| {
                                ApiError::invalid(
                                    "Scale",
                                    "autoscaling",
                                    &info.name,
                                    &[FieldError::invalid("", Value::Null, e.to_string())],
                                )
                            })?;
                        }
                        _ => json_patch::merge(&mut patched, &patch),
                    }
                    patched
                }
                other => return Err(ApiError::method_not_allowed(other)),
            };
            let replicas = match wanted.pointer("/spec/replicas") {
                Some(v) => v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::invalid(
                        "Scale",
                        "autoscaling",
                        &info.name,
                        &[FieldError::invalid(
                            "spec.replicas",
                            v.clone(),
                            "must be greater than or equal to 0",
                        )],
                    )
                })?,
                None => 0,
            };
            let mut new = current.value.clone();
            new["spec"]["replicas"] = json!(replicas);
            let parent = RequestInfo {
                subresource: String::new(),
                ..info.clone()
            };
            match self.replace(ctx, r, &parent, current, new, q, false).await {
                Ok(obj) => {
                    let stored = Stored {
                        revision: object::meta_str(&obj, "resourceVersion")
                            .parse()
                            .unwrap_or_default(),
                        value: obj,
                    };
                    return Ok(respond(StatusCode::OK, &scale_view(&stored), &[]));
                }
                Err(e) if e.reason == "Conflict" && info.verb == "patch" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(subject(r, &info.name)))
    }
}

/// The `autoscaling/v1` Scale view of an object.
fn scale_view(obj: &Stored) -> Value {
    let v = &obj.value;
    let selector = v
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": v.pointer("/metadata/name"), "namespace": v.pointer("/metadata/namespace"), "uid": v.pointer("/metadata/uid"),
            "resourceVersion": obj.revision.to_string(), "creationTimestamp": v.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": v.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": v.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_deduplicated_and_bounded_like_kube() {
        let few = vec!["a".to_owned(), "b".to_owned(), "a".to_owned()];
        assert_eq!(bounded_warnings(&few), vec!["a", "b"]);

        let many: Vec<String> = (0..1000)
            .map(|i| format!("unknown field \"spec.f{i}\" {}", "x".repeat(300)))
            .collect();
        let out = bounded_warnings(&many);
        assert!(!out.is_empty() && out.len() < many.len());
        assert!(out.iter().all(|w| w.chars().count() <= WARNING_ITEM_CHARS));
        let total: usize = out.iter().map(|w| w.chars().count()).sum();
        assert!(total <= WARNINGS_TOTAL_CHARS, "{total}");
        assert!(out[0].starts_with("unknown field \"spec.f0\""));
    }
}
