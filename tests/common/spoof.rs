//! A pod that forges its source address: TCP SYNs with chosen IPv4 sources,
//! sent from a raw socket (`IPPROTO_RAW`: the header is ours; the kernel
//! fills in the IP checksum and length). For tests that fill the kernel's
//! per-source log meters the way a pod with CAP_NET_RAW on a CNI without
//! anti-spoofing can.

use super::Netns;
use std::io;
use std::net::Ipv4Addr;

/// The 16-bit ones' complement sum of `data` (RFC 1071), folded.
fn ones_complement(mut sum: u32, data: &[u8]) -> u32 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// One IPv4 TCP SYN from `src` to `dst`:`port` (no options).
pub fn syn_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, port: u16) -> [u8; 40] {
    syn_packet_with_seq(src, dst, sport, port, 0x1234_5678)
}

/// `syn_packet` with the sequence number `seq`.
pub fn syn_packet_with_seq(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, port: u16, seq: u32) -> [u8; 40] {
    tcp_packet(src, dst, sport, port, 0x02, seq, 0, &[])
        .try_into()
        .expect("40 bytes: no payload")
}

/// One IPv4 TCP segment (no options) from `src`:`sport` to `dst`:`port`
/// with `flags`, sequence number `seq`, acknowledging `ack`, carrying
/// `payload`, with its checksums.
#[allow(clippy::too_many_arguments)]
pub fn tcp_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    port: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let total = 40 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45; // version 4, 5 words of header
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64; // TTL
    p[9] = libc::IPPROTO_TCP as u8;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let tcp = &mut p[20..];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4; // 5 words of header
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..].copy_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
    pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    let sum = ones_complement(ones_complement(0, &pseudo), &p[20..]);
    p[36..38].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

/// Sends one SYN from each of `sources` to `dst`:`port`, from inside `ns`;
/// returns how many the kernel took. Fails if none could be sent.
pub fn send_spoofed_syns(ns: &Netns, sources: &[Ipv4Addr], dst: Ipv4Addr, port: u16) -> io::Result<usize> {
    let packets = sources
        .iter()
        .enumerate()
        .map(|(i, src)| syn_packet(*src, dst, 20_000 + (i % 40_000) as u16, port));
    send_packets(ns, dst, packets)
}

/// Sends one SYN from `src`:`sport` (an address that is not `ns`'s) to
/// each of `dst`:`ports`, from inside `ns`: what a pod forging packets
/// "from the apiserver" to another pod sends. Returns how many the kernel took.
pub fn send_syns_from(ns: &Netns, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, ports: &[u16]) -> io::Result<usize> {
    let packets = ports.iter().map(|p| syn_packet(src, dst, sport, *p));
    send_packets(ns, dst, packets)
}

/// Sends SYNs from `src`:`sport` to `dst`:`port`, each with another
/// sequence number, from inside `ns` until `until`: a SYN flood on one
/// flow, forged "from the apiserver" to another pod's listening port. Its
/// half-open socket answers each SYN after the first (out of its window)
/// with a bare ACK (unless `net.ipv4.tcp_invalid_ratelimit` holds them back).
/// Returns how many the kernel took.
pub fn send_syn_flood_from(
    ns: &Netns,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    port: u16,
    until: std::time::Instant,
) -> io::Result<usize> {
    let packets = until_deadline(until).map(|i| syn_packet_with_seq(src, dst, sport, port, scatter(i)));
    send_packets(ns, dst, packets)
}

/// Sends one-byte PSH+ACK segments from `src`:`sport` to `dst`:`port`,
/// each at another (out-of-window) sequence number, from inside `ns` until
/// `until`: data forged "from the apiserver" onto another pod's connection,
/// which answers each with a bare ACK on that connection's own flow (Linux
/// does not rate-limit those for segments carrying data). Returns how many
/// the kernel took.
pub fn send_out_of_window_data_from(
    ns: &Netns,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    port: u16,
    until: std::time::Instant,
) -> io::Result<usize> {
    let packets = until_deadline(until).map(|i| tcp_packet(src, dst, sport, port, 0x18, scatter(i), i, b"x"));
    send_packets(ns, dst, packets)
}

/// 0, 1, 2, ... until `until` (the clock read every 256).
fn until_deadline(until: std::time::Instant) -> impl Iterator<Item = u32> {
    (0u32..).take_while(move |i| i % 256 != 0 || std::time::Instant::now() < until)
}

/// `i` spread over the sequence space (a new sequence number each time).
fn scatter(i: u32) -> u32 {
    i.wrapping_mul(0x9e37_79b9)
}

/// Sends one ICMP echo request from `src` (an address that is not `ns`'s)
/// to `dst` for each of `ids`, each `size` bytes long (at least 28), from
/// inside `ns`. Returns how many the kernel took.
pub fn send_pings_from(ns: &Netns, src: Ipv4Addr, dst: Ipv4Addr, ids: &[u16], size: u16) -> io::Result<usize> {
    let packets = ids.iter().map(|id| echo_request(src, dst, *id, size));
    send_packets(ns, dst, packets)
}

/// One IPv4 ICMP echo request from `src` to `dst` with identifier `id`,
/// `size` bytes long in all (0x5a after the ICMP header: the kernel's fast
/// payload path reads a later fragment's data as a transport header, and
/// zeros would read as an echo reply).
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, size: u16) -> Vec<u8> {
    let size = size.max(28);
    let mut p = vec![0x5au8; usize::from(size)];
    p[..28].fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&size.to_be_bytes());
    p[8] = 64;
    p[9] = libc::IPPROTO_ICMP as u8;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20] = 8; // echo request
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&1u16.to_be_bytes());
    let sum = ones_complement(0, &p[20..]);
    p[22..24].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

/// Sends `n` crafted IPv4 first fragments (more fragments set, offset 0)
/// from `src` to `dst`:`port`, each carrying only the first 8 bytes of a
/// TCP header (ports and sequence number; the flags would be in the next
/// fragment), from inside `ns`: how a pod could hide a conversation from
/// every rule that reads the TCP flags. Returns how many the kernel took.
pub fn send_tcp_tiny_first_fragments(ns: &Netns, src: Ipv4Addr, dst: Ipv4Addr, port: u16, n: u16) -> io::Result<usize> {
    let packets = (0..n).map(|i| {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[4..6].copy_from_slice(&i.to_be_bytes()); // a datagram each
        p[6] = 0x20; // more fragments, offset 0
        p[8] = 64;
        p[9] = libc::IPPROTO_TCP as u8;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..22].copy_from_slice(&(41_000 + i).to_be_bytes());
        p[22..24].copy_from_slice(&port.to_be_bytes());
        p[24..28].copy_from_slice(&scatter(u32::from(i)).to_be_bytes());
        p
    });
    send_packets(ns, dst, packets)
}

/// Sends `n` crafted IPv4 TCP fragments after the first (offset 1480) from
/// `src` to `dst`, from inside `ns`, whose data reads as a TCP header to
/// `port` with SYN set where a first fragment's would be. Returns how many
/// the kernel took.
pub fn send_tcp_later_fragments(ns: &Netns, src: Ipv4Addr, dst: Ipv4Addr, port: u16, n: u16) -> io::Result<usize> {
    let packets = (0..n).map(|i| {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[4..6].copy_from_slice(&i.to_be_bytes()); // a datagram each
        p[6..8].copy_from_slice(&185u16.to_be_bytes()); // offset 185 x 8 bytes, last fragment
        p[8] = 64;
        p[9] = libc::IPPROTO_TCP as u8;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..22].copy_from_slice(&40_000u16.to_be_bytes());
        p[22..24].copy_from_slice(&port.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x02;
        p
    });
    send_packets(ns, dst, packets)
}

/// Sends `packets` (whole IPv4 packets) to `dst` from a raw socket in `ns`.
fn send_packets(
    ns: &Netns,
    dst: Ipv4Addr,
    packets: impl Iterator<Item = impl AsRef<[u8]>> + Send,
) -> io::Result<usize> {
    ns.in_thread(|| -> io::Result<usize> {
        // SAFETY: plain socket(2); the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        let mut sent = 0;
        let mut last_err = None;
        for p in packets {
            let p = p.as_ref();
            // SAFETY: `p` and `to` outlive the call; lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd,
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n == p.len() as isize {
                sent += 1;
            } else {
                last_err = Some(io::Error::last_os_error());
            }
        }
        // SAFETY: `fd` is ours and not used after this.
        unsafe { libc::close(fd) };
        match (sent, last_err) {
            (0, Some(e)) => Err(e),
            _ => Ok(sent),
        }
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_icmp_checksum_verifies() {
        for size in [28, 1401] {
            let p = echo_request(Ipv4Addr::new(192, 168, 50, 10), Ipv4Addr::new(10, 0, 2, 2), 7, size);
            assert_eq!(ones_complement(0, &p[20..]), 0xffff);
        }
    }

    #[test]
    fn the_tcp_checksum_verifies() {
        let p = syn_packet(Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(192, 168, 50, 10), 40000, 5443);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        assert_eq!(ones_complement(ones_complement(0, &pseudo), &p[20..]), 0xffff);
    }
}
