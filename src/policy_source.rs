//! Where the policy comes from: flags/env and the config file, plus, when
//! asked for (`auto`, the allow-list, the node taint), Kubernetes discovery
//! settings. One-shot commands resolve discovery once (`snapshot`, falling
//! back to the daemon's cache when the apiserver does not answer); the
//! daemon follows it live. The node's own addresses decide the INPUT hook.

use crate::cli::PolicyArgs;
use crate::config::{load_file, merge, FileConfig};
use crate::core::policy::Policy;
use crate::discovery::settings::{self, Env};
use crate::discovery::state::{effective_policy, load_cache, save_cache};
use crate::discovery::{snapshot, DiscoveryConfig};
use crate::error::{Error, Result};
use crate::lockout::localized;
use std::time::Duration;

/// How long a one-shot command waits for discovery to list everything.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(15);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The configured policy (without anything discovered) and the discovery
/// settings, if any. Every problem is reported; nothing is contacted.
pub fn configured(args: &PolicyArgs, node_taint: Option<&str>) -> Result<(Policy, Option<DiscoveryConfig>)> {
    configured_from(args, load_file(args.config.as_deref())?, node_taint)
}

/// `configured` with the config file already read.
pub fn configured_from(
    args: &PolicyArgs,
    file: FileConfig,
    node_taint: Option<&str>,
) -> Result<(Policy, Option<DiscoveryConfig>)> {
    let env = Env {
        hostname: hostname(),
        in_pod: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    };
    let taint = node_taint.map(str::to_string).or_else(|| file.node_taint.clone());
    let discovery = settings::merge(args, &file, taint.as_deref(), &env);
    let base = merge(args, file);
    match (base, discovery) {
        (Ok(b), Ok(d)) => Ok((b, d)),
        (Err(Error::BadInput(mut a)), Err(b)) => {
            a.extend(b);
            Err(Error::BadInput(a))
        }
        (Err(e), _) => Err(e),
        (_, Err(b)) => Err(Error::BadInput(b)),
    }
}

/// What a one-shot command does with the discovery cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Read it only when the apiserver does not answer (`status`, `render`, `verify`).
    Fallback,
    /// Also write it after a complete snapshot (`apply`: a later boot without
    /// network, e.g. `apiserver-guard-apply.service`, enforces that state).
    FallbackAndKeep,
}

/// The policy for a one-shot command: configured, plus one discovery
/// snapshot when asked for. When the apiserver does not answer, the last
/// known state from the cache is used (fail-closed, with a warning); with
/// no cache either, it is a runtime error and nothing changes.
pub fn one_shot(args: &PolicyArgs, cache: Cache) -> Result<Policy> {
    let (base, discovery) = configured(args, None)?;
    let Some(cfg) = discovery else {
        return Ok(localized(base));
    };
    if !cfg.wants.any() {
        return Ok(localized(base));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
    let found = match rt.block_on(snapshot(&cfg, SNAPSHOT_TIMEOUT)) {
        Ok(found) => {
            if cache == Cache::FallbackAndKeep {
                if let Err(e) = save_cache(&cfg.cache_file, &found) {
                    eprintln!(
                        "apiserver-guard: warning: cannot write the discovery cache {}: {e}",
                        cfg.cache_file.display()
                    );
                }
            }
            found
        }
        Err(e) => match load_cache(&cfg.cache_file) {
            Ok(Some(cached)) => {
                eprintln!(
                    "apiserver-guard: warning: Kubernetes discovery failed ({e}); using the last known state from {}",
                    cfg.cache_file.display()
                );
                cached
            }
            Ok(None) => return Err(Error::runtime(format!("Kubernetes discovery: {e}"))),
            Err(c) => {
                return Err(Error::runtime(format!(
                    "Kubernetes discovery: {e}; the cache is unusable too: {c}"
                )))
            }
        },
    };
    Ok(localized(effective_policy(&base, cfg.wants, &found)))
}
