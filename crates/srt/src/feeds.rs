//! One MPEG-TS muxer per stream name, shared by every SRT viewer of the stream.
//!
//! Continuity counters and PSI timing make a frame's TS bytes depend on the frames muxed
//! before it, so the bytes cached in the relay's per-frame encode slot
//! ([`streamgate_relay::WireFormat::MpegTs`]) must all come from one muxer per stream. The
//! first viewer to reach a frame muxes it, under the stream's muxer lock; every later viewer
//! gets the same bytes. Viewers read frames in publish order, so frames are muxed in that
//! order; a viewer that lost frames by lagging may be the first to reach a later one, and then
//! sees a continuity gap where frames really were lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use streamgate_media::ts::TsMuxer;
use streamgate_media::{Frame, StreamConfig};

/// The muxer of one stream.
#[derive(Debug, Default)]
pub struct Feed {
    muxer: Mutex<TsMuxer>,
}

impl Feed {
    /// The TS packets of `frame` under `config`.
    pub fn mux(&self, frame: &Frame, config: &StreamConfig) -> Bytes {
        lock(&self.muxer).frame(frame, config)
    }
}

/// The live feeds by stream name; a feed lives while a viewer holds it.
#[derive(Debug, Default)]
pub struct Feeds {
    map: Mutex<HashMap<String, Weak<Feed>>>,
}

impl Feeds {
    /// The feed of `stream`, created if no viewer holds one.
    pub fn get(&self, stream: &str) -> Arc<Feed> {
        let mut map = lock(&self.map);
        if let Some(feed) = map.get(stream).and_then(Weak::upgrade) {
            return feed;
        }
        map.retain(|_, f| f.strong_count() > 0);
        let feed = Arc::new(Feed::default());
        map.insert(stream.to_owned(), Arc::downgrade(&feed));
        feed
    }

    /// Streams that have a feed now.
    pub fn len(&self) -> usize {
        lock(&self.map)
            .values()
            .filter(|f| f.strong_count() > 0)
            .count()
    }

    /// Whether no stream has a feed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Locks, going on past a poisoned lock (the data is a plain counter state, never half
/// written by a panic in safe code that matters here).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_of_a_stream_share_its_feed() {
        let feeds = Feeds::default();
        let a = feeds.get("live/a");
        let b = feeds.get("live/a");
        assert!(Arc::ptr_eq(&a, &b));
        let c = feeds.get("live/c");
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(feeds.len(), 2);
        drop((a, b, c));
        assert!(feeds.is_empty());
        // A new viewer after the last one left gets a fresh feed, and dead entries go.
        let _d = feeds.get("live/d");
        assert_eq!(lock(&feeds.map).len(), 1);
    }
}
