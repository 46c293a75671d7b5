//! Counting an iptables variant's `-save` runs: a PATH shim in front of
//! the real tools, so a test can assert that a check read no whole table
//! as text.

use super::bad_input_cases::TempDir;
use super::guard_cases::{run_guard_with, GuardRun};
use super::Netns;
use std::path::PathBuf;

/// A directory whose `iptables-<variant>-save` / `ip6tables-<variant>-save`
/// log each call to `saves.log`, then run the real tool.
pub struct SaveCounter {
    dir: TempDir,
}

impl SaveCounter {
    /// `variant`: `nft` or `legacy`.
    pub fn new(variant: &str) -> SaveCounter {
        let dir = TempDir::new("save-counter");
        for tool in [format!("iptables-{variant}-save"), format!("ip6tables-{variant}-save")] {
            let real = find_in_path(&tool);
            let script = format!(
                "#!/bin/sh\necho {tool} >> {}\nexec {} \"$@\"\n",
                dir.path().join("saves.log").display(),
                real.display()
            );
            let path = dir.file(&tool, &script);
            std::process::Command::new("chmod")
                .args(["755", &path])
                .status()
                .expect("chmod");
        }
        SaveCounter { dir }
    }

    /// How many saves ran since the last call.
    pub fn take(&self) -> usize {
        let log = self.dir.path().join("saves.log");
        let n = std::fs::read_to_string(&log).map(|s| s.lines().count()).unwrap_or(0);
        let _ = std::fs::remove_file(&log);
        n
    }

    /// `apiserver-guard <args>` in `ns` with the counting tools first in PATH.
    pub fn guard(&self, ns: &Netns, args: &[String]) -> GuardRun {
        let path = format!(
            "PATH={}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        run_guard_with(ns, &[path], args)
    }
}

pub fn find_in_path(tool: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| PathBuf::from(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not found"))
}
