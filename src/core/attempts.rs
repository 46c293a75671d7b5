//! The bounded table of attempts: one row per (source address, apiserver
//! address, port, protocol, pod, input interface) with a count, first and
//! last seen, the action and the rule. The pod is part of the key: it is
//! looked up when an attempt is recorded, so an address that a new pod
//! reuses starts a row of its own and never re-attributes the old pod's row.
//! So is the interface the packet came in on (a pod's veth): a pod that
//! forges another pod's address gets rows of its own, on its own interface.
//!
//! At most `capacity` rows. A new key beyond it evicts the least recently
//! seen row **of the interface holding the most rows** (counted): a pod that
//! floods or cycles through forged sources only ever evicts its own rows
//! while it holds more than any other interface, so another pod's single
//! attempt stays listed. Repeats are gathered for a periodic summary. Pure:
//! the caller gives the time.
//!
//! The count is of connections, not of logged packets (`connections`
//! decides which packets belong to a connection already counted).

use super::attempt_log::AttemptAction;
use super::attempt_packet::{Headers, Protocol};
use super::connections::{Belongs, ConnectionMemory};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Rows kept by default.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The pod behind a source address (attribution comes with Kubernetes discovery).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`: tells two pods of the same name apart.
    #[serde(default)]
    pub uid: String,
    /// `spec.nodeName`: the node it runs on (the daemon's own: it watches the pods of its node only).
    #[serde(default)]
    pub node: String,
}

/// The interface a logged packet came in on: the bridge port when the pod
/// network is a bridge, else the input device (a pod's veth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    /// Its name when the packet was read (`if<N>` when it was already gone).
    pub name: String,
}

/// One logged packet, read: who, to where, what happened, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub headers: Headers,
    pub action: AttemptAction,
    /// The comment of the rule that logged it (`block-tcp-port-v4`).
    pub rule: String,
    pub pod: Option<PodRef>,
    /// None: the packet has no input interface (a local process, the OUTPUT hook).
    pub interface: Option<Interface>,
    /// UNIX time in milliseconds.
    pub at_ms: u64,
}

impl Attempt {
    pub fn key(&self) -> Key {
        Key {
            source: self.headers.source,
            apiserver: self.headers.destination,
            port: self.headers.destination_port,
            protocol: self.headers.protocol,
            pod_uid: self.pod.as_ref().map(|p| p.uid.clone()),
            interface: self.interface.as_ref().map(|i| i.index),
        }
    }

    /// Namespace label of the attempts metric ("" until attribution names one).
    pub fn namespace(&self) -> &str {
        self.pod.as_ref().map_or("", |p| p.namespace.as_str())
    }
}

/// What makes two attempts "the same" in the table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub source: IpAddr,
    pub apiserver: IpAddr,
    pub port: Option<u16>,
    pub protocol: Protocol,
    /// The uid of the pod the source address belonged to (None: not attributed).
    pub pod_uid: Option<String>,
    /// The input interface's index (None: none).
    pub interface: Option<u32>,
}

/// One row, as `/attempts` serves it and `apiserver-guard attempts` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub source: IpAddr,
    /// Source port of the latest attempt.
    pub source_port: Option<u16>,
    pub apiserver: IpAddr,
    pub port: Option<u16>,
    pub protocol: Protocol,
    /// `blocked` or `audited` (of the latest attempt).
    pub action: String,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The interface the packets came in on (a pod's veth; absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Connection attempts (every packet of one connection counts once).
    pub count: u64,
    pub first_seen_unix_ms: u64,
    pub last_seen_unix_ms: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    row: Row,
    /// Position in the recency order.
    stamp: u64,
    /// Repeats since the last summary.
    unreported: u64,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A key not in the table (logged on its own line).
    New,
    /// One more of a known key (goes into the summary).
    Repeat,
    /// Not a connection of its own: another packet of one already counted
    /// (a SYN retransmit, the rest of an audited connection). Its row's
    /// last seen moves; nothing is counted.
    NotCounted,
    /// A bare ACK of a flow never seen (what a pod sends to answer a SYN
    /// forged "from the apiserver", or an idle connection's keepalive: that
    /// one is counted at its data): ignored, no row made or touched.
    BareAck,
}

/// A key repeated since the last summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    pub row: Row,
    pub repeats: u64,
}

/// The rows of one interface, oldest first.
type Recency = BTreeMap<u64, Key>;

/// The table itself.
#[derive(Debug, Clone)]
pub struct AttemptTable {
    capacity: usize,
    entries: HashMap<Key, Entry>,
    /// Per interface: stamp -> key, oldest first.
    by_interface: HashMap<Option<u32>, Recency>,
    /// (rows, oldest stamp reversed, interface) of every interface with
    /// rows: the last one is where a full table evicts from.
    crowding: BTreeSet<(usize, Reverse<u64>, Option<u32>)>,
    connections: ConnectionMemory,
    next_stamp: u64,
    evicted: u64,
}

impl Default for AttemptTable {
    fn default() -> Self {
        AttemptTable::new(DEFAULT_CAPACITY)
    }
}

/// The crowding entry of an interface's rows (None when it has none).
fn crowding_of(interface: Option<u32>, rows: &Recency) -> Option<(usize, Reverse<u64>, Option<u32>)> {
    let (oldest, _) = rows.first_key_value()?;
    Some((rows.len(), Reverse(*oldest), interface))
}

impl AttemptTable {
    /// A table of at most `capacity` rows (at least one).
    pub fn new(capacity: usize) -> AttemptTable {
        AttemptTable {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_interface: HashMap::new(),
            crowding: BTreeSet::new(),
            connections: ConnectionMemory::default(),
            next_stamp: 0,
            evicted: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Rows evicted to make room, since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Changes one interface's recency with `f`, keeping `crowding` in step.
    fn with_interface<T>(&mut self, interface: Option<u32>, f: impl FnOnce(&mut Recency) -> T) -> T {
        let rows = self.by_interface.entry(interface).or_default();
        if let Some(c) = crowding_of(interface, rows) {
            self.crowding.remove(&c);
        }
        let out = f(rows);
        match crowding_of(interface, rows) {
            Some(c) => {
                self.crowding.insert(c);
            }
            None => {
                self.by_interface.remove(&interface);
            }
        }
        out
    }

    /// Evicts the least recently seen row of the interface holding the most
    /// rows (of two holding as many, the one with the older row).
    fn evict_one(&mut self) -> bool {
        let Some(&(_, _, interface)) = self.crowding.last() else {
            return false;
        };
        let Some((_, key)) = self.with_interface(interface, |rows| rows.pop_first()) else {
            return false;
        };
        self.entries.remove(&key);
        self.evicted += 1;
        true
    }

    /// Adds one attempt; a new key past the capacity evicts as above.
    pub fn record(&mut self, a: &Attempt) -> Recorded {
        let key = a.key();
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let new_connection = match self.connections.classify(&a.headers, key.interface, a.at_ms) {
            // A bare ACK of a flow never seen: it touches no row, not even
            // its last seen (a review's find: answers to forged SYNs kept
            // another connection's row looking current).
            Belongs::Nothing => return Recorded::BareAck,
            Belongs::NewConnection => true,
            Belongs::CountedConnection => false,
        };
        if let Some(e) = self.entries.get_mut(&key) {
            let old = std::mem::replace(&mut e.stamp, stamp);
            let r = &mut e.row;
            r.first_seen_unix_ms = r.first_seen_unix_ms.min(a.at_ms);
            r.last_seen_unix_ms = r.last_seen_unix_ms.max(a.at_ms);
            let recorded = if new_connection {
                e.unreported += 1;
                r.count += 1;
                r.source_port = a.headers.source_port;
                r.action = a.action.as_str().to_string();
                r.rule.clone_from(&a.rule);
                Recorded::Repeat
            } else {
                Recorded::NotCounted
            };
            self.with_interface(key.interface, |rows| {
                rows.remove(&old);
                rows.insert(stamp, key);
            });
            return recorded;
        }
        // A new key: a new connection, or one counted before whose row was
        // evicted since (listed again, counted again: too many, never too few).
        while self.entries.len() >= self.capacity && self.evict_one() {}
        let row = Row {
            source: key.source,
            source_port: a.headers.source_port,
            apiserver: key.apiserver,
            port: key.port,
            protocol: key.protocol,
            action: a.action.as_str().to_string(),
            rule: a.rule.clone(),
            pod: a.pod.clone(),
            interface: a.interface.as_ref().map(|i| i.name.clone()),
            count: 1,
            first_seen_unix_ms: a.at_ms,
            last_seen_unix_ms: a.at_ms,
        };
        self.with_interface(key.interface, |rows| rows.insert(stamp, key.clone()));
        self.entries.insert(
            key,
            Entry {
                row,
                stamp,
                unreported: 0,
            },
        );
        Recorded::New
    }

    /// Every row, most recently seen first.
    pub fn rows(&self) -> Vec<Row> {
        let mut entries: Vec<&Entry> = self.entries.values().collect();
        entries.sort_by_key(|e| Reverse(e.stamp));
        entries.into_iter().map(|e| e.row.clone()).collect()
    }

    /// The keys repeated since the last call, most repeats first, and forgets them.
    pub fn take_repeats(&mut self) -> Vec<Repeat> {
        let mut out: Vec<Repeat> = self
            .entries
            .values_mut()
            .filter(|e| e.unreported > 0)
            .map(|e| {
                let repeats = std::mem::take(&mut e.unreported);
                Repeat {
                    row: e.row.clone(),
                    repeats,
                }
            })
            .collect();
        out.sort_by(|a, b| b.repeats.cmp(&a.repeats).then(a.row.source.cmp(&b.row.source)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::attempt_packet::TcpSegment;
    use crate::core::connections::CONNECTION_WINDOW_MS;

    /// A connect (a SYN of its own) from `src`, on no interface.
    fn attempt(src: &str, dport: u16, at_ms: u64) -> Attempt {
        Attempt {
            headers: Headers {
                source: src.parse().unwrap(),
                destination: "192.168.50.10".parse().unwrap(),
                protocol: Protocol::Tcp,
                source_port: Some(40000 + (at_ms % 1000) as u16),
                destination_port: Some(dport),
                tcp: Some(TcpSegment::Open { isn: at_ms as u32 }),
                answer: false,
                later_fragment: false,
            },
            action: AttemptAction::Blocked,
            rule: "block-tcp-port-v4".into(),
            pod: None,
            interface: None,
            at_ms,
        }
    }

    /// The same, in on interface `index` (`vethN`).
    fn on(index: u32, mut a: Attempt) -> Attempt {
        a.interface = Some(Interface {
            index,
            name: format!("veth{index}"),
        });
        a
    }

    #[test]
    fn a_bare_ack_of_a_flow_never_seen_makes_no_row_blocked_or_audited() {
        // A round 3 find on a real kernel: the pod's answers to forged SYNs
        // (bare ACKs from its listening port) made a row with count 1.
        let mut t = AttemptTable::new(16);
        for action in [AttemptAction::Blocked, AttemptAction::Audited] {
            let mut a = attempt("10.0.2.2", 5443, 1);
            a.headers.source_port = Some(8080);
            a.headers.tcp = Some(TcpSegment::Within { data: false });
            a.action = action;
            assert_eq!(t.record(&a), Recorded::BareAck);
        }
        assert!(t.rows().is_empty());
        // Its data (or FIN) is a connection's: one row, counted once.
        let mut data = attempt("10.0.2.2", 5443, 2);
        data.headers.tcp = Some(TcpSegment::Within { data: true });
        assert_eq!(t.record(&data), Recorded::New);
        assert_eq!(t.record(&data), Recorded::NotCounted);
        assert_eq!(t.rows()[0].count, 1);
        assert_in_step(&t);
    }

    #[test]
    fn a_bare_ack_of_a_flow_never_seen_leaves_an_existing_row_as_it_was() {
        // A review's find: the pod's answers to SYNs forged "from the
        // apiserver" share the row of its real attempt there and kept its
        // last seen moving (and the row from ever being evicted).
        let mut t = AttemptTable::new(16);
        let syn = attempt("10.0.2.2", 5443, 1000);
        assert_eq!(t.record(&syn), Recorded::New);
        let mut answer = attempt("10.0.2.2", 5443, 9000);
        answer.headers.source_port = Some(8080);
        answer.headers.tcp = Some(TcpSegment::Within { data: false });
        assert_eq!(t.record(&answer), Recorded::BareAck);
        let r = &t.rows()[0];
        assert_eq!(
            (r.count, r.last_seen_unix_ms, r.source_port),
            (1, 1000, syn.headers.source_port)
        );
        // The counted connection's own packets still do.
        let mut own = syn.clone();
        own.at_ms = 9500;
        own.headers.tcp = Some(TcpSegment::Within { data: false });
        assert_eq!(t.record(&own), Recorded::NotCounted);
        assert_eq!(t.rows()[0].last_seen_unix_ms, 9500);
    }

    #[test]
    fn a_counted_connection_whose_row_was_evicted_is_listed_again() {
        // A review's find: its flow still remembered, its next packets made
        // no row, so a long-lived audited connection vanished from the table.
        let mut t = AttemptTable::new(1);
        let held = attempt("10.0.2.2", 5443, 1000);
        assert_eq!(t.record(&held), Recorded::New);
        assert_eq!(t.record(&attempt("10.0.2.3", 5443, 2000)), Recorded::New);
        assert_eq!(t.rows()[0].source.to_string(), "10.0.2.3");
        let mut data = held.clone();
        data.at_ms = 3000;
        data.headers.tcp = Some(TcpSegment::Within { data: true });
        assert_eq!(t.record(&data), Recorded::New);
        let r = &t.rows()[0];
        assert_eq!((r.source.to_string().as_str(), r.count), ("10.0.2.2", 1));
        assert_in_step(&t);
    }

    /// `crowding` and `by_interface` agree with `entries`.
    fn assert_in_step(t: &AttemptTable) {
        let indexed: usize = t.by_interface.values().map(BTreeMap::len).sum();
        assert_eq!(indexed, t.entries.len());
        assert_eq!(t.crowding.len(), t.by_interface.len());
        for (interface, rows) in &t.by_interface {
            assert!(t.crowding.contains(&crowding_of(*interface, rows).unwrap()));
            for (stamp, key) in rows {
                assert_eq!(t.entries[key].stamp, *stamp);
            }
        }
    }

    #[test]
    fn repeats_count_on_one_row_and_keep_first_and_last_seen() {
        let mut t = AttemptTable::new(8);
        assert_eq!(t.record(&attempt("10.0.1.2", 5443, 1000)), Recorded::New);
        assert_eq!(t.record(&attempt("10.0.1.2", 5443, 3001)), Recorded::Repeat);
        // Out of order (a late datagram) does not move first_seen forward.
        assert_eq!(t.record(&attempt("10.0.1.2", 5443, 2002)), Recorded::Repeat);
        let rows = t.rows();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.count, r.first_seen_unix_ms, r.last_seen_unix_ms), (3, 1000, 3001));
        assert_eq!(r.source_port, Some(40002), "the latest attempt's source port");
        assert_eq!((r.action.as_str(), r.port), ("blocked", Some(5443)));
        assert_eq!(r.interface, None);
    }

    #[test]
    fn keys_differ_by_source_destination_port_protocol_and_interface() {
        let mut t = AttemptTable::new(8);
        t.record(&attempt("10.0.1.2", 5443, 1));
        t.record(&attempt("10.0.0.5", 5443, 2));
        t.record(&attempt("10.0.1.2", 443, 3));
        let mut udp = attempt("10.0.1.2", 5443, 4);
        udp.headers.protocol = Protocol::Udp;
        t.record(&udp);
        // The same address forged from another pod's interface: a row of its own.
        assert_eq!(t.record(&on(7, attempt("10.0.1.2", 5443, 5))), Recorded::New);
        // Another source port is the same key.
        let mut other_sport = attempt("10.0.1.2", 5443, 6);
        other_sport.headers.source_port = Some(1);
        assert_eq!(t.record(&other_sport), Recorded::Repeat);
        assert_eq!(t.len(), 5);
        assert_eq!(t.rows()[0].source_port, Some(1), "most recently seen first");
        assert_eq!(t.rows()[1].interface.as_deref(), Some("veth7"));
        assert_in_step(&t);
    }

    #[test]
    fn the_cap_evicts_the_least_recently_seen_and_counts_it() {
        let mut t = AttemptTable::new(3);
        t.record(&attempt("10.0.0.1", 5443, 1));
        t.record(&attempt("10.0.0.2", 5443, 2));
        t.record(&attempt("10.0.0.3", 5443, 3));
        t.record(&attempt("10.0.0.1", 5443, 4)); // 10.0.0.1 is recent again
        t.record(&attempt("10.0.0.4", 5443, 5)); // evicts 10.0.0.2
        let sources: Vec<String> = t.rows().iter().map(|r| r.source.to_string()).collect();
        assert_eq!(sources, ["10.0.0.4", "10.0.0.1", "10.0.0.3"]);
        assert_eq!(t.evicted(), 1);
        // A flood of distinct (spoofed) sources: bounded.
        for i in 0..10_000u32 {
            let src = format!("10.{}.{}.{}", 100 + (i >> 16), (i >> 8) & 255, i & 255);
            t.record(&attempt(&src, 5443, 10 + u64::from(i)));
        }
        assert_eq!(t.len(), 3);
        assert_in_step(&t);
        assert_eq!(t.evicted(), 10_001);
        assert_eq!(AttemptTable::new(0).capacity(), 1);
    }

    #[test]
    fn a_pod_cycling_forged_sources_evicts_only_its_own_rows() {
        // The break-it round's churn: one interface fills the table with
        // forged sources and keeps cycling through more than fit; pods on
        // other interfaces (and packets with none) keep their rows.
        let mut t = AttemptTable::new(64);
        assert_eq!(t.record(&on(2, attempt("10.0.2.2", 5443, 1))), Recorded::New);
        assert_eq!(t.record(&attempt("10.0.9.9", 5443, 2)), Recorded::New);
        let mut at = 10;
        for round in 0..5u32 {
            for i in 0..5_400u32 {
                let src = format!("10.{}.{}.{}", 100 + (i >> 16), (i >> 8) & 255, i & 255);
                t.record(&on(1, attempt(&src, 5443, at)));
                at += 1;
            }
            // Another pod tries once in the middle of it all.
            if round == 2 {
                assert_eq!(t.record(&on(3, attempt("10.0.3.3", 5443, at))), Recorded::New);
            }
        }
        let rows = t.rows();
        assert_eq!(rows.len(), 64);
        for (source, interface) in [
            ("10.0.2.2", Some("veth2")),
            ("10.0.9.9", None),
            ("10.0.3.3", Some("veth3")),
        ] {
            assert!(
                rows.iter()
                    .any(|r| r.source.to_string() == source && r.interface.as_deref() == interface),
                "{source} was evicted"
            );
        }
        assert_eq!(
            rows.iter().filter(|r| r.interface.as_deref() == Some("veth1")).count(),
            61
        );
        assert_eq!(t.evicted(), 5 * 5_400 - 61);
        assert_in_step(&t);
    }

    #[test]
    fn a_full_table_evicts_from_the_interface_holding_the_most_rows_then_the_oldest() {
        let mut t = AttemptTable::new(6);
        // Interface 1: 3 rows; interface 2: 2 rows; no interface: 1 row.
        for (i, (iface, src)) in [
            (Some(1), "10.0.1.1"),
            (Some(2), "10.0.2.1"),
            (Some(1), "10.0.1.2"),
            (None, "10.0.0.1"),
            (Some(2), "10.0.2.2"),
            (Some(1), "10.0.1.3"),
        ]
        .into_iter()
        .enumerate()
        {
            let a = attempt(src, 5443, i as u64);
            t.record(&match iface {
                Some(n) => on(n, a),
                None => a,
            });
        }
        // A seventh row, from interface 2: interface 1 holds the most, its oldest goes.
        t.record(&on(2, attempt("10.0.2.3", 5443, 10)));
        let gone = |t: &AttemptTable, src: &str| !t.rows().iter().any(|r| r.source.to_string() == src);
        assert!(gone(&t, "10.0.1.1"));
        // Now 1 and 2 hold 2 and 3: interface 2's oldest goes next.
        t.record(&attempt("10.0.0.2", 5443, 11));
        assert!(gone(&t, "10.0.2.1"));
        // All three hold 2 now: the oldest row of them goes (10.0.1.2, stamp 2).
        t.record(&attempt("10.0.0.3", 5443, 12));
        assert!(gone(&t, "10.0.1.2"));
        assert_eq!(t.evicted(), 3);
        assert_eq!(t.len(), 6);
        assert_in_step(&t);
    }

    #[test]
    fn repeats_are_summarised_once() {
        let mut t = AttemptTable::new(8);
        for i in 0..5 {
            t.record(&attempt("10.0.1.2", 5443, i));
        }
        t.record(&attempt("10.0.0.5", 5443, 9));
        t.record(&attempt("10.0.0.5", 5443, 10));
        t.record(&attempt("10.0.0.6", 5443, 11));
        let r = t.take_repeats();
        let got: Vec<(String, u64)> = r.iter().map(|x| (x.row.source.to_string(), x.repeats)).collect();
        assert_eq!(got, [("10.0.1.2".to_string(), 4), ("10.0.0.5".to_string(), 1)]);
        assert!(t.take_repeats().is_empty(), "nothing new since");
    }

    /// The packets of one connection from `sport`: its SYN at `start_ms`,
    /// then the other segments, `gaps_ms` apart.
    fn connection(t: &mut AttemptTable, sport: u16, start_ms: u64, gaps_ms: &[u64]) -> Vec<Recorded> {
        let mut at = start_ms;
        let mut out = Vec::new();
        for (i, gap) in std::iter::once(&0).chain(gaps_ms).enumerate() {
            at += gap;
            let mut a = attempt("10.0.1.2", 5443, at);
            a.headers.source_port = Some(sport);
            a.headers.tcp = Some(if i == 0 {
                TcpSegment::Open { isn: start_ms as u32 }
            } else {
                TcpSegment::Within { data: true }
            });
            out.push(t.record(&a));
        }
        out
    }

    #[test]
    fn a_dropped_connect_and_its_syn_retransmits_are_one_attempt() {
        let mut t = AttemptTable::new(8);
        // Linux retransmits an unanswered SYN after 1, 2, 4, 8, 16 and 32 s: the same SYN.
        let mut got = Vec::new();
        for at in [1000u64, 2000, 4000, 8000, 16000, 32000, 64000] {
            let mut a = attempt("10.0.1.2", 5443, at);
            a.headers.source_port = Some(40123);
            a.headers.tcp = Some(TcpSegment::Open { isn: 99 });
            got.push(t.record(&a));
        }
        assert_eq!(got[0], Recorded::New);
        assert!(got[1..].iter().all(|r| *r == Recorded::NotCounted), "{got:?}");
        let r = &t.rows()[0];
        assert_eq!((r.count, r.first_seen_unix_ms, r.last_seen_unix_ms), (1, 1000, 64000));
        assert!(t.take_repeats().is_empty(), "retransmits are no repeats");
        // The next connect (another source port) is the next attempt.
        assert_eq!(connection(&mut t, 40125, 70000, &[]), [Recorded::Repeat]);
        assert_eq!(t.rows()[0].count, 2);
    }

    #[test]
    fn every_packet_of_an_audited_connection_is_one_attempt_and_a_reused_port_another() {
        let mut t = AttemptTable::new(8);
        // A served curl: SYN, ACK, request, ACKs, FIN, ACK within milliseconds.
        let got = connection(&mut t, 40200, 5000, &[1, 1, 2, 1, 1]);
        assert_eq!(got.iter().filter(|r| **r != Recorded::NotCounted).count(), 1, "{got:?}");
        assert_eq!(t.rows()[0].count, 1);
        // The same source port, a new connect (its own SYN), even at once.
        assert_eq!(connection(&mut t, 40200, 5007, &[]), [Recorded::Repeat]);
        // And long after: another still.
        assert_eq!(
            connection(&mut t, 40200, 5008 + CONNECTION_WINDOW_MS, &[]),
            [Recorded::Repeat]
        );
        assert_eq!(t.rows()[0].count, 3);
    }

    #[test]
    fn many_long_lived_connections_from_one_address_count_once_each() {
        // The break-it round: 24 audited connections written to in turn were
        // counted 67 and growing (a row remembered 16 source ports).
        let mut t = AttemptTable::new(8);
        for port in 0..24u16 {
            connection(&mut t, 50000 + port, 1000 + u64::from(port), &[]);
        }
        for round in 1..=10u64 {
            for port in 0..24u16 {
                let mut a = attempt("10.0.1.2", 5443, round * 600_000);
                a.headers.source_port = Some(50000 + port);
                a.headers.tcp = Some(TcpSegment::Within { data: true });
                assert_eq!(t.record(&a), Recorded::NotCounted);
            }
        }
        assert_eq!(t.rows()[0].count, 24);
        // Without a port (ICMP, another protocol), every packet is an attempt.
        let mut icmp = attempt("10.0.9.9", 5443, 1);
        icmp.headers.source_port = None;
        icmp.headers.tcp = None;
        t.record(&icmp);
        assert_eq!(t.record(&icmp), Recorded::Repeat);
    }

    #[test]
    fn rows_serialize_for_scripts() {
        let mut t = AttemptTable::new(8);
        let mut a = attempt("fd00:10:0:1::2", 5443, 1000);
        a.headers.destination = "fd00:50::10".parse().unwrap();
        a.action = AttemptAction::Audited;
        t.record(&a);
        let v = serde_json::to_value(t.rows()).unwrap();
        assert_eq!(v[0]["source"], "fd00:10:0:1::2");
        assert_eq!(v[0]["apiserver"], "fd00:50::10");
        assert_eq!(v[0]["protocol"], "tcp");
        assert_eq!(v[0]["action"], "audited");
        assert!(v[0].get("pod").is_none(), "no pod until attribution");
        assert!(v[0].get("interface").is_none(), "no interface, no field");
        let back: Vec<Row> = serde_json::from_value(v).unwrap();
        assert_eq!(back, t.rows());
        let mut with_pod = on(12, a.clone());
        with_pod.at_ms = 1001;
        with_pod.pod = Some(pod("team-a", "web-0", "u1"));
        assert_eq!(with_pod.namespace(), "team-a");
        assert_eq!(a.namespace(), "");
        t.record(&with_pod);
        let v = serde_json::to_value(t.rows()).unwrap();
        assert_eq!(
            v[0]["pod"],
            serde_json::json!({"namespace": "team-a", "name": "web-0", "uid": "u1", "node": "node-a"})
        );
        assert_eq!(v[0]["interface"], "veth12");
        // A page of an older daemon (no uid, no node) still reads.
        let old: PodRef = serde_json::from_str(r#"{"namespace":"a","name":"b"}"#).unwrap();
        assert_eq!((old.uid.as_str(), old.node.as_str()), ("", ""));
    }

    fn pod(namespace: &str, name: &str, uid: &str) -> PodRef {
        PodRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            node: "node-a".into(),
        }
    }

    #[test]
    fn an_address_reused_by_another_pod_starts_its_own_row_and_keeps_the_old_one() {
        let mut t = AttemptTable::new(8);
        let mut old = attempt("10.0.1.2", 5443, 1000);
        old.pod = Some(pod("team-a", "web-0", "u1"));
        assert_eq!(t.record(&old), Recorded::New);
        let mut again = attempt("10.0.1.2", 5443, 1001);
        again.pod = old.pod.clone();
        assert_eq!(t.record(&again), Recorded::Repeat, "another connection of the same pod");
        // The pod is gone, its address now belongs to another pod.
        let mut new = attempt("10.0.1.2", 5443, 2000);
        new.pod = Some(pod("kube-system", "dns-1", "u2"));
        assert_eq!(t.record(&new), Recorded::New, "a new (pod, apiserver) pair");
        // And an attempt no pod could be named for is a row of its own too.
        assert_eq!(t.record(&attempt("10.0.1.2", 5443, 3000)), Recorded::New);
        let rows = t.rows();
        let by_pod: Vec<(Option<String>, u64)> = rows
            .iter()
            .map(|r| (r.pod.as_ref().map(|p| p.name.clone()), r.count))
            .collect();
        assert_eq!(
            by_pod,
            [(None, 1), (Some("dns-1".into()), 1), (Some("web-0".into()), 2)],
            "the old row keeps its pod and count"
        );
    }
}
