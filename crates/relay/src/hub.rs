//! The hub: stream names to stream entries, and the entry each publisher and subscriber
//! holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::session::{lock, Session};
use crate::wake::Signal;
use crate::{Deriver, Publisher, RelayError, RelayLimits, StreamWatch, Subscriber, WireFormat};

/// The stream hub; clones share the same streams.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// The streams behind every clone of a [`Hub`].
#[derive(Debug, Default)]
pub(crate) struct HubInner {
    streams: Mutex<HashMap<String, Arc<StreamEntry>>>,
    pub(crate) limits: RelayLimits,
    /// What starts derived tracks; without one, every derivation is refused.
    deriver: OnceLock<Arc<dyn Deriver>>,
}

/// One stream name, live or waited for. It exists while it has a publisher or a subscriber.
///
/// Lock order: hub map, then entry state, then session state.
#[derive(Debug)]
pub(crate) struct StreamEntry {
    name: String,
    state: Mutex<EntryState>,
    /// Bumped and woken on every push and on publish start and end; subscribers wait here.
    pub(crate) signal: Signal,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    dropped: AtomicU64,
    oversized: AtomicU64,
}

/// What changes when publishers and subscribers come and go.
#[derive(Debug, Default)]
struct EntryState {
    /// The live session; `Some` exactly while a publisher is attached.
    session: Option<Arc<Session>>,
    subscribers: usize,
    /// [`StreamWatch`]es attached; they keep the entry like subscribers do.
    watchers: usize,
}

impl EntryState {
    /// Whether nobody uses the entry any more.
    fn unused(&self) -> bool {
        self.session.is_none() && self.subscribers == 0 && self.watchers == 0
    }
}

/// Counters of one stream, for metrics. Counters start at zero when the stream name is first
/// used and vanish with it (when it has neither publisher nor subscriber).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream name.
    pub name: String,
    /// Whether a publisher is attached.
    pub live: bool,
    /// Subscribers attached, waiting ones included.
    pub subscribers: usize,
    /// Frames pushed.
    pub frames_in: u64,
    /// Payload bytes pushed.
    pub bytes_in: u64,
    /// Frames lost by lagging subscribers, summed over subscribers.
    pub dropped: u64,
    /// Frames refused at the push for being larger than [`RelayLimits::max_frame_bytes`].
    pub oversized: u64,
    /// Payload bytes the live publish keeps for its subscribers (at most
    /// [`RelayLimits::buffer_bytes`], or one frame).
    pub buffered_bytes: u64,
}

impl Hub {
    /// An empty hub with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty hub whose streams are bounded by `limits`.
    pub fn with_limits(limits: RelayLimits) -> Self {
        Self {
            inner: Arc::new(HubInner {
                streams: Mutex::default(),
                limits,
                deriver: OnceLock::new(),
            }),
        }
    }

    /// The limits of every stream.
    pub fn limits(&self) -> RelayLimits {
        self.inner.limits
    }

    /// Installs what starts derived tracks (the server's transcoders), once; a second call
    /// changes nothing and returns `false`.
    pub fn set_deriver(&self, deriver: Arc<dyn Deriver>) -> bool {
        self.inner.deriver.set(deriver).is_ok()
    }

    /// Attaches the publisher of `name`; fails if one is attached already.
    ///
    /// Subscribers waiting for `name` are woken and start with the first frames.
    pub fn publish(&self, name: &str) -> Result<Publisher, RelayError> {
        self.publish_tagged(name, 0)
    }

    /// Attaches the publisher of `name` with a tag of the caller's (the admission's session
    /// id), which [`Hub::subscribe_bound`] asks for; fails if a publisher is attached already.
    pub fn publish_tagged(&self, name: &str, tag: u64) -> Result<Publisher, RelayError> {
        let mut streams = lock(&self.inner.streams);
        let entry = Arc::clone(
            streams
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(StreamEntry::new(name))),
        );
        let session = {
            let mut state = lock(&entry.state);
            if state.session.is_some() {
                return Err(RelayError::AlreadyPublishing {
                    name: name.to_owned(),
                });
            }
            let session = Arc::new(Session::new(&self.inner.limits, tag));
            state.session = Some(Arc::clone(&session));
            session
        };
        drop(streams);
        entry.signal.wake_all();
        Ok(Publisher::new(Arc::clone(&self.inner), entry, session))
    }

    /// Attaches a subscriber to `name`, live or not.
    ///
    /// On a live stream its queue starts now, with the GOP cache; otherwise it waits, and
    /// its queue starts with the first frame of the next publish.
    pub fn subscribe(&self, name: &str) -> Subscriber {
        self.subscribe_as(name, None)
    }

    /// Attaches a subscriber to `name`, as [`Hub::subscribe`] does, that takes the stream in
    /// `format`: it reads what that format carries of the stream, with derived tracks for
    /// the rest (see [`crate::Selection`]). `None` takes the stream's own tracks as they
    /// are, for the server's own readers.
    pub fn subscribe_as(&self, name: &str, format: Option<WireFormat>) -> Subscriber {
        let mut streams = lock(&self.inner.streams);
        let entry = Arc::clone(
            streams
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(StreamEntry::new(name))),
        );
        let session = {
            let mut state = lock(&entry.state);
            state.subscribers += 1;
            state.session.clone()
        };
        drop(streams);
        Subscriber::new(Arc::clone(&self.inner), entry, session, format)
    }

    /// Attaches a subscriber to the live publish of `name` tagged `tag`, and to it only: it
    /// joins with the GOP cache, gets `Ended` when that publish ends, and never reads a later
    /// publish of the name. Fails if `name` is not live under that tag.
    pub fn subscribe_bound(&self, name: &str, tag: u64) -> Result<Subscriber, RelayError> {
        self.subscribe_bound_as(name, tag, None)
    }

    /// [`Hub::subscribe_bound`] for a subscriber that takes the stream in `format` (see
    /// [`Hub::subscribe_as`]).
    pub fn subscribe_bound_as(
        &self,
        name: &str,
        tag: u64,
        format: Option<WireFormat>,
    ) -> Result<Subscriber, RelayError> {
        let not_live = || RelayError::NotLive {
            name: name.to_owned(),
        };
        let streams = lock(&self.inner.streams);
        let entry = Arc::clone(streams.get(name).ok_or_else(not_live)?);
        let session = {
            let mut state = lock(&entry.state);
            let session = state
                .session
                .clone()
                .filter(|s| s.tag == tag)
                .ok_or_else(not_live)?;
            state.subscribers += 1;
            session
        };
        drop(streams);
        Subscriber::new_bound(Arc::clone(&self.inner), entry, session, format).ok_or_else(not_live)
    }

    /// Watches `name`, live or not, for changes without reading frames: for a listener that
    /// drives many subscribers of one stream from one task (see [`StreamWatch`]).
    pub fn watch(&self, name: &str) -> StreamWatch {
        let entry = self.attach(name, |state| state.watchers += 1);
        StreamWatch::new(Arc::clone(&self.inner), entry)
    }

    /// The entry of `name`, created if needed, after `count` has recorded the new user.
    fn attach(&self, name: &str, count: impl FnOnce(&mut EntryState)) -> Arc<StreamEntry> {
        let mut streams = lock(&self.inner.streams);
        let entry = Arc::clone(
            streams
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(StreamEntry::new(name))),
        );
        count(&mut lock(&entry.state));
        entry
    }

    /// Names of the streams that have a publisher or a subscriber, sorted.
    pub fn stream_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.inner.streams).keys().cloned().collect();
        names.sort();
        names
    }

    /// Counters of every stream, sorted by name.
    pub fn stats(&self) -> Vec<StreamStats> {
        let entries: Vec<Arc<StreamEntry>> = lock(&self.inner.streams).values().cloned().collect();
        let mut stats: Vec<StreamStats> = entries.iter().map(|e| e.stats()).collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    /// Counters of one stream, if it exists.
    pub fn stream_stats(&self, name: &str) -> Option<StreamStats> {
        let entry = lock(&self.inner.streams).get(name).cloned()?;
        Some(entry.stats())
    }
}

impl HubInner {
    /// What starts derived tracks, if installed.
    pub(crate) fn deriver(&self) -> Option<&Arc<dyn Deriver>> {
        self.deriver.get()
    }

    /// Counts one more subscriber of `entry` (one the relay attaches itself).
    pub(crate) fn attach_subscriber(&self, entry: &Arc<StreamEntry>) {
        let _streams = lock(&self.streams);
        lock(&entry.state).subscribers += 1;
    }

    /// Detaches a publisher: the entry goes inactive and is removed if nobody waits on it.
    pub(crate) fn detach_publisher(&self, entry: &Arc<StreamEntry>, session: &Arc<Session>) {
        {
            let mut streams = lock(&self.streams);
            let mut state = lock(&entry.state);
            if state
                .session
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                state.session = None;
            }
            if state.unused() {
                remove_entry(&mut streams, entry);
            }
        }
        session.end();
        entry.signal.wake_all();
    }

    /// Detaches a subscriber (its parking slot already given back): the entry is removed if
    /// it was the last user.
    pub(crate) fn detach_subscriber(&self, entry: &Arc<StreamEntry>) {
        let mut streams = lock(&self.streams);
        let mut state = lock(&entry.state);
        state.subscribers = state.subscribers.saturating_sub(1);
        if state.unused() {
            remove_entry(&mut streams, entry);
        }
    }

    /// Detaches a watch (its parking slot already given back): the entry is removed if it was
    /// the last user.
    pub(crate) fn detach_watcher(&self, entry: &Arc<StreamEntry>) {
        let mut streams = lock(&self.streams);
        let mut state = lock(&entry.state);
        state.watchers = state.watchers.saturating_sub(1);
        if state.unused() {
            remove_entry(&mut streams, entry);
        }
    }
}

/// Removes `entry` from the map if the map still holds this very entry.
fn remove_entry(streams: &mut HashMap<String, Arc<StreamEntry>>, entry: &Arc<StreamEntry>) {
    if streams
        .get(&entry.name)
        .is_some_and(|e| Arc::ptr_eq(e, entry))
    {
        streams.remove(&entry.name);
    }
}

impl StreamEntry {
    /// A new entry with no publisher and no subscriber.
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: Mutex::new(EntryState::default()),
            signal: Signal::default(),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
        }
    }

    /// The stream name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The live session, if any.
    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        lock(&self.state).session.clone()
    }

    /// Counts pushed frames and their payload bytes.
    pub(crate) fn count_in(&self, frames: u64, bytes: usize) {
        self.frames_in.fetch_add(frames, Ordering::Relaxed);
        self.bytes_in
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts frames refused for their size.
    pub(crate) fn count_oversized(&self, frames: u64) {
        self.oversized.fetch_add(frames, Ordering::Relaxed);
    }

    /// Counts frames lost by a subscriber.
    pub(crate) fn count_dropped(&self, frames: u64) {
        self.dropped.fetch_add(frames, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    fn stats(&self) -> StreamStats {
        let (session, subscribers) = {
            let state = lock(&self.state);
            (state.session.clone(), state.subscribers)
        };
        let buffered = session.as_ref().map_or(0, |s| s.lock().ring.bytes());
        StreamStats {
            name: self.name.clone(),
            live: session.is_some(),
            subscribers,
            frames_in: self.frames_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            oversized: self.oversized.load(Ordering::Relaxed),
            buffered_bytes: u64::try_from(buffered).unwrap_or(u64::MAX),
        }
    }
}
