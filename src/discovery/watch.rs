//! The watches: one kube-runtime watcher per source (the `kubernetes`
//! EndpointSlices, this node, the pods on this node), each folding its
//! events into the shared `View` (the pods also into the attribution
//! directory). A re-list (start, 410 Gone, reconnect)
//! replaces a source's facts only once it is complete; an error keeps the
//! last known facts and marks the source down. Never exits on errors: the
//! watcher retries with backoff.

use super::attribution::SharedDirectory;
use super::extract::{node_pod_cidrs, pod_facts, pod_identity, slice_endpoints, AllowRule, SERVICE_LABEL};
use super::state::{allowed_ips_of, Discovered};
use super::View;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;
use tokio::sync::watch;

/// Retry delays of a failing watch: from `FIRST_RETRY`, doubling, capped at
/// `MAX_RETRY` (kube-runtime's default reaches 30 s, too slow to notice a
/// returning apiserver), plus up to `JITTER` so a fleet does not retry in step.
/// Reset after every success.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);
const JITTER: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct RetryBackoff {
    next: Duration,
    seed: u64,
}

impl RetryBackoff {
    pub fn new(seed: u64) -> RetryBackoff {
        RetryBackoff {
            next: FIRST_RETRY,
            seed,
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: cheap, deterministic per seed, good enough to spread retries.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = Duration::from_millis(self.seed % (JITTER.as_millis() as u64 + 1));
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_RETRY);
        Some(delay + jitter)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

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
    let seed = u64::from(std::process::id()) << 8 | name.len() as u64 | 1;
    let mut retry = RetryBackoff::new(seed);
    loop {
        // A fresh watcher lists first, so a recovered source proves itself with
        // a complete list (a resumed watch on a quiet resource says nothing).
        let mut stream = watcher::watcher(api.clone(), config.clone()).boxed();
        while let Some(item) = stream.next().await {
            if !handle(name, item, &tx, &extract, &store, &mut current, &mut relist) {
                break;
            }
            if tx.borrow().health.get(name).is_some_and(|h| h.up && h.synced) {
                retry.reset();
            }
        }
        tokio::time::sleep(retry.next().unwrap_or(MAX_RETRY)).await;
    }
}

/// Folds one watcher item into the view; false on an error (the caller
/// backs off and starts a fresh watcher).
fn handle<K: Resource, V: PartialEq + Clone>(
    name: &'static str,
    item: Result<Event<K>, watcher::Error>,
    tx: &watch::Sender<View>,
    extract: &impl Fn(&K) -> V,
    store: &impl Fn(&mut Discovered, &BTreeMap<String, V>),
    current: &mut BTreeMap<String, V>,
    relist: &mut BTreeMap<String, V>,
) -> bool {
    {
        let mut synced_now = false;
        match item {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(o)) => {
                relist.insert(key(&o), extract(&o));
            }
            Ok(Event::InitDone) => {
                *current = std::mem::take(relist);
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
                return false;
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
            store(&mut v.discovered, current);
            let changed = v.discovered != before;
            if changed {
                v.changed_at = Some(std::time::Instant::now());
                v.generation += 1;
            }
            changed || health_changed
        });
    }
    true
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

/// The pods on this node (field selector), for two readers. The allow-list
/// (`allow`): every pod is followed, allowed or not, so that an allowed pod's
/// IP stops being exempt once another pod shows up with it (`allowed_ips_of`).
/// Attribution (`directory`): who each pod is and its IPs, kept in the
/// directory the attempts reader looks addresses up in; it never touches
/// `Discovered`, so pod churn alone changes no policy.
pub async fn pods(
    client: Client,
    node_name: String,
    allow: Option<AllowRule>,
    directory: Option<SharedDirectory>,
    tx: watch::Sender<View>,
) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let allow_list = allow.is_some();
    let rule = allow.unwrap_or_default();
    let with_identity = directory.is_some();
    let extract = move |p: &Pod| {
        let facts = if allow_list {
            pod_facts(p, &node_name, &rule)
        } else {
            None
        };
        let identity = if with_identity {
            pod_identity(p, &node_name)
        } else {
            None
        };
        (facts, identity)
    };
    follow(PODS, api, cfg, tx, extract, move |d, m| {
        if let Some(dir) = &directory {
            let pods = m.values().filter_map(|(_, id)| id.as_ref());
            dir.lock().unwrap_or_else(|p| p.into_inner()).sync(pods, unix_ms());
        }
        if allow_list {
            d.allowed = allowed_ips_of(m.iter().filter_map(|(k, (f, _))| Some((k, f.as_ref()?))));
        }
    })
    .await
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_to_a_cap_with_bounded_jitter_and_reset() {
        let mut b = RetryBackoff::new(12345);
        let delays: Vec<Duration> = (&mut b).take(8).collect();
        for (d, base) in delays.iter().zip([200u64, 400, 800, 1600, 3200, 5000, 5000, 5000]) {
            let base = Duration::from_millis(base);
            assert!(*d >= base && *d <= base + JITTER, "{d:?} vs {base:?}");
        }
        b.reset();
        assert!(b.next().unwrap() <= FIRST_RETRY + JITTER);
    }
}
