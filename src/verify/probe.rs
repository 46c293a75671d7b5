//! One probe: a TCP connect with a timeout, optionally from a bound source
//! address, optionally followed by a TLS handshake. Opening the socket and
//! using it are separate steps, so the socket can be created inside another
//! network namespace (it stays there) and connected from any thread.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::outcome::Outcome;
use super::route::Unusable;

/// Where to connect, and from which local address (None: the kernel picks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub bind: Option<IpAddr>,
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub outcome: Outcome,
    /// Wall time of connect (and handshake).
    pub elapsed: Duration,
}

/// Creates the socket in the calling thread's network namespace and binds it when asked.
pub fn open(t: &Target) -> Result<Socket, Outcome> {
    let domain = match t.addr {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Outcome::Error(format!("cannot create a TCP socket: {e}")))?;
    if let Some(src) = t.bind {
        if src.is_ipv4() != t.addr.is_ipv4() {
            return Err(Outcome::Error(format!(
                "source {src} and apiserver {} are of different IP versions",
                t.addr.ip()
            )));
        }
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0))).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                " (the address is not configured on any interface here)"
            } else {
                ""
            };
            Outcome::Error(format!("cannot bind source address {src}: {e}{hint}"))
        })?;
    }
    Ok(sock)
}

/// Connects `sock` (from `open`) to `t.addr` within `timeout`, then runs a TLS handshake in
/// what is left of it when `tls` is set.
pub fn run(sock: Socket, t: &Target, timeout: Duration, tls: bool) -> Probe {
    let start = Instant::now();
    let deadline = start + timeout;
    let outcome = match sock.connect_timeout(&SockAddr::from(t.addr), timeout) {
        // connect() fails with EINVAL on a blackhole route: name it, it is no probe error.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Outcome::Unreachable(format!(
            "no usable route: the probe's side has {}",
            Unusable::Blackhole.towards(t.addr.ip())
        )),
        Err(e) => Outcome::from_io(&e),
        Ok(()) if !tls => {
            let _ = sock.shutdown(std::net::Shutdown::Both);
            Outcome::Connected
        }
        Ok(()) => super::tls::handshake(TcpStream::from(sock), t.addr.ip(), deadline),
    };
    Probe {
        outcome,
        elapsed: start.elapsed(),
    }
}

/// `open` + `run` in the calling thread's namespace.
pub fn probe(t: &Target, timeout: Duration, tls: bool) -> Probe {
    match open(t) {
        Ok(sock) => run(sock, t, timeout, tls),
        Err(outcome) => Probe {
            outcome,
            elapsed: Duration::ZERO,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn target(addr: SocketAddr) -> Target {
        Target { addr, bind: None }
    }

    #[test]
    fn a_listener_on_loopback_connects() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = probe(&target(l.local_addr().unwrap()), Duration::from_secs(2), false);
        assert_eq!(p.outcome, Outcome::Connected);
    }

    #[test]
    fn a_closed_port_is_refused() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let p = probe(&target(addr), Duration::from_secs(2), false);
        assert_eq!(p.outcome, Outcome::Refused);
    }

    #[test]
    fn a_plain_tcp_server_fails_the_tls_handshake_but_counts_as_reached() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
            let _ = s.shutdown(std::net::Shutdown::Write);
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        let p = probe(&target(addr), Duration::from_secs(2), true);
        server.join().unwrap();
        assert!(matches!(p.outcome, Outcome::TlsFailed(_)), "{:?}", p.outcome);
        assert!(p.outcome.reached());
    }

    #[test]
    fn binding_an_address_that_is_not_here_is_a_probe_error() {
        let t = Target {
            addr: "127.0.0.1:9".parse().unwrap(),
            bind: Some("192.0.2.123".parse().unwrap()),
        };
        let p = probe(&t, Duration::from_secs(1), false);
        assert!(
            matches!(&p.outcome, Outcome::Error(e) if e.contains("192.0.2.123")),
            "{:?}",
            p.outcome
        );
    }

    #[test]
    fn mixed_families_are_refused_before_connecting() {
        let t = Target {
            addr: "127.0.0.1:9".parse().unwrap(),
            bind: Some("::1".parse().unwrap()),
        };
        assert!(matches!(open(&t), Err(Outcome::Error(e)) if e.contains("IP versions")));
    }
}
