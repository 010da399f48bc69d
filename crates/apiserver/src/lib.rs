//! Drover's generic Kubernetes-conventions resource API over the store. It
//! serves the management API (`management.drover.io`) and is reused by the
//! simulator for the built-in kinds.
//!
//! # Layout
//! - [`kind`]: what a kind is ([`KindInfo`]), how it behaves ([`Strategy`]),
//!   and the [`Registry`] of served kinds; the [`Authorizer`] and
//!   [`Namespaces`] hooks the embedding server provides.
//! - `request`: path → group, version, namespace, resource, name,
//!   subresource and verb, as kube-apiserver parses it.
//! - `handlers`: the verbs; `watch`: the watch stream.
//! - `schema`: structural validation and pruning against each kind's
//!   OpenAPI schema (`fieldValidation=Strict|Warn|Ignore`).
//! - `selector`, `object`, `table`: label/field selectors, metadata rules,
//!   Table output for `kubectl get`.
//! - `discovery`, `openapi`: what kubectl reads before it acts.
//! - [`managed`]: `metadata.managedFields` on every write, and server-side
//!   apply.
//! - [`error`]: every failure as a `metav1.Status`.
//!
//! # A request
//! ```text
//! request (UserInfo in extensions, put there by the server's authn)
//!   → parse path → registry lookup → authorize(verb, resource, ns, name)
//!   → read body (≤ 3 MiB) → check apiVersion/kind → schema → metadata rules
//!   → strategy hooks → store transaction → object | List | Table | events
//! ```

pub mod discovery;
pub mod error;
mod handlers;
pub mod kind;
pub mod limits;
pub mod managed;
pub mod object;
pub mod openapi;
mod proto_tables;
pub mod protobuf;
pub mod request;
pub mod reviews;
pub mod schema;
pub mod selector;
pub mod strategic;
pub mod table;
pub mod typed;
pub mod versioned;
mod watch;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_rbac::{Attributes, UserInfo};
use drover_store::Store;

pub use error::{ApiError, FieldError};
pub use handlers::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
pub use kind::{
    Authorizer, Column, Context, KindInfo, Namespaces, NewObject, Prepared, Registry, Resource,
    Strategy,
};

use handlers::{respond, Query};
use request::Target;

/// Largest request body accepted (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The resource API over one store and one set of kinds.
pub struct ApiServer {
    store: Store,
    registry: Registry,
    /// Built on first use: most servers (and simulated clusters) never get
    /// asked, and the documents are large.
    openapi: std::sync::OnceLock<openapi::OpenApi>,
    authorizer: Arc<dyn Authorizer>,
    namespaces: Arc<dyn Namespaces>,
    /// Whether a garbage collector serves the `orphan` and
    /// `foregroundDeletion` finalizers; without one, every deletion is
    /// Background (nothing here has dependents to orphan or wait for).
    garbage_collector: bool,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("kinds", &self.registry.all().len())
            .finish()
    }
}

impl ApiServer {
    /// An API server for `registry`'s kinds over `store`.
    pub fn new(
        store: Store,
        registry: Registry,
        authorizer: Arc<dyn Authorizer>,
        namespaces: Arc<dyn Namespaces>,
    ) -> Arc<Self> {
        Self::build(store, registry, authorizer, namespaces, false)
    }

    /// As [`ApiServer::new`], for a store whose garbage collector honours
    /// `propagationPolicy` Orphan and Foreground through the `orphan` and
    /// `foregroundDeletion` finalizers, as kube's does.
    pub fn with_garbage_collector(
        store: Store,
        registry: Registry,
        authorizer: Arc<dyn Authorizer>,
        namespaces: Arc<dyn Namespaces>,
    ) -> Arc<Self> {
        Self::build(store, registry, authorizer, namespaces, true)
    }

    fn build(
        store: Store,
        registry: Registry,
        authorizer: Arc<dyn Authorizer>,
        namespaces: Arc<dyn Namespaces>,
        garbage_collector: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            registry,
            openapi: std::sync::OnceLock::new(),
            authorizer,
            namespaces,
            garbage_collector,
        })
    }

    /// The served kinds.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &Arc<dyn Authorizer> {
        &self.authorizer
    }

    /// Serve a request under `/api`, `/apis` or `/openapi`. The caller's
    /// identity must be in the request's extensions as a [`UserInfo`].
    pub async fn handle(self: Arc<Self>, req: Request) -> Response {
        match self.dispatch(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn dispatch(&self, req: Request) -> Result<Response, ApiError> {
        let user = req
            .extensions()
            .get::<UserInfo>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        let path = req.uri().path().to_owned();
        if let Some(rest) = path.strip_prefix("/openapi/") {
            return self.openapi(rest);
        }
        let q = Query::parse(req.uri().query());
        let target = request::parse(req.method(), &path, q.flag("watch"))
            .ok_or_else(ApiError::no_such_path)?;
        let info = match target {
            Target::CoreVersions => return Ok(json_ok(&discovery::core_versions(&self.registry)?)),
            Target::Groups => return Ok(json_ok(&discovery::groups(&self.registry))),
            Target::Group(g) => return Ok(json_ok(&discovery::group(&self.registry, &g)?)),
            Target::Resources { group, version } => {
                return Ok(json_ok(&discovery::resources(
                    &self.registry,
                    &group,
                    &version,
                )?))
            }
            Target::Resource(info) => info,
        };
        let mut info = info;
        // Upgrades to exec, attach and portforward are authorized as create
        // (kube-apiserver 1.31+, also for WebSocket GETs).
        if matches!(info.subresource.as_str(), "exec" | "attach" | "portforward") {
            info.verb = "create".into();
        }
        let r = self
            .registry
            .get(&info.group, &info.version, &info.resource)
            .ok_or_else(ApiError::no_such_path)?
            .clone();
        let cross_namespace =
            matches!(info.verb.as_str(), "list" | "watch") && info.name.is_empty();
        let namespace_object = info.resource == "namespaces" && info.namespace == info.name;
        if (r.info.namespaced && info.namespace.is_empty() && !cross_namespace)
            || (!r.info.namespaced && !info.namespace.is_empty() && !namespace_object)
        {
            return Err(ApiError::no_such_path());
        }
        let action =
            !info.subresource.is_empty() && r.info.actions.contains(&info.subresource.as_str());
        if action && info.verb != "create" {
            return Err(ApiError::method_not_allowed(&format!(
                "{}/{} only supports create",
                r.info.plural, info.subresource
            )));
        }
        let scale = info.subresource == "scale" && r.info.scale;
        let stream =
            !info.subresource.is_empty() && r.info.streams.contains(&info.subresource.as_str());
        let served_subresource = info.subresource.is_empty()
            || (info.subresource == "status" && r.info.status)
            || action
            || scale
            || stream;
        if !served_subresource {
            return Err(ApiError::no_such_path());
        }
        let verb_ok = match info.subresource.as_str() {
            "" => true,
            "status" | "scale" => matches!(info.verb.as_str(), "get" | "update" | "patch"),
            _ if stream => matches!(info.verb.as_str(), "get" | "create"),
            _ => true,
        };
        if !verb_ok {
            return Err(ApiError::method_not_allowed(&format!(
                "{} on {}/{}",
                info.verb, info.resource, info.subresource
            )));
        }
        if r.info.create_only && info.verb != "create" {
            return Err(ApiError::method_not_allowed(&format!(
                "{} only supports create",
                r.info.plural
            )));
        }
        let attrs = Attributes::resource(
            &info.verb,
            &info.group,
            &info.resource,
            &info.namespace,
            &info.name,
        )
        .on_subresource(&info.subresource);
        let mut allowed = self.authorizer.authorize(&user, &attrs).await?;
        if !allowed
            && !info.name.is_empty()
            && matches!(info.verb.as_str(), "get" | "update" | "patch" | "delete")
        {
            // Not by rules; perhaps the object is the caller's own.
            if let Ok(stored) = self.read(&r, &info.namespace, &info.name).await {
                allowed = self
                    .authorizer
                    .owns(&user, &info.resource, &info.verb, &stored.value);
            }
        }
        let filtered_list = r.info.list_filtered && matches!(info.verb.as_str(), "list" | "watch");
        if !allowed && !filtered_list {
            let subject = error::Subject {
                group: &info.group,
                resource: &info.resource,
                name: &info.name,
            };
            return Err(ApiError::forbidden(
                &user.name,
                &info.verb,
                subject,
                &info.namespace,
                &info.subresource,
            ));
        }
        let ctx = Context {
            user,
            store: self.store.clone(),
            authorizer: self.authorizer.clone(),
        };
        let headers = req.headers().clone();
        // Writes are recorded under a field manager: the one named, or the
        // client's name from its User-Agent, as kube-apiserver does.
        let mut q = q;
        if !matches!(info.verb.as_str(), "get" | "list" | "watch") {
            match q.get("fieldManager") {
                Some(m) if m.len() > 128 => {
                    return Err(ApiError::bad_request(
                        "fieldManager: Too long: may not be more than 128 bytes",
                    ))
                }
                Some(m) if m.chars().any(char::is_control) => {
                    return Err(ApiError::bad_request(
                        "fieldManager: Invalid value: may only contain printable characters",
                    ))
                }
                Some(_) => {}
                // An apply must name its manager.
                None if headers
                    .get(axum::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.starts_with("application/apply-patch")) => {}
                None => {
                    let agent = headers
                        .get(axum::http::header::USER_AGENT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    q.set("fieldManager", &managed::default_manager(agent));
                }
            }
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if stream {
            let stored = self.read(&r, &info.namespace, &info.name).await?;
            return r
                .strategy
                .stream(&ctx, stored.with_rv(), &info.subresource, req)
                .await;
        }
        if scale {
            let body = if info.verb == "get" {
                bytes::Bytes::new()
            } else {
                read_body(req.into_body()).await?
            };
            return self.scale(&ctx, &r, &info, &q, &content_type, &body).await;
        }
        match info.verb.as_str() {
            "get" => self.get(&r, &info, &headers, &q).await,
            "list" => self.list(&ctx, &r, &info, &headers, &q, !allowed).await,
            "watch" => self.watch(&ctx, &r, &info, &headers, &q, !allowed).await,
            verb => {
                q.check_dry_run()?;
                let mut body = read_body(req.into_body()).await?;
                let mut content_type = content_type;
                if matches!(verb, "create" | "update") && content_type == protobuf::MEDIA_TYPE {
                    let (api_version, kind, raw) = protobuf::unwrap_envelope(&body)?;
                    let decoded = if action {
                        r.strategy.decode_subresource_protobuf(&kind, raw)
                    } else {
                        r.strategy.decode_protobuf(raw)
                    };
                    let mut obj = decoded
                        .ok_or_else(|| ApiError::unsupported_media_type(&content_type))??;
                    let Some(fields) = obj.as_object_mut() else {
                        return Err(ApiError::bad_request("the protobuf body is not an object"));
                    };
                    fields.insert("apiVersion".into(), serde_json::Value::String(api_version));
                    fields.insert("kind".into(), serde_json::Value::String(kind));
                    body = bytes::Bytes::from(obj.to_string());
                    content_type = "application/json".into();
                }
                let json_body = !matches!(verb, "patch" | "delete" | "deletecollection");
                if json_body && !content_type.is_empty() && content_type != "application/json" {
                    return Err(ApiError::unsupported_media_type(&content_type));
                }
                match verb {
                    "create" if action => {
                        let obj = handlers::parse_object(&body)?;
                        let out = r
                            .strategy
                            .create_subresource(
                                &ctx,
                                &info.namespace,
                                &info.name,
                                &info.subresource,
                                obj,
                            )
                            .await?;
                        Ok(respond(StatusCode::CREATED, &out, &[]))
                    }
                    "create" => self.create(&ctx, &r, &info, &q, &body).await,
                    "update" => self.update(&ctx, &r, &info, &q, &body).await,
                    "patch" => self.patch(&ctx, &r, &info, &q, &content_type, &body).await,
                    "delete" => self.delete(&ctx, &r, &info, &q, &body).await,
                    "deletecollection" => self.delete_collection(&ctx, &r, &info, &q).await,
                    _ => Err(ApiError::method_not_allowed(verb)),
                }
            }
        }
    }

    fn openapi(&self, rest: &str) -> Result<Response, ApiError> {
        match rest.trim_end_matches('/') {
            // kubectl falls back to v2 (protobuf) when v3 lacks a kind's
            // PATCH operation (review kinds have none); an empty document
            // says "no v2 schemas", and kubectl then skips client-side
            // validation for the kind instead of failing.
            "v2" => {
                let mut resp = Response::new(Body::empty());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    "application/octet-stream".parse().expect("valid"),
                );
                Ok(resp)
            }
            "v3" => Ok(json_ok(
                self.openapi
                    .get_or_init(|| openapi::OpenApi::build(&self.registry))
                    .index(),
            )),
            other => match other.strip_prefix("v3/").and_then(|gv| {
                self.openapi
                    .get_or_init(|| openapi::OpenApi::build(&self.registry))
                    .document(gv)
            }) {
                Some(doc) => Ok(json_ok(doc)),
                None => Err(ApiError::no_such_path()),
            },
        }
    }
}

fn json_ok(v: &serde_json::Value) -> Response {
    respond(StatusCode::OK, v, &[])
}

/// Read a body of at most [`MAX_BODY`] bytes.
pub async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit exceeded"))
            || e.to_string().contains("length limit exceeded");
        if too_large {
            ApiError::too_large(MAX_BODY)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}
