//! The headers of one logged packet, read from the bytes our log rules copy
//! to the NFLOG group (`LOG_SNAPLEN` of them: the IP header and the ports).
//! Pure and defensive: IPv4 with options, IPv6 with extension headers,
//! fragments, protocols without ports, truncated or garbage input. An IP
//! header that cannot be read is an error; ports that were cut off or that
//! the packet does not have are `None` (the attempt still counts). Also
//! what makes a packet an *answer* to one sent to its source (a TCP reset
//! or SYN+ACK, an ICMP error or reply), never an attempt: the reader
//! ignores answers, and `nft_answers` keeps them from the log rules.

use super::nft_model::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, TCP_FLAGS_OFFSET, TCP_FLAG_ACK, TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN,
};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Transport protocol of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Any other IP protocol number (ICMP 1, SCTP 132, ICMPv6 58, ...).
    Other(u8),
}

impl Protocol {
    fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            n => Protocol::Other(n),
        }
    }

    /// `tcp`, `udp`, `icmp`, `ipv6-icmp`, `sctp`, else `proto-N`.
    pub fn name(self) -> String {
        match self {
            Protocol::Tcp => "tcp".into(),
            Protocol::Udp => "udp".into(),
            Protocol::Other(1) => "icmp".into(),
            Protocol::Other(58) => "ipv6-icmp".into(),
            Protocol::Other(132) => "sctp".into(),
            Protocol::Other(n) => format!("proto-{n}"),
        }
    }

    /// Whether the first four bytes of its header are the source and destination ports.
    fn has_ports(self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Udp | Protocol::Other(132) | Protocol::Other(33)
        )
    }
}

impl From<Protocol> for String {
    fn from(p: Protocol) -> String {
        p.name()
    }
}

impl TryFrom<String> for Protocol {
    type Error = String;
    fn try_from(s: String) -> Result<Protocol, String> {
        Ok(match s.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Other(1),
            "ipv6-icmp" => Protocol::Other(58),
            "sctp" => Protocol::Other(132),
            other => Protocol::Other(
                other
                    .strip_prefix("proto-")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("unknown protocol '{other}'"))?,
            ),
        })
    }
}

/// TCP flags (`nft_model::TCP_FLAG_*`) that make a segment an *answer*
/// to a packet sent to its source: any reset, or a SYN+ACK (a listening
/// socket's reply to a SYN). Never the start of a pod's own connection: a
/// connect begins with a SYN without ACK, and Linux drops a SYN carrying a
/// reset. A pod answers whatever reaches it, including packets forged
/// "from the apiserver" by another pod (a break-it find: each reflected
/// reset was logged as the victim's attempt and spent its per-source
/// allowance). So on nftables answers get their chain's verdict ahead of
/// the log rules (`nft_answers`), and the daemon ignores any answer that
/// reaches it (reason `answer`). The block itself applies to them all the
/// same.
pub const ANSWER_RESET: u8 = TCP_FLAG_RST;
pub const ANSWER_SYN_ACK: u8 = TCP_FLAG_SYN | TCP_FLAG_ACK;

/// Whether TCP `flags` make a segment an answer (see [`ANSWER_RESET`]).
pub fn is_tcp_answer(flags: u8) -> bool {
    flags & ANSWER_RESET != 0 || flags & ANSWER_SYN_ACK == ANSWER_SYN_ACK
}

/// ICMP (IPv4) types that answer a packet: echo reply, destination
/// unreachable, time exceeded, parameter problem, timestamp reply (Linux
/// answers timestamp requests).
pub const ICMP_ANSWERS: [u8; 5] = [0, 3, 11, 12, 14];
/// ICMPv6 types that answer a packet: destination unreachable, packet too
/// big, time exceeded, parameter problem, echo reply.
pub const ICMPV6_ANSWERS: [u8; 5] = [1, 2, 3, 4, 129];

/// What one logged packet says about the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub protocol: Protocol,
    /// None: not a protocol with ports, a later fragment, or cut off.
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    /// What the TCP header says of the connection (None: not TCP, or its
    /// flags were not copied).
    pub tcp: Option<TcpSegment>,
    /// The packet answers one sent to its source (a TCP reset or SYN+ACK,
    /// an ICMP error or echo reply: [`is_tcp_answer`]): never an
    /// attempt of its own.
    pub answer: bool,
    /// A fragment after the first (its first carries the headers and is
    /// the attempt, if any); the reader ignores it unless it is TCP (a TCP
    /// stack never fragments: the pod crafted it).
    pub later_fragment: bool,
}

/// A TCP segment's place in its connection, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpSegment {
    /// SYN without ACK: a connection being opened, with its initial sequence
    /// number (a retransmitted SYN carries the same one, a new connect from
    /// the same port another).
    Open { isn: u32 },
    /// Any other segment: part of a connection already open; `data`: it
    /// carries payload or a FIN (both take sequence space: only a
    /// connection the pod opened sends them; a bare ACK may be an answer,
    /// see `core::connections`).
    Within { data: bool },
}

/// Bytes of the TCP header up to and including its flags.
const TCP_FLAGS_END: usize = 14;

/// Why a payload is not an IP packet we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    Empty,
    /// Neither IPv4 nor IPv6 (the version nibble).
    NotIp(u8),
    /// The IP header is longer than what was copied, or says it is shorter than possible.
    BadHeader,
}

impl PacketError {
    /// Metric label: why a logged packet was ignored.
    pub fn reason(self) -> &'static str {
        match self {
            PacketError::Empty => "no_payload",
            PacketError::NotIp(_) => "not_ip",
            PacketError::BadHeader => "truncated",
        }
    }
}

/// Reads the IP header (and the ports) of a logged packet.
pub fn parse_headers(p: &[u8]) -> Result<Headers, PacketError> {
    match p.first().map(|b| b >> 4) {
        None => Err(PacketError::Empty),
        Some(4) => parse_v4(p),
        Some(6) => parse_v6(p),
        Some(v) => Err(PacketError::NotIp(v)),
    }
}

fn ports(protocol: Protocol, transport: Option<&[u8]>) -> (Option<u16>, Option<u16>) {
    match transport {
        Some(t) if protocol.has_ports() && t.len() >= 4 => (
            Some(u16::from_be_bytes([t[0], t[1]])),
            Some(u16::from_be_bytes([t[2], t[3]])),
        ),
        _ => (None, None),
    }
}

/// Whether the transport header says the packet answers another (see
/// `Headers::answer`); `icmp`: the family's ICMP, 1 (IPv4) or 58 (IPv6).
fn is_answer(protocol: Protocol, transport: Option<&[u8]>, icmp: u8) -> bool {
    let Some(t) = transport else { return false };
    match protocol {
        Protocol::Tcp => t.get(TCP_FLAGS_OFFSET as usize).is_some_and(|f| is_tcp_answer(*f)),
        Protocol::Other(p) if p == icmp => {
            let answers: &[u8] = if icmp == IPPROTO_ICMP {
                &ICMP_ANSWERS
            } else {
                &ICMPV6_ANSWERS
            };
            t.first().is_some_and(|ty| answers.contains(ty))
        }
        _ => false,
    }
}

/// `transport_len`: the bytes of the packet from the transport header on,
/// by its IP header's length field.
fn tcp_segment(protocol: Protocol, transport: Option<&[u8]>, transport_len: usize) -> Option<TcpSegment> {
    let t = transport.filter(|t| protocol == Protocol::Tcp && t.len() >= TCP_FLAGS_END)?;
    let flags = t[TCP_FLAGS_OFFSET as usize];
    let header_len = usize::from(t[12] >> 4) * 4;
    Some(if flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0 {
        TcpSegment::Open {
            isn: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        }
    } else {
        // A length field of 0 (IPv6 jumbograms, BIG TCP): a large segment.
        TcpSegment::Within {
            data: transport_len == 0 || transport_len > header_len || flags & TCP_FLAG_FIN != 0,
        }
    })
}

fn parse_v4(p: &[u8]) -> Result<Headers, PacketError> {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return Err(PacketError::BadHeader);
    }
    let protocol = Protocol::from_number(p[9]);
    let fragment_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    let transport = (fragment_offset == 0).then(|| &p[ihl..]);
    let (source_port, destination_port) = ports(protocol, transport);
    let transport_len = usize::from(u16::from_be_bytes([p[2], p[3]])).saturating_sub(ihl);
    Ok(Headers {
        source: IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])),
        destination: IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
        protocol,
        source_port,
        destination_port,
        tcp: tcp_segment(protocol, transport, transport_len),
        answer: is_answer(protocol, transport, IPPROTO_ICMP),
        later_fragment: fragment_offset != 0,
    })
}

fn v6(b: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    IpAddr::V6(Ipv6Addr::from(a))
}

// IPv6 extension headers that may come before the transport header.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;
/// How many extension headers we walk before giving up on the ports.
const MAX_EXTENSIONS: usize = 8;

fn parse_v6(p: &[u8]) -> Result<Headers, PacketError> {
    if p.len() < 40 {
        return Err(PacketError::BadHeader);
    }
    let (source, destination) = (v6(&p[8..24]), v6(&p[24..40]));
    let mut next = p[6];
    let mut rest = Some(&p[40..]);
    let mut later_fragment = false;
    for _ in 0..MAX_EXTENSIONS {
        let Some(r) = rest else { break };
        let len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => r.get(1).map(|l| (usize::from(*l) + 1) * 8),
            AUTH => r.get(1).map(|l| (usize::from(*l) + 2) * 4),
            FRAGMENT => {
                // A later fragment carries no transport header.
                let later = r.len() >= 4 && u16::from_be_bytes([r[2], r[3]]) & 0xfff8 != 0;
                later_fragment |= later;
                (!later).then_some(8)
            }
            _ => break,
        };
        match (len, r.first()) {
            (Some(len), Some(n)) if r.len() >= len => {
                next = *n;
                rest = Some(&r[len..]);
            }
            // Cut off inside the extension headers, or a later fragment: the
            // transport protocol is the last one named.
            (_, n) => {
                if let Some(n) = n.filter(|_| next == FRAGMENT) {
                    next = *n;
                }
                rest = None;
            }
        }
    }
    let protocol = Protocol::from_number(next);
    let (source_port, destination_port) = ports(protocol, rest);
    // The transport header's offset in `p`, and the packet's length by its payload length field.
    let transport_len = rest.map_or(0, |r| {
        let total = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
        total.saturating_sub(p.len() - r.len())
    });
    Ok(Headers {
        source,
        destination,
        protocol,
        source_port,
        destination_port,
        tcp: tcp_segment(protocol, rest, transport_len),
        answer: is_answer(protocol, rest, IPPROTO_ICMPV6),
        later_fragment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4 header (with `options` words) + `transport` bytes.
    fn v4(proto: u8, options: usize, frag: u16, transport: &[u8]) -> Vec<u8> {
        let mut p = vec![0x40 | (5 + options as u8), 0, 0, 0, 0, 0];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0, 10, 0, 1, 2, 192, 168, 50, 10]);
        p.extend(std::iter::repeat_n(1u8, options * 4)); // NOP options
        p.extend_from_slice(transport);
        p
    }

    fn v6hdr(next: u8) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        p.extend_from_slice(&"fd00:10:0:1::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00:50::10".parse::<Ipv6Addr>().unwrap().octets());
        p
    }

    const TCP: [u8; 20] = [
        0xa8, 0xca, 0x15, 0x43, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 2, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn ipv4_tcp_names_both_ends() {
        let h = parse_headers(&v4(6, 0, 0x4000, &TCP)).unwrap();
        assert_eq!(h.source, "10.0.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(h.destination, "192.168.50.10".parse::<IpAddr>().unwrap());
        assert_eq!(h.protocol, Protocol::Tcp);
        assert_eq!((h.source_port, h.destination_port), (Some(43210), Some(5443)));
        assert_eq!(
            h.tcp,
            Some(TcpSegment::Open { isn: 1 }),
            "a SYN and its sequence number"
        );
    }

    #[test]
    fn resets_and_syn_acks_are_answers_and_a_connect_is_not() {
        let (fin, syn, rst, psh, ack) = (0x01, 0x02, 0x04, 0x08, 0x10);
        for f in [
            rst,
            rst | ack,
            syn | ack,
            syn | ack | psh,
            syn | rst,
            fin | rst | ack,
            0xff,
        ] {
            assert!(is_tcp_answer(f), "{f:#x}");
        }
        for f in [syn, ack, psh | ack, fin | ack, fin, 0, syn | fin, syn | psh] {
            assert!(!is_tcp_answer(f), "{f:#x}");
        }
    }

    #[test]
    fn resets_syn_acks_icmp_errors_and_echo_replies_are_answers() {
        let tcp = |flags: u8| {
            let mut t = TCP;
            t[13] = flags;
            parse_headers(&v4(6, 0, 0, &t)).unwrap().answer
        };
        assert!(tcp(0x04) && tcp(0x14) && tcp(0x12));
        assert!(!tcp(0x02) && !tcp(0x10) && !tcp(0x18) && !tcp(0x11));
        let icmp = |ty: u8| parse_headers(&v4(1, 0, 0, &[ty, 0, 0, 0])).unwrap().answer;
        assert!(icmp(0) && icmp(3) && icmp(11) && icmp(12) && icmp(14));
        assert!(!icmp(8) && !icmp(13));
        let icmpv6 = |ty: u8| {
            let mut p = v6hdr(58);
            p.extend_from_slice(&[ty, 0, 0, 0]);
            parse_headers(&p).unwrap().answer
        };
        assert!(icmpv6(1) && icmpv6(2) && icmpv6(3) && icmpv6(4) && icmpv6(129));
        assert!(!icmpv6(128) && !icmpv6(0));
        // Each family's own ICMP only: protocol 58 in an IPv4 header, 1 in IPv6.
        assert!(!parse_headers(&v4(58, 0, 0, &[1, 0, 0, 0])).unwrap().answer);
        let mut p = v6hdr(1);
        p.extend_from_slice(&[0, 0, 0, 0]);
        assert!(!parse_headers(&p).unwrap().answer);
        // Cut off before the flags, a later fragment, UDP: not known to answer.
        assert!(!parse_headers(&v4(6, 0, 0, &TCP[..13])).unwrap().answer);
        let mut rst = TCP;
        rst[13] = 0x04;
        assert!(!parse_headers(&v4(6, 0, 0x0010, &rst)).unwrap().answer);
        assert!(!parse_headers(&v4(17, 0, 0, &rst)).unwrap().answer);
    }

    #[test]
    fn tcp_flags_tell_an_opening_from_the_rest_of_a_connection() {
        let with_flags = |flags: u8| {
            let mut t = TCP;
            t[13] = flags;
            parse_headers(&v4(6, 0, 0, &t)).unwrap().tcp
        };
        assert_eq!(with_flags(TCP_FLAG_SYN), Some(TcpSegment::Open { isn: 1 }));
        // SYN-ACK, ACK, PSH-ACK, FIN-ACK, RST: within a connection (the
        // helper leaves the length field 0: taken as a large segment).
        for flags in [0x12, 0x10, 0x18, 0x11, 0x04] {
            assert_eq!(with_flags(flags), Some(TcpSegment::Within { data: true }), "{flags:#x}");
        }
        // The IP header's length says whether the segment carries data.
        let mut p = v4(6, 0, 0, &TCP);
        p[9] = 6;
        p[20 + 13] = 0x18;
        for (total, data) in [(40u16, false), (41, true), (1500, true), (0, true)] {
            p[2..4].copy_from_slice(&total.to_be_bytes());
            assert_eq!(
                parse_headers(&p).unwrap().tcp,
                Some(TcpSegment::Within { data }),
                "{total}"
            );
        }
        let mut p = v6hdr(6);
        p.extend_from_slice(&TCP);
        p[40 + 13] = 0x10;
        for (payload, data) in [(20u16, false), (21, true)] {
            p[4..6].copy_from_slice(&payload.to_be_bytes());
            assert_eq!(
                parse_headers(&p).unwrap().tcp,
                Some(TcpSegment::Within { data }),
                "{payload}"
            );
        }
        // A FIN takes sequence space as data does: only an open connection
        // sends one, never an answer to a forged packet.
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[40 + 13] = TCP_FLAG_FIN | TCP_FLAG_ACK;
        assert_eq!(parse_headers(&p).unwrap().tcp, Some(TcpSegment::Within { data: true }));
        // Flags cut off, a later fragment, UDP: nothing said.
        assert_eq!(parse_headers(&v4(6, 0, 0, &TCP[..13])).unwrap().tcp, None);
        assert_eq!(parse_headers(&v4(6, 0, 0x0010, &TCP)).unwrap().tcp, None);
        assert_eq!(parse_headers(&v4(17, 0, 0, &TCP)).unwrap().tcp, None);
        let mut p = v6hdr(6);
        p.extend_from_slice(&TCP);
        assert_eq!(parse_headers(&p).unwrap().tcp, Some(TcpSegment::Open { isn: 1 }));
    }

    #[test]
    fn ipv4_options_move_the_ports() {
        // 40 bytes of options (IHL 15): the ports sit at 60.
        let h = parse_headers(&v4(17, 10, 0, &[0, 53, 0x01, 0xbb])).unwrap();
        assert_eq!(h.protocol, Protocol::Udp);
        assert_eq!((h.source_port, h.destination_port), (Some(53), Some(443)));
    }

    #[test]
    fn ipv4_truncated_or_lying_headers() {
        assert_eq!(parse_headers(&v4(6, 0, 0, &TCP)[..19]), Err(PacketError::BadHeader));
        // IHL says 60 bytes, 40 were copied.
        assert_eq!(parse_headers(&v4(6, 10, 0, &[])[..40]), Err(PacketError::BadHeader));
        let mut short_ihl = v4(6, 0, 0, &TCP);
        short_ihl[0] = 0x44;
        assert_eq!(parse_headers(&short_ihl), Err(PacketError::BadHeader));
        // Ports cut off: addresses still read.
        let h = parse_headers(&v4(6, 0, 0, &TCP[..3])).unwrap();
        assert_eq!((h.source_port, h.destination_port), (None, None));
        assert_eq!(h.protocol, Protocol::Tcp);
    }

    #[test]
    fn ipv4_later_fragments_and_icmp_have_no_ports() {
        let h = parse_headers(&v4(6, 0, 0x0010, &TCP)).unwrap();
        assert_eq!(h.destination_port, None);
        let h = parse_headers(&v4(1, 0, 0, &[8, 0, 0, 0, 0, 1, 0, 1])).unwrap();
        assert_eq!((h.protocol, h.destination_port), (Protocol::Other(1), None));
        assert_eq!(h.protocol.name(), "icmp");
    }

    #[test]
    fn ipv6_plain_and_with_extension_headers() {
        let mut p = v6hdr(6);
        p.extend_from_slice(&TCP);
        let h = parse_headers(&p).unwrap();
        assert_eq!(h.source, "fd00:10:0:1::2".parse::<IpAddr>().unwrap());
        assert_eq!(h.destination, "fd00:50::10".parse::<IpAddr>().unwrap());
        assert_eq!((h.protocol, h.destination_port), (Protocol::Tcp, Some(5443)));

        // Hop-by-hop (8 bytes) then destination options (16 bytes) then UDP.
        let mut p = v6hdr(HOP_BY_HOP);
        p.extend_from_slice(&[DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x30, 0x39, 0x01, 0xbb, 0, 8, 0, 0]);
        let h = parse_headers(&p).unwrap();
        assert_eq!(
            (h.protocol, h.source_port, h.destination_port),
            (Protocol::Udp, Some(12345), Some(443))
        );
    }

    #[test]
    fn ipv6_fragments_truncation_and_icmp() {
        // First fragment: ports read.
        let mut p = v6hdr(FRAGMENT);
        p.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 9]);
        p.extend_from_slice(&TCP);
        assert_eq!(parse_headers(&p).unwrap().destination_port, Some(5443));
        // Later fragment: protocol known, no ports.
        let mut p = v6hdr(FRAGMENT);
        p.extend_from_slice(&[6, 0, 0x05, 0x00, 0, 0, 0, 9]);
        p.extend_from_slice(&TCP);
        let h = parse_headers(&p).unwrap();
        assert_eq!((h.protocol, h.destination_port), (Protocol::Tcp, None));
        // Cut off inside an extension header: addresses still read.
        let mut p = v6hdr(HOP_BY_HOP);
        p.extend_from_slice(&[6, 3]);
        let h = parse_headers(&p).unwrap();
        assert_eq!((h.protocol, h.destination_port), (Protocol::Other(HOP_BY_HOP), None));
        // Shorter than the fixed header.
        assert_eq!(parse_headers(&v6hdr(6)[..39]), Err(PacketError::BadHeader));
        let mut p = v6hdr(58);
        p.extend_from_slice(&[128, 0, 0, 0]);
        let h = parse_headers(&p).unwrap();
        assert_eq!((h.protocol.name().as_str(), h.source_port), ("ipv6-icmp", None));
    }

    #[test]
    fn garbage_is_refused_or_read_without_panicking() {
        assert_eq!(parse_headers(&[]), Err(PacketError::Empty));
        assert_eq!(parse_headers(&[0x20; 40]), Err(PacketError::NotIp(2)));
        assert_eq!(PacketError::NotIp(2).reason(), "not_ip");
        // Every prefix and a spread of byte patterns: never a panic.
        let mut p = v6hdr(AUTH);
        p.extend_from_slice(&[HOP_BY_HOP, 255, 0, 0, 0, 0, 0, 0]);
        for n in 0..=p.len() {
            let _ = parse_headers(&p[..n]);
        }
        for seed in 0u32..2000 {
            let bytes: Vec<u8> = (0..(seed % 97))
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8)
                .collect();
            let mut b = bytes.clone();
            if let Some(first) = b.first_mut() {
                *first = if seed % 2 == 0 { 0x45 } else { 0x60 } | (*first & 0x0f);
            }
            let _ = parse_headers(&b);
            let _ = parse_headers(&bytes);
        }
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Other(1),
            Protocol::Other(58),
            Protocol::Other(132),
            Protocol::Other(47),
        ] {
            assert_eq!(Protocol::try_from(p.name()), Ok(p));
        }
        assert!(Protocol::try_from("bogus".to_string()).is_err());
    }
}
