//! Ruleset change events: an `nft monitor` child whose output lines are
//! classified (pure) into "touches our objects" and "who committed it" (the
//! `# new generation N by process PID (NAME)` trailer). A relevant line wakes
//! the controller at once; the kernel sends notifications only after a
//! transaction commits, so the state it then reads is final.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// What one line of `nft monitor` means to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A change that may touch our objects.
    Relevant,
    /// End of a transaction, with the process that committed it.
    Generation {
        actor: String,
        pid: Option<u32>,
    },
    Other,
}

/// Substrings that mark a change as possibly ours, per backend.
pub fn watch_list(backend: &str) -> Vec<&'static str> {
    match backend {
        "nftables" => vec!["inet apiserver_guard"],
        // iptables-nft: our chain, the built-in chains that jump to it, and the tables themselves.
        _ => vec![
            "filter APISERVER-GUARD",
            "filter OUTPUT",
            "filter FORWARD",
            "table ip filter",
            "table ip6 filter",
        ],
    }
}

pub fn classify(line: &str, watch: &[&str]) -> Line {
    if let Some(rest) = line.strip_prefix("# new generation ") {
        // "9 by process 16908 (nft)"
        if let Some((_, who)) = rest.split_once(" by process ") {
            let (pid, name) = who.split_once(' ').unwrap_or((who, ""));
            let name = name.trim().trim_start_matches('(').trim_end_matches(')');
            return Line::Generation {
                actor: format!("{name} (pid {pid})"),
                pid: pid.parse().ok(),
            };
        }
        return Line::Other;
    }
    if watch.iter().any(|w| line.contains(w)) {
        Line::Relevant
    } else {
        Line::Other
    }
}

/// Runs `nft monitor` for as long as the task lives, restarting it when it
/// exits; sends one wake-up per relevant change (coalesced when the
/// controller is busy) and records the last process that changed our objects.
pub async fn run(backend: String, wake: mpsc::Sender<()>, last_actor: Arc<Mutex<Option<String>>>) {
    let watch = watch_list(&backend);
    loop {
        let mut cmd = Command::new(crate::backend::nftables::NFT);
        cmd.arg("monitor")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to end the
        // child when the daemon dies (even by SIGKILL), so no monitor is orphaned.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                log::info!("watching ruleset changes with `nft monitor`");
                if let Some(out) = child.stdout.take() {
                    let mut lines = BufReader::new(out).lines();
                    let mut touched = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        match classify(&line, &watch) {
                            Line::Relevant => {
                                touched = true;
                                let _ = wake.try_send(());
                            }
                            Line::Generation { actor, pid } if touched => {
                                touched = false;
                                // Our own repairs are not "somebody else".
                                if !pid.is_some_and(crate::backend::exec::is_own_pid) {
                                    *last_actor.lock().unwrap_or_else(|p| p.into_inner()) = Some(actor);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                let _ = child.kill().await;
                log::warn!("`nft monitor` ended; restarting it in 1s (the periodic resync still runs)");
            }
            Err(e) => {
                log::warn!("cannot start `nft monitor` ({e}); relying on the periodic resync");
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_table_events_are_relevant_for_nftables() {
        let w = watch_list("nftables");
        assert_eq!(classify("delete table inet apiserver_guard", &w), Line::Relevant);
        assert_eq!(
            classify("delete rule inet apiserver_guard guard handle 6", &w),
            Line::Relevant
        );
        assert_eq!(
            classify("add rule ip filter KUBE-X counter packets 0 bytes 0 return", &w),
            Line::Other
        );
        assert_eq!(classify("delete table ip filter", &w), Line::Other);
    }

    #[test]
    fn hook_chains_and_tables_are_relevant_for_iptables_nft() {
        let w = watch_list("iptables-nft");
        assert_eq!(
            classify("add rule ip filter FORWARD counter packets 0 bytes 0 accept", &w),
            Line::Relevant
        );
        assert_eq!(
            classify("delete rule ip6 filter APISERVER-GUARD handle 3", &w),
            Line::Relevant
        );
        assert_eq!(classify("delete table ip filter", &w), Line::Relevant);
        assert_eq!(
            classify("add rule ip filter KUBE-SERVICES counter return", &w),
            Line::Other
        );
    }

    #[test]
    fn generation_lines_name_the_process() {
        assert_eq!(
            classify("# new generation 9 by process 16908 (iptables-nft)", &[]),
            Line::Generation {
                actor: "iptables-nft (pid 16908)".into(),
                pid: Some(16908)
            }
        );
        assert_eq!(classify("# new generation 9", &[]), Line::Other);
    }
}
