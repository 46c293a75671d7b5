//! Ruleset change events straight from the kernel: a netlink socket joined to
//! the `NFNLGRP_NFTABLES` multicast group receives one message per committed
//! nf_tables change (tables, chains, rules, sets, elements) and a `NEWGEN`
//! message per transaction naming the process that committed it. Unlike an
//! `nft monitor` child, nothing reads the ruleset first: no start-up cost and
//! no memory that grows with the node's ruleset (an `nft monitor` child was
//! measured at 381 MiB and 5-10 s of start-up with 100,000 foreign rules, and
//! deaf while the ruleset kept changing during that start-up). Parsing is pure
//! (`core::nft_events`), the socket is `backend::nfnl::subscribe`; here the
//! transaction `Watch` and `run`, the socket loop.

pub use crate::backend::nfnl::subscribe::subscribe;
use crate::backend::nfnl::subscribe::{NETLINK_NETFILTER, NFNLGRP_NFTABLES};
use crate::core::nft_events::{parse, relevant, Change};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// Follows the change messages of the transactions the kernel reports.
#[derive(Debug, Default)]
pub struct Watch {
    /// The transaction under way touched our objects.
    touched: bool,
}

impl Watch {
    /// One change. A transaction ends with its generation, which names the
    /// process that committed it: when another process's transaction touched
    /// our objects, returns it (wake, and blame it for the change). Our own
    /// writes wake nothing: each is read back where it is made, and a write
    /// that keeps failing its read-back would otherwise spin on its own events.
    pub fn on(&mut self, backend: &str, change: Change, own: impl Fn(u32) -> bool) -> Option<String> {
        match change {
            Change::Object { table, chain, .. } => {
                self.touched |= relevant(backend, &table, chain.as_deref());
                None
            }
            Change::Generation { pid, name, .. } => {
                let touched = std::mem::take(&mut self.touched);
                if !touched || pid.is_some_and(own) {
                    return None;
                }
                Some(match pid {
                    Some(p) => format!("{name} (pid {p})"),
                    None => name,
                })
            }
        }
    }
}

fn socket() -> std::io::Result<OwnedFd> {
    subscribe(NETLINK_NETFILTER, &[NFNLGRP_NFTABLES])
}

/// Listens for as long as the task lives; sends one wake-up per transaction
/// of another process that touched our objects (coalesced while the
/// controller is busy) and records that process. A lost burst (ENOBUFS)
/// wakes too.
pub async fn run(backend: String, wake: mpsc::Sender<()>, last_actor: Arc<Mutex<Option<String>>>) {
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged until dropped,
    // and the AsyncFd owns it.
    let registered = socket().and_then(|fd| unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1));
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("cannot subscribe to nf_tables change events ({e}); relying on the periodic resync");
            return;
        }
    };
    log::info!("watching ruleset changes (nf_tables netlink events)");
    let mut buf = vec![0u8; 256 * 1024];
    let mut watch = Watch::default();
    loop {
        let Ok(mut guard) = fd.readable().await else { return };
        loop {
            let raw = fd.get_ref().as_raw_fd();
            // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
            let n = unsafe { libc::recv(raw, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Some(libc::ENOBUFS) => {
                        // Events were dropped: whatever they were, check now.
                        let _ = wake.try_send(());
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => {
                        log::warn!("nf_tables event socket failed ({err}); relying on the periodic resync");
                        return;
                    }
                }
            }
            for change in parse(&buf[..n as usize]) {
                if let Some(who) = watch.on(&backend, change, crate::backend::exec::is_own_pid) {
                    *last_actor.lock().unwrap_or_else(|p| p.into_inner()) = Some(who);
                    let _ = wake.try_send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_processes_transactions_on_our_objects_wake() {
        let ours = || Change::Object {
            family: 2,
            table: "filter".into(),
            chain: Some("APISERVER-GUARD".into()),
        };
        let gen = |pid: Option<u32>| Change::Generation {
            id: None,
            pid,
            name: "iptables-nft-re".into(),
        };
        let own = |pid: u32| pid == 7;
        let mut w = Watch::default();
        assert_eq!(
            w.on("iptables-nft", ours(), own),
            None,
            "not before the transaction ends"
        );
        assert_eq!(
            w.on("iptables-nft", gen(Some(9)), own),
            Some("iptables-nft-re (pid 9)".into())
        );
        w.on("iptables-nft", ours(), own);
        assert_eq!(w.on("iptables-nft", gen(Some(7)), own), None, "our own write");
        assert_eq!(
            w.on("iptables-nft", gen(Some(9)), own),
            None,
            "a transaction that touched nothing of ours"
        );
        w.on(
            "iptables-nft",
            Change::Object {
                family: 2,
                table: "nat".into(),
                chain: None,
            },
            own,
        );
        assert_eq!(w.on("iptables-nft", gen(Some(9)), own), None, "another table");
        w.on("iptables-nft", ours(), own);
        assert_eq!(
            w.on("iptables-nft", gen(None), own),
            Some("iptables-nft-re".into()),
            "committer unknown: wake"
        );
    }
}
