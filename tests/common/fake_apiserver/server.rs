//! The serving side: on the shared test-server skeleton (`common::server`),
//! one thread per TLS connection that reads HTTP/1.1
//! requests (keep-alive) and answers them, streaming watches in place. A
//! `Session` is one listening period; ending it closes the listener and
//! every connection and joins all threads.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::super::server::Server;
use super::http;
use super::routes::{self, Reply};
use super::store::Store;
use super::watch;

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection needs.
pub struct Shared {
    pub store: Store,
    pub token: String,
    pub tls: Arc<ServerConfig>,
}

pub use super::super::server::bind_in_netns;

/// One listening period; dropping it stops serving.
pub struct Session(#[allow(dead_code)] Server);

impl Session {
    /// Serve `listener` (non-blocking) until dropped.
    pub fn start(listener: TcpListener, shared: Arc<Shared>) -> Session {
        Session(Server::start("fake-apiserver", listener, move |stream, stop| {
            serve_connection(stream, &shared, stop)
        }))
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
