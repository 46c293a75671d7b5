//! The lean listener that stands in for the apiserver: one thread polls the bench's listening
//! sockets (bound beforehand, in the api namespace), accepts with a deep backlog and resets every
//! connection after 20 ms, so it keeps up with a probe that connects back to back.

use std::collections::VecDeque;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::probe::set_linger0;
use super::R;

/// Accept queue of the listening sockets: deep, so that a burst of probes while the listener
/// thread waits for a CPU never overflows it (a full queue drops SYNs, i.e. probe timeouts).
const BACKLOG: libc::c_int = 4096;
/// How long an accepted connection is kept before it is reset, and how many at most.
const HOLD: Duration = Duration::from_millis(20);
const MAX_HELD: usize = 2000;

/// Accepts on the given sockets, keeps each connection 20 ms, resets it; stops when dropped.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Serves `socks` (already bound; accepting needs no namespace) on one thread.
    pub fn serve(socks: Vec<TcpListener>) -> R<Listener> {
        for l in &socks {
            l.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
            // SAFETY: listen(2) again on a listening socket only changes its backlog.
            unsafe { libc::listen(l.as_raw_fd(), BACKLOG) };
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("api-listener".into())
            .spawn(move || {
                let mut pfds: Vec<libc::pollfd> = socks
                    .iter()
                    .map(|l| libc::pollfd {
                        fd: l.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // Accepted sockets are closed with RST, but only after HOLD: the probe closes first
                // (RST) in the normal case, and an immediate server RST could reach the probe before
                // its connect() returned, turning a served connect into ECONNRESET. The server-side
                // RST matters when the block came back between a probe's handshake and its closing
                // RST (rejected by our rule): a FIN-closed or open server socket would then linger
                // and make a later probe that reuses the port time out.
                let mut held: VecDeque<(Instant, TcpStream)> = VecDeque::new();
                while !flag.load(Ordering::Relaxed) {
                    let wait = if held.is_empty() { 100 } else { 5 };
                    // SAFETY: valid pollfds, bounded timeout.
                    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait) };
                    for l in &socks {
                        while let Ok((s, _)) = l.accept() {
                            set_linger0(&s);
                            held.push_back((Instant::now(), s));
                        }
                    }
                    while held
                        .front()
                        .is_some_and(|(t, _)| t.elapsed() > HOLD || held.len() > MAX_HELD)
                    {
                        held.pop_front();
                    }
                }
            })
            .map_err(|e| format!("spawn listener: {e}"))?;
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
