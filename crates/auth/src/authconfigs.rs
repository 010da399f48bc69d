//! The AuthConfig kind (`management.drover.io/v1`, cluster-scoped): one
//! object per provider, named `ldap`, `activedirectory` or `oidc`.
//!
//! Its secrets — the directory service account's password and the OIDC
//! client secret — are write-only: a write that carries one moves it to the
//! server record `/drover/authsecrets/{name}` in the same transaction and
//! stores the object without it (a `kubectl apply` annotation included), so
//! no read, list, watch or log ever shows it. A write without it keeps the
//! one recorded — unless it changes where the secret would be sent (the
//! servers, port, TLS, CA, account, issuer or client), which needs the
//! secret again. The record goes with the object, and with an OIDC provider its
//! users' refresh tokens.

use drover_apiserver::{ApiError, Column, Context, FieldError, Prepared, Strategy};
use drover_core::api::{self, schema_for};
use drover_store::{KeyValue, Op, Store};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::principals::PROVIDERS;

/// Where a provider's secret is sent, as a comparable value: the directory's
/// servers, port, TLS, CA and account, or the OIDC issuer, client and CA,
/// with defaults filled in and PEM line endings and padding evened out.
fn destination(parent: &str, obj: &Value) -> Value {
    let pem = |v: Option<&String>| {
        v.map(|p| p.replace("\r\n", "\n").trim().to_owned())
            .filter(|p| !p.is_empty())
    };
    match parent {
        "ldap" => {
            let Ok(l) = serde_json::from_value::<api::LdapConfig>(obj["spec"]["ldap"].clone())
            else {
                return Value::Null;
            };
            if obj["spec"]["ldap"].is_null() {
                return Value::Null;
            }
            serde_json::json!([
                l.servers,
                l.port.unwrap_or(if l.tls { 636 } else { 389 }),
                l.tls,
                l.starttls,
                pem(l.certificate.as_ref()),
                l.service_account_distinguished_name.trim(),
            ])
        }
        _ => {
            let Ok(o) = serde_json::from_value::<api::OidcConfig>(obj["spec"]["oidc"].clone())
            else {
                return Value::Null;
            };
            if obj["spec"]["oidc"].is_null() {
                return Value::Null;
            }
            serde_json::json!([
                o.issuer.trim_end_matches('/'),
                o.client_id.trim(),
                pem(o.certificate.as_ref()),
            ])
        }
    }
}

/// The store key of a provider's secrets.
pub fn secrets_key(name: &str) -> String {
    format!("/drover/authsecrets/{name}")
}

/// A provider's write-only secrets, as recorded.
#[derive(Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secrets {
    /// The LDAP service account's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_password: Option<String>,
    /// The OIDC client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { [REDACTED] }")
    }
}

/// Read a provider's secrets.
pub async fn read_secrets(
    store: &Store,
    name: &str,
) -> Result<(Secrets, Option<KeyValue>), drover_store::StoreError> {
    let kv = store.get(&secrets_key(name)).await?;
    let secrets = kv
        .as_ref()
        .and_then(|kv| serde_json::from_slice(&kv.value).ok())
        .unwrap_or_default();
    Ok((secrets, kv))
}

/// Take the secrets out of an object (and out of its `kubectl apply`
/// annotation).
fn take_secrets(obj: &mut Value) -> Secrets {
    let mut taken = drover_apiserver::object::take_write_only(
        obj,
        &[
            ("/spec/ldap", "serviceAccountPassword"),
            ("/spec/oidc", "clientSecret"),
        ],
    )
    .into_iter();
    Secrets {
        service_account_password: taken.next().flatten(),
        client_secret: taken.next().flatten(),
    }
}

/// The AuthConfig kind's strategy.
pub struct AuthConfigs;

impl AuthConfigs {
    /// Record the secrets a write carries (over those recorded).
    async fn secret_ops(
        ctx: &Context,
        name: &str,
        given: Secrets,
        create: bool,
    ) -> Result<Vec<Op>, ApiError> {
        let unavailable = |_| ApiError::unavailable("the datastore is unavailable");
        let (mut secrets, kv) = read_secrets(&ctx.store, name).await.map_err(unavailable)?;
        if create {
            // A record left by a deleted object is not inherited.
            secrets = Secrets::default();
        }
        let changed = given.service_account_password.is_some() || given.client_secret.is_some();
        if given.service_account_password.is_some() {
            secrets.service_account_password = given.service_account_password;
        }
        if given.client_secret.is_some() {
            secrets.client_secret = given.client_secret;
        }
        if !changed && !create {
            return Ok(Vec::new());
        }
        let value = serde_json::to_vec(&secrets).expect("JSON");
        Ok(vec![match kv {
            Some(kv) => Op::update(secrets_key(name), value, kv.mod_revision),
            None => Op::create(secrets_key(name), value),
        }])
    }
}

impl Strategy for AuthConfigs {
    fn schema(&self) -> Value {
        schema_for::<api::AuthConfig>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![Column::new(
            "Enabled",
            "boolean",
            "Whether its users may log in",
            "/spec/enabled",
        )]
    }

    fn invalid_name(&self, name: &str) -> Option<String> {
        (!PROVIDERS.contains(&name)).then(|| format!("must be one of {}", PROVIDERS.join(", ")))
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Ok(spec) = serde_json::from_value::<api::AuthConfigSpec>(obj["spec"].clone()) else {
            return Vec::new(); // the schema check reports it
        };
        validate_spec(name, &spec)
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let given = take_secrets(obj);
            let missing = match name.as_str() {
                "oidc" => None,
                _ if given.service_account_password.is_none() => {
                    Some("spec.ldap.serviceAccountPassword")
                }
                _ => None,
            };
            if let Some(field) = missing {
                return Err(ApiError::invalid(
                    "AuthConfig",
                    api::GROUP,
                    &name,
                    &[FieldError::required(
                        field,
                        "the service account's password",
                    )],
                ));
            }
            Ok(Prepared {
                ops: Self::secret_ops(ctx, &name, given, true).await?,
                ..Default::default()
            })
        })
    }

    fn update_ops<'a>(
        &'a self,
        ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let name = new["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let given = take_secrets(new);
            // A kept secret goes only where it went before: pointing the
            // provider elsewhere needs the secret again, or whoever can edit
            // the object could have it sent to a server of theirs.
            let (recorded, _) = read_secrets(&ctx.store, &name)
                .await
                .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
            let moved = |parent| destination(parent, new) != destination(parent, old);
            for (parent, secret, kept, given_it) in [
                (
                    "ldap",
                    "serviceAccountPassword",
                    recorded.service_account_password.is_some(),
                    given.service_account_password.is_some(),
                ),
                (
                    "oidc",
                    "clientSecret",
                    recorded.client_secret.is_some(),
                    given.client_secret.is_some(),
                ),
            ] {
                if kept && !given_it && moved(parent) {
                    return Err(ApiError::invalid(
                        "AuthConfig",
                        api::GROUP,
                        &name,
                        &[FieldError::required(
                            format!("spec.{parent}.{secret}"),
                            "give it again when the provider moves (servers, port, TLS, CA, account, issuer or client): it is sent there",
                        )],
                    ));
                }
            }
            let mut ops = Vec::new();
            // Refresh tokens were issued by the old provider, to the old
            // client: they go to no other.
            if moved("oidc") {
                ops.extend(refresh_token_deletes(ctx).await?);
            }
            ops.extend(Self::secret_ops(ctx, &name, given, false).await?);
            Ok(ops)
        })
    }

    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let kv = ctx
                .store
                .get(&secrets_key(name))
                .await
                .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
            let mut ops: Vec<Op> = kv
                .map(|kv| Op::delete(kv.key.clone(), kv.mod_revision))
                .into_iter()
                .collect();
            if name == "oidc" {
                ops.extend(refresh_token_deletes(ctx).await?);
            }
            Ok(ops)
        })
    }
}

/// The deletes of every OIDC user's refresh token (for an OIDC provider
/// deleted or moved: the tokens go to no other).
async fn refresh_token_deletes(ctx: &Context) -> Result<Vec<Op>, ApiError> {
    let tokens = ctx
        .store
        .list(&drover_store::ListOptions {
            prefix: crate::providers::oidc::REFRESH_TOKENS.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
    Ok(tokens
        .items
        .iter()
        .map(|kv| Op::delete(kv.key.clone(), kv.mod_revision))
        .collect())
}

/// The checks of a provider's spec beyond its schema.
pub fn validate_spec(name: &str, spec: &api::AuthConfigSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let is_oidc = name == "oidc";
    match (is_oidc, &spec.ldap, &spec.oidc) {
        (false, None, _) => errors.push(FieldError::required(
            "spec.ldap",
            "the directory's settings",
        )),
        (true, _, None) => {
            errors.push(FieldError::required("spec.oidc", "the provider's settings"))
        }
        _ => {}
    }
    if is_oidc && spec.ldap.is_some() {
        errors.push(FieldError::forbidden(
            "spec.ldap",
            "an oidc provider takes spec.oidc",
        ));
    }
    if !is_oidc && spec.oidc.is_some() {
        errors.push(FieldError::forbidden(
            "spec.oidc",
            "a directory provider takes spec.ldap",
        ));
    }
    if let Some(l) = &spec.ldap {
        if l.servers.is_empty() {
            errors.push(FieldError::required(
                "spec.ldap.servers",
                "at least one host",
            ));
        }
        for (i, s) in l.servers.iter().enumerate() {
            let host_ok = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !host_ok {
                errors.push(FieldError::invalid(
                    format!("spec.ldap.servers[{i}]"),
                    s.clone(),
                    "a host name or address, without a scheme or port",
                ));
            }
        }
        if l.tls && l.starttls {
            errors.push(FieldError::forbidden(
                "spec.ldap.starttls",
                "set tls or starttls, not both",
            ));
        }
        if l.service_account_distinguished_name.trim().is_empty() {
            errors.push(FieldError::required(
                "spec.ldap.serviceAccountDistinguishedName",
                "",
            ));
        }
        if l.user_search_base.trim().is_empty() {
            errors.push(FieldError::required("spec.ldap.userSearchBase", ""));
        }
        if let Some(f) = &l.user_search_filter {
            if !balanced_filter(f) {
                errors.push(FieldError::invalid(
                    "spec.ldap.userSearchFilter",
                    f.clone(),
                    "an LDAP filter in parentheses, e.g. (!(employeeType=disabled))",
                ));
            }
        }
        if l.nested_group_max_depth
            .is_some_and(|d| !(1..=10).contains(&d))
        {
            errors.push(FieldError::invalid(
                "spec.ldap.nestedGroupMaxDepth",
                l.nested_group_max_depth.unwrap_or_default().to_string(),
                "must be between 1 and 10",
            ));
        }
        if l.connection_timeout
            .is_some_and(|t| !(100..=60_000).contains(&t))
        {
            errors.push(FieldError::invalid(
                "spec.ldap.connectionTimeout",
                l.connection_timeout.unwrap_or_default().to_string(),
                "milliseconds, between 100 and 60000",
            ));
        }
        if let Some(pem) = &l.certificate {
            if drover_net::pki::parse_certs(pem).map_or(true, |c| c.is_empty()) {
                errors.push(FieldError::invalid(
                    "spec.ldap.certificate",
                    "[PEM]",
                    "not a PEM certificate",
                ));
            }
        }
    }
    if let Some(o) = &spec.oidc {
        match url::Url::parse(&o.issuer) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
            _ => errors.push(FieldError::invalid(
                "spec.oidc.issuer",
                o.issuer.clone(),
                "an https:// URL",
            )),
        }
        if o.client_id.trim().is_empty() {
            errors.push(FieldError::required("spec.oidc.clientId", ""));
        }
        if let Some(pem) = &o.certificate {
            if drover_net::pki::parse_certs(pem).map_or(true, |c| c.is_empty()) {
                errors.push(FieldError::invalid(
                    "spec.oidc.certificate",
                    "[PEM]",
                    "not a PEM certificate",
                ));
            }
        }
    }
    errors
}

/// Whether a filter is one parenthesised expression with balanced
/// parentheses (the directory checks the rest).
fn balanced_filter(f: &str) -> bool {
    if !f.starts_with('(') || !f.ends_with(')') {
        return false;
    }
    let mut depth = 0i32;
    for (i, c) in f.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 || (depth == 0 && i + 1 != f.len()) {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_apiserver::object::LAST_APPLIED;
    use serde_json::json;

    #[test]
    fn secrets_leave_the_object_and_its_applied_annotation() {
        let applied =
            json!({"spec": {"ldap": {"serviceAccountPassword": "s3cret", "servers": ["a"]}}});
        let mut obj = json!({
            "metadata": {"name": "ldap", "annotations": {LAST_APPLIED: applied.to_string()}},
            "spec": {"ldap": {"serviceAccountPassword": "s3cret", "servers": ["a"]}},
        });
        let s = take_secrets(&mut obj);
        assert_eq!(s.service_account_password.as_deref(), Some("s3cret"));
        assert!(!obj.to_string().contains("s3cret"), "{obj}");
        assert!(obj["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap()
            .contains("servers"));
    }

    #[test]
    fn filters_must_be_balanced() {
        assert!(balanced_filter("(!(employeeType=disabled))"));
        assert!(balanced_filter("(&(a=b)(c=d))"));
        assert!(!balanced_filter("a=b"));
        assert!(!balanced_filter("(a=b))(c=d"));
        assert!(!balanced_filter("((a=b)"));
    }
}
