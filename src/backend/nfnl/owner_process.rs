//! Which process holds a netlink port id: the owner a table read back names
//! (`NFTA_TABLE_OWNER`) turned into a pid and a command name, so a refusal
//! can say "the running apiserver-guard daemon (pid N)". The port id is
//! looked up in `/proc/net/netlink` (this network namespace's sockets:
//! protocol, port id, inode), the inode in `/proc/*/fd`. Best effort: a
//! process in another pid namespace is not visible, and then only the port
//! id is known.

use std::path::Path;

const NETLINK_NETFILTER: u32 = 12;

/// A process holding a netlink socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerProcess {
    pub pid: u32,
    /// `/proc/PID/comm` (`apiserver-guard` for our daemon).
    pub comm: String,
}

/// The inode of the NETLINK_NETFILTER socket bound to `port` in a
/// `/proc/net/netlink` listing.
pub fn socket_inode(listing: &str, port: u32) -> Option<u64> {
    listing.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (proto, pid, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
        (proto.parse::<u32>().ok()? == NETLINK_NETFILTER && pid.parse::<u32>().ok()? == port)
            .then(|| inode.parse().ok())
            .flatten()
    })
}

/// Whether a nf_tables netlink socket with this port id is open in this
/// network namespace (None: cannot tell).
pub fn port_alive(port: u32) -> Option<bool> {
    let listing = std::fs::read_to_string("/proc/net/netlink").ok()?;
    Some(socket_inode(&listing, port).is_some())
}

/// The process holding the nf_tables socket `port`, where it is visible.
pub fn owner_process(port: u32) -> Option<OwnerProcess> {
    let listing = std::fs::read_to_string("/proc/net/netlink").ok()?;
    let inode = socket_inode(&listing, port)?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if holds(&entry.path().join("fd"), &target) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(OwnerProcess {
                pid,
                comm: comm.trim().to_string(),
            });
        }
    }
    None
}

fn holds(fd_dir: &Path, target: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(fd_dir) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target))
}

/// Who owns the table, in words: "the running apiserver-guard daemon (pid
/// N)", "process nft (pid N)", or the port id alone.
pub fn describe_owner(port: u32) -> String {
    match owner_process(port) {
        Some(p) if p.comm == "apiserver-guard" => format!("the running apiserver-guard daemon (pid {})", p.pid),
        Some(p) => format!("process {} (pid {})", p.comm, p.pid),
        None => format!("a process not visible from here (netlink port id {port})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
00000000010dd8b1 0   4242       00000000 0        0        0     2        0        11
000000008d78d523 12  4242       00000000 0        0        0     2        0        565
000000008d78d524 12  -1234      00000000 0        0        0     2        0        566
";

    #[test]
    fn the_netfilter_socket_of_a_port_is_found_by_protocol_and_port() {
        assert_eq!(
            socket_inode(LISTING, 4242),
            Some(565),
            "protocol 0 with the same port is not it"
        );
        assert_eq!(socket_inode(LISTING, 4243), None);
        assert_eq!(socket_inode("", 4242), None);
        assert_eq!(socket_inode("header only\n", 4242), None);
    }

    #[test]
    fn this_process_is_found_as_the_holder_of_its_own_socket() {
        let sock = super::super::NfnlSocket::open().unwrap();
        assert_eq!(port_alive(sock.port_id()), Some(true));
        let p = owner_process(sock.port_id()).expect("our own socket is visible");
        assert_eq!(p.pid, std::process::id());
        let port = sock.port_id();
        drop(sock);
        assert_eq!(port_alive(port), Some(false));
        assert!(describe_owner(port).contains(&format!("port id {port}")));
    }
}
