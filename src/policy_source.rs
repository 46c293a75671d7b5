//! Where the policy comes from: flags/env and the config file, plus, when
//! asked for (`auto`, the allow-list, the node taint), Kubernetes discovery
//! settings. One-shot commands resolve discovery once (`snapshot`); the
//! daemon follows it live. The node's own addresses decide the INPUT hook.

use crate::cli::PolicyArgs;
use crate::config::{load_file, merge};
use crate::core::policy::Policy;
use crate::discovery::settings::{self, Env};
use crate::discovery::state::effective_policy;
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
    let file = load_file(args.config.as_deref())?;
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

/// The policy for a one-shot command: configured, plus one discovery snapshot when asked for.
pub fn one_shot(args: &PolicyArgs) -> Result<Policy> {
    let (base, discovery) = configured(args, None)?;
    let Some(cfg) = discovery else {
        return Ok(localized(base));
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
    let found = rt
        .block_on(snapshot(&cfg, SNAPSHOT_TIMEOUT))
        .map_err(|e| Error::runtime(format!("Kubernetes discovery: {e}")))?;
    Ok(localized(effective_policy(&base, cfg.wants, &found)))
}
