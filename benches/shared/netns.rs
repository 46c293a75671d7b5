//! Entering a network namespace with setns(2), given an open fd of `/run/netns/NAME`: the calling
//! thread, or a command's child between fork and exec (no `ip netns exec` in the measured times).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Moves the calling thread into the network namespace `fd` (only this thread).
pub fn enter(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: plain syscall on a valid open fd; affects only the calling thread.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes `cmd`'s child enter the network namespace `fd` before exec; `fd` must stay open until
/// the command is spawned.
pub fn exec_in(cmd: &mut Command, fd: RawFd) {
    // SAFETY: between fork and exec only setns(2), a plain syscall on an fd that stays open in
    // the child.
    unsafe {
        cmd.pre_exec(move || enter(fd));
    }
}
