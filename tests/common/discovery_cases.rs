//! Helpers for the Kubernetes discovery tests (`tests/discovery.rs`): a
//! cluster made of the three-namespace topology plus a fake apiserver
//! (real protocol, HTTPS + bearer token, list + watch) listening inside the
//! node namespace, a second pod address on the node, the daemon started with
//! discovery flags, and polling helpers that wait for real packets.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use super::curl::{curl, curl_from, CurlResult};
use super::daemon_cases::{Daemon, TempDir};
use super::fake_apiserver::FakeApiServer;
use super::guard_cases::{empty_config, Backend};
use super::netns::Netns;
use super::topology::{Topology, POD_IF};

/// This node's name in the fake cluster.
pub const NODE: &str = "node-a";
/// Another node's name (its pods must be ignored).
pub const OTHER_NODE: &str = "node-b";
/// A second pod on this node, next to `POD_V4` (same veth, same /24).
pub const POD2_V4: &str = "10.0.1.3";
/// The allow-list label used by the tests.
pub const ALLOW_LABEL: (&str, &str) = ("apiserver-guard.io/allow", "true");
/// The start-up taint used by the tests.
pub const TAINT: &str = "apiserver-guard.io/not-ready";
/// How long a discovered change may take to reach the kernel (the target is
/// one second; the margin absorbs a loaded CI machine).
pub const CHANGE_DEADLINE: Duration = Duration::from_secs(5);

/// Topology + fake apiserver in the node namespace + a kubeconfig for it.
pub struct Cluster {
    pub api: FakeApiServer,
    pub topo: Topology,
    pub dir: TempDir,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// The fake apiserver listens on the node namespace's loopback.
    pub fn new(tag: &str) -> Cluster {
        Self::with_bind(tag, "127.0.0.1:0")
    }

    pub fn with_bind(tag: &str, bind: &str) -> Cluster {
        let topo = Topology::new();
        topo.pod
            .ip_ok(&["addr", "add", &format!("{POD2_V4}/24"), "dev", POD_IF]);
        let api = FakeApiServer::start(&topo.node, bind);
        let dir = TempDir::new(tag);
        let kubeconfig = api.write_kubeconfig(&dir.path);
        Cluster {
            api,
            topo,
            dir,
            kubeconfig,
        }
    }

    /// `run` with discovery flags (kubeconfig, node name, cache in the temp dir), tunnel mode,
    /// the backend, text logs, and `extra` (the policy flags of the test).
    pub fn daemon_args(&self, backend: Backend, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "--config",
            empty_config(),
            "--mode",
            "tunnel",
            "--backend",
            backend.flag(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["--kubeconfig".into(), self.kubeconfig.display().to_string()]);
        a.extend(["--node-name".into(), NODE.into()]);
        a.extend([
            "--discovery-cache".into(),
            self.dir.join("discovered.json").display().to_string(),
        ]);
        a.extend(["--log-format".into(), "text".into()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    pub fn spawn(&self, backend: Backend, extra: &[&str]) -> Daemon<'_> {
        Daemon::spawn(&self.topo.node, &self.daemon_args(backend, extra))
    }
}

/// curl from the pod (from `src` when given) to `ip:port`.
pub fn pod_curl(c: &Cluster, src: Option<&str>, ip: &str, port: u16) -> CurlResult {
    match src {
        Some(s) => curl_from(&c.topo.pod, s, ip, port, 3),
        None => curl(&c.topo.pod, ip, port, 3),
    }
}

/// Polls until `cond` holds; returns how long it took, or panics with `what`
/// and the daemon's log after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, d: &Daemon, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("{what}: not within {timeout:?}\n--- daemon log ---\n{}", d.log());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the pod (from `src`) is refused at `ip:port`.
#[track_caller]
pub fn wait_refused(c: &Cluster, d: &Daemon, src: Option<&str>, ip: &str, port: u16, what: &str) -> Duration {
    wait_until(&format!("{what}: refused"), d, CHANGE_DEADLINE, || {
        pod_curl(c, src, ip, port).refused()
    })
}

/// Waits until the pod (from `src`) is served at `ip:port`.
#[track_caller]
pub fn wait_served(c: &Cluster, d: &Daemon, src: Option<&str>, ip: &str, port: u16, what: &str) -> Duration {
    wait_until(&format!("{what}: served"), d, CHANGE_DEADLINE, || {
        pod_curl(c, src, ip, port).served()
    })
}

/// Elements of one of our nftables sets, as `nft -j` prints them (JSON text).
pub fn nft_set(ns: &Netns, set: &str) -> String {
    let out = ns.run(&["nft", "-j", "list", "set", "inet", "apiserver_guard", set]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Handles of the rules in our `guard` chain (they change only when the chain is rewritten).
pub fn guard_rule_handles(ns: &Netns) -> Vec<u64> {
    let out = ns.run(&["nft", "-j", "list", "chain", "inet", "apiserver_guard", "guard"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["nftables"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["rule"]["handle"].as_u64()).collect())
        .unwrap_or_default()
}

/// `curl -k https://ip:port/version` from `ns`: Some(http code) when a TLS
/// server answered, None with curl's exit code otherwise (7 = refused).
pub fn https_code(ns: &Netns, ip: &str, port: u16) -> Result<u16, i32> {
    let url = if ip.contains(':') {
        format!("https://[{ip}]:{port}/version")
    } else {
        format!("https://{ip}:{port}/version")
    };
    let out = ns.run(&[
        "curl",
        "-sk",
        "--max-time",
        "3",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}
