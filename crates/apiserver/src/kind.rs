//! The kinds an API server serves: their names and scope ([`KindInfo`]) and
//! their behaviour ([`Strategy`], like kube-apiserver's REST strategies).

use std::sync::Arc;

use drover_rbac::{Attributes, RuleSet, UserInfo};
use drover_store::{Op, Store};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::{ApiError, FieldError};

/// Names and scope of a kind.
#[derive(Debug, Clone)]
pub struct KindInfo {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind, e.g. `Cluster`.
    pub kind: &'static str,
    /// Resource (plural), e.g. `clusters`.
    pub plural: &'static str,
    /// Singular, e.g. `cluster`.
    pub singular: &'static str,
    /// Short names for kubectl, e.g. `["cl"]`.
    pub short_names: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether the kind has a `status` subresource.
    pub status: bool,
    /// Lists show only the objects the caller may `get`, instead of
    /// requiring `list` on the kind.
    pub list_filtered: bool,
    /// Names generated when a create gives none (`c-` → `c-xk2p9`).
    pub name_prefix: Option<&'static str>,
    /// Only `create` is served, and nothing is stored (reviews, actions).
    pub create_only: bool,
    /// A `scale` subresource (`autoscaling/v1` Scale over `spec.replicas`).
    pub scale: bool,
    /// Subresources answered with a stream by [`Strategy::stream`], e.g.
    /// `pods/log`.
    pub streams: &'static [&'static str],
    /// Subresources besides `status` that take a `create` (POST), served by
    /// [`Strategy::create_subresource`], e.g. `serviceaccounts/token`.
    pub actions: &'static [&'static str],
    /// Discovery categories, e.g. `["all"]` (what `kubectl get all` reads).
    pub categories: &'static [&'static str],
}

impl KindInfo {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A column of `kubectl get` output (besides NAME, first, and AGE, last).
#[derive(Debug, Clone)]
pub struct Column {
    /// Header, e.g. `Display Name`.
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub ty: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// JSON pointer to the value, e.g. `/spec/displayName`.
    pub pointer: &'static str,
    /// 0 for default output, 1 for `-o wide`.
    pub priority: u8,
}

impl Column {
    /// A default-output column showing the value at `pointer`.
    pub const fn new(
        name: &'static str,
        ty: &'static str,
        description: &'static str,
        pointer: &'static str,
    ) -> Self {
        Self {
            name,
            ty,
            description,
            pointer,
            priority: 0,
        }
    }

    /// The same column, shown only with `-o wide`.
    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }
}

/// What `prepare_create` asks for besides storing the object. Everything
/// here commits in the object's own transaction, or nothing does: a create
/// that fails (the name is taken, a condition no longer holds) changes
/// nothing.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Objects to create in the same transaction (e.g. the creator's
    /// ownership binding). Each as (resource plural, namespace, object).
    pub extra: Vec<NewObject>,
    /// Merged into the create response only, never stored (a token's secret).
    pub response_overlay: Option<Value>,
    /// Raw store records (outside the API, e.g. a password hash or an index
    /// entry) created in the same transaction.
    pub records: Vec<(String, Vec<u8>)>,
    /// Further steps of the same transaction: writes of the server's own
    /// records, and conditions the create depends on (the role a binding
    /// names is still the one checked, the subject still exists).
    pub ops: Vec<Op>,
    /// Warnings for the response (`Warning` headers).
    pub warnings: Vec<String>,
}

/// An object to create alongside another.
#[derive(Debug)]
pub struct NewObject {
    /// API group.
    pub group: &'static str,
    /// Resource (plural).
    pub plural: &'static str,
    /// The object; its name must be set (or `generateName`).
    pub object: Value,
}

/// The caller and the server's facilities, for strategies.
#[derive(Clone)]
pub struct Context {
    /// Who is asking.
    pub user: UserInfo,
    /// The datastore.
    pub store: Store,
    /// The authorizer.
    pub authorizer: Arc<dyn Authorizer>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("user", &self.user.name)
            .finish()
    }
}

/// Kind-specific behaviour. Every method has a default that suits a plain
/// kind.
pub trait Strategy: Send + Sync + 'static {
    /// The OpenAPI v3 schema of the whole object.
    fn schema(&self) -> Value;

    /// The schema, shared: kinds whose schemas are large and served by many
    /// API servers in one process (the simulator's) return one `Arc`.
    fn shared_schema(&self) -> Arc<Value> {
        Arc::new(self.schema())
    }

    /// Extra `kubectl get` columns.
    fn columns(&self) -> Vec<Column> {
        Vec::new()
    }

    /// Whether `kubectl get` shows NAME first and AGE last around the
    /// kind's columns (kube's Event table has neither).
    fn name_column(&self) -> bool {
        true
    }

    /// The value of one of this kind's columns for an object (default: the
    /// column's JSON pointer).
    fn cell(&self, column: &Column, obj: &Value) -> Value {
        obj.pointer(column.pointer).cloned().unwrap_or(Value::Null)
    }

    /// The strategies of the kind's list fields for strategic merge patches;
    /// `None` (custom kinds) makes a strategic merge patch a merge patch.
    fn list_strategies(&self) -> Option<crate::strategic::ListStrategies> {
        None
    }

    /// Fields besides `metadata.name` and `metadata.namespace` that field
    /// selectors may use, e.g. `spec.nodeName` for pods.
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// The value a field selector compares for `field` (a dotted path; a
    /// missing field is empty, booleans and numbers as text).
    fn field_value(&self, obj: &Value, field: &str) -> String {
        crate::selector::field_text(obj, field)
    }

    /// The group, version and kind of an action subresource's body, when it
    /// is not the kind itself (`pods/eviction` takes a policy/v1 Eviction).
    fn action_kind(&self, _action: &str) -> Option<(&'static str, &'static str, &'static str)> {
        None
    }

    /// Whether a create or update may leave out `apiVersion` and `kind`,
    /// taken then from the URL (kube's built-in kinds; custom ones may not).
    fn kind_from_url(&self) -> bool {
        false
    }

    /// Why `name` is not a valid name for this kind, if it is not (default:
    /// an RFC 1123 subdomain, as for most kinds).
    fn invalid_name(&self, name: &str) -> Option<String> {
        (!crate::object::is_dns_subdomain(name))
            .then(|| crate::object::DNS1123_SUBDOMAIN.to_owned())
    }

    /// Semantic checks beyond the schema (`old` is set on updates).
    fn validate(&self, _obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        Vec::new()
    }

    /// Defaults and server-set fields on create; may ask for more objects.
    fn prepare_create<'a>(
        &'a self,
        _ctx: &'a Context,
        _obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async { Ok(Prepared::default()) })
    }

    /// Checks and server-set fields on update (`new` is about to replace `old`).
    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        _new: &'a mut Value,
        _old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }

    /// Further steps of an update's transaction (the server's own records),
    /// worked out after [`Strategy::prepare_update`] (and free to take
    /// fields out of `new` that belong in them); an update with steps
    /// commits even when the object itself is unchanged.
    fn update_ops<'a>(
        &'a self,
        _ctx: &'a Context,
        _new: &'a mut Value,
        _old: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// For `create_only` kinds: answer a create without storing anything.
    fn virtual_create<'a>(
        &'a self,
        _ctx: &'a Context,
        _obj: &'a Value,
    ) -> Option<BoxFuture<'a, Result<Value, ApiError>>> {
        None
    }

    /// Decode the protobuf message of this kind into its JSON form (without
    /// apiVersion/kind), for kinds that typed clients send as protobuf.
    fn decode_protobuf(&self, _raw: &[u8]) -> Option<Result<Value, ApiError>> {
        None
    }

    /// Called after any write of this kind has committed.
    fn committed(&self) {}

    /// Whether something still holds the object's deletion (default: its
    /// `metadata.finalizers`; namespaces also use `spec.finalizers`).
    fn holds_deletion(&self, obj: &Value) -> bool {
        !crate::object::finalizers(obj).is_empty()
    }

    /// Changes made when an object starts being deleted (besides its
    /// `deletionTimestamp`), e.g. a namespace's `Terminating` phase.
    fn mark_deleting(&self, _obj: &mut Value) {}

    /// Answer `POST …/{name}/{subresource}` for one of [`KindInfo::actions`].
    /// `body` is the JSON body (decoded from protobuf if it came so).
    fn create_subresource<'a>(
        &'a self,
        _ctx: &'a Context,
        _namespace: &'a str,
        _name: &'a str,
        subresource: &'a str,
        _body: Value,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async move { Err(ApiError::method_not_allowed(subresource)) })
    }

    /// Answer a request to one of [`KindInfo::streams`] (the object exists
    /// and the caller is authorized); the whole request is handed over, so
    /// the kind may read its query or upgrade it (exec).
    fn stream<'a>(
        &'a self,
        _ctx: &'a Context,
        _obj: Value,
        subresource: &'a str,
        _req: axum::extract::Request,
    ) -> BoxFuture<'a, Result<axum::response::Response, ApiError>> {
        Box::pin(async move { Err(ApiError::method_not_allowed(subresource)) })
    }

    /// Decode a protobuf body sent to a subresource (message by its kind).
    fn decode_subresource_protobuf(
        &self,
        _kind: &str,
        _raw: &[u8],
    ) -> Option<Result<Value, ApiError>> {
        None
    }

    /// What goes with the object when it leaves the store, in the same
    /// transaction: its records, and what lives and dies with it (a user's
    /// bindings and tokens, a role's bindings), with the conditions that
    /// make what was read still whole ([`Op::Unchanged`]). A step that no
    /// longer holds makes the delete try again. Called when the object is
    /// removed, not when it is only marked for deletion.
    fn delete_ops<'a>(
        &'a self,
        _ctx: &'a Context,
        _obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Called after the object left the store, for what is not in the
    /// store (caches). Store writes belong in [`Strategy::delete_ops`].
    fn after_delete<'a>(&'a self, _ctx: &'a Context, _obj: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Checks before a delete.
    fn prepare_delete<'a>(
        &'a self,
        _ctx: &'a Context,
        _obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Decides whether a user may do something.
pub trait Authorizer: Send + Sync + 'static {
    /// The rules the user holds (shared: an administrator of ten thousand
    /// clusters holds many, and every request reads them).
    fn rules<'a>(&'a self, user: &'a UserInfo) -> BoxFuture<'a, Result<Arc<RuleSet>, ApiError>>;

    /// Whether the user may do what `attrs` describes.
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        attrs: &'a Attributes,
    ) -> BoxFuture<'a, Result<bool, ApiError>> {
        Box::pin(async move { Ok(self.rules(user).await?.allows(attrs)) })
    }

    /// Whether the user may do `verb` on this object because it is theirs
    /// (their own tokens, their own User), beyond what rules grant.
    fn owns(&self, _user: &UserInfo, _resource: &str, _verb: &str, _obj: &Value) -> bool {
        false
    }
}

/// Answers whether a namespace exists and takes new objects.
pub trait Namespaces: Send + Sync + 'static {
    /// `Ok(())` if objects may be created in `namespace`; otherwise the error
    /// to return (404 if it does not exist, 403 if it is terminating).
    fn check<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// A served kind.
pub struct Resource {
    /// Names and scope.
    pub info: KindInfo,
    /// Behaviour.
    pub strategy: Box<dyn Strategy>,
    /// The schema, computed once (and shared where the kind shares it).
    pub schema: Arc<Value>,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("info", &self.info)
            .finish()
    }
}

/// The kinds a server serves.
#[derive(Debug, Default)]
pub struct Registry {
    resources: Vec<Arc<Resource>>,
}

impl Registry {
    /// Add a kind.
    pub fn register(&mut self, info: KindInfo, strategy: impl Strategy) {
        let schema = strategy.shared_schema();
        self.resources.push(Arc::new(Resource {
            info,
            strategy: Box::new(strategy),
            schema,
        }));
    }

    /// The kind served at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<Resource>> {
        self.resources
            .iter()
            .find(|r| r.info.group == group && r.info.version == version && r.info.plural == plural)
    }

    /// The kind for `group` and `plural`, any version.
    pub fn by_plural(&self, group: &str, plural: &str) -> Option<&Arc<Resource>> {
        self.resources
            .iter()
            .find(|r| r.info.group == group && r.info.plural == plural)
    }

    /// All kinds.
    pub fn all(&self) -> &[Arc<Resource>] {
        &self.resources
    }
}
