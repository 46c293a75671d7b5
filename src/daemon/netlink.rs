//! Ruleset change events straight from the kernel: a netlink socket joined to
//! the `NFNLGRP_NFTABLES` multicast group receives one message per committed
//! nf_tables change (tables, chains, rules, sets, elements) and a `NEWGEN`
//! message per transaction naming the process that committed it. Unlike an
//! `nft monitor` child, nothing reads the ruleset first: no start-up cost and
//! no memory that grows with the node's ruleset (an `nft monitor` child was
//! measured at 381 MiB and 5-10 s of start-up with 100,000 foreign rules, and
//! deaf while the ruleset kept changing during that start-up). Parsing is pure
//! (`parse`); `run` is the socket loop.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

// nf_tables message types (linux/netfilter/nf_tables.h).
const MSG_NEWTABLE: u16 = 0;
const MSG_DELTABLE: u16 = 2;
const MSG_NEWCHAIN: u16 = 3;
const MSG_DELCHAIN: u16 = 5;
const MSG_NEWRULE: u16 = 6;
const MSG_DELRULE: u16 = 8;
const MSG_NEWSET: u16 = 9;
const MSG_DELSET: u16 = 11;
const MSG_NEWSETELEM: u16 = 12;
const MSG_DELSETELEM: u16 = 14;
const MSG_NEWGEN: u16 = 15;

/// What one notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An object change: its table and, for chains and rules, the chain.
    Object { table: String, chain: Option<String> },
    /// End of a transaction, with the process that committed it.
    Generation { pid: Option<u32>, name: String },
}

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
            Change::Object { table, chain } => {
                self.touched |= relevant(backend, &table, chain.as_deref());
                None
            }
            Change::Generation { pid, name } => {
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

/// Which changes concern a backend's objects.
pub fn relevant(backend: &str, table: &str, chain: Option<&str>) -> bool {
    match backend {
        "nftables" => table == crate::core::nft_model::TABLE_NAME,
        // iptables-nft: the filter tables, our chain and the built-in chains that jump to it.
        _ => table == "filter" && chain.is_none_or(|c| matches!(c, "APISERVER-GUARD" | "OUTPUT" | "FORWARD" | "INPUT")),
    }
}

fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        let padded = (len + 3) & !3;
        buf = &buf[padded.min(buf.len())..];
    }
    out
}

fn attr_str(attrs: &[(u16, &[u8])], kind: u16) -> Option<String> {
    let (_, v) = attrs.iter().find(|(k, _)| *k == kind)?;
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    Some(String::from_utf8_lossy(&v[..end]).into_owned())
}

/// Parses one datagram (possibly several netlink messages).
pub fn parse(mut buf: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let msg = &buf[..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        if kind >> 8 != NFNL_SUBSYS_NFTABLES || msg.len() < NLMSG_HDRLEN + NFGENMSG_LEN {
            continue;
        }
        let a = attrs(&msg[NLMSG_HDRLEN + NFGENMSG_LEN..]);
        // In every object message, attribute 1 is the table; the chain is 3 for
        // chain messages and 2 for rule messages.
        let change = match kind & 0xff {
            MSG_NEWTABLE | MSG_DELTABLE | MSG_NEWSET | MSG_DELSET | MSG_NEWSETELEM | MSG_DELSETELEM => {
                attr_str(&a, 1).map(|table| Change::Object { table, chain: None })
            }
            MSG_NEWCHAIN | MSG_DELCHAIN => attr_str(&a, 1).map(|table| Change::Object {
                table,
                chain: attr_str(&a, 3),
            }),
            MSG_NEWRULE | MSG_DELRULE => attr_str(&a, 1).map(|table| Change::Object {
                table,
                chain: attr_str(&a, 2),
            }),
            MSG_NEWGEN => {
                let pid = a
                    .iter()
                    .find(|(k, v)| *k == 2 && v.len() == 4)
                    .map(|(_, v)| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                Some(Change::Generation {
                    pid,
                    name: attr_str(&a, 3).unwrap_or_default(),
                })
            }
            _ => None,
        };
        out.extend(change);
    }
    out
}

/// A non-blocking netlink socket of `protocol` joined to the multicast
/// `groups` (group numbers, as for `NETLINK_ADD_MEMBERSHIP`), with a large
/// receive buffer for bursts (an overflow is reported as ENOBUFS anyway).
/// Shared by the nf_tables event watch and the address watch.
pub fn subscribe(protocol: libc::c_int, groups: &[u32]) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscalls on a socket we create; every pointer passed points
    // to a live, correctly sized local.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let addr_ptr = &addr as *const libc::sockaddr_nl as *const libc::sockaddr;
        if libc::bind(
            fd,
            addr_ptr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        for group in groups {
            let gptr = group as *const u32 as *const libc::c_void;
            if libc::setsockopt(fd, libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, gptr, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let size: libc::c_int = 4 << 20;
        let sptr = &size as *const libc::c_int as *const libc::c_void;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, sptr, 4) < 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, sptr, 4);
        }
        Ok(owned)
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

    fn nlattr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn msg(kind: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + body.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        v.extend_from_slice(&[0u8; 10]); // flags, seq, pid
        v.extend_from_slice(&[1, 0, 0, 0]); // nfgenmsg: family inet
        v.extend_from_slice(&body);
        v
    }

    fn s(x: &str) -> Vec<u8> {
        let mut v = x.as_bytes().to_vec();
        v.push(0);
        v
    }

    #[test]
    fn object_messages_name_table_and_chain() {
        let mut dgram = msg(MSG_DELTABLE, &[nlattr(1, &s("apiserver_guard"))]);
        dgram.extend(msg(MSG_NEWRULE, &[nlattr(1, &s("filter")), nlattr(2, &s("FORWARD"))]));
        dgram.extend(msg(
            MSG_NEWCHAIN,
            &[nlattr(1, &s("filter")), nlattr(3, &s("KUBE-SVC-X"))],
        ));
        let got = parse(&dgram);
        assert_eq!(
            got,
            vec![
                Change::Object {
                    table: "apiserver_guard".into(),
                    chain: None
                },
                Change::Object {
                    table: "filter".into(),
                    chain: Some("FORWARD".into())
                },
                Change::Object {
                    table: "filter".into(),
                    chain: Some("KUBE-SVC-X".into())
                },
            ]
        );
    }

    #[test]
    fn generation_names_the_committing_process() {
        let dgram = msg(
            MSG_NEWGEN,
            &[
                nlattr(1, &7u32.to_be_bytes()),
                nlattr(2, &4242u32.to_be_bytes()),
                nlattr(3, &s("iptables-nft")),
            ],
        );
        assert_eq!(
            parse(&dgram),
            vec![Change::Generation {
                pid: Some(4242),
                name: "iptables-nft".into()
            }]
        );
    }

    #[test]
    fn truncated_or_foreign_messages_are_skipped() {
        assert!(parse(&[1, 2, 3]).is_empty());
        let mut m = msg(MSG_NEWTABLE, &[nlattr(1, &s("t"))]);
        m[5] = 1; // another nfnetlink subsystem
        assert!(parse(&m).is_empty());
        let mut m = msg(MSG_NEWTABLE, &[nlattr(1, &s("t"))]);
        m[0] = 200; // length beyond the buffer
        assert!(parse(&m).is_empty());
    }

    #[test]
    fn only_other_processes_transactions_on_our_objects_wake() {
        let ours = || Change::Object {
            table: "filter".into(),
            chain: Some("APISERVER-GUARD".into()),
        };
        let gen = |pid: Option<u32>| Change::Generation {
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

    #[test]
    fn relevance_per_backend() {
        assert!(relevant("nftables", "apiserver_guard", None));
        assert!(!relevant("nftables", "filter", Some("FORWARD")));
        assert!(relevant("iptables-nft", "filter", Some("FORWARD")));
        assert!(relevant("iptables-nft", "filter", Some("APISERVER-GUARD")));
        assert!(relevant("iptables-nft", "filter", None));
        assert!(!relevant("iptables-nft", "filter", Some("KUBE-SERVICES")));
        assert!(!relevant("iptables-nft", "nat", Some("OUTPUT")));
    }
}
