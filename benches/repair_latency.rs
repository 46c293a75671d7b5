//! Drift-to-repair latency of `apiserver-guard run`, and time to block on first start.
//!
//! Builds its own network namespaces `pod (10.0.1.2/24) <-veth-> node (forwarding) <-veth-> api
//! (192.168.50.10, TCP listener on 5443)`, starts the daemon inside `node` (tunnel mode), then:
//! 1. repeatedly removes the block with a foreign command in `node` (`nft flush ruleset`,
//!    `iptables-nft -F`, ...) and measures the time from the command's return (t0) to the first
//!    TCP connect from the pod that is refused again (RST from our `tcp reset` rule), per backend,
//!    with 0 and N foreign kube-proxy-like iptables-nft rules (the nftables rows with
//!    `--table-ownership off`: the daemon's default owns its table, which a foreign flush cannot
//!    reach; `benches/table_ownership` measures that);
//! 2. measures the time from spawning `apiserver-guard run` to the first refused pod connect.
//!
//! Prints markdown tables (medians/percentiles, no assertions) to stdout, progress to stderr,
//! and writes the tables into its section of `docs/benchmarks-daemon.md`.
//! Never touches the root namespace's firewall; all traffic stays between its own namespaces,
//! which are deleted on exit (also on panic, SIGINT or SIGTERM).
//!
//! Run as root: `benches/repair-latency.sh` (builds `target/release/apiserver-guard`, then runs
//! `cargo bench --bench repair_latency -- [--iterations 100] [--slow-iterations 20]
//! [--foreign 100000] [--start-runs 10] [--no-doc] [--only nftables:0,iptables-nft:100000]
//! [--probe-gap-us 0]`); ~7 minutes on 2 idle cores, most of it the iptables-nft row with foreign
//! rules. `APISERVER_GUARD_BIN` overrides the binary; daemon logs go to `target/bench-logs/`.
//! Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "shared/mod.rs"]
mod shared;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shared::cli::{args_or_exit, bench_argv, log_dir, release_bin, root, run_as_root};
use shared::clock::{ms, now_ns};
use shared::daemon::DaemonProc;
use shared::foreign::foreign_rules;
use shared::listener::Listener;
use shared::machine::machine_facts;
use shared::netns::{enter, exec_in};
use shared::probe::{connect, Conn, CONNECT_TIMEOUT, GAP_US};
use shared::start::StartResult;
use shared::stats::{f, pct, sorted};
use shared::stop::{check_stop, STOP};
use shared::R;

const API: &str = "192.168.50.10:5443";
const POLICY: [&str; 10] = [
    "--container-cidr",
    "10.0.0.0/16",
    "--apiserver",
    API,
    "--mode",
    "tunnel",
    "--config",
    "/dev/null",
    "--log-format",
    "text",
];
/// The probe connects back to back for this long after t0, then once per `PROBE_GAP`
/// (bounds the probe's CPU use during long repairs; resolution stays <= ~1 ms there).
const TIGHT_FOR: Duration = Duration::from_millis(50);
const PROBE_GAP: Duration = Duration::from_millis(1);
/// Minimum pause between iterations, before waiting for the daemon to be idle and in sync: one
/// interval of the daemon's repair budget (a burst of 5, then one repair per second), so every
/// flush is repaired at once; a faster series would measure the budget's deferral instead.
const SETTLE: Duration = Duration::from_secs(1);
const UNSET: u64 = u64::MAX;
const DOC: &str = "docs/benchmarks-daemon.md";
const SECTION: &str = "repair_latency";

// ---------------------------------------------------------------- namespaces

/// A network namespace owned by this process: `agbench-<role>-<pid>`, deleted on drop
/// (after killing whatever still runs inside, which can only be ours).
struct Netns {
    name: String,
    file: File,
}

impl Netns {
    fn new(role: &str) -> R<Netns> {
        let name = format!("agbench-{role}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("ip netns add: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let file = match File::open(format!("/run/netns/{name}")) {
            Ok(f) => f,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                return Err(format!("open /run/netns/{name}: {e}"));
            }
        };
        let ns = Netns { name, file };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> R<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        output_ok(&mut cmd).map(|_| ())
    }

    /// `prog args` inside this namespace: setns() in the child before exec (no shell, no
    /// `ip netns exec` overhead).
    fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(prog);
        cmd.args(args).stdin(Stdio::null());
        // `self.file` stays open as long as the namespace.
        exec_in(&mut cmd, self.file.as_raw_fd());
        cmd
    }

    fn run(&self, prog: &str, args: &[&str]) -> R<String> {
        output_ok(&mut self.cmd(prog, args))
    }

    fn run_stdin(&self, prog: &str, args: &[&str], input: String) -> R<()> {
        let mut child = self
            .cmd(prog, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {prog}: {e}"))?;
        let mut pipe = child.stdin.take().ok_or("no stdin")?;
        let writer = thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().map_err(|e| format!("wait {prog}: {e}"))?;
        let _ = writer.join();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{prog} {} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Run `f` on a new thread that has joined this namespace (`None` from the handle only if
    /// joining failed, which this function already reported).
    fn thread<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> R<JoinHandle<Option<T>>> {
        let path = format!("/run/netns/{}", self.name);
        let (tx, rx) = mpsc::channel::<R<()>>();
        let h = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let entered = File::open(&path)
                    .and_then(|f| enter(f.as_raw_fd()))
                    .map_err(|e| e.to_string());
                let ok = entered.is_ok();
                let _ = tx.send(entered);
                // Never run `f` in the wrong namespace.
                ok.then(f)
            })
            .map_err(|e| format!("spawn thread: {e}"))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(h),
            Ok(Err(e)) => Err(format!("setns({path}) failed: {e}", path = self.name)),
            Err(_) => Err("namespace thread died".into()),
        }
    }

    fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let me = std::process::id() as i32;
        for pid in self.pids().into_iter().filter(|&p| p != me) {
            // SAFETY: kill(2) on a pid living in our uniquely named namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn output_ok(cmd: &mut Command) -> R<String> {
    let out: Output = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---------------------------------------------------------------- topology

/// The shared lean listener (accept, keep 20 ms, reset) on 192.168.50.10:5443, bound in the api
/// namespace.
fn start_listener(api: &Netns) -> R<Listener> {
    let l = api
        .thread("api-bind", || TcpListener::bind(API))?
        .join()
        .ok()
        .flatten()
        .ok_or("listener thread died")?
        .map_err(|e| format!("bind {API}: {e}"))?;
    Listener::serve(vec![l])
}

struct Topology {
    // Dropped in this order: probe and listener threads first, then the namespaces.
    probe: Probe,
    _listener: Listener,
    pod: Netns,
    node: Netns,
    api: Netns,
}

impl Topology {
    fn new() -> R<Topology> {
        let pod = Netns::new("pod")?;
        let node = Netns::new("node")?;
        let api = Netns::new("api")?;
        node.run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        node.ip(&[
            "link", "add", "to-pod", "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ])?;
        node.ip(&[
            "link", "add", "to-api", "type", "veth", "peer", "name", "eth0", "netns", &api.name,
        ])?;
        node.ip(&["addr", "add", "10.0.1.1/24", "dev", "to-pod"])?;
        node.ip(&["addr", "add", "192.168.50.1/24", "dev", "to-api"])?;
        node.ip(&["link", "set", "to-pod", "up"])?;
        node.ip(&["link", "set", "to-api", "up"])?;
        pod.ip(&["addr", "add", "10.0.1.2/24", "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pod.ip(&["route", "add", "default", "via", "10.0.1.1"])?;
        api.ip(&["addr", "add", "192.168.50.10/24", "dev", "eth0"])?;
        api.ip(&["link", "set", "eth0", "up"])?;
        api.ip(&["route", "add", "default", "via", "192.168.50.1"])?;
        let listener = start_listener(&api)?;
        let probe = Probe::start(&pod)?;
        let topo = Topology {
            probe,
            _listener: listener,
            pod,
            node,
            api,
        };
        // The veths come up asynchronously: wait (bounded) until the pod is served.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if topo.probe.once()? == Conn::Served {
                return Ok(topo);
            }
            if Instant::now() > deadline {
                return Err("the pod cannot reach 192.168.50.10:5443 after 10 s".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes every firewall object in the node namespace (only there). `nft flush ruleset`
    /// skips a table still owned by a daemon's socket: a stopped daemon's table is orphaned by the
    /// kernel shortly after its socket closed, so flush again until no table is left (<= 5 s).
    fn clean_node(&self) -> R<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.node.run("nft", &["flush", "ruleset"])?;
            let left = self.node.run("nft", &["list", "tables"])?;
            if left.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "tables left in the node namespace after `nft flush ruleset`:\n{left}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn names(&self) -> String {
        format!("{}, {}, {}", self.pod.name, self.node.name, self.api.name)
    }
}

// ---------------------------------------------------------------- probe

#[derive(Debug, Default, Clone)]
struct ProbeOutcome {
    /// End of the first refused connect that started at or after t0.
    refused_at: Option<u64>,
    /// Start of the first connect that was served (the hole observed open).
    first_served: Option<u64>,
    t0: u64,
    served_before_t0: u32,
    served_after_t0: u32,
    refused_before_t0: u32,
    other: u32,
    probes: u32,
    /// Duration of each connect (ns), to show the probe's resolution.
    connect_ns: Vec<u64>,
}

enum Job {
    Once(mpsc::Sender<Conn>),
    /// Probe until a connect that started at/after t0 (set by the caller) is refused.
    Measure {
        t0: Arc<AtomicU64>,
        limit: Duration,
        reply: mpsc::Sender<ProbeOutcome>,
    },
}

/// A thread in the pod namespace that connects to the apiserver on request.
struct Probe {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<Option<()>>>,
}

impl Probe {
    fn start(pod: &Netns) -> R<Probe> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = pod.thread("pod-probe", move || {
            let addr: SocketAddr = API.parse().expect("valid address");
            for job in rx {
                match job {
                    Job::Once(reply) => {
                        let _ = reply.send(connect(&addr));
                    }
                    Job::Measure { t0, limit, reply } => {
                        let _ = reply.send(measure(&addr, &t0, limit));
                    }
                }
            }
        })?;
        Ok(Probe {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) -> R<()> {
        self.jobs
            .as_ref()
            .ok_or("probe stopped")?
            .send(job)
            .map_err(|_| "probe thread died".to_string())
    }

    fn once(&self) -> R<Conn> {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Once(tx))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| "probe did not answer".to_string())
    }

    /// Starts probing now; returns the t0 cell to set and the receiver of the outcome.
    fn begin(&self, limit: Duration) -> R<(Arc<AtomicU64>, mpsc::Receiver<ProbeOutcome>)> {
        let t0 = Arc::new(AtomicU64::new(UNSET));
        let (tx, rx) = mpsc::channel();
        self.send(Job::Measure {
            t0: t0.clone(),
            limit,
            reply: tx,
        })?;
        Ok((t0, rx))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn measure(addr: &SocketAddr, t0: &AtomicU64, limit: Duration) -> ProbeOutcome {
    let started = Instant::now();
    let mut o = ProbeOutcome::default();
    while started.elapsed() < limit && !STOP.load(Ordering::Relaxed) {
        let a = now_ns();
        let c = connect(addr);
        let b = now_ns();
        o.probes += 1;
        o.connect_ns.push(b - a);
        let t = t0.load(Ordering::SeqCst);
        let after = t != UNSET && a >= t;
        match (c, after) {
            (Conn::Refused, true) => {
                o.refused_at = Some(b);
                o.t0 = t;
                return o;
            }
            (Conn::Refused, false) => o.refused_before_t0 += 1,
            (Conn::Served, true) => {
                o.served_after_t0 += 1;
                o.first_served.get_or_insert(a);
            }
            (Conn::Served, false) => {
                o.served_before_t0 += 1;
                o.first_served.get_or_insert(a);
            }
            (Conn::Other, _) => o.other += 1,
        }
        let gap = GAP_US.load(Ordering::Relaxed);
        if after && a - t > TIGHT_FOR.as_nanos() as u64 {
            // At least as long as the connect took: with 50,000 rules in FORWARD each forwarded
            // packet costs real softirq time, and a probe flood would starve the daemon.
            thread::sleep(PROBE_GAP.max(Duration::from_nanos(b - a)));
        } else if gap > 0 {
            thread::sleep(Duration::from_micros(gap));
        }
    }
    o.t0 = t0.load(Ordering::SeqCst);
    o
}

// ---------------------------------------------------------------- daemon

/// The daemon (`DaemonProc`: its stderr lines with the time read, stopped on drop) and what
/// tells when it is quiet.
struct Daemon {
    proc: DaemonProc,
    /// CPU ticks of the `nft monitor` child at the last `busy` call.
    monitor_ticks: Option<u64>,
}

impl Deref for Daemon {
    type Target = DaemonProc;
    fn deref(&self) -> &DaemonProc {
        &self.proc
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut DaemonProc {
        &mut self.proc
    }
}

impl Daemon {
    /// `extra`: more arguments, e.g. `--table-ownership off`.
    fn start(bin: &Path, node: &Netns, backend: &str, extra: &[&str], log_file: PathBuf) -> R<Daemon> {
        let bin = bin.to_str().ok_or("binary path is not UTF-8")?;
        let mut args = vec!["run"];
        args.extend(POLICY);
        args.extend(["--backend", backend]);
        args.extend(extra);
        Ok(Daemon {
            proc: DaemonProc::spawn(node.cmd(bin, &args), log_file)?,
            monitor_ticks: None,
        })
    }

    /// After `SETTLE`, waits (bounded) until /readyz says in sync and no check/repair has been
    /// running for 5 polls in a row (50 ms).
    fn wait_in_sync(&mut self, node: &Netns, limit: Duration) -> R<()> {
        thread::sleep(SETTLE);
        let pid = self.proc.pid();
        let ticks = &mut self.monitor_ticks;
        self.proc
            .wait_quiet(limit, &format!("idle and in sync within {limit:?}"), || {
                !busy(pid, ticks) && ready(node)
            })
    }
}

/// Whether the daemon runs a tool right now (any child but its `nft monitor`), or its
/// `nft monitor` used CPU since the last call (it reads the whole ruleset into its cache when
/// it starts: seconds with 100,000 foreign rules, during which it reports no events).
fn busy(pid: u32, monitor_ticks: &mut Option<u64>) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut busy = false;
    let mut monitor = None;
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for c in children.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.trim_end().ends_with("nft monitor") {
                monitor = cpu_ticks(c);
            } else {
                busy = true;
            }
        }
    }
    let last = std::mem::replace(monitor_ticks, monitor);
    busy || last != monitor
}

/// Whether the daemon's /readyz (in `node`) answers 200.
fn ready(node: &Netns) -> bool {
    node.thread("readyz", || {
        let Ok(mut s) = TcpStream::connect_timeout(&"127.0.0.1:9440".parse().expect("addr"), CONNECT_TIMEOUT) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.0 200")
    })
    .ok()
    .and_then(|h| h.join().ok().flatten())
    .unwrap_or(false)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn repair_ms(line: &str) -> Option<f64> {
    let v = line.split("repair_ms=").nth(1)?;
    v.trim_start_matches('"')
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------- foreign flushes and rules

#[derive(Debug, Clone, Copy)]
enum Flush {
    NftRuleset,
    NftDeleteTable,
    IptFlushAll,
    /// `-F APISERVER-GUARD` and `-D FORWARD <our jump>` in one iptables-nft-restore transaction.
    IptChainAndJump,
}

impl Flush {
    fn label(self) -> &'static str {
        match self {
            Flush::NftRuleset => "`nft flush ruleset`",
            Flush::NftDeleteTable => "`nft delete table inet apiserver_guard`",
            Flush::IptFlushAll => "`iptables-nft -F`",
            Flush::IptChainAndJump => {
                "`-F APISERVER-GUARD` + `-D FORWARD` our jump (one `iptables-nft-restore --noflush`)"
            }
        }
    }

    fn run(self, node: &Netns) -> R<()> {
        match self {
            Flush::NftRuleset => node.run("nft", &["flush", "ruleset"]).map(|_| ()),
            Flush::NftDeleteTable => node
                .run("nft", &["delete", "table", "inet", "apiserver_guard"])
                .map(|_| ()),
            Flush::IptFlushAll => node.run("iptables-nft", &["-F"]).map(|_| ()),
            Flush::IptChainAndJump => node.run_stdin(
                "iptables-nft-restore",
                &["--noflush"],
                "*filter\n-F APISERVER-GUARD\n-D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD\nCOMMIT\n"
                    .into(),
            ),
        }
    }
}

// ---------------------------------------------------------------- measurements

struct Row {
    backend: &'static str,
    foreign: usize,
    flush: Flush,
    iterations: usize,
    note: &'static str,
}

/// The nftables rows run the daemon with an ordinary table: with its default (an owned table)
/// `nft flush ruleset` skips the table and `nft delete table` is refused, so there is nothing to
/// repair (benches/table_ownership measures that case).
const OWNERSHIP_OFF: [&str; 2] = ["--table-ownership", "off"];

impl Row {
    fn daemon_args(&self) -> &'static [&'static str] {
        if self.backend == "nftables" {
            &OWNERSHIP_OFF
        } else {
            &[]
        }
    }

    /// The backend column: the nftables rows say that the table is not owned.
    fn label(&self) -> String {
        if self.daemon_args().is_empty() {
            self.backend.to_string()
        } else {
            format!("{} (`{}`)", self.backend, self.daemon_args().join(" "))
        }
    }
}

#[derive(Default)]
struct RowResult {
    latencies: Vec<f64>,
    /// First served connect -> first refused connect after t0 (the hole as the pod saw it).
    holes: Vec<f64>,
    flush_cmd: Vec<f64>,
    repair_logged: Vec<f64>,
    probe_ms: Vec<f64>,
    repairs: usize,
    errors: usize,
    never_served: usize,
    served_before_t0: usize,
    open_at_start: usize,
    timeouts: usize,
    other: u32,
    seconds: f64,
}

fn run_row(topo: &Topology, bin: &Path, row: &Row, log_dir: &Path) -> R<RowResult> {
    let started = Instant::now();
    topo.clean_node()?;
    if row.foreign > 0 {
        eprintln!("  loading {} foreign iptables-nft rules ...", row.foreign);
        topo.node
            .run_stdin("iptables-nft-restore", &["--noflush"], foreign_rules(row.foreign))?;
    }
    let log_file = log_dir.join(format!("repair-{}-{}-{:?}.log", row.backend, row.foreign, row.flush));
    let mut d = Daemon::start(bin, &topo.node, row.backend, row.daemon_args(), log_file)?;
    d.wait_line("ready: the block is in place", 0, Duration::from_secs(60))?;
    let slow = Duration::from_secs(if row.foreign > 0 { 120 } else { 30 });
    d.wait_in_sync(&topo.node, slow)?;
    if topo.probe.once()? != Conn::Refused {
        return Err(format!("{}: the pod is not refused after `ready`", row.backend));
    }
    let mut res = RowResult::default();
    for i in 0..row.iterations {
        check_stop()?;
        let before = d.len();
        let (t0, rx) = topo.probe.begin(slow)?;
        let a = now_ns();
        row.flush.run(&topo.node)?;
        let b = now_ns();
        t0.store(b, Ordering::SeqCst);
        let o = rx
            .recv_timeout(slow + Duration::from_secs(5))
            .map_err(|_| "probe did not report".to_string())?;
        d.wait_in_sync(&topo.node, slow)?;
        let new: Vec<String> = d.lines()[before..].iter().map(|(_, l)| l.clone()).collect();
        let repaired: Vec<&String> = new.iter().filter(|l| l.contains("repaired drift")).collect();
        res.repairs += repaired.len();
        res.errors += new.iter().filter(|l| l.contains("check/repair failed")).count();
        res.repair_logged.extend(repaired.iter().filter_map(|l| repair_ms(l)));
        res.flush_cmd.push(ms(b - a));
        res.probe_ms.extend(o.connect_ns.iter().map(|&n| ms(n)));
        res.other += o.other;
        if o.refused_before_t0 == 0 && o.served_before_t0 > 0 {
            res.open_at_start += 1;
        }
        if o.served_before_t0 > 0 {
            res.served_before_t0 += 1;
        }
        if o.served_before_t0 + o.served_after_t0 == 0 {
            res.never_served += 1;
        }
        match o.refused_at {
            Some(r) => {
                res.latencies.push(ms(r - o.t0));
                if let Some(s) = o.first_served {
                    res.holes.push(ms(r - s));
                }
            }
            None => {
                res.timeouts += 1;
                eprintln!("  iteration {i}: not refused again within {slow:?}:\n{}", d.tail(10));
                if res.timeouts >= 3 {
                    break;
                }
            }
        }
        if (i + 1) % 10 == 0 || i + 1 == row.iterations {
            let s = sorted(res.latencies.clone());
            eprintln!(
                "  {}/{} done, p50 so far {} ms, {:.0} s",
                i + 1,
                row.iterations,
                f(pct(&s, 50.0)),
                started.elapsed().as_secs_f64()
            );
        }
    }
    d.stop();
    topo.clean_node()?;
    res.seconds = started.elapsed().as_secs_f64();
    Ok(res)
}

fn run_first_start(topo: &Topology, bin: &Path, runs: usize, log_dir: &Path) -> R<StartResult> {
    let mut r = StartResult::default();
    for i in 0..runs {
        check_stop()?;
        topo.clean_node()?;
        if topo.probe.once()? != Conn::Served {
            return Err("the pod is not served with an empty node firewall".into());
        }
        let (t0, rx) = topo.probe.begin(Duration::from_secs(30))?;
        let spawn_at = now_ns();
        t0.store(spawn_at, Ordering::SeqCst);
        let mut d = Daemon::start(
            bin,
            &topo.node,
            "nftables",
            &[],
            log_dir.join(format!("first-start-{i}.log")),
        )?;
        let o = rx
            .recv_timeout(Duration::from_secs(35))
            .map_err(|_| "probe did not report".to_string())?;
        let (ready, _) = d.wait_line("ready: the block is in place", 0, Duration::from_secs(30))?;
        r.record(spawn_at, o.refused_at, ready, &d);
        d.stop();
        eprintln!(
            "  start {}/{runs}: blocked after {} ms",
            i + 1,
            r.to_block.last().map_or("n/a".into(), |v| f(*v))
        );
    }
    topo.clean_node()?;
    Ok(r)
}

// ---------------------------------------------------------------- report

const METHOD: &str = "How it is measured:\n\n\
- Probe: a thread in the pod namespace connects to 192.168.50.10:5443 (a listener of the bench in the api \
namespace) back to back from before the flush until the first refused connect that started after t0 (every \
connect closed at once with RST); 50 ms after t0 it slows to one connect per ms (or per connect duration, if \
longer). Refused = ECONNREFUSED, i.e. the RST of our `tcp reset` rule; served = handshake completed.\n\
- t0 is taken when the flush command (exec'd directly in the node namespace) has returned. The kernel commits, \
and sends the daemon its change event, before that: the daemon usually starts repairing while the command is still exiting, \
so its logged check+repair time (details below) exceeds the latency from t0, and the pod is already served \
before t0 in nearly every iteration. \"Hole seen by the pod\" is the better measure of exposure.\n\
- Between iterations: 1 s (the daemon's repair budget allows 5 repairs at once, then one per second: a faster \
series would measure its deferral, README \"Daemon\"), then until /readyz is 200 and the daemon has run no tool (iptables rows) \
for 50 ms.\n\
- The nftables rows run the daemon with `--table-ownership off`, i.e. an ordinary table that a foreign flush \
reaches. With its default (the table owned by the daemon's netlink socket) `nft flush ruleset` skips the table \
and `nft delete table` is refused: nothing to repair, see \"Table ownership\" for that measurement.\n\
- With foreign rules, `nft flush ruleset` / `iptables-nft -F` would delete them too, so those rows remove only \
our objects: `nft delete table inet apiserver_guard`, and `-F APISERVER-GUARD` plus \
`-D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD` in one `iptables-nft-restore --noflush` \
transaction (as two commands the daemon may repair after the first and race the second). The 0-rule rows \
with the same flush are their baseline. iptables-nft with foreign rules runs fewer iterations: every check \
reads the whole filter table (`iptables-nft-save`, 1-2 s), a repair does so several times.\n\n";

const TIMER_CELL: &str = "avg 30 / 15 / 90 s, worst 60 / 30 / 180 s; manual: never";

fn report(rows: &[(Row, RowResult)], start: &StartResult, start_runs: usize, args: &Args) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "### Drift-to-repair latency\n\nFrom the moment the foreign command that removed the block returned (t0) to the first \
         refused TCP connect from the pod to 192.168.50.10:5443, `apiserver-guard run --mode tunnel` in the node \
         namespace, event-driven (nf_tables netlink events on its own socket), default resync 10 s. Foreign rules: iptables-nft, half in FORWARD \
         (unrelated /32s, ACCEPT), half in a KUBE-SERVICES chain nothing jumps to. Milliseconds. Regenerate with \
         `benches/repair-latency.sh` (`--iterations {} --slow-iterations {} --foreign {}`).\n\n",
        args.iterations, args.slow_iterations, args.foreign
    ));
    o.push_str(
        "| backend | foreign rules | foreign flush (t0 = command returned) | iterations | p50 | p99 | max | \
         hole seen by the pod p50 / p99 / max | timer-based resync (expected exposure) |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---|\n",
    );
    for (row, r) in rows {
        let s = sorted(r.latencies.clone());
        let h = sorted(r.holes.clone());
        let it = if r.timeouts > 0 {
            format!("{} ({} not repaired in time)", r.latencies.len(), r.timeouts)
        } else {
            format!("{}{}", r.latencies.len(), row.note)
        };
        o.push_str(&format!(
            "| {} | {} | {} | {it} | {} | {} | {} | {} / {} / {} | {TIMER_CELL} |\n",
            row.label(),
            row.foreign,
            row.flush.label(),
            f(pct(&s, 50.0)),
            f(pct(&s, 99.0)),
            f(pct(&s, 100.0)),
            f(pct(&h, 50.0)),
            f(pct(&h, 99.0)),
            f(pct(&h, 100.0))
        ));
    }
    o.push_str(
        "\n\"Hole seen by the pod\": from the start of the first served pod connect after the flush began to the \
         first refused one after t0, i.e. the whole window in which pods could reach the apiserver, including the \
         part before the flush command returned.\n\nTimer column (computed, not measured): a tool that only re-applies on a timer leaves the hole open \
         interval/2 on average and a full interval at worst; ip-masq-agent 60 s / kube-proxy 30 s / Calico Felix \
         180 s default intervals; the manual `iptables -I` in rc.local is never repaired.\n\n",
    );
    o.push_str(METHOD);
    o.push_str(
        "Details per row: how long the foreign command itself took (the block is already gone when it returns, \
         so the hole is open for at least part of it, not counted above), what the daemon logged as its own \
         check+repair time (`repair_ms`: from the start of the check the change event triggered to the end of the \
         repair, read-back included), how long one probe connect takes (the measurement's resolution), and \
         sanity counts.\n\n\
         | backend | foreign rules | flush command p50 (ms) | daemon-logged `repair_ms` p50 / p99 / max | probe connect p50 (ms) | \
         repairs logged / iterations | iterations with the pod served before t0 | pod never served | probe timeouts | \
         errors logged | wall time (s) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (row, r) in rows {
        let fl = sorted(r.flush_cmd.clone());
        let rl = sorted(r.repair_logged.clone());
        let pr = sorted(r.probe_ms.clone());
        o.push_str(&format!(
            "| {} | {} | {} | {} / {} / {} | {} | {} / {} | {} | {} | {} | {} | {:.0} |\n",
            row.label(),
            row.foreign,
            f(pct(&fl, 50.0)),
            f(pct(&rl, 50.0)),
            f(pct(&rl, 99.0)),
            f(pct(&rl, 100.0)),
            f(pct(&pr, 50.0)),
            r.repairs,
            r.latencies.len() + r.timeouts,
            r.served_before_t0,
            r.never_served,
            r.other,
            r.errors,
            r.seconds
        ));
    }
    o.push_str(
        "\n### Exposure after a flush, on one scale\n\nMeasured rows: the hole seen by the pod (above); timer rows: \
         computed (interval/2 on average, the interval at worst).\n\n\
         | what repairs the block | expected exposure | p99 | worst |\n|---|---:|---:|---:|\n\
         | `apiserver-guard run`, nftables, table owned (the default on Linux 6.9+) | none: the flush skips the table, \
         the delete is refused | 0 | 0 (see \"Table ownership\") |\n",
    );
    for (row, r) in rows {
        let h = sorted(r.holes.clone());
        o.push_str(&format!(
            "| `apiserver-guard run`, {}, {} foreign rules, {} | {} ms (p50) | {} ms | {} ms (max of {}) |\n",
            row.label(),
            row.foreign,
            row.flush.label(),
            f(pct(&h, 50.0)),
            f(pct(&h, 99.0)),
            f(pct(&h, 100.0)),
            h.len()
        ));
    }
    o.push_str(
        "| `apiserver-guard run`, iptables-legacy (no events: resync timer, default 10 s) | 5 s | | 10 s |\n\
         | kube-proxy-style resync (30 s) | 15 s | | 30 s |\n\
         | ip-masq-agent-style resync (60 s) | 30 s | | 60 s |\n\
         | Calico Felix-style refresh (180 s) | 90 s | | 180 s |\n\
         | the manual rule | never repaired | | never |\n",
    );
    let tb = sorted(start.to_block.clone());
    let tr = sorted(start.to_ready.clone());
    let ti = sorted(start.installed.clone());
    o.push_str(&format!(
        "\n### Time to block on first start\n\nFrom spawning `apiserver-guard run --backend nftables` (default: the \
         table owned by the daemon) in the node namespace (empty firewall) to the first refused pod connect; median of {start_runs} runs (ms).\n\n\
         | backend | runs | spawn -> first refused pod connect p50 | min | max | spawn -> `ready` log line p50 | \
         daemon-logged `block installed` time p50 |\n|---|---:|---:|---:|---:|---:|---:|\n\
         | nftables | {}{} | {} | {} | {} | {} | {} |\n",
        tb.len(),
        if start.failures > 0 { format!(" ({} never blocked)", start.failures) } else { String::new() },
        f(pct(&tb, 50.0)),
        f(pct(&tb, 0.0)),
        f(pct(&tb, 100.0)),
        f(pct(&tr, 50.0)),
        f(pct(&ti, 50.0))
    ));
    o
}

/// Replaces (or appends) this bench's section of the doc, between markers.
fn write_doc(root: &Path, body: &str) -> R<()> {
    let path = root.join(DOC);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# apiserver-guard daemon benchmarks\n\nGenerated by `benches/repair-latency.sh` and `benches/footprint.sh`; \
         each script rewrites only its own section.\n"
            .into()
    });
    let (begin, end) = (format!("<!-- {SECTION}:begin -->"), format!("<!-- {SECTION}:end -->"));
    let section = format!("{begin}\n## Repair latency and time to block\n\n{body}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end_matches('\n').to_string() + "\n"),
    };
    std::fs::write(&path, new).map_err(|e| format!("write {}: {e}", path.display()))
}

// ---------------------------------------------------------------- main

struct Args {
    iterations: usize,
    slow_iterations: usize,
    foreign: usize,
    start_runs: usize,
    doc: bool,
    /// Only rows whose `backend:foreign` label is listed (all when empty); for quick checks.
    only: Vec<String>,
}

fn parse_args() -> R<Option<Args>> {
    let mut a = Args {
        iterations: 100,
        slow_iterations: 20,
        foreign: 100_000,
        start_runs: 10,
        doc: true,
        only: vec![],
    };
    let Some(argv) = bench_argv() else {
        return Ok(None);
    };
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut num = |name: &str| -> R<usize> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match k.as_str() {
            "--bench" => {}
            "--iterations" => a.iterations = num(k)?,
            "--slow-iterations" => a.slow_iterations = num(k)?,
            "--foreign" => a.foreign = num(k)?,
            "--start-runs" => a.start_runs = num(k)?,
            "--no-doc" => a.doc = false,
            "--only" => {
                a.only = it
                    .next()
                    .map(|v| v.split(',').map(String::from).collect())
                    .unwrap_or_default()
            }
            "--probe-gap-us" => GAP_US.store(num(k)? as u64, Ordering::Relaxed),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(a))
}

fn main() {
    let how = "use benches/repair-latency.sh (needs root)";
    if let Some(args) = args_or_exit("repair_latency", how, parse_args()) {
        run_as_root("repair_latency", || bench(&args));
    }
}

fn bench(args: &Args) -> R<()> {
    let root = root();
    let bin = release_bin(&root)?;
    let log_dir = log_dir(&root)?;
    let facts = machine_facts();
    eprintln!("{facts}\nbinary: {}", bin.display());

    let topo = Topology::new()?;
    eprintln!("namespaces: {}", topo.names());

    eprintln!("time to block on first start ({} runs)", args.start_runs);
    let start = run_first_start(&topo, &bin, args.start_runs, &log_dir)?;

    let (n, slow, big) = (args.iterations, args.slow_iterations, args.foreign);
    let rows = vec![
        Row {
            backend: "nftables",
            foreign: 0,
            flush: Flush::NftRuleset,
            iterations: n,
            note: "",
        },
        Row {
            backend: "nftables",
            foreign: 0,
            flush: Flush::NftDeleteTable,
            iterations: n,
            note: "",
        },
        Row {
            backend: "nftables",
            foreign: big,
            flush: Flush::NftDeleteTable,
            iterations: n,
            note: "",
        },
        Row {
            backend: "iptables-nft",
            foreign: 0,
            flush: Flush::IptFlushAll,
            iterations: n,
            note: "",
        },
        Row {
            backend: "iptables-nft",
            foreign: 0,
            flush: Flush::IptChainAndJump,
            iterations: n,
            note: "",
        },
        Row {
            backend: "iptables-nft",
            foreign: big,
            flush: Flush::IptChainAndJump,
            iterations: slow,
            note: " (fewer: each repair re-reads the whole table)",
        },
    ];
    let mut results = Vec::new();
    let wanted = |r: &Row| args.only.is_empty() || args.only.contains(&format!("{}:{}", r.backend, r.foreign));
    for row in rows.into_iter().filter(wanted) {
        eprintln!(
            "{} with {} foreign rules, flush {}: {} iterations",
            row.backend,
            row.foreign,
            row.flush.label(),
            row.iterations
        );
        let r = run_row(&topo, &bin, &row, &log_dir)?;
        results.push((row, r));
    }
    // SYNs dropped by a full accept queue would show up as probe timeouts; say whether any were.
    if let Ok(out) = topo
        .api
        .run("nstat", &["-asz", "TcpExtListenOverflows", "TcpExtListenDrops"])
    {
        eprintln!("api namespace listen queue counters:\n{}", out.trim_end());
    }
    drop(topo);

    let body = format!("{facts}\n\n{}", report(&results, &start, args.start_runs, args));
    println!("{body}");
    if args.doc {
        write_doc(&root, &body)?;
        eprintln!("written to {DOC} (daemon logs in {})", log_dir.display());
    }
    Ok(())
}
