//! Slow uploads must not monopolise `max_in_flight`.
//!
//! A request holds one of the `max_in_flight` slots from arrival until its response ends. A caller that sends its
//! body one byte a second is never idle, so no idle timeout ends it, and `upstream_response_timeout` only starts
//! counting once the upstream has the whole request: a few dozen such callers could hold every slot for as long
//! as they like, and everyone else would be shed with `503 Overloaded`. Refusing slow bodies outright would cut
//! legitimate slow streams (a body produced as it is computed) even when the proxy has room, so the rule applies
//! only when someone is waiting for a slot:
//!
//! - Every admitted request whose body is still arriving is an **upload**. Its body reports the bytes it receives,
//!   counted over consecutive windows of `request_body_rate_window` (10 s) since the request arrived.
//! - An upload is **slow** when its last complete window brought fewer than `request_body_min_rate` (1 KiB/s)
//!   × the window's length. An upload younger than one window is never slow: that is its grace period.
//! - When a request arrives and every slot is taken, the slowest slow upload (fewest bytes in its last complete
//!   window; the oldest on a tie) is **evicted** and the newcomer is admitted in its place. The evicted request is
//!   answered `408 RequestBodyTimeout` if its response has not started (its upstream exchange is dropped), or its
//!   body fails and its connection is closed if it has. With no slow upload, the newcomer is shed as before.
//!
//! So holding a slot costs a caller `request_body_min_rate` of real bandwidth after the grace period, and a slot
//! held more cheaply is given to the next request that needs it. An evicted slot is freed as soon as the victim
//! has answered, so the in-flight count may exceed `max_in_flight` by the evictions in progress, briefly. Each
//! eviction is counted (`aml_auth_proxy_stream_timeouts_total{direction="request",kind="min_rate"}`) and logged
//! once. Uploads that stop altogether also meet `stream_idle_timeout` (`body`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::time::Instant;

use crate::lock;

/// Every upload of one configuration, and the rule that picks one to evict.
pub struct Uploads {
    entries: Mutex<HashMap<u64, Arc<Upload>>>,
    next_id: AtomicU64,
    min_rate: u64,
    window: Duration,
    evictions: IntCounter,
}

/// One upload: its byte count by window, and whether it was evicted.
pub struct Upload {
    id: u64,
    meter: Mutex<Meter>,
    evicted: AtomicBool,
    /// The request's response future, woken on eviction.
    future: WakerSlot,
    /// The request body, woken on eviction.
    body: WakerSlot,
}

/// An upload's registration: the body holds it while its bytes arrive; dropping it ends the upload.
pub struct UploadTicket {
    upload: Arc<Upload>,
    uploads: Arc<Uploads>,
}

/// Bytes received, counted over consecutive windows since the upload began.
#[derive(Debug)]
struct Meter {
    total: u64,
    /// Start of the current window.
    window_start: Instant,
    /// `total` at `window_start`.
    at_window_start: u64,
    /// Bytes received in the last complete window; `None` during the first.
    last_window: Option<u64>,
}

/// A task to wake later; registration and waking may race.
#[derive(Debug, Default)]
pub struct WakerSlot {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

// === impl Uploads ===

impl Uploads {
    /// Uploads slower than `min_rate` bytes per second over `window` may be evicted; evictions count in
    /// `evictions`.
    pub fn new(min_rate: u64, window: Duration, evictions: IntCounter) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            min_rate: min_rate.max(1),
            window: window.max(Duration::from_millis(1)),
            evictions,
        })
    }

    /// Registers a new upload, starting now.
    pub fn register(self: &Arc<Self>) -> UploadTicket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let upload = Arc::new(Upload {
            id,
            meter: Mutex::new(Meter {
                total: 0,
                window_start: Instant::now(),
                at_window_start: 0,
                last_window: None,
            }),
            evicted: AtomicBool::new(false),
            future: WakerSlot::default(),
            body: WakerSlot::default(),
        });
        lock(&self.entries).insert(id, Arc::clone(&upload));
        UploadTicket {
            upload,
            uploads: Arc::clone(self),
        }
    }

    /// Evicts the slowest slow upload, if there is one (see the module documentation); true if it did.
    pub fn evict_slowest(&self) -> bool {
        let now = Instant::now();
        let floor = self.floor();
        let victim = {
            let entries = lock(&self.entries);
            let mut slowest: Option<(u64, u64, &Arc<Upload>)> = None;
            for upload in entries.values() {
                if upload.evicted.load(Ordering::Acquire) {
                    continue;
                }
                let Some(bytes) = lock(&upload.meter).last_window(now, self.window) else {
                    continue;
                };
                let rank = (bytes, upload.id);
                if bytes < floor && slowest.is_none_or(|(b, id, _)| rank < (b, id)) {
                    slowest = Some((bytes, upload.id, upload));
                }
            }
            slowest.map(|(bytes, _, upload)| (bytes, Arc::clone(upload)))
        };
        let Some((bytes, upload)) = victim else {
            return false;
        };
        if upload.evicted.swap(true, Ordering::AcqRel) {
            // Another arrival took this one a moment ago; it must not admit two.
            return false;
        }
        self.evictions.inc();
        tracing::warn!(
            received_in_last_window = bytes,
            request_body_rate_window_s = self.window.as_secs_f64(),
            request_body_min_rate = self.min_rate,
            "max_in_flight reached: a slow upload was evicted to admit a new request"
        );
        upload.future.wake();
        upload.body.wake();
        true
    }

    /// The bytes a window must bring for its upload not to be slow.
    fn floor(&self) -> u64 {
        let per_window = self.min_rate as f64 * self.window.as_secs_f64();
        per_window.ceil() as u64
    }

    /// The number of uploads in progress.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// True when no upload is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Uploads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uploads")
            .field("min_rate", &self.min_rate)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

// === impl Upload ===

impl Upload {
    /// True once evicted.
    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Wakes `cx` on eviction; true if the upload is already evicted.
    pub fn watch(&self, cx: &Context<'_>) -> bool {
        self.future.register(cx);
        self.evicted()
    }
}

// === impl UploadTicket ===

impl UploadTicket {
    /// The upload, for watching its eviction.
    pub fn upload(&self) -> &Arc<Upload> {
        &self.upload
    }

    /// Counts `n` bytes received now.
    pub fn received(&self, n: usize) {
        lock(&self.upload.meter).add(n as u64, Instant::now(), self.uploads.window);
    }

    /// True once evicted.
    pub fn evicted(&self) -> bool {
        self.upload.evicted()
    }

    /// Wakes the body's task `cx` on eviction; true if the upload is already evicted.
    pub fn watch(&self, cx: &Context<'_>) -> bool {
        self.upload.body.register(cx);
        self.upload.evicted()
    }
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        lock(&self.uploads.entries).remove(&self.upload.id);
    }
}

impl fmt::Debug for UploadTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadTicket")
            .field("id", &self.upload.id)
            .finish_non_exhaustive()
    }
}

// === impl Meter ===

impl Meter {
    /// Moves the window forward to `now`.
    fn roll(&mut self, now: Instant, window: Duration) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < window {
            return;
        }
        let windows =
            u32::try_from(elapsed.as_nanos() / window.as_nanos().max(1)).unwrap_or(u32::MAX);
        // Bytes are counted as they arrive, so everything since `window_start` arrived in its window; later
        // complete windows (if any) brought nothing.
        self.last_window = Some(if windows == 1 {
            self.total - self.at_window_start
        } else {
            0
        });
        self.window_start += window.checked_mul(windows).unwrap_or(elapsed);
        self.at_window_start = self.total;
    }

    fn add(&mut self, n: u64, now: Instant, window: Duration) {
        self.roll(now, window);
        self.total += n;
    }

    fn last_window(&mut self, now: Instant, window: Duration) -> Option<u64> {
        self.roll(now, window);
        self.last_window
    }
}

// === impl WakerSlot ===

impl WakerSlot {
    /// Remembers `cx`'s waker (replacing an older one).
    pub fn register(&self, cx: &Context<'_>) {
        let mut waker = lock(&self.waker);
        match &*waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        self.set.store(true, Ordering::SeqCst);
    }

    /// Wakes the remembered task, if any, once.
    pub fn wake(&self) {
        if self.set.swap(false, Ordering::SeqCst)
            && let Some(waker) = lock(&self.waker).take()
        {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploads() -> Arc<Uploads> {
        Uploads::new(
            1024,
            Duration::from_secs(10),
            IntCounter::new("evictions", "test").unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_slow_during_its_first_window() {
        let uploads = uploads();
        let _idle = uploads.register();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!uploads.evict_slowest());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(uploads.evict_slowest());
    }

    #[tokio::test(start_paused = true)]
    async fn the_slowest_of_the_slow_is_evicted_and_fast_ones_never() {
        let uploads = uploads();
        let fast = uploads.register();
        let trickle = uploads.register();
        let slower = uploads.register();
        for _ in 0..10 {
            fast.received(64 * 1024);
            trickle.received(100);
            slower.received(1);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert!(uploads.evict_slowest());
        assert!(slower.evicted() && !trickle.evicted() && !fast.evicted());
        assert!(uploads.evict_slowest());
        assert!(trickle.evicted() && !fast.evicted());
        assert!(!uploads.evict_slowest(), "the fast upload is never slow");
        assert_eq!(uploads.evictions.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_long_ago_does_not_buy_a_slot_for_ever() {
        let uploads = uploads();
        let burst = uploads.register();
        burst.received(100 << 20);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!uploads.evict_slowest(), "its first window brought 100 MiB");
        // One byte a second afterwards: the next complete window brings 10 bytes.
        for _ in 0..10 {
            burst.received(1);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert!(uploads.evict_slowest());
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_upload_cannot_be_evicted() {
        let uploads = uploads();
        let done = uploads.register();
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(done);
        assert!(uploads.is_empty());
        assert!(!uploads.evict_slowest());
    }
}
