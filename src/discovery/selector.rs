//! Kubernetes label selectors (`--allow-pods`), parsed strictly and matched
//! locally: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`,
//! comma-separated and all required. Pure.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed selector; matches when every requirement holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    text: String,
    reqs: Vec<Requirement>,
}

pub fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    name_ok && prefix_ok
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas that are not inside `( )`.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
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
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_req(part: &str) -> Result<Requirement, String> {
    let p = part.trim();
    let key = |k: &str| -> Result<String, String> {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_string())
        } else {
            Err(format!("'{k}' is not a valid label key"))
        }
    };
    let value = |v: &str| -> Result<String, String> {
        let v = v.trim();
        if valid_value(v) {
            Ok(v.to_string())
        } else {
            Err(format!("'{v}' is not a valid label value"))
        }
    };
    if p.is_empty() {
        return Err("empty requirement".into());
    }
    if let Some(k) = p.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(k)?));
    }
    if let Some((k, v)) = p.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((k, rest)) = p.split_once(op) {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("'{p}': the values of {} go in parentheses", op.trim()))?;
            let values = inner.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
            return Ok(if negate {
                Requirement::NotIn(key(k)?, values)
            } else {
                Requirement::In(key(k)?, values)
            });
        }
    }
    Ok(Requirement::Exists(key(p)?))
}

impl Selector {
    /// Parses a selector; an empty one is refused (it would allow every pod).
    pub fn parse(text: &str) -> Result<Selector, String> {
        let what = |e: String| format!("allow-pods selector '{text}': {e}");
        if text.trim().is_empty() {
            return Err(what(
                "empty (it would allow every pod on the node); use --allow-namespaces for whole namespaces".into(),
            ));
        }
        let reqs = split_top(text)
            .map_err(what)?
            .into_iter()
            .map(parse_req)
            .collect::<Result<Vec<_>, _>>()
            .map_err(what)?;
        Ok(Selector {
            text: text.trim().to_string(),
            reqs,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let l = labels(&[("apiserver-guard.io/allow", "true"), ("app", "coredns"), ("tier", "")]);
        let m = |s: &str| Selector::parse(s).unwrap().matches(&l);
        assert!(m("apiserver-guard.io/allow=true"));
        assert!(m("apiserver-guard.io/allow==true"));
        assert!(!m("apiserver-guard.io/allow=false"));
        assert!(m("app!=web"));
        assert!(!m("app!=coredns"));
        assert!(m("missing!=x"), "!= holds when the label is absent");
        assert!(m("app"));
        assert!(m("tier"), "an empty value still exists");
        assert!(!m("!app"));
        assert!(m("!missing"));
        assert!(m("app in (web, coredns)"));
        assert!(!m("app in (web)"));
        assert!(!m("missing in (x)"));
        assert!(m("app notin (web)"));
        assert!(m("missing notin (x)"));
        assert!(m("app=coredns,apiserver-guard.io/allow=true"));
        assert!(!m("app=coredns,apiserver-guard.io/allow=false"));
        assert!(m("app in (a,coredns),tier"));
    }

    #[test]
    fn bad_selectors_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("app=", "ok"),
            ("=x", "label key"),
            ("app=a b", "label value"),
            ("app in web", "parentheses"),
            ("app in (a", "unbalanced"),
            ("a,,b", "empty requirement"),
            ("UPPER.example/x=1", "label key"),
            ("-app=1", "label key"),
        ] {
            let r = Selector::parse(bad);
            if why == "ok" {
                assert!(r.is_ok(), "{bad}: {r:?}");
                continue;
            }
            let e = r.unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("allow-pods selector"), "{e}");
        }
    }
}
