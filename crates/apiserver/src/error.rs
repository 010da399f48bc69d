//! API errors as kube-apiserver writes them: a `metav1.Status` with the HTTP
//! code, a machine-readable `reason`, a message people can act on, and
//! `details` (the object's name, group and kind; field causes for 422).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One invalid field, as in `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// The field path, e.g. `spec.displayName`.
    pub field: String,
    /// The offending value, when it helps.
    pub value: Option<Value>,
    /// More words.
    pub detail: String,
}

/// The kinds of field error Kubernetes reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `Required value`
    Required,
    /// `Invalid value`
    Invalid,
    /// `Unsupported value`
    NotSupported,
    /// `Forbidden`
    Forbidden,
    /// `Too long`
    TooLong,
    /// `Duplicate value`
    Duplicate,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    /// A field has a bad value.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    /// A field has a value outside a fixed set.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[&str],
    ) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(value.into()),
            detail: format!("supported values: {list}"),
        }
    }

    /// A field may not be set (or changed).
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    /// A value is too long.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            kind: FieldErrorKind::TooLong,
            field: field.into(),
            value: None,
            detail: format!("may not be more than {max} bytes"),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
        }
    }

    /// The message without the field path.
    fn message(&self) -> String {
        let value = |v: &Option<Value>| match v {
            Some(Value::String(s)) => format!("{s:?}"),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match self.kind {
            FieldErrorKind::Required => with_detail("Required value".into()),
            FieldErrorKind::Invalid => {
                with_detail(format!("Invalid value: {}", value(&self.value)))
            }
            FieldErrorKind::NotSupported => {
                with_detail(format!("Unsupported value: {}", value(&self.value)))
            }
            FieldErrorKind::Forbidden => with_detail("Forbidden".into()),
            FieldErrorKind::TooLong => with_detail("Too long".into()),
            FieldErrorKind::Duplicate => format!("Duplicate value: {}", value(&self.value)),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// An API error: becomes a `metav1.Status` response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `metav1.StatusReason`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `metav1.StatusDetails`, if any.
    pub details: Option<Value>,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

/// What an error is about: `plural.group "name"`, as Kubernetes prints it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// API group.
    pub group: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Object name.
    pub name: &'a str,
}

impl Subject<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.resource})
    }
}

impl ApiError {
    /// An error with code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// The same error with `details` (name, group, kind) for clients.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden for a request the caller may not make.
    pub fn forbidden(user: &str, verb: &str, s: Subject<'_>, namespace: &str, sub: &str) -> Self {
        let resource = if sub.is_empty() {
            s.resource.to_owned()
        } else {
            format!("{}/{}", s.resource, sub)
        };
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {namespace:?}")
        };
        let head = if s.name.is_empty() {
            s.qualified()
        } else {
            format!("{} {:?}", s.qualified(), s.name)
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{head} is forbidden: User {user:?} cannot {verb} resource {resource:?} in API group {:?} {scope}",
                s.group
            ),
        )
        .with_details(s.details())
    }

    /// 403 Forbidden with a free message.
    pub fn forbidden_because(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(s: Subject<'_>) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {:?} not found", s.qualified(), s.name),
        )
        .with_details(s.details())
    }

    /// 404 for a path that names nothing.
    pub fn no_such_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {what}"),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(s: Subject<'_>) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {:?} already exists", s.qualified(), s.name),
        )
        .with_details(s.details())
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(s: Subject<'_>) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
                s.qualified(),
                s.name
            ),
        )
        .with_details(s.details())
    }

    /// 409 Conflict with a free message.
    pub fn conflict_because(s: Subject<'_>, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: {why}",
                s.qualified(),
                s.name
            ),
        )
        .with_details(s.details())
    }

    /// 410 Expired: a resourceVersion or continue token is too old.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json; got {content_type:?}"))
    }

    /// 422 Invalid with field causes.
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let list = errors.iter().map(ToString::to_string).collect::<Vec<_>>();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.message(), "field": e.field}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{qualified} {name:?} is invalid: {joined}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    /// 429 TooManyRequests.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.retry_after = Some(retry_after);
        e
    }

    /// 500 InternalError: the server's fault, never the client's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    /// Map a store failure on an object.
    pub fn from_store(e: drover_store::StoreError, s: Subject<'_>) -> Self {
        use drover_store::StoreError as E;
        match e {
            E::NotFound(_) => Self::not_found(s),
            E::AlreadyExists(_) => Self::already_exists(s),
            E::Conflict { .. } => Self::conflict(s),
            E::TooOld { .. } => Self::expired(format!("too old resource version: {e}")),
            E::InvalidKey(_) => Self::bad_request(format!("invalid name {:?}", s.name)),
            other => {
                tracing::error!(error = %other, "datastore failure");
                Self::unavailable("the datastore is unavailable; try again shortly")
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(self.status())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_kubernetes() {
        let s = Subject {
            group: "management.drover.io",
            resource: "clusters",
            name: "c-abc",
        };
        assert_eq!(
            ApiError::not_found(s).message,
            r#"clusters.management.drover.io "c-abc" not found"#
        );
        assert_eq!(
            ApiError::forbidden("bob", "get", s, "", "").message,
            r#"clusters.management.drover.io "c-abc" is forbidden: User "bob" cannot get resource "clusters" in API group "management.drover.io" at the cluster scope"#
        );
        let e = ApiError::invalid(
            "Cluster",
            "management.drover.io",
            "c-abc",
            &[FieldError::invalid(
                "spec.displayName",
                "integer",
                "spec.displayName in body must be of type string: \"integer\"",
            )],
        );
        assert_eq!(
            e.message,
            r#"Cluster.management.drover.io "c-abc" is invalid: spec.displayName: Invalid value: "integer": spec.displayName in body must be of type string: "integer""#
        );
        assert_eq!(
            e.status()["details"]["causes"][0]["field"],
            "spec.displayName"
        );
    }
}
