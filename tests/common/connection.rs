//! `HeldConnection`: a persistent TCP client connection opened from inside a
//! namespace, used to check that an already-established connection keeps
//! working (or is cut) by exchanging echo round trips with a `Listener`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::netns::Netns;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An established client connection (created in a namespace, usable from any thread).
#[derive(Debug)]
pub struct HeldConnection {
    stream: TcpStream,
}

impl HeldConnection {
    /// Connect from inside `ns` to `ip:port` (5 s connect timeout).
    pub fn open(ns: &Netns, ip: &str, port: u16) -> io::Result<HeldConnection> {
        let ip: IpAddr = ip
            .parse()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("bad address {ip:?}: {e}")))?;
        let addr = SocketAddr::new(ip, port);
        let stream = ns.in_thread(|| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))??;
        stream.set_nodelay(true)?;
        Ok(HeldConnection { stream })
    }

    /// Write `msg` and read its echo back within `timeout`. Ok(()) when the
    /// exact bytes came back; Err on reset, EOF (`UnexpectedEof`), timeout
    /// (`TimedOut`) or mismatched data (`InvalidData`).
    pub fn roundtrip(&mut self, msg: &[u8], timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let timed_out = || io::Error::new(ErrorKind::TimedOut, "no echo before the timeout");
        self.stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        self.stream.write_all(msg).map_err(|e| map_timeout(e, timed_out))?;
        let mut got = vec![0u8; msg.len()];
        let mut filled = 0;
        while filled < got.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut got[filled..]) {
                Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "connection closed by peer")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(map_timeout(e, timed_out)),
            }
        }
        if got != msg {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("echo mismatch: sent {msg:?}, got {got:?}"),
            ));
        }
        Ok(())
    }

    /// The underlying socket (e.g. for `local_addr`).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

fn map_timeout(e: io::Error, timed_out: impl Fn() -> io::Error) -> io::Error {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => timed_out(),
        _ => e,
    }
}
