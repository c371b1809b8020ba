//! Opus for WebRTC viewers of streams whose sound is AAC (RTMP and SRT publishers).
//!
//! One transcode runs per stream, whatever the number of viewers: the first viewer that needs
//! it starts a task that subscribes to the stream in the relay, turns its AAC into Opus
//! ([`streamgate_transcode::AacToOpus`]) and broadcasts the Opus frames; every later viewer
//! joins the same broadcast. Each viewer holds an [`OpusFeed`]; when the last one is dropped
//! the task stops. Opus frames are wrapped in [`SharedFrame`]s, so their RTP payloads are
//! produced once for every viewer, as for any other frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use streamgate_media::{AacConfig, Codec};
use streamgate_relay::{Event, Hub, SharedFrame, Subscriber};
use streamgate_transcode::AacToOpus;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Opus frames buffered per viewer: 256 frames of 20 ms, about 5 s. A viewer that falls
/// further behind loses the oldest frames (the loss is logged) and goes on with the newest.
pub const OPUS_FEED_CAPACITY: usize = 256;

/// The running transcodes, by stream name.
#[derive(Debug, Default)]
pub struct OpusFeeds {
    feeds: Mutex<HashMap<String, Weak<Feed>>>,
}

/// One stream's transcode task; dropping the last reference stops it.
#[derive(Debug)]
struct Feed {
    tx: broadcast::Sender<Arc<SharedFrame>>,
    stop: CancellationToken,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One viewer's share of a stream's transcode.
#[derive(Debug)]
pub struct OpusFeed {
    _feed: Arc<Feed>,
    rx: broadcast::Receiver<Arc<SharedFrame>>,
    lost: u64,
}

impl OpusFeed {
    /// The next Opus frame. Frames lost to lag are skipped.
    pub async fn recv(&mut self) -> Option<Arc<SharedFrame>> {
        loop {
            match self.rx.recv().await {
                Ok(f) => return Some(f),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lost += n;
                    tracing::debug!(lost = self.lost, "WebRTC viewer fell behind the Opus feed");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next Opus frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<SharedFrame>> {
        loop {
            match self.rx.try_recv() {
                Ok(f) => return Some(f),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lost += n,
                Err(_) => return None,
            }
        }
    }
}

impl OpusFeeds {
    /// Joins the transcode of `name`, starting it if no viewer runs it yet.
    /// The transcode's own subscription is no viewer of any format: it does not count as
    /// demand for the stream.
    pub fn join(&self, hub: &Hub, name: &str) -> OpusFeed {
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        feeds.retain(|_, f| f.strong_count() > 0);
        if let Some(feed) = feeds.get(name).and_then(Weak::upgrade) {
            let rx = feed.tx.subscribe();
            return OpusFeed {
                _feed: feed,
                rx,
                lost: 0,
            };
        }
        let (tx, rx) = broadcast::channel(OPUS_FEED_CAPACITY);
        let feed = Arc::new(Feed {
            tx: tx.clone(),
            stop: CancellationToken::new(),
        });
        feeds.insert(name.to_owned(), Arc::downgrade(&feed));
        drop(feeds);
        let sub = hub.subscribe(name);
        tokio::spawn(transcode(sub, tx, feed.stop.clone()));
        OpusFeed {
            _feed: feed,
            rx,
            lost: 0,
        }
    }

    /// Number of transcodes running now.
    pub fn running(&self) -> usize {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        feeds.values().filter(|f| f.strong_count() > 0).count()
    }
}

/// The transcode task of one stream: relay AAC in, broadcast Opus out, until `stop`.
async fn transcode(
    mut sub: Subscriber,
    tx: broadcast::Sender<Arc<SharedFrame>>,
    stop: CancellationToken,
) {
    let name = sub.name().to_owned();
    tracing::info!(stream = %name, "AAC -> Opus transcode started");
    let mut state: Option<(AacConfig, Option<AacToOpus>)> = None;
    let mut errors: u64 = 0;
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => break,
            ev = sub.recv() => ev,
        };
        match ev {
            Event::Started(config) => {
                let Some(aac) = config.config.audio.clone() else {
                    state = None;
                    continue;
                };
                if state.as_ref().is_some_and(|(c, _)| *c == aac) {
                    continue;
                }
                let t = match AacToOpus::new(&aac) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!(stream = %name, error = %e, "WebRTC viewers get no sound");
                        None
                    }
                };
                state = Some((aac, t));
            }
            Event::Ended => state = None,
            Event::Frame(f) if f.frame.codec == Codec::Aac => {
                let Some((_, Some(t))) = state.as_mut() else {
                    continue;
                };
                match t.push(&f.frame) {
                    Ok(out) => {
                        for o in out {
                            // No receiver at this instant is not an error: viewers come and go.
                            let _ = tx.send(Arc::new(SharedFrame::new(o)));
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if errors.is_power_of_two() {
                            tracing::warn!(stream = %name, error = %e, errors, "AAC frame skipped");
                        }
                    }
                }
            }
            Event::Frame(_) => {}
        }
    }
    tracing::info!(stream = %name, "AAC -> Opus transcode stopped");
}
