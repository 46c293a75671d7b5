//! A minimal NFLOG listener for tests (not the daemon's reader): binds one
//! NFLOG group on a raw nfnetlink socket in the calling thread's network
//! namespace and collects (prefix, payload length, source address) of the
//! packets the kernel copies to it. Enough to prove that our log rules
//! deliver, with the prefix and snaplen they promise.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub prefix: String,
    /// Bytes copied (the rule's snaplen caps it).
    pub copied: usize,
    pub source: Option<IpAddr>,
}

/// A socket bound to one NFLOG group.
pub struct NflogProbe {
    fd: libc::c_int,
}

impl Drop for NflogProbe {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

impl NflogProbe {
    /// Binds `group` (copy mode: packet, up to 0xffff bytes: the rule's snaplen decides).
    pub fn bind(group: u16) -> io::Result<NflogProbe> {
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let probe = NflogProbe { fd };
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        probe.request(NetfilterProtoFamily::Unspec, group, ConfigCmd::Bind.into())?;
        probe.request(
            NetfilterProtoFamily::Unspec,
            group,
            ConfigMode::new(0xffff, netlink_packet_netfilter::nflog::CopyMode::Packet).into(),
        )?;
        Ok(probe)
    }

    fn request(
        &self,
        family: NetfilterProtoFamily,
        group: u16,
        nla: netlink_packet_netfilter::nflog::ConfigNla,
    ) -> io::Result<()> {
        let msg = config_request(family, group, vec![nla]);
        let mut buf = vec![0; msg.header.length as usize];
        msg.serialize(&mut buf[..]);
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let n = unsafe {
            libc::sendto(
                self.fd,
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // The acknowledgement.
        let mut rx = vec![0u8; 8192];
        let n = unsafe { libc::recv(self.fd, rx.as_mut_ptr() as *mut libc::c_void, rx.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        match <NetlinkMessage<NetfilterMessage>>::deserialize(&rx[..n as usize]) {
            Ok(NetlinkMessage {
                payload: NetlinkPayload::Error(e),
                ..
            }) if e.code.is_some() => Err(io::Error::other(format!("nflog config refused: {e}"))),
            Ok(_) => Ok(()),
            Err(e) => Err(io::Error::other(format!("nflog ack: {e}"))),
        }
    }

    /// Packets received until `want` of them came or `timeout` passed.
    pub fn collect(&self, want: usize, timeout: Duration) -> Vec<Logged> {
        let mut out = Vec::new();
        let start = Instant::now();
        let mut rx = vec![0u8; 65536];
        while out.len() < want && start.elapsed() < timeout {
            let n = unsafe { libc::recv(self.fd, rx.as_mut_ptr() as *mut libc::c_void, rx.len(), 0) };
            if n <= 0 {
                continue;
            }
            let mut at = 0;
            while at < n as usize {
                let Ok(m) = <NetlinkMessage<NetfilterMessage>>::deserialize(&rx[at..n as usize]) else {
                    break;
                };
                let len = m.header.length as usize;
                if let NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                    ..
                }) = &m.payload
                {
                    out.push(logged(nlas));
                }
                if len == 0 {
                    break;
                }
                at += len.div_ceil(4) * 4;
            }
        }
        out
    }
}

fn logged(nlas: &[PacketNla]) -> Logged {
    let mut l = Logged {
        prefix: String::new(),
        copied: 0,
        source: None,
    };
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => l.prefix = p.to_string_lossy().into_owned(),
            PacketNla::Payload(p) => {
                l.copied = p.len();
                l.source = match p.first().map(|b| b >> 4) {
                    Some(4) if p.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&p[12..16]).unwrap())),
                    Some(6) if p.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap())),
                    _ => None,
                };
            }
            _ => {}
        }
    }
    l
}
