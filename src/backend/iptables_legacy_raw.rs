//! One family's iptables-legacy `filter` table over the kernel's socket
//! options, the way iptables-legacy itself reads and writes it: read as
//! bytes (`IPT_SO_GET_INFO`, `IPT_SO_GET_ENTRIES`; `IP6T_` for IPv6, on a
//! raw socket) and, to take out entries `iptables -D` by spec cannot find,
//! written back whole (`IPT_SO_SET_REPLACE`, counters kept with
//! `IPT_SO_SET_ADD_COUNTERS`) while holding the xtables lock that every
//! iptables writer holds. The kernel refuses a replace whose entry count is
//! not the table's any more (EAGAIN): then read again and retry. What to
//! take out and how the blob changes is decided in
//! `core::iptables_legacy_blob`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use crate::core::iptables_legacy_blob::{parse, parse_info, Edited, LegacyTable, GETINFO_LEN, HOOKS};
use crate::core::model::Family;

/// `IPT_SO_GET_INFO` / `IPT_SO_SET_REPLACE` (the same numbers for IPv6).
const GET_INFO: libc::c_int = 64;
const GET_ENTRIES: libc::c_int = 65;
const SET_REPLACE: libc::c_int = 64;
const SET_ADD_COUNTERS: libc::c_int = 65;

/// `struct ipt_get_entries` / `ipt_replace` / `xt_counters_info` headers.
const GET_ENTRIES_HEADER: usize = 40;
const REPLACE_HEADER: usize = 96;
const COUNTERS_HEADER: usize = 40;
/// `struct xt_counters`.
const COUNTER: usize = 16;

/// How often a read or a replace is tried again when the table changed under it.
const TRIES: usize = 8;
/// How long to wait for the xtables lock (as `iptables -w 5`).
const LOCK_WAIT: Duration = Duration::from_secs(5);

const TABLE: &str = "filter";

fn open(fam: Family) -> io::Result<(OwnedFd, libc::c_int)> {
    let (domain, level) = match fam {
        Family::V4 => (libc::AF_INET, libc::SOL_IP),
        Family::V6 => (libc::AF_INET6, libc::SOL_IPV6),
    };
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, level))
}

fn named(len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    b[..TABLE.len()].copy_from_slice(TABLE.as_bytes());
    b
}

fn get(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for len bytes; the kernel writes at most len.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, buf.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

fn set(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, buf: &[u8]) -> io::Result<()> {
    // SAFETY: buf is valid for its length; the kernel only reads it (and
    // writes the old counters through the pointer the caller put in it).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_ptr().cast(),
            buf.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_on(fd: &OwnedFd, level: libc::c_int, fam: Family) -> io::Result<LegacyTable> {
    let mut last = None;
    for _ in 0..TRIES {
        let mut info = named(GETINFO_LEN);
        get(fd, level, GET_INFO, &mut info)?;
        let parsed = parse_info(&info).ok_or_else(|| io::Error::other("short ipt_getinfo"))?;
        let size = parsed.4 as usize;
        let mut buf = named(GET_ENTRIES_HEADER + size);
        buf[32..36].copy_from_slice(&parsed.4.to_ne_bytes());
        match get(fd, level, GET_ENTRIES, &mut buf) {
            // The table changed size between the two calls.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        return parse(fam, &parsed, &buf[GET_ENTRIES_HEADER..]).map_err(io::Error::other);
    }
    Err(last.unwrap_or_else(|| io::Error::other("the table kept changing")))
}

/// The `filter` table of `fam` as bytes. The caller makes sure it is
/// loaded (asking for a table that is not makes the kernel create it).
pub fn read(fam: Family) -> io::Result<LegacyTable> {
    let (fd, level) = open(fam)?;
    read_on(&fd, level, fam)
}

/// The xtables lock every iptables writer takes (`/run/xtables.lock`, or
/// `$XTABLES_LOCKFILE`), held until dropped (released with the descriptor).
pub struct XtablesLock(#[allow(dead_code)] File);

impl XtablesLock {
    /// Waits for the lock up to 5 s (as `iptables -w 5`).
    pub fn acquire() -> io::Result<XtablesLock> {
        let path = std::env::var_os("XTABLES_LOCKFILE").unwrap_or_else(|| "/run/xtables.lock".into());
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)?;
        let start = Instant::now();
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(XtablesLock(f));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(e);
            }
            if start.elapsed() >= LOCK_WAIT {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "another process holds the xtables lock ({}) for more than {} s",
                        std::path::Path::new(&path).display(),
                        LOCK_WAIT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Takes the entries `pick` names out of the `filter` table of `fam`, in
/// one replace of the whole table under the xtables lock the caller holds
/// (what iptables-legacy does for every change). `pick` sees the table as
/// read under the lock and is asked again if the table changed before the
/// replace.
pub fn take_out(lock: &XtablesLock, fam: Family, pick: impl Fn(&LegacyTable) -> Vec<usize>) -> io::Result<()> {
    rewrite_locked(lock, fam, |t| {
        let drop = pick(t);
        if drop.is_empty() {
            return Ok(None);
        }
        t.without(&drop)
            .map(Some)
            .ok_or_else(|| io::Error::other("refusing to take out a chain's policy entry"))
    })
}

/// Replaces the `filter` table of `fam` with what `edit` makes of it (None:
/// leave it), under the xtables lock, in one `IPT_SO_SET_REPLACE`; the
/// entries `edit` kept keep their counters. `edit` is asked again when the
/// table changed before the replace.
pub fn rewrite(fam: Family, edit: impl FnMut(&LegacyTable) -> io::Result<Option<Edited>>) -> io::Result<()> {
    rewrite_locked(&XtablesLock::acquire()?, fam, edit)
}

/// As `rewrite`, with the xtables lock already held by the caller.
pub fn rewrite_locked(
    _lock: &XtablesLock,
    fam: Family,
    mut edit: impl FnMut(&LegacyTable) -> io::Result<Option<Edited>>,
) -> io::Result<()> {
    let (fd, level) = open(fam)?;
    for _ in 0..TRIES {
        let t = read_on(&fd, level, fam)?;
        let Some(edited) = edit(&t)? else {
            return Ok(());
        };
        let mut old_counters = vec![0u8; COUNTER * t.entries.len()];
        let mut buf = named(REPLACE_HEADER);
        buf[32..36].copy_from_slice(&t.valid_hooks.to_ne_bytes());
        buf[36..40].copy_from_slice(&(edited.kept.len() as u32).to_ne_bytes());
        buf[40..44].copy_from_slice(&(edited.blob.len() as u32).to_ne_bytes());
        for h in 0..HOOKS {
            buf[44 + 4 * h..48 + 4 * h].copy_from_slice(&edited.hook_entry[h].to_ne_bytes());
            buf[64 + 4 * h..68 + 4 * h].copy_from_slice(&edited.underflow[h].to_ne_bytes());
        }
        buf[84..88].copy_from_slice(&(t.entries.len() as u32).to_ne_bytes());
        buf[88..96].copy_from_slice(&(old_counters.as_mut_ptr() as u64).to_ne_bytes());
        buf.extend_from_slice(&edited.blob);
        match set(&fd, level, SET_REPLACE, &buf) {
            // Someone not holding the lock changed the table: read again.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        // The kept entries keep their counters (as iptables-legacy does).
        let mut counters = named(COUNTERS_HEADER);
        counters[32..36].copy_from_slice(&(edited.kept.len() as u32).to_ne_bytes());
        for i in &edited.kept {
            counters.extend_from_slice(&old_counters[COUNTER * i..COUNTER * (i + 1)]);
        }
        if let Err(e) = set(&fd, level, SET_ADD_COUNTERS, &counters) {
            log::debug!("iptables-legacy counters not carried over after a replace: {e}");
        }
        return Ok(());
    }
    Err(io::Error::other(
        "the iptables-legacy table kept changing under the replace",
    ))
}
