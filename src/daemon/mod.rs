//! `apiserver-guard run`: the daemon. Validates, applies (retrying with
//! backoff while the firewall is busy), reports ready, then keeps the block
//! in place: nf_tables change events (netlink) wake an immediate check, a periodic resync
//! is the safety net (and the only mechanism for iptables-legacy), SIGHUP or
//! a changed config file reloads the policy, SIGTERM/SIGINT end it
//! fail-closed (the block stays unless `--cleanup-on-exit`). With Kubernetes
//! discovery, each discovered change becomes one transaction (see
//! `discovery_driver.rs`), the node taint goes once the block is proven, and the
//! attempts the NFLOG reader sees are named after this node's pods and
//! reported as Events on them.

pub mod addresses;
pub mod attempt_reader;
pub mod attempts;
pub mod controller;
pub mod discovery_driver;
pub mod discovery_status;
pub mod fd_limit;
pub mod footprint;
pub mod http;
pub mod instance;
pub mod interface_names;
pub mod metrics;
pub mod netlink;
pub mod nflog;
pub mod notify;
pub mod pod_events;
pub mod reconciler;
pub mod repair_budget;
pub mod shared_state;
pub mod stop;
pub mod trigger;

use crate::cli::RunArgs;
use crate::config::{load_file, DEFAULT_CONFIG};
use crate::core::policy::{Action, Policy, AUDIT_UNLOGGED};
use crate::daemon_settings::DaemonSettings;
use crate::discovery::state::effective_policy;
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::error::{exit, Error, Result};
use crate::node_facts::localized;
use crate::policy_source::checked;
use crate::policy_source::{resolve_as, Caller};
use attempt_reader::AttemptReader;
use controller::{Controller, Deferral};
use metrics::Metrics;
use reconciler::Reconciler;
use repair_budget::Gate;
use shared_state::SharedStateWatch;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stop::Stop;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use trigger::Trigger;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONFIG_POLL: Duration = Duration::from_secs(1);
/// Start of the repair-conflict line (at most one a minute).
pub(crate) const CONFLICT_LINE: &str = "repairs keep being undone by ";
/// How long a stop waits for work still running on blocking threads (a
/// firewall tool that hangs) before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// Runs `$work` unless a stop is requested first; then leaves the loop.
macro_rules! or_stop {
    ($stop:expr, $work:expr) => {
        tokio::select! {
            biased;
            _ = $stop.requested() => break,
            r = $work => r,
        }
    };
}

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
    let s = resolve_as(args, file, Caller::Daemon)?;
    Ok(Loaded {
        settings: s.daemon,
        base: s.base,
        discovery: s.discovery,
    })
}

fn start(args: &RunArgs) -> Result<i32> {
    footprint::fix_mmap_threshold();
    // iptables-nft: compare only with bytes this daemon wrote itself.
    crate::backend::iptables_reference::trust_own_writes_only();
    let loaded = load(args)?;
    crate::logging::init(loaded.settings.log_format);
    if let Some(r) = fd_limit::raise_nofile() {
        if r.after > r.before {
            log::debug!("open files limit raised from {} to {}", r.before, r.after);
        }
    }
    // Before anything is changed: one daemon per network namespace.
    let instance = instance::acquire()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
    let result = rt.block_on(async move {
        let stop = Stop::install()?;
        // The health listener is a background task from the first moment: it
        // retries a port it cannot bind, so it never holds up the block, and
        // /readyz can say why we are not ready while discovery, the backend
        // choice or the first apply are still under way.
        let state = Arc::new(Mutex::new(starting_metrics(&loaded)));
        let stale_after = (loaded.settings.resync_interval * 3).max(Duration::from_secs(30));
        tokio::spawn(http::serve_with_retry(
            loaded.settings.listen,
            state.clone(),
            stale_after,
        ));
        let _answering = instance
            .serve()
            .map_err(|e| Error::runtime(format!("cannot serve the instance socket: {e}")))?;
        let Some(found) = discovery_driver::begin(&loaded, stop.clone()).await? else {
            return Ok(exit::OK); // a signal while waiting for discovery
        };
        let policy = localized(match (&found, &loaded.discovery) {
            (Some(d), Some(cfg)) => effective_policy(&loaded.base, cfg.wants, &d.rx.borrow().discovered),
            _ => loaded.base.clone(),
        });
        let blocklist = checked(&policy, true)?;
        // Picking the backend runs the firewall tools: off the runtime's thread, and a stop wins.
        let ownership = loaded.settings.table_ownership;
        let picking = tokio::task::spawn_blocking(move || Reconciler::new(policy, blocklist, ownership));
        let mut waiting = stop.clone();
        let rec = tokio::select! {
            biased;
            _ = waiting.requested() => return Ok(exit::OK),
            r = picking => r.map_err(|e| Error::runtime(format!("backend selection task failed: {e}")))??,
        };
        Daemon::new(args.clone(), loaded, rec, found, state).run(stop).await
    });
    // Work stuck on a blocking thread (a hung firewall tool) must not keep a stopped daemon alive.
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// The config file's bytes as the change detector sees them: never blocks
/// (a FIFO or device in its place reads as "unreadable", and the reload that
/// follows refuses it with a clear error, keeping the old policy).
fn read_config(path: &std::path::Path) -> Option<Vec<u8>> {
    crate::regular_file::read_regular(path).ok()
}

/// What /metrics and /readyz show before the backend is chosen.
fn starting_metrics(loaded: &Loaded) -> Metrics {
    let mut m = Metrics::new(env!("CARGO_PKG_VERSION"));
    m.ready_requires_probe = loaded.settings.ready_requires_probe;
    m.action = loaded.base.action;
    if let Some(cfg) = &loaded.discovery {
        m.discovery = Some(discovery_driver::initial_status(cfg));
    }
    m
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
    /// Check, repair, metrics and the repair budget (`controller.rs`).
    ctl: Controller,
    /// The look for rules of others sharing our kernel state (`shared_state.rs`).
    shared: Arc<SharedStateWatch>,
}

impl Daemon {
    fn new(
        args: RunArgs,
        loaded: Loaded,
        rec: Reconciler,
        discovery: Option<Discovery>,
        state: Arc<Mutex<Metrics>>,
    ) -> Daemon {
        let Loaded {
            settings,
            base,
            discovery: discovery_cfg,
        } = loaded;
        state.lock().unwrap_or_else(|p| p.into_inner()).backend = rec.backend.name().to_string();
        let taint_pending = discovery_cfg.as_ref().is_some_and(|c| c.node_taint.is_some());
        let config_path = args
            .policy
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let config_seen = read_config(&config_path);
        let last_actor = Arc::new(Mutex::new(None));
        Daemon {
            args,
            settings,
            base,
            discovery_cfg,
            discovery,
            discovery_applied: 0,
            taint_pending,
            rec: Arc::new(rec),
            ctl: Controller::new(state.clone(), last_actor.clone()),
            state,
            last_actor,
            config_path,
            config_seen,
            shared: Arc::new(SharedStateWatch::default()),
        }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Deferral> {
        self.ctl.budget()
    }

    /// A change event: check now if the budget has a repair left, else
    /// leave it to the deferred check (`RepairBudget::due`) at the next token.
    fn may_check_now(&self) -> bool {
        self.budget().budget.gate(Instant::now()) == Gate::Now
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(mut self, mut stop: Stop) -> Result<i32> {
        let mut hup =
            signal(SignalKind::hangup()).map_err(|e| Error::runtime(format!("cannot install signal handlers: {e}")))?;
        log::info!(
            backend = self.rec.backend.name(), listen = self.settings.listen.to_string().as_str();
            "starting: {} [{}]", self.rec.backend.name(), self.rec.why
        );
        log::info!(table_ownership = self.rec.ownership.0; "table ownership: {}", self.rec.ownership.1);

        // Change events are watched before the first apply: a firewall that
        // frees up (a lock released, a foreign table gone) wakes the retry at
        // once instead of at the end of its backoff.
        let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
        let mut monitor = self.spawn_monitor(&wake_tx);
        // First apply: retry with backoff while the firewall is busy; a stop
        // still ends us at once.
        let mut backoff = Duration::from_millis(100);
        loop {
            if or_stop!(stop, self.reconcile(Trigger::Start, true)) {
                break;
            }
            or_stop!(stop, async {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = wake_rx.recv() => {}
                }
            });
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if stop.requested_now() {
            return Ok(exit::OK);
        }
        self.metrics().started = true;
        notify::notify("READY=1");
        if self.rec.policy.audit_unlogged() {
            log::info!(action = "audit"; "ready: the block is in place in audit mode: nothing is blocked");
            log::warn!("{AUDIT_UNLOGGED}");
        } else if self.rec.policy.action == Action::Audit {
            log::info!(
                action = "audit";
                "ready: the block is in place in audit mode: nothing is blocked, attempts are logged and let through"
            );
        } else {
            log::info!("ready: the block is in place");
        }
        if self.rec.backend.owned() {
            log::info!(
                table_owned = true;
                "the table is owned by this daemon's netlink socket (flags owner, persist): no other process \
                 can change, flush or delete it, and it stays in place if the daemon stops"
            );
        } else if self.rec.ownership.0 {
            log::warn!(table_owned = false; "table ownership is on but the table is not owned yet; retrying at each check");
        }
        self.status_line();
        self.shared.look(self.rec.clone(), self.state.clone());
        self.check_source_routes();

        let (addr_tx, mut addr_rx) = mpsc::channel::<()>(1);
        tokio::spawn(addresses::run(addr_tx));
        let attribution = self.attribution();
        let event_writer = match (&attribution, &self.discovery) {
            (Some(nflog::Attribution { events: Some(e), .. }), Some(d)) => Some(tokio::spawn(pod_events::run(
                d.client.clone(),
                e.clone(),
                self.state.clone(),
            ))),
            _ => None,
        };
        let mut attempt_reader = AttemptReader::start(self.log_group(), self.state.clone(), attribution);
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
        let mut taint_tick = tokio::time::interval(discovery_driver::TAINT_RETRY);
        if view_rx.is_some() {
            tokio::select! {
                biased;
                _ = stop.requested() => {}
                _ = self.on_discovery() => {}
            }
        }
        // Every piece of work below is raced against a stop, so SIGTERM is
        // honoured at once whatever is running.
        while !stop.requested_now() {
            // A repair the budget deferred, or the check that can end a repair conflict.
            let due = self.budget().budget.due();
            let due_at = tokio::time::Instant::from_std(due.unwrap_or_else(Instant::now));
            tokio::select! {
                biased;
                _ = stop.requested() => break,
                Some(Ok(())) = async { match view_rx.as_mut() { Some(rx) => Some(rx.changed().await), None => None } }, if view_rx.is_some() => {
                    or_stop!(stop, self.on_discovery());
                }
                _ = taint_tick.tick(), if self.taint_pending => or_stop!(stop, self.try_untaint()),
                _ = hup.recv() => {
                    if or_stop!(stop, self.reload("SIGHUP")) {
                        monitor = self.respawn_monitor(monitor, &wake_tx);
                    }
                    attempt_reader.follow(self.log_group(), self.discovery.is_some());
                }
                Some(()) = wake_rx.recv() => {
                    if self.may_check_now() {
                        or_stop!(stop, self.reconcile(Trigger::Event, false));
                    }
                }
                _ = tokio::time::sleep_until(due_at), if due.is_some() => {
                    let thorough = {
                        let mut d = self.budget();
                        d.budget.due_check(Instant::now());
                        std::mem::take(&mut d.thorough)
                    };
                    or_stop!(stop, self.reconcile(Trigger::Deferred, thorough));
                }
                Some(()) = addr_rx.recv() => { or_stop!(stop, self.relocalize("the node's addresses changed")); }
                _ = resync.tick() => {
                    // The safety net for the address watch too.
                    if !or_stop!(stop, self.relocalize("resync")) {
                        or_stop!(stop, self.reconcile(Trigger::Timer, true));
                    }
                    if self.shared.due() {
                        self.shared.look(self.rec.clone(), self.state.clone());
                    }
                    self.check_source_routes();
                }
                _ = config_poll.tick() => {
                    let now = read_config(&self.config_path);
                    if now != self.config_seen {
                        self.config_seen = now;
                        if or_stop!(stop, self.reload("config file changed")) {
                            monitor = self.respawn_monitor(monitor, &wake_tx);
                        }
                        attempt_reader.follow(self.log_group(), self.discovery.is_some());
                    }
                }
                _ = watchdog.tick(), if watchdog_every.is_some() => notify::notify("WATCHDOG=1"),
                _ = probe_tick.tick(), if probe_every.is_some() => or_stop!(stop, self.probe()),
            }
            self.metrics().last_turn = Instant::now();
        }

        notify::notify("STOPPING=1");
        if let Some(m) = monitor {
            m.abort();
        }
        attempt_reader.stop();
        if let Some(w) = event_writer {
            w.abort();
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

    /// The NFLOG group whose attempts the daemon reads: the one the policy's
    /// log rules write to (None: `--log-group off`, nothing to read).
    fn log_group(&self) -> Option<u16> {
        self.rec.policy.log_group
    }

    /// With Kubernetes discovery and a log group: the directory of this
    /// node's pods the attempts are named after, and the book of their Events.
    fn attribution(&self) -> Option<nflog::Attribution> {
        self.log_group()?;
        let (d, cfg) = (self.discovery.as_ref()?, self.discovery_cfg.as_ref()?);
        let pods = d.pods.clone()?;
        log::info!(
            node = cfg.node_name.as_str();
            "attempts are named after the pods of node {} and reported as Events on them", cfg.node_name
        );
        Some(nflog::Attribution {
            pods,
            events: Some(pod_events::EventsHandle::new(&cfg.node_name)),
        })
    }

    fn spawn_monitor(&self, wake: &mpsc::Sender<()>) -> Option<JoinHandle<()>> {
        let backend = self.rec.backend.name();
        if !self.rec.backend.emits_change_events() {
            log::info!("{backend} emits no change events: relying on the periodic resync");
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

    /// Reads whether the node honours IPv4 source routes into the metrics;
    /// says so when that changes (a warning while it does).
    fn check_source_routes(&self) {
        let now = crate::node_facts::accepts_source_routes();
        let before = std::mem::replace(&mut self.metrics().accepts_source_routes, now);
        match (before, now) {
            (b, Some(true)) if b != Some(true) => log::warn!("{}", crate::node_facts::SOURCE_ROUTES_WARNING),
            (Some(true), Some(false)) => {
                log::info!("this node no longer accepts IPv4 source-routed packets (accept_source_route=0)")
            }
            _ => {}
        }
    }

    fn status_line(&self) {
        let m = self.metrics();
        let repairs: u64 = m.repairs.values().sum();
        let state = match (m.ready(), m.action) {
            (false, _) => "not ready",
            (true, Action::Audit) => "audit rules in place (audit mode: nothing is blocked)",
            (true, _) => "block in place",
        };
        notify::notify(&format!("STATUS={} with {}; {} repairs", state, m.backend, repairs));
    }

    /// One check (and repair if needed) of the enforced policy, through
    /// the controller; a noteworthy result updates systemd's status line.
    /// Returns whether it ended in sync.
    async fn reconcile(&self, trigger: Trigger, thorough: bool) -> bool {
        let (ok, noteworthy) = self.ctl.reconcile(self.rec.clone(), trigger, thorough).await;
        if noteworthy {
            self.status_line();
        }
        ok
    }

    /// Decides again which apiservers are on this node (a VIP that moved here
    /// or away, an address added): when that changes the policy, applies the
    /// new one in one transaction. Returns whether it did.
    async fn relocalize(&mut self, why: &str) -> bool {
        let policy = localized(self.rec.policy.clone());
        if policy == self.rec.policy {
            return false;
        }
        let local: Vec<String> = policy.local_apiservers.iter().map(|e| e.to_string()).collect();
        if let Err(e) = self.adopt(policy) {
            log::error!(reason = why; "the policy for this node's new addresses is refused, still enforcing the previous one: {e}");
            return false;
        }
        log::info!(
            reason = why;
            "apiservers on this node now: {}; applying in one transaction",
            if local.is_empty() { "none".to_string() } else { local.join(", ") }
        );
        self.reconcile(Trigger::Addresses, true).await;
        true
    }

    /// Validates `policy` (self-lockout included) and makes it the one the
    /// reconciler enforces, same backend; nothing is sent yet. On refusal the
    /// previous policy stays.
    fn adopt(&mut self, policy: Policy) -> Result<()> {
        let blocklist = checked(&policy, true)?;
        self.rec = Arc::new(self.rec.with_policy(policy, blocklist));
        Ok(())
    }

    /// One periodic verification (`verify` from the container network, with
    /// the node as positive control); results go to /metrics and, with
    /// `--ready-requires-probe`, to /readyz. Changes of verdict are logged.
    async fn probe(&self) {
        let policy = self.rec.policy.clone();
        let opts = crate::verify::probe_options(&policy, &self.settings.probe);
        let audit = policy.action == Action::Audit;
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
            match (result, audit) {
                ("pass", false) => log::info!(probe = result; "probe: block effective, node unaffected\n{text}"),
                ("pass", true) => log::info!(
                    probe = result;
                    "probe: audit mode: the pod got through and our audit rules counted it, node unaffected\n{text}"
                ),
                ("fail", false) => {
                    log::error!(probe = result; "probe FAILED: a pod got through or the node is cut off\n{text}")
                }
                ("fail", true) => log::error!(
                    probe = result;
                    "probe FAILED: in audit mode a pod was blocked, or got through unseen by our audit rules, or the node is cut off\n{text}"
                ),
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
        if settings.table_ownership != self.settings.table_ownership {
            log::warn!("table_ownership changes take effect at the next restart");
        }
        // The same backend choice keeps the same backend object: its socket
        // is the one that owns our table.
        if policy.backend == self.rec.policy.backend {
            return Ok((base, self.rec.with_policy(policy, blocklist)));
        }
        Ok((base, Reconciler::new(policy, blocklist, self.settings.table_ownership)?))
    }

    /// Re-reads and re-validates the config; swaps to the new policy only
    /// when it is valid (one atomic apply), else keeps enforcing the old one.
    /// Returns whether the backend changed (the event source must follow).
    async fn reload(&mut self, why: &str) -> bool {
        self.config_seen = read_config(&self.config_path);
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
            self.reconcile(Trigger::Signal, true).await;
            return false;
        }
        let backend_changed = rec.backend.name() != self.rec.backend.name();
        self.rec = Arc::new(rec);
        self.metrics().backend = self.rec.backend.name().to_string();
        log::info!(reason = why; "config reloaded: applying the new policy in one transaction");
        self.reconcile(Trigger::Reload, true).await;
        backend_changed
    }
}
