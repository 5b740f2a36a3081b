//! Signals of a running proxy: SIGTERM/SIGINT drain (a second one stops at once), SIGHUP reloads.

use tokio::signal::unix::{SignalKind, signal};

use crate::app::Reloader;

/// Two futures: the first SIGTERM/SIGINT, and the second one.
pub(super) fn signals() -> std::io::Result<(
    impl Future<Output = ()>,
    impl Future<Output = ()> + Send + 'static,
)> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    let wait = |count: u32, mut rx: tokio::sync::watch::Receiver<u32>| async move {
        let _ = rx.wait_for(|n| *n >= count).await;
    };
    Ok((wait(1, rx.clone()), wait(2, rx)))
}

/// Reloads the configuration on every SIGHUP (a bad file keeps the running configuration; see [`Reloader`]).
pub(super) fn reload_on_sighup(reloader: Reloader) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: configuration reload is unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = reloader.reload().await;
        }
    });
}
