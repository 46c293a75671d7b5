//! The pod probe: TCP connects from the pod namespace to the apiserver addresses (the shared
//! `connect`, closed at once with RST), and the loop that takes t0, fires a trigger and connects
//! until every watched address shows the awaited state.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::Netns;
use crate::shared::clock::now_ns;
use crate::shared::probe::{connect, Conn, GAP_US};
use crate::shared::stop::STOP;
use crate::R;

/// The probe connects back to back for this long after t0, then once per `PROBE_GAP` (or per
/// connect duration, if longer), so that a slow change does not cost a core for its whole length.
pub const TIGHT_FOR: Duration = Duration::from_millis(100);
pub const PROBE_GAP: Duration = Duration::from_millis(1);

/// What the probe waits for after t0: `refused` to be refused, `served` to be served.
pub struct Watch {
    pub refused: Option<SocketAddr>,
    pub served: Option<SocketAddr>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub t0: u64,
    /// End of the first connect to `refused` that started after t0 and was refused.
    pub refused_at: Option<u64>,
    /// End of the first connect to `served` that started after t0 and was served.
    pub served_at: Option<u64>,
    /// The connect right before t0 already showed the awaited state (the previous change had
    /// not settled, or the state never changed).
    pub already: u32,
    pub other: u32,
    pub probes: u32,
    pub connect_ns: Vec<u64>,
}

/// On a thread in the pod namespace: one connect to each watched address (the state before),
/// then t0, then `trigger` (on this thread), then connects until every watched address shows the
/// awaited state or `limit` passes.
pub fn probe_around<T: Send>(
    pod: &Netns,
    w: &Watch,
    limit: Duration,
    trigger: impl FnOnce() -> T + Send,
) -> R<(Outcome, T)> {
    pod.in_thread(|| {
        let mut o = Outcome::default();
        if let Some(a) = &w.refused {
            o.already += u32::from(connect(a) == Conn::Refused);
        }
        if let Some(a) = &w.served {
            o.already += u32::from(connect(a) == Conn::Served);
        }
        o.t0 = now_ns();
        let out = trigger();
        let started = Instant::now();
        let gap = Duration::from_micros(GAP_US.load(Ordering::Relaxed));
        loop {
            let want_refused = w.refused.filter(|_| o.refused_at.is_none());
            let want_served = w.served.filter(|_| o.served_at.is_none());
            if (want_refused.is_none() && want_served.is_none())
                || started.elapsed() > limit
                || STOP.load(Ordering::Relaxed)
            {
                break;
            }
            let mut longest = 0;
            for (addr, want) in [(want_refused, Conn::Refused), (want_served, Conn::Served)] {
                let Some(addr) = addr else { continue };
                let a = now_ns();
                let c = connect(&addr);
                let b = now_ns();
                o.probes += 1;
                o.connect_ns.push(b - a);
                longest = longest.max(b - a);
                if c == Conn::Other {
                    o.other += 1;
                } else if c == want {
                    match want {
                        Conn::Refused => o.refused_at = Some(b),
                        _ => o.served_at = Some(b),
                    }
                }
            }
            if started.elapsed() > TIGHT_FOR {
                thread::sleep(PROBE_GAP.max(Duration::from_nanos(longest)));
            } else if !gap.is_zero() {
                thread::sleep(gap);
            }
        }
        (o, out)
    })
    .map_err(|e| format!("probe thread in {}: {e}", pod.name))
}

pub fn once(pod: &Netns, addr: SocketAddr) -> R<Conn> {
    pod.in_thread(|| connect(&addr))
        .map_err(|e| format!("probe thread in {}: {e}", pod.name))
}
