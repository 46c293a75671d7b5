//! Kubernetes discovery: the apiserver endpoints (the `kubernetes`
//! EndpointSlices and the kubeconfig's server), this node's pod CIDRs and
//! the IPs of the pods on this node that keep apiserver access, followed
//! live with list + watch. The daemon turns each change into one
//! transaction; one-shot commands take a `snapshot`. The daemon also follows
//! every pod of its node to name the pod behind an attempt (`attribution`),
//! and reports attempts as Events on those pods (`events`). Also the removal of the
//! node's start-up taint once the block is proven.

pub mod attribution;
pub mod client;
pub mod event_book;
pub mod events;
pub mod extract;
pub mod selector;
pub mod settings;
pub mod state;
pub mod taint;
pub mod watch;

use attribution::{PodDirectory, SharedDirectory};
use extract::AllowRule;
use state::{Discovered, Wants};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

/// Health of one watched source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceHealth {
    /// A complete list has arrived at least once.
    pub synced: bool,
    /// The last thing the watch did was succeed.
    pub up: bool,
    pub errors: u64,
    pub last_error: String,
}

impl SourceHealth {
    /// What is wrong with the source `name`, if anything (it must have
    /// listed and its watch must be working), as the logs and `/readyz` say it.
    pub fn problem(&self, name: &str) -> Option<String> {
        match (self.up && self.synced, self.last_error.is_empty()) {
            (true, _) => None,
            (false, false) => Some(format!("{name}: {}", self.last_error)),
            (false, true) => Some(format!("{name} not listed yet")),
        }
    }
}

/// What discovery publishes: the facts, per-source health, and when the facts last changed.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub discovered: Discovered,
    pub health: BTreeMap<&'static str, SourceHealth>,
    pub changed_at: Option<Instant>,
    /// Bumped on every change of the facts.
    pub generation: u64,
}

impl View {
    /// Every source has listed completely at least once.
    pub fn synced(&self, sources: &[&'static str]) -> bool {
        sources.iter().all(|s| self.health.get(s).is_some_and(|h| h.synced))
    }

    /// Sources that are not healthy now, with the reason.
    pub fn down(&self, sources: &[&'static str]) -> Vec<String> {
        let unknown = SourceHealth::default();
        sources
            .iter()
            .filter_map(|s| self.health.get(s).unwrap_or(&unknown).problem(s))
            .collect()
    }
}

/// Discovery settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    pub wants: Wants,
    pub allow: AllowRule,
    pub node_name: String,
    pub client: client::Source,
    /// Taint to remove from this node once the block is in place and verified.
    pub node_taint: Option<String>,
    /// Where the last known discovered state is kept across restarts.
    pub cache_file: PathBuf,
}

impl DiscoveryConfig {
    /// The watched sources this configuration needs.
    pub fn sources(&self) -> Vec<&'static str> {
        let mut s = Vec::new();
        if self.wants.apiservers {
            s.push(watch::SLICES);
        }
        if self.wants.pod_cidrs {
            s.push(watch::NODE);
        }
        if self.wants.allow_list {
            s.push(watch::PODS);
        }
        s
    }
}

/// Running discovery: the tasks and the channel they publish on.
pub struct Discovery {
    pub rx: channel::Receiver<View>,
    pub tx: channel::Sender<View>,
    pub client: kube::Client,
    /// Source address -> pod, when attribution was asked for.
    pub pods: Option<SharedDirectory>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connects and starts the watches (must run inside a tokio runtime).
/// `initial` seeds the view (the cache), so the last known state holds until
/// each source has listed. With `attribute`, the pods of the node are
/// followed (allow-list or not) to name the pod behind a source address.
pub async fn start(cfg: &DiscoveryConfig, initial: Discovered, attribute: bool) -> Result<Discovery, String> {
    let (client, url) = client::connect(&cfg.client).await?;
    let (tx, rx) = channel::channel(View {
        discovered: initial,
        ..View::default()
    });
    if cfg.wants.apiservers {
        // The server we talk to is an apiserver too (resolved once; a name that
        // does not resolve is logged, the EndpointSlices still count).
        match client::server_endpoints(&url).await {
            Ok(eps) => tx.send_modify(|v| v.discovered.kubeconfig_server = eps),
            Err(e) => log::warn!("discovery: {e}"),
        }
    }
    let mut tasks = Vec::new();
    if cfg.wants.apiservers {
        tasks.push(tokio::spawn(watch::slices(client.clone(), tx.clone())));
    }
    if cfg.wants.pod_cidrs {
        tasks.push(tokio::spawn(watch::node(
            client.clone(),
            cfg.node_name.clone(),
            tx.clone(),
        )));
    }
    let pods = attribute.then(PodDirectory::shared);
    if cfg.wants.allow_list || pods.is_some() {
        tasks.push(tokio::spawn(watch::pods(
            client.clone(),
            cfg.node_name.clone(),
            cfg.wants.allow_list.then(|| cfg.allow.clone()),
            pods.clone(),
            tx.clone(),
        )));
    }
    Ok(Discovery {
        rx,
        tx,
        client,
        pods,
        tasks,
    })
}

/// Failed attempts of one source after which a one-shot look gives up.
pub const SNAPSHOT_ATTEMPTS: u64 = 3;

/// One complete look (for `apply`, `status`, `render`, `verify`): starts the
/// watches, waits until every source has listed once, stops them. Gives up
/// after `timeout`, or as soon as a source has failed `SNAPSHOT_ATTEMPTS` times.
pub async fn snapshot(cfg: &DiscoveryConfig, timeout: Duration) -> Result<Discovered, String> {
    let d = start(cfg, Discovered::default(), false).await?;
    let sources = cfg.sources();
    let mut rx = d.rx.clone();
    let settled =
        |v: &View| v.synced(&sources) || v.health.values().any(|h| !h.synced && h.errors >= SNAPSHOT_ATTEMPTS);
    let waited = tokio::time::timeout(timeout, rx.wait_for(settled)).await;
    match waited {
        Ok(Ok(v)) if v.synced(&sources) => Ok(v.discovered.clone()),
        _ => Err(format!(
            "discovery did not complete within {} s ({} via {}): {}",
            timeout.as_secs(),
            sources.join(", "),
            cfg.client,
            d.rx.borrow().down(&sources).join("; ")
        )),
    }
}
