//! Facts about the machine a bench runs on: core count, kernel and tool versions for the report's
//! header, and the load average around a run.

use std::process::Command;

pub fn machine_facts() -> String {
    let sh = |p: &str, a: &[&str]| {
        Command::new(p)
            .args(a)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|_| "n/a".into())
    };
    format!(
        "Machine: {} cores (`nproc`), kernel {}, {}, {}; run {}.",
        sh("nproc", &[]),
        sh("uname", &["-r"]),
        sh("nft", &["--version"]),
        sh("iptables", &["--version"]),
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}
