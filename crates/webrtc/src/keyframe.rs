//! Keyframe requests from WebRTC viewers to the WebRTC publisher of the same stream.
//!
//! A publish session registers a [`KeyframeSlot`] under its stream name; a viewer that gets a
//! PLI or FIR from its browser (or just connected) calls [`KeyframeBoard::request`]. The slot
//! lets at most one request through per [`KEYFRAME_REQUEST_INTERVAL`]: with many viewers
//! joining or losing packets at once, the publisher is asked once, not once per viewer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Shortest time between two keyframe requests forwarded to one publisher.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Decides whether a request at `now` goes through; no clock inside.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    /// Whether a request at `now` may pass (and, if so, records it).
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < KEYFRAME_REQUEST_INTERVAL => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// One publisher's inbox of keyframe requests.
#[derive(Debug, Default)]
pub struct KeyframeSlot {
    limit: Mutex<RateLimit>,
    notify: Notify,
}

impl KeyframeSlot {
    /// Waits for the next request that passed the rate limit.
    pub async fn requested(&self) {
        self.notify.notified().await;
    }

    fn request(&self, now: Instant) -> bool {
        let pass = self
            .limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(now);
        if pass {
            self.notify.notify_one();
        }
        pass
    }
}

/// The WebRTC publishers that can be asked for a keyframe, by stream name.
#[derive(Debug, Default, Clone)]
pub struct KeyframeBoard {
    slots: Arc<Mutex<HashMap<String, Arc<KeyframeSlot>>>>,
}

/// Removes a publisher's slot when its session ends.
#[derive(Debug)]
pub struct SlotGuard {
    board: KeyframeBoard,
    name: String,
    slot: Arc<KeyframeSlot>,
}

impl SlotGuard {
    /// The slot to wait on.
    pub fn slot(&self) -> &Arc<KeyframeSlot> {
        &self.slot
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut slots = self.board.lock();
        if slots
            .get(&self.name)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            slots.remove(&self.name);
        }
    }
}

impl KeyframeBoard {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<KeyframeSlot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the publisher of `name` (replacing any earlier one).
    pub fn register(&self, name: &str) -> SlotGuard {
        let slot = Arc::new(KeyframeSlot::default());
        self.lock().insert(name.to_owned(), Arc::clone(&slot));
        SlotGuard {
            board: self.clone(),
            name: name.to_owned(),
            slot,
        }
    }

    /// Asks the publisher of `name` for a keyframe; whether the request was forwarded (there
    /// is a WebRTC publisher and the rate limit let it through).
    pub fn request(&self, name: &str, now: Instant) -> bool {
        let slot = self.lock().get(name).cloned();
        slot.is_some_and(|s| s.request(now))
    }

    /// Number of registered publishers.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no publisher is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_rate_limited_per_publisher() {
        let board = KeyframeBoard::default();
        let t0 = Instant::now();
        assert!(!board.request("live/a", t0), "no publisher yet");
        let guard = board.register("live/a");
        assert!(board.request("live/a", t0));
        assert!(!board.request("live/a", t0 + Duration::from_millis(100)));
        assert!(!board.request("live/a", t0 + Duration::from_millis(499)));
        assert!(board.request("live/a", t0 + KEYFRAME_REQUEST_INTERVAL));
        assert!(!board.request("live/b", t0));
        drop(guard);
        assert!(board.is_empty());
        assert!(!board.request("live/a", t0 + Duration::from_secs(5)));
    }

    #[test]
    fn a_stale_guard_does_not_remove_a_newer_publisher() {
        let board = KeyframeBoard::default();
        let old = board.register("s");
        let _new = board.register("s");
        drop(old);
        assert_eq!(board.len(), 1);
    }
}
