//! The comparable shape of our nftables table: sets with their elements,
//! chains with their hook, and each rule's signature (comment, sets it uses,
//! verdict, counter). Built from the desired model by `render_nft` and from
//! `nft -j list table inet apiserver_guard` here, so drift is a plain diff.

use ipnet::IpNet;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftState {
    pub sets: BTreeMap<String, NftSet>,
    pub chains: BTreeMap<String, NftChain>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftSet {
    /// Key type as nft prints it, concatenations joined with " . ".
    pub key_type: String,
    pub interval: bool,
    /// Canonical element strings: `10.0.0.0/16` (interval sets), `192.0.2.1`, `192.0.2.1 . 443`.
    pub elements: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftChain {
    /// `Some((type, hook, priority, policy))` for base chains.
    pub base: Option<BaseChain>,
    pub rules: Vec<RuleSig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: String,
    pub hook: String,
    pub priority: i64,
    pub policy: String,
}

/// What identifies a rule for drift purposes: enough to notice a rule that
/// was deleted, replaced, re-ordered or pointed at another set, without
/// re-implementing nft's expression printer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleSig {
    pub comment: String,
    /// Sets referenced, without the `@`.
    pub sets: BTreeSet<String>,
    /// e.g. `reject tcp reset`, `reject icmpx admin-prohibited`, `drop`, `return`, `jump guard`.
    pub verdict: String,
    pub counter: bool,
}

/// Counter totals of our rules, per rule comment.
pub type Counters = BTreeMap<String, (u64, u64)>;

/// Parses `nft -j list table ...` output into our shape (plus the rule counters).
pub fn parse_table_json(json: &str) -> Result<(NftState, Counters), String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft printed JSON we cannot read: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft JSON has no \"nftables\" array")?;
    let mut state = NftState::default();
    let mut counters = Counters::new();
    for item in items {
        if let Some(set) = item.get("set") {
            let name = str_field(set, "name")?;
            state.sets.insert(name, parse_set(set));
        } else if let Some(chain) = item.get("chain") {
            let name = str_field(chain, "name")?;
            let base = chain.get("hook").map(|hook| BaseChain {
                chain_type: chain.get("type").and_then(Value::as_str).unwrap_or("").to_string(),
                hook: hook.as_str().unwrap_or("").to_string(),
                priority: chain.get("prio").and_then(Value::as_i64).unwrap_or(i64::MIN),
                policy: chain
                    .get("policy")
                    .and_then(Value::as_str)
                    .unwrap_or("accept")
                    .to_string(),
            });
            state.chains.entry(name).or_default().base = base;
        } else if let Some(rule) = item.get("rule") {
            let chain = str_field(rule, "chain")?;
            let (sig, count) = parse_rule(rule);
            if let Some(c) = count {
                let entry = counters.entry(sig.comment.clone()).or_default();
                entry.0 += c.0;
                entry.1 += c.1;
            }
            state.chains.entry(chain).or_default().rules.push(sig);
        }
    }
    Ok((state, counters))
}

fn str_field(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("nft JSON object without \"{key}\": {v}"))
}

fn parse_set(set: &Value) -> NftSet {
    let key_type = match set.get("type") {
        Some(Value::Array(parts)) => parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" . "),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let interval = set
        .get("flags")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == "interval"));
    let elements = set
        .get("elem")
        .and_then(Value::as_array)
        .map(|elems| elems.iter().map(|e| canonical_element(e, interval)).collect())
        .unwrap_or_default();
    NftSet {
        key_type,
        interval,
        elements,
    }
}

/// One set element in the same spelling `render_nft` uses.
pub fn canonical_element(e: &Value, interval: bool) -> String {
    match e {
        Value::String(s) => match s.parse::<IpAddr>() {
            Ok(ip) if interval => IpNet::from(ip).to_string(),
            Ok(ip) => ip.to_string(),
            Err(_) => s.clone(),
        },
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p
                    .get("addr")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse::<IpAddr>().ok());
                let len = p.get("len").and_then(Value::as_u64);
                match (addr, len) {
                    (Some(a), Some(l)) => match IpNet::new(a, l as u8) {
                        Ok(net) => net.to_string(),
                        Err(_) => format!("{a}/{l}"),
                    },
                    _ => e.to_string(),
                }
            } else if let Some(Value::Array(parts)) = o.get("concat") {
                parts
                    .iter()
                    .map(|p| canonical_element(p, false))
                    .collect::<Vec<_>>()
                    .join(" . ")
            } else if let Some(inner) = o.get("elem").and_then(|el| el.get("val")) {
                canonical_element(inner, interval)
            } else if let Some(Value::Array(r)) = o.get("range") {
                r.iter()
                    .map(|p| canonical_element(p, false))
                    .collect::<Vec<_>>()
                    .join("-")
            } else {
                e.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn parse_rule(rule: &Value) -> (RuleSig, Option<(u64, u64)>) {
    let comment = rule.get("comment").and_then(Value::as_str).unwrap_or("").to_string();
    let mut sig = RuleSig {
        comment,
        sets: BTreeSet::new(),
        verdict: String::new(),
        counter: false,
    };
    let mut count = None;
    let stmts = rule.get("expr").and_then(Value::as_array).cloned().unwrap_or_default();
    for stmt in &stmts {
        let Some(obj) = stmt.as_object() else { continue };
        for (key, val) in obj {
            match key.as_str() {
                "match" => collect_set_refs(val, &mut sig.sets),
                "counter" => {
                    sig.counter = true;
                    let n = |k| val.get(k).and_then(Value::as_u64).unwrap_or(0);
                    count = Some((n("packets"), n("bytes")));
                }
                "reject" => {
                    let kind = val.get("type").and_then(Value::as_str).unwrap_or("");
                    let detail = val.get("expr").and_then(Value::as_str).unwrap_or("");
                    sig.verdict = format!("reject {kind} {detail}").trim_end().to_string();
                }
                "jump" | "goto" => {
                    let target = val.get("target").and_then(Value::as_str).unwrap_or("");
                    sig.verdict = format!("{key} {target}");
                }
                "accept" | "drop" | "return" | "continue" | "queue" => sig.verdict = key.clone(),
                _ => {}
            }
        }
    }
    (sig, count)
}

fn collect_set_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix('@') {
                out.insert(name.to_string());
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_set_refs(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_set_refs(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed output of nft 1.0.6 for a table like ours.
    const SAMPLE: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "apiserver_guard", "handle": 3}},
      {"set": {"family": "inet", "name": "sources_v4", "table": "apiserver_guard", "type": "ipv4_addr", "handle": 4, "flags": ["interval"],
               "elem": [{"prefix": {"addr": "10.0.0.0", "len": 16}}, "10.3.0.1"]}},
      {"set": {"family": "inet", "name": "api_port_v4", "table": "apiserver_guard", "type": ["ipv4_addr", "inet_service"], "handle": 6,
               "elem": [{"concat": ["192.168.1.1", 443]}]}},
      {"set": {"family": "inet", "name": "sources_v6", "table": "apiserver_guard", "type": "ipv6_addr", "handle": 8, "flags": ["interval"],
               "elem": [{"prefix": {"addr": "fd00:0::", "len": 64}}]}},
      {"chain": {"family": "inet", "table": "apiserver_guard", "name": "guard", "handle": 1}},
      {"chain": {"family": "inet", "table": "apiserver_guard", "name": "forward", "handle": 3, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "apiserver_guard", "chain": "guard", "handle": 10, "comment": "block-tcp-port-v4", "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@sources_v4"}},
        {"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"payload": {"protocol": "tcp", "field": "dport"}}]}, "right": "@api_port_v4"}},
        {"counter": {"packets": 7, "bytes": 420}}, {"reject": {"type": "tcp reset"}}]}},
      {"rule": {"family": "inet", "table": "apiserver_guard", "chain": "guard", "handle": 12, "comment": "block-all-v4", "expr": [
        {"counter": {"packets": 1, "bytes": 84}}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]}},
      {"rule": {"family": "inet", "table": "apiserver_guard", "chain": "forward", "handle": 14, "comment": "enter-guard", "expr": [{"jump": {"target": "guard"}}]}}
    ]}"#;

    #[test]
    fn sets_are_read_with_canonical_elements() {
        let (s, _) = parse_table_json(SAMPLE).unwrap();
        let src = &s.sets["sources_v4"];
        assert!(src.interval);
        assert_eq!(src.key_type, "ipv4_addr");
        assert_eq!(
            src.elements,
            ["10.0.0.0/16", "10.3.0.1/32"].iter().map(|x| x.to_string()).collect()
        );
        assert_eq!(s.sets["api_port_v4"].key_type, "ipv4_addr . inet_service");
        assert!(s.sets["api_port_v4"].elements.contains("192.168.1.1 . 443"));
        assert!(
            s.sets["sources_v6"].elements.contains("fd00::/64"),
            "v6 spelled canonically"
        );
    }

    #[test]
    fn chains_and_rule_signatures_are_read() {
        let (s, counters) = parse_table_json(SAMPLE).unwrap();
        let fwd = &s.chains["forward"];
        assert_eq!(fwd.base.as_ref().unwrap().hook, "forward");
        assert_eq!(fwd.rules[0].verdict, "jump guard");
        let guard = &s.chains["guard"];
        assert!(guard.base.is_none());
        assert_eq!(guard.rules.len(), 2);
        assert_eq!(guard.rules[0].verdict, "reject tcp reset");
        assert_eq!(
            guard.rules[0].sets,
            ["api_port_v4", "sources_v4"].iter().map(|x| x.to_string()).collect()
        );
        assert!(guard.rules[0].counter);
        assert_eq!(guard.rules[1].verdict, "reject icmpx admin-prohibited");
        assert_eq!(counters["block-tcp-port-v4"], (7, 420));
        assert_eq!(counters["block-all-v4"], (1, 84));
    }

    #[test]
    fn foreign_verdicts_and_elements_are_kept_visible() {
        let json = r#"{"nftables": [{"set": {"name": "s", "type": "ipv4_addr", "flags": ["interval"], "elem": [{"range": ["10.0.0.1", "10.0.0.9"]}]}},
            {"rule": {"chain": "guard", "expr": [{"accept": null}]}}]}"#;
        let (s, _) = parse_table_json(json).unwrap();
        assert!(s.sets["s"].elements.contains("10.0.0.1-10.0.0.9"));
        assert_eq!(s.chains["guard"].rules[0].verdict, "accept");
        assert_eq!(s.chains["guard"].rules[0].comment, "");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_table_json("not json").is_err());
        assert!(parse_table_json("{}").is_err());
        assert!(parse_table_json(r#"{"nftables": [{"set": {}}]}"#).is_err());
    }
}
