//! Label selectors (equality- and set-based) and field selectors, with the
//! syntax of `labels.Parse` and `fields.ParseSelector`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parse `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {why} in label selector {s:?}"
            ))
        };
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement::DoesNotExist(label_key(key.trim()).map_err(|w| bad(&w))?)
            } else if let Some((key, rest)) = split_word(part, " notin ") {
                Requirement::NotIn(
                    label_key(key).map_err(|w| bad(&w))?,
                    set_values(rest).map_err(|w| bad(&w))?,
                )
            } else if let Some((key, rest)) = split_word(part, " in ") {
                Requirement::In(
                    label_key(key).map_err(|w| bad(&w))?,
                    set_values(rest).map_err(|w| bad(&w))?,
                )
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(
                    label_key(k.trim()).map_err(|w| bad(&w))?,
                    label_value(v.trim()).map_err(|w| bad(&w))?,
                )
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(
                    label_key(k.trim()).map_err(|w| bad(&w))?,
                    label_value(v.trim()).map_err(|w| bad(&w))?,
                )
            } else {
                Requirement::Exists(label_key(part).map_err(|w| bad(&w))?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|x| !vs.contains(x)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the selector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Split on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn split_word<'a>(s: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    s.split_once(word).map(|(a, b)| (a.trim(), b.trim()))
}

fn set_values(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {s:?}"))?;
    inner.split(',').map(|v| label_value(v.trim())).collect()
}

fn label_key(k: &str) -> Result<String, String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty() && name.len() <= 63 && is_label_token(name);
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    if name_ok && prefix_ok {
        Ok(k.to_owned())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

fn label_value(v: &str) -> Result<String, String> {
    if v.is_empty() || (v.len() <= 63 && is_label_token(v)) {
        Ok(v.to_owned())
    } else {
        Err(format!("invalid label value {v:?}"))
    }
}

fn is_label_token(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    s.chars().all(ok)
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// The text a field selector compares for `field` (a dotted path) of
/// `obj`: strings as they are, numbers and booleans as JSON writes them,
/// a missing field empty.
pub fn field_text(obj: &Value, field: &str) -> String {
    match obj.pointer(&format!("/{}", field.replace('.', "/"))) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// A parsed field selector over the fields a kind supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse `metadata.name=x,metadata.namespace!=y`; only fields in
    /// `supported` may be used.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {part:?}: expected field=value or field!=value"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether `get(field)` satisfies every term.
    pub fn matches(&self, get: impl Fn(&str) -> String) -> bool {
        self.0.iter().all(|(f, equal, v)| (get(f) == *v) == *equal)
    }

    /// Whether the selector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[
            ("env", "prod"),
            ("tier", "web"),
            ("drover.io/managed", "true"),
        ]);
        for (sel, want) in [
            ("", true),
            ("env=prod", true),
            ("env==prod,tier=web", true),
            ("env!=prod", false),
            ("env in (prod, staging)", true),
            ("env notin (prod)", false),
            ("missing notin (x)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("drover.io/managed=true", true),
            ("env in (dev),tier=web", false),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
        for bad in ["env in prod", "=x", "a b c=d", "env=in valid"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse(
            "metadata.name=a,metadata.namespace!=b",
            &["metadata.name", "metadata.namespace"],
        )
        .unwrap();
        assert!(f.matches(|k| if k == "metadata.name" {
            "a".into()
        } else {
            "c".into()
        }));
        assert!(
            !f.matches(|_| "a".into())
                || !f.matches(|k| if k == "metadata.name" {
                    "a".into()
                } else {
                    "b".into()
                })
        );
        let e = FieldSelector::parse("spec.x=1", &["metadata.name"]).unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.x");
    }
}
