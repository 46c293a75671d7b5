//! What the daemon reports about Kubernetes discovery: per-source health
//! (also gating `/readyz`), how much was discovered, how changes went, and
//! the node taint. Plain data and its Prometheus rendering. Pure.

use crate::discovery::SourceHealth;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryStatus {
    pub sources: BTreeMap<&'static str, SourceHealth>,
    pub apiserver_endpoints: usize,
    pub allowed_pod_ips: usize,
    pub pod_cidrs: usize,
    /// Discovered changes applied to the kernel, and refused (invalid) ones.
    pub changes_applied: u64,
    pub changes_refused: u64,
    /// Seconds from the change arriving to the kernel holding it, last change.
    pub last_apply_seconds: f64,
    /// The node taint and whether it was removed (None: no --node-taint).
    pub node_taint: Option<(String, bool)>,
}

impl DiscoveryStatus {
    /// Why discovery keeps `/readyz` at 503 (None: healthy).
    pub fn not_ready(&self) -> Option<String> {
        let down: Vec<String> = self.sources.iter().filter_map(|(name, h)| h.problem(name)).collect();
        (!down.is_empty()).then(|| {
            format!(
                "discovery unhealthy, enforcing the last known state: {}",
                down.join("; ")
            )
        })
    }

    pub fn render(&self, o: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            name.to_string()
        };
        let up = family(
            "apiserver_guard_discovery_up",
            "gauge",
            "1 when the source's watch is working and has listed at least once.",
        );
        let mut lines = String::new();
        for (name, h) in &self.sources {
            let _ = writeln!(lines, "{up}{{source=\"{name}\"}} {}", u8::from(h.up && h.synced));
        }
        o.push_str(&lines);
        let errors = "apiserver_guard_discovery_errors_total";
        let _ = writeln!(
            o,
            "# HELP {errors} Failed list/watch calls, by source.\n# TYPE {errors} counter"
        );
        for (name, h) in &self.sources {
            let _ = writeln!(o, "{errors}{{source=\"{name}\"}} {}", h.errors);
        }
        let gauges = [
            (
                "apiserver_guard_discovered_apiserver_endpoints",
                "Apiserver endpoints discovered (EndpointSlices and kubeconfig server).",
                self.apiserver_endpoints as f64,
            ),
            (
                "apiserver_guard_discovered_allowed_pod_ips",
                "Pod IPs on this node exempt by --allow-pods/--allow-namespaces.",
                self.allowed_pod_ips as f64,
            ),
            (
                "apiserver_guard_discovered_pod_cidrs",
                "Pod CIDRs of this node (--container-cidr auto).",
                self.pod_cidrs as f64,
            ),
            (
                "apiserver_guard_discovery_last_apply_seconds",
                "Seconds from the last discovered change arriving to the kernel holding it.",
                self.last_apply_seconds,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let changes = "apiserver_guard_discovery_changes_total";
        let _ = writeln!(
            o,
            "# HELP {changes} Discovered changes, by outcome.\n# TYPE {changes} counter\n{changes}{{outcome=\"applied\"}} {}\n{changes}{{outcome=\"refused\"}} {}",
            self.changes_applied, self.changes_refused
        );
        if let Some((key, removed)) = &self.node_taint {
            let name = "apiserver_guard_node_taint_removed";
            let _ = writeln!(
                o,
                "# HELP {name} 1 once the start-up taint was removed from this node.\n# TYPE {name} gauge\n{name}{{key=\"{key}\"}} {}",
                u8::from(*removed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_source_up_and_listed() {
        let mut s = DiscoveryStatus::default();
        assert_eq!(s.not_ready(), None);
        s.sources.insert("pods", SourceHealth::default());
        assert!(s.not_ready().unwrap().contains("pods not listed yet"));
        s.sources.insert(
            "pods",
            SourceHealth {
                synced: true,
                up: true,
                ..Default::default()
            },
        );
        assert_eq!(s.not_ready(), None);
        s.sources.insert(
            "endpointslices",
            SourceHealth {
                synced: true,
                up: false,
                errors: 3,
                last_error: "connection refused".into(),
            },
        );
        let why = s.not_ready().unwrap();
        assert!(
            why.contains("endpointslices: connection refused") && why.contains("last known"),
            "{why}"
        );
    }

    #[test]
    fn render_parses_as_prometheus() {
        let mut s = DiscoveryStatus {
            apiserver_endpoints: 3,
            node_taint: Some(("apiserver-guard.io/not-ready".into(), true)),
            ..Default::default()
        };
        s.sources.insert("pods", SourceHealth::default());
        let mut o = String::new();
        s.render(&mut o);
        let lines = o.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let get = |n: &str| scrape.samples.iter().find(|x| x.metric == n).map(|x| x.value.clone());
        assert_eq!(
            get("apiserver_guard_discovered_apiserver_endpoints"),
            Some(prometheus_parse::Value::Gauge(3.0))
        );
        assert_eq!(
            get("apiserver_guard_discovery_up"),
            Some(prometheus_parse::Value::Gauge(0.0))
        );
        assert_eq!(
            get("apiserver_guard_node_taint_removed"),
            Some(prometheus_parse::Value::Gauge(1.0))
        );
    }
}
