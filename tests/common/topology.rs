//! `Topology`: the three-namespace test network `pod <-veth-> node <-veth-> api`
//! (IPv4 + IPv6, forwarding in `node`), with TCP listeners on every apiserver
//! namespace address; see `addresses.rs` for the addressing plan.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::addresses::*;
use super::listener::Listener;
use super::netns::Netns;

/// Interface in the node namespace facing the pod.
pub const NODE_POD_IF: &str = "to-pod";
/// Interface in the node namespace towards the second pod (`Topology::add_other_pod`).
pub const NODE_OTHER_POD_IF: &str = "to-pod-b";
/// Interface in the node namespace facing the apiserver namespace.
pub const NODE_API_IF: &str = "to-api";
/// Interface in the pod namespace (peer of `NODE_POD_IF`).
pub const POD_IF: &str = "eth0";
/// Interface in the apiserver namespace (peer of `NODE_API_IF`).
pub const API_IF: &str = "eth0";

/// Addresses served by the listeners, each on `API_PORT` and `OTHER_PORT`.
pub const LISTEN_ADDRS: [&str; 4] = [API_V4, API_V6, OTHER_V4, OTHER_V6];

const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// pod, node and apiserver namespaces wired together, with listeners running.
/// Dropping it stops the listeners and deletes the three namespaces.
pub struct Topology {
    pub pod: Netns,
    pub node: Netns,
    pub api: Netns,
    listeners: Vec<Listener>,
}

/// A veth pair created from `node`: `node_if` there, `peer_if` in `peer`.
fn veth(node: &Netns, node_if: &str, peer: &Netns, peer_if: &str) {
    node.ip_ok(&[
        "link", "add", node_if, "type", "veth", "peer", "name", peer_if, "netns", &peer.name,
    ]);
}

impl Topology {
    /// Build the network, start the listeners and wait (<= 5 s) until the pod
    /// can connect to `API_V4` and `API_V6` on `API_PORT`. Panics on failure
    /// (whatever was created is still cleaned up).
    pub fn new() -> Topology {
        let mut topo = Topology {
            pod: Netns::new("pod"),
            node: Netns::new("node"),
            api: Netns::new("api"),
            listeners: Vec::new(),
        };
        topo.wire();
        topo.start_listeners();
        topo.wait_ready();
        topo
    }

    fn wire(&self) {
        let (pod, node, api) = (&self.pod, &self.node, &self.api);

        // No duplicate address detection anywhere: besides the `nodad`
        // addresses, the veths' link-local addresses must be usable at once,
        // or IPv6 traffic stalls ~2 s while they are tentative.
        const NO_DAD: [(&str, &str); 2] = [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ];
        pod.sysctl(&NO_DAD);
        api.sysctl(&NO_DAD);
        node.sysctl(&[
            NO_DAD[0],
            NO_DAD[1],
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ]);

        // Both veth ends are created directly inside our namespaces.
        veth(node, NODE_POD_IF, pod, POD_IF);
        veth(node, NODE_API_IF, api, API_IF);

        node.ip_ok(&["addr", "add", &format!("{NODE_POD_V4}/24"), "dev", NODE_POD_IF]);
        node.ip_ok(&["addr", "add", &format!("{NODE_POD_V6}/64"), "dev", NODE_POD_IF, "nodad"]);
        node.ip_ok(&["addr", "add", &format!("{NODE_API_V4}/24"), "dev", NODE_API_IF]);
        node.ip_ok(&["addr", "add", &format!("{NODE_API_V6}/64"), "dev", NODE_API_IF, "nodad"]);
        node.ip_ok(&["addr", "add", &format!("{NODE_LOCAL_POD_V4}/32"), "dev", "lo"]);
        node.ip_ok(&["addr", "add", &format!("{NODE_LOCAL_POD_V6}/128"), "dev", "lo", "nodad"]);
        node.ip_ok(&["link", "set", NODE_POD_IF, "up"]);
        node.ip_ok(&["link", "set", NODE_API_IF, "up"]);

        pod.ip_ok(&["addr", "add", &format!("{POD_V4}/24"), "dev", POD_IF]);
        pod.ip_ok(&["addr", "add", &format!("{POD_V6}/64"), "dev", POD_IF, "nodad"]);
        pod.ip_ok(&["link", "set", POD_IF, "up"]);
        pod.ip_ok(&["-4", "route", "add", "default", "via", NODE_POD_V4]);
        pod.ip_ok(&["-6", "route", "add", "default", "via", NODE_POD_V6]);

        api.ip_ok(&["addr", "add", &format!("{API_V4}/24"), "dev", API_IF]);
        api.ip_ok(&["addr", "add", &format!("{OTHER_V4}/24"), "dev", API_IF]);
        api.ip_ok(&["addr", "add", &format!("{API_V6}/64"), "dev", API_IF, "nodad"]);
        api.ip_ok(&["addr", "add", &format!("{OTHER_V6}/64"), "dev", API_IF, "nodad"]);
        api.ip_ok(&["link", "set", API_IF, "up"]);
        // Default routes back through the node also cover the container CIDRs.
        api.ip_ok(&["-4", "route", "add", "default", "via", NODE_API_V4]);
        api.ip_ok(&["-6", "route", "add", "default", "via", NODE_API_V6]);
    }

    /// A second pod on an interface of its own (`NODE_OTHER_POD_IF`, `OTHER_POD_V4`
    /// in the container CIDR, default route via the node), as a CNI with one
    /// veth per pod gives it. The caller keeps the namespace alive.
    pub fn add_other_pod(&self) -> Netns {
        let pod2 = Netns::new("pod-b");
        veth(&self.node, NODE_OTHER_POD_IF, &pod2, POD_IF);
        self.node.ip_ok(&[
            "addr",
            "add",
            &format!("{NODE_OTHER_POD_V4}/24"),
            "dev",
            NODE_OTHER_POD_IF,
        ]);
        self.node.ip_ok(&["link", "set", NODE_OTHER_POD_IF, "up"]);
        pod2.ip_ok(&["addr", "add", &format!("{OTHER_POD_V4}/24"), "dev", POD_IF]);
        pod2.ip_ok(&["link", "set", POD_IF, "up"]);
        pod2.ip_ok(&["-4", "route", "add", "default", "via", NODE_OTHER_POD_V4]);
        pod2
    }

    /// Stop every listener: listening sockets are closed (new connections are
    /// refused) and open connections are shut down. For "apiserver down" tests.
    pub fn stop_listeners(&mut self) {
        for l in &self.listeners {
            l.request_stop();
        }
        self.listeners.clear();
    }

    /// (Re)start the listeners after `stop_listeners`; no-op if running.
    pub fn start_listeners(&mut self) {
        if !self.listeners.is_empty() {
            return;
        }
        for ip in LISTEN_ADDRS {
            for port in [API_PORT, OTHER_PORT] {
                self.listeners.push(Listener::start(&self.api, ip, port));
            }
        }
    }

    /// All namespace names (pod, node, api).
    pub fn netns_names(&self) -> [&str; 3] {
        [&self.pod.name, &self.node.name, &self.api.name]
    }

    fn wait_ready(&self) {
        let targets: Vec<SocketAddr> = [API_V4, API_V6]
            .iter()
            .map(|ip| SocketAddr::new(ip.parse::<IpAddr>().expect("valid constant"), API_PORT))
            .collect();
        let deadline = Instant::now() + READY_TIMEOUT;
        let result = self.pod.in_thread(|| loop {
            let errors: Vec<String> = targets
                .iter()
                .filter_map(|t| {
                    TcpStream::connect_timeout(t, Duration::from_millis(500))
                        .err()
                        .map(|e| format!("{t}: {e}"))
                })
                .collect();
            if errors.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(errors.join("; "));
            }
            thread::sleep(Duration::from_millis(20));
        });
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!(
                "topology {:?} not ready after {READY_TIMEOUT:?}: {e}",
                self.netns_names()
            ),
            Err(e) => panic!("cannot enter pod netns {}: {e}", self.pod.name),
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Listener threads are inside `api`; stop them before the namespaces go.
        self.stop_listeners();
    }
}
