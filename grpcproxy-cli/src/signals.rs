//! The process's signals: SIGTERM and Ctrl-C drain (a second one exits at once), SIGHUP
//! reloads in config mode and is logged and ignored in quick mode. Every handler is
//! installed before the proxy says it listens, so a signal sent right after never finds
//! the default action (which ends the process).

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Ctrl-C and SIGTERM, caught from now on.
struct Stops {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Stops {
    fn install() -> Self {
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Waits for the next Ctrl-C or SIGTERM and names it.
    async fn next(&mut self) -> &'static str {
        async fn recv(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => "interrupt",
            () = recv(&mut self.terminate) => "SIGTERM",
        }
    }
}

/// Catches Ctrl-C and SIGTERM from now on; the future completes on the first. From then
/// on, a second one ends the process at once (exit code 130), without waiting for the drain.
pub(crate) fn shutdown() -> impl Future<Output = ()> {
    let mut stops = Stops::install();
    async move {
        let first = stops.next().await;
        tracing::info!("{first} received; draining (send it again to exit at once)");
        tokio::spawn(async move {
            let second = stops.next().await;
            tracing::warn!("{second} received again; exiting without waiting for in-flight calls");
            std::process::exit(130);
        });
    }
}

/// SIGHUP, caught from now on.
pub(crate) fn hangups() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    }
}

/// In quick mode there is nothing to reload: SIGHUP (which would otherwise end the process)
/// is logged and ignored for as long as the process runs.
pub(crate) fn ignore_hangups(hangups: Option<Signal>) {
    if let Some(mut hangups) = hangups {
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!(
                    "SIGHUP received: quick mode has no configuration to reload (run with --config for reloads); ignored"
                );
            }
        });
    }
}
