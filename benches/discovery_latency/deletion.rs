//! Part 3, the end of an allowed pod's exemption: the daemon with `--allow-pods
//! monitoring/apiserver-guard.io/allow=true` (nftables); per run a labelled pod of `monitoring`
//! holds the pod namespace's own address (the probe's source), is served, and then the fake
//! apiserver sets its `deletionTimestamp` (what a graceful `kubectl delete pod` does first). t0:
//! right before that; t1: end of the first connect from the pod to the apiserver address refused.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::daemon_cases::READY_LINE;
use crate::common::discovery_cases::{ALLOW_LABEL, NODE};
use crate::common::fake_apiserver::PodSpec;
use crate::common::guard_cases::Backend;
use crate::common::{API_V4, POD_V4};
use crate::daemon::{BenchDaemon, START_LIMIT};
use crate::latency::CHANGE_LIMIT;
use crate::probe::{once, probe_around, Watch};
use crate::setup::{sock, Bench};
use crate::shared::clock::ms;
use crate::shared::probe::Conn;
use crate::shared::stats::{f, pct, sorted};
use crate::shared::stop::check_stop;
use crate::R;

pub const NAMESPACE: &str = "monitoring";

#[derive(Default)]
pub struct DeletionResult {
    /// t0 (deletionTimestamp set) -> first refused connect from the pod's address, ms.
    pub refused: Vec<f64>,
    pub timeouts: usize,
    /// Runs whose connect right before t0 was already refused (the pod was not exempt yet).
    pub already: u32,
    pub seconds: f64,
}

pub fn run_deletion(b: &Bench, bin: &Path, runs: usize) -> R<DeletionResult> {
    let started = Instant::now();
    let mut r = DeletionResult::default();
    b.reset()?;
    let allow = format!("{NAMESPACE}/{}={}", ALLOW_LABEL.0, ALLOW_LABEL.1);
    let mut args = b.discovery_args(Backend::Nftables);
    args.extend(["--allow-pods".into(), allow]);
    let mut d = BenchDaemon::start(bin, b.node(), &args, b.log("deletion"))?;
    d.wait_line(READY_LINE, 0, START_LIMIT)?;
    for i in 0..runs {
        check_stop()?;
        let name = format!("prom-{i}");
        let spec = PodSpec::new(NODE, &[POD_V4]).label(ALLOW_LABEL.0, ALLOW_LABEL.1);
        b.c.api.set_pod(NAMESPACE, &name, spec);
        let deadline = Instant::now() + CHANGE_LIMIT;
        while once(b.pod(), sock(API_V4))? != Conn::Served {
            if Instant::now() > deadline {
                return Err(format!("run {i}: the allowed pod is not served:\n{}", d.tail(20)));
            }
            thread::sleep(Duration::from_millis(10));
        }
        d.wait_idle()?;
        let w = Watch {
            refused: Some(sock(API_V4)),
            served: None,
        };
        let (o, marked) = probe_around(b.pod(), &w, CHANGE_LIMIT, || {
            b.c.api.start_deleting_pod(NAMESPACE, &name, 30)
        })?;
        if !marked {
            return Err(format!(
                "run {i}: pod {NAMESPACE}/{name} vanished from the fake apiserver"
            ));
        }
        r.already += o.already;
        match o.refused_at {
            Some(t1) => r.refused.push(ms(t1 - o.t0)),
            None => {
                r.timeouts += 1;
                eprintln!("  run {i}: not refused within {CHANGE_LIMIT:?}:\n{}", d.tail(10));
            }
        }
        b.c.api.delete_pod(NAMESPACE, &name);
        d.wait_idle()?;
        if (i + 1) % 5 == 0 || i + 1 == runs {
            eprintln!(
                "  {}/{runs} deletions, refused p50 so far {} ms",
                i + 1,
                f(pct(&sorted(r.refused.clone()), 50.0))
            );
        }
    }
    d.stop();
    b.reset()?;
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

/// The markdown section for part 3.
pub fn deletion_report(r: &DeletionResult, runs: usize) -> String {
    let s = sorted(r.refused.clone());
    format!(
        "### Allowed pod deleted to its IP refused\n\n`run --apiserver auto --container-cidr 10.0.0.0/16 \
         --allow-pods {NAMESPACE}/{}={}` (nftables, release binary). Per run a labelled pod of `{NAMESPACE}` holds \
         the pod namespace's address {POD_V4} and is served; t0: right before the fake apiserver sets its \
         `deletionTimestamp` (a MODIFIED event, the object stays for its grace period); t1: end of the first \
         connect from {POD_V4} to {API_V4} refused by our rule. Milliseconds.\n\n\
         | measure | runs | p50 | p90 | max | not refused within {CHANGE_LIMIT:?} | already refused before t0 |\n\
         |---|---:|---:|---:|---:|---:|---:|\n\
         | **deletionTimestamp set -> IP no longer exempt** (t1 - t0) | {runs} | {} | {} | {} | {} | {} |\n\n\
         _{:.0} s._\n",
        ALLOW_LABEL.0,
        ALLOW_LABEL.1,
        f(pct(&s, 50.0)),
        f(pct(&s, 90.0)),
        f(pct(&s, 100.0)),
        r.timeouts,
        r.already,
        r.seconds
    )
}
