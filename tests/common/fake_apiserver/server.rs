//! The serving side: a listening socket created inside a network namespace,
//! an accept thread, and one thread per TLS connection that reads HTTP/1.1
//! requests (keep-alive) and answers them, streaming watches in place. A
//! `Session` is one listening period; ending it closes the listener and
//! every connection and joins all threads.

use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::super::netns::enter_netns;
use super::http;
use super::routes::{self, Reply};
use super::store::Store;
use super::watch;

const ACCEPT_POLL: Duration = Duration::from_millis(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection needs.
pub struct Shared {
    pub store: Store,
    pub token: String,
    pub tls: Arc<ServerConfig>,
}

type Connections = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// Bind `addr` (non-blocking) from a thread that entered the namespace at `netns_path`.
pub fn bind_in_netns(netns_path: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    thread::scope(|s| {
        s.spawn(|| {
            enter_netns(netns_path)?;
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// One listening period; dropping it stops serving.
pub struct Session {
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    connections: Connections,
}

impl Session {
    /// Serve `listener` (non-blocking) until dropped.
    pub fn start(listener: TcpListener, shared: Arc<Shared>) -> Session {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Connections::default();
        let accept = {
            let (stop, connections) = (Arc::clone(&stop), Arc::clone(&connections));
            thread::Builder::new()
                .name("fake-apiserver-accept".into())
                .spawn(move || accept_loop(listener, &shared, &stop, &connections))
                .expect("spawn accept thread")
        };
        Session {
            stop,
            accept: Some(accept),
            connections,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            // The listening socket is closed when the accept thread returns.
            let _ = accept.join();
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

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>, stop: &Arc<AtomicBool>, connections: &Connections) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let (shared, stop) = (Arc::clone(shared), Arc::clone(stop));
                let handle = thread::Builder::new()
                    .name("fake-apiserver-conn".into())
                    .spawn(move || serve_connection(stream, &shared, &stop))
                    .expect("spawn connection thread");
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

fn serve_connection(tcp: TcpStream, shared: &Shared, stop: &AtomicBool) {
    let fd = tcp.as_raw_fd();
    if tcp.set_nonblocking(false).is_err() || tcp.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let Ok(conn) = ServerConnection::new(Arc::clone(&shared.tls)) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Ok(Some(req)) = http::read_request(&mut tls, &mut buf) else {
            break;
        };
        let keep_alive = req.keep_alive();
        let ok = match routes::route(&req, &shared.store, &shared.token) {
            Reply::Json(code, body) => {
                let body = serde_json::to_vec(&body).expect("serialize response");
                http::write_json(&mut tls, code, &body, keep_alive).is_ok()
            }
            Reply::Watch(w) => watch::serve(&w, &shared.store, stop, &mut tls, fd).is_ok(),
        };
        if !ok || !keep_alive {
            break;
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.shutdown(Shutdown::Both);
}
