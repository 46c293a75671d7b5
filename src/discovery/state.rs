//! What discovery knows, as plain data, and how it joins the configured
//! policy: discovered apiservers and pod CIDRs add to the configured ones,
//! allowed pod IPs become exempt sources. Also the cache file that lets a
//! restarted agent enforce the last known state before the apiserver
//! answers. Pure, but for `load_cache`/`save_cache`.

use crate::core::address::{parse_cidr, parse_endpoint, Endpoint};
use crate::core::policy::Policy;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

/// Which parts of the policy come from the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    pub apiservers: bool,
    pub pod_cidrs: bool,
    pub allow_list: bool,
}

impl Wants {
    pub fn any(&self) -> bool {
        self.apiservers || self.pod_cidrs || self.allow_list
    }
}

/// The discovered facts. Each map is replaced whole on a re-list and
/// edited per event otherwise; nothing is ever dropped because a source failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Endpoints per `kubernetes` EndpointSlice name.
    pub slices: BTreeMap<String, Vec<Endpoint>>,
    /// The kubeconfig's `server:`, resolved (loopback left out).
    pub kubeconfig_server: Vec<Endpoint>,
    /// This node's pod CIDRs (None: the node was not read yet).
    pub pod_cidrs: Option<Vec<IpNet>>,
    /// IPs of the allowed pods on this node, per `namespace/name`.
    pub allowed: BTreeMap<String, Vec<IpAddr>>,
}

impl Discovered {
    pub fn apiservers(&self) -> BTreeSet<Endpoint> {
        self.slices
            .values()
            .flatten()
            .chain(self.kubeconfig_server.iter())
            .copied()
            .collect()
    }

    pub fn allowed_ips(&self) -> BTreeSet<IpAddr> {
        self.allowed.values().flatten().copied().collect()
    }

    /// What is still missing before the policy can block anything.
    pub fn missing(&self, wants: Wants, base: &Policy) -> Option<&'static str> {
        if wants.apiservers && base.apiservers.is_empty() && self.apiservers().is_empty() {
            return Some("no apiserver endpoint discovered yet");
        }
        if wants.pod_cidrs && base.sources.is_empty() && self.pod_cidrs.as_ref().is_none_or(|c| c.is_empty()) {
            return Some("the node's pod CIDRs are not known yet");
        }
        None
    }
}

/// The policy to enforce: the configured one plus what was discovered.
pub fn effective_policy(base: &Policy, wants: Wants, d: &Discovered) -> Policy {
    let mut p = base.clone();
    if wants.apiservers {
        let mut all: BTreeSet<Endpoint> = p.apiservers.iter().copied().collect();
        all.extend(d.apiservers());
        p.apiservers = all.into_iter().collect();
    }
    if wants.pod_cidrs {
        for net in d.pod_cidrs.iter().flatten() {
            if !p.sources.contains(net) {
                p.sources.push(*net);
            }
        }
    }
    if wants.allow_list {
        p.exempt.extend(d.allowed_ips().into_iter().map(IpNet::from));
        p.dynamic_exempt = true;
    }
    p
}

/// What changed between two policies, for the log: `+`/`-` apiserver
/// endpoints, container CIDRs and exempt sources.
pub fn change_summary(old: &Policy, new: &Policy) -> String {
    fn diff<T: Ord + Clone + std::fmt::Display>(what: &str, a: &[T], b: &[T]) -> Option<String> {
        let a: BTreeSet<T> = a.iter().cloned().collect();
        let b: BTreeSet<T> = b.iter().cloned().collect();
        let mut parts: Vec<String> = b.difference(&a).map(|x| format!("+{x}")).collect();
        parts.extend(a.difference(&b).map(|x| format!("-{x}")));
        (!parts.is_empty()).then(|| format!("{what} {}", parts.join(" ")))
    }
    let parts: Vec<String> = [
        diff("apiservers", &old.apiservers, &new.apiservers),
        diff("container CIDRs", &old.sources, &new.sources),
        diff("exempt", &old.exempt, &new.exempt),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "no address change".into()
    } else {
        parts.join("; ")
    }
}

/// The cache file's shape (strings, so it is readable and diffable).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct CacheFile {
    apiservers: Vec<String>,
    pod_cidrs: Vec<String>,
    allowed: BTreeMap<String, Vec<String>>,
}

/// Serialises what is worth keeping across restarts.
pub fn cache_text(d: &Discovered) -> String {
    let c = CacheFile {
        apiservers: d.apiservers().iter().map(|e| e.to_string()).collect(),
        pod_cidrs: d.pod_cidrs.iter().flatten().map(|n| n.to_string()).collect(),
        allowed: d
            .allowed
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|ip| ip.to_string()).collect()))
            .collect(),
    };
    serde_json::to_string_pretty(&c).unwrap_or_default() + "\n"
}

/// Parses a cache file; anything malformed is an error (the caller ignores the cache then).
pub fn parse_cache(text: &str) -> Result<Discovered, String> {
    let c: CacheFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let apis = c
        .apiservers
        .iter()
        .map(|s| parse_endpoint(s))
        .collect::<Result<Vec<_>, _>>()?;
    let cidrs = c
        .pod_cidrs
        .iter()
        .map(|s| parse_cidr("pod CIDR", s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut allowed = BTreeMap::new();
    for (k, v) in c.allowed {
        let ips = v
            .iter()
            .map(|s| s.parse::<IpAddr>().map_err(|e| format!("{s}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        allowed.insert(k, ips);
    }
    Ok(Discovered {
        slices: [("cached".to_string(), apis)].into(),
        kubeconfig_server: Vec::new(),
        pod_cidrs: (!cidrs.is_empty()).then_some(cidrs),
        allowed,
    })
}

/// Reads the cache; a missing or malformed file gives None (logged by the caller).
pub fn load_cache(path: &Path) -> Result<Option<Discovered>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_cache(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the cache atomically (temp file + rename in the same directory).
pub fn save_cache(path: &Path, d: &Discovered) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, cache_text(d))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::tests::policy;
    use crate::core::policy::{Action, Mode};

    fn ep(s: &str) -> Endpoint {
        parse_endpoint(s).unwrap()
    }

    fn discovered() -> Discovered {
        Discovered {
            slices: [(
                "kubernetes".into(),
                vec![ep("192.168.0.10:6443"), ep("192.168.0.11:6443")],
            )]
            .into(),
            kubeconfig_server: vec![ep("192.168.0.5:6443")],
            pod_cidrs: Some(vec!["10.244.1.0/24".parse().unwrap()]),
            allowed: [("kube-system/coredns-1".into(), vec!["10.244.1.3".parse().unwrap()])].into(),
        }
    }

    #[test]
    fn discovered_parts_join_the_configured_ones() {
        let base = policy(
            &["10.0.0.0/16"],
            &["10.0.9.0/24"],
            &["192.168.0.10:6443"],
            Mode::Both,
            Action::Reject,
        );
        let all = Wants {
            apiservers: true,
            pod_cidrs: true,
            allow_list: true,
        };
        let p = effective_policy(&base, all, &discovered());
        let apis: Vec<String> = p.apiservers.iter().map(|e| e.to_string()).collect();
        assert_eq!(apis, vec!["192.168.0.5:6443", "192.168.0.10:6443", "192.168.0.11:6443"]);
        assert_eq!(p.sources.len(), 2);
        assert_eq!(
            p.exempt,
            vec!["10.0.9.0/24".parse().unwrap(), "10.244.1.3/32".parse().unwrap()]
        );
        assert!(p.dynamic_exempt);
        // Parts not wanted are left alone.
        let p = effective_policy(&base, Wants::default(), &discovered());
        assert_eq!(p, base);
    }

    #[test]
    fn change_summary_lists_additions_and_removals() {
        let a = policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:6443"],
            Mode::Both,
            Action::Reject,
        );
        let b = policy(
            &["10.0.0.0/16"],
            &["10.0.1.3/32"],
            &["192.168.0.11:6443"],
            Mode::Both,
            Action::Reject,
        );
        assert_eq!(
            change_summary(&a, &b),
            "apiservers +192.168.0.11:6443 -192.168.0.10:6443; exempt +10.0.1.3/32"
        );
        assert_eq!(change_summary(&a, &a), "no address change");
    }

    #[test]
    fn missing_says_what_blocks_progress() {
        let base = policy(&[], &[], &[], Mode::Both, Action::Reject);
        let w = Wants {
            apiservers: true,
            pod_cidrs: true,
            allow_list: false,
        };
        assert!(Discovered::default().missing(w, &base).unwrap().contains("apiserver"));
        let mut d = discovered();
        d.pod_cidrs = None;
        assert!(d.missing(w, &base).unwrap().contains("pod CIDRs"));
        assert_eq!(discovered().missing(w, &base), None);
    }

    #[test]
    fn cache_round_trips_and_rejects_garbage() {
        let d = discovered();
        let back = parse_cache(&cache_text(&d)).unwrap();
        assert_eq!(back.apiservers(), d.apiservers());
        assert_eq!(back.pod_cidrs, d.pod_cidrs);
        assert_eq!(back.allowed, d.allowed);
        assert!(parse_cache("{").is_err());
        assert!(parse_cache(r#"{"apiservers":["nope"],"pod_cidrs":[],"allowed":{}}"#).is_err());
    }

    #[test]
    fn cache_is_written_atomically_and_read_back() {
        let dir = std::env::temp_dir().join(format!("agt-cache-{}", std::process::id()));
        let path = dir.join("sub/discovered.json");
        assert_eq!(load_cache(&path), Ok(None));
        save_cache(&path, &discovered()).unwrap();
        assert_eq!(
            load_cache(&path).unwrap().unwrap().apiservers(),
            discovered().apiservers()
        );
        assert!(!path.with_extension("tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
