//! The bounded table of attempts: one row per (source address, apiserver
//! address, port, protocol, pod) with a count, first and last seen, the
//! action and the rule. The pod is part of the key: it is looked up when an
//! attempt is recorded, so an address that a new pod reuses starts a row of
//! its own and never re-attributes the old pod's row. At most `capacity` rows: a new key beyond it evicts the least
//! recently seen one (counted), so a flood of spoofed sources costs a fixed
//! amount of memory. Repeats are gathered for a periodic summary. Pure: the
//! caller gives the time.
//!
//! The count is of connection attempts, not of logged packets: the log rules
//! see every packet that matches, which is one SYN for a rejected connect but
//! each SYN retransmit of a dropped one, and every packet of a connection
//! audit mode lets through. A packet from a source port the row saw within
//! [`CONNECTION_WINDOW_MS`] (one of its [`RECENT_CONNECTIONS`] latest ports)
//! belongs to a connection already counted. Decided here, not in the kernel
//! (`ct state new` on the log rules): the kernel would then never log a
//! connection opened before audit mode started (a client-go HTTP/2 connection
//! lives for days), exactly the one the switch to `reject` would cut.

use super::attempt_log::AttemptAction;
use super::attempt_packet::{Headers, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

/// Rows kept by default.
pub const DEFAULT_CAPACITY: usize = 4096;

/// How long a source port stays one connection: longer than Linux's SYN
/// retransmits last (`tcp_syn_retries` 6: about 127 s).
pub const CONNECTION_WINDOW_MS: u64 = 180_000;

/// Source ports remembered per row (the latest ones); a flood cycling through
/// more ports is counted per logged packet, never less.
pub const RECENT_CONNECTIONS: usize = 16;

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

/// One logged packet, read: who, to where, what happened, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub headers: Headers,
    pub action: AttemptAction,
    /// The comment of the rule that logged it (`block-tcp-port-v4`).
    pub rule: String,
    pub pod: Option<PodRef>,
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
    /// The latest source ports and when each was last seen (connections counted).
    recent: VecDeque<(u16, u64)>,
}

impl Entry {
    /// Whether a packet from `port` at `at_ms` belongs to a connection this
    /// row already counted; remembers the port either way.
    fn same_connection(&mut self, port: Option<u16>, at_ms: u64) -> bool {
        let Some(port) = port else { return false };
        if let Some(seen) = self.recent.iter_mut().find(|(p, _)| *p == port) {
            let same = seen.1.abs_diff(at_ms) <= CONNECTION_WINDOW_MS;
            seen.1 = seen.1.max(at_ms);
            if same {
                return true;
            }
            seen.1 = at_ms;
            return false;
        }
        if self.recent.len() >= RECENT_CONNECTIONS {
            self.recent.pop_front();
        }
        self.recent.push_back((port, at_ms));
        false
    }
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A key not in the table (logged on its own line).
    New,
    /// One more of a known key (goes into the summary).
    Repeat,
    /// Another packet of a connection already counted (a SYN retransmit, the
    /// rest of an audited connection): seen, not counted.
    SameConnection,
}

/// A key repeated since the last summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    pub row: Row,
    pub repeats: u64,
}

/// The table itself.
#[derive(Debug, Clone)]
pub struct AttemptTable {
    capacity: usize,
    entries: HashMap<Key, Entry>,
    /// stamp -> key, oldest first.
    recency: BTreeMap<u64, Key>,
    next_stamp: u64,
    evicted: u64,
}

impl Default for AttemptTable {
    fn default() -> Self {
        AttemptTable::new(DEFAULT_CAPACITY)
    }
}

impl AttemptTable {
    /// A table of at most `capacity` rows (at least one).
    pub fn new(capacity: usize) -> AttemptTable {
        AttemptTable {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            recency: BTreeMap::new(),
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

    /// Adds one attempt; a new key past the capacity evicts the least recently seen.
    pub fn record(&mut self, a: &Attempt) -> Recorded {
        let key = a.key();
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(e) = self.entries.get_mut(&key) {
            self.recency.remove(&e.stamp);
            self.recency.insert(stamp, key);
            e.stamp = stamp;
            let same = e.same_connection(a.headers.source_port, a.at_ms);
            let r = &mut e.row;
            r.first_seen_unix_ms = r.first_seen_unix_ms.min(a.at_ms);
            r.last_seen_unix_ms = r.last_seen_unix_ms.max(a.at_ms);
            if same {
                return Recorded::SameConnection;
            }
            e.unreported += 1;
            r.count += 1;
            r.source_port = a.headers.source_port;
            r.action = a.action.as_str().to_string();
            r.rule.clone_from(&a.rule);
            return Recorded::Repeat;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.evicted += 1;
        }
        let row = Row {
            source: key.source,
            source_port: a.headers.source_port,
            apiserver: key.apiserver,
            port: key.port,
            protocol: key.protocol,
            action: a.action.as_str().to_string(),
            rule: a.rule.clone(),
            pod: a.pod.clone(),
            count: 1,
            first_seen_unix_ms: a.at_ms,
            last_seen_unix_ms: a.at_ms,
        };
        self.recency.insert(stamp, key.clone());
        self.entries.insert(
            key,
            Entry {
                row,
                stamp,
                unreported: 0,
                recent: a.headers.source_port.map(|p| (p, a.at_ms)).into_iter().collect(),
            },
        );
        Recorded::New
    }

    /// Every row, most recently seen first.
    pub fn rows(&self) -> Vec<Row> {
        self.recency
            .values()
            .rev()
            .filter_map(|k| self.entries.get(k))
            .map(|e| e.row.clone())
            .collect()
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

    fn attempt(src: &str, dport: u16, at_ms: u64) -> Attempt {
        Attempt {
            headers: Headers {
                source: src.parse().unwrap(),
                destination: "192.168.50.10".parse().unwrap(),
                protocol: Protocol::Tcp,
                source_port: Some(40000 + (at_ms % 1000) as u16),
                destination_port: Some(dport),
            },
            action: AttemptAction::Blocked,
            rule: "block-tcp-port-v4".into(),
            pod: None,
            at_ms,
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
    }

    #[test]
    fn keys_differ_by_source_destination_port_and_protocol() {
        let mut t = AttemptTable::new(8);
        t.record(&attempt("10.0.1.2", 5443, 1));
        t.record(&attempt("10.0.0.5", 5443, 2));
        t.record(&attempt("10.0.1.2", 443, 3));
        let mut udp = attempt("10.0.1.2", 5443, 4);
        udp.headers.protocol = Protocol::Udp;
        t.record(&udp);
        // Another source port is the same key.
        let mut other_sport = attempt("10.0.1.2", 5443, 5);
        other_sport.headers.source_port = Some(1);
        assert_eq!(t.record(&other_sport), Recorded::Repeat);
        assert_eq!(t.len(), 4);
        assert_eq!(t.rows()[0].source_port, Some(1), "most recently seen first");
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
        assert_eq!(t.recency.len(), 3, "the order index stays in step");
        assert_eq!(t.evicted(), 10_001);
        assert_eq!(AttemptTable::new(0).capacity(), 1);
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

    /// The packets the log rules saw from one source port, `gaps_ms` apart.
    fn packets(t: &mut AttemptTable, sport: u16, start_ms: u64, gaps_ms: &[u64]) -> Vec<Recorded> {
        let mut at = start_ms;
        let mut out = Vec::new();
        for gap in std::iter::once(&0).chain(gaps_ms) {
            at += gap;
            let mut a = attempt("10.0.1.2", 5443, at);
            a.headers.source_port = Some(sport);
            out.push(t.record(&a));
        }
        out
    }

    #[test]
    fn a_dropped_connect_and_its_syn_retransmits_are_one_attempt() {
        let mut t = AttemptTable::new(8);
        // Linux retransmits an unanswered SYN after 1, 2, 4, 8, 16 and 32 s.
        let got = packets(&mut t, 40123, 1000, &[1000, 2000, 4000, 8000, 16000, 32000]);
        assert_eq!(got[0], Recorded::New);
        assert!(got[1..].iter().all(|r| *r == Recorded::SameConnection), "{got:?}");
        let r = &t.rows()[0];
        assert_eq!((r.count, r.first_seen_unix_ms, r.last_seen_unix_ms), (1, 1000, 64000));
        assert!(t.take_repeats().is_empty(), "retransmits are no repeats");
        // The next connect (another source port) is the next attempt.
        assert_eq!(packets(&mut t, 40125, 70000, &[]), [Recorded::Repeat]);
        assert_eq!(t.rows()[0].count, 2);
    }

    #[test]
    fn every_packet_of_an_audited_connection_is_one_attempt_and_a_reused_port_later_another() {
        let mut t = AttemptTable::new(8);
        // A served curl: SYN, ACK, request, ACKs, FIN, ACK within milliseconds.
        let got = packets(&mut t, 40200, 5000, &[1, 1, 2, 1, 1]);
        assert_eq!(
            got.iter().filter(|r| **r != Recorded::SameConnection).count(),
            1,
            "{got:?}"
        );
        assert_eq!(t.rows()[0].count, 1);
        // The same source port, past the window: a new connection.
        let later = 5006 + CONNECTION_WINDOW_MS + 1;
        assert_eq!(packets(&mut t, 40200, later, &[]), [Recorded::Repeat]);
        assert_eq!(t.rows()[0].count, 2);
    }

    #[test]
    fn interleaved_connections_count_once_each_and_the_port_memory_is_bounded() {
        let mut t = AttemptTable::new(8);
        for round in 0..3u64 {
            for port in 0..RECENT_CONNECTIONS as u16 {
                packets(&mut t, 50000 + port, 1000 + round * 10 + u64::from(port), &[]);
            }
        }
        assert_eq!(t.rows()[0].count, RECENT_CONNECTIONS as u64);
        // One more port pushes the oldest out: its next packet counts again (never fewer).
        packets(&mut t, 60000, 2000, &[]);
        assert_eq!(packets(&mut t, 50000, 2001, &[]), [Recorded::Repeat]);
        let e = t.entries.values().next().unwrap();
        assert_eq!(e.recent.len(), RECENT_CONNECTIONS);
        // Without a port (ICMP, another protocol), every packet is an attempt.
        let mut icmp = attempt("10.0.9.9", 5443, 1);
        icmp.headers.source_port = None;
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
        let back: Vec<Row> = serde_json::from_value(v).unwrap();
        assert_eq!(back, t.rows());
        let mut with_pod = a.clone();
        with_pod.pod = Some(pod("team-a", "web-0", "u1"));
        assert_eq!(with_pod.namespace(), "team-a");
        assert_eq!(a.namespace(), "");
        t.record(&with_pod);
        let v = serde_json::to_value(t.rows()).unwrap();
        assert_eq!(
            v[0]["pod"],
            serde_json::json!({"namespace": "team-a", "name": "web-0", "uid": "u1", "node": "node-a"})
        );
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
