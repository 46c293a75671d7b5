//! Where the policy comes from: flags/env and the config file, plus, when
//! asked for (`auto`, the allow-list, the node taint), Kubernetes discovery
//! settings. `resolve` is the one validator of every setting, whatever the
//! command: policy, discovery and daemon settings (a one-shot command checks
//! the daemon's too when they are given, so `apply` refuses what `run`
//! would). One-shot commands resolve discovery once (`snapshot`, falling
//! back to the daemon's cache only when the apiserver does not answer; a
//! missing kubeconfig is bad input); the daemon follows it live. The node's
//! own addresses decide the INPUT hook.

use crate::cli::{PolicyArgs, RunArgs};
use crate::config::{load_file, merge, origin, FileConfig};
use crate::core::model::Blocklist;
use crate::core::policy::Policy;
use crate::core::validate::{check_lockout, validate};
use crate::daemon_settings::DaemonSettings;
use crate::discovery::client::{check_source, Source};
use crate::discovery::settings::{self, Env};
use crate::discovery::state::{effective_policy, load_cache, save_cache};
use crate::discovery::{snapshot, DiscoveryConfig};
use crate::error::{Error, Result};
use crate::node_facts::{localized, routes};
use std::time::Duration;

/// How long a one-shot command waits for discovery to list everything.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(15);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Every setting, parsed and checked: the daemon's, the configured policy
/// (without anything discovered) and the discovery settings, if any.
pub struct Settings {
    pub daemon: DaemonSettings,
    pub base: Policy,
    pub discovery: Option<DiscoveryConfig>,
}

/// The one validator: flags, env and the config file (already read) for
/// every part at once; every problem is reported, nothing is contacted.
pub fn resolve(run: &RunArgs, file: FileConfig) -> Result<Settings> {
    resolve_as(run, file, Caller::OneShot)
}

/// Who asks: a one-shot command, or the daemon (see `configured_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    OneShot,
    Daemon,
}

/// `resolve` for the given caller.
pub fn resolve_as(run: &RunArgs, file: FileConfig, caller: Caller) -> Result<Settings> {
    let mut problems = Vec::new();
    let mut keep = |e: Error| match e {
        Error::BadInput(p) => {
            problems.extend(p);
            Ok(())
        }
        other => Err(other),
    };
    let daemon = DaemonSettings::merge(run, &file).map_err(&mut keep).ok();
    let configured = configured_from(&run.policy, file, run.node_taint.as_deref(), caller)
        .map_err(&mut keep)
        .ok();
    match (daemon, configured) {
        (Some(daemon), Some((base, discovery))) => Ok(Settings {
            daemon,
            base,
            discovery,
        }),
        _ if !problems.is_empty() => Err(Error::BadInput(problems)),
        _ => unreachable!("a part failed without saying why"),
    }
}

/// `resolve` for a one-shot command: the config file read once, the daemon
/// settings taken from the environment as `run` would read them.
pub fn settings(args: &PolicyArgs) -> Result<Settings> {
    let file = load_file(args.config.as_deref())?;
    let run = crate::cli::daemon_args_from_env(args).map_err(Error::bad_input)?;
    resolve(&run, file)
}

/// The configured policy (without anything discovered) and the discovery
/// settings, if any. Every problem is reported; nothing is contacted.
pub fn configured(args: &PolicyArgs, node_taint: Option<&str>) -> Result<(Policy, Option<DiscoveryConfig>)> {
    configured_from(args, load_file(args.config.as_deref())?, node_taint, Caller::OneShot)
}

/// How messages name the kubeconfig in use: where it was set, or that it is the default.
fn kubeconfig_origin(args: &PolicyArgs, file: &FileConfig, source: &Source) -> String {
    match (source, &args.kube.kubeconfig, &file.kubeconfig) {
        (Source::InCluster, _, _) => "in-cluster service account (KUBERNETES_SERVICE_HOST is set)".into(),
        (_, Some(_), _) => origin(args, file, "kubeconfig", true),
        (_, None, Some(_)) => origin(args, file, "kubeconfig", false),
        (_, None, None) => {
            "kubeconfig (the default; set --kubeconfig, APISERVER_GUARD_KUBECONFIG or kubeconfig in the config file)"
                .into()
        }
    }
}

/// `configured` with the config file already read. A kubeconfig that cannot
/// be read is bad input, with one exception: the daemon started before the
/// node joined its cluster, when the kubelet's default kubeconfig does not
/// exist yet (`kubeadm join` writes it). That is a wait, not a mistake: the
/// daemon fails to connect (exit 1) and its supervisor starts it again until
/// the file is there, instead of giving up for good on exit 2.
pub fn configured_from(
    args: &PolicyArgs,
    file: FileConfig,
    node_taint: Option<&str>,
    caller: Caller,
) -> Result<(Policy, Option<DiscoveryConfig>)> {
    let env = Env {
        hostname: hostname(),
        in_pod: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    };
    let taint = node_taint.map(str::to_string).or_else(|| file.node_taint.clone());
    // A kubeconfig that cannot be read is a configuration error, not an apiserver outage.
    let named = args.kube.kubeconfig.is_some() || file.kubeconfig.is_some();
    let not_yet_joined = |source: &Source| match source {
        Source::Kubeconfig(p) => caller == Caller::Daemon && !named && !p.exists(),
        Source::InCluster => false,
    };
    let discovery = settings::merge(args, &file, taint.as_deref(), &env).and_then(|d| match &d {
        Some(cfg) if not_yet_joined(&cfg.client) => Ok(d),
        Some(cfg) => match check_source(&cfg.client) {
            Ok(()) => Ok(d),
            Err(e) => Err(vec![format!("{}: {e}", kubeconfig_origin(args, &file, &cfg.client))]),
        },
        None => Ok(d),
    });
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
    let Settings { base, discovery, .. } = settings(args)?;
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
/// Validates a policy (and, before changing the firewall, the self-lockout
/// guard) and builds its blocklist.
pub fn checked(policy: &Policy, check_node_route: bool) -> Result<Blocklist> {
    validate(policy).map_err(Error::BadInput)?;
    if check_node_route {
        check_lockout(policy, &routes(&policy.apiservers)).map_err(Error::BadInput)?;
    }
    Ok(Blocklist::from_policy(policy))
}
