//! Listening to nf_tables commits around a write of ours: a socket joined
//! to `NFNLGRP_NFTABLES` before the write, read after it up to a given
//! generation, so that the bytes read back can be proven to be what our
//! write put there even while other agents commit all the time (see
//! `core::nft_events::own_write_proven`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::subscribe::{subscribe, NETLINK_NETFILTER, NFNLGRP_NFTABLES};
use crate::core::nft_events::{parse, Change};

/// How long to wait for the notifications of a generation already read.
const WAIT: Duration = Duration::from_millis(200);

/// The commits notified since the socket was opened.
pub struct CommitWatch {
    fd: OwnedFd,
    changes: Vec<Change>,
    /// Notifications were lost (the socket's buffer overflowed).
    lost: bool,
}

impl CommitWatch {
    pub fn open() -> std::io::Result<CommitWatch> {
        Ok(CommitWatch {
            fd: subscribe(NETLINK_NETFILTER, &[NFNLGRP_NFTABLES])?,
            changes: Vec::new(),
            lost: false,
        })
    }

    /// Every change notified up to the end of generation `after` (waiting a
    /// little for notifications still on their way); None when some were
    /// lost or did not come.
    pub fn until(&mut self, after: u32) -> Option<&[Change]> {
        let start = Instant::now();
        let mut buf = vec![0u8; 256 * 1024];
        while !self.has(after) {
            if self.lost || start.elapsed() > WAIT {
                return None;
            }
            // SAFETY: `buf` is a live buffer of `buf.len()` bytes; the socket is non-blocking.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
                    Some(libc::EINTR) => {}
                    _ => self.lost = true,
                }
                continue;
            }
            self.changes.extend(parse(&buf[..n as usize]));
        }
        Some(&self.changes)
    }

    fn has(&self, generation: u32) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c, Change::Generation { id: Some(g), .. } if *g == generation))
    }
}
