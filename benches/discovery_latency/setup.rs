//! The bench's fixture on top of the harness's `Cluster`: the namespaces it probes from and runs
//! the daemon in, the sockets of its listener in the api namespace, the reset between runs, the
//! daemon's command lines (discovery and static policy) and where its logs go.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use crate::common::discovery_cases::Cluster;
use crate::common::guard_cases::Backend;
use crate::common::{Netns, API_PORT, API_V4, CONTAINER_CIDR_V4};
use crate::R;

/// The `kubernetes` Service's EndpointSlice in the fake cluster.
pub const SLICE: &str = "kubernetes";
/// `run` with a static policy (no discovery), as before discovery existed; `--apiserver` is added.
pub const STATIC_POLICY: [&str; 11] = [
    "run",
    "--container-cidr",
    CONTAINER_CIDR_V4,
    "--mode",
    "tunnel",
    "--backend",
    "nftables",
    "--config",
    "/dev/null",
    "--log-format",
    "text",
];

pub fn sock(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("valid constant"), API_PORT)
}

/// TCP listening sockets on `addrs` in the api namespace, for the shared lean `Listener` (in place
/// of the harness's thread-per-connection ones).
pub fn bind_in(api: &Netns, addrs: &[SocketAddr]) -> R<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|a| {
            api.in_thread(|| TcpListener::bind(a))
                .and_then(|r| r)
                .map_err(|e| format!("bind {a} in {}: {e}", api.name))
        })
        .collect()
}

pub struct Bench<'a> {
    pub c: &'a Cluster,
    pub log_dir: PathBuf,
}

impl Bench<'_> {
    pub fn pod(&self) -> &Netns {
        &self.c.topo.pod
    }

    pub fn node(&self) -> &Netns {
        &self.c.topo.node
    }

    fn cache_file(&self) -> PathBuf {
        self.c.dir.join("discovered.json")
    }

    /// Nothing of ours (or anyone's) in the node namespace's firewall, no discovery cache, and
    /// the `kubernetes` slice at 192.168.50.10.
    pub fn reset(&self) -> R<()> {
        let out = self.node().run(&["nft", "flush", "ruleset"]);
        if !out.status.success() {
            return Err(format!("nft flush ruleset: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let _ = std::fs::remove_file(self.cache_file());
        self.c.api.set_endpoint_slice(SLICE, &[API_V4], API_PORT);
        Ok(())
    }

    pub fn discovery_args(&self, backend: Backend) -> Vec<String> {
        self.c
            .daemon_args(backend, &["--apiserver", "auto", "--container-cidr", CONTAINER_CIDR_V4])
    }

    pub fn static_args(&self) -> Vec<String> {
        let mut a: Vec<String> = STATIC_POLICY.iter().map(|s| s.to_string()).collect();
        a.extend(["--apiserver".into(), sock(API_V4).to_string()]);
        a
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("discovery-{name}.log"))
    }
}
