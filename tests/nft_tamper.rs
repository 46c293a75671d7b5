//! Tamper matrix of the nftables backend on a real kernel: after `apply`,
//! another process edits our table with `nft` (negated match, changed
//! left-hand side, changed verdict, extra rule with our comment, rule moved,
//! chain priority, chain policy, set flags, set key, elements added and
//! removed, the log rule's group and limit, the log rule deleted, the
//! meter's timeout, a foreign rule in our chain, and in the chain our
//! logged block jumps to: its verdict changed or deleted, the jump sent
//! elsewhere, the answer rule for resets deleted or letting resets
//! through, the connect log rule deleted). Each must make `status` exit 3
//! with a plain-language line naming the change (no Rust debug text), then
//! `apply` repairs it (status exit 0) and the pod is refused again (curl).
//! The daemon repairs each one on the change event, and its log names it.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

const T: &str = "inet apiserver_guard";
const OURS: &str = "block-tcp-port-v4";

/// Dual stack, so chain guard holds more than one rule (a move is visible).
fn policy() -> GuardPolicy {
    GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    )
}

/// The handles of our v4 block: its rule in chain guard (the match that
/// jumps), and in its own chain `block-tcp-port-v4` the two log rules
/// (known sources, new sources) and the verdict.
struct Handles {
    ours: u32,
    log: u32,
    log_new: u32,
    verdict: u32,
    /// The answer rule for resets (`core::nft_answers`).
    answer_rst: u32,
    /// The log rule of connects from known sources (`nft_desired::connect_rules`).
    connect: u32,
    /// The log rule of TCP fragments from new sources (`nft_desired::fragment_rules`).
    fragment_new: u32,
    /// The log rules of flowless packets (`nft_desired::flowless_rules`).
    flowless: u32,
    flowless_new: u32,
    flowless_full: u32,
    /// The log rule of pushes from new sources (`nft_desired::push_rules`).
    push_new: u32,
    push_full: u32,
    /// The log rule of connects a full meter could not take (`nft_desired::METER_FULL_SUFFIX`).
    connect_full: u32,
}

/// One tamper: its name, the nft commands (given our handles), what the
/// status line must say, and whether the pod gets through while it lasts
/// (checked with curl before the repair).
struct Tamper {
    name: &'static str,
    nft: fn(&Handles) -> String,
    says: &'static str,
    opens: bool,
}

/// Our rule in guard with this match and verdict.
fn ours_with(matches: &str, verdict: &str) -> String {
    format!("{matches} counter {verdict} comment \"{OURS}\"")
}

/// Our rule in guard with this match: counts and jumps to the chain that logs and rejects.
fn ours_matching(matches: &str) -> String {
    ours_with(matches, &format!("jump {OURS}"))
}

const PORT_MATCH: &str = "ip daddr . tcp dport @api_port_v4";
/// The answer rule for resets at the head of our block's chain.
const ANSWER_RST: &str = "block-tcp-port-v4-answer-rst";
/// The flow log rule in our block's chain for flows the meter knows (default log group).
const LOG: &str = "log-block-tcp-port-v4-flow";
/// The flow log rule for new flows.
const LOG_NEW: &str = "log-block-tcp-port-v4-flow-new-source";

/// Our log rule, with this log group.
fn log_rule(group: u16) -> String {
    format!(
        "tcp flags != syn / syn,ack iif . ip saddr . tcp sport @flows_v4 update @iif_known {{ iif limit rate 1000/second burst 2000 packets }} \
         counter log prefix \"apiserver-guard:{OURS}\" group {group} snaplen 96 comment \"{LOG}\""
    )
}

/// The log rule for new sources (default log group).
fn log_new_rule() -> String {
    format!(
        "tcp flags != syn / syn,ack iif . ip saddr . tcp sport != @flows_v4 update @iif_new {{ iif limit rate 200/second burst 400 packets }} \
         update @flows_v4 {{ iif . ip saddr . tcp sport limit rate 10/second burst 20 packets }} \
         counter log prefix \"apiserver-guard:{OURS}\" group 1443 snaplen 96 comment \"{LOG_NEW}\""
    )
}

/// Which of a meter's log rules: known sources, new ones, or new ones a
/// full meter could not take.
#[derive(Clone, Copy)]
enum Source {
    Known,
    New,
    MeterFull,
}

/// A flowless log rule (default log group).
fn flowless_rule(source: Source) -> String {
    let new = "iif . ip saddr != @attempts_v4 update @iif_new { iif limit rate 200/second burst 400 packets }";
    let (meter, suffix) = match source {
        Source::Known => (
            "iif . ip saddr @attempts_v4 update @iif_known { iif limit rate 1000/second burst 2000 packets }"
                .to_string(),
            "",
        ),
        Source::New => (
            format!("{new} update @attempts_v4 {{ iif . ip saddr limit rate 10/second burst 20 packets }}"),
            "-new-source",
        ),
        Source::MeterFull => (new.to_string(), "-meter-full"),
    };
    format!(
        "tcp flags != syn / syn,ack iif . ip saddr . tcp sport != @flows_v4 {meter} \
         counter log prefix \"apiserver-guard:{OURS}\" group 1443 snaplen 96 comment \"log-{OURS}-flowless{suffix}\""
    )
}

fn tampers() -> Vec<Tamper> {
    vec![
        Tamper {
            name: "negated match",
            nft: |h| {
                format!(
                    "replace rule {T} guard handle {} {}",
                    h.ours,
                    ours_matching(&format!("ip saddr != @sources_v4 {PORT_MATCH}"))
                )
            },
            says: "match on ip saddr is negated (!=) instead of =",
            opens: true,
        },
        Tamper {
            name: "changed left-hand side",
            nft: |h| {
                format!(
                    "replace rule {T} guard handle {} {}",
                    h.ours,
                    ours_matching(&format!("ip daddr @sources_v4 {PORT_MATCH}"))
                )
            },
            says: "match on ip daddr instead of ip saddr",
            opens: true,
        },
        Tamper {
            name: "changed verdict",
            nft: |h| {
                format!(
                    "replace rule {T} guard handle {} {}",
                    h.ours,
                    ours_with(&format!("ip saddr @sources_v4 {PORT_MATCH}"), "accept")
                )
            },
            says: "\"accept\" instead of \"jump block-tcp-port-v4\"",
            opens: true,
        },
        Tamper {
            name: "verdict in the block's own chain changed",
            nft: |h| {
                format!(
                    "replace rule {T} {OURS} handle {} meta l4proto tcp accept comment \"{OURS}\"",
                    h.verdict
                )
            },
            says: "\"accept\" instead of \"reject with tcp reset\"",
            // A connect within the pod's allowance for connects is still
            // refused by the connect log rules; past it, it gets through:
            // which one a curl meets depends on the test's earlier connects.
            opens: false,
        },
        Tamper {
            name: "verdict deleted from the block's own chain",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.verdict),
            says: "rule 17 of chain block-tcp-port-v4 (block-tcp-port-v4): missing",
            // As above: the connect log rules refuse a connect within its limit.
            opens: false,
        },
        Tamper {
            name: "jump sent to another chain",
            nft: |h| {
                format!(
                    "add chain {T} elsewhere; replace rule {T} guard handle {} {}",
                    h.ours,
                    ours_with(&format!("ip saddr @sources_v4 {PORT_MATCH}"), "jump elsewhere")
                )
            },
            says: "\"jump elsewhere\" instead of \"jump block-tcp-port-v4\"",
            opens: true,
        },
        Tamper {
            name: "extra rule with our comment",
            nft: |_| {
                format!(
                    "add rule {T} guard {}",
                    ours_with(&format!("ip saddr @sources_v4 {PORT_MATCH}"), "accept")
                )
            },
            says: "an extra rule with our comment \"block-tcp-port-v4\"",
            opens: false,
        },
        Tamper {
            name: "rule moved",
            nft: |h| {
                format!(
                    "delete rule {T} guard handle {}; add rule {T} guard {}",
                    h.ours,
                    ours_matching(&format!("ip saddr @sources_v4 {PORT_MATCH}"))
                )
            },
            says: "moved to position",
            opens: false,
        },
        Tamper {
            name: "chain priority changed",
            nft: |_| {
                format!(
                    "delete chain {T} forward; add chain {T} forward {{ type filter hook forward priority 10; policy accept; }}; \
                     add rule {T} forward jump guard comment \"enter-guard\""
                )
            },
            says: "chain forward: priority 10 instead of 0",
            opens: false,
        },
        Tamper {
            name: "chain policy drop",
            nft: |_| format!("add chain {T} forward {{ type filter hook forward priority 0; policy drop; }}"),
            says: "chain forward: policy drop instead of accept",
            opens: false,
        },
        Tamper {
            name: "set flags changed",
            nft: |h| {
                format!(
                    "delete rule {T} guard handle {}; delete set {T} sources_v4; \
                     add set {T} sources_v4 {{ type ipv4_addr; }}; add element {T} sources_v4 {{ {POD_V4} }}; \
                     add rule {T} guard {}",
                    h.ours,
                    ours_matching(&format!("ip saddr @sources_v4 {PORT_MATCH}"))
                )
            },
            says: "set sources_v4: flags: interval missing",
            opens: false,
        },
        Tamper {
            name: "set key changed",
            nft: |h| {
                format!(
                    "delete rule {T} guard handle {}; delete set {T} api_port_v4; \
                     add set {T} api_port_v4 {{ type ipv4_addr . inet_service . inet_service; }}; \
                     add rule {T} guard {}",
                    h.ours,
                    ours_matching("ip saddr @sources_v4 ip daddr . tcp dport . tcp sport @api_port_v4")
                )
            },
            says:
                "set api_port_v4: key type ipv4_addr . inet_service . inet_service instead of ipv4_addr . inet_service",
            opens: true,
        },
        Tamper {
            name: "elements added",
            nft: |_| format!("add element {T} sources_v4 {{ 10.9.0.0/16 }}"),
            says: "set sources_v4: elements 10.9.0.0/16 added",
            opens: false,
        },
        Tamper {
            name: "elements removed",
            nft: |_| format!("delete element {T} api_port_v4 {{ {API_V4} . {API_PORT} }}"),
            says: "set api_port_v4: elements 192.168.50.10 . 5443 missing",
            opens: true,
        },
        Tamper {
            name: "log rule's group changed",
            nft: |h| format!("replace rule {T} {OURS} handle {} {}", h.log, log_rule(5)),
            says: "group 5 snaplen 96\" instead of",
            opens: false,
        },
        Tamper {
            name: "log rule's per-source limit raised",
            nft: |h| {
                format!(
                    "replace rule {T} {OURS} handle {} {}",
                    h.log_new,
                    log_new_rule().replace("rate 10/second", "rate 10000/second")
                )
            },
            says: "limit rate 10000/second",
            opens: false,
        },
        Tamper {
            name: "log rule's per-interface limit raised",
            nft: |h| {
                format!(
                    "replace rule {T} {OURS} handle {} {}",
                    h.log,
                    log_rule(1443).replace("rate 1000/second", "rate 100000/second")
                )
            },
            says: "limit rate 100000/second",
            opens: false,
        },
        Tamper {
            name: "log rule for new sources without its per-interface limit",
            nft: |h| {
                format!(
                    "replace rule {T} {OURS} handle {} {}",
                    h.log_new,
                    log_new_rule().replace("update @iif_new { iif limit rate 200/second burst 400 packets } ", "")
                )
            },
            says: "(log-block-tcp-port-v4-flow-new-source)",
            opens: false,
        },
        Tamper {
            // The same set, keyed on the apiserver's port: every connection of
            // a pod shares one allowance again (round 3's find).
            name: "flow log rule keyed on the destination port",
            nft: |h| {
                format!(
                    "replace rule {T} {OURS} handle {} {}",
                    h.log_new,
                    log_new_rule().replace("tcp sport", "tcp dport")
                )
            },
            says: "(log-block-tcp-port-v4-flow-new-source): match on iif . ip saddr . tcp dport instead of iif . ip saddr . tcp sport",
            opens: false,
        },
        Tamper {
            name: "log rule deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.log),
            says: "(log-block-tcp-port-v4-flow): missing",
            opens: false,
        },
        Tamper {
            // A review's find: TCP fragments cut before the flags went unlogged.
            name: "fragment log rule deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.fragment_new),
            says: "(log-block-tcp-port-v4-fragment-new-source): missing",
            opens: false,
        },
        Tamper {
            // A review's find: a full flow meter hid connections opened before audit.
            name: "flowless log rule deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.flowless_new),
            says: "(log-block-tcp-port-v4-flowless-new-source): missing",
            opens: false,
        },
        Tamper {
            // Break-it round 4: with connects_v4 full, a new source's connect went unlogged.
            name: "meter-full log rule of connects deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.connect_full),
            says: "(log-block-tcp-port-v4-connect-meter-full): missing",
            opens: false,
        },
        Tamper {
            // Break-it round 5: forged data drew ACKs that spent a held connection's flow.
            name: "push log rule deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.push_new),
            says: "(log-block-tcp-port-v4-push-new-source): missing",
            opens: false,
        },
        Tamper {
            // Break-it round 6: with pushes_v4 full, a push fell to the flowless rules and the
            // ACKs forged SYNs drew from the pod's listening port kept its source's allowance spent.
            name: "meter-full log rule of pushes deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.push_full),
            says: "(log-block-tcp-port-v4-push-meter-full): missing",
            opens: false,
        },
        Tamper {
            name: "log rule for new sources deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.log_new),
            says: "(log-block-tcp-port-v4-flow-new-source): missing",
            opens: false,
        },
        Tamper {
            name: "meter timeout changed",
            nft: |h| {
                // Both log rules of each family use their meter: the v6 chain is left alone.
                // The flowless rules look it up too: out and back in as well.
                let deleted = [h.log, h.log_new, h.flowless, h.flowless_new, h.flowless_full]
                    .map(|handle| format!("delete rule {T} {OURS} handle {handle}; "))
                    .concat();
                let inserted = [
                    flowless_rule(Source::MeterFull),
                    flowless_rule(Source::New),
                    flowless_rule(Source::Known),
                    log_new_rule(),
                    log_rule(1443),
                ]
                .map(|rule| format!("; insert rule {T} {OURS} {rule}"))
                .concat();
                format!(
                    "{deleted}delete set {T} flows_v4; \
                     add set {T} flows_v4 {{ type iface_index . ipv4_addr . inet_service; size 65535; flags dynamic,timeout; timeout 1h; }}\
                     {inserted}"
                )
            },
            says: "set flows_v4: timeout 1h instead of 1m",
            opens: false,
        },
        Tamper {
            name: "connect log rule deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.connect),
            says: "(log-block-tcp-port-v4-connect): missing",
            opens: false,
        },
        Tamper {
            name: "answer rule deleted",
            nft: |h| format!("delete rule {T} {OURS} handle {}", h.answer_rst),
            says: "(block-tcp-port-v4-answer-rst): missing",
            opens: false,
        },
        Tamper {
            name: "answer rule lets resets through",
            nft: |h| {
                format!(
                    "replace rule {T} {OURS} handle {} tcp flags rst accept comment \"{ANSWER_RST}\"",
                    h.answer_rst
                )
            },
            says: "\"accept\" instead of \"reject with tcp reset\"",
            opens: false,
        },
        Tamper {
            name: "foreign rule in our chain",
            nft: |_| format!("insert rule {T} guard ip saddr {POD_V4} accept"),
            says: "a foreign rule: ip saddr 10.0.1.2 accept",
            opens: true,
        },
    ]
}

/// The handle of the rule with this comment in this chain of our table.
fn handle(node: &Netns, chain: &str, comment: &str) -> u32 {
    let listing = node.run_ok(&["nft", "-a", "list", "chain", "inet", "apiserver_guard", chain]);
    listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .and_then(|l| l.rsplit("# handle ").next())
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rule {comment} in\n{listing}"))
}

fn tamper(node: &Netns, t: &Tamper) {
    let h = Handles {
        ours: handle(node, "guard", OURS),
        log: handle(node, OURS, LOG),
        log_new: handle(node, OURS, LOG_NEW),
        verdict: handle(node, OURS, OURS),
        answer_rst: handle(node, OURS, ANSWER_RST),
        connect: handle(node, OURS, "log-block-tcp-port-v4-connect"),
        fragment_new: handle(node, OURS, "log-block-tcp-port-v4-fragment-new-source"),
        flowless: handle(node, OURS, "log-block-tcp-port-v4-flowless"),
        flowless_new: handle(node, OURS, "log-block-tcp-port-v4-flowless-new-source"),
        connect_full: handle(node, OURS, "log-block-tcp-port-v4-connect-meter-full"),
        flowless_full: handle(node, OURS, "log-block-tcp-port-v4-flowless-meter-full"),
        push_new: handle(node, OURS, "log-block-tcp-port-v4-push-new-source"),
        push_full: handle(node, OURS, "log-block-tcp-port-v4-push-meter-full"),
    };
    let script = (t.nft)(&h);
    node.run_ok(&["nft", &script]);
}

/// The drift lines of `status` (text output).
fn drift_lines(r: &GuardRun) -> Vec<String> {
    r.stdout
        .lines()
        .filter(|l| l.starts_with("  - "))
        .map(str::to_owned)
        .collect()
}

/// `l` without nft's braces after a set: `update @meter { ... packets }`
/// becomes `update @meter ... packets`.
fn without_set_braces(l: &str) -> String {
    let mut out = String::new();
    for (i, part) in l.split(" @").enumerate() {
        if i > 0 {
            out.push_str(" @");
        }
        match part.split_once(" { ") {
            Some((set, rest)) if !set.contains(' ') => {
                out.push_str(set);
                out.push(' ');
                out.push_str(rest);
            }
            _ => out.push_str(part),
        }
    }
    out.replace(" packets }", " packets")
}

#[track_caller]
fn assert_plain(lines: &[String], what: &str) {
    for l in lines {
        // nft's own braces: `update @attempts_v4 { ip saddr limit ... }`.
        let l = &without_set_braces(l);
        for debug in ["{", "Some(", "RuleSig", "Expr", "::"] {
            assert!(!l.contains(debug), "{what}: debug text {debug:?} in {l:?}");
        }
    }
}

#[test]
fn every_tamper_is_named_by_status_and_repaired_by_apply() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    p.apply_ok(node);
    p.assert_in_sync(node, "after apply");
    for t in tampers() {
        tamper(node, &t);
        if t.opens {
            assert_served(
                &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
                &format!("{}: the tamper really opens the block", t.name),
            );
        }
        let r = run_guard(node, &p.args("status"));
        r.expect_code(3, t.name);
        let lines = drift_lines(&r);
        assert!(
            lines.iter().any(|l| l.contains(t.says)),
            "{}: status should say {:?}; it said:\n{}",
            t.name,
            t.says,
            r.stdout
        );
        assert_plain(&lines, t.name);
        eprintln!("{}: {}", t.name, lines.join(" | "));
        p.apply_ok(node);
        p.assert_in_sync(node, &format!("{}: after apply", t.name));
        assert_refused_fast(
            &topo.pod,
            None,
            API_V4,
            API_PORT,
            &format!("{}: pod after apply", t.name),
        );
        assert_refused(
            &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
            &format!("{}: pod v6 after apply", t.name),
        );
        assert_served(
            &curl(node, API_V4, API_PORT, MAX_TIME),
            &format!("{}: node after apply", t.name),
        );
    }
}

#[test]
fn the_daemon_repairs_every_tamper_on_the_event_and_names_it() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    let daemon = Daemon::spawn(node, &daemon_args(&p, &editable_flags(Backend::Nftables)));
    daemon.wait_ready();
    let mut repairs = daemon.log().matches(REPAIR_LINE).count();
    for t in tampers() {
        // Each tamper once the last repair has settled: back to back they
        // outrun the repair budget, and in the repair conflict that starts
        // then, a repair names only the first 16 kinds of drift it sees
        // (one line a minute stands for the rest), so a later tamper's
        // repair line can be left out (run 9 of a series: the 22nd tamper).
        wait_metrics(
            node,
            &format!("ready (no repair conflict) before {}", t.name),
            |s| sample(s, "apiserver_guard_ready", &[]) == Some(1.0),
            READY_TIMEOUT,
        );
        let mark = daemon.log().len();
        let started = Instant::now();
        tamper(node, &t);
        // The default resync is far longer than this deadline: the event wakes it.
        daemon.wait_log(REPAIR_LINE, repairs + 1, REPAIR_DEADLINE);
        repairs = daemon.log().matches(REPAIR_LINE).count();
        loop {
            let r = run_guard(node, &p.args("status"));
            if r.code == 0 {
                break;
            }
            assert!(
                started.elapsed() < REPAIR_DEADLINE,
                "{}: status still exit {} after {REPAIR_DEADLINE:?}:\n{}\nlog:\n{}",
                t.name,
                r.code,
                r.stdout,
                daemon.log_since(mark)
            );
            thread::sleep(Duration::from_millis(50));
        }
        let log = daemon.log_since(mark);
        assert!(
            log.contains(t.says),
            "{}: the repair line should name {:?}; log:\n{log}",
            t.name,
            t.says
        );
        eprintln!("{}: repaired, in sync {:?} after the tamper", t.name, started.elapsed());
        assert_refused_fast(
            &topo.pod,
            None,
            API_V4,
            API_PORT,
            &format!("{}: pod after the repair", t.name),
        );
    }
    assert!(daemon.exited().is_none(), "daemon died:\n{}", daemon.log());
}

#[test]
fn sources_the_meter_learns_are_not_drift_and_the_daemon_never_repairs_them() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    let daemon = Daemon::spawn(node, &daemon_args(&p, &editable_flags(Backend::Nftables)));
    daemon.wait_ready();
    let repairs = daemon.log().matches(REPAIR_LINE).count();
    // Pod traffic: the kernel adds the pod's addresses to the meters.
    for _ in 0..3 {
        assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "pod v4 (logged)");
        assert_refused(&curl(&topo.pod, API_V6, API_PORT, MAX_TIME), "pod v6 (logged)");
    }
    // And a source added by hand, as the kernel would.
    node.run_ok(&[
        "nft",
        &format!("add element {T} flows_v4 {{ \"lo\" . 10.0.77.7 . 40000 }}"),
    ]);
    let meter = node.run_ok(&["nft", "list", "set", "inet", "apiserver_guard", "flows_v4"]);
    assert!(
        meter.contains("10.0.77.7"),
        "the meter holds the source added:\n{meter}"
    );
    // The pod's connects are metered in the meters of connects.
    let connects = node.run_ok(&["nft", "list", "set", "inet", "apiserver_guard", "connects_v4"]);
    assert!(connects.contains(POD_V4), "the meter learned the pod:\n{connects}");
    let meter6 = node.run_ok(&["nft", "list", "set", "inet", "apiserver_guard", "connects_v6"]);
    assert!(meter6.contains(POD_V6), "the v6 meter learned the pod:\n{meter6}");
    let r = run_guard(node, &p.args("status"));
    r.expect_code(0, "status with learned sources in the meters");
    // Give a wrongly woken repair time to happen.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        daemon.log().matches(REPAIR_LINE).count(),
        repairs,
        "the daemon repaired learned elements:\n{}",
        daemon.log()
    );
    assert!(daemon.exited().is_none(), "daemon died:\n{}", daemon.log());
}
