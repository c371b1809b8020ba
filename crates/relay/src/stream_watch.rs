//! Watching a stream for changes without reading it.

use std::sync::Arc;
use std::task::{Context, Poll};

use crate::hub::{HubInner, StreamEntry};
use crate::wake::{Registration, NEVER};

/// Wakes on every change to a stream (a frame pushed, a publish starting or ending), live or
/// not, without reading anything; changes that come together are reported once. For a
/// listener that serves many subscribers of one stream from one task: that task waits here,
/// then takes each subscriber's frames with [`crate::Subscriber::try_recv`], so that a push
/// wakes one task instead of every viewer's. Keeps the stream name in use, like a subscriber.
#[derive(Debug)]
pub struct StreamWatch {
    hub: Arc<HubInner>,
    entry: Arc<StreamEntry>,
    parking: Registration,
    /// The epoch last reported.
    seen: u64,
}

impl StreamWatch {
    /// A watch counted in `entry`.
    pub(crate) fn new(hub: Arc<HubInner>, entry: Arc<StreamEntry>) -> Self {
        let parking = entry.signal.register();
        Self {
            hub,
            entry,
            parking,
            seen: NEVER,
        }
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        self.entry.name()
    }

    /// Takes every change so far as seen: the next `Ready` is for a later one.
    pub fn mark_seen(&mut self) {
        self.seen = self.entry.signal.epoch();
    }

    /// Ready when the stream has changed since the last `Ready` (at once the first time);
    /// otherwise `cx`'s waker is woken at the next change.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let epoch = self.entry.signal.epoch();
        if epoch != self.seen {
            self.seen = epoch;
            return Poll::Ready(());
        }
        self.parking.park(cx.waker());
        let epoch = self.entry.signal.epoch();
        if epoch != self.seen {
            self.parking.unpark();
            self.seen = epoch;
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Marks the watch inline: the waker it parks with does its work in the wake-up call
    /// itself, on the thread that made the change (a publisher pushing frames), and is
    /// therefore woken after every other waiter of the stream, whose tasks are scheduled
    /// first.
    pub fn set_inline(&mut self) {
        self.parking.set_inline();
    }

    /// Waits for the next change (see [`StreamWatch::poll_changed`]). Cancel-safe.
    pub async fn changed(&mut self) {
        std::future::poll_fn(|cx| self.poll_changed(cx)).await
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        self.entry.signal.unregister(&self.parking);
        self.hub.detach_watcher(&self.entry);
    }
}
