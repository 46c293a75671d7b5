//! The daemon's stop request: SIGTERM and SIGINT are caught by one task
//! from the first moment of the runtime and turned into a flag every part of
//! the daemon can await. The control loop races each piece of work against
//! it, so a stop is honoured within a second whatever the daemon is doing
//! (waiting for discovery, a firewall tool that hangs, a probe).

use crate::error::{Error, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A cloneable handle on "a stop was requested".
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Installs the SIGTERM/SIGINT handlers (inside the runtime).
    pub fn install() -> Result<Stop> {
        let signal_err = |e: std::io::Error| Error::runtime(format!("cannot install signal handlers: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
        let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            log::info!("{name}: stopping");
            let _ = tx.send(true);
            // Keep the sender (and the handlers) alive until the process ends.
            std::future::pending::<()>().await;
        });
        Ok(Stop(rx))
    }

    /// A handle that never fires (tests, one-shot use).
    pub fn never() -> Stop {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Stop(rx)
    }

    /// Whether a stop was requested already.
    pub fn requested_now(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop was requested (at once if it already was).
    pub async fn requested(&mut self) {
        if self.0.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn never_does_not_fire() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut s = Stop::never();
            let fired = tokio::time::timeout(Duration::from_millis(50), s.requested()).await;
            assert!(fired.is_err());
        });
    }
}
