//! The NFLOG reader: binds our log group on a NETLINK_NETFILTER socket of its
//! own (nfnetlink_log; no ulogd), reads each logged packet, keeps the ones
//! whose prefix is ours, and reports them: a log line per new (source,
//! apiserver, port, protocol, pod, interface), a summary of repeats at most once a
//! minute, the table and counters in `Metrics`. With Kubernetes discovery
//! each attempt is given its pod when it is recorded (`Attribution`: the
//! directory of this node's pods) and noted for an Event on that pod. A thin shell around the pure
//! `core::nflog_wire`, `core::attempt_packet` and `core::attempts`.
//!
//! The block never depends on this path: a group another process holds, a
//! kernel that refuses, a burst that overflows the socket (ENOBUFS) are
//! logged and counted, and the reader retries with backoff.

use super::interface_names::InterfaceNames;
use super::metrics::Metrics;
use super::netlink::subscribe;
use super::pod_events::EventsHandle;
use crate::core::attempt_log::{parse_prefix, with_rule_protocol};
use crate::core::attempt_packet::{parse_headers, Protocol};
use crate::core::attempts::{Attempt, Interface, Recorded, Repeat};
use crate::core::nflog_wire::{bind_request, parse_datagram, Event};
use crate::discovery::attribution::SharedDirectory;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::unix::AsyncFd;

const NETLINK_NETFILTER: libc::c_int = 12;
/// How long the kernel may take to answer the bind request.
const BIND_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait before binding again.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// At most one summary of repeats this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// New-key log lines allowed per second in all; beyond, counted and summarised.
const LINES_PER_SECOND: u32 = 50;
/// Of those, the lines of attempts that came in on one interface (one pod's
/// veth; local processes, without one, count as one): a pod making new keys
/// as fast as it can leaves the rest to others.
const LINES_PER_INTERFACE: u32 = 20;
/// Rows named in a summary line.
const SUMMARY_ROWS: usize = 5;

fn lock(state: &Mutex<Metrics>) -> std::sync::MutexGuard<'_, Metrics> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `10.0.1.2:5443`, `[fd00::1]:5443`, or the address alone.
fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
    match (ip, port) {
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (ip, Some(p)) => format!("{ip}:{p}"),
        (ip, None) => ip.to_string(),
    }
}

/// Where attempts get their pod, with Kubernetes discovery.
#[derive(Clone)]
pub struct Attribution {
    /// Source address -> pod, fed by the pods watch.
    pub pods: SharedDirectory,
    /// Where attributed attempts are noted for Events (None: no Events).
    pub events: Option<EventsHandle>,
}

/// Reads `group` for as long as the task lives; names pods with `attribution`.
pub async fn run(group: u16, state: Arc<Mutex<Metrics>>, attribution: Option<Attribution>) {
    lock(&state).attempts.group = Some(group);
    let mut backoff = BACKOFF.0;
    let mut last_problem: Option<String> = None;
    loop {
        let problem = match bind(group).await {
            Ok(fd) => {
                {
                    let mut m = lock(&state);
                    m.attempts.bound = true;
                    m.attempts.problem = None;
                }
                log::info!(group = group; "reading blocked attempts from NFLOG group {group}");
                backoff = BACKOFF.0;
                last_problem = None;
                let why = read(fd, &state, attribution.as_ref()).await;
                lock(&state).attempts.bound = false;
                why
            }
            Err(why) => why,
        };
        {
            let mut m = lock(&state);
            m.attempts.bind_failures += 1;
            m.attempts.problem = Some(problem.clone());
        }
        if last_problem.as_deref() != Some(problem.as_str()) {
            log::warn!(group = group; "{problem}; attempts go unreported meanwhile (the block is enforced regardless); retrying");
            last_problem = Some(problem);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// A socket with `group` bound to it, or why not.
async fn bind(group: u16) -> Result<AsyncFd<OwnedFd>, String> {
    let fd = subscribe(NETLINK_NETFILTER, &[])
        .map_err(|e| format!("cannot open a netlink socket for NFLOG group {group}: {e}"))?;
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged until dropped,
    // and the AsyncFd owns it.
    let fd =
        unsafe { AsyncFd::register(fd) }.map_err(|e| format!("cannot watch the NFLOG socket: {}", e.into_parts().1))?;
    let req = bind_request(group, 1);
    // SAFETY: `req` is a live buffer of `req.len()` bytes.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr() as *const libc::c_void, req.len(), 0) };
    if sent < 0 {
        return Err(format!(
            "cannot ask for NFLOG group {group}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut buf = vec![0u8; 8192];
    let answer = tokio::time::timeout(BIND_TIMEOUT, async {
        loop {
            let mut guard = fd.readable().await.map_err(|e| e.to_string())?;
            match guard.try_io(|inner| recv(inner.get_ref(), &mut buf)) {
                Ok(Ok(n)) => {
                    for e in parse_datagram(&buf[..n]) {
                        if let Event::Ack { seq: 1, errno } = e {
                            return Ok(errno);
                        }
                    }
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_would_block) => continue,
            }
        }
    })
    .await;
    match answer {
        Err(_) => Err(format!(
            "the kernel did not answer the bind of NFLOG group {group} within {BIND_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("cannot bind NFLOG group {group}: {e}")),
        Ok(Ok(0)) => Ok(fd),
        Ok(Ok(errno)) if errno == libc::EPERM || errno == libc::EBUSY => Err(format!(
            "NFLOG group {group} is already bound by another process (ulogd, another agent?) or we lack CAP_NET_ADMIN"
        )),
        Ok(Ok(errno)) => Err(format!(
            "cannot bind NFLOG group {group}: {} (is nfnetlink_log available?)",
            std::io::Error::from_raw_os_error(errno)
        )),
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads until the socket fails; returns why.
async fn read(fd: AsyncFd<OwnedFd>, state: &Arc<Mutex<Metrics>>, attribution: Option<&Attribution>) -> String {
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = LineBudget::new();
    let mut names = InterfaceNames::default();
    let mut summary = tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_EVERY, SUMMARY_EVERY);
    // A stalled loop must not make up missed ticks: one summary a minute at most.
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut guard = tokio::select! {
            r = fd.readable() => match r {
                Ok(g) => g,
                Err(e) => return format!("the NFLOG socket failed: {e}"),
            },
            _ = summary.tick() => {
                summarise(state);
                continue;
            }
        };
        loop {
            match recv(fd.get_ref(), &mut buf) {
                Ok(n) => handle(&buf[..n], state, &mut lines, &mut names, attribution),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Some(libc::ENOBUFS) => lock(state).attempts.overflows += 1,
                    Some(libc::EINTR) => {}
                    _ => return format!("the NFLOG socket failed: {e}"),
                },
            }
        }
    }
}

/// Counts and records the packets of one datagram, each with its pod when
/// one is known now; logs the new keys; notes attributed attempts for Events.
fn handle(
    datagram: &[u8],
    state: &Mutex<Metrics>,
    lines: &mut LineBudget,
    names: &mut InterfaceNames,
    attribution: Option<&Attribution>,
) {
    let at_ms = unix_ms();
    let mut new = Vec::new();
    let mut wake = false;
    {
        let mut m = lock(state);
        let log = &mut m.attempts;
        // Lock order: metrics, then the directory, then the book (nobody takes them the other way).
        let pods = attribution.map(|a| a.pods.lock().unwrap_or_else(|p| p.into_inner()));
        let events = attribution.and_then(|a| a.events.as_ref());
        let mut book = events.map(|e| e.book.lock().unwrap_or_else(|p| p.into_inner()));
        for event in parse_datagram(datagram) {
            let (prefix, payload, interface) = match event {
                Event::Packet {
                    prefix,
                    payload,
                    interface,
                } => (prefix, payload, interface),
                Event::Malformed => {
                    log.ignore("malformed");
                    continue;
                }
                Event::Ack { .. } | Event::Ignored => continue,
            };
            let Some((rule, action)) = prefix.as_deref().and_then(parse_prefix) else {
                log.ignore("foreign_prefix");
                continue;
            };
            let headers = match parse_headers(&payload) {
                Ok(h) => with_rule_protocol(h, rule),
                Err(e) => {
                    log.ignore(e.reason());
                    continue;
                }
            };
            if headers.answer {
                // A reset or SYN+ACK (ICMP error, echo reply) answering a
                // packet sent to the pod: not its attempt (`attempt_packet::ANSWER_RESET`).
                log.ignore("answer");
                continue;
            }
            if headers.later_fragment && headers.protocol != Protocol::Tcp {
                // Its first fragment carries the headers: that one is the
                // attempt (a pod's echo reply to a forged big ping leaves in
                // fragments). A TCP stack never fragments (it sizes segments
                // to the path): a later TCP fragment was crafted by the pod
                // that sent it, and is counted (a review's find: ignored, such
                // fragments could spend a pod's own allowance unseen).
                log.ignore("fragment");
                continue;
            }
            let attempt = Attempt {
                headers,
                action,
                rule: rule.to_string(),
                pod: pods.as_ref().and_then(|d| d.lookup(headers.source, at_ms).cloned()),
                interface: interface.map(|index| Interface {
                    index,
                    name: names.name(index),
                }),
                at_ms,
            };
            let recorded = log.record(&attempt);
            if recorded == Recorded::BareAck {
                // A bare ACK of a flow never seen: an answer to a forged
                // SYN, or an idle connection's keepalive (counted at its data).
                log.ignore("bare_ack");
                continue;
            }
            if recorded == Recorded::NotCounted {
                continue;
            }
            // The Event counts what the table counts: connections, not packets.
            if let (Some(book), Some(pod)) = (book.as_mut(), &attempt.pod) {
                let apiserver = endpoint(headers.destination, headers.destination_port);
                wake |= book.note(pod, action, &apiserver, at_ms);
            }
            if recorded == Recorded::New {
                if lines.take(interface) {
                    new.push(attempt);
                } else {
                    log.lines_suppressed += 1;
                }
            }
        }
    }
    if wake {
        if let Some(e) = attribution.and_then(|a| a.events.as_ref()) {
            e.wake.notify_one();
        }
    }
    for a in new {
        report_new(&a);
    }
}

/// The log line of a new (source, apiserver, port, protocol).
fn report_new(a: &Attempt) {
    let h = &a.headers;
    let (src, dst, proto) = (h.source.to_string(), h.destination.to_string(), h.protocol.name());
    let verb = match a.action {
        crate::core::attempt_log::AttemptAction::Blocked => "blocked",
        crate::core::attempt_log::AttemptAction::Audited => "audited (let through)",
    };
    let (from, to) = (
        endpoint(h.source, h.source_port),
        endpoint(h.destination, h.destination_port),
    );
    let via = a
        .interface
        .as_ref()
        .map_or(String::new(), |i| format!(" via {}", i.name));
    let iface = a.interface.as_ref().map_or("", |i| i.name.as_str());
    let (sport, dport) = (
        h.source_port.map(u32::from).unwrap_or(0),
        h.destination_port.map(u32::from).unwrap_or(0),
    );
    // The pod's fields become POD_NAMESPACE, POD_NAME, POD_UID and POD_NODE in the journal.
    match &a.pod {
        Some(p) => log::warn!(
            src = src.as_str(), sport = sport, dst = dst.as_str(), dport = dport,
            proto = proto.as_str(), action = a.action.as_str(), rule = a.rule.as_str(),
            pod_namespace = p.namespace.as_str(), pod_name = p.name.as_str(), pod_uid = p.uid.as_str(),
            pod_node = p.node.as_str(), iface = iface;
            "{verb} attempt: {from} (pod {}/{}) -> {to} {proto} (rule {}){via}", p.namespace, p.name, a.rule
        ),
        None => log::warn!(
            src = src.as_str(), sport = sport, dst = dst.as_str(), dport = dport,
            proto = proto.as_str(), action = a.action.as_str(), rule = a.rule.as_str(), iface = iface;
            "{verb} attempt: {from} -> {to} {proto} (rule {}){via}", a.rule
        ),
    }
}

/// One line about the keys repeated since the last summary (nothing when none).
fn summarise(state: &Mutex<Metrics>) {
    let (repeats, new_suppressed) = lock(state).attempts.take_summary();
    if let Some(text) = summary_text(&repeats, new_suppressed) {
        let total: u64 = repeats.iter().map(|r| r.repeats).sum();
        log::info!(repeats = total, keys = repeats.len(), unlogged_new = new_suppressed; "{text}");
    }
}

/// "attempts in the last minute: ..." naming the most repeated keys.
pub fn summary_text(repeats: &[Repeat], unlogged_new: u64) -> Option<String> {
    if repeats.is_empty() && unlogged_new == 0 {
        return None;
    }
    let total: u64 = repeats.iter().map(|r| r.repeats).sum();
    let mut text = format!(
        "attempts in the last minute: {total} repeat(s) of {} known source/apiserver pair(s)",
        repeats.len()
    );
    let shown: Vec<String> = repeats
        .iter()
        .take(SUMMARY_ROWS)
        .map(|r| {
            let pod = r
                .row
                .pod
                .as_ref()
                .map_or(String::new(), |p| format!(" (pod {}/{})", p.namespace, p.name));
            format!(
                "{}{pod} -> {} {} x{} ({})",
                r.row.source,
                endpoint(r.row.apiserver, r.row.port),
                r.row.protocol.name(),
                r.repeats,
                r.row.action
            )
        })
        .collect();
    if !shown.is_empty() {
        text.push_str(": ");
        text.push_str(&shown.join(", "));
        if repeats.len() > SUMMARY_ROWS {
            text.push_str(&format!(", and {} more", repeats.len() - SUMMARY_ROWS));
        }
    }
    if unlogged_new > 0 {
        text.push_str(&format!(
            "; {unlogged_new} new pair(s) not logged one by one (rate limit): see /attempts"
        ));
    }
    Some(text)
}

/// The budget of new-key log lines: `LINES_PER_SECOND` a second, of which
/// at most `LINES_PER_INTERFACE` for the attempts of one input interface
/// (attempts with none, from local processes, count as one).
struct LineBudget {
    tokens: u32,
    /// Lines taken this second per interface.
    taken: HashMap<Option<u32>, u32>,
    refilled: Instant,
}

impl LineBudget {
    fn new() -> LineBudget {
        LineBudget {
            tokens: LINES_PER_SECOND,
            taken: HashMap::new(),
            refilled: Instant::now(),
        }
    }

    fn take(&mut self, interface: Option<u32>) -> bool {
        if self.refilled.elapsed() >= Duration::from_secs(1) {
            self.tokens = LINES_PER_SECOND;
            self.taken.clear();
            self.refilled = Instant::now();
        }
        if self.tokens == 0 {
            return false;
        }
        let taken = self.taken.entry(interface).or_default();
        if *taken >= LINES_PER_INTERFACE {
            return false;
        }
        *taken += 1;
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::attempt_log::AttemptAction;
    use crate::core::attempt_packet::{Headers, Protocol};
    use crate::core::attempts::AttemptTable;

    fn repeats(n: usize) -> Vec<Repeat> {
        let mut t = AttemptTable::new(64);
        for i in 0..n {
            for k in 0..=(n - i) {
                t.record(&Attempt {
                    headers: Headers {
                        source: format!("10.0.0.{i}").parse().unwrap(),
                        destination: "fd00:50::10".parse().unwrap(),
                        protocol: Protocol::Tcp,
                        source_port: Some(1000 + k as u16),
                        destination_port: Some(5443),
                        tcp: None,
                        answer: false,
                        later_fragment: false,
                    },
                    action: AttemptAction::Blocked,
                    rule: "block-tcp-port-v6".into(),
                    pod: None,
                    interface: None,
                    at_ms: k as u64,
                });
            }
        }
        t.take_repeats()
    }

    #[test]
    fn summaries_name_the_top_repeats_and_what_was_not_logged() {
        assert_eq!(summary_text(&[], 0), None);
        let s = summary_text(&repeats(7), 3).unwrap();
        assert!(
            s.starts_with("attempts in the last minute: 28 repeat(s) of 7 known source/apiserver pair(s): 10.0.0.0 -> [fd00:50::10]:5443 tcp x7 (blocked), 10.0.0.1"),
            "{s}"
        );
        assert!(s.contains(", and 2 more; 3 new pair(s) not logged one by one"), "{s}");
        assert_eq!(
            summary_text(&[], 4).unwrap(),
            "attempts in the last minute: 0 repeat(s) of 0 known source/apiserver pair(s); 4 new pair(s) not logged one by one (rate limit): see /attempts"
        );
    }

    fn nlattr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    fn packet(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
        packet_on(prefix, payload, None)
    }

    /// A logged packet that came in on interface `indev`.
    fn packet_on(prefix: &[u8], payload: &[u8], indev: Option<u32>) -> Vec<u8> {
        let mut body = [nlattr(10, prefix), nlattr(9, payload)].concat();
        if let Some(i) = indev {
            body.extend(nlattr(4, &i.to_be_bytes()));
        }
        let mut v = ((20 + body.len()) as u32).to_ne_bytes().to_vec();
        v.extend_from_slice(&(4u16 << 8).to_ne_bytes());
        v.extend_from_slice(&[0u8; 10]);
        v.extend_from_slice(&[2, 0, 0x05, 0xa3]);
        v.extend_from_slice(&body);
        v
    }

    /// IPv4 + TCP headers of 10.0.1.2:43210 -> 192.168.50.10:5443.
    fn tcp_v4() -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 1, 2, 192, 168, 50, 10,
        ];
        ip.extend_from_slice(&[0xa8, 0xca, 0x15, 0x43]);
        ip
    }

    #[test]
    fn datagrams_feed_the_table_and_foreign_or_broken_packets_are_counted() {
        let ip = tcp_v4();
        let mut d = packet(b"apiserver-guard:block-tcp-port-v4\0", &ip);
        // The same connection again (a SYN retransmit): one attempt.
        d.extend(packet(b"apiserver-guard:block-tcp-port-v4\0", &ip));
        let mut next = ip.clone();
        next[21] = 0xcb;
        d.extend(packet(b"apiserver-guard:block-tcp-port-v4\0", &next));
        d.extend(packet(b"someone-else:drop\0", &ip));
        d.extend(packet(b"apiserver-guard:audit-all-v4\0", &ip[..12]));
        let state = Mutex::new(Metrics::new("t"));
        let mut lines = LineBudget::new();
        handle(&d, &state, &mut lines, &mut InterfaceNames::default(), None);
        let m = lock(&state);
        let rows = m.attempts.table.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].count, rows[0].port, rows[0].source_port),
            (2, Some(5443), Some(43211))
        );
        assert_eq!(m.attempts.ignored.get("foreign_prefix"), Some(&1));
        assert_eq!(m.attempts.ignored.get("truncated"), Some(&1));
        assert_eq!(m.attempts.totals.get(&(String::new(), "blocked")), Some(&2));
        assert_eq!(lines.tokens, LINES_PER_SECOND - 1, "one new key, one line");
    }

    #[test]
    fn answers_reaching_the_daemon_are_ignored_and_never_open_a_row() {
        let rule = b"apiserver-guard:block-all-v4\0";
        let with_flags = |flags: u8| {
            let mut ip = tcp_v4();
            ip.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags]);
            ip
        };
        let mut d = Vec::new();
        // A reset, a reset+ACK and a SYN+ACK from the pod to the apiserver's port.
        for flags in [0x04, 0x14, 0x12] {
            d.extend(packet(rule, &with_flags(flags)));
        }
        // An ICMP port unreachable and an echo reply from the pod to the apiserver.
        for icmp_type in [3u8, 0] {
            let mut ip = tcp_v4()[..20].to_vec();
            ip[9] = 1;
            ip.extend_from_slice(&[icmp_type, 3, 0, 0, 0, 0, 0, 0]);
            d.extend(packet(rule, &ip));
        }
        // A fragment after the first (offset 1480): its first is the attempt.
        let mut later = tcp_v4()[..20].to_vec();
        later[6..8].copy_from_slice(&185u16.to_be_bytes());
        later[9] = 1;
        later.extend_from_slice(&[0; 8]);
        d.extend(packet(rule, &later));
        let state = Mutex::new(Metrics::new("t"));
        let mut lines = LineBudget::new();
        handle(&d, &state, &mut lines, &mut InterfaceNames::default(), None);
        {
            let m = lock(&state);
            assert!(m.attempts.table.rows().is_empty(), "{:?}", m.attempts.table.rows());
            assert_eq!(m.attempts.ignored.get("fragment"), Some(&1));
            assert_eq!(m.attempts.ignored.get("answer"), Some(&5));
            assert!(m.attempts.totals.is_empty());
            assert_eq!(lines.tokens, LINES_PER_SECOND, "no line");
        }
        // The pod's own connect (a SYN) and ping (echo request) are attempts.
        let mut ping = tcp_v4()[..20].to_vec();
        ping[9] = 1;
        ping.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        // And a later TCP fragment (a TCP stack never sends one: the pod crafted it).
        let mut tcp_later = tcp_v4()[..20].to_vec();
        tcp_later[6..8].copy_from_slice(&185u16.to_be_bytes());
        tcp_later.extend_from_slice(&[0; 8]);
        let d = [
            packet(rule, &with_flags(0x02)),
            packet(rule, &ping),
            packet(rule, &tcp_later),
        ]
        .concat();
        handle(&d, &state, &mut lines, &mut InterfaceNames::default(), None);
        let m = lock(&state);
        // The connect, the ping, and the fragment (its port unknown: a row of its own).
        let rows = m.attempts.table.rows();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(m.attempts.ignored.get("fragment"), Some(&1));
        let fragment_row = rows.iter().find(|r| r.port.is_none() && r.protocol.name() == "tcp");
        assert_eq!(fragment_row.map(|r| r.count), Some(1), "{rows:?}");
    }

    #[test]
    fn rows_name_their_interface_and_a_flood_on_one_leaves_log_lines_to_another() {
        let rule = b"apiserver-guard:block-tcp-port-v4\0";
        let mut d = Vec::new();
        // 100 new (forged) sources in on loopback (index 1), then one attempt on another interface.
        for i in 0..100u8 {
            let mut ip = tcp_v4();
            ip[14] = 100;
            ip[15] = i;
            d.extend(packet_on(rule, &ip, Some(1)));
        }
        // An index no interface has (named by its number).
        d.extend(packet_on(rule, &tcp_v4(), Some(u32::MAX)));
        let state = Mutex::new(Metrics::new("t"));
        let mut lines = LineBudget::new();
        handle(&d, &state, &mut lines, &mut InterfaceNames::default(), None);
        let m = lock(&state);
        let rows = m.attempts.table.rows();
        assert_eq!(rows.len(), 101);
        assert_eq!(
            (rows[0].source.to_string().as_str(), rows[0].interface.as_deref()),
            ("10.0.1.2", Some("if4294967295"))
        );
        assert!(rows[1..].iter().all(|r| r.interface.as_deref() == Some("lo")));
        assert_eq!(m.attempts.lines_suppressed, 100 - u64::from(LINES_PER_INTERFACE));
        assert_eq!(lines.taken.get(&Some(u32::MAX)), Some(&1), "its line was logged");
    }

    #[test]
    fn attempts_get_the_pod_of_their_source_when_recorded_and_are_noted_for_events() {
        use crate::core::attempts::PodRef;
        use crate::discovery::attribution::PodDirectory;
        use crate::discovery::extract::PodIdentity;
        let web = PodIdentity {
            pod: PodRef {
                namespace: "team-a".into(),
                name: "web-0".into(),
                uid: "uid-web".into(),
                node: "node-a".into(),
            },
            ips: vec!["10.0.1.2".parse().unwrap()],
            created: None,
        };
        let attribution = Attribution {
            pods: PodDirectory::shared(),
            events: Some(EventsHandle::new("node-a")),
        };
        let state = Mutex::new(Metrics::new("t"));
        let mut lines = LineBudget::new();
        let mut names = InterfaceNames::default();
        // Each connection from its own source port (one port is one connection).
        let conn = |port_low: u8| {
            let mut ip = tcp_v4();
            ip[21] = port_low;
            packet(b"apiserver-guard:block-tcp-port-v4\0", &ip)
        };
        // Before the pod is known: the address alone.
        handle(&conn(1), &state, &mut lines, &mut names, Some(&attribution));
        attribution.pods.lock().unwrap().sync([&web], unix_ms());
        handle(&conn(2), &state, &mut lines, &mut names, Some(&attribution));
        handle(&conn(3), &state, &mut lines, &mut names, Some(&attribution));
        // A packet of a connection counted, and a bare ACK of a flow never
        // seen (how a pod answers a forged SYN): neither counts, in the table
        // or in the Event (which counted every packet logged).
        handle(&conn(2), &state, &mut lines, &mut names, Some(&attribution));
        let mut bare = tcp_v4();
        bare[21] = 9;
        bare.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10]);
        let bare = packet(b"apiserver-guard:audit-tcp-port-v4\0", &bare);
        handle(&bare, &state, &mut lines, &mut names, Some(&attribution));
        // The pod is deleted: within the grace period its name stays.
        attribution.pods.lock().unwrap().sync([], unix_ms());
        handle(&conn(4), &state, &mut lines, &mut names, Some(&attribution));
        let m = lock(&state);
        let rows = m.attempts.table.rows();
        let got: Vec<(Option<String>, u64)> = rows
            .iter()
            .map(|r| (r.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)), r.count))
            .collect();
        assert_eq!(got, [(Some("team-a/web-0".to_string()), 3), (None, 1)]);
        assert_eq!(m.attempts.totals.get(&("team-a".to_string(), "blocked")), Some(&3));
        assert_eq!(m.attempts.totals.get(&(String::new(), "blocked")), Some(&1));
        let mut book = attribution.events.as_ref().unwrap().book.lock().unwrap();
        let writes = book.due(unix_ms());
        assert_eq!(writes.len(), 1, "one Event for the pod");
        assert_eq!(writes[0].event.count, Some(3));
        assert!(
            writes[0]
                .event
                .message
                .as_deref()
                .unwrap()
                .contains("192.168.50.10:5443"),
            "{:?}",
            writes[0].event.message
        );
        let s = summary_text(&m.attempts.table.clone().take_repeats(), 0).unwrap();
        assert!(
            s.contains("10.0.1.2 (pod team-a/web-0) -> 192.168.50.10:5443 tcp x2 (blocked)"),
            "{s}"
        );
    }

    #[test]
    fn the_line_budget_runs_out_within_a_second_and_one_interface_takes_a_share() {
        let mut b = LineBudget::new();
        // One pod's interface making new keys as fast as it can: its share only.
        let flood = (0..1000).filter(|_| b.take(Some(7))).count();
        assert_eq!(flood, LINES_PER_INTERFACE as usize);
        // Another pod's single attempt still gets its line.
        assert!(b.take(Some(8)));
        // Local processes (no interface) count as one interface.
        let local = (0..1000).filter(|_| b.take(None)).count();
        assert_eq!(local, LINES_PER_INTERFACE as usize);
        // A third interface gets what is left of the total; then nothing.
        let rest = (0..1000).filter(|_| b.take(Some(9))).count();
        assert_eq!(rest, (LINES_PER_SECOND - 2 * LINES_PER_INTERFACE - 1) as usize);
        assert!(!b.take(Some(10)), "the total is bounded");
        // Even a whole node of pods flooding at once.
        let mut b = LineBudget::new();
        let all: usize = (0..1000u32).map(|i| usize::from(b.take(Some(i)))).sum();
        assert_eq!(all, LINES_PER_SECOND as usize);
    }

    #[test]
    fn endpoints_bracket_ipv6() {
        assert_eq!(endpoint("fd00::1".parse().unwrap(), Some(443)), "[fd00::1]:443");
        assert_eq!(endpoint("10.0.0.1".parse().unwrap(), Some(443)), "10.0.0.1:443");
        assert_eq!(endpoint("10.0.0.1".parse().unwrap(), None), "10.0.0.1");
    }
}
