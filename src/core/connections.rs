//! Which logged packets belong to a connection already counted, so that
//! attempts count connections, not packets. The log rules see every packet
//! that matches: one SYN for a rejected connect, each SYN retransmit of a
//! dropped one, every packet of a connection audit mode lets through.
//!
//! A connection is its flow (source and destination address and port,
//! protocol, and the interface it came in on: a pod that forges another
//! pod's flows cannot make that pod's next connection look like one already
//! counted). TCP says more: a SYN without ACK opens a connection, and its
//! initial sequence number tells a retransmit (the same one) from a new
//! connect that reuses the source port (another one); any other segment
//! belongs to a connection already open, however long ago (a client-go
//! HTTP/2 connection lives for days), and is counted once if its opening
//! was never seen (opened before audit began, or forgotten) and it carries
//! data or a FIN. A bare ACK of an unseen flow counts for nothing, blocked
//! or audited: a pod's kernel sends one to answer a SYN forged "from the
//! apiserver" to its half-open socket, and several senders forging at once
//! make it send millions (break-it finds: rows the pod never made), while
//! nothing forged can make it send data or a FIN, which only a connection
//! it opened carries. A connection opened before audit began is counted at
//! its first data segment or FIN: a client-go connection sends each request
//! as data, returns HTTP/2 flow-control credit as it reads, and sends a
//! PING after 30 s without a frame received. Without TCP flags (UDP, SCTP,
//! flags not copied), packets of one flow within [`CONNECTION_WINDOW_MS`] of
//! each other are one connection; without ports, every packet is an attempt. Decided here, not in the kernel (`ct state
//! new` on the log rules): the kernel would then never log a connection
//! opened before audit mode started, exactly the one the switch to `reject`
//! would cut.
//!
//! Bounded: at most `capacity` flows in all, kept per interface in two
//! generations. When the memory is full, the interface holding the most
//! flows forgets its older generation and its newer one becomes the older:
//! a pod making new flows as fast as it can only ever pushes out its own
//! (a break-it find: one shared memory let it make other pods' next packets
//! count again), and a flood costs a fixed amount of memory. A flow
//! forgotten that way counts again on its next packet: too many, never too
//! few. (The kernel's meters can make a count low: a packet
//! over its source's limit is never logged.) Pure: the caller gives the time.

use super::attempt_packet::{Headers, Protocol, TcpSegment};
use std::collections::HashMap;
use std::net::IpAddr;

/// How long packets of one flow without TCP flags stay one connection, and a
/// SYN retransmit one connect: longer than Linux's SYN retransmits last
/// (`tcp_syn_retries` 6: about 127 s).
pub const CONNECTION_WINDOW_MS: u64 = 180_000;

/// Flows remembered by default (at most about 2 MiB).
pub const DEFAULT_FLOWS: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Flow {
    source: IpAddr,
    destination: IpAddr,
    source_port: u16,
    destination_port: u16,
    protocol: Protocol,
    interface: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The initial sequence number of the latest TCP opening seen.
    isn: Option<u32>,
    /// The latest packet.
    at_ms: u64,
}

/// One interface's flows, newer and older.
#[derive(Debug, Clone, Default)]
struct Generations {
    newer: HashMap<Flow, Seen>,
    older: HashMap<Flow, Seen>,
}

impl Generations {
    fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

/// The flows seen lately.
#[derive(Debug, Clone)]
pub struct ConnectionMemory {
    capacity: usize,
    by_interface: HashMap<Option<u32>, Generations>,
    total: usize,
}

impl Default for ConnectionMemory {
    fn default() -> Self {
        ConnectionMemory::new(DEFAULT_FLOWS)
    }
}

impl ConnectionMemory {
    /// A memory of at most `capacity` flows (at least two).
    pub fn new(capacity: usize) -> ConnectionMemory {
        ConnectionMemory {
            capacity: capacity.max(2),
            by_interface: HashMap::new(),
            total: 0,
        }
    }

    /// Flows remembered now.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Makes room for one more flow: the interface holding the most flows
    /// forgets its older generation, and its newer one becomes the older.
    fn make_room(&mut self) {
        while self.total >= self.capacity {
            let Some((&crowded, _)) = self.by_interface.iter().max_by_key(|(_, g)| g.len()) else {
                return;
            };
            let g = self.by_interface.get_mut(&crowded).expect("just found");
            self.total -= g.older.len();
            g.older = std::mem::take(&mut g.newer);
            if g.older.is_empty() {
                self.by_interface.remove(&crowded);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a packet with headers `h` that came in on `interface`, seen
    /// at `at_ms`, is a connection not counted yet (`classify`).
    pub fn is_new(&mut self, h: &Headers, interface: Option<u32>, at_ms: u64) -> bool {
        self.classify(h, interface, at_ms) == Belongs::NewConnection
    }

    /// Which connection a packet with headers `h` that came in on
    /// `interface`, seen at `at_ms`, belongs to; remembers its flow unless
    /// it is a bare ACK of a flow never seen.
    pub fn classify(&mut self, h: &Headers, interface: Option<u32>, at_ms: u64) -> Belongs {
        let (Some(source_port), Some(destination_port)) = (h.source_port, h.destination_port) else {
            return Belongs::NewConnection;
        };
        let flow = Flow {
            source: h.source,
            destination: h.destination,
            source_port,
            destination_port,
            protocol: h.protocol,
            interface,
        };
        let g = self.by_interface.entry(interface).or_default();
        let before = g.newer.remove(&flow).or_else(|| g.older.remove(&flow));
        if before.is_some() {
            self.total -= 1;
        }
        let within_window = |s: &Seen| s.at_ms.abs_diff(at_ms) <= CONNECTION_WINDOW_MS;
        let latest = |s: &Seen| s.at_ms.max(at_ms);
        let (new, seen) = match (h.tcp, before) {
            (Some(TcpSegment::Open { isn }), Some(s)) if s.isn == Some(isn) && within_window(&s) => (
                false,
                Seen {
                    isn: Some(isn),
                    at_ms: latest(&s),
                },
            ),
            (Some(TcpSegment::Open { isn }), _) => (true, Seen { isn: Some(isn), at_ms }),
            (Some(TcpSegment::Within { .. }), Some(s)) => (
                false,
                Seen {
                    isn: s.isn,
                    at_ms: latest(&s),
                },
            ),
            (Some(TcpSegment::Within { data: true }), None) => (true, Seen { isn: None, at_ms }),
            // A bare ACK of a flow never seen opens nothing: a pod's kernel
            // sends one to answer a SYN forged "from the apiserver" to its
            // half-open socket (break-it finds). A connection cut by the
            // block is counted by its reconnect's SYN, an audited one opened
            // before audit began by its next data or FIN.
            (Some(TcpSegment::Within { .. }), None) => return Belongs::Nothing,
            (None, Some(s)) if within_window(&s) => (
                false,
                Seen {
                    isn: s.isn,
                    at_ms: latest(&s),
                },
            ),
            (None, _) => (true, Seen { isn: None, at_ms }),
        };
        self.make_room();
        self.by_interface.entry(interface).or_default().newer.insert(flow, seen);
        self.total += 1;
        if new {
            Belongs::NewConnection
        } else {
            Belongs::CountedConnection
        }
    }
}

/// What `ConnectionMemory::classify` says of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Belongs {
    /// A connection not counted yet (or forgotten since).
    NewConnection,
    /// A connection counted before, remembered.
    CountedConnection,
    /// Nothing: a bare ACK of a flow never seen (an answer to a forged
    /// packet, or an idle connection's keepalive: counted at its data).
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sport: u16, tcp: Option<TcpSegment>) -> Headers {
        Headers {
            source: "10.0.1.2".parse().unwrap(),
            destination: "192.168.50.10".parse().unwrap(),
            protocol: if tcp.is_some() { Protocol::Tcp } else { Protocol::Udp },
            source_port: Some(sport),
            destination_port: Some(5443),
            tcp,
            answer: false,
            later_fragment: false,
        }
    }

    const SYN: Option<TcpSegment> = Some(TcpSegment::Open { isn: 7 });

    #[test]
    fn a_bare_ack_of_an_unseen_flow_opens_nothing_and_data_does() {
        let mut m = ConnectionMemory::default();
        let bare = Some(TcpSegment::Within { data: false });
        // Answers to forged SYNs, many times over: nothing counted, nothing remembered.
        for at in 0..100 {
            assert!(!m.is_new(&packet(41000, bare), Some(3), at));
        }
        assert!(m.is_empty());
        // The same flow's data (a connection opened before audit began): one.
        assert!(m.is_new(&packet(41000, WITHIN), Some(3), 200));
        assert!(!m.is_new(&packet(41000, bare), Some(3), 300));
        assert!(!m.is_new(&packet(41000, WITHIN), Some(3), 400));
        // An opened connection's bare ACKs stay in it.
        assert!(m.is_new(&packet(42000, SYN), Some(3), 500));
        assert!(!m.is_new(&packet(42000, bare), Some(3), 600));
        // Audited or not, the same: a connection opened before audit began
        // counts at its first data (or FIN), once.
        assert!(!m.is_new(&packet(43000, bare), Some(3), 700));
        assert!(m.is_new(&packet(43000, WITHIN), Some(3), 800));
        assert!(!m.is_new(&packet(43000, bare), Some(3), 900));
    }
    const WITHIN: Option<TcpSegment> = Some(TcpSegment::Within { data: true });

    #[test]
    fn classify_tells_a_counted_connection_from_a_bare_ack_of_nothing() {
        let mut m = ConnectionMemory::default();
        let bare = Some(TcpSegment::Within { data: false });
        assert_eq!(m.classify(&packet(41000, bare), Some(3), 0), Belongs::Nothing);
        assert_eq!(m.classify(&packet(41000, SYN), Some(3), 1), Belongs::NewConnection);
        assert_eq!(m.classify(&packet(41000, bare), Some(3), 2), Belongs::CountedConnection);
        assert_eq!(
            m.classify(&packet(41000, WITHIN), Some(3), 3),
            Belongs::CountedConnection
        );
        assert_eq!(m.classify(&packet(41000, bare), Some(4), 4), Belongs::Nothing);
    }

    #[test]
    fn a_dropped_connect_and_its_syn_retransmits_are_one_connection() {
        let mut m = ConnectionMemory::default();
        // Linux retransmits an unanswered SYN after 1, 2, 4, 8, 16 and 32 s.
        let times = [0u64, 1000, 3000, 7000, 15000, 31000, 63000];
        let new: Vec<bool> = times.iter().map(|t| m.is_new(&packet(40123, SYN), None, *t)).collect();
        assert_eq!(new, [true, false, false, false, false, false, false]);
        // The same SYN long after the window: a connect of its own.
        assert!(m.is_new(&packet(40123, SYN), None, 63000 + CONNECTION_WINDOW_MS + 1));
    }

    #[test]
    fn refused_connects_from_one_bound_port_count_each() {
        // The break-it round's case: 50 connects from one source port within
        // a minute, each refused: each has its own initial sequence number.
        let mut m = ConnectionMemory::default();
        let counted = (0..50u32)
            .filter(|i| {
                m.is_new(
                    &packet(40000, Some(TcpSegment::Open { isn: i * 7919 })),
                    None,
                    u64::from(*i),
                )
            })
            .count();
        assert_eq!(counted, 50);
    }

    #[test]
    fn long_lived_connections_count_once_however_many_and_however_idle() {
        // The break-it round's case: 24 audited connections from one pod,
        // written to in turn (a row used to remember 16 source ports and
        // counted 67 and growing).
        let mut m = ConnectionMemory::default();
        let mut counted = 0;
        for port in 0..24u16 {
            counted += usize::from(m.is_new(&packet(50000 + port, SYN), None, 0));
        }
        for round in 1..=20u64 {
            for port in 0..24u16 {
                // Hours apart: an established connection stays one.
                counted += usize::from(m.is_new(&packet(50000 + port, WITHIN), None, round * 3_600_000));
            }
        }
        assert_eq!(counted, 24);
    }

    #[test]
    fn a_connection_opened_before_audit_counts_once_and_a_new_connect_on_its_port_again() {
        let mut m = ConnectionMemory::default();
        assert!(
            m.is_new(&packet(40200, WITHIN), None, 1000),
            "its opening was never seen"
        );
        assert!(!m.is_new(&packet(40200, WITHIN), None, 1001));
        // The port reused by a new connection: its SYN says so.
        assert!(m.is_new(&packet(40200, SYN), None, 1002));
        assert!(!m.is_new(&packet(40200, WITHIN), None, 1003));
        assert!(
            !m.is_new(&packet(40200, SYN), None, 1004),
            "a late retransmit of that SYN"
        );
    }

    #[test]
    fn without_tcp_flags_the_window_decides_and_without_ports_every_packet_counts() {
        let mut m = ConnectionMemory::default();
        assert!(m.is_new(&packet(53, None), None, 0));
        assert!(!m.is_new(&packet(53, None), None, CONNECTION_WINDOW_MS));
        assert!(m.is_new(&packet(53, None), None, 2 * CONNECTION_WINDOW_MS + 1));
        // Another source port, another connection.
        assert!(m.is_new(&packet(54, None), None, 1));
        let mut no_ports = packet(53, None);
        no_ports.source_port = None;
        assert!(m.is_new(&no_ports, None, 0));
        assert!(m.is_new(&no_ports, None, 0));
    }

    #[test]
    fn memory_is_bounded_and_a_forgotten_flow_counts_again_never_less() {
        let mut m = ConnectionMemory::new(100);
        assert!(m.is_new(&packet(1, SYN), None, 0));
        for port in 2..10_002u16 {
            m.is_new(&packet(port, SYN), None, 0);
            assert!(m.len() <= 100, "{}", m.len());
        }
        assert!(m.is_new(&packet(1, WITHIN), None, 1), "forgotten: counted again");
        // The latest flows are remembered.
        assert!(!m.is_new(&packet(10_001, WITHIN), None, 1));
        assert_eq!(m.len(), m.by_interface.values().map(Generations::len).sum::<usize>());
        assert_eq!(ConnectionMemory::new(0).capacity, 2);
        assert!(ConnectionMemory::default().is_empty());
    }

    #[test]
    fn the_same_flow_on_another_interface_is_another_connection() {
        // A forger sending a victim's flow from its own interface neither
        // marks the victim's connection as counted nor is taken for it.
        let mut m = ConnectionMemory::default();
        assert!(m.is_new(&packet(53, None), Some(7), 0));
        assert!(m.is_new(&packet(53, None), Some(8), 1));
        assert!(!m.is_new(&packet(53, None), Some(7), 2));
        assert!(m.is_new(&packet(53, None), None, 3));
    }

    #[test]
    fn a_pod_making_new_flows_as_fast_as_it_can_pushes_out_only_its_own() {
        // The break-it round: random forged sources from one interface made
        // another pod's SYN retransmit 16 s later count as a second connect.
        let mut m = ConnectionMemory::new(1000);
        assert!(m.is_new(&packet(40123, SYN), Some(2), 0));
        let mut long_lived = packet(40200, SYN);
        assert!(m.is_new(&long_lived, Some(3), 0));
        long_lived.tcp = WITHIN;
        for i in 0..100_000u32 {
            let mut forged = packet((i % 60_000) as u16, SYN);
            forged.source = std::net::Ipv4Addr::from(0x0a00_0000 + i).into();
            m.is_new(&forged, Some(1), u64::from(i));
            assert!(m.len() <= 1000);
            if i % 10_000 == 0 {
                assert!(
                    !m.is_new(&long_lived, Some(3), u64::from(i)),
                    "pod 3's connection stays one at {i}"
                );
            }
        }
        assert!(
            !m.is_new(&packet(40123, SYN), Some(2), 31_000),
            "pod 2's retransmit is no new connect"
        );
        assert_eq!(m.len(), m.by_interface.values().map(Generations::len).sum::<usize>());
    }

    #[test]
    fn flows_differ_by_every_part() {
        let mut m = ConnectionMemory::default();
        let base = packet(40000, SYN);
        assert!(m.is_new(&base, None, 0));
        let mut other_dst = base;
        other_dst.destination = "192.168.50.11".parse().unwrap();
        let mut other_dport = base;
        other_dport.destination_port = Some(443);
        let mut other_src = base;
        other_src.source = "10.0.1.3".parse().unwrap();
        for h in [other_dst, other_dport, other_src] {
            assert!(m.is_new(&h, None, 0), "{h:?}");
        }
        assert!(!m.is_new(&base, None, 0));
    }
}
