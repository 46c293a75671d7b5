//! `--auto`: finds a pod network namespace on this node, i.e. one with an
//! interface address inside a container CIDR (and not exempt) that is also
//! the source the kernel picks there towards an apiserver (a namespace that
//! merely holds a gateway address of the pod subnet, and reaches the
//! apiserver from another address, is no pod). containerd and CRI-O keep pod
//! namespaces under `/run/netns`; when none matches there, every process's
//! `/proc/PID/ns/net` is tried (each namespace once). The namespace `verify`
//! runs in (the host) is never picked.

use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::netns::{current_id, id_of, Namespace, NsId};
use super::outcome::{coverage, Coverage};
use crate::core::address::Endpoint;
use crate::node_facts::local_addresses;
use crate::node_facts::source_address;

/// Where named namespaces live (`ip netns`, containerd, CRI-O).
pub const NETNS_DIR: &str = "/run/netns";

/// A pod namespace found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// Its address inside a container CIDR, used towards the apiserver.
    pub address: IpAddr,
}

/// The first address blocked by the policy (inside a container CIDR, not exempt).
pub fn pod_address(addrs: &[IpAddr], sources: &[IpNet], exempt: &[IpNet]) -> Option<IpAddr> {
    addrs
        .iter()
        .copied()
        .find(|a| matches!(coverage(sources, exempt, *a), Coverage::Blocked(_)))
}

/// The namespace's source towards an apiserver that the policy blocks, if it has an
/// interface address the policy blocks at all. `routes` are the sources the kernel picks
/// towards each apiserver (None: no route).
pub fn pod_source(addrs: &[IpAddr], routes: &[Option<IpAddr>], sources: &[IpNet], exempt: &[IpNet]) -> Option<IpAddr> {
    pod_address(addrs, sources, exempt)?;
    let used: Vec<IpAddr> = routes.iter().flatten().copied().collect();
    pod_address(&used, sources, exempt)
}

/// Scans `/run/netns`, then `/proc/*/ns/net`, for a pod namespace that reaches one of
/// `apiservers` from a blocked container address.
pub fn find(sources: &[IpNet], exempt: &[IpNet], apiservers: &[IpAddr]) -> Result<Found, String> {
    let mut seen: HashSet<NsId> = HashSet::new();
    if let Ok(me) = current_id() {
        seen.insert(me);
    }
    let mut named = 0;
    for path in entries(Path::new(NETNS_DIR), |_| true) {
        named += 1;
        if let Some(found) = check(&path, &mut seen, sources, exempt, apiservers) {
            return Ok(found);
        }
    }
    let mut procs = 0;
    for dir in entries(Path::new("/proc"), |name| name.bytes().all(|b| b.is_ascii_digit())) {
        let path = dir.join("ns/net");
        if let Some(found) = check(&path, &mut seen, sources, exempt, apiservers) {
            return Ok(found);
        }
        procs += 1;
    }
    let cidrs: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    Err(format!(
        "--auto found no network namespace that reaches the apiserver from an address inside the container CIDR(s) {} \
         (looked at {named} under {NETNS_DIR}, then {procs} processes under /proc); \
         give --netns PATH, --source IP or --from-here",
        cidrs.join(", ")
    ))
}

/// Sorted entries of `dir` whose file name passes `keep`; none when unreadable.
fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

/// Enters `path` once per namespace and looks at its addresses.
fn check(
    path: &Path,
    seen: &mut HashSet<NsId>,
    sources: &[IpNet],
    exempt: &[IpNet],
    apiservers: &[IpAddr],
) -> Option<Found> {
    let id = id_of(path).ok()?;
    if !seen.insert(id) {
        return None;
    }
    let ns = Namespace::open(path).ok()?;
    let (addrs, routes) = ns
        .in_thread(|| {
            let addrs = local_addresses().ok()?;
            pod_address(&addrs, sources, exempt)?;
            let routes: Vec<Option<IpAddr>> = apiservers
                .iter()
                .map(|ip| source_address(&Endpoint { ip: *ip, port: None }))
                .collect();
            Some((addrs, routes))
        })
        .ok()??;
    pod_source(&addrs, &routes, sources, exempt).map(|address| Found {
        path: path.to_path_buf(),
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_pod_address_is_inside_a_cidr_and_not_exempt() {
        let sources = nets(&["10.0.0.0/16", "fd00:10::/48"]);
        let exempt = nets(&["10.0.250.0/24"]);
        let pick = |a: &[&str]| pod_address(&ips(a), &sources, &exempt);
        assert_eq!(pick(&["127.0.0.1", "10.0.1.2"]), Some("10.0.1.2".parse().unwrap()));
        assert_eq!(pick(&["::1", "fd00:10::5"]), Some("fd00:10::5".parse().unwrap()));
        assert_eq!(pick(&["127.0.0.1", "10.0.250.7"]), None);
        assert_eq!(pick(&["192.168.1.1"]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn a_gateway_address_is_not_a_pod() {
        let sources = nets(&["10.0.0.0/16"]);
        let addrs = ips(&["10.0.1.1", "192.168.50.1"]);
        let via_node = [Some("192.168.50.1".parse().unwrap())];
        assert_eq!(pod_source(&addrs, &via_node, &sources, &[]), None);
        let from_pod = [None, Some("10.0.1.1".parse().unwrap())];
        assert_eq!(
            pod_source(&addrs, &from_pod, &sources, &[]),
            Some("10.0.1.1".parse().unwrap())
        );
        assert_eq!(pod_source(&ips(&["192.168.50.1"]), &from_pod, &sources, &[]), None);
    }

    #[test]
    fn nothing_found_says_what_to_do() {
        // A CIDR no namespace on any machine running this test uses (TEST-NET-3 /28).
        let e = find(&nets(&["203.0.113.240/28"]), &[], &ips(&["192.0.2.1"])).unwrap_err();
        assert!(e.contains("203.0.113.240/28") && e.contains("--netns"), "{e}");
    }
}
