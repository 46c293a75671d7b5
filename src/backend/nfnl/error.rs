//! `NfnlError`: what the kernel (or the socket) refused, sorted once into a
//! few kinds callers act on, with the index of the batch message that failed.
//! Nobody else matches on errno values or message text.

use std::fmt;

/// The kinds of failure callers tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfnlErrorKind {
    /// EPERM / EACCES: no CAP_NET_ADMIN, or the table is owned by another socket.
    PermissionDenied,
    /// ENOENT: a table, chain, set, element or rule named in the message does not exist.
    NotFound,
    /// EEXIST: created with NLM_F_EXCL over an existing object, or an
    /// incompatible redefinition (e.g. a set with another key type).
    Exists,
    /// EBUSY / EAGAIN, or the kernel did not answer in time: try again later.
    Busy,
    /// EOPNOTSUPP: the kernel lacks the feature (e.g. table flag persist) or
    /// refuses the change (e.g. dropping or adding `owner` on an existing table).
    NotSupported,
    /// Anything else, with its errno.
    Other(i32),
}

impl NfnlErrorKind {
    /// Sorts a (positive) errno.
    pub fn from_errno(errno: i32) -> NfnlErrorKind {
        match errno {
            libc::EPERM | libc::EACCES => NfnlErrorKind::PermissionDenied,
            libc::ENOENT => NfnlErrorKind::NotFound,
            libc::EEXIST => NfnlErrorKind::Exists,
            libc::EBUSY | libc::EAGAIN | libc::ETIMEDOUT => NfnlErrorKind::Busy,
            libc::EOPNOTSUPP => NfnlErrorKind::NotSupported,
            other => NfnlErrorKind::Other(other),
        }
    }
}

/// A failed exchange with nf_tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfnlError {
    pub kind: NfnlErrorKind,
    /// The positive errno (ETIMEDOUT when the kernel did not answer in time,
    /// EPROTO for a reply we could not decode).
    pub errno: i32,
    /// Index (0-based) of the message of the batch the kernel refused; `None`
    /// when the failure concerns the whole batch (e.g. the commit itself
    /// failed) or is not about a batch (a dump, the socket).
    pub index: Option<usize>,
    /// What we were doing, in plain words (e.g. "message 3 of 5 (new rule)").
    pub context: String,
}

impl NfnlError {
    pub fn new(errno: i32, index: Option<usize>, context: impl Into<String>) -> NfnlError {
        NfnlError {
            kind: NfnlErrorKind::from_errno(errno),
            errno,
            index,
            context: context.into(),
        }
    }

    /// From an I/O error of the socket itself; a receive timeout becomes
    /// `Busy` with ETIMEDOUT.
    pub fn io(err: &std::io::Error, context: impl Into<String>) -> NfnlError {
        let errno = match err.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => libc::ETIMEDOUT,
            _ => err.raw_os_error().unwrap_or(libc::EIO),
        };
        NfnlError::new(errno, None, context)
    }

    /// A reply that does not parse (EPROTO).
    pub fn malformed(context: impl Into<String>) -> NfnlError {
        NfnlError::new(libc::EPROTO, None, context)
    }

    pub fn is(&self, kind: NfnlErrorKind) -> bool {
        self.kind == kind
    }
}

impl fmt::Display for NfnlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.errno {
            libc::ETIMEDOUT => "the kernel did not answer in time".to_string(),
            libc::EPROTO => "unexpected reply from the kernel".to_string(),
            e => std::io::Error::from_raw_os_error(e).to_string(),
        };
        write!(f, "nf_tables: {}: {what}", self.context)
    }
}

impl std::error::Error for NfnlError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_sorted_into_kinds() {
        use NfnlErrorKind::*;
        let cases = [
            (libc::EPERM, PermissionDenied),
            (libc::EACCES, PermissionDenied),
            (libc::ENOENT, NotFound),
            (libc::EEXIST, Exists),
            (libc::EBUSY, Busy),
            (libc::EAGAIN, Busy),
            (libc::ETIMEDOUT, Busy),
            (libc::EOPNOTSUPP, NotSupported),
            (libc::EINVAL, Other(libc::EINVAL)),
            (libc::ELOOP, Other(libc::ELOOP)),
        ];
        for (errno, kind) in cases {
            assert_eq!(NfnlErrorKind::from_errno(errno), kind, "errno {errno}");
        }
    }

    #[test]
    fn a_receive_timeout_is_busy() {
        let e = NfnlError::io(&std::io::Error::from_raw_os_error(libc::EAGAIN), "waiting for acks");
        assert_eq!((e.kind, e.errno), (NfnlErrorKind::Busy, libc::ETIMEDOUT));
        assert_eq!(
            e.to_string(),
            "nf_tables: waiting for acks: the kernel did not answer in time"
        );
    }

    #[test]
    fn message_names_context_and_errno_in_plain_words() {
        let e = NfnlError::new(libc::ENOENT, Some(2), "message 3 of 4 (new rule)");
        assert_eq!(e.kind, NfnlErrorKind::NotFound);
        assert_eq!(e.index, Some(2));
        let s = e.to_string();
        assert!(
            s.starts_with("nf_tables: message 3 of 4 (new rule): No such file or directory"),
            "{s}"
        );
        assert!(!s.contains("NfnlError"), "{s}");
    }
}
