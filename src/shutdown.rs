//! One shutdown signal that every stage watches, raised by SIGTERM or SIGINT.
//!
//! Blocking stages (the OpenCV threads) wait on it with [`Shutdown::sleep`] or poll
//! [`Shutdown::is_requested`]; async tasks await [`Shutdown::requested`]. A second signal while shutting
//! down ends the process at once with status 1 (signal-hook's conditional shutdown).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use signal_hook::consts::{SIGINT, SIGTERM};
use tokio_util::sync::CancellationToken;

/// Cloneable handle; all clones see the same request.
#[derive(Clone)]
pub struct Shutdown {
    token: CancellationToken,
    /// Disconnected (sender dropped) once shutdown is requested: lets blocking threads wait with a timeout.
    closed: Receiver<()>,
    sender: Arc<Mutex<Option<Sender<()>>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (sender, closed) = crossbeam_channel::bounded(0);
        Self {
            token: CancellationToken::new(),
            closed,
            sender: Arc::new(Mutex::new(Some(sender))),
        }
    }

    /// Asks every stage to stop. Idempotent.
    pub fn request(&self) {
        self.token.cancel();
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
    }

    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when shutdown is requested.
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }

    /// Sleeps for `duration` or until shutdown is requested; returns true if shutdown was requested.
    pub fn sleep(&self, duration: Duration) -> bool {
        match self.closed.recv_timeout(duration) {
            Err(RecvTimeoutError::Timeout) => self.is_requested(),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        }
    }

    /// A receiver that becomes disconnected on shutdown, for `crossbeam_channel::select!`.
    pub fn closed(&self) -> &Receiver<()> {
        &self.closed
    }

    /// Routes SIGTERM and SIGINT to [`Shutdown::request`]; a second signal exits with status 1.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        let first_seen = Arc::new(AtomicBool::new(false));
        for signal in [SIGTERM, SIGINT] {
            // Registered before the flag is set, so it fires only on the second signal.
            signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&first_seen))?;
        }
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let shutdown = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let name = if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    };
                    tracing::info!(
                        signal = name,
                        "shutdown requested; finishing the clip and pending uploads"
                    );
                    first_seen.store(true, Ordering::SeqCst);
                    shutdown.request();
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn sleep_returns_early_on_request() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.sleep(Duration::from_millis(10)));
        let other = shutdown.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.request();
        });
        let started = Instant::now();
        assert!(shutdown.sleep(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(5));
        waker.join().unwrap();
        assert!(shutdown.is_requested());
    }
}
