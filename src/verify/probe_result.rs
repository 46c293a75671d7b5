//! How one probe ended (an `Outcome`), decoded from the socket error of its
//! connect or TLS handshake. No I/O; the verdicts drawn from outcomes are in
//! `outcome`, the evidence about who produced them in `evidence`.

use serde::Serialize;
use std::io;

/// How one TCP (and optionally TLS) probe ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    /// The TCP handshake completed.
    Connected,
    /// TCP and a TLS handshake completed (any certificate accepted, as `curl -k`); the detail
    /// names the protocol version.
    TlsOk(String),
    /// TCP connected but the TLS handshake failed (not TLS, alert, timeout): the endpoint was
    /// reached all the same.
    TlsFailed(String),
    /// ECONNREFUSED: a TCP reset answered the SYN (our reject, or nothing listening).
    Refused,
    /// ECONNRESET / EPIPE during or right after the connect.
    Reset,
    /// An ICMP error or no route (EHOSTUNREACH, ENETUNREACH, EACCES, EPERM); the detail says which.
    Unreachable(String),
    /// No answer before the timeout (a drop).
    TimedOut,
    /// The probe itself could not run (bind failed, no socket...).
    Error(String),
}

impl Outcome {
    /// Decodes a connect (or handshake) error.
    pub fn from_io(e: &io::Error) -> Outcome {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Outcome::Refused,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) | Some(libc::ECONNABORTED) => Outcome::Reset,
            Some(libc::EHOSTUNREACH) => {
                Outcome::Unreachable("host unreachable (an ICMP error, or an unreachable route)".into())
            }
            Some(libc::ENETUNREACH) => Outcome::Unreachable("network unreachable (no route)".into()),
            Some(libc::EACCES) | Some(libc::EPERM) => {
                Outcome::Unreachable("administratively prohibited (a firewall on the path, or a prohibit route)".into())
            }
            Some(libc::ETIMEDOUT) => Outcome::TimedOut,
            _ => match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::TimedOut,
                io::ErrorKind::ConnectionRefused => Outcome::Refused,
                io::ErrorKind::ConnectionReset => Outcome::Reset,
                _ => Outcome::Error(e.to_string()),
            },
        }
    }

    /// The TCP connection was established: the endpoint was reached from where we probed.
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Connected | Outcome::TlsOk(_) | Outcome::TlsFailed(_))
    }

    /// The probe ran and ended without reaching the endpoint.
    pub fn stopped(&self) -> bool {
        matches!(
            self,
            Outcome::Refused | Outcome::Reset | Outcome::Unreachable(_) | Outcome::TimedOut
        )
    }

    /// Short name, as in the table and the metrics' `outcome` label.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::TlsOk(_) => "tls-ok",
            Outcome::TlsFailed(_) => "tls-failed",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::TimedOut => "timed-out",
            Outcome::Error(_) => "error",
        }
    }

    /// Every `name()`, for one-hot metrics.
    pub const NAMES: [&'static str; 8] = [
        "connected",
        "tls-ok",
        "tls-failed",
        "refused",
        "reset",
        "unreachable",
        "timed-out",
        "error",
    ];

    /// Human wording for the table.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Connected => "connected".into(),
            Outcome::TlsOk(v) => format!("TLS ok ({v})"),
            Outcome::TlsFailed(why) => format!("connected, TLS failed: {why}"),
            Outcome::Refused => "refused".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Unreachable(why) => format!("unreachable: {why}"),
            Outcome::TimedOut => "timed out".into(),
            Outcome::Error(why) => format!("could not probe: {why}"),
        }
    }
}
