//! Which nf_tables `filter` tables an iptables-nft `apply` created, so that
//! `remove` can delete them again and never a table that was there before us.
//!
//! The record is one file per network namespace under
//! `/run/apiserver-guard/iptables-nft-created/` (tmpfs, cleared at boot like
//! the ruleset itself), one line per family naming the table and the handle
//! the kernel gave it (`ip filter handle 7`). The file is named after the
//! namespace's cookie (`SO_NETNS_COOKIE`, kernel 5.14: never reused while the
//! machine is up), so a record can never be read in another namespace that
//! happens to get the same inode after the first one died (measured: the test
//! suite's namespaces reuse inodes); older kernels fall back to the device and
//! inode of `/proc/self/ns/net`. `remove` deletes a recorded table by its
//! handle, so only that instance, never a later table of the same name, and
//! the kernel refuses to delete it unless empty (`nfnl::delete_table_if_empty`).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use crate::core::model::Family;
use crate::error::{Error, Result};

/// Directory of the records (tmpfs).
const DIR: &str = "/run/apiserver-guard/iptables-nft-created";

/// nft's name of the filter table of one family, as written in the record.
pub fn table_name(fam: Family) -> &'static str {
    match fam {
        Family::V4 => "ip filter",
        Family::V6 => "ip6 filter",
    }
}

/// The name of this network namespace in file names under /run:
/// `netns-cookie-<cookie>`, or `netns-<device>-<inode>` of
/// `/proc/self/ns/net` on kernels without namespace cookies.
pub fn netns_name() -> Result<String> {
    if let Some(cookie) = netns_cookie() {
        return Ok(format!("netns-cookie-{cookie}"));
    }
    let ns = std::fs::metadata("/proc/self/ns/net").map_err(|e| {
        Error::runtime(format!(
            "cannot identify the network namespace (/proc/self/ns/net): {e}"
        ))
    })?;
    Ok(format!("netns-{}-{}", ns.dev(), ns.ino()))
}

/// This network namespace's cookie, read from a socket made for the purpose.
fn netns_cookie() -> Option<u64> {
    // SAFETY: a socket we create and own; getsockopt writes at most `len`
    // bytes into the live local `cookie`.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        );
        (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
    }
}

/// The record of this network namespace.
fn record_path() -> Result<PathBuf> {
    Ok(PathBuf::from(DIR).join(netns_name()?))
}

/// The filter tables our `apply` created in this namespace: family and handle.
pub fn recorded() -> Result<Vec<(Family, u64)>> {
    let path = record_path()?;
    // Never blocks on what is there (a FIFO in its place must not hang `remove`).
    match crate::regular_file::read_regular(&path) {
        Ok(bytes) => Ok(parse(&String::from_utf8_lossy(&bytes))),
        Err(crate::regular_file::ReadError::NotFound) => Ok(Vec::new()),
        Err(e) => Err(Error::runtime(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The lines of a record; a line without a handle (or anything else) names no table.
fn parse(text: &str) -> Vec<(Family, u64)> {
    Family::ALL
        .into_iter()
        .filter_map(|f| {
            text.lines().find_map(|l| {
                let handle = l.trim().strip_prefix(table_name(f))?.trim().strip_prefix("handle ")?;
                Some((f, handle.trim().parse().ok()?))
            })
        })
        .collect()
}

/// Writes the record: exactly `tables` (the file is removed when none).
fn write(tables: &[(Family, u64)]) -> Result<()> {
    let path = record_path()?;
    let io = |e: std::io::Error| Error::runtime(format!("cannot write {}: {e}", path.display()));
    if tables.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(DIR).map_err(io)?;
    let text: String = tables
        .iter()
        .map(|(f, h)| format!("{} handle {h}\n", table_name(*f)))
        .collect();
    let tmp = path.with_extension("tmp");
    // A FIFO or symlink put at that path must not block or redirect us.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Notes that our `apply` created the filter table of `fam`, with handle `handle`.
pub fn record(fam: Family, handle: u64) -> Result<()> {
    let mut tables: Vec<(Family, u64)> = recorded()?.into_iter().filter(|(f, _)| *f != fam).collect();
    tables.push((fam, handle));
    write(&tables)
}

/// Forgets `fam` (its table was deleted again, or is gone).
pub fn forget(fam: Family) -> Result<()> {
    let tables: Vec<(Family, u64)> = recorded()?.into_iter().filter(|(f, _)| *f != fam).collect();
    write(&tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_family_and_handle_and_nothing_else_counts() {
        assert_eq!(
            parse("ip filter handle 7\nip6 filter handle 12\n"),
            vec![(Family::V4, 7), (Family::V6, 12)]
        );
        // A line of the older format (no handle) or garbage names no table.
        assert_eq!(parse("ip filter\nip6 filter handle x\n"), vec![]);
        assert_eq!(parse("ip6 filter handle 3\n"), vec![(Family::V6, 3)]);
    }

    #[test]
    fn namespaces_are_named_by_their_cookie() {
        let name = netns_name().expect("a name");
        assert!(name.starts_with("netns-cookie-"), "{name}");
        assert_eq!(name, netns_name().unwrap(), "stable");
    }
}
