//! `FakeApiServer`: a fake kube-apiserver for integration tests, speaking the
//! real protocol (HTTPS with a bearer token, HTTP/1.1 keep-alive, JSON lists,
//! chunked watches with resourceVersions, bookmarks and 410 Expired, JSON and
//! merge PATCH, POST of Events) for EndpointSlices, Pods, Nodes and Events, inside a test's network
//! namespace, on plain threads. Tests set objects, inject faults (expired
//! watches, a stopped server) and observe the requests and open watches.

mod http;
mod objects;
mod patch;
mod routes;
mod selector;
mod server;
mod store;
mod tls;
mod watch;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::netns::Netns;
pub use objects::PodSpec;
use objects::Resource;
use server::{Session, Shared};

const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// A fake apiserver listening inside one namespace. Dropping it stops it
/// (listener and connections closed, threads joined).
pub struct FakeApiServer {
    addr: SocketAddr,
    netns_path: String,
    ca_pem: String,
    shared: Arc<Shared>,
    session: Mutex<Option<Session>>,
}

impl FakeApiServer {
    /// Listen in `ns` on `bind` ("127.0.0.1:0", "192.168.50.1:6443", "[::1]:0"...)
    /// with a fresh CA and serving certificate and a random bearer token.
    /// Panics if the address cannot be bound.
    pub fn start(ns: &Netns, bind: &str) -> FakeApiServer {
        let addr: SocketAddr = bind
            .parse()
            .unwrap_or_else(|e| panic!("bad fake apiserver address {bind:?}: {e}"));
        let listener = ns
            .in_thread(|| {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(l)
            })
            .and_then(|r| r)
            .unwrap_or_else(|e| panic!("cannot listen on {addr} in netns {}: {e}", ns.name));
        let addr = listener.local_addr().expect("listener address");
        let tls = tls::make(addr.ip());
        let uid_prefix = u32::from_be_bytes(tls::random_bytes(4).try_into().expect("4 bytes"));
        let shared = Arc::new(Shared {
            store: store::Store::new(uid_prefix),
            token: tls::random_token(),
            tls: tls.config,
        });
        let session = Session::start(listener, Arc::clone(&shared));
        FakeApiServer {
            addr,
            netns_path: ns.path(),
            ca_pem: tls.ca_pem,
            shared,
            session: Mutex::new(Some(session)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> String {
        self.shared.token.clone()
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// `https://<addr>` (IPv6 in brackets; an unspecified bind address becomes loopback).
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("https://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Write `<dir>/kubeconfig` pointing at `url()` with the CA and token
    /// (one cluster, user and context, set as current). Returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        self.write_kubeconfig_file(&dir.join("kubeconfig"), &self.url())
    }

    /// Same, with `server` as the server URL ("https://" is prepended when it
    /// has no scheme), written to `<dir>/kubeconfig-<server, sanitized>`.
    pub fn write_kubeconfig_with_server(&self, dir: &Path, server: &str) -> PathBuf {
        let url = if server.contains("://") {
            server.to_string()
        } else {
            format!("https://{server}")
        };
        let suffix: String = server
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.write_kubeconfig_file(&dir.join(format!("kubeconfig-{suffix}")), &url)
    }

    fn write_kubeconfig_file(&self, path: &Path, server: &str) -> PathBuf {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: \"{server}\"\n    \
             certificate-authority-data: {ca}\nusers:\n- name: fake\n  user:\n    token: \"{}\"\ncontexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            self.shared.token
        );
        fs::write(path, yaml).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path.to_path_buf()
    }

    // --- objects -----------------------------------------------------------

    /// Upsert EndpointSlice `name` in "default" for the `kubernetes` service
    /// (label `kubernetes.io/service-name=kubernetes`), one ready endpoint per
    /// address, port "https"/`port`/TCP; addressType from the first address.
    pub fn set_endpoint_slice(&self, name: &str, addresses: &[&str], port: u16) {
        self.set_endpoint_slice_labelled(name, &[("kubernetes.io/service-name", "kubernetes")], addresses, port);
    }

    /// Same, with arbitrary labels.
    pub fn set_endpoint_slice_labelled(&self, name: &str, labels: &[(&str, &str)], addresses: &[&str], port: u16) {
        let obj = objects::endpoint_slice(name, labels, addresses, port);
        self.shared.store.update(|s| s.put(Resource::EndpointSlices, obj));
    }

    pub fn delete_endpoint_slice(&self, name: &str) {
        self.shared
            .store
            .update(|s| s.remove(Resource::EndpointSlices, "default", name));
    }

    /// Upsert a Pod (see `PodSpec`).
    pub fn set_pod(&self, namespace: &str, name: &str, spec: PodSpec) {
        let obj = objects::pod(namespace, name, &spec);
        self.shared.store.update(|s| s.put(Resource::Pods, obj));
    }

    /// What the apiserver does when a pod is deleted with a grace period: the
    /// object stays, `metadata.deletionTimestamp` (now) and
    /// `deletionGracePeriodSeconds` are set (a MODIFIED event). False if
    /// there is no such pod.
    pub fn start_deleting_pod(&self, namespace: &str, name: &str, grace_seconds: u32) -> bool {
        self.shared.store.update(|s| {
            let Some(mut obj) = s.get(Resource::Pods, namespace, name).cloned() else {
                return false;
            };
            obj["metadata"]["deletionTimestamp"] = objects::now_rfc3339().into();
            obj["metadata"]["deletionGracePeriodSeconds"] = grace_seconds.into();
            s.put(Resource::Pods, obj);
            true
        })
    }

    /// The stored Pod object (its uid, as assigned), if any.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        self.shared.store.lock().get(Resource::Pods, namespace, name).cloned()
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.shared.store.update(|s| s.remove(Resource::Pods, namespace, name));
    }

    /// Upsert a Node: spec.podCIDR(s), spec.taints (key and effect), and
    /// status.addresses (InternalIP per address, plus Hostname).
    pub fn set_node(&self, name: &str, pod_cidrs: &[&str], taints: &[(&str, &str)], addresses: &[&str]) {
        let obj = objects::node(name, pod_cidrs, taints, addresses);
        self.shared.store.update(|s| s.put(Resource::Nodes, obj));
    }

    pub fn delete_node(&self, name: &str) {
        self.shared.store.update(|s| s.remove(Resource::Nodes, "", name));
    }

    /// Current taint keys of node `name` (empty if it has none or does not exist).
    pub fn node_taints(&self, name: &str) -> Vec<String> {
        self.node(name)
            .and_then(|n| n["spec"]["taints"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["key"].as_str().map(str::to_string))
            .collect()
    }

    /// The stored Node object, as the apiserver would return it.
    pub fn node(&self, name: &str) -> Option<serde_json::Value> {
        self.shared.store.lock().get(Resource::Nodes, "", name).cloned()
    }

    /// The stored Events (what agents created and patched), in (namespace, name) order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.shared.store.lock().all(Resource::Events).cloned().collect()
    }

    /// Writes to Events so far ("POST /api/v1/namespaces/NS/events", "PATCH .../events/NAME").
    pub fn event_writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| (r.starts_with("POST ") || r.starts_with("PATCH ")) && r.contains("/events"))
            .collect()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().rv
    }

    // --- faults and observation ---------------------------------------------

    /// Every open watch gets an ERROR event (410 Expired) and ends; the
    /// history is compacted, so watches from an older resourceVersion get 410.
    pub fn expire_watches(&self) {
        self.shared.store.update(|s| s.expire());
    }

    /// Close the listener and every connection; new connections are refused.
    /// Returns when all connection threads have ended. No-op when stopped.
    pub fn stop(&self) {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(session);
        self.shared.store.notify();
    }

    /// Listen again on the same address, with the same certificate, token and
    /// objects. No-op when running. Panics if the address cannot be re-bound.
    pub fn resume(&self) {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if session.is_some() {
            return;
        }
        let deadline = Instant::now() + REBIND_TIMEOUT;
        let listener = loop {
            match server::bind_in_netns(&self.netns_path, self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot listen again on {} in {}: {e}", self.addr, self.netns_path)
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        *session = Some(Session::start(listener, Arc::clone(&self.shared)));
    }

    /// "METHOD /path?query" of every request so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().requests.clone()
    }

    /// Watches open now on `resource` ("endpointslices", "pods", "nodes").
    pub fn open_watches(&self, resource: &str) -> usize {
        let r = Resource::from_plural(resource).unwrap_or_else(|| panic!("unknown resource {resource:?}"));
        self.shared.store.lock().open_watches.get(&r).copied().unwrap_or(0)
    }

    /// Wait (at most `timeout`) until at least `n` watches are open on `resource`.
    pub fn wait_watches(&self, resource: &str, n: usize, timeout: Duration) -> bool {
        let r = Resource::from_plural(resource).unwrap_or_else(|| panic!("unknown resource {resource:?}"));
        let deadline = Instant::now() + timeout;
        let store = &self.shared.store;
        let mut st = store.lock();
        loop {
            if st.open_watches.get(&r).copied().unwrap_or(0) >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = store.wait(st, left.min(Duration::from_millis(50)));
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
