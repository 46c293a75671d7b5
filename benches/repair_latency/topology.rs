//! `pod (10.0.1.2/24) <-veth-> node (forwarding) <-veth-> api (192.168.50.10)`, with the shared
//! lean TCP listener on 192.168.50.10:5443 in the api namespace.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use crate::shared::listener::Listener;
use crate::shared::probe::Conn;
use crate::shared::R;

use crate::netns::Netns;
use crate::probe::Probe;

pub const API: &str = "192.168.50.10:5443";

/// The shared lean listener (accept, keep 20 ms, reset) on 192.168.50.10:5443, bound in the api
/// namespace.
pub fn start_listener(api: &Netns) -> R<Listener> {
    let l = api
        .thread("api-bind", || TcpListener::bind(API))?
        .join()
        .ok()
        .flatten()
        .ok_or("listener thread died")?
        .map_err(|e| format!("bind {API}: {e}"))?;
    Listener::serve(vec![l])
}

pub struct Topology {
    // Dropped in this order: probe and listener threads first, then the namespaces.
    pub probe: Probe,
    pub _listener: Listener,
    pub pod: Netns,
    pub node: Netns,
    pub api: Netns,
}

impl Topology {
    pub fn new() -> R<Topology> {
        let pod = Netns::new("pod")?;
        let node = Netns::new("node")?;
        let api = Netns::new("api")?;
        node.run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        node.ip(&[
            "link", "add", "to-pod", "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ])?;
        node.ip(&[
            "link", "add", "to-api", "type", "veth", "peer", "name", "eth0", "netns", &api.name,
        ])?;
        node.ip(&["addr", "add", "10.0.1.1/24", "dev", "to-pod"])?;
        node.ip(&["addr", "add", "192.168.50.1/24", "dev", "to-api"])?;
        node.ip(&["link", "set", "to-pod", "up"])?;
        node.ip(&["link", "set", "to-api", "up"])?;
        pod.ip(&["addr", "add", "10.0.1.2/24", "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pod.ip(&["route", "add", "default", "via", "10.0.1.1"])?;
        api.ip(&["addr", "add", "192.168.50.10/24", "dev", "eth0"])?;
        api.ip(&["link", "set", "eth0", "up"])?;
        api.ip(&["route", "add", "default", "via", "192.168.50.1"])?;
        let listener = start_listener(&api)?;
        let probe = Probe::start(&pod)?;
        let topo = Topology {
            probe,
            _listener: listener,
            pod,
            node,
            api,
        };
        // The veths come up asynchronously: wait (bounded) until the pod is served.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if topo.probe.once()? == Conn::Served {
                return Ok(topo);
            }
            if Instant::now() > deadline {
                return Err("the pod cannot reach 192.168.50.10:5443 after 10 s".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes every firewall object in the node namespace (only there). `nft flush ruleset`
    /// skips a table still owned by a daemon's socket: a stopped daemon's table is orphaned by the
    /// kernel shortly after its socket closed, so flush again until no table is left (<= 5 s).
    pub fn clean_node(&self) -> R<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.node.run("nft", &["flush", "ruleset"])?;
            let left = self.node.run("nft", &["list", "tables"])?;
            if left.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "tables left in the node namespace after `nft flush ruleset`:\n{left}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn names(&self) -> String {
        format!("{}, {}, {}", self.pod.name, self.node.name, self.api.name)
    }
}
