//! No repair storms (real kernel, the test's own namespaces): another agent
//! deletes our objects in a loop as fast as it can for 10 s while the daemon
//! runs. The repair budget (`src/daemon/repair_budget.rs`: a burst of 5, then
//! one repair per second) must keep the daemon cheap (its CPU, its firewall
//! tools included, under 20 % of a core over the loop), count the deferred
//! repairs (`apiserver_guard_repair_conflicts_total`), say so on `/readyz`
//! (503 naming the looping process), name that process in one conflict line
//! (at most one a minute) instead of a line per repair (a drift not yet told
//! in the conflict still gets its own line, once), put the block back within one interval after the loop stops
//! (pod refused again, curl), become ready again, and leave everything else
//! on the node as it was.
//!
//! The figures (CPU, repairs, recovery time) are printed with `eprintln!`
//! (`cargo test --test repair_storm -- --nocapture`).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

const CONFLICTS: &str = "apiserver_guard_repair_conflicts_total";
const REPAIRS: &str = "apiserver_guard_repairs_total";
const CHECKS: &str = "apiserver_guard_reconciles_total";
/// How long the foreign loop runs: 10 s, and half an interval so that it
/// stops between two tokens and the recovery shows the wait for the next one.
const STORM: Duration = Duration::from_millis(10_500);
/// The default budget: a burst of 5 repairs, then one per interval.
const BURST: f64 = 5.0;
const INTERVAL: Duration = Duration::from_secs(1);
/// The daemon's CPU over the loop, in cores.
const CPU_LIMIT: f64 = 0.20;
/// Start of the conflict line, logged at most once a minute.
const CONFLICT_LINE: &str = "repairs keep being undone by ";
/// Logged when the conflict clears.
const CLEARED_LINE: &str = "repair conflict over";

/// A foreign rule, chain and table that must come through untouched.
fn load_foreign_state(node: &Netns, b: Backend) {
    node.run_ok(&["nft", "add", "table", "inet", "foreign"]);
    node.run_ok(&[
        "nft",
        "add chain inet foreign passthrough { type filter hook forward priority 10; policy accept; }",
    ]);
    node.run_ok(&[
        "nft",
        "add rule inet foreign passthrough ip saddr 198.51.100.0/24 counter accept",
    ]);
    if b == Backend::IptablesNft {
        ipt_ok(node, false, "nft", &["-N", "KUBE-FOREIGN"]);
        ipt_ok(
            node,
            false,
            "nft",
            &["-A", "KUBE-FOREIGN", "-s", "192.0.2.0/24", "-j", "ACCEPT"],
        );
        ipt_ok(node, false, "nft", &["-A", "FORWARD", "-j", "KUBE-FOREIGN"]);
    }
}

/// utime+stime of `pid` itself and of its reaped children (the firewall
/// tools it ran), in seconds.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon's /proc/PID/stat");
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime, stime, cutime, cstime are fields 14..17, i.e. 11..14 from state.
    ((f[11] + f[12]) as f64 / hz, (f[13] + f[14]) as f64 / hz)
}

/// Polls `/readyz` every 300 ms until stopped; returns every answer.
struct ReadyzWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: thread::JoinHandle<Vec<(Duration, u16, String)>>,
}

impl ReadyzWatch {
    fn start(node: &Netns) -> ReadyzWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = node.name.clone();
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let mut seen = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let out = std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &path,
                        "curl",
                        "-sS",
                        "--max-time",
                        "2",
                        "--noproxy",
                        "*",
                    ])
                    .args(["-o", "-", "-w", "\n%{http_code}", &format!("http://{LISTEN}/readyz")])
                    .output();
                if let Ok(out) = out {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    if let Some((body, code)) = text.rsplit_once('\n') {
                        if let Ok(code) = code.trim().parse() {
                            seen.push((started.elapsed(), code, body.trim().to_owned()));
                        }
                    }
                }
                thread::sleep(Duration::from_millis(300));
            }
            seen
        });
        ReadyzWatch { stop, handle }
    }

    fn stop(self) -> Vec<(Duration, u16, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.join().expect("readyz watcher")
    }
}

/// Runs the storm `script` (a shell loop, as fast as it can) against a daemon
/// of backend `b` and checks everything the module doc promises; `writer`
/// is the process name the kernel reports for the loop's tool.
fn storm(b: Backend, extra: &[&str], script: &str, writer: &str) {
    let topo = Topology::new();
    let node = &topo.node;
    load_foreign_state(node, b);
    let policy = GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]);
    let daemon = Daemon::spawn(node, &daemon_args(&policy, extra));
    daemon.wait_ready();
    daemon.wait_log("watching ruleset changes", 1, REPAIR_DEADLINE);
    wait_http(node, "/readyz", 200, |_| true, READY_TIMEOUT);
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 before the storm",
    );
    let before = firewall_snapshot(node);
    let s0 = scrape(node);
    let (repairs_before, checks_before) = (total(&s0, REPAIRS), total(&s0, CHECKS));
    let mark = daemon.log().len();

    let watch = ReadyzWatch::start(node);
    let cpu0 = cpu_seconds(daemon.pid);
    let started = Instant::now();
    let looping = node.spawn(&["sh", "-c", script]);
    thread::sleep(STORM);
    let stopped = node.stop(looping, Duration::from_millis(200));
    let storm_took = started.elapsed();
    let cpu1 = cpu_seconds(daemon.pid);
    assert!(stopped.is_some(), "the loop was not ours to stop");
    let loop_ended = Instant::now();

    // The block is back within one interval (plus the repair and one curl).
    let back_in = loop {
        let r = curl(&topo.pod, API_V4, API_PORT, 2);
        if r.refused() {
            break loop_ended.elapsed();
        }
        assert!(
            loop_ended.elapsed() < INTERVAL + Duration::from_secs(3),
            "[{}] pod -> API_V4 not refused again after the loop stopped; last: {r:?}\nlog:\n{}",
            b.flag(),
            daemon.log_since(mark)
        );
        thread::sleep(Duration::from_millis(20));
    };
    let (ready, ready_in) = wait_http(node, "/readyz", 200, |_| true, 3 * INTERVAL + Duration::from_secs(3));
    let answers = watch.stop();
    let s = scrape(node);
    let log = daemon.log_since(mark);

    let own = cpu1.0 - cpu0.0;
    let children = cpu1.1 - cpu0.1;
    let secs = storm_took.as_secs_f64();
    let repairs = total(&s, REPAIRS) - repairs_before;
    let checks = total(&s, CHECKS) - checks_before;
    let conflicts = total(&s, CONFLICTS);
    let conflict_lines: Vec<&str> = log.lines().filter(|l| l.contains(CONFLICT_LINE)).collect();
    let repair_lines = log.lines().filter(|l| l.contains(REPAIR_LINE)).count();
    let naming: Vec<&str> = log.lines().filter(|l| l.contains(writer)).collect();
    let deletions = node.output_of(looping).matches('x').count();
    eprintln!(
        "[{}] storm {secs:.1} s ({deletions} loop rounds): daemon CPU {own:.2} s own + {children:.2} s in its tools = \
         {:.1} % of a core; {checks} checks, {repairs} repairs, {conflicts} conflicts, {} conflict line(s), {repair_lines} per-repair \
         line(s), {} naming {writer}; block back {back_in:?} after the loop stopped; /readyz 200 again after {ready_in:?} more",
        b.flag(),
        100.0 * (own + children) / secs,
        conflict_lines.len(),
        naming.len()
    );
    eprintln!("[{}] conflict line: {:?}", b.flag(), conflict_lines.first());
    if std::env::var_os("STORM_LOG").is_some() {
        eprintln!("{log}");
    }
    let during: Vec<_> = answers.iter().filter(|a| a.1 == 503).collect();
    eprintln!(
        "[{}] /readyz during: {} answers, {} of them 503, e.g. {:?}",
        b.flag(),
        answers.len(),
        during.len(),
        during.last()
    );

    assert!(
        deletions >= 20,
        "the loop hardly ran ({deletions} rounds): the test proves nothing"
    );
    assert!(
        (own + children) / secs < CPU_LIMIT,
        "[{}] daemon CPU {own:.2} s + tools {children:.2} s over {secs:.1} s: over {CPU_LIMIT} of a core\nlog:\n{log}",
        b.flag()
    );
    assert!(
        repairs <= BURST + secs / INTERVAL.as_secs_f64() + 2.0,
        "[{}] {repairs} repairs in {secs:.1} s: more than the budget ({BURST} + one per {INTERVAL:?})",
        b.flag()
    );
    // Each deferred repair is one check (the events meanwhile wait for it), plus
    // the burst and the checks after the loop stopped.
    assert!(
        checks <= 2.0 * (BURST + secs / INTERVAL.as_secs_f64()) + 5.0,
        "[{}] {checks} checks in {secs:.1} s: the events of the loop are not waiting for the budget\n{}",
        b.flag(),
        show_family(&s, CHECKS)
    );
    assert!(
        conflicts >= 1.0,
        "[{}] {CONFLICTS} = {conflicts}\n{}",
        b.flag(),
        show_family(&s, CONFLICTS)
    );
    assert_eq!(
        conflict_lines.len(),
        1,
        "[{}] one conflict line in {secs:.1} s (at most one a minute):\n{log}",
        b.flag()
    );
    assert!(
        conflict_lines[0].contains(writer) && conflict_lines[0].contains("WARN"),
        "[{}] the conflict line must name {writer}: {}",
        b.flag(),
        conflict_lines[0]
    );
    // In the conflict, a repair has its own line only for a drift not told yet in it.
    let in_conflict = &log[log.find(CONFLICT_LINE).unwrap_or(0)..];
    let told: Vec<&str> = in_conflict
        .lines()
        .filter_map(|l| l.split(REPAIR_LINE).nth(1))
        .map(|rest| rest.split(" (likely: ").next().unwrap_or(rest))
        .map(|rest| rest.split_once(": ").map_or(rest, |(_ms, what)| what))
        .collect();
    let distinct: std::collections::BTreeSet<&str> = told.iter().copied().collect();
    assert_eq!(
        told.len(),
        distinct.len(),
        "[{}] a drift repeated in the conflict was told again:\n{told:#?}",
        b.flag()
    );
    assert!(
        naming.len() as f64 <= BURST + 1.0 + distinct.len() as f64,
        "[{}] {} lines name {writer}: expected at most the burst's repairs, one conflict line and one per distinct drift:\n{log}",
        b.flag(),
        naming.len()
    );
    assert!(
        log.contains(CLEARED_LINE),
        "[{}] no `{CLEARED_LINE}` line:\n{log}",
        b.flag()
    );
    assert!(
        during
            .iter()
            .any(|a| a.2.contains("repairs keep being undone by") && a.2.contains(writer)),
        "[{}] /readyz never said 503 naming {writer} during the storm: {answers:?}",
        b.flag()
    );
    assert!(ready.body.starts_with("ready"), "{ready:?}");
    assert!(
        back_in < INTERVAL + Duration::from_millis(1500),
        "[{}] the block came back {back_in:?} after the loop stopped: more than one interval",
        b.flag()
    );
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 after the storm",
    );
    policy.assert_in_sync(node, "status after the storm");
    let after = firewall_snapshot(node);
    assert_same_snapshot(
        &before,
        &after,
        "the firewall after the storm, ours repaired, the rest untouched",
    );
    let status = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM exit\nlog:\n{}", daemon.log());
}

#[test]
fn an_iptables_nft_loop_deleting_our_chain_gets_no_repair_storm() {
    if !common::can_run() {
        return;
    }
    // Flush our chain, take our jump out of FORWARD, delete the chain; `x` per round.
    let script = format!(
        "while :; do iptables-nft -F {IPT_CHAIN} 2>/dev/null; \
         iptables-nft -D FORWARD -m comment --comment apiserver-guard -j {IPT_CHAIN} 2>/dev/null; \
         iptables-nft -X {IPT_CHAIN} 2>/dev/null; printf x; done"
    );
    storm(
        Backend::IptablesNft,
        &editable_flags(Backend::IptablesNft),
        &script,
        "iptables-nft (pid",
    );
}

#[test]
fn an_nft_loop_deleting_our_unowned_table_gets_no_repair_storm() {
    if !common::can_run() {
        return;
    }
    let script = "while :; do nft delete table inet apiserver_guard 2>/dev/null; printf x; done";
    storm(
        Backend::Nftables,
        &editable_flags(Backend::Nftables),
        script,
        "nft (pid",
    );
}
