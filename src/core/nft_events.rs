//! nf_tables change notifications as the kernel multicasts them
//! (`NFNLGRP_NFTABLES`): one message per committed object change (tables,
//! chains, rules, sets, elements) and a `NEWGEN` per transaction naming the
//! generation it committed and the process that committed it. Parsing, which
//! changes concern a backend, and whether a write of ours had no foreign
//! commit touching our objects around it. Pure: the socket lives in
//! `backend::nfnl::subscribe`, the daemon's loop in `daemon::netlink`.

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
    /// An object change: its family (nfproto), its table and, for chains
    /// and rules, the chain.
    Object {
        family: u8,
        table: String,
        chain: Option<String>,
    },
    /// End of a transaction: the generation it committed and the process
    /// that committed it.
    Generation {
        id: Option<u32>,
        pid: Option<u32>,
        name: String,
    },
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
        let family = msg[NLMSG_HDRLEN];
        let a = attrs(&msg[NLMSG_HDRLEN + NFGENMSG_LEN..]);
        // In every object message, attribute 1 is the table; the chain is 3 for
        // chain messages and 2 for rule messages.
        let change = match kind & 0xff {
            MSG_NEWTABLE | MSG_DELTABLE | MSG_NEWSET | MSG_DELSET | MSG_NEWSETELEM | MSG_DELSETELEM => attr_str(&a, 1)
                .map(|table| Change::Object {
                    family,
                    table,
                    chain: None,
                }),
            MSG_NEWCHAIN | MSG_DELCHAIN => attr_str(&a, 1).map(|table| Change::Object {
                family,
                table,
                chain: attr_str(&a, 3),
            }),
            MSG_NEWRULE | MSG_DELRULE => attr_str(&a, 1).map(|table| Change::Object {
                family,
                table,
                chain: attr_str(&a, 2),
            }),
            MSG_NEWGEN => {
                let be32 = |kind: u16| {
                    a.iter()
                        .find(|(k, v)| *k == kind && v.len() == 4)
                        .map(|(_, v)| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
                };
                Some(Change::Generation {
                    id: be32(1),
                    pid: be32(2),
                    name: attr_str(&a, 3).unwrap_or_default(),
                })
            }
            _ => None,
        };
        out.extend(change);
    }
    out
}

/// Whether the commits in `changes` prove that nothing but our own writes
/// touched our iptables-nft objects of `family` from generation `before`
/// (exclusive) to `after` (inclusive): every generation in between was seen
/// (none lost to a full socket buffer), and each one whose changes touched
/// the `filter` table's chains that are ours or jump to ours (or the table
/// itself) was committed by `own` processes. Other agents' commits elsewhere
/// (kube-proxy's churn in its own chains) do not spoil the proof.
pub fn own_write_proven(changes: &[Change], family: u8, before: u32, after: u32, own: impl Fn(u32) -> bool) -> bool {
    let mut touched = false;
    let mut seen = std::collections::BTreeSet::new();
    for c in changes {
        match c {
            Change::Object {
                family: f,
                table,
                chain,
            } => touched |= *f == family && relevant("iptables-nft", table, chain.as_deref()),
            Change::Generation { id, pid, .. } => {
                let touched = std::mem::take(&mut touched);
                // Commits before ours do not count (those after `after`
                // came after the read).
                let in_range = id.is_none_or(|id| {
                    let d = id.wrapping_sub(before);
                    d >= 1 && d <= after.wrapping_sub(before)
                });
                if !in_range {
                    continue;
                }
                if touched && !pid.is_some_and(&own) {
                    return false;
                }
                if let Some(id) = id {
                    seen.insert(*id);
                }
            }
        }
    }
    let mut g = before;
    while g != after {
        g = g.wrapping_add(1);
        if !seen.contains(&g) {
            return false;
        }
    }
    true
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
                    family: 1,
                    table: "apiserver_guard".into(),
                    chain: None
                },
                Change::Object {
                    family: 1,
                    table: "filter".into(),
                    chain: Some("FORWARD".into())
                },
                Change::Object {
                    family: 1,
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
                id: Some(7),
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
    fn relevance_per_backend() {
        assert!(relevant("nftables", "apiserver_guard", None));
        assert!(!relevant("nftables", "filter", Some("FORWARD")));
        assert!(relevant("iptables-nft", "filter", Some("FORWARD")));
        assert!(relevant("iptables-nft", "filter", Some("APISERVER-GUARD")));
        assert!(relevant("iptables-nft", "filter", None));
        assert!(!relevant("iptables-nft", "filter", Some("KUBE-SERVICES")));
        assert!(!relevant("iptables-nft", "nat", Some("OUTPUT")));
    }

    fn object(family: u8, chain: &str) -> Change {
        Change::Object {
            family,
            table: "filter".into(),
            chain: Some(chain.into()),
        }
    }

    fn gen(id: u32, pid: u32) -> Change {
        Change::Generation {
            id: Some(id),
            pid: Some(pid),
            name: "x".into(),
        }
    }

    #[test]
    fn our_write_amid_other_commits_is_proven_unless_one_touched_our_objects() {
        let own = |pid: u32| pid == 7;
        // kube-proxy's churn in its own chain, our restore, more churn.
        let churn = vec![
            object(2, "KUBE-SERVICES"),
            gen(11, 9),
            object(2, "APISERVER-GUARD"),
            object(2, "FORWARD"),
            gen(12, 7),
            object(2, "KUBE-SERVICES"),
            gen(13, 9),
        ];
        assert!(own_write_proven(&churn, 2, 10, 13, own));
        // A foreign commit in our chain, or in FORWARD.
        for chain in ["APISERVER-GUARD", "FORWARD"] {
            let mut c = churn.clone();
            c.splice(5..6, [object(2, chain)]);
            assert!(!own_write_proven(&c, 2, 10, 13, own), "{chain}");
        }
        // The same in the other family does not matter.
        let mut c = churn.clone();
        c.splice(5..6, [object(10, "APISERVER-GUARD")]);
        assert!(own_write_proven(&c, 2, 10, 13, own));
        // A generation not seen (lost, or not delivered yet): unproven.
        assert!(!own_write_proven(&churn, 2, 10, 14, own));
        assert!(!own_write_proven(&churn[2..], 2, 10, 13, own));
        // Nothing happened at all.
        assert!(own_write_proven(&[], 2, 10, 10, own));
        // A foreign touch before our read of `before`, or after `after`, does not count.
        let mut c = vec![object(2, "APISERVER-GUARD"), gen(10, 9)];
        c.extend(churn.clone());
        c.extend([object(2, "APISERVER-GUARD"), gen(14, 9)]);
        assert!(own_write_proven(&c, 2, 10, 13, own));
    }
}
