//! Thread-per-core serving for the proxy listener: `n` threads, each with a single-threaded runtime and its own
//! descriptor of the one listening socket (a `dup`, not `SO_REUSEPORT`, so no other process can join the socket
//! and the kernel hands each connection to whichever thread accepts first). A connection is served start to end
//! on the thread that accepted it: its tasks, timers and the HTTP/1.1 upstream connections it uses never wake
//! another thread, and no work-stealing scheduler runs on the hot path.
//!
//! What is shared stays shared: the current configuration (one atomic load per request), the token cache, the
//! metrics, and an origin's one multiplexed connection when the upstream speaks HTTP/2. The admin and token-service listeners, token refreshers and signal handling run on the runtime
//! that calls [`serve_per_core`].

use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::{HttpService, Listener, Server};

thread_local! {
    /// See [`runtime_key`]: 0 outside the proxy threads, `index + 1` on proxy thread `index`.
    static RUNTIME_KEY: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Which runtime the calling thread runs: a proxy thread's own (1, 2, …) or any other (0). The upstream client
/// hands an idle connection only to requests on the runtime whose task drives it.
pub fn runtime_key() -> usize {
    RUNTIME_KEY.with(std::cell::Cell::get)
}

/// How long a proxy thread's runtime waits, after its connections are done, for blocking work still running.
const THREAD_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `listener` with `server` on `threads` threads (see the module docs) until `stop` turns true; each
/// thread then drains its own connections until they close or `deadline` turns true. Returns once every thread
/// is done. A thread that cannot start is logged and the others serve; when none can, this runtime serves.
///
/// The listener itself is held until accepting stops, then dropped (a Unix socket's file is removed then). Every
/// thread keeps its runtime running until all of them have drained: work one thread started (a token fetch that
/// others wait for, an HTTP/2 upstream connection they share) ends only when no thread can need it.
pub async fn serve_per_core<S: HttpService>(
    server: Server<S>,
    listener: Listener,
    threads: NonZeroUsize,
    stop: watch::Receiver<bool>,
    deadline: watch::Receiver<bool>,
) {
    let mut finished = Vec::with_capacity(threads.get());
    let (release, released) = watch::channel(false);
    for index in 0..threads.get() {
        match start_thread(index, &server, &listener, &stop, &deadline, &released).await {
            Ok(done) => finished.push(done),
            Err(e) => tracing::error!(thread = index, error = %e, "cannot start a proxy thread"),
        }
    }
    if finished.is_empty() {
        tracing::warn!("no proxy thread could start; serving from the main runtime");
        server
            .serve(listener, stop, wait_true(deadline.clone()))
            .await;
        return;
    }
    let mut stop = stop;
    let _ = stop.wait_for(|s| *s).await;
    drop(listener);
    for done in finished {
        let _ = done.await;
    }
    let _ = release.send(true);
}

/// Starts proxy thread `index`; resolves once its runtime runs, to a receiver that resolves when it is done.
async fn start_thread<S: HttpService>(
    index: usize,
    server: &Server<S>,
    listener: &Listener,
    stop: &watch::Receiver<bool>,
    deadline: &watch::Receiver<bool>,
    released: &watch::Receiver<bool>,
) -> std::io::Result<oneshot::Receiver<()>> {
    let shared = listener.share()?;
    let server = server.clone();
    let (stop, deadline, released) = (stop.clone(), deadline.clone(), released.clone());
    let (started_tx, started) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("proxy-{index}"))
        .spawn(move || {
            RUNTIME_KEY.with(|key| key.set(index + 1));
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let listener = match runtime.block_on(async { shared.register() }) {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            runtime.block_on(async move {
                server.serve(listener, stop, wait_true(deadline)).await;
                let _ = done_tx.send(());
                wait_true(released).await;
            });
            runtime.shutdown_timeout(THREAD_SHUTDOWN_GRACE);
        })?;
    match started.await {
        Ok(Ok(())) => Ok(done),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("the thread ended while starting")),
    }
}

/// Resolves once `rx` holds true (or its sender is gone).
pub(crate) async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
