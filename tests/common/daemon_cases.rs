//! Helpers for the real-kernel tests of the daemon (`apiserver-guard run`,
//! `tests/daemon_*.rs`): a daemon handle (started inside a namespace with a
//! clean environment, optionally with test shims first in its PATH), its
//! HTTP endpoint read with curl from inside the same namespace, Prometheus
//! scrapes, a continuous TCP prober that records any moment the pod gets
//! through, config files written atomically, and fail switches for firewall
//! tools.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::guard::guard_bin;
use super::guard_cases::{Backend, GuardPolicy};
use super::netns::{enter_netns, Netns};

/// Where the daemon serves /healthz, /readyz and /metrics (the default; each
/// namespace has its own loopback, so every test can use it).
pub const LISTEN: &str = "127.0.0.1:9440";
/// Logged once the first apply succeeded.
pub const READY_LINE: &str = "ready: the block is in place";
/// Start of the WARN line logged after each repair.
pub const REPAIR_LINE: &str = "repaired drift in ";
/// Generous liveness deadline for a daemon to come up (debug build, busy CI).
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Liveness deadline for a repair or a reload to show.
pub const REPAIR_DEADLINE: Duration = Duration::from_secs(5);

/// Variables that could change the daemon's behaviour behind the test's back.
pub const DAEMON_ENV: [&str; 25] = [
    "APISERVER_GUARD_CONTAINER_CIDR",
    "APISERVER_GUARD_APISERVER",
    "APISERVER_GUARD_MODE",
    "APISERVER_GUARD_BACKEND",
    "APISERVER_GUARD_EXEMPT",
    "APISERVER_GUARD_ACTION",
    "APISERVER_GUARD_LOG_GROUP",
    "APISERVER_GUARD_CONFIG",
    "APISERVER_GUARD_RESYNC_INTERVAL",
    "APISERVER_GUARD_LISTEN",
    "APISERVER_GUARD_CLEANUP_ON_EXIT",
    "APISERVER_GUARD_LOG_FORMAT",
    "APISERVER_GUARD_KUBECONFIG",
    "APISERVER_GUARD_ALLOW_PODS",
    "APISERVER_GUARD_ALLOW_NAMESPACES",
    "APISERVER_GUARD_DISCOVERY_CACHE",
    "APISERVER_GUARD_NODE_TAINT",
    "APISERVER_GUARD_TABLE_OWNERSHIP",
    "NODE_NAME",
    "KUBERNETES_SERVICE_HOST",
    "KUBECONFIG",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

/// `run` with `policy` on the command line, text logs, and `extra` flags.
pub fn daemon_args(policy: &GuardPolicy, extra: &[&str]) -> Vec<String> {
    let mut a = policy.args("run");
    a.extend(["--log-format".to_owned(), "text".to_owned()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A daemon in `node` auditing pods' TCP to the v4 apiserver's port
/// (nftables, defaults plus `extra`), ready and reading its log group.
pub fn audit_daemon_v4<'a>(node: &'a Netns, extra: &[&str]) -> Daemon<'a> {
    let policy = GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[super::CONTAINER_CIDR_V4],
        &[&super::guard_cases::endpoint(super::API_V4, Some(super::API_PORT))],
    )
    .with_action("audit");
    let daemon = Daemon::spawn(node, &daemon_args(&policy, extra));
    daemon.wait_ready();
    wait_attempt_log_bound(node);
    daemon
}

/// Flags for a daemon whose objects the test edits from another process:
/// `resync_flags`, and for nftables an ordinary table (`--table-ownership
/// off`; an owned one refuses such edits, as `tests/table_ownership.rs` shows).
pub fn editable_flags(b: Backend) -> Vec<&'static str> {
    let mut f = resync_flags(b);
    if b == Backend::Nftables {
        f.extend(["--table-ownership", "off"]);
    }
    f
}

/// The resync interval the tests use: 1 s for iptables-legacy (its only
/// mechanism), the default otherwise.
pub fn resync_flags(b: Backend) -> Vec<&'static str> {
    match b {
        Backend::IptablesLegacy => vec!["--resync-interval", "1s"],
        _ => vec![],
    }
}

/// One `apiserver-guard run` process inside a namespace. It is killed when
/// the namespace is dropped, whatever happens to the test.
pub struct Daemon<'a> {
    pub ns: &'a Netns,
    pub pid: u32,
    pub args: Vec<String>,
    pub started: Instant,
}

impl<'a> Daemon<'a> {
    /// Starts `apiserver-guard args...` in `ns` with every `APISERVER_GUARD_*`
    /// (and systemd) variable unset.
    pub fn spawn(ns: &'a Netns, args: &[String]) -> Daemon<'a> {
        Self::spawn_with_path(ns, args, None)
    }

    /// Like `spawn`, with `bin_dir` put first in the daemon's PATH (test shims).
    pub fn spawn_with_path(ns: &'a Netns, args: &[String], bin_dir: Option<&Path>) -> Daemon<'a> {
        Self::spawn_full(ns, args, bin_dir, &[])
    }

    /// Like `spawn`, with these variables set (after every other one is unset).
    pub fn spawn_with_env(ns: &'a Netns, args: &[String], vars: &[(&str, &str)]) -> Daemon<'a> {
        Self::spawn_full(ns, args, None, vars)
    }

    fn spawn_full(ns: &'a Netns, args: &[String], bin_dir: Option<&Path>, vars: &[(&str, &str)]) -> Daemon<'a> {
        let mut argv: Vec<String> = vec!["env".to_owned()];
        for var in DAEMON_ENV {
            argv.extend(["-u".to_owned(), var.to_owned()]);
        }
        if let Some(dir) = bin_dir {
            let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
            argv.push(format!("PATH={}:{path}", dir.display()));
        }
        argv.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        argv.push(guard_bin().to_owned());
        argv.extend(args.iter().cloned());
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        // `ip netns exec` and `env` both exec: the pid is the daemon's own.
        let pid = ns.spawn(&refs);
        Daemon {
            ns,
            pid,
            args: args.to_vec(),
            started: Instant::now(),
        }
    }

    /// Everything the daemon wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.ns.output_of(self.pid)
    }

    /// Exit status if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.ns.try_wait(self.pid)
    }

    /// Waits until the log contains `needle` at least `count` times; panics
    /// (with the log) if the daemon exits first or `timeout` passes.
    #[track_caller]
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return start.elapsed();
            }
            if let Some(status) = self.exited() {
                panic!(
                    "daemon exited ({status}) before logging {needle:?} x{count}\nargs: {:?}\nlog:\n{}",
                    self.args,
                    self.log()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "daemon did not log {needle:?} x{count} within {timeout:?}\nargs: {:?}\nlog:\n{log}",
                    self.args
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `ready: the block is in place`; returns the time since spawn.
    #[track_caller]
    pub fn wait_ready(&self) -> Duration {
        self.wait_log(READY_LINE, 1, READY_TIMEOUT);
        self.started.elapsed()
    }

    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` and waits (<= 10 s) for the exit; panics with the log if it does not exit.
    #[track_caller]
    pub fn signal_and_wait(&self, sig: libc::c_int) -> ExitStatus {
        self.signal(sig);
        match self.wait_exit(Duration::from_secs(10)) {
            Some(s) => s,
            None => panic!("daemon did not exit within 10 s of signal {sig}\nlog:\n{}", self.log()),
        }
    }

    /// SIGKILL and reap; panics unless it died of that SIGKILL (i.e. it was
    /// still running: it had not crashed or exited on its own).
    #[track_caller]
    pub fn kill(&self) {
        if let Some(s) = self.exited() {
            panic!("daemon had already exited ({s}) before SIGKILL\nlog:\n{}", self.log());
        }
        let s = self.signal_and_wait(libc::SIGKILL);
        assert_eq!(
            s.signal(),
            Some(libc::SIGKILL),
            "daemon ended with {s}, not by our SIGKILL\nlog:\n{}",
            self.log()
        );
    }

    /// Log lines written after byte offset `from` (use `log().len()` as a mark).
    pub fn log_since(&self, from: usize) -> String {
        let log = self.log();
        log.get(from..).unwrap_or("").to_owned()
    }
}

/// Waits until no process is left in `ns` (e.g. an orphaned `nft monitor` or
/// a tool still finishing after its daemon was killed); panics after `timeout`
/// naming what is left.
#[track_caller]
pub fn wait_no_processes(ns: &Netns, timeout: Duration) -> Duration {
    let me = std::process::id();
    let start = Instant::now();
    loop {
        let left: Vec<u32> = ns.pids().into_iter().filter(|&p| p != me).collect();
        if left.is_empty() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let described: Vec<String> = left
                .iter()
                .map(|p| {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_owned())
                        .unwrap_or_else(|_| "?".into());
                    format!("{p}: {cmd}")
                })
                .collect();
            panic!(
                "processes still alive in netns {} after {timeout:?}: {described:?}",
                ns.name
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP answer from the daemon.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub code: u16,
    pub body: String,
}

/// `GET http://127.0.0.1:9440<path>` with curl inside `ns`; None when no
/// HTTP answer came (nothing listening yet, timeout).
pub fn http_get(ns: &Netns, path: &str) -> Option<HttpReply> {
    let url = format!("http://{LISTEN}{path}");
    let out = ns.run(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--noproxy",
        "*",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok().filter(|&c| c != 0)?;
    Some(HttpReply {
        code,
        body: body.to_owned(),
    })
}

/// Polls `path` until it answers `code` (and `body_ok` accepts the body);
/// panics with the last answer after `timeout`. Returns the matching answer
/// and how long it took.
#[track_caller]
pub fn wait_http(
    ns: &Netns,
    path: &str,
    code: u16,
    body_ok: impl Fn(&str) -> bool,
    timeout: Duration,
) -> (HttpReply, Duration) {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some(r) = http_get(ns, path) {
            if r.code == code && body_ok(&r.body) {
                return (r, start.elapsed());
            }
            last = Some(r);
        }
        if start.elapsed() > timeout {
            panic!("{path} did not answer {code} (with the expected body) within {timeout:?}; last answer: {last:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `/metrics`, parsed with prometheus-parse; panics if unreachable or unparsable.
#[track_caller]
pub fn scrape(ns: &Netns) -> prometheus_parse::Scrape {
    let r = http_get(ns, "/metrics").unwrap_or_else(|| panic!("/metrics unreachable in netns {}", ns.name));
    assert_eq!(r.code, 200, "/metrics: {r:?}");
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("/metrics does not parse ({e}):\n{}", r.body))
}

fn scalar(v: &prometheus_parse::Value) -> Option<f64> {
    use prometheus_parse::Value::*;
    match v {
        Counter(x) | Gauge(x) | Untyped(x) => Some(*x),
        Histogram(_) | Summary(_) => None,
    }
}

/// Value of the sample `name` whose labels include every `labels` pair.
pub fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .find_map(|x| scalar(&x.value))
}

/// Sum of every sample of `name` (all label sets); 0 when there is none.
pub fn total(s: &prometheus_parse::Scrape, name: &str) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter_map(|x| scalar(&x.value))
        .sum()
}

/// Every `name{label="..."}` sample as `label=value` pairs, for messages.
pub fn show_family(s: &prometheus_parse::Scrape, name: &str) -> String {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .map(|x| format!("{}{} = {:?}", x.metric, x.labels, x.value))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Polls `/metrics` until `ok` accepts a scrape; panics after `timeout`.
#[track_caller]
pub fn wait_metrics(
    ns: &Netns,
    what: &str,
    ok: impl Fn(&prometheus_parse::Scrape) -> bool,
    timeout: Duration,
) -> (prometheus_parse::Scrape, Duration) {
    let start = Instant::now();
    loop {
        let s = scrape(ns);
        if ok(&s) {
            return (s, start.elapsed());
        }
        if start.elapsed() > timeout {
            let all: Vec<String> = s
                .samples
                .iter()
                .map(|x| format!("{}{} {:?}", x.metric, x.labels, x.value))
                .collect();
            panic!(
                "metrics: {what} not reached within {timeout:?}; last scrape:\n{}",
                all.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the daemon in `ns` has bound its NFLOG group (panics after READY_TIMEOUT).
#[track_caller]
pub fn wait_attempt_log_bound(ns: &Netns) {
    wait_metrics(
        ns,
        "the NFLOG group bound",
        |s| sample(s, "apiserver_guard_attempt_log_bound", &[]) == Some(1.0),
        READY_TIMEOUT,
    );
}

/// The daemon's `/attempts` page in `ns` as JSON (panics unless it answers 200 with JSON).
#[track_caller]
pub fn attempts_page(ns: &Netns) -> serde_json::Value {
    let r = http_get(ns, "/attempts").expect("/attempts answers");
    assert_eq!(r.code, 200, "/attempts: {r:?}");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("/attempts is not JSON ({e}): {}", r.body))
}

/// Rows of the daemon's `/attempts` page in `ns` from `source`.
#[track_caller]
pub fn attempt_rows_from(ns: &Netns, source: &str) -> Vec<serde_json::Value> {
    attempts_page(ns)["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == source)
        .cloned()
        .collect()
}

/// Packets counted by the rule of our chain `guard` named `comment` (the
/// match of one of our rules), read with nft in `ns`.
#[track_caller]
pub fn guard_counter(ns: &Netns, comment: &str) -> u64 {
    rule_counter(ns, "guard", comment)
}

/// The packet counter of the rule commented `comment` in our table's chain
/// `chain` in `ns`.
#[track_caller]
pub fn rule_counter(ns: &Netns, chain: &str, comment: &str) -> u64 {
    let text = ns.run_ok(&["nft", "list", "chain", "inet", "apiserver_guard", chain]);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule {comment} in {chain}:\n{text}"));
    let after = line.split("counter packets ").nth(1).expect("a counter");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The node in `node` forwards packets with any source from both pods (a
/// CNI without anti-spoofing), whatever the host's defaults (call after
/// `Topology::add_other_pod`).
pub fn allow_forged_sources(node: &Netns) {
    node.sysctl(&[
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        (&format!("net.ipv4.conf.{}.rp_filter", super::NODE_POD_IF), "0"),
        (&format!("net.ipv4.conf.{}.rp_filter", super::NODE_OTHER_POD_IF), "0"),
    ]);
}

/// The first row of `/attempts` in `ns` that `ok` accepts, polled every
/// 50 ms: Ok(row), or Err(the last page seen) after `within`. Only a page
/// that does not answer at all (curl failed: a busy node) is polled again
/// as such; an answer must be 200 with JSON holding `attempts`.
#[track_caller]
pub fn find_attempt_row(
    ns: &Netns,
    within: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    let start = Instant::now();
    let mut last = String::from("(no answer)");
    loop {
        if let Some(r) = http_get(ns, "/attempts") {
            assert_eq!(r.code, 200, "/attempts: {r:?}");
            let page: serde_json::Value =
                serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("/attempts is not JSON ({e}): {}", r.body));
            let rows = page["attempts"]
                .as_array()
                .unwrap_or_else(|| panic!("/attempts has no attempts array: {page}"));
            if let Some(row) = rows.iter().find(|r| ok(r)) {
                return Ok(row.clone());
            }
            last = r.body;
        }
        if start.elapsed() >= within {
            return Err(last);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the row of the connection `source` opened from `port` before
/// audit began and checks it: audited, counted once. Returns the row.
pub fn assert_held_connection_reported_once(
    ns: &Netns,
    daemon: &Daemon,
    source: &str,
    port: u16,
    within: Duration,
) -> serde_json::Value {
    let row = wait_attempt_row(
        ns,
        daemon,
        &format!("{source}:{port}, the connection opened before audit began"),
        within,
        |r| r["source"] == source && r["source_port"] == port,
    );
    assert_eq!(
        (row["action"].as_str(), row["count"].as_u64()),
        (Some("audited"), Some(1)),
        "{row}"
    );
    row
}

/// The first row of `/attempts` in `ns` that `ok` accepts; panics after
/// `within` with `what`, the last page seen and the daemon's log.
#[track_caller]
pub fn wait_attempt_row(
    ns: &Netns,
    daemon: &Daemon,
    what: &str,
    within: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    match find_attempt_row(ns, within, ok) {
        Ok(row) => row,
        Err(last) => panic!(
            "{what}: no such row in /attempts within {within:?}: {last}\nlog:\n{}",
            daemon.log()
        ),
    }
}

/// What a `Prober` saw.
#[derive(Debug, Default, Clone)]
pub struct ProbeStats {
    pub attempts: u64,
    /// Connections that were established: the pod got through.
    pub connected: u64,
    /// Refused (TCP reset answering the SYN): blocked.
    pub refused: u64,
    /// `ECONNRESET` on connect: the SYN reached the apiserver and the
    /// handshake completed, then the connection was reset (the block came
    /// back an instant later). The pod got through at the TCP level.
    pub reset: u64,
    /// When (since the start) the first few resets happened.
    pub reset_at: Vec<Duration>,
    /// Anything else (timeouts, unreachable...).
    pub other: u64,
    /// When (since the start) the first few connections got through.
    pub connected_at: Vec<Duration>,
    /// The first few unexpected errors.
    pub other_examples: Vec<String>,
    pub elapsed: Duration,
}

impl ProbeStats {
    /// Attempts where the pod's SYN reached the apiserver (connected, or reset after the handshake).
    pub fn got_through(&self) -> u64 {
        self.connected + self.reset
    }

    /// One line for the test output.
    pub fn summary(&self) -> String {
        format!(
            "{} attempts in {:?}: {} refused, {} connected (at {:?}), {} reset after the handshake (at {:?}), {} other {:?}",
            self.attempts,
            self.elapsed,
            self.refused,
            self.connected,
            self.connected_at,
            self.reset,
            self.reset_at,
            self.other,
            self.other_examples
        )
    }
}

/// A thread in a namespace connecting to `ip:port` in a tight loop (no
/// pause: an opening of a few microseconds must be seen) until stopped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    handle: Option<JoinHandle<ProbeStats>>,
}

impl Prober {
    pub fn start(ns: &Netns, ip: &str, port: u16) -> Prober {
        let addr = SocketAddr::new(ip.parse::<IpAddr>().expect("valid address"), port);
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicU64::new(0));
        let handle = {
            let stop = Arc::clone(&stop);
            let attempts = Arc::clone(&attempts);
            thread::Builder::new()
                .name(format!("prober-{addr}"))
                .spawn(move || {
                    enter_netns(&path).unwrap_or_else(|e| panic!("prober: {e}"));
                    let mut st = ProbeStats::default();
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        st.attempts += 1;
                        attempts.store(st.attempts, Ordering::Relaxed);
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                            Ok(_) => {
                                st.connected += 1;
                                if st.connected_at.len() < 10 {
                                    st.connected_at.push(start.elapsed());
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::ConnectionRefused => st.refused += 1,
                            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                                st.reset += 1;
                                if st.reset_at.len() < 10 {
                                    st.reset_at.push(start.elapsed());
                                }
                            }
                            Err(e) => {
                                st.other += 1;
                                if st.other_examples.len() < 10 {
                                    st.other_examples.push(format!("{:?}: {e}", start.elapsed()));
                                }
                            }
                        }
                    }
                    st.elapsed = start.elapsed();
                    st
                })
                .expect("spawn prober thread")
        };
        Prober {
            stop,
            attempts,
            handle: Some(handle),
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Stops the thread and returns what it saw.
    pub fn stop(mut self) -> ProbeStats {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take().expect("prober running");
        match h.join() {
            Ok(st) => st,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A per-test directory under cargo's target temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("daemon-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Replaces `path` with `content` atomically (write a sibling, rename over),
/// as a careful operator or a ConfigMap update does: a reader never sees a
/// half-written file.
pub fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, content).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// The first executable `tool` in PATH.
pub fn which(tool: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&paths)
        .map(|d| d.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("{tool} not found in PATH"))
}

/// A shim for one firewall tool, put first in the daemon's PATH: while the
/// switch is on it reads its stdin (like the real tool) and fails (exit 1, a
/// message on stderr); otherwise it execs the real tool with the same
/// arguments and stdin.
pub struct FailSwitch {
    dir: TempDir,
    marker: PathBuf,
    pub tool: String,
}

impl FailSwitch {
    pub fn new(tool: &str) -> FailSwitch {
        use std::os::unix::fs::PermissionsExt;
        let real = which(tool);
        let dir = TempDir::new("shim");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("create {}: {e}", bin.display()));
        let marker = dir.join("fail");
        let script = format!(
            "#!/bin/sh\nif [ -e '{}' ]; then\n  cat >/dev/null\n  echo 'test shim: {tool} refused on purpose' >&2\n  exit 1\nfi\nexec '{}' \"$@\"\n",
            marker.display(),
            real.display()
        );
        let shim = bin.join(tool);
        let tmp = bin.join(format!(".{tool}.tmp"));
        std::fs::write(&tmp, script).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod shim");
        std::fs::rename(&tmp, &shim).expect("install shim");
        FailSwitch {
            dir,
            marker,
            tool: tool.to_owned(),
        }
    }

    /// The directory to put first in PATH.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// From now on the tool fails.
    pub fn fail(&self) {
        std::fs::write(&self.marker, "").expect("create marker");
    }

    /// From now on the real tool runs.
    pub fn pass(&self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// Our own log rules, in a table of the test's, evaluated before the block.
pub fn add_log_rules(node: &Netns, rules: &[String]) {
    let mut text =
        String::from("table inet test_log {\n chain log_forward {\n  type filter hook forward priority -10;\n");
    for r in rules {
        text.push_str(&format!("  {r}\n"));
    }
    text.push_str(" }\n}\n");
    let out = node.run_stdin(&["nft", "-f", "-"], &text);
    assert!(
        out.status.success(),
        "nft -f: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn log_rule(matches: &str, prefix: &str) -> String {
    format!(
        "{matches} log prefix \"{prefix}\" group {} snaplen 96",
        apiserver_guard::core::attempt_log::DEFAULT_LOG_GROUP
    )
}
