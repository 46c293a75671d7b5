//! The Kubernetes objects the fake apiserver serves (EndpointSlices, Pods,
//! Nodes, Events) built as JSON the way a real apiserver renders them, plus the
//! `Status`, bookmark and list envelopes, and `PodSpec` (what a test says
//! about a pod).

use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The resources the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    EndpointSlices,
    Pods,
    Nodes,
    Events,
}

impl Resource {
    /// Lower-case plural, as in URLs ("endpointslices", "pods", "nodes").
    pub fn plural(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "endpointslices",
            Resource::Pods => "pods",
            Resource::Nodes => "nodes",
            Resource::Events => "events",
        }
    }

    pub fn from_plural(s: &str) -> Option<Resource> {
        [
            Resource::EndpointSlices,
            Resource::Pods,
            Resource::Nodes,
            Resource::Events,
        ]
        .into_iter()
        .find(|r| r.plural() == s)
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Pods => "Pod",
            Resource::Nodes => "Node",
            Resource::Events => "Event",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            Resource::Pods | Resource::Nodes | Resource::Events => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Resource::Nodes
    }
}

/// What a test says about a pod (see `FakeApiServer::set_pod`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    /// `spec.nodeName` (empty: not scheduled yet, field omitted).
    pub node: String,
    /// `status.podIPs` (`status.podIP` is the first); empty for a pending pod.
    pub ips: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub host_network: bool,
    /// `status.phase`.
    pub phase: String,
}

impl Default for PodSpec {
    fn default() -> PodSpec {
        PodSpec {
            node: String::new(),
            ips: Vec::new(),
            labels: Vec::new(),
            host_network: false,
            phase: "Running".into(),
        }
    }
}

impl PodSpec {
    /// A running pod on `node` with `ips`.
    pub fn new(node: &str, ips: &[&str]) -> PodSpec {
        PodSpec {
            node: node.into(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ..PodSpec::default()
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> PodSpec {
        self.labels.push((key.into(), value.into()));
        self
    }

    pub fn host_network(mut self, on: bool) -> PodSpec {
        self.host_network = on;
        self
    }

    pub fn phase(mut self, phase: &str) -> PodSpec {
        self.phase = phase.into();
        self
    }
}

fn labels_json<K: AsRef<str>, V: AsRef<str>>(labels: &[(K, V)]) -> Map<String, Value> {
    labels
        .iter()
        .map(|(k, v)| (k.as_ref().to_string(), Value::from(v.as_ref())))
        .collect()
}

/// `metadata` without the server-assigned fields (uid, resourceVersion,
/// creationTimestamp: the store fills those in).
fn metadata(namespace: Option<&str>, name: &str, labels: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    if let Some(ns) = namespace {
        m.insert("namespace".into(), ns.into());
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    Value::Object(m)
}

pub fn endpoint_slice(name: &str, labels: &[(&str, &str)], addresses: &[&str], port: u16) -> Value {
    let v6 = addresses.first().is_some_and(|a| a.contains(':'));
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": Resource::EndpointSlices.api_version(),
        "kind": Resource::EndpointSlices.kind(),
        "metadata": metadata(Some("default"), name, labels_json(labels)),
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

pub fn pod(namespace: &str, name: &str, spec: &PodSpec) -> Value {
    let mut pod_spec = Map::new();
    if !spec.node.is_empty() {
        pod_spec.insert("nodeName".into(), spec.node.clone().into());
    }
    if spec.host_network {
        pod_spec.insert("hostNetwork".into(), true.into());
    }
    pod_spec.insert(
        "containers".into(),
        json!([{"name": "main", "image": "registry.example/app:1"}]),
    );
    let mut status = Map::new();
    status.insert("phase".into(), spec.phase.clone().into());
    if let Some(first) = spec.ips.first() {
        status.insert("podIP".into(), first.clone().into());
        let ips: Vec<Value> = spec.ips.iter().map(|ip| json!({ "ip": ip })).collect();
        status.insert("podIPs".into(), ips.into());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(Some(namespace), name, labels_json(&spec.labels)),
        "spec": pod_spec,
        "status": status,
    })
}

pub fn node(name: &str, pod_cidrs: &[&str], taints: &[(&str, &str)], addresses: &[&str]) -> Value {
    let mut spec = Map::new();
    if let Some(first) = pod_cidrs.first() {
        spec.insert("podCIDR".into(), (*first).into());
        spec.insert("podCIDRs".into(), pod_cidrs.into());
    }
    if !taints.is_empty() {
        let taints: Vec<Value> = taints.iter().map(|(k, e)| json!({"key": k, "effect": e})).collect();
        spec.insert("taints".into(), taints.into());
    }
    let mut addrs: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"type": "InternalIP", "address": a}))
        .collect();
    addrs.push(json!({"type": "Hostname", "address": name}));
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata(None, name, labels_json(&[("kubernetes.io/hostname", name)])),
        "spec": spec,
        "status": {"addresses": addrs},
    })
}

/// A failure `Status` (what the apiserver returns for errors, and what an
/// ERROR watch event carries).
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

pub fn already_exists(resource: Resource, name: &str) -> Value {
    let mut s = status(
        409,
        "AlreadyExists",
        &format!("{} \"{name}\" already exists", resource.plural()),
    );
    s["details"] = json!({"name": name, "kind": resource.plural()});
    s
}

pub fn not_found(resource: Resource, name: &str) -> Value {
    let mut s = status(404, "NotFound", &format!("{} \"{name}\" not found", resource.plural()));
    s["details"] = json!({"name": name, "kind": resource.plural()});
    s
}

/// The 410 a watch gets when its resourceVersion was compacted away.
pub fn expired(rv: u64, oldest: u64) -> Value {
    status(410, "Expired", &format!("too old resource version: {rv} ({oldest})"))
}

/// The object of a BOOKMARK event.
pub fn bookmark(resource: Resource, rv: u64, initial_events_end: bool) -> Value {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": resource.kind(), "apiVersion": resource.api_version(), "metadata": meta})
}

/// A list response. Like the real apiserver, items carry no kind/apiVersion.
pub fn list(resource: Resource, rv: u64, items: Vec<Value>) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    json!({
        "kind": format!("{}List", resource.kind()),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "60a317eadfcb839692a68eab88b2096f4d708f4f",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T13:07:22Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `metadata.resourceVersion` of an object, parsed (0 if absent).
pub fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn set_rv(obj: &mut Value, rv: u64) {
    obj["metadata"]["resourceVersion"] = rv.to_string().into();
}

/// Now as RFC 3339 UTC with second precision ("2025-01-02T03:04:05Z").
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
