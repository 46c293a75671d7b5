//! Entering a network namespace with setns(2), given an open fd of `/run/netns/NAME`: the calling
//! thread (the library's `verify::netns::enter`, re-exported), or a command's child between fork
//! and exec (no `ip netns exec` in the measured times).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

pub use apiserver_guard::verify::netns::enter;

/// Makes `cmd`'s child enter the network namespace `fd` before exec; `fd` must stay open until
/// the command is spawned.
pub fn exec_in(cmd: &mut Command, fd: RawFd) {
    // SAFETY: between fork and exec only setns(2), a plain syscall on an fd that stays open in
    // the child.
    unsafe {
        cmd.pre_exec(move || enter(fd));
    }
}
