//! Label selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//! `k notin (a,b)`), field selectors (`=`, `==`, `!=` over the fields the real
//! apiserver supports for each resource) and the namespace scope, combined
//! into the `Filter` that lists and watches apply.

use serde_json::Value;

use super::objects::Resource;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldReq {
    path: String,
    value: String,
    negated: bool,
}

/// Which objects a list or watch sees.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    /// Parse the selectors; Err is the message of a 400 BadRequest.
    pub fn new(
        resource: Resource,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Filter, String> {
        Ok(Filter {
            namespace: namespace.map(str::to_string),
            labels: parse_labels(label_selector.unwrap_or(""))?,
            fields: parse_fields(resource, field_selector.unwrap_or(""))?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.namespace {
            if meta["namespace"].as_str() != Some(ns.as_str()) {
                return false;
            }
        }
        let label = |k: &str| meta["labels"][k].as_str();
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        });
        labels_ok
            && self
                .fields
                .iter()
                .all(|f| (field_value(obj, &f.path) == f.value) != f.negated)
    }
}

/// Split on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_labels(s: &str) -> Result<Vec<LabelReq>, String> {
    split_top_level(s).into_iter().map(parse_label_req).collect()
}

fn parse_label_req(term: &str) -> Result<LabelReq, String> {
    let bad = || format!("unable to parse requirement: invalid label selector term {term:?}");
    let key = |k: &str| {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_string())
        } else {
            Err(bad())
        }
    };
    if let Some(k) = term.strip_prefix('!') {
        return Ok(LabelReq::NotExists(key(k)?));
    }
    if let Some(open) = term.find('(') {
        let inner = term[open + 1..].strip_suffix(')').ok_or_else(bad)?;
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let words: Vec<&str> = term[..open].split_whitespace().collect();
        return match words.as_slice() {
            [k, "in"] => Ok(LabelReq::In(key(k)?, values)),
            [k, "notin"] => Ok(LabelReq::NotIn(key(k)?, values)),
            _ => Err(bad()),
        };
    }
    for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = term.split_once(op) {
            let (k, v) = (key(k)?, v.trim().to_string());
            return Ok(if negated {
                LabelReq::Ne(k, v)
            } else {
                LabelReq::Eq(k, v)
            });
        }
    }
    Ok(LabelReq::Exists(key(term)?))
}

/// Field labels the real apiserver accepts for each resource.
fn supported_fields(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Pods => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.hostNetwork",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Resource::Nodes => &["metadata.name", "spec.unschedulable"],
        Resource::EndpointSlices => &["metadata.name", "metadata.namespace"],
        Resource::Events => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "reason",
            "source",
            "type",
        ],
    }
}

fn parse_fields(resource: Resource, s: &str) -> Result<Vec<FieldReq>, String> {
    split_top_level(s)
        .into_iter()
        .map(|term| {
            let (path, value, negated) = [("!=", true), ("==", false), ("=", false)]
                .into_iter()
                .find_map(|(op, neg)| term.split_once(op).map(|(p, v)| (p.trim(), v.trim(), neg)))
                .ok_or_else(|| format!("invalid selector: '{term}'; can't understand '{term}'"))?;
            if !supported_fields(resource).contains(&path) {
                return Err(format!("field label not supported: {path}"));
            }
            Ok(FieldReq {
                path: path.to_string(),
                value: value.to_string(),
                negated,
            })
        })
        .collect()
}

/// The value a field selector compares: strings as is, booleans as
/// "true"/"false" (absent booleans are "false"), other absent fields "".
fn field_value(obj: &Value, path: &str) -> String {
    let v = path.split('.').fold(obj, |v, seg| &v[seg]);
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null if matches!(path, "spec.hostNetwork" | "spec.unschedulable") => "false".into(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
