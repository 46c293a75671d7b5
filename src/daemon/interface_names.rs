//! Names of network interfaces by index, for the rows of the attempts
//! table: asked of the kernel (`if_indextoname`) once per index and kept
//! for a few seconds only, since a deleted pod's index can come back as
//! another pod's veth.

use std::collections::HashMap;
use std::ffi::CStr;
use std::time::{Duration, Instant};

/// How long a name is kept before the kernel is asked again.
const KEEP: Duration = Duration::from_secs(10);

/// The cache.
pub struct InterfaceNames {
    names: HashMap<u32, String>,
    since: Instant,
}

impl Default for InterfaceNames {
    fn default() -> Self {
        InterfaceNames {
            names: HashMap::new(),
            since: Instant::now(),
        }
    }
}

impl InterfaceNames {
    /// The name of interface `index` (`if<N>` when no interface has it now).
    pub fn name(&mut self, index: u32) -> String {
        if self.since.elapsed() >= KEEP {
            self.names.clear();
            self.since = Instant::now();
        }
        self.names.entry(index).or_insert_with(|| lookup(index)).clone()
    }
}

fn lookup(index: u32) -> String {
    let mut buf: [libc::c_char; libc::IF_NAMESIZE] = [0; libc::IF_NAMESIZE];
    // SAFETY: `buf` is IF_NAMESIZE bytes, as if_indextoname requires; on
    // success it holds a NUL-terminated name.
    let named = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if named.is_null() {
        return format!("if{index}");
    }
    // SAFETY: if_indextoname returned `buf`, NUL-terminated within it.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_named_and_an_unknown_index_says_its_number() {
        let mut n = InterfaceNames::default();
        assert_eq!(n.name(1), "lo", "index 1 is loopback in every network namespace");
        assert_eq!(n.name(u32::MAX), format!("if{}", u32::MAX));
        assert_eq!(n.names.len(), 2, "kept");
    }
}
