//! The daemon's limit on open files, raised at start from the soft limit to
//! the hard one (as Go's runtime does since 1.19). systemd gives services a
//! soft limit of 1024; a break-it round held that many connections open to
//! the health listener from a pod, and every firewall tool the iptables
//! backends run then failed to start ("Too many open files"), so a foreign
//! flush went unrepaired while pods' connects were served. The listener now
//! caps its own connections (`http::MAX_CONNECTIONS`); the raised limit
//! leaves the rest of the daemon room whatever else holds descriptors.

/// The soft and hard limits on open files before and after the raise, or
/// None if they could not be read.
pub struct Raised {
    pub before: u64,
    pub after: u64,
}

/// Raises the soft limit on open files to the hard one.
pub fn raise_nofile() -> Option<Raised> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit
        // up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Some(Raised { before, after: before });
        }
    }
    Some(Raised {
        before,
        after: lim.rlim_cur,
    })
}
