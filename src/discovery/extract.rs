//! What the agent takes from Kubernetes objects, as plain data: the
//! endpoints of a `kubernetes` EndpointSlice, the pod CIDRs and taints of
//! the node, and the IPs of an allowed pod on this node. Pure.

use super::selector::Selector;
use crate::core::address::Endpoint;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
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

/// Which pods keep access to the apiserver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowRule {
    pub selector: Option<Selector>,
    pub namespaces: Vec<String>,
}

impl AllowRule {
    pub fn is_empty(&self) -> bool {
        self.selector.is_none() && self.namespaces.is_empty()
    }
}

/// The IPs that become exempt for this pod: it runs on `node`, is not on
/// the host network (the block never applies to those), has not ended, and
/// is in an allowed namespace or matches the selector. Empty otherwise.
pub fn allowed_pod_ips(pod: &Pod, node: &str, allow: &AllowRule) -> Vec<IpAddr> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    if spec.node_name.as_deref() != Some(node) || spec.host_network == Some(true) {
        return Vec::new();
    }
    let status = pod.status.as_ref();
    if status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
    {
        return Vec::new();
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let allowed =
        allow.namespaces.iter().any(|n| n == ns) || allow.selector.as_ref().is_some_and(|s| s.matches(labels));
    if !allowed {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status
        .map(|s| {
            let many = s.pod_ips.iter().flatten().map(|p| p.ip.as_str());
            many.chain(s.pod_ip.as_deref()).filter_map(|a| a.parse().ok()).collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
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
    fn allowed_pods_are_those_on_this_node_matching_and_alive() {
        let allow = AllowRule {
            selector: Some(Selector::parse("apiserver-guard.io/allow=true").unwrap()),
            namespaces: vec!["kube-system".into()],
        };
        let mk = |ns: &str, node: &str, labels: serde_json::Value, host: bool, phase: &str| {
            pod(json!({
                "metadata": {"name": "p", "namespace": ns, "labels": labels},
                "spec": {"nodeName": node, "hostNetwork": host, "containers": []},
                "status": {"phase": phase, "podIP": "10.0.1.3", "podIPs": [{"ip": "10.0.1.3"}, {"ip": "fd00:10:0:1::3"}]}
            }))
        };
        let ips = |p: &Pod| allowed_pod_ips(p, "node-a", &allow);
        let labelled = json!({"apiserver-guard.io/allow": "true"});
        assert_eq!(
            ips(&mk("default", "node-a", labelled.clone(), false, "Running")).len(),
            2
        );
        assert_eq!(ips(&mk("kube-system", "node-a", json!({}), false, "Pending")).len(), 2);
        assert!(
            ips(&mk("default", "node-b", labelled.clone(), false, "Running")).is_empty(),
            "other node"
        );
        assert!(ips(&mk(
            "default",
            "node-a",
            json!({"apiserver-guard.io/allow": "false"}),
            false,
            "Running"
        ))
        .is_empty());
        assert!(
            ips(&mk("default", "node-a", labelled.clone(), true, "Running")).is_empty(),
            "host network"
        );
        assert!(
            ips(&mk("default", "node-a", labelled.clone(), false, "Succeeded")).is_empty(),
            "ended"
        );
        let no_ip =
            pod(json!({"metadata": {"namespace": "kube-system"}, "spec": {"nodeName": "node-a", "containers": []}}));
        assert!(allowed_pod_ips(&no_ip, "node-a", &allow).is_empty());
    }
}
