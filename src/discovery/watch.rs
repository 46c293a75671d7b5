//! The watches: one kube-runtime watcher per source (the `kubernetes`
//! EndpointSlices, this node, the pods on this node), each folding its
//! events into the shared `View`. A re-list (start, 410 Gone, reconnect)
//! replaces a source's facts only once it is complete; an error keeps the
//! last known facts and marks the source down. Never exits on errors: the
//! watcher retries with backoff.

use super::extract::{allowed_pod_ips, node_pod_cidrs, slice_endpoints, AllowRule, SERVICE_LABEL};
use super::state::Discovered;
use super::View;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use std::collections::BTreeMap;
use std::fmt::Debug;
use tokio::sync::watch;

pub const SLICES: &str = "endpointslices";
pub const NODE: &str = "node";
pub const PODS: &str = "pods";

/// Key of an object in a source's map.
fn key<K: Resource>(o: &K) -> String {
    let m = o.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

/// Runs one watch forever. `extract` turns an object into the source's
/// value; `store` writes the source's complete map into `Discovered`.
async fn follow<K, V>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    tx: watch::Sender<View>,
    extract: impl Fn(&K) -> V,
    store: impl Fn(&mut Discovered, &BTreeMap<String, V>),
) where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
    V: PartialEq + Clone,
{
    let mut current: BTreeMap<String, V> = BTreeMap::new();
    let mut relist: BTreeMap<String, V> = BTreeMap::new();
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(item) = stream.next().await {
        let mut synced_now = false;
        match item {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(o)) => {
                relist.insert(key(&o), extract(&o));
            }
            Ok(Event::InitDone) => {
                current = std::mem::take(&mut relist);
                synced_now = true;
            }
            Ok(Event::Apply(o)) => {
                current.insert(key(&o), extract(&o));
            }
            Ok(Event::Delete(o)) => {
                current.remove(&key(&o));
            }
            Err(e) => {
                let msg = e.to_string();
                tx.send_if_modified(|v| {
                    let h = v.health.entry(name).or_default();
                    h.errors += 1;
                    let was_up = h.up;
                    h.up = false;
                    let changed = was_up || h.last_error != msg;
                    h.last_error = msg.clone();
                    if was_up {
                        log::warn!(source = name; "discovery: {name} watch failed, enforcing the last known state: {msg}");
                    }
                    changed
                });
                continue;
            }
        }
        tx.send_if_modified(|v| {
            let h = v.health.entry(name).or_default();
            let health_changed = !h.up || (synced_now && !h.synced);
            if !h.up && h.errors > 0 {
                log::info!(source = name; "discovery: {name} watch is back");
            }
            h.up = true;
            h.synced |= synced_now;
            if !h.synced {
                return health_changed;
            }
            let before = v.discovered.clone();
            store(&mut v.discovered, &current);
            let changed = v.discovered != before;
            if changed {
                v.changed_at = Some(std::time::Instant::now());
                v.generation += 1;
            }
            changed || health_changed
        });
    }
}

/// The `kubernetes` EndpointSlices in `default`.
pub async fn slices(client: Client, tx: watch::Sender<View>) {
    let api: Api<EndpointSlice> = Api::namespaced(client, "default");
    let cfg = watcher::Config::default().labels(SERVICE_LABEL);
    follow(SLICES, api, cfg, tx, slice_endpoints, |d, m| {
        d.slices = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    })
    .await
}

/// This node: its pod CIDRs.
pub async fn node(client: Client, node_name: String, tx: watch::Sender<View>) {
    let api: Api<Node> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    follow(NODE, api, cfg, tx, node_pod_cidrs, |d, m| {
        // A node that vanished from the list keeps its last known CIDRs.
        if let Some(cidrs) = m.values().next() {
            d.pod_cidrs = Some(cidrs.clone());
        }
    })
    .await
}

/// The pods on this node (field selector), filtered locally by the allow rule.
pub async fn pods(client: Client, node_name: String, allow: AllowRule, tx: watch::Sender<View>) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let extract = move |p: &Pod| allowed_pod_ips(p, &node_name, &allow);
    follow(PODS, api, cfg, tx, extract, |d, m| {
        d.allowed = m
            .iter()
            .filter(|(_, ips)| !ips.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    })
    .await
}
