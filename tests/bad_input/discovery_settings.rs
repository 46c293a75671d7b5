//! Refused discovery and daemon settings, checked by every command: the
//! allow-list (a real namespace per entry, no wildcard), the resync
//! interval and listen address, and a missing or invalid kubeconfig (never
//! a reason to fall back on the discovery cache).

use crate::common::bad_input_cases::*;

/// This topic's refused inputs, each otherwise identical to the good policy
/// with `--backend backend`. Config files are written into `dir`.
pub fn cases(dir: &TempDir, backend: &str) -> Vec<BadCase> {
    let c = CaseBuilder::new(dir, backend);
    let zero_resync = dir.file("zero-resync.toml", "resync_interval = \"0s\"\n");
    let star_namespaces = dir.file(
        "star-namespaces.toml",
        "allow_namespaces = [\"kube-system\", \"*\"]\napiserver = \"auto\"\n",
    );
    // A cache that, if it were used, would install another apiserver.
    let cache = dir.file(
        "discovered.json",
        "{\"apiservers\": [\"192.168.50.99:5443\"], \"pod_cidrs\": [], \"allowed\": {}}\n",
    );
    let not_kubeconfig = dir.file("not-a-kubeconfig", "clusters: 7\n");
    vec![
        // The allow-list: a real namespace per entry, and every message names where the value came from.
        c.b(
            "allow-pods entry with an empty namespace",
            &[("--allow-pods", Some("/apiserver-guard.io/allow=true"))],
            &[
                "--allow-pods: selector '/apiserver-guard.io/allow=true' has an empty namespace part",
                "NAMESPACE must be a real namespace name",
                "e.g. monitoring/apiserver-guard.io/allow=true",
            ],
        )
        .without(&["monitoring//"]),
        c.be(
            "allow-pods entry with namespace * via APISERVER_GUARD_ALLOW_PODS",
            &[],
            &[("APISERVER_GUARD_ALLOW_PODS", "*/app=x")],
            &[
                "APISERVER_GUARD_ALLOW_PODS: selector '*/app=x' names the namespace '*'",
                "no wildcard",
                "anyone who may create a pod anywhere can set a label",
            ],
        )
        .without(&["monitoring/*"]),
        c.b(
            "allow-pods selector without a namespace",
            &[("--allow-pods", Some("apiserver-guard.io/allow=true"))],
            &[
                "--allow-pods: selector 'apiserver-guard.io/allow=true' names no namespace",
                "e.g. monitoring/apiserver-guard.io/allow=true",
            ],
        ),
        c.b(
            "allow_namespaces * in the config file",
            &[("--apiserver", None), ("--config", Some(star_namespaces.as_str()))],
            &[
                &format!("allow_namespaces in {star_namespaces}: '*' is not a namespace name"),
                "no wildcard",
            ],
        ),
        c.b(
            "allow-namespaces that is no namespace name",
            &[("--allow-namespaces", Some("Kube_System"))],
            &["--allow-namespaces: 'Kube_System' is not a namespace name"],
        ),
        // Daemon settings are validated by every command, as `run` does.
        c.b(
            "resync_interval = 0s in the config file",
            &[("--config", Some(zero_resync.as_str()))],
            &[&format!("resync_interval in {zero_resync}: '0s'"), "100ms..1h"],
        ),
        c.be(
            "APISERVER_GUARD_RESYNC_INTERVAL=0s",
            &[],
            &[("APISERVER_GUARD_RESYNC_INTERVAL", "0s")],
            &["APISERVER_GUARD_RESYNC_INTERVAL: '0s'", "100ms..1h"],
        ),
        c.be(
            "APISERVER_GUARD_LISTEN=nonsense",
            &[],
            &[("APISERVER_GUARD_LISTEN", "nonsense")],
            &["APISERVER_GUARD_LISTEN: 'nonsense'", "address:port"],
        ),
        // A missing kubeconfig is a configuration error, never a reason to use the cache.
        c.b(
            "missing kubeconfig with a discovery cache at hand",
            &[
                ("--apiserver", Some("auto")),
                ("--kubeconfig", Some(MISSING_KUBECONFIG)),
                ("--discovery-cache", Some(cache.as_str())),
            ],
            &["--kubeconfig: cannot read the kubeconfig", MISSING_KUBECONFIG],
        )
        .without(&["last known state"]),
        c.be(
            "missing kubeconfig via APISERVER_GUARD_KUBECONFIG",
            &[
                ("--apiserver", Some("auto")),
                ("--discovery-cache", Some(cache.as_str())),
            ],
            &[("APISERVER_GUARD_KUBECONFIG", MISSING_KUBECONFIG)],
            &[
                "APISERVER_GUARD_KUBECONFIG: cannot read the kubeconfig",
                MISSING_KUBECONFIG,
            ],
        ),
        c.b(
            "kubeconfig that is not one",
            &[
                ("--apiserver", Some("auto")),
                ("--kubeconfig", Some(not_kubeconfig.as_str())),
                ("--discovery-cache", Some(cache.as_str())),
            ],
            &["--kubeconfig:", "not a valid kubeconfig"],
        ),
    ]
}
