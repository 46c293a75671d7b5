//! curl-based HTTP probes run inside a namespace, with the outcome classified
//! (served / refused / timed out) and the elapsed wall time measured.

use std::time::{Duration, Instant};

use super::netns::Netns;

/// Outcome of one curl invocation.
#[derive(Debug, Clone)]
pub struct CurlResult {
    /// curl's exit status (-1 if it was killed by a signal).
    pub exit_code: i32,
    /// `%{http_code}`; None when no response was received ("000").
    pub http_code: Option<u16>,
    /// Wall time of the whole invocation (including `ip netns exec`).
    pub elapsed: Duration,
    pub stderr: String,
}

impl CurlResult {
    /// curl succeeded and got HTTP 200.
    pub fn served(&self) -> bool {
        self.exit_code == 0 && self.http_code == Some(200)
    }

    /// curl exit 7: could not connect (refused / reset at connect).
    pub fn refused(&self) -> bool {
        self.exit_code == 7
    }

    /// curl exit 28: `--max-time` expired.
    pub fn timed_out(&self) -> bool {
        self.exit_code == 28
    }
}

/// `curl http://<ip>:<port>/` from inside `ns`, giving up after `max_time_secs`.
pub fn curl(ns: &Netns, ip: &str, port: u16, max_time_secs: u32) -> CurlResult {
    run_curl(ns, None, ip, port, max_time_secs)
}

/// Same as `curl`, with the source address forced by `--interface <src>`.
pub fn curl_from(ns: &Netns, src: &str, ip: &str, port: u16, max_time_secs: u32) -> CurlResult {
    run_curl(ns, Some(src), ip, port, max_time_secs)
}

fn run_curl(ns: &Netns, src: Option<&str>, ip: &str, port: u16, max_time_secs: u32) -> CurlResult {
    let max_time = max_time_secs.to_string();
    let url = if ip.contains(':') {
        format!("http://[{ip}]:{port}/")
    } else {
        format!("http://{ip}:{port}/")
    };
    let mut argv = vec![
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        &max_time,
        // Never go through a proxy from the environment, and take the
        // bracketed IPv6 literal verbatim.
        "--noproxy",
        "*",
        "--globoff",
    ];
    if let Some(src) = src {
        argv.extend(["--interface", src]);
    }
    argv.push(&url);
    let start = Instant::now();
    let out = ns.run(&argv);
    let elapsed = start.elapsed();
    let http_code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|&c| c != 0);
    CurlResult {
        exit_code: out.status.code().unwrap_or(-1),
        http_code,
        elapsed,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
