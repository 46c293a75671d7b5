//! The pod-side probe: a thread that, once told t0, connects to the apiserver back to back (then
//! once per gap) until a connect is refused again, and reports when.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::shared::clock::now_ns;
use crate::shared::probe::{connect, Conn, GAP_US};
use crate::shared::stop::STOP;
use crate::shared::R;

use crate::netns::Netns;
use crate::topology::API;

/// The probe connects back to back for this long after t0, then once per `PROBE_GAP`
/// (bounds the probe's CPU use during long repairs; resolution stays <= ~1 ms there).
pub const TIGHT_FOR: Duration = Duration::from_millis(50);
pub const PROBE_GAP: Duration = Duration::from_millis(1);
pub const UNSET: u64 = u64::MAX;

#[derive(Debug, Default, Clone)]
pub struct ProbeOutcome {
    /// End of the first refused connect that started at or after t0.
    pub refused_at: Option<u64>,
    /// Start of the first connect that was served (the hole observed open).
    pub first_served: Option<u64>,
    pub t0: u64,
    pub served_before_t0: u32,
    pub served_after_t0: u32,
    pub refused_before_t0: u32,
    pub other: u32,
    pub probes: u32,
    /// Duration of each connect (ns), to show the probe's resolution.
    pub connect_ns: Vec<u64>,
}

pub enum Job {
    Once(mpsc::Sender<Conn>),
    /// Probe until a connect that started at/after t0 (set by the caller) is refused.
    Measure {
        t0: Arc<AtomicU64>,
        limit: Duration,
        reply: mpsc::Sender<ProbeOutcome>,
    },
}

/// A thread in the pod namespace that connects to the apiserver on request.
pub struct Probe {
    pub jobs: Option<mpsc::Sender<Job>>,
    pub thread: Option<JoinHandle<Option<()>>>,
}

impl Probe {
    pub fn start(pod: &Netns) -> R<Probe> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = pod.thread("pod-probe", move || {
            let addr: SocketAddr = API.parse().expect("valid address");
            for job in rx {
                match job {
                    Job::Once(reply) => {
                        let _ = reply.send(connect(&addr));
                    }
                    Job::Measure { t0, limit, reply } => {
                        let _ = reply.send(measure(&addr, &t0, limit));
                    }
                }
            }
        })?;
        Ok(Probe {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn send(&self, job: Job) -> R<()> {
        self.jobs
            .as_ref()
            .ok_or("probe stopped")?
            .send(job)
            .map_err(|_| "probe thread died".to_string())
    }

    pub fn once(&self) -> R<Conn> {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Once(tx))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| "probe did not answer".to_string())
    }

    /// Starts probing now; returns the t0 cell to set and the receiver of the outcome.
    pub fn begin(&self, limit: Duration) -> R<(Arc<AtomicU64>, mpsc::Receiver<ProbeOutcome>)> {
        let t0 = Arc::new(AtomicU64::new(UNSET));
        let (tx, rx) = mpsc::channel();
        self.send(Job::Measure {
            t0: t0.clone(),
            limit,
            reply: tx,
        })?;
        Ok((t0, rx))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn measure(addr: &SocketAddr, t0: &AtomicU64, limit: Duration) -> ProbeOutcome {
    let started = Instant::now();
    let mut o = ProbeOutcome::default();
    while started.elapsed() < limit && !STOP.load(Ordering::Relaxed) {
        let a = now_ns();
        let c = connect(addr);
        let b = now_ns();
        o.probes += 1;
        o.connect_ns.push(b - a);
        let t = t0.load(Ordering::SeqCst);
        let after = t != UNSET && a >= t;
        match (c, after) {
            (Conn::Refused, true) => {
                o.refused_at = Some(b);
                o.t0 = t;
                return o;
            }
            (Conn::Refused, false) => o.refused_before_t0 += 1,
            (Conn::Served, true) => {
                o.served_after_t0 += 1;
                o.first_served.get_or_insert(a);
            }
            (Conn::Served, false) => {
                o.served_before_t0 += 1;
                o.first_served.get_or_insert(a);
            }
            (Conn::Other, _) => o.other += 1,
        }
        let gap = GAP_US.load(Ordering::Relaxed);
        if after && a - t > TIGHT_FOR.as_nanos() as u64 {
            // At least as long as the connect took: with 50,000 rules in FORWARD each forwarded
            // packet costs real softirq time, and a probe flood would starve the daemon.
            thread::sleep(PROBE_GAP.max(Duration::from_nanos(b - a)));
        } else if gap > 0 {
            thread::sleep(Duration::from_micros(gap));
        }
    }
    o.t0 = t0.load(Ordering::SeqCst);
    o
}
