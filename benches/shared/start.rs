//! The start-up figures of a daemon, run after run: spawn -> first refused pod connect (or none),
//! spawn -> `ready` log line, and the daemon-logged `block installed` time.

use super::clock::ms;
use super::daemon::DaemonProc;

#[derive(Default)]
pub struct StartResult {
    pub to_block: Vec<f64>,
    pub to_ready: Vec<f64>,
    pub installed: Vec<f64>,
    pub failures: usize,
}

impl StartResult {
    /// One start at `t0` (ns): first refused connect at `refused_at` (`None`: never blocked),
    /// `ready` line read at `ready`, and the `block installed` figure from `d`'s log.
    pub fn record(&mut self, t0: u64, refused_at: Option<u64>, ready: u64, d: &DaemonProc) {
        match refused_at {
            Some(at) => self.to_block.push(ms(at - t0)),
            None => self.failures += 1,
        }
        self.to_ready.push(ms(ready.saturating_sub(t0)));
        if let Some(v) = d
            .lines()
            .iter()
            .find(|(_, l)| l.contains("block installed"))
            .and_then(|(_, l)| installed_ms(l))
        {
            self.installed.push(v);
        }
    }
}

/// "block installed in 21.2 ms" or "block installed (21.2 ms)", depending on the version -> 21.2
pub fn installed_ms(line: &str) -> Option<f64> {
    line.split("block installed")
        .nth(1)?
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}
