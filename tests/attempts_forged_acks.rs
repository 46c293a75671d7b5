//! Bare ACKs a pod sends to answer SYNs forged "from the apiserver" (a third
//! break-it round's finds of issue 13, in audit mode). Several senders
//! forging SYN pairs to a pod's listening port sometimes beat the
//! apiserver's reset of its half-open socket, which then answers each
//! further SYN with a bare ACK, sent from its listening port to the
//! apiserver's: a million in 12 s. Those ACKs (1) were counted as the pod's
//! audited attempt (a row it never made) and (2) kept its per-source log
//! allowance spent, so a connection it opened before audit began went
//! unreported while they lasted.
//!
//! Here the race is made certain: the apiserver's namespace drops what the
//! pod's listening port sends (no reset ever comes) and the pod answers
//! every out-of-window SYN at once (`net.ipv4.tcp_invalid_ratelimit` 0), so
//! one sender draws the flood. Fixed by a bare ACK of a flow never seen
//! opening no count (`core::connections`) and by TCP's packets other than
//! connects being metered per flow on the pod's side (`iif . ip saddr .
//! tcp sport @flows_v4`: `nft_desired::flow_rules`).

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::daemon_cases::*;
use common::meter_fill::{fill, source_key};
use common::spoof::{send_out_of_window_data_from, send_syn_flood_from};
use common::victim_acks::{answer_every_forged_syn, count_acks, counted_acks};
use common::*;

const SHOW_DEADLINE: Duration = Duration::from_secs(5);
/// The port the victim pod listens on, where the forged SYNs go.
const LISTENING_PORT: u16 = 8080;
/// How long the forged flood lasts.
const FLOOD: Duration = Duration::from_secs(4);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn bare_acks_answering_forged_syns_neither_count_nor_hide_a_connection_opened_before_audit() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let victim = topo.add_other_pod();
    allow_forged_sources(node);
    // The victim's bare ACKs from its listening port, counted where it sends them.
    let _listening = answer_every_forged_syn(&topo, &victim, LISTENING_PORT);
    // A connection the victim opened before audit began (a watch).
    let mut held = HeldConnection::open(&victim, API_V4, API_PORT).expect("the victim's connection");
    let held_port = held.stream().local_addr().unwrap().port();

    let daemon = audit_daemon_v4(node, &[]);
    let before = guard_counter(node, "audit-tcp-port-v4");

    let until = Instant::now() + FLOOD;
    let forged = std::thread::scope(|s| {
        let flood =
            s.spawn(|| send_syn_flood_from(&topo.pod, ip(API_V4), API_PORT, ip(OTHER_POD_V4), LISTENING_PORT, until));
        // Mid-flood, the held connection is used: its data is its own.
        std::thread::sleep(Duration::from_secs(1));
        let mut last_own = SystemTime::now();
        while Instant::now() + Duration::from_millis(800) < until {
            held.roundtrip(b"still watching", Duration::from_secs(2))
                .expect("audit blocks nothing");
            last_own = SystemTime::now();
            std::thread::sleep(Duration::from_millis(100));
        }
        (flood.join().unwrap().expect("the forged flood"), last_own)
    });
    let (forged, last_own) = forged;
    let last_own_ms = last_own.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let answered = guard_counter(node, "audit-tcp-port-v4") - before;
    let acks = counted_acks(&victim);
    eprintln!("forged SYNs: {forged}; the victim's bare ACKs: {acks}; its packets that reached the block: {answered}");
    assert!(
        acks >= 10_000 && answered >= acks,
        "the victim's bare ACKs did not come, or not to the block: {acks} sent, {answered} reached it, for {forged} forged SYNs"
    );

    // The held connection is reported, once, and nothing else of the victim is.
    let row = wait_attempt_row(
        node,
        &daemon,
        &format!("{OTHER_POD_V4}:{held_port}, the connection opened before audit began"),
        SHOW_DEADLINE,
        |r| r["source"] == OTHER_POD_V4 && r["source_port"] == held_port,
    );
    assert_eq!(row["action"], "audited", "{row}");
    std::thread::sleep(Duration::from_millis(500));
    let rows = attempt_rows_from(node, OTHER_POD_V4);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["count"].as_u64(), rows[0]["source_port"].as_u64()),
        (Some(1), Some(u64::from(held_port))),
        "the victim's answers from its listening port were counted as its attempts: {rows:?}\nlog:\n{}",
        daemon.log()
    );
    // The answers went on for over half a second after the held
    // connection's last packet, at the flow's allowance (10/s): they did not
    // move its row's last seen (a review's find).
    let last_seen = rows[0]["last_seen_unix_ms"].as_u64().expect("last seen");
    assert!(
        last_seen <= last_own_ms + 300,
        "the answers moved the row's last seen: {last_seen} > {last_own_ms} + 300 ms: {rows:?}"
    );
    // They were logged (by the flow rules, at the flow's allowance) and
    // turned down by the reader as bare ACKs of a flow never seen.
    wait_metrics(
        node,
        "the victim's answers ignored as bare ACKs",
        |s| {
            sample(
                s,
                "apiserver_guard_attempt_log_ignored_total",
                &[("reason", "bare_ack")],
            ) >= Some(20.0)
        },
        SHOW_DEADLINE,
    );
}

/// A fifth break-it round's find: data forged "from the apiserver" onto a
/// connection a pod opened before audit began, out of its window, draws a
/// bare ACK on that connection's own flow for each segment (Linux does not
/// rate-limit those), which kept the flow's allowance spent: the pod's own
/// data went unlogged and the connection unreported while the forgery
/// lasted. Fixed by the push rules (`nft_desired::push_rules`): segments
/// carrying PSH, FIN or URG, which nothing forged can draw from a pod, have
/// an allowance of their own.
#[test]
fn forged_data_drawing_acks_on_a_held_connection_does_not_hide_it() {
    forged_data_on_a_held_connection(false);
}

/// The same with `pushes_v4` full (pods making plain connects in audit mode
/// fill it): a push the meter cannot take is logged within its interface's
/// allowance for connects and pushes by the push meter-full rule (break-it
/// round 6; before it, the push fell to the flow rules, where the ACKs the
/// forged data drew kept the connection's allowance spent: a known limit).
#[test]
fn forged_data_drawing_acks_on_a_held_connection_with_the_push_meter_full_does_not_hide_it() {
    forged_data_on_a_held_connection(true);
}

fn forged_data_on_a_held_connection(push_meter_full: bool) {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let victim = topo.add_other_pod();
    allow_forged_sources(node);
    // The victim's bare ACKs to the apiserver's port, counted where it sends them.
    count_acks(&victim, &format!("tcp dport {API_PORT}"));
    let mut held = HeldConnection::open(&victim, API_V4, API_PORT).expect("the victim's connection");
    let held_port = held.stream().local_addr().unwrap().port();
    // Filling the meter with nft needs the table not owned.
    let extra: &[&str] = if push_meter_full {
        &["--table-ownership", "off"]
    } else {
        &[]
    };
    let daemon = audit_daemon_v4(node, extra);
    if push_meter_full {
        fill(node, "pushes_v4", |i| format!("{} . 40000", source_key(i)));
    }

    let until = Instant::now() + FLOOD;
    let forged = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            send_out_of_window_data_from(&topo.pod, ip(API_V4), API_PORT, ip(OTHER_POD_V4), held_port, until)
        });
        std::thread::sleep(Duration::from_secs(1));
        while Instant::now() + Duration::from_millis(800) < until {
            held.roundtrip(b"still watching", Duration::from_secs(2))
                .expect("audit blocks nothing");
            std::thread::sleep(Duration::from_millis(200));
        }
        flood.join().unwrap().expect("the forged data")
    });
    let acks = counted_acks(&victim);
    eprintln!("forged data segments: {forged}; the victim's bare ACKs on its connection: {acks}");
    assert!(
        acks >= 1_000,
        "the forged data drew too few ACKs: {acks} for {forged} segments"
    );
    assert_held_connection_reported_once(node, &daemon, OTHER_POD_V4, held_port, SHOW_DEADLINE);
}
