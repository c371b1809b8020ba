//! How many WebRTC sessions (and transcodes for them) read each stream, so that a browser
//! publisher can tell whether anyone else (an RTMP or SRT viewer) needs its sound in AAC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts of WebRTC readers by stream name.
#[derive(Debug, Default, Clone)]
pub struct WebRtcReaders {
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// One reader, counted while it lives.
#[derive(Debug)]
pub struct ReaderGuard {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    name: String,
}

impl WebRtcReaders {
    /// Counts a reader of `name` until the guard is dropped.
    pub fn enter(&self, name: &str) -> ReaderGuard {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry(name.to_owned()).or_insert(0) += 1;
        ReaderGuard {
            counts: Arc::clone(&self.counts),
            name: name.to_owned(),
        }
    }

    /// Readers of `name` now.
    pub fn count(&self, name: &str) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(name).copied().unwrap_or(0)
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_uncount() {
        let r = WebRtcReaders::default();
        let a = r.enter("live/a");
        let b = r.enter("live/a");
        assert_eq!(r.count("live/a"), 2);
        drop(a);
        assert_eq!(r.count("live/a"), 1);
        drop(b);
        assert_eq!(r.count("live/a"), 0);
        assert!(r
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty());
    }
}
