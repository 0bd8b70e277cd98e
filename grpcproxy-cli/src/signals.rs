//! The process's signals: SIGTERM and Ctrl-C drain (a second one exits at once), SIGHUP
//! reloads in config mode and is logged and ignored in quick mode.

/// Completes on Ctrl-C or SIGTERM. From then on, a second Ctrl-C or SIGTERM ends the
/// process at once (exit code 130), without waiting for the drain.
pub(crate) async fn shutdown() {
    let first = next_stop().await;
    tracing::info!("{first} received; draining (send it again to exit at once)");
    tokio::spawn(async {
        let second = next_stop().await;
        tracing::warn!("{second} received again; exiting without waiting for in-flight calls");
        std::process::exit(130);
    });
}

/// Waits for the next Ctrl-C or SIGTERM and names it.
async fn next_stop() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "interrupt",
        () = term => "SIGTERM",
    }
}

/// In quick mode there is nothing to reload: SIGHUP (which would otherwise end the process)
/// is logged and ignored for as long as the process runs.
pub(crate) fn ignore_hangups() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!(
                        "SIGHUP received: quick mode has no configuration to reload (run with --config for reloads); ignored"
                    );
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
}
