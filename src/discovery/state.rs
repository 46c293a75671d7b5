//! What discovery knows, as plain data, and how it joins the configured
//! policy: discovered apiservers and pod CIDRs add to the configured ones,
//! allowed pod IPs become exempt sources (`allowed_ips_of`: an allowed pod's
//! IP stops being exempt as soon as the pod ends or another pod of the node
//! shows up with it). Also the cache file that lets a
//! restarted agent enforce the last known state before the apiserver
//! answers. Pure, but for `load_cache`/`save_cache`.

use super::extract::PodFacts;
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

/// The exempt IPs per allowed pod (`namespace/name`), from the facts of
/// every pod of the node. An IP is exempt only for the pod that holds it
/// now: of the pods that show it, the one created last (a pod without a
/// creation time counts as the newest; two equally new ones hold it for
/// neither). It is exempt when that pod is allowed and has not ended
/// (terminating, Succeeded or Failed). So an allowed pod loses its
/// exemption the moment it starts terminating, and its IP, once reused by
/// another pod, is never exempt on its behalf, even while the old object
/// lingers. Pods without an exempt IP are left out.
pub fn allowed_ips_of<'a>(pods: impl IntoIterator<Item = (&'a String, &'a PodFacts)>) -> BTreeMap<String, Vec<IpAddr>> {
    let pods: Vec<(&String, &PodFacts)> = pods.into_iter().collect();
    let newest_first = |f: &PodFacts| (f.created.is_none(), f.created.clone());
    let mut holders: BTreeMap<IpAddr, Vec<(&String, &PodFacts)>> = BTreeMap::new();
    for (key, facts) in &pods {
        for ip in &facts.ips {
            holders.entry(*ip).or_default().push((key, facts));
        }
    }
    let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (ip, mut claims) in holders {
        claims.sort_by_key(|(_, f)| std::cmp::Reverse(newest_first(f)));
        let (key, holder) = claims[0];
        let tie = claims
            .get(1)
            .is_some_and(|(_, f)| newest_first(f) == newest_first(holder));
        if holder.allowed && !holder.ended && !tie {
            out.entry(key.clone()).or_default().push(ip);
        }
    }
    out
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

    /// A pod of the node: IPs, allowed, ended, created at second `t` (None: no timestamp).
    fn facts(ips: &[&str], allowed: bool, ended: bool, t: Option<i64>) -> PodFacts {
        PodFacts {
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            allowed,
            ended,
            created: t.map(|t| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(t).unwrap(),
                )
            }),
        }
    }

    fn exempt(pods: &[(&str, PodFacts)]) -> Vec<String> {
        let map: BTreeMap<String, PodFacts> = pods.iter().map(|(k, f)| (k.to_string(), f.clone())).collect();
        allowed_ips_of(&map)
            .into_iter()
            .flat_map(|(k, ips)| ips.into_iter().map(move |ip| format!("{k}={ip}")))
            .collect()
    }

    #[test]
    fn an_allowed_pod_is_exempt_while_it_alone_holds_its_ip_and_lives() {
        const A: &str = "10.0.1.3";
        // Alone, alive: exempt (every IP of a dual-stack pod).
        assert_eq!(
            exempt(&[("mon/prom", facts(&[A, "fd00::3"], true, false, Some(10)))]),
            ["mon/prom=10.0.1.3", "mon/prom=fd00::3"]
        );
        // Not allowed, ended (terminating / Succeeded / Failed) or without an IP: nothing.
        assert!(exempt(&[("default/web", facts(&[A], false, false, Some(10)))]).is_empty());
        assert!(exempt(&[("mon/prom", facts(&[A], true, true, Some(10)))]).is_empty());
        assert!(exempt(&[("mon/prom", facts(&[], true, false, Some(10)))]).is_empty());
        // The IP reused by a newer pod that is not allowed: the newest wins, not exempt,
        // whether the old object still says Running or is terminating.
        for old_ended in [false, true] {
            let pods = [
                ("mon/prom", facts(&[A], true, old_ended, Some(10))),
                ("default/web", facts(&[A], false, false, Some(11))),
            ];
            assert!(exempt(&pods).is_empty(), "old pod ended: {old_ended}");
        }
        // ... and a newer pod that has already ended still holds it (the old one's sandbox is gone).
        let pods = [
            ("mon/prom", facts(&[A], true, false, Some(10))),
            ("default/job", facts(&[A], false, true, Some(11))),
        ];
        assert!(exempt(&pods).is_empty());
        // A newer allowed pod that got the IP of an older, lingering pod: it holds it.
        let pods = [
            ("default/web", facts(&[A], false, false, Some(10))),
            ("mon/prom", facts(&[A], true, false, Some(11))),
        ];
        assert_eq!(exempt(&pods), ["mon/prom=10.0.1.3"]);
        // Two allowed pods, the newer one terminating: not exempt (it holds the IP and is going).
        let pods = [
            ("mon/a", facts(&[A], true, false, Some(10))),
            ("mon/b", facts(&[A], true, true, Some(11))),
        ];
        assert!(exempt(&pods).is_empty());
        // Equally new: nobody can tell who holds it, so it is not exempt (either order).
        for (x, y) in [(true, false), (false, true)] {
            let pods = [
                ("mon/a", facts(&[A], x, false, Some(10))),
                ("mon/b", facts(&[A], y, false, Some(10))),
            ];
            assert!(exempt(&pods).is_empty(), "{x} {y}");
        }
        // Without a creation time a pod counts as the newest (the safe side for a pod
        // that is not allowed; an allowed one keeps its IP only if it is the only such).
        let pods = [
            ("mon/prom", facts(&[A], true, false, Some(10))),
            ("default/web", facts(&[A], false, false, None)),
        ];
        assert!(exempt(&pods).is_empty());
        let pods = [
            ("default/web", facts(&[A], false, false, Some(10))),
            ("mon/prom", facts(&[A], true, false, None)),
        ];
        assert_eq!(exempt(&pods), ["mon/prom=10.0.1.3"]);
        // Per IP: a dual-stack allowed pod whose IPv4 address was reused keeps its IPv6 one.
        let pods = [
            ("mon/prom", facts(&[A, "fd00::3"], true, false, Some(10))),
            ("default/web", facts(&[A], false, false, Some(12))),
            ("default/other", facts(&["10.0.1.9"], false, false, Some(5))),
        ];
        assert_eq!(exempt(&pods), ["mon/prom=fd00::3"]);
        // An older pod with the IP does not take it from the newest (three claimants).
        let pods = [
            ("default/old", facts(&[A], false, false, Some(1))),
            ("default/older", facts(&[A], false, true, Some(0))),
            ("mon/prom", facts(&[A], true, false, Some(20))),
        ];
        assert_eq!(exempt(&pods), ["mon/prom=10.0.1.3"]);
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
