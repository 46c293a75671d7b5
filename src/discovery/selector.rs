//! Kubernetes label selectors (`--allow-pods`), parsed strictly and matched
//! locally: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`,
//! comma-separated and all required. An `--allow-pods` entry is always scoped
//! to one namespace the operator names (`NAMESPACE/SELECTOR`): a label alone
//! is something anyone who may create a pod anywhere can set. Pure.

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
        let what = |e: String| format!("selector '{text}': {e}");
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

/// A namespace name (a DNS label: lower-case letters, digits and `-`, at most 63).
pub fn valid_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A first part of an entry that was meant as a namespace (one word of
/// letters, digits, `-` and `_`), though it may not be a valid one; a label
/// prefix has a dot and a selector has operators or spaces.
fn looks_like_a_namespace(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// One `--allow-pods` entry: pods of `namespace` whose labels match `selector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedSelector {
    pub namespace: String,
    pub selector: Selector,
}

impl ScopedSelector {
    /// Parses `NAMESPACE/SELECTOR`: the text before the first `/` is the
    /// namespace. Refused, each with what to write instead (messages start
    /// with `selector '...'`; the caller puts where the entry came from first):
    /// - an unscoped selector (`app=x`, or `apiserver-guard.io/allow=true`
    ///   whose first part is a label-key prefix, with a dot no namespace has):
    ///   the scoped form `monitoring/...` is suggested;
    /// - an empty or `*` namespace part (`/app=x`, `*/app=x`): there is no
    ///   "every namespace"; the entry must name a real namespace;
    /// - any other one-word first part that is no namespace name (`Monitoring/app=x`).
    pub fn parse(text: &str) -> Result<ScopedSelector, String> {
        let text = text.trim();
        let why =
            "a pod label counts only in a namespace you name (anyone who may create a pod anywhere can set a label)";
        let whole = "or use --allow-namespaces for whole namespaces";
        let (namespace, selector) = match text.split_once('/') {
            Some((ns, sel)) if valid_namespace(ns) => (ns, sel),
            Some((ns, sel)) if ns.trim().is_empty() || ns.trim() == "*" => {
                let sel = if sel.trim().is_empty() { "app=x" } else { sel.trim() };
                let part = if ns.trim().is_empty() {
                    "has an empty namespace part".to_string()
                } else {
                    "names the namespace '*'".to_string()
                };
                return Err(format!(
                    "selector '{text}' {part}: NAMESPACE must be a real namespace name, one per entry; \
                     there is no wildcard for every namespace, because {why}; \
                     write e.g. monitoring/{sel} for each namespace you trust, {whole}"
                ));
            }
            Some((ns, _)) if looks_like_a_namespace(ns) => {
                return Err(format!(
                    "selector '{text}': '{ns}' is not a namespace name (lower-case letters, digits and '-', \
                     at most 63, starting and ending with a letter or digit); write NAMESPACE/SELECTOR with a real namespace name, {whole}"
                ));
            }
            _ => {
                let example = if text.is_empty() { "app=x" } else { text };
                return Err(format!(
                    "selector '{text}' names no namespace: {why}; write NAMESPACE/SELECTOR, \
                     e.g. monitoring/{example}, {whole}"
                ));
            }
        };
        Ok(ScopedSelector {
            namespace: namespace.to_string(),
            selector: Selector::parse(selector)
                .map_err(|e| e.replacen("selector '", &format!("selector '{namespace}/"), 1))?,
        })
    }

    /// Whether a pod of `namespace` with these labels is allowed by this entry.
    pub fn matches(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace && self.selector.matches(labels)
    }

    /// The entry as the operator wrote it (normalised: `NAMESPACE/SELECTOR`).
    pub fn text(&self) -> String {
        format!("{}/{}", self.namespace, self.selector.as_str())
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
            assert!(e.starts_with(&format!("selector '{bad}'")), "{e}");
        }
    }

    #[test]
    fn scoped_selectors_match_only_in_their_namespace() {
        let l = labels(&[("apiserver-guard.io/allow", "true"), ("app", "prom")]);
        let s = ScopedSelector::parse("monitoring/apiserver-guard.io/allow=true").unwrap();
        assert_eq!(s.namespace, "monitoring");
        assert_eq!(s.selector.as_str(), "apiserver-guard.io/allow=true");
        assert_eq!(s.text(), "monitoring/apiserver-guard.io/allow=true");
        assert!(s.matches("monitoring", &l));
        assert!(!s.matches("default", &l), "the same label elsewhere counts for nothing");
        assert!(!s.matches("monitoring2", &l));
        assert!(!s.matches("monitoring", &labels(&[("app", "prom")])));
        let s = ScopedSelector::parse(" monitoring/app=prom,tier in (a, b) ").unwrap();
        assert_eq!(s.text(), "monitoring/app=prom,tier in (a, b)");
        assert!(!s.matches("monitoring", &l), "tier is required");
        assert!(ScopedSelector::parse("kube-system/k8s-app")
            .unwrap()
            .matches("kube-system", &labels(&[("k8s-app", "kube-dns")])));
    }

    #[test]
    fn unscoped_or_bad_scoped_selectors_are_refused_with_the_scoped_form() {
        for (bad, example) in [
            (
                "apiserver-guard.io/allow=true",
                "monitoring/apiserver-guard.io/allow=true",
            ),
            ("app=prom", "monitoring/app=prom"),
            ("app in (a,b.c)", "monitoring/app in (a,b.c)"),
            ("app in (a,b/c)", "monitoring/app in (a,b/c)"),
            ("", "monitoring/app=x"),
            ("a.b/app=x", "monitoring/a.b/app=x"),
        ] {
            let e = ScopedSelector::parse(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("selector '{bad}' names no namespace")),
                "{bad:?}: {e}"
            );
            assert!(
                e.contains("NAMESPACE/SELECTOR") && e.contains(&format!("e.g. {example},")),
                "{e}"
            );
        }
        // A first part that is meant as a namespace but is none: no made-up form is suggested.
        for (bad, ns) in [
            ("Monitoring/app=x", "Monitoring"),
            ("-ns/app=x", "-ns"),
            ("kube_system/app", "kube_system"),
        ] {
            let e = ScopedSelector::parse(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("selector '{bad}': '{ns}' is not a namespace name")),
                "{bad:?}: {e}"
            );
            assert!(!e.contains("monitoring/"), "{e}");
        }
    }

    #[test]
    fn an_empty_or_star_namespace_is_refused_saying_a_real_one_is_needed() {
        for (bad, part, example) in [
            (
                "/apiserver-guard.io/allow=true",
                "has an empty namespace part",
                "monitoring/apiserver-guard.io/allow=true",
            ),
            (" /app=x", "has an empty namespace part", "monitoring/app=x"),
            ("*/app=x", "names the namespace '*'", "monitoring/app=x"),
            ("*/", "names the namespace '*'", "monitoring/app=x"),
        ] {
            let e = ScopedSelector::parse(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("selector '{}' {part}", bad.trim())),
                "{bad:?}: {e}"
            );
            assert!(
                e.contains("NAMESPACE must be a real namespace name")
                    && e.contains("no wildcard")
                    && e.contains("anyone who may create a pod anywhere can set a label")
                    && e.contains(&format!("e.g. {example} for each namespace")),
                "{e}"
            );
            // Never the broken forms monitoring//... or monitoring/*/...
            assert!(!e.contains("monitoring//") && !e.contains("monitoring/*"), "{e}");
        }
    }

    #[test]
    fn scoped_entries_with_bad_selectors_say_which_entry_and_why() {
        // A scoped entry with a bad or empty selector says which entry and why.
        for empty in ["monitoring/", "monitoring/  "] {
            let e = ScopedSelector::parse(empty).unwrap_err();
            assert!(e.contains("'monitoring/") && e.contains("empty"), "{e}");
        }
        let e = ScopedSelector::parse("monitoring/app in web").unwrap_err();
        assert!(
            e.contains("'monitoring/app in web'") && e.contains("parentheses"),
            "{e}"
        );
    }
}
