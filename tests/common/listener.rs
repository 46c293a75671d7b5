//! `Listener`: a small TCP server living inside a given network namespace,
//! run from threads of the test process. HTTP `GET`/`HEAD` requests get a
//! fixed `200 OK`; anything else is echoed back until EOF, so a test can hold
//! a long-lived connection and observe it being cut.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::netns::{enter_netns, Netns};

const ACCEPT_POLL: Duration = Duration::from_millis(10);
const HTTP_RESPONSE_HEAD: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n";
const HTTP_RESPONSE_BODY: &[u8] = b"ok";
const MAX_REQUEST_HEAD: usize = 64 * 1024;

type Connections = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// A TCP server bound to `ip:port` inside a namespace; stopped on `Drop`
/// (listening socket closed, open connections shut down, threads joined).
pub struct Listener {
    addr: SocketAddr,
    netns: String,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
    connections: Connections,
}

impl Listener {
    /// Bind `ip:port` inside `ns` and start serving. Panics if binding fails.
    pub fn start(ns: &Netns, ip: &str, port: u16) -> Listener {
        let ip: IpAddr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad listener address {ip:?}: {e}"));
        let addr = SocketAddr::new(ip, port);
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Connections = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let accept_thread = {
            let stop = Arc::clone(&stop);
            let connections = Arc::clone(&connections);
            thread::Builder::new()
                .name(format!("listener-{addr}"))
                .spawn(move || {
                    let bound = enter_netns(&path).and_then(|()| {
                        let l = TcpListener::bind(addr)?;
                        l.set_nonblocking(true)?;
                        Ok(l)
                    });
                    match bound {
                        Ok(listener) => {
                            let _ = ready_tx.send(Ok(()));
                            accept_loop(listener, &stop, &connections);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .expect("spawn listener thread")
        };
        let result = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("listener thread died before binding")));
        if let Err(e) = result {
            let _ = accept_thread.join();
            panic!("cannot listen on {addr} in netns {}: {e}", ns.name);
        }
        Listener {
            addr,
            netns: ns.name.clone(),
            stop,
            accept_thread: Some(accept_thread),
            connections,
        }
    }

    /// The address this listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ask the accept loop to stop without waiting (Drop waits). Lets a
    /// caller stop many listeners concurrently.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.request_stop();
        if let Some(t) = self.accept_thread.take() {
            // The listening socket is owned by this thread and closed when it returns.
            let _ = t.join();
        }
        let conns = std::mem::take(&mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()));
        for (stream, _) in &conns {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, handle) in conns {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listener({} in {})", self.addr, self.netns)
    }
}

fn accept_loop(listener: TcpListener, stop: &AtomicBool, connections: &Connections) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let handle = thread::spawn(move || serve(stream));
                let mut conns = connections.lock().unwrap_or_else(|p| p.into_inner());
                conns.retain(|(_, h)| !h.is_finished());
                conns.push((clone, handle));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                thread::sleep(ACCEPT_POLL)
            }
            // Transient accept errors (ECONNABORTED, EMFILE...): back off and retry.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
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
