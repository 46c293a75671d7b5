//! What the agent takes from Kubernetes objects, as plain data: the
//! endpoints of a `kubernetes` EndpointSlice, the pod CIDRs and taints of
//! the node, what the allow-list needs of each pod on this node, and who
//! each pod is (to name the pod behind an attempt). Pure.

use super::selector::ScopedSelector;
use crate::core::address::Endpoint;
use crate::core::attempts::PodRef;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Label every EndpointSlice of the `kubernetes` Service carries.
pub const SERVICE_LABEL: &str = "kubernetes.io/service-name=kubernetes";

/// Every address and TCP port of a slice. Endpoints that are not ready are
/// blocked too (blocking is the safe side). A slice without ports blocks
/// the addresses on every port; FQDN slices and unparsable addresses are skipped.
pub fn slice_endpoints(slice: &EndpointSlice) -> Vec<Endpoint> {
    if slice.address_type == "FQDN" {
        return Vec::new();
    }
    let ports: Vec<Option<u16>> = match slice.ports.as_deref() {
        None | Some([]) => vec![None],
        Some(ps) => ps
            .iter()
            .filter(|p| p.protocol.as_deref().is_none_or(|pr| pr == "TCP"))
            .map(|p| p.port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0))
            .collect(),
    };
    let mut out: Vec<Endpoint> = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .flat_map(|ip| ports.iter().map(move |port| Endpoint { ip, port: *port }))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The node's pod CIDRs (`spec.podCIDRs`, else `spec.podCIDR`); unparsable ones skipped.
pub fn node_pod_cidrs(node: &Node) -> Vec<IpNet> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let raw: Vec<&String> = match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(v), _) if !v.is_empty() => v.iter().collect(),
        (_, Some(one)) => vec![one],
        _ => Vec::new(),
    };
    raw.into_iter()
        .filter_map(|s| s.parse::<IpNet>().ok())
        .map(|n| n.trunc())
        .collect()
}

/// Whether the node carries a taint with this key (any effect).
pub fn has_taint(node: &Node, key: &str) -> bool {
    taint_index(node, key).is_some()
}

/// Position of the first taint with this key in `spec.taints`.
pub fn taint_index(node: &Node, key: &str) -> Option<usize> {
    node.spec.as_ref()?.taints.as_ref()?.iter().position(|t| t.key == key)
}

/// The JSON patch (RFC 6902) that removes the taint at `index` only if it
/// still has `key` there (the `test` op makes a concurrent change fail the
/// patch instead of removing someone else's taint).
pub fn taint_removal_patch(index: usize, key: &str) -> serde_json::Value {
    serde_json::json!([
        { "op": "test", "path": format!("/spec/taints/{index}/key"), "value": key },
        { "op": "remove", "path": format!("/spec/taints/{index}") },
    ])
}

/// Which pods keep access to the apiserver: every pod of `namespaces`, and
/// the pods matching a `NAMESPACE/SELECTOR` entry of `pods` (a label counts
/// only in the namespace its entry names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowRule {
    pub pods: Vec<ScopedSelector>,
    pub namespaces: Vec<String>,
}

impl AllowRule {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.namespaces.is_empty()
    }

    /// Whether a pod of `namespace` with these labels is allowed.
    pub fn allows(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.iter().any(|n| n == namespace) || self.pods.iter().any(|s| s.matches(namespace, labels))
    }
}

/// What the allow-list needs to know about one pod of this node that is in
/// the pod network (host-network pods and pods of other nodes give None):
/// its IPs, whether the allow rule names it, whether it has ended, and when
/// it was created (to tell which pod holds an IP that two pods claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub ips: Vec<IpAddr>,
    pub allowed: bool,
    /// `deletionTimestamp` set (terminating) or phase Succeeded/Failed: its
    /// sandbox is going or gone, and the CNI may hand its IP to a new pod.
    pub ended: bool,
    /// `metadata.creationTimestamp`; None if the object has none.
    pub created: Option<Time>,
}

/// The facts of a pod of `node` (None for other nodes and the host network).
pub fn pod_facts(pod: &Pod, node: &str, allow: &AllowRule) -> Option<PodFacts> {
    let spec = pod.spec.as_ref()?;
    if spec.node_name.as_deref() != Some(node) || spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref();
    let finished = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    Some(PodFacts {
        ips: pod_ips(pod),
        allowed: allow.allows(ns, labels),
        ended: finished || pod.metadata.deletion_timestamp.is_some(),
        created: pod.metadata.creation_timestamp.clone(),
    })
}

/// `status.podIPs` and `status.podIP`, parsed, sorted, without duplicates.
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = pod
        .status
        .as_ref()
        .map(|s| {
            let many = s.pod_ips.iter().flatten().map(|p| p.ip.as_str());
            many.chain(s.pod_ip.as_deref()).filter_map(|a| a.parse().ok()).collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

/// Who a pod of this node is, to name it behind an attempt: metadata and
/// IPs only (labels and spec are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub pod: PodRef,
    pub ips: Vec<IpAddr>,
    /// `metadata.creationTimestamp` (which of two pods showing one IP holds it).
    pub created: Option<Time>,
}

/// The identity of a pod of `node` in the pod network (None for other
/// nodes and for host-network pods, whose IP is the node's).
pub fn pod_identity(pod: &Pod, node: &str) -> Option<PodIdentity> {
    let spec = pod.spec.as_ref()?;
    if spec.node_name.as_deref() != Some(node) || spec.host_network == Some(true) {
        return None;
    }
    let m = &pod.metadata;
    Some(PodIdentity {
        pod: PodRef {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            node: node.to_string(),
        },
        ips: pod_ips(pod),
        created: m.creation_timestamp.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn ep(s: &str) -> Endpoint {
        crate::core::address::parse_endpoint(s).unwrap()
    }

    #[test]
    fn slice_endpoints_take_every_address_and_tcp_port() {
        let s = slice(json!({
            "metadata": {"name": "kubernetes"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.168.0.10"]}, {"addresses": ["192.168.0.11"], "conditions": {"ready": false}}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]
        }));
        assert_eq!(
            slice_endpoints(&s),
            vec![ep("192.168.0.10:6443"), ep("192.168.0.11:6443")]
        );
        let no_ports =
            slice(json!({"metadata": {}, "addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1", "junk"]}]}));
        assert_eq!(slice_endpoints(&no_ports), vec![ep("fd00::1")]);
        let fqdn = slice(json!({"metadata": {}, "addressType": "FQDN", "endpoints": [{"addresses": ["api.example"]}]}));
        assert!(slice_endpoints(&fqdn).is_empty());
        let empty = slice(json!({"metadata": {}, "addressType": "IPv4", "endpoints": []}));
        assert!(slice_endpoints(&empty).is_empty());
    }

    #[test]
    fn node_pod_cidrs_prefer_the_list_and_normalise() {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]}})).unwrap();
        assert_eq!(
            node_pod_cidrs(&n),
            vec![
                "10.244.1.0/24".parse::<IpNet>().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap()
            ]
        );
        let n: Node = serde_json::from_value(json!({"metadata": {}, "spec": {"podCIDR": "10.244.1.7/24"}})).unwrap();
        assert_eq!(node_pod_cidrs(&n), vec!["10.244.1.0/24".parse::<IpNet>().unwrap()]);
        let n: Node = serde_json::from_value(json!({"metadata": {}})).unwrap();
        assert!(node_pod_cidrs(&n).is_empty());
    }

    #[test]
    fn taints_are_found_and_removed_only_if_still_there() {
        let n: Node = serde_json::from_value(json!({"metadata": {}, "spec": {"taints": [
            {"key": "other", "effect": "NoExecute"}, {"key": "apiserver-guard.io/not-ready", "effect": "NoSchedule"}]}})).unwrap();
        assert_eq!(taint_index(&n, "apiserver-guard.io/not-ready"), Some(1));
        assert!(!has_taint(&n, "missing"));
        let p = taint_removal_patch(1, "apiserver-guard.io/not-ready");
        assert_eq!(p[0]["op"], "test");
        assert_eq!(p[0]["path"], "/spec/taints/1/key");
        assert_eq!(p[1], json!({"op": "remove", "path": "/spec/taints/1"}));
    }

    #[test]
    fn pod_facts_say_which_pods_the_rule_names_and_which_have_ended() {
        let allow = AllowRule {
            pods: vec![ScopedSelector::parse("monitoring/apiserver-guard.io/allow=true").unwrap()],
            namespaces: vec!["kube-system".into()],
        };
        let mk = |ns: &str, node: &str, labels: serde_json::Value, host: bool, phase: &str| {
            pod(json!({
                "metadata": {"name": "p", "namespace": ns, "labels": labels, "creationTimestamp": "2025-01-02T03:04:05Z"},
                "spec": {"nodeName": node, "hostNetwork": host, "containers": []},
                "status": {"phase": phase, "podIP": "10.0.1.3", "podIPs": [{"ip": "10.0.1.3"}, {"ip": "fd00:10:0:1::3"}]}
            }))
        };
        let facts = |p: &Pod| pod_facts(p, "node-a", &allow);
        let labelled = json!({"apiserver-guard.io/allow": "true"});
        let f = facts(&mk("monitoring", "node-a", labelled.clone(), false, "Running")).unwrap();
        assert!(f.allowed && !f.ended);
        assert_eq!(
            f.ips,
            vec!["10.0.1.3".parse::<IpAddr>().unwrap(), "fd00:10:0:1::3".parse().unwrap()]
        );
        assert_eq!(f.created.unwrap().0.to_string(), "2025-01-02T03:04:05Z");
        assert!(
            facts(&mk("kube-system", "node-a", json!({}), false, "Pending"))
                .unwrap()
                .allowed
        );
        // The label outside the namespace its entry names: the pod is known, not allowed.
        let elsewhere = facts(&mk("default", "node-a", labelled.clone(), false, "Running")).unwrap();
        assert!(!elsewhere.allowed && elsewhere.ips.len() == 2);
        let wrong_value = json!({"apiserver-guard.io/allow": "false"});
        assert!(
            !facts(&mk("monitoring", "node-a", wrong_value, false, "Running"))
                .unwrap()
                .allowed
        );
        assert_eq!(
            facts(&mk("monitoring", "node-b", labelled.clone(), false, "Running")),
            None,
            "other node"
        );
        assert_eq!(
            facts(&mk("monitoring", "node-a", labelled.clone(), true, "Running")),
            None,
            "host network"
        );
        for phase in ["Succeeded", "Failed"] {
            assert!(
                facts(&mk("monitoring", "node-a", labelled.clone(), false, phase))
                    .unwrap()
                    .ended,
                "{phase}"
            );
        }
        let mut deleting = mk("monitoring", "node-a", labelled.clone(), false, "Running");
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        assert!(facts(&deleting).unwrap().ended, "deletionTimestamp set");
        let id = pod_identity(&deleting, "node-a").unwrap();
        assert_eq!(
            (id.pod.namespace.as_str(), id.pod.name.as_str(), id.ips.len()),
            ("monitoring", "p", 2)
        );
        assert_eq!(
            pod_identity(&mk("monitoring", "node-b", json!({}), false, "Running"), "node-a"),
            None
        );
        assert_eq!(
            pod_identity(&mk("monitoring", "node-a", json!({}), true, "Running"), "node-a"),
            None,
            "host network: its IP is the node's"
        );
        let no_ip =
            pod(json!({"metadata": {"namespace": "kube-system"}, "spec": {"nodeName": "node-a", "containers": []}}));
        let f = pod_facts(&no_ip, "node-a", &allow).unwrap();
        assert!(f.ips.is_empty() && f.allowed && f.created.is_none());
    }
}
