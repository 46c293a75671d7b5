//! The lean listener in the api namespace that replaces the harness's thread-per-connection ones:
//! one thread polls both apiserver addresses, accepts with a deep backlog and resets every
//! connection after 20 ms, so it keeps up with a probe that connects back to back.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::Netns;
use crate::probe::set_linger0;
use crate::R;

/// Accept queue of the bench's listeners (a full queue would drop probe SYNs).
const BACKLOG: libc::c_int = 4096;
/// How long an accepted connection is kept before it is reset, and how many at most.
const HOLD: Duration = Duration::from_millis(20);
const MAX_HELD: usize = 2000;

/// TCP listeners on 192.168.50.10:5443 and 192.168.50.20:5443 in the api namespace (in place of
/// the harness's thread-per-connection ones): accept, keep 20 ms, reset.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn start(api: &Netns, addrs: &[SocketAddr]) -> R<Listener> {
        let mut socks = Vec::new();
        for a in addrs {
            let l = api
                .in_thread(|| TcpListener::bind(a))
                .and_then(|r| r)
                .map_err(|e| format!("bind {a} in {}: {e}", api.name))?;
            l.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
            // SAFETY: listen(2) again on a listening socket only changes its backlog.
            unsafe { libc::listen(l.as_raw_fd(), BACKLOG) };
            socks.push(l);
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
                // Accepted sockets are reset only after HOLD: the probe resets first in the normal
                // case (an immediate server RST could turn a served connect into ECONNRESET).
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
