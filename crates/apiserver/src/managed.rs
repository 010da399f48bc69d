//! Field management and server-side apply, as kube-apiserver's
//! fieldmanager and structured-merge-diff do them.
//!
//! Every write records who set which fields in `metadata.managedFields`:
//! an entry per manager, operation (`Apply` or `Update`) and subresource,
//! with its fields in the `FieldsV1` form (`f:` a field, `k:` an item of a
//! list keyed by some of its fields, `v:` an item of a set, `.` the item
//! itself).
//!
//! - An update (create, PUT, any other patch) gives its manager the fields
//!   it changed, taken from whoever had them; fields it removed leave every
//!   manager.
//! - An apply (`application/apply-patch+yaml`) merges the applied config
//!   into the object: maps field by field, keyed lists item by item, sets
//!   value by value, atomic lists and scalars whole. Changing a field
//!   another manager owns is a conflict (409, naming the fields and their
//!   managers) unless `force=true` takes it. Fields the manager applied
//!   before and leaves out now are removed, unless another manager owns
//!   them. The applier then owns exactly what it applied.
//!
//! Lists' types come from the kind ([`ListType`]): built-in kinds from
//! their patch strategies, custom kinds from `x-kubernetes-list-type` and
//! `x-kubernetes-list-map-keys` in their schema (atomic when unsaid).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// How a list (or a map) field merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole, owned as one field.
    Atomic,
    /// Items are scalars, each owned on its own.
    Set,
    /// Items are objects keyed by these fields.
    Map(Vec<String>),
}

/// The type of the list at a path of field names (no indices), e.g.
/// `["spec", "template", "spec", "containers"]`.
pub type ListTypes<'a> = &'a dyn Fn(&[&str]) -> ListType;

/// The list type a strategic-merge list strategy implies, with kube's
/// list-map keys where they differ from the patch merge key.
pub fn from_strategies(
    strategies: crate::strategic::ListStrategies,
) -> impl Fn(&[&str]) -> ListType {
    use crate::strategic::ListStrategy;
    move |path: &[&str]| {
        let n = path.len();
        let parent = if n >= 2 { path[n - 2] } else { "" };
        let field = path.last().copied().unwrap_or_default();
        match (parent, field) {
            ("containers" | "initContainers" | "ephemeralContainers", "ports") => {
                ListType::Map(vec!["containerPort".into(), "protocol".into()])
            }
            ("spec", "ports") if path == ["spec", "ports"] => {
                ListType::Map(vec!["port".into(), "protocol".into()])
            }
            _ => match strategies(path) {
                ListStrategy::MergeByKey(k) => ListType::Map(vec![k.to_owned()]),
                ListStrategy::MergePrimitive => ListType::Set,
                ListStrategy::Replace => ListType::Atomic,
            },
        }
    }
}

/// The list type an OpenAPI schema states at a path (custom kinds).
pub fn from_schema(schema: &Value, path: &[&str]) -> ListType {
    let mut node = schema;
    for name in path {
        let next = node
            .pointer(&format!("/properties/{name}"))
            .or_else(|| node.pointer("/items/properties").and_then(|p| p.get(*name)))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()));
        match next {
            Some(n) => node = n,
            None => return ListType::Atomic,
        }
    }
    match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            node.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ListType::Atomic,
    }
}

/// Maps owned whole, as kube marks them (`+mapType=atomic`,
/// `+structType=atomic`): label selectors and Service selectors.
fn atomic_map(path: &[&str]) -> bool {
    matches!(
        path.last().copied(),
        Some("selector" | "podSelector" | "namespaceSelector" | "labelSelector" | "roleRef")
    )
}

/// One element of a field path, as written in `FieldsV1`.
type Path = Vec<String>;

/// A set of field paths. A path is either a leaf field or an item of a
/// keyed list or set (`.` in `FieldsV1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

/// Fields no manager owns.
const STRIPPED: &[&[&str]] = &[
    &["f:apiVersion"],
    &["f:kind"],
    &["f:metadata", "f:name"],
    &["f:metadata", "f:namespace"],
    &["f:metadata", "f:uid"],
    &["f:metadata", "f:resourceVersion"],
    &["f:metadata", "f:generation"],
    &["f:metadata", "f:creationTimestamp"],
    &["f:metadata", "f:deletionTimestamp"],
    &["f:metadata", "f:deletionGracePeriodSeconds"],
    &["f:metadata", "f:managedFields"],
    &["f:metadata", "f:selfLink"],
];

fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        let v = match item.get(k) {
            Some(v) => v.clone(),
            // A key with a schema default counts as that default (ports'
            // protocol), as structured-merge-diff reads it.
            None if k == "protocol" => json!("TCP"),
            None => return None,
        };
        m.insert(k.clone(), v);
    }
    Some(format!("k:{}", Value::Object(m)))
}

impl FieldSet {
    /// The fields present in `obj` (a whole object or a config).
    pub fn of(obj: &Value, lists: ListTypes<'_>) -> Self {
        let mut set = BTreeSet::new();
        let mut names = Vec::new();
        collect(obj, &mut Vec::new(), &mut names, lists, &mut set);
        let mut s = FieldSet(set);
        s.strip();
        s
    }

    fn strip(&mut self) {
        self.0.retain(|p| {
            !STRIPPED
                .iter()
                .any(|s| p.len() >= s.len() && p.iter().zip(s.iter()).all(|(a, b)| a == b))
        });
    }

    /// Only the paths under `f:status` (`inside`) or outside it.
    pub fn status_part(&self, inside: bool) -> Self {
        FieldSet(
            self.0
                .iter()
                .filter(|p| (p.first().map(String::as_str) == Some("f:status")) == inside)
                .cloned()
                .collect(),
        )
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    fn minus(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    fn intersect(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// The `FieldsV1` form.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for (i, el) in path.iter().enumerate() {
                let entry = node
                    .entry(el.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let m = entry.as_object_mut().expect("object");
                if i + 1 == path.len() && el.starts_with(['k', 'v']) {
                    m.insert(".".into(), json!({}));
                }
                node = m;
            }
        }
        // A leaf that later became a parent keeps itself as `.`.
        fn mark(node: &mut Map<String, Value>, path: &mut Vec<String>, set: &BTreeSet<Path>) {
            for (k, v) in node.iter_mut() {
                if k == "." {
                    continue;
                }
                path.push(k.clone());
                if let Some(m) = v.as_object_mut() {
                    if !m.is_empty() && set.contains(path) && !m.contains_key(".") {
                        m.insert(".".into(), json!({}));
                    }
                    mark(m, path, set);
                }
                path.pop();
            }
        }
        mark(&mut root, &mut Vec::new(), &self.0);
        Value::Object(root)
    }

    /// Read the `FieldsV1` form.
    pub fn from_fields_v1(v: &Value) -> Self {
        fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Path>) {
            let Some(m) = v.as_object() else { return };
            if !path.is_empty() && (m.is_empty() || m.contains_key(".")) {
                out.insert(path.clone());
            }
            for (k, child) in m {
                if k == "." {
                    continue;
                }
                path.push(k.clone());
                walk(child, path, out);
                path.pop();
            }
        }
        let mut out = BTreeSet::new();
        walk(v, &mut Vec::new(), &mut out);
        FieldSet(out)
    }

    /// `.spec.replicas`, `.spec.template.spec.containers[name="web"].image`.
    fn describe(path: &Path) -> String {
        let mut s = String::new();
        for el in path {
            if let Some(f) = el.strip_prefix("f:") {
                s.push('.');
                s.push_str(f);
            } else if let Some(k) = el.strip_prefix("k:") {
                let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            } else if let Some(v) = el.strip_prefix("v:") {
                s.push_str(&format!("[={v}]"));
            }
        }
        s
    }
}

fn collect(
    v: &Value,
    path: &mut Path,
    names: &mut Vec<String>,
    lists: ListTypes<'_>,
    out: &mut BTreeSet<Path>,
) {
    match v {
        Value::Object(m) => {
            let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
            if !path.is_empty() && (m.is_empty() || atomic_map(&names_ref)) {
                out.insert(path.clone());
                return;
            }
            for (k, child) in m {
                path.push(format!("f:{k}"));
                names.push(k.clone());
                collect(child, path, names, lists, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) => {
            let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
            match lists(&names_ref) {
                ListType::Map(keys) if !keys.is_empty() => {
                    for item in items {
                        let Some(k) = item_key(item, &keys) else {
                            // An item without its keys: the list is owned whole.
                            out.insert(path.clone());
                            return;
                        };
                        path.push(k);
                        out.insert(path.clone());
                        if let Some(m) = item.as_object() {
                            for (f, child) in m {
                                path.push(format!("f:{f}"));
                                names.push(f.clone());
                                collect(child, path, names, lists, out);
                                names.pop();
                                path.pop();
                            }
                        }
                        path.pop();
                    }
                    if items.is_empty() {
                        out.insert(path.clone());
                    }
                }
                ListType::Set => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone());
                        path.pop();
                    }
                    if items.is_empty() {
                        out.insert(path.clone());
                    }
                }
                _ => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Remove the value at a path (a field, a keyed item, a set value).
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut v = obj;
    for el in parent_path {
        let next = if let Some(f) = el.strip_prefix("f:") {
            v.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let Ok(keys) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            v.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|item| keys.iter().all(|(k, kv)| item.get(k) == Some(kv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => v = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = v.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(keys), Some(a)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            v.as_array_mut(),
        ) {
            a.retain(|item| !keys.iter().all(|(k, kv)| item.get(k) == Some(kv)));
        }
    } else if let Some(val) = last.strip_prefix("v:") {
        if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(val), v.as_array_mut()) {
            a.retain(|item| *item != want);
        }
    }
}

/// The paths whose value differs between `old` and `new` (added, removed
/// or changed); items count only when they appear or go.
pub fn changed(old: &Value, new: &Value, lists: ListTypes<'_>) -> (FieldSet, FieldSet) {
    let mut changed = BTreeSet::new();
    let mut removed = BTreeSet::new();
    let mut path = Vec::new();
    let mut names = Vec::new();
    let (old, new) = (
        Some(old).filter(|v| !v.is_null()),
        Some(new).filter(|v| !v.is_null()),
    );
    diff(
        old,
        new,
        &mut path,
        &mut names,
        lists,
        &mut changed,
        &mut removed,
    );
    let (mut changed, mut removed) = (FieldSet(changed), FieldSet(removed));
    changed.strip();
    removed.strip();
    (changed, removed)
}

/// Walk `old` and `new` side by side (each list indexed by its keys once,
/// so the walk is linear), collecting changed and removed paths.
fn diff(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Path,
    names: &mut Vec<String>,
    lists: ListTypes<'_>,
    changed: &mut BTreeSet<Path>,
    removed: &mut BTreeSet<Path>,
) {
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaf = |changed: &mut BTreeSet<Path>, removed: &mut BTreeSet<Path>, path: &Path| {
        if old != new {
            changed.insert(path.clone());
            if new.is_none() {
                removed.insert(path.clone());
            }
        }
    };
    let nonempty_map =
        |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(|m| !m.is_empty());
    let granular_map = path.is_empty() || !atomic_map(&names_ref);
    match (old, new) {
        (o, n)
            if granular_map
                && (nonempty_map(o) || nonempty_map(n))
                && o.is_none_or(Value::is_object)
                && n.is_none_or(Value::is_object) =>
        {
            let empty = Map::new();
            let om = o.and_then(Value::as_object).unwrap_or(&empty);
            let nm = n.and_then(Value::as_object).unwrap_or(&empty);
            // An empty map is a field of its own.
            let is_empty_map =
                |v: Option<&Value>| v.is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
            if !path.is_empty() && is_empty_map(o) != is_empty_map(n) {
                changed.insert(path.clone());
                if is_empty_map(o) {
                    // Replaced by fields: the empty map's own entry goes.
                    removed.insert(path.clone());
                }
            }
            for k in om.keys().chain(nm.keys().filter(|k| !om.contains_key(*k))) {
                path.push(format!("f:{k}"));
                names.push(k.clone());
                diff(om.get(k), nm.get(k), path, names, lists, changed, removed);
                names.pop();
                path.pop();
            }
        }
        (o, n)
            if o.is_none_or(Value::is_array)
                && n.is_none_or(Value::is_array)
                && !path.is_empty() =>
        {
            let empty = Vec::new();
            let oa = o.and_then(Value::as_array).unwrap_or(&empty);
            let na = n.and_then(Value::as_array).unwrap_or(&empty);
            // An empty list is a field of its own; a missing one is not.
            let empty_list =
                |v: Option<&Value>| v.and_then(Value::as_array).is_some_and(Vec::is_empty);
            if empty_list(o) != empty_list(n) {
                changed.insert(path.clone());
                if empty_list(o) {
                    removed.insert(path.clone());
                }
            }
            match lists(&names_ref) {
                ListType::Map(keys) if !keys.is_empty() => {
                    let index =
                        |a: &'_ Vec<Value>| -> Option<std::collections::HashMap<String, usize>> {
                            a.iter()
                                .enumerate()
                                .map(|(i, item)| item_key(item, &keys).map(|k| (k, i)))
                                .collect()
                        };
                    let (Some(oi), Some(ni)) = (index(oa), index(na)) else {
                        // Items without their keys: the list is owned whole.
                        leaf(changed, removed, path);
                        return;
                    };
                    let order = oa
                        .iter()
                        .chain(na.iter())
                        .filter_map(|item| item_key(item, &keys));
                    let mut seen = std::collections::HashSet::new();
                    for k in order {
                        if !seen.insert(k.clone()) {
                            continue;
                        }
                        let (a, b) = (oi.get(&k).map(|i| &oa[*i]), ni.get(&k).map(|i| &na[*i]));
                        path.push(k);
                        if a.is_some() != b.is_some() {
                            changed.insert(path.clone());
                            if b.is_none() {
                                removed.insert(path.clone());
                            }
                        }
                        let (am, bm) = (a.and_then(Value::as_object), b.and_then(Value::as_object));
                        let empty = Map::new();
                        let (am, bm) = (am.unwrap_or(&empty), bm.unwrap_or(&empty));
                        for f in am.keys().chain(bm.keys().filter(|f| !am.contains_key(*f))) {
                            path.push(format!("f:{f}"));
                            names.push(f.clone());
                            diff(am.get(f), bm.get(f), path, names, lists, changed, removed);
                            names.pop();
                            path.pop();
                        }
                        path.pop();
                    }
                }
                ListType::Set => {
                    let render = |a: &Vec<Value>| -> std::collections::HashSet<String> {
                        a.iter().map(|v| format!("v:{v}")).collect()
                    };
                    let (os, ns) = (render(oa), render(na));
                    for v in os.symmetric_difference(&ns) {
                        path.push(v.clone());
                        changed.insert(path.clone());
                        if !ns.contains(v) {
                            removed.insert(path.clone());
                        }
                        path.pop();
                    }
                }
                _ => leaf(changed, removed, path),
            }
        }
        _ => {
            if !path.is_empty() {
                leaf(changed, removed, path);
            }
        }
    }
}

/// Merge an applied config into an object.
fn merge(live: &mut Value, config: &Value, names: &mut Vec<String>, lists: ListTypes<'_>) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
            if !names.is_empty() && atomic_map(&names_ref) {
                *l = c.clone();
                return;
            }
            for (k, cv) in c {
                names.push(k.clone());
                match l.get_mut(k) {
                    Some(lv) if cv.is_object() || cv.is_array() => merge(lv, cv, names, lists),
                    _ => {
                        l.insert(k.clone(), cv.clone());
                    }
                }
                names.pop();
            }
        }
        (l @ Value::Array(_), Value::Array(c)) => {
            let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
            match lists(&names_ref) {
                ListType::Map(keys) if !keys.is_empty() => {
                    let la = l.as_array_mut().expect("array");
                    // Index the live items once: a merge stays linear.
                    let mut at: std::collections::HashMap<String, usize> = la
                        .iter()
                        .enumerate()
                        .filter_map(|(i, li)| item_key(li, &keys).map(|k| (k, i)))
                        .collect();
                    for ci in c {
                        let Some(k) = item_key(ci, &keys) else {
                            *l = Value::Array(c.clone());
                            return;
                        };
                        match at.get(&k) {
                            Some(&i) => merge(&mut la[i], ci, names, lists),
                            None => {
                                at.insert(k, la.len());
                                la.push(ci.clone());
                            }
                        }
                    }
                }
                ListType::Set => {
                    let la = l.as_array_mut().expect("array");
                    let mut have: std::collections::HashSet<String> =
                        la.iter().map(Value::to_string).collect();
                    for ci in c {
                        if have.insert(ci.to_string()) {
                            la.push(ci.clone());
                        }
                    }
                }
                _ => *l = Value::Array(c.clone()),
            }
        }
        (l, c) => *l = c.clone(),
    }
}

/// A `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Who.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The object's apiVersion when written.
    pub api_version: String,
    /// When.
    pub time: String,
    /// `""` or `status`.
    pub subresource: String,
    /// What.
    pub fields: FieldSet,
}

/// Read an object's `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_owned(),
                operation: e.get("operation")?.as_str()?.to_owned(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                time: e["time"].as_str().unwrap_or_default().to_owned(),
                subresource: e["subresource"].as_str().unwrap_or_default().to_owned(),
                fields: FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

/// Write `entries` as the object's `metadata.managedFields` (dropping
/// empty ones, folding the oldest Update entries past ten), in kube's
/// order: Apply entries first, then by time.
fn set_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    fold_ancient(&mut entries);
    entries.sort_by(|a, b| {
        (a.operation != "Apply", &a.time, &a.manager).cmp(&(
            b.operation != "Apply",
            &b.time,
            &b.manager,
        ))
    });
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": e.fields.to_fields_v1(),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who writes, how, and where.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `""` or `status`.
    pub subresource: &'a str,
    /// Whether the kind has a status subresource (its status is then not
    /// the main resource's, and the reverse).
    pub has_status: bool,
}

impl Writer<'_> {
    fn scope(&self, set: FieldSet) -> FieldSet {
        match (self.has_status, self.subresource) {
            (true, "status") => set.status_part(true),
            (true, _) => set.status_part(false),
            _ => set,
        }
    }
}

/// Record an update (create, PUT, non-apply patch) of `old` (`Null` for a
/// create) to `new`: the writer takes the fields it changed; removed fields
/// leave everyone. Sets `new`'s managedFields.
pub fn record_update(old: &Value, new: &mut Value, w: &Writer<'_>, lists: ListTypes<'_>) {
    let mut list = if old.is_null() {
        Vec::new()
    } else {
        entries(old)
    };
    let (changed, removed) = changed(old, new, lists);
    let changed = w.scope(changed);
    for e in &mut list {
        e.fields = e.fields.minus(&changed).minus(&removed);
    }
    let api_version = new["apiVersion"].as_str().unwrap_or_default().to_owned();
    let now = drover_core::meta::now_rfc3339();
    if !changed.is_empty() {
        match list.iter_mut().find(|e| {
            e.manager == w.manager && e.operation == "Update" && e.subresource == w.subresource
        }) {
            Some(e) => {
                e.fields = e.fields.union(&changed);
                e.time = now;
                e.api_version = api_version;
            }
            None => list.push(Entry {
                manager: w.manager.to_owned(),
                operation: "Update".into(),
                api_version,
                time: now,
                subresource: w.subresource.to_owned(),
                fields: changed,
            }),
        }
    }
    set_entries(new, list);
}

/// A conflict: a field another manager owns, with that manager.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The field, e.g. `.spec.replicas`.
    pub field: String,
    /// Its manager.
    pub manager: String,
    /// That manager's apiVersion.
    pub api_version: String,
}

/// Apply `config` to `live` (`Null` when the object does not exist yet);
/// returns the new object with its managedFields, or the conflicts.
pub fn apply(
    live: &Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
    lists: ListTypes<'_>,
) -> Result<Value, Vec<Conflict>> {
    let mut list = if live.is_null() {
        Vec::new()
    } else {
        entries(live)
    };
    let applied = w.scope(FieldSet::of(config, lists));
    let mut merged = if live.is_null() {
        json!({})
    } else {
        live.clone()
    };
    let mut config_scoped = config.clone();
    if w.has_status {
        if let Some(m) = config_scoped.as_object_mut() {
            if w.subresource == "status" {
                let status = m.remove("status");
                m.retain(|k, _| k == "apiVersion" || k == "kind" || k == "metadata");
                if let Some(s) = status {
                    m.insert("status".into(), s);
                }
            } else {
                m.remove("status");
            }
        }
    }
    merge(&mut merged, &config_scoped, &mut Vec::new(), lists);
    let (changed, _) = changed(live, &merged, lists);
    let mine = |e: &Entry| {
        e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource
    };
    // Conflicts: changed fields someone else owns.
    let mut conflicts = Vec::new();
    for e in list.iter().filter(|e| !mine(e)) {
        for p in &e.fields.intersect(&changed).intersect(&applied).0 {
            conflicts.push(Conflict {
                field: FieldSet::describe(p),
                manager: e.manager.clone(),
                api_version: e.api_version.clone(),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        for e in list.iter_mut().filter(|e| !mine(e)) {
            e.fields = e.fields.minus(&applied.intersect(&changed));
        }
    }
    // What this manager applied before and leaves out now goes, unless
    // another manager owns it too.
    let before = list
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = list
        .iter()
        .filter(|e| !mine(e))
        .fold(FieldSet::default(), |acc, e| acc.union(&e.fields));
    let dropped = before.minus(&applied).minus(&others);
    // Shallowest first: an item goes whole, its fields with it. Every path
    // others own below something is known by its prefixes, and what was
    // removed is looked up by its ancestors: linear in the paths.
    let mut paths: Vec<&Path> = dropped.0.iter().collect();
    paths.sort_by_key(|p| p.len());
    let owned_prefixes: std::collections::HashSet<&[String]> = others
        .0
        .iter()
        .flat_map(|o| (1..o.len()).map(move |n| &o[..n]))
        .collect();
    let mut removed: std::collections::HashSet<&[String]> = std::collections::HashSet::new();
    for p in paths {
        if (1..p.len()).any(|n| removed.contains(&p[..n])) {
            continue;
        }
        // A dropped item that still has fields others own stays.
        if !owned_prefixes.contains(p.as_slice()) {
            remove_at(&mut merged, p);
            removed.insert(p.as_slice());
        }
    }
    let api_version = merged["apiVersion"].as_str().unwrap_or_default().to_owned();
    // An apply that changes nothing leaves the entry (and its time) as it
    // was, so the object is not written again.
    let previous = list.iter().find(|e| mine(e)).cloned();
    list.retain(|e| !mine(e));
    let time = match previous {
        Some(p) if p.fields == applied && changed.is_empty() => p.time,
        _ => drover_core::meta::now_rfc3339(),
    };
    list.push(Entry {
        manager: w.manager.to_owned(),
        operation: "Apply".into(),
        api_version,
        time,
        subresource: w.subresource.to_owned(),
        fields: applied,
    });
    set_entries(&mut merged, list);
    Ok(merged)
}

/// The message and causes of a 409 for `conflicts`, as kube words them.
pub fn conflict_status(conflicts: &[Conflict]) -> (String, Vec<Value>) {
    let who = |c: &Conflict| format!("{:?} using {}", c.manager, c.api_version);
    // structured-merge-diff's wording: one conflict on one line; several
    // grouped by manager, a field per line.
    let detail = match conflicts {
        [one] => format!("conflict with {}: {}", who(one), one.field),
        many => {
            let mut by_manager: std::collections::BTreeMap<String, Vec<&str>> =
                std::collections::BTreeMap::new();
            for c in many {
                by_manager.entry(who(c)).or_default().push(&c.field);
            }
            by_manager
                .iter()
                .map(|(m, fields)| {
                    let lines: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
                    format!("conflicts with {m}:\n{}", lines.join("\n"))
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let plural = if conflicts.len() == 1 { "" } else { "s" };
    let message = format!(
        "Apply failed with {} conflict{plural}: {detail}",
        conflicts.len()
    );
    let causes = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", who(c)), "field": c.field})
        })
        .collect();
    (message, causes)
}

/// The manager kube names when a request names none: the User-Agent up
/// to its first `/` (`kubectl`, `OpenAPI-Generator`).
pub fn default_manager(user_agent: &str) -> String {
    let name: String = user_agent
        .split('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

/// How many managers an object keeps at most; past that, kube folds the
/// oldest Update entries into one (`ancient-changes`).
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// Fold the oldest Update entries past [`MAX_UPDATE_MANAGERS`] into one
/// (done by every write of the list, [`set_entries`]).
fn fold_ancient(list: &mut Vec<Entry>) {
    let mut updates: Vec<usize> = list
        .iter()
        .enumerate()
        .filter(|(_, e)| e.operation == "Update")
        .map(|(i, _)| i)
        .collect();
    if updates.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updates.sort_by(|a, b| list[*a].time.cmp(&list[*b].time));
    let fold: BTreeSet<usize> = updates[..updates.len() - MAX_UPDATE_MANAGERS + 1]
        .iter()
        .copied()
        .collect();
    let mut ancient = FieldSet::default();
    let mut time = String::new();
    for i in &fold {
        ancient = ancient.union(&list[*i].fields);
        time = time.max(list[*i].time.clone());
    }
    let api_version = list[*fold.iter().next().expect("some")].api_version.clone();
    let mut i = 0;
    list.retain(|_| {
        i += 1;
        !fold.contains(&(i - 1))
    });
    list.push(Entry {
        manager: "ancient-changes".into(),
        operation: "Update".into(),
        api_version,
        time,
        subresource: String::new(),
        fields: ancient,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(path: &[&str]) -> ListType {
        from_strategies(crate::strategic::kubernetes_lists)(path)
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = FieldSet::of(&deployment(2, "nginx"), &lists);
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
    }

    #[test]
    fn a_second_manager_conflicts_until_it_forces() {
        let w1 = Writer {
            manager: "a",
            subresource: "",
            has_status: true,
        };
        let w2 = Writer {
            manager: "b",
            subresource: "",
            has_status: true,
        };
        let live = apply(&Value::Null, &deployment(2, "nginx"), &w1, false, &lists).unwrap();
        // The same values: no conflict, shared ownership.
        let shared = apply(&live, &deployment(2, "nginx"), &w2, false, &lists).unwrap();
        assert_eq!(entries(&shared).len(), 2);
        let err = apply(&shared, &deployment(3, "nginx"), &w2, false, &lists).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].field, ".spec.replicas");
        assert_eq!(err[0].manager, "a");
        let forced = apply(&shared, &deployment(3, "nginx"), &w2, true, &lists).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let a = entries(&forced)
            .into_iter()
            .find(|e| e.manager == "a")
            .unwrap();
        assert!(!a.fields.to_fields_v1().to_string().contains("replicas"));
    }

    #[test]
    fn a_field_left_out_of_the_next_apply_is_removed() {
        let w = Writer {
            manager: "a",
            subresource: "",
            has_status: true,
        };
        let mut cfg = deployment(2, "nginx");
        cfg["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "busybox"}));
        let live = apply(&Value::Null, &cfg, &w, false, &lists).unwrap();
        let again = apply(&live, &deployment(2, "nginx"), &w, false, &lists).unwrap();
        let containers = again["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1, "{again}");
        assert_eq!(containers[0]["name"], "web");
        let no_labels = {
            let mut d = deployment(2, "nginx");
            d["metadata"].as_object_mut().unwrap().remove("labels");
            d
        };
        let unlabelled = apply(&again, &no_labels, &w, false, &lists).unwrap();
        assert!(unlabelled.pointer("/metadata/labels/app").is_none());
    }

    #[test]
    fn an_update_takes_what_it_changed() {
        let w1 = Writer {
            manager: "a",
            subresource: "",
            has_status: true,
        };
        let live = apply(&Value::Null, &deployment(2, "nginx"), &w1, false, &lists).unwrap();
        let mut edited = live.clone();
        edited["spec"]["replicas"] = json!(5);
        let w2 = Writer {
            manager: "kubectl-edit",
            subresource: "",
            has_status: true,
        };
        record_update(&live, &mut edited, &w2, &lists);
        let list = entries(&edited);
        let edit = list.iter().find(|e| e.manager == "kubectl-edit").unwrap();
        assert_eq!(edit.operation, "Update");
        assert_eq!(
            edit.fields.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}}})
        );
        // The applier lost it, so its next apply conflicts.
        let err = apply(&edited, &deployment(2, "nginx"), &w1, false, &lists).unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let c = |f: &str| Conflict {
            field: f.into(),
            manager: "kubectl-edit".into(),
            api_version: "apps/v1".into(),
        };
        let (message, causes) = conflict_status(&[c(".spec.replicas"), c(".spec.paused")]);
        assert_eq!(
            message,
            "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n- .spec.replicas\n- .spec.paused"
        );
        assert_eq!(causes.len(), 2);
    }

    #[test]
    fn custom_kinds_say_their_list_types_in_the_schema() {
        let schema = json!({"properties": {"spec": {"properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port"]},
            "tags": {"type": "array", "x-kubernetes-list-type": "set"},
            "args": {"type": "array"}}}}});
        assert_eq!(
            from_schema(&schema, &["spec", "ports"]),
            ListType::Map(vec!["port".into()])
        );
        assert_eq!(from_schema(&schema, &["spec", "tags"]), ListType::Set);
        assert_eq!(from_schema(&schema, &["spec", "args"]), ListType::Atomic);
    }

    #[test]
    fn past_ten_update_managers_the_oldest_fold_together() {
        let mut obj =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        for n in 0..12 {
            let old = obj.clone();
            obj["data"][format!("k{n}")] = json!("v");
            let w = Writer {
                manager: &format!("m{n:02}"),
                subresource: "",
                has_status: false,
            };
            record_update(&old, &mut obj, &w, &lists);
            // Distinct times, oldest first.
            let mut list = entries(&obj);
            for (i, e) in list.iter_mut().enumerate() {
                e.time = format!("2026-01-01T00:00:{i:02}Z");
            }
            set_entries(&mut obj, list);
        }
        let list = entries(&obj);
        assert_eq!(list.len(), MAX_UPDATE_MANAGERS);
        assert!(list.iter().any(|e| e.manager == "ancient-changes"));
    }

    #[test]
    fn sets_and_keyed_items_merge() {
        let w = Writer {
            manager: "a",
            subresource: "",
            has_status: false,
        };
        let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "finalizers": ["one"]}});
        let cfg = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "finalizers": ["two"]}});
        let out = apply(&live, &cfg, &w, false, &lists).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["one", "two"]));
    }
}
