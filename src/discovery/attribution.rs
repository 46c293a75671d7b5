//! Source address -> pod, for naming the pod behind an attempt. Fed with
//! every pod of this node (`sync`, the complete list after each watch
//! event); an address belongs to the newest pod that shows it. A pod that
//! disappears (deleted, or absent from a re-list) keeps its addresses for
//! `GRACE_MS`, so an attempt made seconds before the deletion, read after
//! it, is still attributed; a newer pod that takes the address ends that at
//! once. Bounded: at most `MAX_GONE` departed addresses are remembered
//! (oldest forgotten first). Kept out of the policy: nothing here changes
//! what is blocked. Pure: the caller gives the time (UNIX milliseconds).

use super::extract::PodIdentity;
use crate::core::attempts::PodRef;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How long a departed pod keeps its addresses.
pub const GRACE_MS: u64 = 5 * 60 * 1000;
/// Departed addresses remembered at most (a node runs ~100 pods; this is churn headroom).
pub const MAX_GONE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    pod: PodRef,
    /// When the pod stopped showing the address (None: it still does).
    gone_since_ms: Option<u64>,
}

/// The map itself.
#[derive(Debug, Clone, Default)]
pub struct PodDirectory {
    by_ip: HashMap<IpAddr, Holder>,
}

/// The directory shared by the pods watch (writer) and the attempts reader.
pub type SharedDirectory = Arc<Mutex<PodDirectory>>;

impl PodDirectory {
    pub fn shared() -> SharedDirectory {
        Arc::new(Mutex::new(PodDirectory::default()))
    }

    /// Addresses known (live and departed).
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// The pods of the node now. An address shown by several pods belongs to
    /// the newest (a pod without a creation time counts as the newest; two
    /// equally new ones: nobody can tell, so neither is named). Addresses no
    /// pod shows any more start their grace period; expired ones are dropped.
    pub fn sync<'a>(&mut self, pods: impl IntoIterator<Item = &'a PodIdentity>, now_ms: u64) {
        let newest = |p: &PodIdentity| (p.created.is_none(), p.created.clone());
        // ip -> (holder, tie)
        let mut live: HashMap<IpAddr, (&PodIdentity, bool)> = HashMap::new();
        for p in pods {
            for ip in &p.ips {
                match live.get_mut(ip) {
                    None => {
                        live.insert(*ip, (p, false));
                    }
                    Some(slot) => match newest(p).cmp(&newest(slot.0)) {
                        std::cmp::Ordering::Greater => *slot = (p, false),
                        std::cmp::Ordering::Equal => slot.1 = true,
                        std::cmp::Ordering::Less => {}
                    },
                }
            }
        }
        for (ip, h) in self.by_ip.iter_mut() {
            if !live.contains_key(ip) && h.gone_since_ms.is_none() {
                h.gone_since_ms = Some(now_ms);
            }
        }
        for (ip, (p, tie)) in live {
            if tie {
                self.by_ip.remove(&ip);
            } else {
                self.by_ip.insert(
                    ip,
                    Holder {
                        pod: p.pod.clone(),
                        gone_since_ms: None,
                    },
                );
            }
        }
        self.by_ip
            .retain(|_, h| h.gone_since_ms.is_none_or(|t| now_ms.saturating_sub(t) <= GRACE_MS));
        let mut gone: Vec<(u64, IpAddr)> = self
            .by_ip
            .iter()
            .filter_map(|(ip, h)| Some((h.gone_since_ms?, *ip)))
            .collect();
        if gone.len() > MAX_GONE {
            gone.sort();
            for (_, ip) in &gone[..gone.len() - MAX_GONE] {
                self.by_ip.remove(ip);
            }
        }
    }

    /// The pod `ip` belongs to at `now_ms` (a departed pod within its grace period too).
    pub fn lookup(&self, ip: IpAddr, now_ms: u64) -> Option<&PodRef> {
        let h = self.by_ip.get(&ip)?;
        match h.gone_since_ms {
            Some(t) if now_ms.saturating_sub(t) > GRACE_MS => None,
            _ => Some(&h.pod),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(ns: &str, name: &str, ips: &[&str], created: Option<i64>) -> PodIdentity {
        PodIdentity {
            pod: PodRef {
                namespace: ns.into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                node: "node-a".into(),
            },
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            created: created.map(|t| Time(k8s_openapi::jiff::Timestamp::from_second(t).unwrap())),
        }
    }

    fn name_of(d: &PodDirectory, ip: &str, now: u64) -> Option<String> {
        d.lookup(ip.parse().unwrap(), now)
            .map(|p| format!("{}/{}", p.namespace, p.name))
    }

    #[test]
    fn addresses_name_their_pods_and_a_deleted_pod_keeps_them_for_the_grace_period() {
        let mut d = PodDirectory::default();
        let web = pod("team-a", "web-0", &["10.0.1.3", "fd00::3"], Some(10));
        let dns = pod("kube-system", "dns-1", &["10.0.1.2"], Some(11));
        d.sync([&web, &dns], 1_000);
        assert_eq!(name_of(&d, "10.0.1.3", 1_000).as_deref(), Some("team-a/web-0"));
        assert_eq!(name_of(&d, "fd00::3", 1_000).as_deref(), Some("team-a/web-0"));
        assert_eq!(name_of(&d, "10.0.1.2", 1_000).as_deref(), Some("kube-system/dns-1"));
        assert_eq!(name_of(&d, "10.0.1.9", 1_000), None, "no pod: address only");
        // web-0 is deleted at t=2 s: still named until the grace period ends.
        d.sync([&dns], 2_000);
        assert_eq!(name_of(&d, "10.0.1.3", 2_500).as_deref(), Some("team-a/web-0"));
        assert_eq!(
            name_of(&d, "10.0.1.3", 2_000 + GRACE_MS).as_deref(),
            Some("team-a/web-0")
        );
        assert_eq!(name_of(&d, "10.0.1.3", 2_001 + GRACE_MS), None);
        // A later sync keeps the departure time (not reset by each event) and drops it once expired.
        d.sync([&dns], 3_000);
        assert_eq!(name_of(&d, "10.0.1.3", 2_001 + GRACE_MS), None);
        d.sync([&dns], 2_001 + GRACE_MS);
        assert_eq!(d.len(), 1, "only dns-1's address is left");
    }

    #[test]
    fn a_newer_pod_takes_the_address_at_once_and_ties_name_nobody() {
        let mut d = PodDirectory::default();
        let old = pod("team-a", "web-0", &["10.0.1.3"], Some(10));
        d.sync([&old], 1_000);
        d.sync([], 2_000); // deleted: in its grace period
        let new = pod("team-b", "job-7", &["10.0.1.3"], Some(20));
        d.sync([&new], 3_000);
        assert_eq!(name_of(&d, "10.0.1.3", 3_000).as_deref(), Some("team-b/job-7"));
        // Both listed (the old one lingering): the newest holds it, whatever the order.
        d.sync([&new, &old], 4_000);
        assert_eq!(name_of(&d, "10.0.1.3", 4_000).as_deref(), Some("team-b/job-7"));
        d.sync([&old, &new], 4_000);
        assert_eq!(name_of(&d, "10.0.1.3", 4_000).as_deref(), Some("team-b/job-7"));
        // A pod without a creation time counts as the newest.
        let bare = pod("team-c", "bare", &["10.0.1.3"], None);
        d.sync([&new, &bare], 5_000);
        assert_eq!(name_of(&d, "10.0.1.3", 5_000).as_deref(), Some("team-c/bare"));
        // Two equally new pods with one address: neither is named.
        let twin = pod("team-d", "twin", &["10.0.1.3"], Some(20));
        d.sync([&new, &twin], 6_000);
        assert_eq!(name_of(&d, "10.0.1.3", 6_000), None);
    }

    #[test]
    fn departed_addresses_are_capped() {
        let mut d = PodDirectory::default();
        let pods: Vec<PodIdentity> = (0..(MAX_GONE + 100))
            .map(|i| {
                let ip = format!("10.{}.{}.{}", 1 + (i >> 16), (i >> 8) & 255, i & 255);
                pod("team-a", &format!("p{i}"), &[ip.as_str()], Some(i as i64))
            })
            .collect();
        // Each pod comes and goes, one a millisecond.
        for (i, p) in pods.iter().enumerate() {
            d.sync([p], i as u64 * 2);
            d.sync([], i as u64 * 2 + 1);
        }
        assert_eq!(d.len(), MAX_GONE);
        assert_eq!(name_of(&d, "10.1.0.0", 10_000), None, "the oldest departure went first");
        let last = MAX_GONE + 99;
        let ip = format!("10.{}.{}.{}", 1 + (last >> 16), (last >> 8) & 255, last & 255);
        assert!(name_of(&d, &ip, 10_000).is_some());
    }
}
