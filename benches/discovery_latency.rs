//! Discovery latency of `apiserver-guard run --apiserver auto`, and the cost of the Kubernetes client.
//!
//! Reuses the integration-test harness (`tests/common`): the three-namespace topology
//! `pod (10.0.1.2) <-veth-> node (forwarding) <-veth-> api (192.168.50.10, 192.168.50.20)` and the
//! fake Kubernetes apiserver (real protocol: HTTPS + token, list/watch) on the node namespace's
//! loopback, with a kubeconfig for it (`Cluster`). The harness's listeners in the api namespace are
//! replaced by a leaner one of this bench (poll + accept, deep backlog, every connection reset
//! after 20 ms), which keeps up with a probe that connects back to back.
//!
//! 1. Discovery latency, per backend: the daemon (release binary) runs in the node namespace with
//!    `--apiserver auto --container-cidr 10.0.0.0/16 --mode tunnel`; the bench alternates the
//!    `kubernetes` EndpointSlice between [192.168.50.10] and [192.168.50.20] (port 5443). For each
//!    change: t0 is taken right before `set_endpoint_slice` is called; t1 = end of the first TCP
//!    connect from the pod to the NEW address that is refused (RST from our reject rule); t2 = end
//!    of the first connect to the OLD address that is served again. The daemon's own figure
//!    ("discovery: applied ... (X ms after the change arrived)", the same number as the
//!    `apiserver_guard_discovery_last_apply_seconds` gauge) splits it into delivery and apply.
//! 2. Cost of the Kubernetes client: binary size, `--version` wall time, spawn -> first refused pod
//!    connect (static policy, and with discovery), and idle RSS, for this tree's binary and,
//!    when given (`--baseline-bin`), a binary built from the commit before discovery.
//!
//! Prints markdown tables (no assertions) to stdout, progress to stderr. Never touches the root
//! namespace's firewall; the namespaces are deleted on exit (also on panic, SIGINT or SIGTERM).
//!
//! Run as root: `benches/discovery-latency.sh` (builds the release binary and the baseline, then
//! `cargo bench --bench discovery_latency -- [--iterations 20] [--start-runs 10] [--version-runs 50]
//! [--rss-runs 3] [--rss-wait 5] [--backends nftables,iptables-nft] [--baseline-bin PATH]
//! [--baseline-label REV] [--label REV] [--probe-gap-us 0]`). `APISERVER_GUARD_BIN` overrides the
//! binary under test (default `target/release/apiserver-guard`); daemon logs go to
//! `target/bench-logs/`. Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::daemon_cases::{LISTEN, READY_LINE};
use common::discovery_cases::Cluster;
use common::guard_cases::Backend;
use common::{Netns, API_PORT, API_V4, CONTAINER_CIDR_V4, OTHER_V4};

type R<T> = Result<T, String>;

/// The probe connects back to back for this long after t0, then once per `PROBE_GAP` (or per
/// connect duration, if longer), so that a slow change does not cost a core for its whole length.
const TIGHT_FOR: Duration = Duration::from_millis(100);
const PROBE_GAP: Duration = Duration::from_millis(1);
/// A connect that neither completes nor is refused within this counts as "other" and is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
/// Accept queue of the bench's listeners (a full queue would drop probe SYNs).
const BACKLOG: libc::c_int = 4096;
/// How long an accepted connection is kept before it is reset, and how many at most.
const HOLD: Duration = Duration::from_millis(20);
const MAX_HELD: usize = 2000;
/// Pause after each change before waiting for the daemon to be idle (no tool running).
const SETTLE: Duration = Duration::from_millis(200);
/// Upper bound for one change to reach the kernel (the product target is 1 s).
const CHANGE_LIMIT: Duration = Duration::from_secs(10);
const START_LIMIT: Duration = Duration::from_secs(30);
const APPLIED_LINE: &str = "discovery: applied";
/// The `kubernetes` Service's EndpointSlice in the fake cluster.
const SLICE: &str = "kubernetes";
/// `run` with a static policy (no discovery), as before discovery existed; `--apiserver` is added.
const STATIC_POLICY: [&str; 11] = [
    "run",
    "--container-cidr",
    CONTAINER_CIDR_V4,
    "--mode",
    "tunnel",
    "--backend",
    "nftables",
    "--config",
    "/dev/null",
    "--log-format",
    "text",
];

// ---------------------------------------------------------------- stop flag, clock

static STOP: AtomicBool = AtomicBool::new(false);
/// Pause between probes in the tight phase (`--probe-gap-us`, default 0 = back to back).
static GAP_US: AtomicU64 = AtomicU64::new(0);
static BASE: OnceLock<Instant> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn check_stop() -> R<()> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Nanoseconds since the bench started (monotonic).
fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn sock(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("valid constant"), API_PORT)
}

// ---------------------------------------------------------------- listener

/// TCP listeners on 192.168.50.10:5443 and 192.168.50.20:5443 in the api namespace (in place of
/// the harness's thread-per-connection ones): accept, keep 20 ms, reset.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(api: &Netns, addrs: &[SocketAddr]) -> R<Listener> {
        let mut socks = Vec::new();
        for a in addrs {
            let l = api
                .in_thread(|| TcpListener::bind(a))
                .and_then(|r| r)
                .map_err(|e| format!("bind {a} in {}: {e}", api.name))?;
            l.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
            // SAFETY: listen(2) again on a listening socket only changes its backlog.
            unsafe { libc::listen(l.as_raw_fd(), BACKLOG) };
            socks.push(l);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("api-listener".into())
            .spawn(move || {
                let mut pfds: Vec<libc::pollfd> = socks
                    .iter()
                    .map(|l| libc::pollfd {
                        fd: l.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // Accepted sockets are reset only after HOLD: the probe resets first in the normal
                // case (an immediate server RST could turn a served connect into ECONNRESET).
                let mut held: VecDeque<(Instant, TcpStream)> = VecDeque::new();
                while !flag.load(Ordering::Relaxed) {
                    let wait = if held.is_empty() { 100 } else { 5 };
                    // SAFETY: valid pollfds, bounded timeout.
                    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait) };
                    for l in &socks {
                        while let Ok((s, _)) = l.accept() {
                            set_linger0(&s);
                            held.push_back((Instant::now(), s));
                        }
                    }
                    while held
                        .front()
                        .is_some_and(|(t, _)| t.elapsed() > HOLD || held.len() > MAX_HELD)
                    {
                        held.pop_front();
                    }
                }
            })
            .map_err(|e| format!("spawn listener: {e}"))?;
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- probe

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Served,
    Refused,
    Other,
}

/// SO_LINGER 0: closing sends RST and leaves no TIME_WAIT state behind.
fn set_linger0(s: &TcpStream) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// One TCP connect, closed at once with RST.
fn connect(addr: &SocketAddr) -> Conn {
    match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
        Ok(s) => {
            set_linger0(&s);
            Conn::Served
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Conn::Refused,
        // Reset after the handshake completed (only a SYN answered by RST is "refused").
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Conn::Served,
        Err(_) => Conn::Other,
    }
}

/// What the probe waits for after t0: `refused` to be refused, `served` to be served.
struct Watch {
    refused: Option<SocketAddr>,
    served: Option<SocketAddr>,
}

#[derive(Debug, Default)]
struct Outcome {
    t0: u64,
    /// End of the first connect to `refused` that started after t0 and was refused.
    refused_at: Option<u64>,
    /// End of the first connect to `served` that started after t0 and was served.
    served_at: Option<u64>,
    /// The connect right before t0 already showed the awaited state (the previous change had
    /// not settled, or the state never changed).
    already: u32,
    other: u32,
    probes: u32,
    connect_ns: Vec<u64>,
}

/// On a thread in the pod namespace: one connect to each watched address (the state before),
/// then t0, then `trigger` (on this thread), then connects until every watched address shows the
/// awaited state or `limit` passes.
fn probe_around<T: Send>(
    pod: &Netns,
    w: &Watch,
    limit: Duration,
    trigger: impl FnOnce() -> T + Send,
) -> R<(Outcome, T)> {
    pod.in_thread(|| {
        let mut o = Outcome::default();
        if let Some(a) = &w.refused {
            o.already += u32::from(connect(a) == Conn::Refused);
        }
        if let Some(a) = &w.served {
            o.already += u32::from(connect(a) == Conn::Served);
        }
        o.t0 = now_ns();
        let out = trigger();
        let started = Instant::now();
        let gap = Duration::from_micros(GAP_US.load(Ordering::Relaxed));
        loop {
            let want_refused = w.refused.filter(|_| o.refused_at.is_none());
            let want_served = w.served.filter(|_| o.served_at.is_none());
            if (want_refused.is_none() && want_served.is_none())
                || started.elapsed() > limit
                || STOP.load(Ordering::Relaxed)
            {
                break;
            }
            let mut longest = 0;
            for (addr, want) in [(want_refused, Conn::Refused), (want_served, Conn::Served)] {
                let Some(addr) = addr else { continue };
                let a = now_ns();
                let c = connect(&addr);
                let b = now_ns();
                o.probes += 1;
                o.connect_ns.push(b - a);
                longest = longest.max(b - a);
                if c == Conn::Other {
                    o.other += 1;
                } else if c == want {
                    match want {
                        Conn::Refused => o.refused_at = Some(b),
                        _ => o.served_at = Some(b),
                    }
                }
            }
            if started.elapsed() > TIGHT_FOR {
                thread::sleep(PROBE_GAP.max(Duration::from_nanos(longest)));
            } else if !gap.is_zero() {
                thread::sleep(gap);
            }
        }
        (o, out)
    })
    .map_err(|e| format!("probe thread in {}: {e}", pod.name))
}

fn once(pod: &Netns, addr: SocketAddr) -> R<Conn> {
    pod.in_thread(|| connect(&addr))
        .map_err(|e| format!("probe thread in {}: {e}", pod.name))
}

// ---------------------------------------------------------------- daemon

/// Environment variables that could change the daemon's behaviour behind the bench's back.
fn ours(var: &str) -> bool {
    var.starts_with("APISERVER_GUARD_")
        || [
            "NODE_NAME",
            "KUBERNETES_SERVICE_HOST",
            "KUBECONFIG",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
        ]
        .contains(&var)
}

/// `bin args...` started directly inside `ns` (setns in the child before exec: no `ip netns exec`
/// in the start-up figures), stderr lines collected with the time they were read.
struct BenchDaemon {
    child: Child,
    log: Arc<Mutex<Vec<(u64, String)>>>,
    reader: Option<JoinHandle<()>>,
    log_file: PathBuf,
}

impl BenchDaemon {
    fn start(bin: &Path, ns: &Netns, args: &[String], log_file: PathBuf) -> R<BenchDaemon> {
        let nsfile = File::open(ns.path()).map_err(|e| format!("open {}: {e}", ns.path()))?;
        let fd = nsfile.as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if ours(&k.to_string_lossy()) {
                cmd.env_remove(k);
            }
        }
        // SAFETY: between fork and exec only setns(2), a plain syscall on an fd that stays open
        // in the child (`nsfile` lives until after spawn).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        drop(nsfile);
        let log: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let sink = log.clone();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push((now_ns(), line));
            }
        });
        Ok(BenchDaemon {
            child,
            log,
            reader: Some(reader),
            log_file,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> Vec<(u64, String)> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn len(&self) -> usize {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits (bounded) for a line containing `pat` at index `from` or later; returns when it was
    /// read and the line.
    fn wait_line(&mut self, pat: &str, from: usize, limit: Duration) -> R<(u64, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((t, l)) = self.lines().into_iter().skip(from).find(|(_, l)| l.contains(pat)) {
                return Ok((t, l));
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "daemon exited ({st}) before logging '{pat}':\n{}",
                    self.tail(20)
                ));
            }
            check_stop()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "no '{pat}' from the daemon within {limit:?}:\n{}",
                    self.tail(20)
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn tail(&self, n: usize) -> String {
        let l = self.lines();
        l[l.len().saturating_sub(n)..]
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the daemon runs a tool (nft, iptables-nft-restore, ...) right now.
    fn busy(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        tasks.flatten().any(|t| {
            !std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .trim()
                .is_empty()
        })
    }

    /// After `SETTLE`, waits (bounded) until no tool has run for 5 polls in a row (50 ms).
    fn wait_idle(&mut self) -> R<()> {
        thread::sleep(SETTLE);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        while quiet < 5 {
            check_stop()?;
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("daemon exited ({st}):\n{}", self.tail(20)));
            }
            if Instant::now() > deadline {
                return Err(format!("daemon not idle within 30 s:\n{}", self.tail(20)));
            }
            quiet = if self.busy() { 0 } else { quiet + 1 };
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// (VmRSS, VmHWM) in KiB and the thread count, from /proc/PID/status.
    fn memory(&self) -> Option<(u64, u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some((field("VmRSS:")?, field("VmHWM:")?, field("Threads:")?))
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let text: String = self.lines().iter().map(|(_, l)| format!("{l}\n")).collect();
        let _ = std::fs::write(&self.log_file, text);
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.stop();
        }
    }
}

/// "discovery: applied ... (12.3 ms after the change arrived)" -> 12.3
fn applied_ms(line: &str) -> Option<f64> {
    let head = line.split(" ms after the change arrived").next()?;
    head.rsplit('(').next()?.trim().parse().ok()
}

/// "block installed in 21.2 ms" or "block installed (21.2 ms)" -> 21.2
fn installed_ms(line: &str) -> Option<f64> {
    line.split("block installed")
        .nth(1)?
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

/// One metric's value from the daemon's /metrics (read from inside the node namespace).
fn scrape(node: &Netns, names: &[&str]) -> Vec<Option<f64>> {
    let body = node
        .in_thread(|| {
            let mut s =
                TcpStream::connect_timeout(&LISTEN.parse().expect("valid constant"), Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).ok()?;
            Some(buf)
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    names
        .iter()
        .map(|n| {
            body.lines()
                .find(|l| l.starts_with(n) && !l.starts_with('#'))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

// ---------------------------------------------------------------- bench setup

struct Bench<'a> {
    c: &'a Cluster,
    log_dir: PathBuf,
}

impl Bench<'_> {
    fn pod(&self) -> &Netns {
        &self.c.topo.pod
    }

    fn node(&self) -> &Netns {
        &self.c.topo.node
    }

    fn cache_file(&self) -> PathBuf {
        self.c.dir.join("discovered.json")
    }

    /// Nothing of ours (or anyone's) in the node namespace's firewall, no discovery cache, and
    /// the `kubernetes` slice at 192.168.50.10.
    fn reset(&self) -> R<()> {
        let out = self.node().run(&["nft", "flush", "ruleset"]);
        if !out.status.success() {
            return Err(format!("nft flush ruleset: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let _ = std::fs::remove_file(self.cache_file());
        self.c.api.set_endpoint_slice(SLICE, &[API_V4], API_PORT);
        Ok(())
    }

    fn discovery_args(&self, backend: Backend) -> Vec<String> {
        self.c
            .daemon_args(backend, &["--apiserver", "auto", "--container-cidr", CONTAINER_CIDR_V4])
    }

    fn static_args(&self) -> Vec<String> {
        let mut a: Vec<String> = STATIC_POLICY.iter().map(|s| s.to_string()).collect();
        a.extend(["--apiserver".into(), sock(API_V4).to_string()]);
        a
    }

    fn log(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("discovery-{name}.log"))
    }
}

// ---------------------------------------------------------------- statistics

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn f(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

// ---------------------------------------------------------------- 1. discovery latency

#[derive(Default)]
struct LatencyResult {
    blocked: Vec<f64>,
    released: Vec<f64>,
    /// Daemon-logged: event folded into its view -> reconcile done ("... ms after the change arrived").
    logged: Vec<f64>,
    /// Daemon-logged: the reconcile itself (check + transaction + read-back), "block installed (X ms)".
    reconcile: Vec<f64>,
    /// t0 -> the event reached the daemon (time the `applied` line was read minus its figure).
    delivery: Vec<f64>,
    /// The event reached the daemon -> new address blocked (t1).
    agent_to_kernel: Vec<f64>,
    probe_ms: Vec<f64>,
    changes: usize,
    timeouts: usize,
    already: u32,
    other: u32,
    applied_metric: Option<f64>,
    last_apply_metric: Option<f64>,
    load_before: String,
    load_after: String,
    seconds: f64,
}

fn run_latency(b: &Bench, bin: &Path, backend: Backend, n: usize) -> R<LatencyResult> {
    let started = Instant::now();
    let mut r = LatencyResult {
        load_before: loadavg(),
        ..Default::default()
    };
    b.reset()?;
    let mut d = BenchDaemon::start(bin, b.node(), &b.discovery_args(backend), b.log(backend.flag()))?;
    d.wait_line(READY_LINE, 0, START_LIMIT)?;
    d.wait_idle()?;
    if once(b.pod(), sock(API_V4))? != Conn::Refused || once(b.pod(), sock(OTHER_V4))? != Conn::Served {
        return Err(format!(
            "{}: after `ready` the pod is not refused at {API_V4} and served at {OTHER_V4}:\n{}",
            backend.flag(),
            d.tail(20)
        ));
    }
    for i in 0..n {
        check_stop()?;
        let (new, old) = if i % 2 == 0 {
            (OTHER_V4, API_V4)
        } else {
            (API_V4, OTHER_V4)
        };
        let mark = d.len();
        let w = Watch {
            refused: Some(sock(new)),
            served: Some(sock(old)),
        };
        let (o, ()) = probe_around(b.pod(), &w, CHANGE_LIMIT, || {
            b.c.api.set_endpoint_slice(SLICE, &[new], API_PORT)
        })?;
        r.changes += 1;
        r.already += o.already;
        r.other += o.other;
        r.probe_ms.extend(o.connect_ns.iter().map(|&n| ms(n)));
        // The daemon computes its figure right before logging it: the time the line was read minus
        // the figure is when the event reached it (late by the pipe wake-up, microseconds).
        let arrived = match d.wait_line(APPLIED_LINE, mark, CHANGE_LIMIT) {
            Ok((read_at, line)) => applied_ms(&line).map(|v| {
                r.logged.push(v);
                read_at.saturating_sub((v * 1e6) as u64)
            }),
            Err(e) => {
                eprintln!("  change {i}: {e}");
                None
            }
        };
        if let Some(v) = d.lines()[mark..]
            .iter()
            .find(|(_, l)| l.contains("block installed"))
            .and_then(|(_, l)| installed_ms(l))
        {
            r.reconcile.push(v);
        }
        match (o.refused_at, o.served_at) {
            (Some(t1), Some(t2)) => {
                r.blocked.push(ms(t1 - o.t0));
                r.released.push(ms(t2 - o.t0));
                if let Some(a) = arrived {
                    r.delivery.push((a as f64 - o.t0 as f64) / 1e6);
                    r.agent_to_kernel.push((t1 as f64 - a as f64) / 1e6);
                }
            }
            _ => {
                r.timeouts += 1;
                eprintln!(
                    "  change {i}: not blocked at {new} and released at {old} within {CHANGE_LIMIT:?}:\n{}",
                    d.tail(10)
                );
                if r.timeouts >= 3 {
                    break;
                }
            }
        }
        d.wait_idle()?;
        if (i + 1) % 5 == 0 || i + 1 == n {
            eprintln!(
                "  {}/{n} changes, blocked p50 so far {} ms, {:.0} s",
                i + 1,
                f(pct(&sorted(r.blocked.clone()), 50.0)),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let m = scrape(
        b.node(),
        &[
            "apiserver_guard_discovery_changes_total{outcome=\"applied\"}",
            "apiserver_guard_discovery_last_apply_seconds",
        ],
    );
    r.applied_metric = m[0];
    r.last_apply_metric = m[1];
    d.stop();
    b.reset()?;
    r.load_after = loadavg();
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

// ---------------------------------------------------------------- 2. cost of the client

/// One binary and mode whose start-up and idle memory are measured.
struct Variant {
    label: String,
    bin: PathBuf,
    discovery: bool,
}

#[derive(Default)]
struct StartResult {
    to_block: Vec<f64>,
    to_ready: Vec<f64>,
    installed: Vec<f64>,
    failures: usize,
}

fn variant_args(b: &Bench, v: &Variant) -> Vec<String> {
    if v.discovery {
        b.discovery_args(Backend::Nftables)
    } else {
        b.static_args()
    }
}

/// Spawn -> first refused pod connect, `runs` times per variant, interleaved (A B C A B C ...)
/// so that a change in the machine's load hits every variant alike.
fn run_start(b: &Bench, variants: &[Variant], runs: usize) -> R<Vec<StartResult>> {
    let mut res: Vec<StartResult> = variants.iter().map(|_| StartResult::default()).collect();
    for i in 0..runs {
        for (v, r) in variants.iter().zip(res.iter_mut()) {
            check_stop()?;
            b.reset()?;
            if once(b.pod(), sock(API_V4))? != Conn::Served {
                return Err("the pod is not served with an empty node firewall".into());
            }
            let w = Watch {
                refused: Some(sock(API_V4)),
                served: None,
            };
            let log = b.log(&format!("start-{}-{i}", v.label.replace([' ', '/', ','], "_")));
            let args = variant_args(b, v);
            let (o, d) = probe_around(b.pod(), &w, START_LIMIT, || {
                BenchDaemon::start(&v.bin, b.node(), &args, log)
            })?;
            let mut d = d?;
            let (ready, _) = d.wait_line(READY_LINE, 0, START_LIMIT)?;
            match o.refused_at {
                Some(at) => r.to_block.push(ms(at - o.t0)),
                None => r.failures += 1,
            }
            r.to_ready.push(ms(ready.saturating_sub(o.t0)));
            if let Some(v) = d
                .lines()
                .iter()
                .find(|(_, l)| l.contains("block installed"))
                .and_then(|(_, l)| installed_ms(l))
            {
                r.installed.push(v);
            }
            d.stop();
            eprintln!(
                "  start {}/{runs}, {}: blocked after {} ms",
                i + 1,
                v.label,
                r.to_block.last().map_or("n/a".into(), |x| f(*x))
            );
        }
    }
    b.reset()?;
    Ok(res)
}

/// (VmRSS, VmHWM, threads) medians of `runs` daemons, each read `wait` after `ready`.
fn run_rss(b: &Bench, v: &Variant, runs: usize, wait: Duration) -> R<(f64, f64, f64)> {
    let (mut rss, mut hwm, mut thr) = (vec![], vec![], vec![]);
    for i in 0..runs {
        check_stop()?;
        b.reset()?;
        let log = b.log(&format!("rss-{}-{i}", v.label.replace([' ', '/', ','], "_")));
        let mut d = BenchDaemon::start(&v.bin, b.node(), &variant_args(b, v), log)?;
        d.wait_line(READY_LINE, 0, START_LIMIT)?;
        let until = Instant::now() + wait;
        while Instant::now() < until {
            check_stop()?;
            thread::sleep(Duration::from_millis(50));
        }
        let (r, h, t) = d
            .memory()
            .ok_or_else(|| format!("cannot read /proc/{}/status", d.pid()))?;
        rss.push(r as f64 / 1024.0);
        hwm.push(h as f64 / 1024.0);
        thr.push(t as f64);
        d.stop();
        eprintln!("  idle RSS {}/{runs}, {}: {:.1} MiB", i + 1, v.label, r as f64 / 1024.0);
    }
    b.reset()?;
    Ok((
        pct(&sorted(rss), 50.0),
        pct(&sorted(hwm), 50.0),
        pct(&sorted(thr), 50.0),
    ))
}

/// Median wall time (ms) of `bin --version`, `runs` times per binary, interleaved.
fn run_version(bins: &[&Path], runs: usize) -> R<Vec<f64>> {
    let mut times: Vec<Vec<f64>> = bins.iter().map(|_| vec![]).collect();
    for _ in 0..runs {
        for (bin, t) in bins.iter().zip(times.iter_mut()) {
            check_stop()?;
            let a = Instant::now();
            let out = Command::new(bin)
                .arg("--version")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("{}: {e}", bin.display()))?;
            t.push(a.elapsed().as_secs_f64() * 1e3);
            if !out.status.success() {
                return Err(format!("{} --version failed", bin.display()));
            }
        }
    }
    Ok(times.into_iter().map(|t| pct(&sorted(t), 50.0)).collect())
}

// ---------------------------------------------------------------- report

fn machine_facts() -> String {
    let sh = |p: &str, a: &[&str]| {
        Command::new(p)
            .args(a)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|_| "n/a".into())
    };
    format!(
        "Machine: {} cores (`nproc`), kernel {}, {}, {}; run {}.",
        sh("nproc", &[]),
        sh("uname", &["-r"]),
        sh("nft", &["--version"]),
        sh("iptables", &["--version"]),
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )
}

fn size_cell(bytes: Option<u64>) -> String {
    match bytes {
        Some(n) => {
            let digits = n.to_string();
            let mut grouped = String::new();
            for (i, ch) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(ch);
            }
            format!("{grouped} B ({:.2} MiB)", n as f64 / 1_048_576.0)
        }
        None => "n/a".into(),
    }
}

fn ratio(old: f64, new: f64, unit: &str) -> String {
    if old.is_nan() || new.is_nan() || old == 0.0 {
        "n/a".into()
    } else {
        let sep = if unit.is_empty() { "" } else { " " };
        format!("{:+.2}{sep}{unit} (x{:.2})", new - old, new / old)
    }
}

struct Cost {
    now_label: String,
    base_label: Option<String>,
    size_now: Option<u64>,
    size_base: Option<u64>,
    version_now: f64,
    version_base: f64,
    version_runs: usize,
    start_runs: usize,
    /// Per variant, same order as the variants: start-up and (rss, hwm, threads).
    variants: Vec<(Variant, StartResult, (f64, f64, f64))>,
    rss_runs: usize,
    rss_wait: Duration,
}

fn report(rows: &[(Backend, LatencyResult)], cost: &Cost, args: &Args) -> String {
    let mut o = String::new();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    o.push_str(&format!(
        "This machine has {cores} cores and other work may run on it concurrently (load average in the details \
         table): the daemon, its nft/iptables children, the fake apiserver, the listener and the probe share \
         them, so absolute times are noisy; medians and ratios are the claims.\n\n"
    ));
    o.push_str(&format!(
        "### EndpointSlice change to kernel change\n\n`apiserver-guard run --apiserver auto --container-cidr {CONTAINER_CIDR_V4} \
         --mode tunnel` (release binary) in the node namespace, watching a fake apiserver (HTTPS + token, list/watch, \
         on the node's loopback) through a kubeconfig. The `kubernetes` EndpointSlice alternates between \
         [{API_V4}] and [{OTHER_V4}], port {API_PORT}; {} changes per backend. t0: right before the slice is \
         updated in the fake apiserver's store (the watch is woken at once). Blocked: end of the first connect from \
         the pod to the new address refused by our rule; released: end of the first connect to the old address \
         served again. Milliseconds.\n\n\
         | backend | measure | changes | p50 | p90 | max |\n|---|---|---:|---:|---:|---:|\n",
        args.iterations
    ));
    for (backend, r) in rows {
        let lines: [(&str, &Vec<f64>); 6] = [
            ("**change -> new address blocked** (t1 - t0)", &r.blocked),
            ("**change -> old address released** (t2 - t0)", &r.released),
            ("split: change -> event in the daemon (delivery)", &r.delivery),
            ("split: event in the daemon -> new address blocked", &r.agent_to_kernel),
            ("daemon-logged: event -> reconcile done", &r.logged),
            ("daemon-logged: reconcile (check + update + read-back)", &r.reconcile),
        ];
        for (what, v) in lines {
            let s = sorted(v.clone());
            o.push_str(&format!(
                "| {} | {what} | {} | {} | {} | {} |\n",
                backend.flag(),
                s.len(),
                f(pct(&s, 50.0)),
                f(pct(&s, 90.0)),
                f(pct(&s, 100.0))
            ));
        }
    }
    o.push_str(
        "\nDaemon-logged figures: `discovery: applied ... (X ms after the change arrived)` (the same number as the \
         `apiserver_guard_discovery_last_apply_seconds` gauge) runs from the watch event being folded into the \
         daemon's view to the end of its reconcile; `block installed (Y ms)` is that reconcile alone (check of the \
         ruleset, the one transaction, its read-back). The split: the event reached the daemon at (time the bench \
         read the `applied` line) - X; before that is delivery (the fake apiserver waking its watch, TLS, the kube \
         client decoding the event), after it the daemon's work until the pod is refused. The reconcile goes on after \
         the kernel already holds the change (the read-back), which is why X exceeds the second part.\n\n",
    );
    o.push_str(&format!(
        "Probe: a thread in the pod namespace connects to the new and the old address in turn (each connect closed \
         at once with RST) back to back for {} ms after t0, then every {} ms; between changes the bench waits \
         {} ms and until the daemon runs no tool for 50 ms. On a 2-core machine the back-to-back probe takes a core \
         from the daemon and the fake apiserver while it runs (`--probe-gap-us N` spaces its connects).\n\n\
         | backend | probe connect p50 (ms) | changes with the awaited state already before t0 | changes not \
         done within {} s | probe timeouts | changes applied (metric) | last apply (metric, ms) | load average \
         before / after | wall time (s) |\n|---|---:|---:|---:|---:|---:|---:|---|---:|\n",
        TIGHT_FOR.as_millis(),
        PROBE_GAP.as_millis(),
        SETTLE.as_millis(),
        CHANGE_LIMIT.as_secs()
    ));
    for (backend, r) in rows {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {:.0} |\n",
            backend.flag(),
            f(pct(&sorted(r.probe_ms.clone()), 50.0)),
            r.already,
            r.timeouts,
            r.other,
            r.applied_metric.map_or("n/a".into(), |v| format!("{v:.0}")),
            r.changes,
            r.last_apply_metric.map_or("n/a".into(), |v| f(v * 1e3)),
            r.load_before,
            r.load_after,
            r.seconds
        ));
    }

    // Cost of the Kubernetes client.
    let base = cost.base_label.as_deref();
    o.push_str(&format!(
        "\n### Cost of the Kubernetes client\n\nThe binary under test ({}) next to {}. Release builds \
         (LTO, one codegen unit, stripped). Start-up: spawn (directly in the node namespace, no `ip netns exec`) -> \
         first refused pod connect to {API_V4}:{API_PORT}, nftables backend, empty firewall, {} runs per row \
         interleaved; idle memory: /proc/PID/status {} s after `ready`, median of {} daemon(s) per row.\n\n",
        cost.now_label,
        base.map_or(
            "no baseline: none was built yet, and this run was told not to build one (`--baseline-if-cached`)"
                .to_string(),
            |b| format!("a binary built from the last commit before discovery ({b})")
        ),
        cost.start_runs,
        cost.rss_wait.as_secs(),
        cost.rss_runs
    ));
    let find = |label: &str| cost.variants.iter().find(|(v, _, _)| v.label == label);
    let cols = [find("before, static"), find("now, static"), find("now, discovery")];
    o.push_str(&format!(
        "| | before discovery{}, static policy | now, static policy | now, discovery on (`--apiserver auto`) | \
         now vs before (static) |\n|---|---:|---:|---:|---:|\n",
        base.map_or(String::new(), |b| format!(" ({b})"))
    ));
    o.push_str(&format!(
        "| binary size | {} | {} | (same binary) | {} |\n",
        size_cell(cost.size_base),
        size_cell(cost.size_now),
        match (cost.size_base, cost.size_now) {
            (Some(a), Some(b)) => format!(
                "{:+.2} MiB (x{:.2})",
                (b as f64 - a as f64) / 1_048_576.0,
                b as f64 / a as f64
            ),
            _ => "n/a".into(),
        }
    ));
    o.push_str(&format!(
        "| `--version` wall time p50 ({} runs, ms) | {} | {} | (same binary) | {} |\n",
        cost.version_runs,
        f(cost.version_base),
        f(cost.version_now),
        ratio(cost.version_base, cost.version_now, "ms")
    ));
    type Pick = fn(&StartResult, &(f64, f64, f64)) -> f64;
    let rows2: [(&str, &str, Pick); 5] = [
        ("spawn -> first refused pod connect p50 (ms)", "ms", |s, _| {
            pct(&sorted(s.to_block.clone()), 50.0)
        }),
        ("spawn -> `ready` log line p50 (ms)", "ms", |s, _| {
            pct(&sorted(s.to_ready.clone()), 50.0)
        }),
        ("idle VmRSS (MiB)", "MiB", |_, m| m.0),
        ("peak VmHWM (MiB)", "MiB", |_, m| m.1),
        ("threads", "", |_, m| m.2),
    ];
    for (what, unit, pick) in rows2 {
        let v: Vec<f64> = cols
            .iter()
            .map(|c| c.map_or(f64::NAN, |(_, s, m)| pick(s, m)))
            .collect();
        let cell = |x: f64| {
            if unit.is_empty() && !x.is_nan() {
                format!("{x:.0}")
            } else {
                f(x)
            }
        };
        o.push_str(&format!(
            "| {what} | {} | {} | {} | {} |\n",
            cell(v[0]),
            cell(v[1]),
            cell(v[2]),
            ratio(v[0], v[1], unit)
        ));
    }
    o.push_str(
        "\nWith discovery on, the daemon first lists the EndpointSlices over HTTPS from the fake apiserver on the \
         node's loopback before it installs anything (no cache file), so a real apiserver's round trip comes on \
         top of that column. Threads: as read at that moment (a tokio blocking-pool thread comes and goes).\n\n\
         Details per row (all medians):\n\n\
         | binary, policy | runs | spawn -> refused p50 | min | max | never blocked | daemon-logged `block installed` p50 (ms) | \
         idle VmRSS (MiB) | VmHWM (MiB) | threads |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (v, s, m) in &cost.variants {
        let tb = sorted(s.to_block.clone());
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            v.label,
            tb.len() + s.failures,
            f(pct(&tb, 50.0)),
            f(pct(&tb, 0.0)),
            f(pct(&tb, 100.0)),
            s.failures,
            f(pct(&sorted(s.installed.clone()), 50.0)),
            f(m.0),
            f(m.1),
            m.2
        ));
    }
    o
}

// ---------------------------------------------------------------- main

struct Args {
    iterations: usize,
    start_runs: usize,
    version_runs: usize,
    rss_runs: usize,
    rss_wait: u64,
    backends: Vec<Backend>,
    baseline_bin: Option<PathBuf>,
    baseline_label: String,
    label: String,
}

fn parse_args() -> R<Option<Args>> {
    let mut a = Args {
        iterations: 20,
        start_runs: 10,
        version_runs: 50,
        rss_runs: 3,
        rss_wait: 5,
        backends: vec![Backend::Nftables, Backend::IptablesNft],
        baseline_bin: None,
        baseline_label: "baseline".into(),
        label: "this tree".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|x| x == "--bench") {
        return Ok(None);
    }
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut val = |name: &str| -> R<String> { it.next().cloned().ok_or_else(|| format!("{name} needs a value")) };
        let num = |v: String, name: &str| -> R<usize> { v.parse().map_err(|_| format!("{name} needs a number")) };
        match k.as_str() {
            "--bench" => {}
            "--iterations" => a.iterations = num(val(k)?, k)?,
            "--start-runs" => a.start_runs = num(val(k)?, k)?,
            "--version-runs" => a.version_runs = num(val(k)?, k)?.max(1),
            "--rss-runs" => a.rss_runs = num(val(k)?, k)?.max(1),
            "--rss-wait" => a.rss_wait = num(val(k)?, k)? as u64,
            "--probe-gap-us" => GAP_US.store(num(val(k)?, k)? as u64, Ordering::Relaxed),
            "--baseline-bin" => a.baseline_bin = Some(PathBuf::from(val(k)?)),
            "--baseline-label" => a.baseline_label = val(k)?,
            "--label" => a.label = val(k)?,
            "--backends" => {
                a.backends = val(k)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| match s {
                        "nftables" => Ok(Backend::Nftables),
                        "iptables-nft" => Ok(Backend::IptablesNft),
                        "iptables-legacy" => Ok(Backend::IptablesLegacy),
                        other => Err(format!("unknown backend {other}")),
                    })
                    .collect::<R<_>>()?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(a))
}

fn main() {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!("discovery_latency: not run under `cargo test`; use benches/discovery-latency.sh (needs root)");
            return;
        }
        Err(e) => {
            eprintln!("discovery_latency: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("discovery_latency: run as root (it creates network namespaces)");
        std::process::exit(1);
    }
    install_signal_handlers();
    now_ns();
    if let Err(e) = bench(&args) {
        eprintln!("discovery_latency: {e}");
        std::process::exit(1);
    }
}

fn bench(args: &Args) -> R<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("APISERVER_GUARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/apiserver-guard"));
    if !bin.exists() {
        return Err(format!("{} missing: run `cargo build --release` first", bin.display()));
    }
    if let Some(b) = &args.baseline_bin {
        if !b.exists() {
            return Err(format!("baseline binary {} missing", b.display()));
        }
    }
    let log_dir = root.join("target/bench-logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("mkdir {}: {e}", log_dir.display()))?;
    let facts = machine_facts();
    eprintln!("{facts}\nbinary: {}", bin.display());

    // The harness panics on setup failures; unwinding drops the cluster, deleting the namespaces.
    let mut cluster = Cluster::new("bench");
    cluster.topo.stop_listeners();
    let _listener = Listener::start(&cluster.topo.api, &[sock(API_V4), sock(OTHER_V4)])?;
    let b = Bench { c: &cluster, log_dir };
    eprintln!("namespaces: {}", cluster.topo.netns_names().join(", "));
    b.reset()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while once(b.pod(), sock(API_V4))? != Conn::Served || once(b.pod(), sock(OTHER_V4))? != Conn::Served {
        if Instant::now() > deadline {
            return Err("the pod cannot reach the bench's listeners after 10 s".into());
        }
        thread::sleep(Duration::from_millis(50));
    }

    let mut rows = Vec::new();
    for &backend in &args.backends {
        eprintln!("discovery latency, {}: {} changes", backend.flag(), args.iterations);
        let r = run_latency(&b, &bin, backend, args.iterations)?;
        rows.push((backend, r));
    }

    let mut variants = Vec::new();
    if let Some(base) = &args.baseline_bin {
        variants.push(Variant {
            label: "before, static".into(),
            bin: base.clone(),
            discovery: false,
        });
    }
    variants.push(Variant {
        label: "now, static".into(),
        bin: bin.clone(),
        discovery: false,
    });
    variants.push(Variant {
        label: "now, discovery".into(),
        bin: bin.clone(),
        discovery: true,
    });
    eprintln!("start-up: {} runs per variant", args.start_runs);
    let starts = run_start(&b, &variants, args.start_runs)?;
    let wait = Duration::from_secs(args.rss_wait);
    let mut mems = Vec::new();
    for v in &variants {
        eprintln!(
            "idle memory, {}: {} daemons, {} s each",
            v.label, args.rss_runs, args.rss_wait
        );
        mems.push(run_rss(&b, v, args.rss_runs, wait)?);
    }
    eprintln!("--version: {} runs per binary", args.version_runs);
    let mut bins: Vec<&Path> = vec![&bin];
    if let Some(base) = &args.baseline_bin {
        bins.push(base);
    }
    let versions = run_version(&bins, args.version_runs)?;
    let size = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
    let cost = Cost {
        now_label: args.label.clone(),
        base_label: args.baseline_bin.as_ref().map(|_| args.baseline_label.clone()),
        size_now: size(&bin),
        size_base: args.baseline_bin.as_deref().and_then(size),
        version_now: versions[0],
        version_base: versions.get(1).copied().unwrap_or(f64::NAN),
        version_runs: args.version_runs,
        start_runs: args.start_runs,
        variants: variants
            .into_iter()
            .zip(starts)
            .zip(mems)
            .map(|((v, s), m)| (v, s, m))
            .collect(),
        rss_runs: args.rss_runs,
        rss_wait: wait,
    };
    drop(b);
    drop(_listener);
    drop(cluster);

    println!("{facts}\n\n{}", report(&rows, &cost, args));
    Ok(())
}
