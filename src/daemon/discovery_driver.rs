//! The daemon's side of Kubernetes discovery: start it (seeded from the
//! cache, waiting only for what the policy cannot do without), turn each
//! discovered change into one transaction with the same backend (an element
//! update on nftables), keep the cache, report health, and remove the node
//! taint once the block is installed and a probe has proven it.

use super::discovery_status::DiscoveryStatus;
use super::stop::Stop;
use super::{Daemon, Loaded};
use crate::discovery::settings::describe;
use crate::discovery::state::{change_summary, effective_policy, load_cache, save_cache, Discovered};
use crate::discovery::taint::{self, Removal};
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::error::{Error, Result};
use crate::node_facts::localized;
use crate::verify::report::Report;
use std::time::Duration;

/// How often the node taint removal is attempted until it succeeds.
pub const TAINT_RETRY: Duration = Duration::from_secs(2);
/// Longest wait for the apiserver to answer one taint removal.
const TAINT_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Health entries for every source the configuration watches, not yet listed.
pub fn initial_status(cfg: &DiscoveryConfig) -> DiscoveryStatus {
    DiscoveryStatus {
        sources: cfg.sources().into_iter().map(|s| (s, Default::default())).collect(),
        node_taint: cfg.node_taint.clone().map(|k| (k, false)),
        ..Default::default()
    }
}

fn seed(cfg: &DiscoveryConfig) -> Discovered {
    if !cfg.wants.any() {
        return Discovered::default();
    }
    match load_cache(&cfg.cache_file) {
        Ok(Some(d)) => {
            log::info!(
                "discovery: enforcing the last known state from {} until the apiserver answers",
                cfg.cache_file.display()
            );
            d
        }
        Ok(None) => Discovered::default(),
        Err(e) => {
            log::warn!("discovery: ignoring the cache file: {e}");
            Discovered::default()
        }
    }
}

/// Starts discovery and waits until the policy can block something (an
/// apiserver and a pod CIDR known, from the cache or the cluster). Returns
/// None when a signal ended the wait, Some(None) when discovery is off.
pub(super) async fn begin(loaded: &Loaded, mut stop: Stop) -> Result<Option<Option<Discovery>>> {
    let Some(cfg) = &loaded.discovery else {
        return Ok(Some(None));
    };
    log::info!("Kubernetes discovery: {}", describe(cfg));
    // With a log group, the pods of the node are followed to name the pod behind each attempt.
    let d = crate::discovery::start(cfg, seed(cfg), loaded.base.log_group.is_some())
        .await
        .map_err(|e| Error::runtime(format!("Kubernetes discovery: {e}")))?;
    let mut rx = d.rx.clone();
    let mut said = false;
    loop {
        let missing = rx.borrow_and_update().discovered.missing(cfg.wants, &loaded.base);
        let Some(why) = missing else { break };
        if !said {
            log::info!("waiting for discovery before installing anything: {why}");
            said = true;
        }
        tokio::select! {
            r = rx.changed() => r.map_err(|_| Error::runtime("discovery stopped"))?,
            _ = stop.requested() => return Ok(None),
        }
    }
    Ok(Some(Some(d)))
}

impl Daemon {
    /// A discovery update: report health; when the facts changed, apply
    /// the new policy in one transaction (or refuse it and keep the old).
    pub(super) async fn on_discovery(&mut self) {
        let (Some(d), Some(cfg)) = (&self.discovery, &self.discovery_cfg) else {
            return;
        };
        let view = d.rx.borrow().clone();
        let cfg = cfg.clone();
        {
            let mut m = self.metrics();
            let st = m.discovery.get_or_insert_with(|| initial_status(&cfg));
            for s in cfg.sources() {
                st.sources.insert(s, view.health.get(s).cloned().unwrap_or_default());
            }
            st.apiserver_endpoints = view.discovered.apiservers().len();
            st.allowed_pod_ips = view.discovered.allowed_ips().len();
            st.pod_cidrs = view.discovered.pod_cidrs.as_ref().map_or(0, Vec::len);
        }
        if view.generation == self.discovery_applied {
            return;
        }
        self.discovery_applied = view.generation;
        if let Some(why) = view.discovered.missing(cfg.wants, &self.base) {
            log::warn!("discovery: {why}; still enforcing the last policy");
            return;
        }
        let policy = localized(effective_policy(&self.base, cfg.wants, &view.discovered));
        if policy != self.rec.policy {
            let summary = change_summary(&self.rec.policy, &policy);
            if let Err(e) = self.adopt(policy) {
                if let Some(st) = self.metrics().discovery.as_mut() {
                    st.changes_refused += 1;
                }
                log::error!("discovery: the discovered policy is refused, still enforcing the previous one: {e}");
                return;
            }
            if self.reconcile(super::trigger::Trigger::Discovery, false).await {
                let secs = view.changed_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
                if let Some(st) = self.metrics().discovery.as_mut() {
                    st.changes_applied += 1;
                    st.last_apply_seconds = secs;
                }
                log::info!(
                    apply_ms = secs * 1000.0;
                    "discovery: applied {summary} ({:.1} ms after the change arrived)", secs * 1000.0
                );
            }
        }
        let (path, facts) = (cfg.cache_file.clone(), view.discovered.clone());
        match tokio::task::spawn_blocking(move || save_cache(&path, &facts)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("discovery: cannot write the cache {}: {e}", cfg.cache_file.display()),
            Err(e) => log::warn!("discovery: cache task failed: {e}"),
        }
    }

    /// Removes the node taint once the block is in place and a probe passed.
    pub(super) async fn try_untaint(&mut self) {
        let (Some(d), Some(cfg)) = (&self.discovery, &self.discovery_cfg) else {
            return;
        };
        let Some(key) = cfg.node_taint.clone() else { return };
        let (client, node) = (d.client.clone(), cfg.node_name.clone());
        let in_place = {
            let m = self.metrics();
            m.started && m.in_sync
        };
        if !in_place {
            return;
        }
        self.probe().await;
        if !self.metrics().probe.as_ref().is_some_and(Report::passed) {
            log::info!("node taint {key} stays: the probe has not proven the block yet");
            return;
        }
        // Bounded: an apiserver that hangs must not hold up the control loop.
        let removal = tokio::time::timeout(TAINT_CALL_TIMEOUT, taint::remove(&client, &node, &key))
            .await
            .unwrap_or_else(|_| Err(format!("the apiserver did not answer within {TAINT_CALL_TIMEOUT:?}")));
        let done = match removal {
            Ok(Removal::Removed) => {
                log::info!("removed taint {key} from node {node}: the block is installed and verified");
                true
            }
            Ok(Removal::Absent) => {
                log::info!("node {node} has no taint {key}: nothing to remove");
                true
            }
            Err(e) => {
                log::warn!(
                    "cannot remove taint {key} yet (retrying every {} s): {e}",
                    TAINT_RETRY.as_secs()
                );
                false
            }
        };
        if done {
            self.taint_pending = false;
            if let Some(st) = self.metrics().discovery.as_mut() {
                st.node_taint = Some((key, true));
            }
        }
    }
}
