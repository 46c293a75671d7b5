//! The attempts reader the daemon keeps running: the NFLOG group it reads
//! (none: `--log-group off`) and its task, started, moved to the group a
//! reload asks for, and stopped, in one place.

use super::metrics::Metrics;
use super::nflog::{self, Attribution};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// The reader of one group, or none.
pub struct AttemptReader {
    group: Option<u16>,
    task: Option<JoinHandle<()>>,
    state: Arc<Mutex<Metrics>>,
    attribution: Option<Attribution>,
}

impl AttemptReader {
    /// Reads `group` (nothing for None), naming pods with `attribution`.
    pub fn start(group: Option<u16>, state: Arc<Mutex<Metrics>>, attribution: Option<Attribution>) -> AttemptReader {
        let task = group.map(|g| tokio::spawn(nflog::run(g, state.clone(), attribution.clone())));
        AttemptReader {
            group,
            task,
            state,
            attribution,
        }
    }

    /// After a reload: read `want`, the group the rules now log to (a new
    /// reader when it changed, none for `off`), so the reader never reports
    /// "bound" on a group nothing logs to. Pods are named as at the start
    /// (`discovery_on` but no attribution: the daemon started with `off`
    /// names them after a restart).
    pub fn follow(&mut self, want: Option<u16>, discovery_on: bool) {
        if want == self.group {
            return;
        }
        self.stop();
        {
            let mut m = self.state.lock().unwrap_or_else(|p| p.into_inner());
            m.attempts.group = None;
            m.attempts.bound = false;
            m.attempts.problem = None;
        }
        let was = self.group.map_or("off".to_string(), |g| g.to_string());
        match want {
            Some(group) => {
                log::info!(group = group; "log_group changed ({was} -> {group}): reading attempts from the new group");
                if self.attribution.is_none() && discovery_on {
                    log::warn!(
                        "attempts are named after pods from the next restart (the daemon started with --log-group off)"
                    );
                }
            }
            None => log::info!("log_group changed ({was} -> off): no log rules, no attempts read"),
        }
        self.group = want;
        self.task = want.map(|g| tokio::spawn(nflog::run(g, self.state.clone(), self.attribution.clone())));
    }

    /// Stops the reader (the daemon is stopping, or the group changes).
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
