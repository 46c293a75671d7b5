//! The route the kernel picks towards an address in the calling thread's
//! network namespace (as `ip route get`), asked over an rtnetlink socket
//! (RTM_GETROUTE; no privilege needed, no process spawned). `verify` uses its
//! gateway as the default positive control: the pod's next hop is the node,
//! an address the policy does not block. Building the request and parsing the
//! answer are pure (`request`, `parse`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_VIA: u16 = 18;
const RTN_LOCAL: u8 = 2;

/// The route towards one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The next hop, when the address is not on-link.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel prefers.
    pub source: Option<IpAddr>,
    /// The address is one of this namespace's own.
    pub local: bool,
    /// The outgoing interface (the scope of an IPv6 link-local gateway).
    pub oif: Option<u32>,
}

/// A route look-up the kernel refused: there is no usable route towards the address. The
/// same errors come back from `connect()` (a blackhole route makes it fail with EINVAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// ENETUNREACH: no route at all.
    NoRoute,
    /// EINVAL: a `blackhole` route (the kernel discards what is sent there).
    Blackhole,
    /// EACCES: a `prohibit` route.
    Prohibit,
    /// EHOSTUNREACH: an `unreachable` route.
    Unreachable,
}

impl Unusable {
    /// The kind of route a look-up error means, if it means one.
    pub fn of(e: &io::Error) -> Option<Unusable> {
        match e.raw_os_error()? {
            libc::ENETUNREACH => Some(Unusable::NoRoute),
            libc::EINVAL => Some(Unusable::Blackhole),
            libc::EACCES | libc::EPERM => Some(Unusable::Prohibit),
            libc::EHOSTUNREACH => Some(Unusable::Unreachable),
            _ => None,
        }
    }

    /// Plain words: "no route towards IP", "a blackhole route towards IP (EINVAL)"...
    pub fn towards(self, ip: IpAddr) -> String {
        match self {
            Unusable::NoRoute => format!("no route towards {ip}"),
            Unusable::Blackhole => {
                format!("a blackhole route towards {ip} (EINVAL: the kernel discards what is sent there)")
            }
            Unusable::Prohibit => format!("a prohibit route towards {ip} (EACCES)"),
            Unusable::Unreachable => format!("an unreachable route towards {ip} (EHOSTUNREACH)"),
        }
    }
}

/// Why `lookup` found no route to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The kernel has no usable route.
    Unusable(Unusable),
    /// The look-up itself failed (the error, in words).
    Failed(String),
}

/// `get`, with its errors sorted: no usable route (which kind) or a failed look-up.
pub fn lookup(dst: IpAddr) -> Result<Route, LookupError> {
    get(dst).map_err(|e| match Unusable::of(&e) {
        Some(u) => LookupError::Unusable(u),
        None => LookupError::Failed(e.to_string()),
    })
}

/// The RTM_GETROUTE request for `dst`.
pub fn request(dst: IpAddr, seq: u32) -> Vec<u8> {
    let (family, addr): (u8, Vec<u8>) = match dst {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let attr_len = 4 + addr.len();
    let len = NLMSG_HDRLEN + RTMSG_LEN + attr_len;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    b.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    b.extend_from_slice(&[family, (addr.len() * 8) as u8, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    b.extend_from_slice(&RTA_DST.to_ne_bytes());
    b.extend_from_slice(&addr);
    b
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into()),
        16 => Some(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into()),
        _ => None,
    }
}

/// Parses the kernel's answer: the route, or the error it gave (e.g. ENETUNREACH: no route).
pub fn parse(buf: &[u8]) -> io::Result<Route> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink answer: {what}"));
    if buf.len() < NLMSG_HDRLEN {
        return Err(bad("too short"));
    }
    let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(buf.len());
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    let body = &buf[NLMSG_HDRLEN.min(len)..len];
    match kind {
        NLMSG_ERROR => {
            let errno = body
                .get(..4)
                .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                .ok_or_else(|| bad("truncated error"))?;
            Err(io::Error::from_raw_os_error(-errno))
        }
        RTM_NEWROUTE if body.len() >= RTMSG_LEN => {
            let mut route = Route {
                gateway: None,
                source: None,
                local: body[7] == RTN_LOCAL,
                oif: None,
            };
            let mut attrs = &body[RTMSG_LEN..];
            while attrs.len() >= 4 {
                let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                let akind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                let v = &attrs[4..alen];
                match akind {
                    RTA_GATEWAY => route.gateway = ip_from(v),
                    // struct rtvia: u16 family, then the address (an IPv4 route via an IPv6 hop).
                    RTA_VIA if v.len() > 2 => route.gateway = ip_from(&v[2..]),
                    RTA_PREFSRC => route.source = ip_from(v),
                    RTA_OIF if v.len() == 4 => route.oif = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])),
                    _ => {}
                }
                attrs = &attrs[((alen + 3) & !3).min(attrs.len())..];
            }
            Ok(route)
        }
        _ => Err(bad("unexpected message")),
    }
}

/// Asks the kernel of the calling thread's namespace for the route towards `dst`.
pub fn get(dst: IpAddr) -> io::Result<Route> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: setsockopt with a timeval of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let req = request(dst, 1);
    // SAFETY: `req` is a valid buffer of `req.len()` bytes; the kernel is the default peer.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse(&buf[..n as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(kind: u16, rtm_type: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, rtm_type, 0, 0, 0, 0];
        for (k, v) in attrs {
            body.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&k.to_ne_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut b = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn the_request_names_the_destination() {
        let r = request("192.168.50.10".parse().unwrap(), 7);
        assert_eq!(r.len(), 16 + 12 + 8);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), RTM_GETROUTE);
        assert_eq!(&r[r.len() - 4..], &[192, 168, 50, 10]);
        assert_eq!(r[17], 32);
        let r = request("fd00::1".parse().unwrap(), 7);
        assert_eq!((r.len(), r[17]), (16 + 12 + 20, 128));
    }

    #[test]
    fn gateway_source_and_local_are_read() {
        let b = answer(
            RTM_NEWROUTE,
            1,
            &[
                (RTA_DST, &[192, 168, 50, 10]),
                (RTA_GATEWAY, &[10, 0, 1, 1]),
                (RTA_PREFSRC, &[10, 0, 1, 2]),
                (RTA_OIF, &3u32.to_ne_bytes()),
            ],
        );
        assert_eq!(
            parse(&b).unwrap(),
            Route {
                gateway: Some("10.0.1.1".parse().unwrap()),
                source: Some("10.0.1.2".parse().unwrap()),
                local: false,
                oif: Some(3),
            }
        );
        let mut via = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        via.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        let b = answer(RTM_NEWROUTE, 1, &[(RTA_VIA, &via)]);
        assert_eq!(parse(&b).unwrap().gateway, Some("fe80::1".parse().unwrap()));
        let on_link = parse(&answer(RTM_NEWROUTE, RTN_LOCAL, &[])).unwrap();
        assert_eq!((on_link.gateway, on_link.local), (None, true));
    }

    #[test]
    fn a_kernel_error_is_returned_as_is() {
        let b = answer(NLMSG_ERROR, 0, &[]);
        let mut b = b[..NLMSG_HDRLEN].to_vec();
        b.extend_from_slice(&(-libc::ENETUNREACH).to_ne_bytes());
        let len = b.len() as u32;
        b[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse(&b).unwrap_err().raw_os_error(), Some(libc::ENETUNREACH));
        assert!(parse(&[0; 4]).is_err());
    }

    #[test]
    fn unusable_routes_are_named_by_their_error() {
        let ip: IpAddr = "192.168.50.10".parse().unwrap();
        let of = |code| Unusable::of(&io::Error::from_raw_os_error(code));
        assert_eq!(of(libc::ENETUNREACH), Some(Unusable::NoRoute));
        assert_eq!(of(libc::EINVAL), Some(Unusable::Blackhole));
        assert_eq!(of(libc::EACCES), Some(Unusable::Prohibit));
        assert_eq!(of(libc::EHOSTUNREACH), Some(Unusable::Unreachable));
        assert_eq!(of(libc::ENOBUFS), None);
        assert_eq!(Unusable::NoRoute.towards(ip), "no route towards 192.168.50.10");
        assert!(Unusable::Blackhole
            .towards(ip)
            .starts_with("a blackhole route towards 192.168.50.10"));
    }

    #[test]
    fn loopback_is_local_and_has_no_gateway() {
        let r = get("127.0.0.1".parse().unwrap()).unwrap();
        assert!(r.local && r.gateway.is_none(), "{r:?}");
    }
}
