//! `apiserver-guard run`: the daemon. Validates, applies (retrying with
//! backoff while the firewall is busy), reports ready, then keeps the block
//! in place: nf_tables change events (netlink) wake an immediate check, a periodic resync
//! is the safety net (and the only mechanism for iptables-legacy), SIGHUP or
//! a changed config file reloads the policy, SIGTERM/SIGINT end it
//! fail-closed (the block stays unless `--cleanup-on-exit`). With Kubernetes
//! discovery, each discovered change becomes one transaction (see
//! `discovered.rs`), and the node taint goes once the block is proven.

pub mod discovered;
pub mod discovery_status;
pub mod http;
pub mod metrics;
pub mod netlink;
pub mod notify;
pub mod reconciler;
pub mod settings;

use crate::cli::RunArgs;
use crate::commands::checked;
use crate::config::{load_file, DEFAULT_CONFIG};
use crate::core::drift::describe;
use crate::core::policy::Policy;
use crate::discovery::state::effective_policy;
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::error::{exit, Error, Result};
use crate::lockout::localized;
use crate::policy_source::resolve;
use metrics::Metrics;
use reconciler::Reconciler;
use settings::DaemonSettings;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// Entry point of `run`; returns the exit code.
pub fn run(args: &RunArgs) -> i32 {
    match start(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("apiserver-guard: {e}");
            e.exit_code()
        }
    }
}

/// What the config says, checked before the daemon touches anything.
struct Loaded {
    settings: DaemonSettings,
    /// The configured policy, before anything discovered joins it.
    base: Policy,
    discovery: Option<DiscoveryConfig>,
}

/// Flags, env and the config file, parsed; every problem refused before the
/// daemon touches anything. The policy itself is validated once discovery
/// (if any) has filled it in (`start`, `reloaded`).
fn load(args: &RunArgs) -> Result<Loaded> {
    let file = load_file(args.policy.config.as_deref())?;
    let s = resolve(args, file)?;
    Ok(Loaded {
        settings: s.daemon,
        base: s.base,
        discovery: s.discovery,
    })
}

fn start(args: &RunArgs) -> Result<i32> {
    let loaded = load(args)?;
    crate::logging::init(loaded.settings.log_format);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let Some(found) = discovered::begin(&loaded).await? else {
            return Ok(exit::OK); // a signal while waiting for discovery
        };
        let policy = localized(match (&found, &loaded.discovery) {
            (Some(d), Some(cfg)) => effective_policy(&loaded.base, cfg.wants, &d.rx.borrow().discovered),
            _ => loaded.base.clone(),
        });
        let blocklist = checked(&policy, true)?;
        let rec = Reconciler::new(policy, blocklist)?;
        Daemon::new(args.clone(), loaded, rec, found).run().await
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct Daemon {
    args: RunArgs,
    settings: DaemonSettings,
    base: Policy,
    discovery_cfg: Option<DiscoveryConfig>,
    discovery: Option<Discovery>,
    /// The generation of discovered facts last turned into a policy.
    discovery_applied: u64,
    /// `--node-taint` still to be removed.
    taint_pending: bool,
    rec: Arc<Reconciler>,
    state: Arc<Mutex<Metrics>>,
    last_actor: Arc<Mutex<Option<String>>>,
    config_path: PathBuf,
    config_seen: Option<Vec<u8>>,
}

impl Daemon {
    fn new(args: RunArgs, loaded: Loaded, rec: Reconciler, discovery: Option<Discovery>) -> Daemon {
        let Loaded {
            settings,
            base,
            discovery: discovery_cfg,
        } = loaded;
        let mut m = Metrics::new(env!("CARGO_PKG_VERSION"));
        m.backend = rec.backend.name().to_string();
        m.ready_requires_probe = settings.ready_requires_probe;
        let taint_pending = discovery_cfg.as_ref().is_some_and(|c| c.node_taint.is_some());
        if let Some(cfg) = &discovery_cfg {
            m.discovery = Some(discovered::initial_status(cfg));
        }
        let config_path = args
            .policy
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let config_seen = std::fs::read(&config_path).ok();
        Daemon {
            args,
            settings,
            base,
            discovery_cfg,
            discovery,
            discovery_applied: 0,
            taint_pending,
            rec: Arc::new(rec),
            state: Arc::new(Mutex::new(m)),
            last_actor: Arc::new(Mutex::new(None)),
            config_path,
            config_seen,
        }
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(mut self) -> Result<i32> {
        let listener = tokio::net::TcpListener::bind(self.settings.listen)
            .await
            .map_err(|e| Error::runtime(format!("cannot listen on {}: {e}", self.settings.listen)))?;
        let stale_after = (self.settings.resync_interval * 3).max(Duration::from_secs(30));
        tokio::spawn(http::run(listener, self.state.clone(), stale_after));
        let signal_err = |e: std::io::Error| Error::runtime(format!("cannot install signal handlers: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
        let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
        let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
        log::info!(
            backend = self.rec.backend.name(), listen = self.settings.listen.to_string().as_str();
            "starting: {} [{}]", self.rec.backend.name(), self.rec.why
        );

        // First apply: retry with backoff while the firewall is busy; a signal still ends us.
        let mut backoff = Duration::from_millis(100);
        while !self.reconcile("start", true).await {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = term.recv() => return Ok(exit::OK),
                _ = int.recv() => return Ok(exit::OK),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.metrics().started = true;
        notify::notify("READY=1");
        self.status_line();
        log::info!("ready: the block is in place");

        let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
        let mut monitor = self.spawn_monitor(&wake_tx);
        let mut resync = tokio::time::interval_at(
            tokio::time::Instant::now() + self.settings.resync_interval,
            self.settings.resync_interval,
        );
        let mut config_poll = tokio::time::interval(CONFIG_POLL);
        let watchdog_every = notify::watchdog_interval();
        let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        let probe_every = self.settings.probe_interval;
        let mut probe_tick = tokio::time::interval(probe_every.unwrap_or(Duration::from_secs(3600)));
        let mut view_rx = self.discovery.as_ref().map(|d| d.rx.clone());
        if view_rx.is_some() {
            self.on_discovery().await;
        }
        let mut taint_tick = tokio::time::interval(discovered::TAINT_RETRY);
        loop {
            tokio::select! {
                Some(Ok(())) = async { match view_rx.as_mut() { Some(rx) => Some(rx.changed().await), None => None } }, if view_rx.is_some() => {
                    self.on_discovery().await;
                }
                _ = taint_tick.tick(), if self.taint_pending => self.try_untaint().await,
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    if self.reload("SIGHUP").await {
                        monitor = self.respawn_monitor(monitor, &wake_tx);
                    }
                }
                Some(()) = wake_rx.recv() => { self.reconcile("event", false).await; }
                _ = resync.tick() => { self.reconcile("timer", true).await; }
                _ = config_poll.tick() => {
                    let now = std::fs::read(&self.config_path).ok();
                    if now != self.config_seen {
                        self.config_seen = now;
                        if self.reload("config file changed").await {
                            monitor = self.respawn_monitor(monitor, &wake_tx);
                        }
                    }
                }
                _ = watchdog.tick(), if watchdog_every.is_some() => notify::notify("WATCHDOG=1"),
                _ = probe_tick.tick(), if probe_every.is_some() => self.probe().await,
            }
            self.metrics().last_turn = Instant::now();
        }

        notify::notify("STOPPING=1");
        if let Some(m) = monitor {
            m.abort();
        }
        if self.settings.cleanup_on_exit {
            let rec = self.rec.clone();
            match tokio::task::spawn_blocking(move || rec.remove_everything()).await {
                Ok(Ok(())) => log::info!("stopped; --cleanup-on-exit: the block was removed"),
                Ok(Err(e)) => {
                    log::error!("stopped; --cleanup-on-exit failed: {e}");
                    return Ok(exit::RUNTIME);
                }
                Err(e) => log::error!("stopped; cleanup task failed: {e}"),
            }
        } else {
            log::info!("stopped; the block stays in place (fail-closed)");
        }
        Ok(exit::OK)
    }

    fn spawn_monitor(&self, wake: &mpsc::Sender<()>) -> Option<JoinHandle<()>> {
        let backend = self.rec.backend.name();
        if backend == "iptables-legacy" {
            log::info!("iptables-legacy emits no change events: relying on the periodic resync");
            return None;
        }
        Some(tokio::spawn(netlink::run(
            backend.to_string(),
            wake.clone(),
            self.last_actor.clone(),
        )))
    }

    fn respawn_monitor(&self, old: Option<JoinHandle<()>>, wake: &mpsc::Sender<()>) -> Option<JoinHandle<()>> {
        if let Some(h) = old {
            h.abort();
        }
        self.spawn_monitor(wake)
    }

    fn status_line(&self) {
        let m = self.metrics();
        let repairs: u64 = m.repairs.values().sum();
        notify::notify(&format!(
            "STATUS={} with {}; {} repairs",
            if m.ready() { "block in place" } else { "not ready" },
            m.backend,
            repairs
        ));
    }

    /// One check (and repair if needed). Returns whether it ended in sync.
    async fn reconcile(&self, trigger: &str, thorough: bool) -> bool {
        let started = Instant::now();
        let rec = self.rec.clone();
        let checked = tokio::task::spawn_blocking(move || rec.check(thorough)).await;
        let result = match checked {
            Ok(Ok(drift)) if drift.is_empty() => Ok(None),
            Ok(Ok(drift)) => {
                let what = describe(&drift);
                {
                    let mut m = self.metrics();
                    m.in_sync = false;
                    m.not_ready_reason = what.clone();
                }
                let rec = self.rec.clone();
                match tokio::task::spawn_blocking(move || rec.repair(thorough)).await {
                    Ok(Ok(())) => Ok(Some(drift)),
                    Ok(Err(e)) => Err(format!("{what}; repair failed: {e}")),
                    Err(e) => Err(format!("{what}; repair task failed: {e}")),
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("check task failed: {e}")),
        };
        let elapsed = started.elapsed();
        let counters = if thorough {
            let rec = self.rec.clone();
            tokio::task::spawn_blocking(move || rec.counters())
                .await
                .unwrap_or(None)
        } else {
            None
        };
        let mut m = self.metrics();
        *m.reconciles.entry(trigger.to_string()).or_default() += 1;
        m.observe_duration(elapsed);
        if let Some((p, b)) = counters {
            m.blocked_packets = p;
            m.blocked_bytes = b;
        }
        let noteworthy = !matches!(result, Ok(None));
        let ok = match result {
            Ok(repaired) => {
                m.in_sync = true;
                m.last_success_unix = unix_now();
                m.not_ready_reason.clear();
                if trigger == "start" || trigger == "reload" || trigger == "discovery" {
                    let verb = if repaired.is_some() {
                        "installed"
                    } else {
                        "already in place"
                    };
                    log::info!(trigger = trigger; "block {verb} ({:.1} ms)", elapsed.as_secs_f64() * 1000.0);
                } else if let Some(drift) = repaired {
                    let kind = drift[0].kind;
                    *m.repairs.entry(kind.as_str().to_string()).or_default() += 1;
                    let actor = self.last_actor.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let actor = actor.unwrap_or_else(|| "unknown (no change event seen)".into());
                    log::warn!(
                        cause = kind.as_str(), trigger = trigger, last_writer = actor.as_str(),
                        repair_ms = elapsed.as_secs_f64() * 1000.0;
                        "repaired drift in {:.1} ms: {} (likely: {}; last writer of our objects: {})",
                        elapsed.as_secs_f64() * 1000.0, describe(&drift), kind.likely_cause(), actor
                    );
                }
                true
            }
            Err(e) => {
                m.in_sync = false;
                m.reconcile_errors += 1;
                m.not_ready_reason = e.clone();
                log::error!(trigger = trigger; "check/repair failed: {e}");
                false
            }
        };
        drop(m);
        if noteworthy {
            self.status_line();
        }
        ok
    }

    /// One periodic verification (`verify` from the container network, with
    /// the node as positive control); results go to /metrics and, with
    /// `--ready-requires-probe`, to /readyz. Changes of verdict are logged.
    async fn probe(&self) {
        let policy = self.rec.policy.clone();
        let opts = self.settings.probe.clone();
        let report = match tokio::task::spawn_blocking(move || crate::verify::verify_once(&policy, &opts)).await {
            Ok(r) => r,
            Err(e) => {
                log::error!("probe task failed: {e}");
                return;
            }
        };
        let result = match report.exit_code {
            exit::OK => "pass",
            exit::NOT_IN_SYNC => "fail",
            _ => "error",
        };
        let mut m = self.metrics();
        let previous = m.probe.as_ref().map(|r| r.exit_code);
        if previous != Some(report.exit_code) {
            let text = report.to_text();
            match result {
                "pass" => log::info!(probe = result; "probe: block effective, node unaffected\n{text}"),
                "fail" => log::error!(probe = result; "probe FAILED: a pod got through or the node is cut off\n{text}"),
                _ => log::warn!(probe = result; "probe could not run or was inconclusive\n{text}"),
            }
        }
        *m.probe_runs.entry(result).or_default() += 1;
        m.probe_last_unix = unix_now();
        m.probe = Some(report);
    }

    /// The configured policy and the reconciler a reloaded config leads to
    /// (with what discovery currently knows); nothing is changed yet.
    fn reloaded(&self, loaded: Loaded) -> Result<(Policy, Reconciler)> {
        let Loaded {
            settings,
            base,
            discovery: discovery_cfg,
        } = loaded;
        if settings.listen != self.settings.listen || settings.resync_interval != self.settings.resync_interval {
            log::warn!("listen and resync_interval changes take effect at the next restart");
        }
        if discovery_cfg != self.discovery_cfg {
            log::warn!("Kubernetes discovery settings changes take effect at the next restart");
        }
        let policy = localized(match (&self.discovery, &self.discovery_cfg) {
            (Some(d), Some(cfg)) => effective_policy(&base, cfg.wants, &d.rx.borrow().discovered),
            _ => base.clone(),
        });
        let blocklist = checked(&policy, true)?;
        Ok((base, Reconciler::new(policy, blocklist)?))
    }

    /// Re-reads and re-validates the config; swaps to the new policy only
    /// when it is valid (one atomic apply), else keeps enforcing the old one.
    /// Returns whether the backend changed (the event source must follow).
    async fn reload(&mut self, why: &str) -> bool {
        self.config_seen = std::fs::read(&self.config_path).ok();
        let (base, rec) = match load(&self.args).and_then(|loaded| self.reloaded(loaded)) {
            Ok(x) => x,
            Err(e) => {
                let mut m = self.metrics();
                m.config_errors += 1;
                m.config_last_reload_ok = false;
                log::error!(reason = why; "config reload refused, still enforcing the previous policy: {e}");
                return false;
            }
        };
        self.base = base;
        self.metrics().config_last_reload_ok = true;
        if rec.policy == self.rec.policy {
            // Still check at once: a firewall reload (systemd's ReloadPropagatedFrom=) sends us SIGHUP.
            log::info!(reason = why; "config reloaded: policy unchanged; checking the block");
            self.reconcile("signal", true).await;
            return false;
        }
        let backend_changed = rec.backend.name() != self.rec.backend.name();
        self.rec = Arc::new(rec);
        self.metrics().backend = self.rec.backend.name().to_string();
        log::info!(reason = why; "config reloaded: applying the new policy in one transaction");
        self.reconcile("reload", true).await;
        backend_changed
    }
}
