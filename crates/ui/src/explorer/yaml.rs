//! Objects as YAML: view any object, edit it (the cluster checks the edit
//! with a server-side dry run and strict field validation before it is
//! saved, and a refusal is shown beside the text, which is kept), and
//! "Import YAML": several documents created in a namespace, all checked by
//! dry runs first, so a document the cluster refuses creates nothing (a
//! create failing after its dry run passed leaves the ones before it).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::{find, object_url};
use crate::access::Rules;
use crate::api::seg;
use crate::error::UiError;
use crate::session::Session;
use crate::view::{self, s, Section};
use crate::Ui;

/// Largest YAML accepted from a form.
const MAX_YAML: usize = 1024 * 1024;

/// An object as YAML for editing: without `managedFields`, which the
/// server keeps.
fn to_yaml(o: &Value) -> String {
    let mut o = o.clone();
    if let Some(m) = o.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    yaml_serde::to_string(&o).unwrap_or_default()
}

/// `GET …/{resource}/{ns}/{name}/yaml`.
pub(crate) async fn edit_page(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, resource, ns, name)): Path<(String, String, String, String)>,
    Query(q): Query<RevealQuery>,
) -> Result<Response, UiError> {
    let kind = find(&resource)?;
    let o = ui
        .api
        .get(&kind.item(&id, &ns, &name), &session.token)
        .await?;
    // A Secret's values show only when asked for, as on its page.
    if kind.resource == "secrets" && q.reveal.is_none() {
        let url = object_url(&id, &resource, &ns, &name);
        let mut masked = o.clone();
        // kubectl apply keeps the whole object, values too, in an annotation.
        if let Some(a) = masked
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            if a.remove("kubectl.kubernetes.io/last-applied-configuration")
                .is_some()
            {
                a.insert(
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    Value::String("(hidden)".into()),
                );
            }
        }
        for field in ["data", "stringData"] {
            if let Some(m) = masked.get_mut(field).and_then(Value::as_object_mut) {
                for v in m.values_mut() {
                    *v = Value::String("(hidden)".into());
                }
            }
        }
        let cluster_name = super::cluster_name(&ui, &session.token, &id).await;
        return Ok(view::page(
            &name,
            &session,
            Section::Clusters,
            html! {
                (super::object_crumbs(&id, &cluster_name, kind, &ns, &name, Some("YAML")))
                h1 { (name) " as YAML" }
                p { "The values are hidden. " a.button.secondary href={ (url) "/yaml?reveal=1" } { "Show the values (to edit)" } }
                pre.yaml #yaml tabindex="0" aria-label={ "YAML of " (name) } { (to_yaml(&masked)) }
            },
        )
        .into_response());
    }
    render(
        &ui,
        &session,
        &id,
        &resource,
        &ns,
        &name,
        &to_yaml(&o),
        None,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn render(
    ui: &Ui,
    session: &Session,
    id: &str,
    resource: &str,
    ns: &str,
    name: &str,
    text: &str,
    error: Option<(u16, String)>,
) -> Result<Response, UiError> {
    let kind = find(resource)?;
    let token = &session.token;
    let cluster_name = super::cluster_name(ui, token, id).await;
    let may_update =
        Rules::cluster(&ui.api, token, id, ns)
            .await
            .allows("update", kind.group, kind.resource);
    let url = object_url(id, resource, ns, name);
    let status = error.as_ref().map_or(200, |(s, _)| *s);
    let page = view::page(
        name,
        session,
        Section::Clusters,
        html! {
            (super::object_crumbs(id, &cluster_name, kind, ns, name, Some("YAML")))
            h1 { (name) " as YAML" }
            @if may_update {
                form.yaml method="post" action={ (url) "/yaml" } {
                    (view::csrf(session))
                    div.field {
                        label for="yaml" { "YAML of " (kind.noun()) " " (name) }
                        textarea #yaml name="yaml" rows="28" spellcheck="false"
                            aria-invalid=[error.is_some().then_some("true")]
                            aria-describedby=[error.is_some().then_some("yaml-error")] { (text) }
                    }
                    @if let Some((_, m)) = &error {
                        p.error #yaml-error role="alert" { "The cluster refused this change, and nothing was saved: " (m) }
                    }
                    button type="submit" { "Save" }
                    " "
                    a href=(url) { "Cancel" }
                }
            } @else {
                p.readonly title=(crate::access::why_not("change", &format!("{} objects", kind.kind))) { "Read only." }
                pre.yaml #yaml tabindex="0" aria-label={ "YAML of " (name) } { (text) }
            }
        },
    );
    Ok((StatusCode::from_u16(status).unwrap_or(StatusCode::OK), page).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct RevealQuery {
    /// Show a Secret's values.
    #[serde(default)]
    reveal: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct YamlForm {
    yaml: String,
    #[serde(default)]
    ns: String,
}

/// Parse one document of YAML into JSON.
fn parse(text: &str) -> Result<Value, String> {
    if text.len() > MAX_YAML {
        return Err(format!("the YAML is larger than {MAX_YAML} bytes"));
    }
    yaml_serde::from_str::<Value>(text).map_err(|e| format!("this is not valid YAML: {e}"))
}

/// `POST …/{resource}/{ns}/{name}/yaml`: a dry run, then the save.
pub(crate) async fn save(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, resource, ns, name)): Path<(String, String, String, String)>,
    Form(f): Form<YamlForm>,
) -> Result<Response, UiError> {
    let kind = find(&resource)?;
    let path = kind.item(&id, &ns, &name);
    let refused = |status: u16, m: String| (status, m);
    let outcome = async {
        let o = parse(&f.yaml).map_err(|m| refused(400, m))?;
        if s(&o, "/metadata/name") != name || (!ns.is_empty() && s(&o, "/metadata/namespace") != ns)
        {
            return Err(refused(
                400,
                format!("metadata.name and metadata.namespace must stay {name:?} and {ns:?}"),
            ));
        }
        for dry in [true, false] {
            let q = if dry {
                "?dryRun=All&fieldValidation=Strict"
            } else {
                "?fieldValidation=Strict"
            };
            match ui
                .api
                .call(Method::PUT, &format!("{path}{q}"), &session.token, Some(&o))
                .await
            {
                Ok(_) => {}
                Err(UiError::Api { status, message }) => return Err(refused(status, message)),
                Err(e) => return Err(refused(500, e.to_string())),
            }
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => Ok(Redirect::to(&format!(
            "{}?notice=saved",
            object_url(&id, &resource, &ns, &name)
        ))
        .into_response()),
        Err((401, _)) => Err(UiError::SignedOut),
        Err(e) => render(&ui, &session, &id, &resource, &ns, &name, &f.yaml, Some(e)).await,
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct ImportQuery {
    #[serde(default)]
    ns: String,
}

/// `GET /dashboard/clusters/{id}/explore/import`.
pub(crate) async fn import_page(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<ImportQuery>,
) -> Result<Response, UiError> {
    import_render(&ui, &session, &id, &q.ns, "", None, StatusCode::OK).await
}

async fn import_render(
    ui: &Ui,
    session: &Session,
    id: &str,
    ns: &str,
    text: &str,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let token = &session.token;
    let cluster_name = super::cluster_name(ui, token, id).await;
    let namespaces = super::list::namespaces(ui, token, id)
        .await
        .unwrap_or_default();
    let page = view::page(
        "Import YAML",
        session,
        Section::Clusters,
        html! {
            (super::crumbs(id, &cluster_name, &[("Import YAML".to_owned(), None)]))
            h1 { "Import YAML" }
            p { "Paste one or more documents (separated by " code { "---" } "). Each is checked by the cluster first; if any is refused, nothing is created." }
            form.yaml method="post" action={ (super::base(id)) "/import" } {
                (view::csrf(session))
                div.field {
                    label for="import-ns" { "Namespace (for documents that name none)" }
                    select #import-ns name="ns" {
                        @for (n, _) in &namespaces { option selected[n == ns] { (n) } }
                    }
                }
                div.field {
                    label for="yaml" { "YAML" }
                    textarea #yaml name="yaml" rows="20" spellcheck="false" required
                        aria-invalid=[error.is_some().then_some("true")]
                        aria-describedby=[error.is_some().then_some("yaml-error")] { (text) }
                }
                @if let Some(m) = &error {
                    p.error #yaml-error role="alert" { (m) }
                }
                button type="submit" { "Import" }
            }
        },
    );
    Ok((status, page).into_response())
}

/// The API path of the collection of `o`'s kind in cluster `id`, found by
/// the cluster's discovery (with `found` caching each group version).
async fn collection_of(
    ui: &Ui,
    token: &str,
    id: &str,
    o: &Value,
    ns: &str,
    found: &mut BTreeMap<String, Value>,
) -> Result<String, String> {
    let api_version = s(o, "/apiVersion");
    let kind = s(o, "/kind");
    if api_version.is_empty() || kind.is_empty() {
        return Err("every document needs apiVersion and kind".into());
    }
    let part = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    };
    let valid = match api_version.split_once('/') {
        Some((group, version)) => part(group) && part(version),
        None => part(api_version),
    };
    if !valid {
        return Err(format!("apiVersion {api_version:?} is not a group/version"));
    }
    let base = if api_version.contains('/') {
        format!("/k8s/clusters/{}/apis/{api_version}", seg(id))
    } else {
        format!("/k8s/clusters/{}/api/{api_version}", seg(id))
    };
    if !found.contains_key(api_version) {
        let list = ui
            .api
            .get(&base, token)
            .await
            .map_err(|e| format!("{api_version}: {e}"))?;
        found.insert(api_version.to_owned(), list);
    }
    let resource = found[api_version]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| s(r, "/kind") == kind && !s(r, "/name").contains('/'))
        .ok_or_else(|| format!("the cluster has no kind {kind} in {api_version}"))?;
    let plural = s(resource, "/name");
    if resource["namespaced"] == Value::Bool(true) {
        let ns = match s(o, "/metadata/namespace") {
            "" => ns,
            n => n,
        };
        Ok(format!("{base}/namespaces/{}/{plural}", seg(ns)))
    } else {
        Ok(format!("{base}/{plural}"))
    }
}

/// `POST /dashboard/clusters/{id}/explore/import`.
pub(crate) async fn import(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<YamlForm>,
) -> Result<Response, UiError> {
    let token = &session.token;
    let mut docs = Vec::new();
    let outcome: Result<usize, (u16, String)> = async {
        if f.yaml.len() > MAX_YAML {
            return Err((400, format!("the YAML is larger than {MAX_YAML} bytes")));
        }
        for (i, doc) in yaml_serde::Deserializer::from_str(&f.yaml).enumerate() {
            let v = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| {
                (
                    400,
                    format!("document {}: this is not valid YAML: {e}", i + 1),
                )
            })?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        if docs.is_empty() {
            return Err((400, "there is no document to import".into()));
        }
        let mut found = BTreeMap::new();
        let mut paths = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            let p = collection_of(&ui, token, &id, d, &f.ns, &mut found)
                .await
                .map_err(|m| (400, format!("document {}: {m}", i + 1)))?;
            paths.push(p);
        }
        for dry in [true, false] {
            for (i, (d, p)) in docs.iter().zip(&paths).enumerate() {
                let q = if dry {
                    "?dryRun=All&fieldValidation=Strict"
                } else {
                    "?fieldValidation=Strict"
                };
                match ui
                    .api
                    .call(Method::POST, &format!("{p}{q}"), token, Some(d))
                    .await
                {
                    Ok(_) => {}
                    Err(UiError::Api { status, message }) => {
                        let note = if dry {
                            "nothing was created"
                        } else {
                            "the documents before it were created"
                        };
                        return Err((
                            status,
                            format!(
                                "document {} ({} {}): {message}; {note}",
                                i + 1,
                                s(d, "/kind"),
                                s(d, "/metadata/name")
                            ),
                        ));
                    }
                    Err(e) => return Err((500, e.to_string())),
                }
            }
        }
        Ok(docs.len())
    }
    .await;
    match outcome {
        Ok(n) => {
            let first = &docs[0];
            let resource = super::KINDS
                .iter()
                .find(|k| k.kind == s(first, "/kind"))
                .map_or("deployments", |k| k.resource);
            let ns = match s(first, "/metadata/namespace") {
                "" => f.ns.as_str(),
                n => n,
            };
            let _ = n;
            Ok(
                Redirect::to(&format!("{}/{resource}?ns={}", super::base(&id), seg(ns)))
                    .into_response(),
            )
        }
        Err((401, _)) => Err(UiError::SignedOut),
        Err((status, m)) => {
            import_render(
                &ui,
                &session,
                &id,
                &f.ns,
                &f.yaml,
                Some(m),
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            )
            .await
        }
    }
}
