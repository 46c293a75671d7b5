//! The serving skeleton shared by the test servers (`Listener`, the fake
//! apiserver): binding inside a network namespace, one thread polling a
//! non-blocking listening socket until told to stop, one thread per
//! connection, and a stop that closes the listening socket, shuts every
//! open connection down and joins every thread.

use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::netns::enter_netns;

const ACCEPT_POLL: Duration = Duration::from_millis(10);

type Connections = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// Binds `addr` (non-blocking) from a thread that entered the namespace at
/// `netns_path`; the socket stays in that namespace whichever thread uses it.
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

/// Serves a listening socket until dropped (or `request_stop` + drop).
pub struct Server {
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    connections: Connections,
}

impl Server {
    /// Accepts on `listener` (non-blocking) and runs `serve(stream, stop)`
    /// on a thread per connection; `stop` turns true when the server stops.
    pub fn start<F>(name: &str, listener: TcpListener, serve: F) -> Server
    where
        F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Connections::default();
        let accept = {
            let (stop, connections, serve) = (Arc::clone(&stop), Arc::clone(&connections), Arc::new(serve));
            let conn_name = format!("{name}-conn");
            thread::Builder::new()
                .name(name.to_string())
                .spawn(move || accept_loop(listener, &conn_name, &stop, &connections, serve))
                .expect("spawn accept thread")
        };
        Server {
            stop,
            accept: Some(accept),
            connections,
        }
    }

    /// Asks the accept loop to stop without waiting (Drop waits), so a
    /// caller can stop many servers concurrently.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.request_stop();
        if let Some(accept) = self.accept.take() {
            // The listening socket is owned by the accept thread and closed when it returns.
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

fn accept_loop<F>(
    listener: TcpListener,
    conn_name: &str,
    stop: &Arc<AtomicBool>,
    connections: &Connections,
    serve: Arc<F>,
) where
    F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
{
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let (stop, serve) = (Arc::clone(stop), Arc::clone(&serve));
                let handle = thread::Builder::new()
                    .name(conn_name.to_string())
                    .spawn(move || serve(stream, &stop))
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
