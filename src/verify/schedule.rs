//! When each probe runs, so that our rules' counters speak for one probe
//! each. Probes whose failure needs no counter (the positive controls, node
//! probes the policy cannot stop) run first, all at once, outside every
//! counting window. Then every probe that needs counter evidence runs in a
//! window of its own: the counters are read right before and right after it
//! while no other probe of ours of its address family runs (an IPv4 and an
//! IPv6 probe share a window: no rule of one family counts the other's
//! packets). A reading closes one window and opens the next, so N windows
//! cost N + 1 readings.

use std::net::IpAddr;
use std::thread;
use std::time::Duration;

use super::counters::{RuleKey, Snapshot};
use super::evidence::{counter_evidence, CounterEvidence};
use super::outcome::Outcome;
use super::probe::{self, Probe, Target};
use crate::core::model::Family;

/// A socket ready to connect (or why there is none), its target and the source address the
/// kernel picks in its namespace.
pub struct Job {
    pub target: Target,
    pub socket: Result<socket2::Socket, Outcome>,
    pub from: Option<IpAddr>,
}

/// A probe and the source address it used.
pub type Ran = (Probe, Option<IpAddr>);

/// A job and, when it needs counter evidence, the endpoint whose rules to read.
pub struct Planned {
    pub job: Job,
    pub window: Option<RuleKey>,
}

/// The windows: indices into the planned jobs, at most one per address family each, in the
/// order given.
pub fn windows(keys: &[Option<RuleKey>]) -> Vec<Vec<usize>> {
    let of = |fam: Family| -> Vec<usize> {
        keys.iter()
            .enumerate()
            .filter(|(_, k)| k.is_some_and(|k| Family::of_ip(&k.ip) == fam))
            .map(|(i, _)| i)
            .collect()
    };
    let (v4, v6) = (of(Family::V4), of(Family::V6));
    (0..v4.len().max(v6.len()))
        .map(|w| [v4.get(w), v6.get(w)].into_iter().flatten().copied().collect())
        .collect()
}

/// Runs every job (see the module notes); results in the order given, each with its counter
/// evidence when it ran in a window. `read` reads every backend's counters once. Also returns
/// the first reading (None when no job needed one).
pub fn run(
    planned: Vec<Planned>,
    timeout: Duration,
    tls: bool,
    read: &dyn Fn() -> Snapshot,
) -> (Vec<(Ran, Option<CounterEvidence>)>, Option<Snapshot>) {
    let keys: Vec<Option<RuleKey>> = planned.iter().map(|p| p.window).collect();
    let mut jobs: Vec<Option<Job>> = planned.into_iter().map(|p| Some(p.job)).collect();
    let mut out: Vec<Option<(Ran, Option<CounterEvidence>)>> = (0..jobs.len()).map(|_| None).collect();

    let free: Vec<usize> = (0..jobs.len()).filter(|i| keys[*i].is_none()).collect();
    let free_jobs: Vec<Job> = free.iter().filter_map(|i| jobs[*i].take()).collect();
    for (i, ran) in free.iter().zip(run_all(free_jobs, timeout, tls)) {
        out[*i] = Some((ran, None));
    }

    let windows = windows(&keys);
    let first = (!windows.is_empty()).then(read);
    let mut before = first.clone();
    for window in windows {
        let batch: Vec<Job> = window.iter().filter_map(|i| jobs[*i].take()).collect();
        let ran = run_all(batch, timeout, tls);
        let after = read();
        let b = before.as_ref().expect("a reading opens every window");
        for (i, ran) in window.iter().zip(ran) {
            let key = keys[*i].expect("windowed jobs have a key");
            let (was, _) = b.packets(&key);
            let (now, rules) = after.packets(&key);
            out[*i] = Some((ran, Some(counter_evidence(&was, &now, rules))));
        }
        before = Some(after);
    }
    let out = out.into_iter().map(|r| r.expect("every job ran once")).collect();
    (out, first)
}

/// Connects every job concurrently; results in the same order, with the source address.
pub fn run_all(jobs: Vec<Job>, timeout: Duration, tls: bool) -> Vec<Ran> {
    thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let from = job.from;
                let handle = s.spawn(move || match job.socket {
                    Ok(sock) => probe::run(sock, &job.target, timeout, tls),
                    Err(outcome) => Probe {
                        outcome,
                        elapsed: Duration::ZERO,
                    },
                });
                (handle, from)
            })
            .collect();
        handles
            .into_iter()
            .map(|(h, from)| {
                let probe = h.join().unwrap_or_else(|_| Probe {
                    outcome: Outcome::Error("the probe thread panicked".into()),
                    elapsed: Duration::ZERO,
                });
                (probe, from)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::counters::{unread, NftReading};
    use std::cell::Cell;
    use std::net::TcpListener;

    fn key(ip: &str) -> Option<RuleKey> {
        Some(RuleKey {
            ip: ip.parse().unwrap(),
            port: 5443,
            portless: false,
            local: false,
        })
    }

    #[test]
    fn windows_hold_one_probe_per_family_in_order() {
        let keys = [
            key("192.0.2.1"),
            None,
            key("192.0.2.2"),
            key("2001:db8::1"),
            key("192.0.2.3"),
        ];
        assert_eq!(windows(&keys), vec![vec![0, 3], vec![2], vec![4]]);
        assert!(windows(&[None, None]).is_empty());
    }

    #[test]
    fn each_windowed_probe_gets_the_counter_delta_of_its_own_window() {
        // A fake firewall whose counter grows by 1 at each reading after the first: every
        // window sees exactly one packet, whatever ran in the others.
        let reads = Cell::new(0u64);
        let read = || {
            let n = reads.get();
            reads.set(n + 1);
            Snapshot {
                nft: Ok(Some(NftReading {
                    state: Default::default(),
                    counters: [("block-tcp-port-v4".to_string(), (n, 0))].into_iter().collect(),
                })),
                iptables: Vec::new(),
            }
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let job = || {
            let target = Target { addr, bind: None };
            Job {
                target,
                socket: probe::open(&target),
                from: None,
            }
        };
        let k = Some(RuleKey {
            ip: addr.ip(),
            port: addr.port(),
            portless: false,
            local: false,
        });
        let planned = vec![
            Planned {
                job: job(),
                window: None,
            },
            Planned { job: job(), window: k },
            Planned { job: job(), window: k },
        ];
        let (ran, first) = run(planned, Duration::from_secs(2), false, &read);
        assert_eq!(reads.get(), 3, "two windows, three readings");
        assert!(first.is_some());
        assert_eq!(ran[0].1, None);
        for r in &ran[1..] {
            assert_eq!(r.0 .0.outcome, Outcome::Connected);
            assert!(
                matches!(&r.1, Some(CounterEvidence::Moved { packets: 1, .. })),
                "{:?}",
                r.1
            );
        }
        // No window, no reading.
        let (_, first) = run(
            vec![Planned {
                job: job(),
                window: None,
            }],
            Duration::from_secs(1),
            false,
            &|| unread("x"),
        );
        assert!(first.is_none());
    }
}
