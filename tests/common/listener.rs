//! `Listener`: a small TCP server living inside a given network namespace,
//! run from threads of the test process. HTTP `GET`/`HEAD` requests get a
//! fixed `200 OK`; anything else is echoed back until EOF, so a test can hold
//! a long-lived connection and observe it being cut.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use super::netns::Netns;
use super::server::{bind_in_netns, Server};

const HTTP_RESPONSE_HEAD: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n";
const HTTP_RESPONSE_BODY: &[u8] = b"ok";
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// A TCP server bound to `ip:port` inside a namespace; stopped on `Drop`
/// (listening socket closed, open connections shut down, threads joined).
pub struct Listener {
    addr: SocketAddr,
    netns: String,
    server: Server,
}

impl Listener {
    /// Bind `ip:port` inside `ns` and start serving. Panics if binding fails.
    pub fn start(ns: &Netns, ip: &str, port: u16) -> Listener {
        let ip: IpAddr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad listener address {ip:?}: {e}"));
        let addr = SocketAddr::new(ip, port);
        let listener = bind_in_netns(&ns.path(), addr)
            .unwrap_or_else(|e| panic!("cannot listen on {addr} in netns {}: {e}", ns.name));
        Listener {
            addr,
            netns: ns.name.clone(),
            server: Server::start(&format!("listener-{addr}"), listener, |stream, _| serve(stream)),
        }
    }

    /// The address this listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ask the accept loop to stop without waiting (Drop waits). Lets a
    /// caller stop many listeners concurrently.
    pub fn request_stop(&self) {
        self.server.request_stop();
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listener({} in {})", self.addr, self.netns)
    }
}

enum Kind {
    Undecided,
    Http { head: bool },
    Echo,
}

fn classify(buf: &[u8]) -> Kind {
    if buf.starts_with(b"GET ") {
        return Kind::Http { head: false };
    }
    if buf.starts_with(b"HEAD ") {
        return Kind::Http { head: true };
    }
    if buf.is_empty() || b"GET ".starts_with(buf) || b"HEAD ".starts_with(buf) {
        return Kind::Undecided;
    }
    Kind::Echo
}

fn serve(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let kind = loop {
        match classify(&buf) {
            Kind::Undecided => match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            decided => break decided,
        }
    };
    match kind {
        Kind::Http { head } => serve_http(stream, buf, head),
        _ => serve_echo(stream, buf),
    }
}

fn serve_http(mut stream: TcpStream, mut buf: Vec<u8>, head: bool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut chunk = [0u8; 4096];
    // Read the whole request head: closing with unread data would send a RST
    // instead of a FIN and the client could lose the response.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST_HEAD {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut response = HTTP_RESPONSE_HEAD.to_vec();
    if !head {
        response.extend_from_slice(HTTP_RESPONSE_BODY);
    }
    if stream.write_all(&response).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Drain until the client closes (bounded), then close quietly.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
    }
}

fn serve_echo(mut stream: TcpStream, first: Vec<u8>) {
    if stream.write_all(&first).is_err() {
        return;
    }
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 || stream.write_all(&chunk[..n]).is_err() {
            return;
        }
    }
}
