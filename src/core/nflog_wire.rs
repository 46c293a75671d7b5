//! nfnetlink_log on the wire, pure: the one configuration request that binds
//! an NFLOG group to our socket (copy the first `LOG_SNAPLEN` bytes of each
//! packet, flush every 10 ms or 64 packets), and a received datagram back to
//! what we act on: acks and logged packets (prefix and copied bytes). The
//! crate (`netlink-packet-netfilter`) models the messages; a message it
//! cannot decode is reported as such and never hides the others.

use super::attempt_log::LOG_SNAPLEN;
use netlink_packet_core::{Emitable, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

const NLMSG_HDRLEN: usize = 16;
/// Packets the kernel gathers before it sends them as one datagram.
pub const QUEUE_THRESHOLD: u32 = 64;
/// Longest a logged packet waits in the kernel before it is sent, in 1/100 s.
pub const FLUSH_TIMEOUT_CS: u32 = 1;

/// The request binding `group` to the sending socket, with its sequence number.
pub fn bind_request(group: u16, seq: u32) -> Vec<u8> {
    let mut msg = config_request(
        NetfilterProtoFamily::Unspec,
        group,
        vec![
            ConfigNla::Cmd(ConfigCmd::Bind),
            ConfigNla::Mode(ConfigMode::new_packet(LOG_SNAPLEN)),
            ConfigNla::QThresh(QUEUE_THRESHOLD),
            ConfigNla::Timeout(Timeout::new(FLUSH_TIMEOUT_CS)),
        ],
    );
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.emit(&mut out);
    out
}

/// One message of a received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The answer to a request: errno 0 = done, else the (positive) errno.
    Ack { seq: u32, errno: i32 },
    /// A logged packet: its prefix (None when the rule set none), the copied
    /// bytes and the interface it came in on: the bridge port when bridged
    /// (physindev), else the input device (None: none, as in OUTPUT).
    Packet {
        prefix: Option<String>,
        payload: Vec<u8>,
        interface: Option<u32>,
    },
    /// A message that does not decode (counted, skipped).
    Malformed,
    /// Anything else (another subsystem, NOOP).
    Ignored,
}

/// Splits a datagram into its messages and reads each.
pub fn parse_datagram(mut buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            out.push(Event::Malformed);
            break;
        }
        out.push(parse_one(&buf[..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    if !buf.is_empty() && buf.len() < NLMSG_HDRLEN {
        out.push(Event::Malformed);
    }
    out
}

fn parse_one(bytes: &[u8]) -> Event {
    let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(bytes) else {
        return Event::Malformed;
    };
    match msg.payload {
        NetlinkPayload::Error(e) => Event::Ack {
            seq: msg.header.sequence_number,
            errno: -e.raw_code(),
        },
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) => {
            let mut prefix = None;
            let mut payload = Vec::new();
            let (mut indev, mut physindev) = (None, None);
            for nla in nlas {
                match nla {
                    PacketNla::Prefix(p) => prefix = Some(p.to_string_lossy().into_owned()),
                    PacketNla::Payload(p) => payload = p,
                    PacketNla::IfIndexInDev(i) => indev = Some(i),
                    PacketNla::IfIndexPhysInDev(i) => physindev = Some(i),
                    _ => {}
                }
            }
            Event::Packet {
                prefix,
                payload,
                interface: physindev.or(indev),
            }
        }
        _ => Event::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlattr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    /// An NFULNL_MSG_PACKET message as the kernel sends it.
    fn packet(attrs: &[Vec<u8>]) -> Vec<u8> {
        let body = attrs.concat();
        let mut v = ((NLMSG_HDRLEN + 4 + body.len()) as u32).to_ne_bytes().to_vec();
        v.extend_from_slice(&(4u16 << 8).to_ne_bytes()); // subsys ULOG, message PACKET (0)
        v.extend_from_slice(&[0u8; 10]);
        v.extend_from_slice(&[2, 0]); // nfgenmsg: family ipv4, version 0
        v.extend_from_slice(&1443u16.to_be_bytes()); // res_id = group
        v.extend_from_slice(&body);
        v
    }

    const PREFIX: u16 = 10;
    const PAYLOAD: u16 = 9;
    const HWPROTO: u16 = 1;
    const INDEV: u16 = 4;
    const PHYSINDEV: u16 = 6;

    #[test]
    fn the_bind_request_names_group_mode_and_flushing() {
        let b = bind_request(1443, 7);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize, b.len());
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), (4 << 8) | 1, "ULOG CONFIG");
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(&b[16..20], &[0, 0, 0x05, 0xa3], "family unspec, group 1443 big-endian");
        let attrs = &b[20..];
        // CMD bind (1), MODE (range 96 BE, mode packet 2), QTHRESH, TIMEOUT.
        assert_eq!(&attrs[0..5], &[5, 0, 1, 0, 1]);
        assert_eq!(&attrs[8..18], &[10, 0, 2, 0, 0, 0, 0, 96, 2, 0]);
        assert_eq!(&attrs[20..28], &[8, 0, 5, 0, 0, 0, 0, 64]);
        assert_eq!(&attrs[28..36], &[8, 0, 4, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn packets_give_prefix_and_payload_and_acks_their_errno() {
        let mut d = packet(&[
            nlattr(HWPROTO, &[8, 0, 3, 0]),
            nlattr(PREFIX, b"apiserver-guard:block-tcp-port-v4\0"),
            nlattr(PAYLOAD, &[0x45, 0, 0, 20]),
        ]);
        d.extend(packet(&[nlattr(PAYLOAD, &[0x60])]));
        // NLMSG_ERROR with errno -EPERM for seq 3.
        let mut err = 36u32.to_ne_bytes().to_vec();
        err.extend_from_slice(&2u16.to_ne_bytes());
        err.extend_from_slice(&[0, 0]);
        err.extend_from_slice(&3u32.to_ne_bytes());
        err.extend_from_slice(&[0; 4]);
        err.extend_from_slice(&(-1i32).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        d.extend(err);
        assert_eq!(
            parse_datagram(&d),
            vec![
                Event::Packet {
                    prefix: Some("apiserver-guard:block-tcp-port-v4".into()),
                    payload: vec![0x45, 0, 0, 20],
                    interface: None,
                },
                Event::Packet {
                    prefix: None,
                    payload: vec![0x60],
                    interface: None,
                },
                Event::Ack { seq: 3, errno: 1 },
            ]
        );
    }

    #[test]
    fn the_interface_is_the_bridge_port_when_bridged_else_the_input_device() {
        // The kernel sends interface indexes big-endian.
        let routed = packet(&[nlattr(INDEV, &7u32.to_be_bytes()), nlattr(PAYLOAD, &[0x45])]);
        let bridged = packet(&[
            nlattr(INDEV, &3u32.to_be_bytes()),
            nlattr(PHYSINDEV, &9u32.to_be_bytes()),
            nlattr(PAYLOAD, &[0x45]),
        ]);
        let interfaces: Vec<Option<u32>> = [routed, bridged]
            .iter()
            .flat_map(|d| parse_datagram(d))
            .map(|e| match e {
                Event::Packet { interface, .. } => interface,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(interfaces, [Some(7), Some(9)]);
    }

    #[test]
    fn malformed_messages_are_reported_without_hiding_the_next() {
        // A prefix without its terminating NUL does not decode; the next message does.
        let mut d = packet(&[nlattr(PREFIX, b"apiserver-guard:block")]);
        d.extend(packet(&[nlattr(PREFIX, b"x\0")]));
        assert_eq!(
            parse_datagram(&d),
            vec![
                Event::Malformed,
                Event::Packet {
                    prefix: Some("x".into()),
                    payload: vec![],
                    interface: None,
                }
            ]
        );
        // A length beyond the datagram, a short tail, garbage.
        let mut d = packet(&[]);
        d[0] = 200;
        assert_eq!(parse_datagram(&d), vec![Event::Malformed]);
        assert_eq!(parse_datagram(&[1, 2, 3]), vec![Event::Malformed]);
        assert!(parse_datagram(&[]).is_empty());
        for n in 0..64u8 {
            let g: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = parse_datagram(&g);
        }
        // Another subsystem (nf_tables) is ignored.
        let mut d = packet(&[]);
        d[5] = 10;
        assert_eq!(parse_datagram(&d), vec![Event::Ignored]);
    }
}
