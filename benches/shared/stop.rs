//! The stop flag: SIGINT and SIGTERM only set it, and every loop of a bench checks it, so an
//! interrupted run returns an error and unwinds normally, and the drops delete the network
//! namespaces (a panic unwinds through the same drops).

use std::sync::atomic::{AtomicBool, Ordering};

use super::R;

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub fn check_stop() -> R<()> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}
