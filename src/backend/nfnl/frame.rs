//! Framing, pure: one nf_tables message (or batch delimiter) to netlink bytes
//! with our own header flags and sequence number, and a received datagram
//! back to the replies we act on. The crate models the payload
//! (`NfTablesMessage`) and the nfgenmsg header; the netlink header (flags,
//! seq) is ours, set on the `NetlinkMessage` wrapper before `finalize`.

use netlink_packet_core::{Emitable, NetlinkMessage, NetlinkPayload, NLM_F_DUMP_INTR};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner};

use super::error::NfnlError;

/// `NFNL_SUBSYS_NFTABLES`: the subsystem a batch is addressed to (nfgenmsg res_id).
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NLMSG_HDRLEN: usize = 16;

/// Appends one netlink message to `out`: nfgenmsg (`family`, version 0,
/// `res_id`) + payload, netlink header with `flags` and `seq`. The port id
/// stays 0 (the kernel fills in the sender).
pub fn encode(
    out: &mut Vec<u8>,
    family: u8,
    res_id: u16,
    inner: impl Into<NetfilterMessageInner>,
    flags: u16,
    seq: u32,
) {
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(family.into(), 0, res_id),
        inner,
    ));
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let start = out.len();
    out.resize(start + msg.buffer_len(), 0);
    msg.emit(&mut out[start..]);
    // Netlink messages are 4-byte aligned in a datagram; our payloads are
    // lists of aligned attributes already, but never rely on it.
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Batch delimiters (`NFNL_MSG_BATCH_BEGIN` / `_END`): family unspec,
/// res_id = the nf_tables subsystem; no ack requested (the kernel acks the
/// messages inside, and reports a failure of the batch as a whole on BEGIN's seq).
pub fn encode_delimiter(out: &mut Vec<u8>, begin: bool, seq: u32) {
    let inner = if begin {
        ControlMessage::BatchBegin
    } else {
        ControlMessage::BatchEnd
    };
    encode(
        out,
        0,
        NFNL_SUBSYS_NFTABLES,
        inner,
        netlink_packet_core::NLM_F_REQUEST,
        seq,
    );
}

/// What a received netlink message means to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// NLMSG_ERROR: `errno` 0 is an ack, otherwise the (positive) errno of a refusal.
    Ack { seq: u32, errno: i32 },
    /// NLMSG_DONE: end of a dump; `errno` non-zero when the dump itself failed.
    Done { seq: u32, errno: i32, interrupted: bool },
    /// An nf_tables object message (a dump part or a single reply).
    Object {
        seq: u32,
        family: u8,
        interrupted: bool,
        msg: NfTablesMessage,
    },
    /// Anything else (another subsystem, NOOP): ignored.
    Ignored { seq: u32 },
}

impl Reply {
    pub fn seq(&self) -> u32 {
        match self {
            Reply::Ack { seq, .. } | Reply::Done { seq, .. } | Reply::Object { seq, .. } | Reply::Ignored { seq } => {
                *seq
            }
        }
    }
}

/// Splits a datagram into its messages and decodes each.
pub fn parse_datagram(buf: &[u8]) -> Result<Vec<Reply>, NfnlError> {
    parse_datagram_of(buf, None)
}

/// Like `parse_datagram`, but nf_tables object messages naming another
/// table than `table` are skipped undecoded (`Ignored`): a chain dump, which
/// the kernel filters by family only, can carry many foreign chains.
pub fn parse_datagram_of(mut buf: &[u8], table: Option<&str>) -> Result<Vec<Reply>, NfnlError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(NfnlError::malformed(format!(
                "a reply message claims {len} bytes, {} left in the datagram",
                buf.len()
            )));
        }
        let msg = &buf[..len];
        match table {
            Some(t) if names_other_table(msg, t) => out.push(Reply::Ignored {
                seq: u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]),
            }),
            _ => out.push(parse_one(msg)?),
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Ok(out)
}

/// Whether `msg` is an nf_tables object message whose table attribute
/// (type 1 in table, chain, set, element and rule messages) is not `table`.
fn names_other_table(msg: &[u8], table: &str) -> bool {
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind >> 8 != NFNL_SUBSYS_NFTABLES || !matches!(kind & 0xff, 0 | 3 | 6 | 9 | 12) {
        return false;
    }
    let mut attrs = msg.get(NLMSG_HDRLEN + 4..).unwrap_or_default();
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return false;
        }
        if kind == 1 {
            let value = &attrs[4..len];
            let name = value.split(|b| *b == 0).next().unwrap_or_default();
            return name != table.as_bytes();
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    false
}

fn parse_one(bytes: &[u8]) -> Result<Reply, NfnlError> {
    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
        .map_err(|e| NfnlError::malformed(format!("cannot decode a reply ({e})")))?;
    let seq = msg.header.sequence_number;
    let interrupted = msg.header.flags & NLM_F_DUMP_INTR != 0;
    Ok(match msg.payload {
        NetlinkPayload::Error(e) => Reply::Ack {
            seq,
            errno: -e.raw_code(),
        },
        NetlinkPayload::Done(d) => Reply::Done {
            seq,
            errno: -d.code,
            interrupted,
        },
        NetlinkPayload::InnerMessage(NetfilterMessage {
            header,
            inner: NetfilterMessageInner::NfTables(m),
            ..
        }) => Reply::Object {
            seq,
            family: header.family.into(),
            interrupted,
            msg: m,
        },
        _ => Reply::Ignored { seq },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
    use netlink_packet_netfilter::nftables::{TableAttribute, TableFlags, TableMessage};

    fn new_table(name: &str) -> NfTablesMessage {
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![
                TableAttribute::Name(name.into()),
                TableAttribute::Flags(TableFlags::empty()),
            ],
        })
    }

    #[test]
    fn header_carries_our_flags_seq_type_and_family() {
        let mut out = Vec::new();
        encode(
            &mut out,
            1,
            0,
            new_table("t"),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            77,
        );
        // len, type (subsys 10 << 8 | NEWTABLE 0), flags, seq, port 0, nfgenmsg.
        assert_eq!(u32::from_ne_bytes(out[0..4].try_into().unwrap()) as usize, out.len());
        assert_eq!(u16::from_ne_bytes([out[4], out[5]]), 10 << 8);
        assert_eq!(u16::from_ne_bytes([out[6], out[7]]), 0x405);
        assert_eq!(u32::from_ne_bytes(out[8..12].try_into().unwrap()), 77);
        assert_eq!(&out[12..16], &[0, 0, 0, 0]);
        assert_eq!(&out[16..20], &[1, 0, 0, 0]);
        // NFTA_TABLE_NAME "t\0" padded, then NFTA_TABLE_FLAGS 0 (big endian).
        assert_eq!(&out[20..28], &[6, 0, 1, 0, b't', 0, 0, 0]);
        assert_eq!(&out[28..36], &[8, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(out.len(), 36);
    }

    #[test]
    fn delimiters_match_what_nft_sends() {
        // As captured from nft (crate test data): BATCH_BEGIN, seq 0, res_id 10 big endian.
        let mut out = Vec::new();
        encode_delimiter(&mut out, true, 0);
        assert_eq!(out, [20, 0, 0, 0, 0x10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]);
        out.clear();
        encode_delimiter(&mut out, false, 8);
        assert_eq!(out, [20, 0, 0, 0, 0x11, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]);
    }

    fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn ack_payload(code: i32, seq: u32) -> Vec<u8> {
        let mut p = code.to_ne_bytes().to_vec();
        p.extend(nlmsg(10 << 8 | 6, NLM_F_REQUEST | NLM_F_ACK, seq, &[]));
        p
    }

    #[test]
    fn acks_errors_done_and_objects_are_told_apart() {
        let mut dgram = nlmsg(2, 0x100, 5, &ack_payload(0, 5));
        dgram.extend(nlmsg(2, 0x100, 6, &ack_payload(-libc::ENOENT, 6)));
        let mut table = Vec::new();
        encode(&mut table, 1, 0, new_table("agtest"), 2 | NLM_F_DUMP_INTR, 9);
        dgram.extend(&table);
        dgram.extend(nlmsg(3, 2, 9, &0i32.to_ne_bytes()));
        dgram.extend(nlmsg(3, 2, 10, &(-libc::EINTR).to_ne_bytes()));
        let got = parse_datagram(&dgram).unwrap();
        assert_eq!(got[0], Reply::Ack { seq: 5, errno: 0 });
        assert_eq!(
            got[1],
            Reply::Ack {
                seq: 6,
                errno: libc::ENOENT
            }
        );
        assert_eq!(
            got[2],
            Reply::Object {
                seq: 9,
                family: 1,
                interrupted: true,
                msg: new_table("agtest")
            }
        );
        assert_eq!(
            got[3],
            Reply::Done {
                seq: 9,
                errno: 0,
                interrupted: false
            }
        );
        assert_eq!(
            got[4],
            Reply::Done {
                seq: 10,
                errno: libc::EINTR,
                interrupted: false
            }
        );
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn foreign_objects_are_skipped_undecoded() {
        let mut dgram = Vec::new();
        encode(&mut dgram, 1, 0, new_table("agtest"), 2, 9);
        encode(&mut dgram, 1, 0, new_table("filter"), 2, 9);
        let got = parse_datagram_of(&dgram, Some("agtest")).unwrap();
        assert!(matches!(got[0], Reply::Object { .. }), "{got:?}");
        assert_eq!(got[1], Reply::Ignored { seq: 9 });
        let all = parse_datagram(&dgram).unwrap();
        assert!(all.iter().all(|r| matches!(r, Reply::Object { .. })), "{all:?}");
    }

    #[test]
    fn a_message_longer_than_the_datagram_is_refused() {
        let mut m = nlmsg(2, 0, 1, &ack_payload(0, 1));
        m[0] = 200;
        let e = parse_datagram(&m).unwrap_err();
        assert_eq!(e.errno, libc::EPROTO);
        assert!(parse_datagram(&[1, 2, 3]).unwrap().is_empty());
    }
}
