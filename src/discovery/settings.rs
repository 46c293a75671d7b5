//! Discovery settings from flags/env and the config file: which policy parts
//! are `auto`, the allow rule, the node name, the client source, the node
//! taint and the cache file. Every problem is reported at once. Pure.

use super::client::choose;
use super::extract::AllowRule;
use super::selector::ScopedSelector;
use super::state::Wants;
use super::DiscoveryConfig;
use crate::cli::PolicyArgs;
use crate::config::{origin, pick, pick_from, FileConfig};
use std::path::PathBuf;

pub const DEFAULT_CACHE: &str = "/var/lib/apiserver-guard/discovered.json";

pub use crate::config::is_auto;

/// A DNS label (namespace names) or subdomain (node names).
fn dns_name(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
        && (dots || !s.contains('.'))
}

/// What the environment supplies (kept out so this stays pure).
pub struct Env {
    pub hostname: String,
    pub in_pod: bool,
}

/// Discovery settings, or None when nothing asks for Kubernetes.
pub fn merge(
    args: &PolicyArgs,
    file: &FileConfig,
    node_taint: Option<&str>,
    env: &Env,
) -> Result<Option<DiscoveryConfig>, Vec<String>> {
    let mut problems = Vec::new();
    let any_auto = |v: Vec<String>| v.iter().any(|s| is_auto(s));
    // Messages name the flag, the variable or the config key each entry came from.
    let (allow_pods, pods_cli) = pick_from(&args.kube.allow_pods, file.allow_pods.clone());
    let (namespaces, ns_cli) = pick_from(&args.kube.allow_namespaces, file.allow_namespaces.clone());
    let pods_from = origin(args, file, "allow_pods", pods_cli);
    let ns_from = origin(args, file, "allow_namespaces", ns_cli);
    let pods: Vec<ScopedSelector> = allow_pods
        .iter()
        .filter_map(|s| {
            ScopedSelector::parse(s)
                .map_err(|e| problems.push(format!("{pods_from}: {e}")))
                .ok()
        })
        .collect();
    for ns in &namespaces {
        if ns == "*" {
            problems.push(format!(
                "{ns_from}: '*' is not a namespace name: name each namespace whose pods keep apiserver access; \
                 there is no wildcard, because allowing every namespace would let every pod on the node through, \
                 which is what the block is for (to stop blocking, remove the block)"
            ));
        } else if !dns_name(ns, 63, false) {
            problems.push(format!(
                "{ns_from}: '{ns}' is not a namespace name (lower-case letters, digits and '-', at most 63, e.g. kube-system)"
            ));
        }
    }
    let wants = Wants {
        apiservers: any_auto(pick(&args.apiserver, file.apiserver.clone())),
        pod_cidrs: any_auto(pick(&args.container_cidr, file.container_cidr.clone())),
        allow_list: !allow_pods.is_empty() || !namespaces.is_empty(),
    };
    let taint = node_taint.map(str::trim).map(str::to_string);
    if let Some(t) = &taint {
        if !super::selector::valid_key(t) {
            problems.push(format!(
                "node-taint: '{t}' is not a taint key (e.g. apiserver-guard.io/not-ready)"
            ));
        }
    }
    if !wants.any() && taint.is_none() {
        // Kubernetes flags without anything that uses them are a mistake worth saying.
        let k = &args.kube;
        if k.kubeconfig.is_some() || file.kubeconfig.is_some() {
            problems.push("--kubeconfig is set but nothing uses Kubernetes: use --apiserver auto, --container-cidr auto, --allow-pods, --allow-namespaces or --node-taint".into());
        }
        return if problems.is_empty() { Ok(None) } else { Err(problems) };
    }
    let node_name = args
        .kube
        .node_name
        .clone()
        .or_else(|| file.node_name.clone())
        .unwrap_or_else(|| env.hostname.clone())
        .to_lowercase();
    if !dns_name(&node_name, 253, true) {
        problems.push(format!(
            "node name: '{node_name}' is not a node name (set --node-name or NODE_NAME)"
        ));
    }
    let kubeconfig = args.kube.kubeconfig.clone().or_else(|| file.kubeconfig.clone());
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Some(DiscoveryConfig {
        wants,
        allow: AllowRule { pods, namespaces },
        node_name,
        client: choose(kubeconfig.as_deref(), env.in_pod),
        node_taint: taint,
        cache_file: args
            .kube
            .discovery_cache
            .clone()
            .or_else(|| file.discovery_cache.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE)),
    }))
}

/// What discovery follows, for node and via which client, for the log.
pub fn describe(cfg: &DiscoveryConfig) -> String {
    let mut parts = Vec::new();
    if cfg.wants.apiservers {
        parts.push("apiservers".to_string());
    }
    if cfg.wants.pod_cidrs {
        parts.push("pod CIDRs".to_string());
    }
    if cfg.wants.allow_list {
        let mut what = Vec::new();
        for s in &cfg.allow.pods {
            what.push(format!("pods '{}'", s.text()));
        }
        if !cfg.allow.namespaces.is_empty() {
            what.push(format!("namespaces {}", cfg.allow.namespaces.join(",")));
        }
        parts.push(format!("allowed pods ({})", what.join(", ")));
    }
    if let Some(t) = &cfg.node_taint {
        parts.push(format!("node taint {t}"));
    }
    format!("{} for node {} via {}", parts.join(", "), cfg.node_name, cfg.client)
}

#[cfg(test)]
mod tests {
    use super::super::client::Source;
    use super::*;

    fn env() -> Env {
        Env {
            hostname: "Node-A".into(),
            in_pod: false,
        }
    }

    fn args(api: &[&str], cidr: &[&str]) -> PolicyArgs {
        PolicyArgs {
            apiserver: api.iter().map(|s| s.to_string()).collect(),
            container_cidr: cidr.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_kubernetes_means_no_discovery() {
        let a = args(&["192.168.0.10:6443"], &["10.0.0.0/16"]);
        assert_eq!(merge(&a, &FileConfig::default(), None, &env()), Ok(None));
    }

    #[test]
    fn auto_values_and_allow_flags_turn_parts_on() {
        let mut a = args(&["auto", "192.168.0.10:6443"], &["AUTO"]);
        a.kube.allow_namespaces = vec!["kube-system".into()];
        let c = merge(&a, &FileConfig::default(), Some("apiserver-guard.io/not-ready"), &env())
            .unwrap()
            .unwrap();
        assert_eq!(
            c.wants,
            Wants {
                apiservers: true,
                pod_cidrs: true,
                allow_list: true
            }
        );
        assert_eq!(
            c.node_name, "node-a",
            "hostname, lower-cased as Kubernetes registers it"
        );
        assert_eq!(
            c.client,
            Source::Kubeconfig(PathBuf::from(super::super::client::KUBELET_KUBECONFIG))
        );
        assert_eq!(c.cache_file, PathBuf::from(DEFAULT_CACHE));
        assert_eq!(c.node_taint.as_deref(), Some("apiserver-guard.io/not-ready"));
        // The file can ask too; flags win for scalars.
        let file = FileConfig {
            apiserver: Some(crate::config::OneOrMany::One("auto".into())),
            allow_pods: Some(crate::config::OneOrMany::One("monitoring/app=x".into())),
            node_name: Some("from-file".into()),
            ..Default::default()
        };
        let c = merge(
            &PolicyArgs::default(),
            &file,
            None,
            &Env {
                hostname: "h".into(),
                in_pod: true,
            },
        )
        .unwrap()
        .unwrap();
        assert!(c.wants.apiservers && c.wants.allow_list && !c.wants.pod_cidrs);
        assert_eq!(c.node_name, "from-file");
        assert_eq!(c.client, Source::InCluster);
    }

    #[test]
    fn bad_values_are_all_reported() {
        let mut a = args(&["auto"], &[]);
        a.kube.allow_pods = vec!["default/app in web".into()];
        a.kube.allow_namespaces = vec!["Kube_System".into()];
        a.kube.node_name = Some("bad node".into());
        let e = merge(&a, &FileConfig::default(), Some("-x"), &env()).unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        let mut a = args(&["192.168.0.10"], &["10.0.0.0/16"]);
        a.kube.kubeconfig = Some("/k".into());
        let e = merge(&a, &FileConfig::default(), None, &env()).unwrap_err();
        assert!(e[0].contains("nothing uses Kubernetes"), "{e:?}");
    }

    #[test]
    fn allow_pods_entries_are_scoped_to_a_namespace_and_unscoped_ones_refused() {
        let mut a = args(&["auto"], &[]);
        a.kube.allow_pods = vec!["monitoring/app=prom".into(), "kube-system/k8s-app in (kube-dns)".into()];
        let c = merge(&a, &FileConfig::default(), None, &env()).unwrap().unwrap();
        let texts: Vec<String> = c.allow.pods.iter().map(|s| s.text()).collect();
        assert_eq!(texts, ["monitoring/app=prom", "kube-system/k8s-app in (kube-dns)"]);
        assert!(c.wants.allow_list);
        assert!(describe(&c).contains("pods 'monitoring/app=prom'"), "{}", describe(&c));
        // The file may give one entry or a list; flags win.
        let file = FileConfig {
            apiserver: Some(crate::config::OneOrMany::One("auto".into())),
            allow_pods: Some(crate::config::OneOrMany::Many(vec!["a/x=1".into(), "b/y".into()])),
            ..Default::default()
        };
        let c = merge(&PolicyArgs::default(), &file, None, &env()).unwrap().unwrap();
        assert_eq!(c.allow.pods.len(), 2);
        let c = merge(&a, &file, None, &env()).unwrap().unwrap();
        assert_eq!(c.allow.pods[0].namespace, "monitoring");
        // A selector alone (the old form) is refused, each with the scoped form to write.
        a.kube.allow_pods = vec!["apiserver-guard.io/allow=true".into(), "app=prom".into()];
        let e = merge(&a, &FileConfig::default(), None, &env()).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("--allow-pods: selector 'apiserver-guard.io/allow=true' names no namespace")
                && e[0].contains("e.g. monitoring/apiserver-guard.io/allow=true"),
            "{e:?}"
        );
        assert!(e[1].contains("NAMESPACE/SELECTOR"), "{e:?}");
    }

    #[test]
    fn allow_list_messages_name_the_flag_the_variable_or_the_key() {
        let file_with = |pods: &str, ns: &str| FileConfig {
            apiserver: Some(crate::config::OneOrMany::One("auto".into())),
            allow_pods: Some(crate::config::OneOrMany::One(pods.into())),
            allow_namespaces: Some(crate::config::OneOrMany::Many(vec!["kube-system".into(), ns.into()])),
            path: Some("/etc/g.toml".into()),
            ..Default::default()
        };
        let e = merge(&PolicyArgs::default(), &file_with("*/app=x", "*"), None, &env()).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("allow_pods in /etc/g.toml: selector '*/app=x' names the namespace '*'"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("allow_namespaces in /etc/g.toml: '*' is not a namespace name")
                && e[1].contains("no wildcard"),
            "{}",
            e[1]
        );
        let mut a = args(&["auto"], &[]);
        a.kube.allow_pods = vec!["/app=x".into()];
        a.kube.allow_namespaces = vec!["Kube_System".into()];
        a.from_env = ["allow_pods".to_string()].into();
        let e = merge(&a, &file_with("ok/x", "ok"), None, &env()).unwrap_err();
        assert!(
            e[0].starts_with("APISERVER_GUARD_ALLOW_PODS: selector '/app=x' has an empty namespace part"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("--allow-namespaces: 'Kube_System' is not a namespace name"),
            "{}",
            e[1]
        );
        let mut a = args(&["auto"], &[]);
        a.kube.allow_pods = vec!["monitoring/app in web".into()];
        let e = merge(&a, &FileConfig::default(), None, &env()).unwrap_err();
        assert!(
            e[0].starts_with(
                "--allow-pods: selector 'monitoring/app in web': 'app in web': the values of in go in parentheses"
            ),
            "{}",
            e[0]
        );
    }
}
