//! One publish of a stream: its ring, GOP cache, current configuration, the settling of its
//! tracks and its derived tracks. A new publish of the same name gets a new session, so
//! readers of the old one finish it undisturbed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use streamgate_media::{Codec, StreamConfig};

use crate::derive::Derivations;
use crate::gop::GopCache;
use crate::queue::{Readers, Ring, Slot, TRIM_EVERY};
use crate::settle::{Admit, Settle};
use crate::{RelayLimits, SharedConfig, SharedFrame};

/// Locks a mutex, ignoring poisoning (no code here panics while holding a lock, and the
/// guarded data stays consistent between statements).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The first frames of a session that stay in the ring, read or not, for the subscribers
/// that waited for it.
const START_KEPT: u64 = 8 * TRIM_EVERY as u64;

/// A publish session, shared by its publisher and the subscribers reading it.
#[derive(Debug)]
pub(crate) struct Session {
    state: Mutex<SessionState>,
    /// The publisher's tag (see [`crate::Hub::publish_tagged`]).
    pub(crate) tag: u64,
    /// The derived tracks running for this publish.
    pub(crate) derivations: Derivations,
}

/// Everything behind the session lock.
#[derive(Debug)]
pub(crate) struct SessionState {
    /// Every subscriber's queue (see [`crate::queue`]).
    pub(crate) ring: Ring,
    /// Where each reader of the session stands in the ring.
    pub(crate) readers: Readers,
    /// Frames appended since the ring was last trimmed.
    since_trim: u32,
    gop: GopCache,
    config: Arc<SharedConfig>,
    /// The tracks, settled from the first frames (see [`crate::settle`]).
    settle: Settle,
    /// The configuration in force when each frame held by `settle` was pushed, in order.
    held_configs: Vec<Arc<SharedConfig>>,
    /// Whether the publisher has gone.
    pub(crate) ended: bool,
}

impl SessionState {
    /// Puts a frame where readers find it, under the configuration in force: the ring and
    /// the GOP cache.
    fn append(&mut self, frame: Arc<SharedFrame>) {
        let config = Arc::clone(&self.config);
        self.append_with(frame, config);
    }

    /// Puts a frame where readers find it, under `config`.
    fn append_with(&mut self, frame: Arc<SharedFrame>, config: Arc<SharedConfig>) {
        let slot = Slot { frame, config };
        self.gop.push(&slot);
        self.ring.push(slot);
        self.since_trim += 1;
        if self.since_trim >= TRIM_EVERY {
            self.since_trim = 0;
            self.trim();
        }
    }

    /// Lets go of the frames every reader has read, but never of the GOP cache's, nor of
    /// anything before the session's [`START_KEPT`]th frame: subscribers that waited for the
    /// session start reading it from its first frame, each when its task comes to it, and
    /// one that comes after that resumes at the GOP's keyframe.
    fn trim(&mut self) {
        let head = self.ring.head();
        if head < START_KEPT {
            return;
        }
        let gop_start = head.saturating_sub(self.gop.len() as u64);
        let keep = self.readers.lowest().unwrap_or(head).min(gop_start);
        self.ring.trim_to(keep);
    }

    /// Appends the frames released by the settling of the tracks, each under the
    /// configuration it was pushed with (the last one, under the one in force), now with the
    /// settled tracks: readers see the configuration changes where they happened.
    fn release(&mut self, frames: Vec<Arc<SharedFrame>>) {
        self.sync_tracks();
        let tracks = self.config.config.tracks;
        let held = std::mem::take(&mut self.held_configs);
        // Each configuration seen among the held frames, and the same with the tracks.
        let mut settled: Vec<(Arc<SharedConfig>, Arc<SharedConfig>)> = Vec::new();
        for (i, frame) in frames.into_iter().enumerate() {
            let config = match held.get(i) {
                Some(old) if old.config.tracks != tracks => {
                    match settled.iter().find(|(o, _)| Arc::ptr_eq(o, old)) {
                        Some((_, new)) => Arc::clone(new),
                        None => {
                            let mut config = old.config.clone();
                            config.tracks = tracks;
                            let new = if config == self.config.config {
                                Arc::clone(&self.config)
                            } else {
                                Arc::new(SharedConfig::new(config))
                            };
                            settled.push((Arc::clone(old), Arc::clone(&new)));
                            new
                        }
                    }
                }
                Some(old) => Arc::clone(old),
                None => Arc::clone(&self.config),
            };
            self.append_with(frame, config);
        }
    }

    /// Makes the configuration carry the settled tracks, if they changed: frames appended
    /// from now on announce the change to their readers.
    fn sync_tracks(&mut self) {
        let tracks = self.settle.tracks();
        if tracks != self.config.config.tracks {
            let mut config = self.config.config.clone();
            config.tracks = tracks;
            self.config = Arc::new(SharedConfig::new(config));
        }
    }
}

/// Where a subscriber joining a session starts.
#[derive(Debug)]
pub(crate) struct JoinPoint {
    /// Cached frames to deliver first (the GOP).
    pub(crate) backlog: VecDeque<Slot>,
    /// Ring sequence number of the first live frame after the backlog.
    pub(crate) cursor: u64,
    /// The reader's place in the session's [`Readers`], taken at the join.
    pub(crate) place: usize,
    /// Frames of the session it should have read and will not: counted as dropped.
    pub(crate) missed: u64,
}

impl Session {
    /// A new, live session with an empty configuration, bounded by `limits`.
    pub(crate) fn new(limits: &RelayLimits, tag: u64) -> Self {
        Self {
            tag,
            state: Mutex::new(SessionState {
                ring: Ring::new(limits.buffer_frames, limits.buffer_bytes),
                readers: Readers::default(),
                since_trim: 0,
                gop: GopCache::new(limits.gop_frames, limits.gop_bytes),
                config: Arc::new(SharedConfig::new(StreamConfig::default())),
                settle: Settle::new(limits.buffer_frames, limits.buffer_bytes),
                held_configs: Vec::new(),
                ended: false,
            }),
            derivations: Derivations::default(),
        }
    }

    /// Locks the session state.
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        lock(&self.state)
    }

    /// Appends the publisher's frames, in order, for every reader and the GOP cache, under
    /// one lock; the first ones are held until the stream's tracks are settled. Returns
    /// whether readers have anything new.
    pub(crate) fn push_all(&self, frames: impl IntoIterator<Item = Arc<SharedFrame>>) -> bool {
        let mut state = self.lock();
        let mut appended = false;
        for frame in frames {
            match state.settle.push(frame) {
                Admit::Now(frame) => {
                    state.sync_tracks();
                    state.append(frame);
                    appended = true;
                }
                Admit::Held => {
                    let config = Arc::clone(&state.config);
                    state.held_configs.push(config);
                }
                Admit::Released(frames) => {
                    state.release(frames);
                    appended = true;
                }
            }
        }
        appended
    }

    /// Appends a derivation's frames (see [`crate::derive`]); nothing once the publish has
    /// ended. Returns whether any were appended.
    pub(crate) fn push_derived(&self, frames: Vec<Arc<SharedFrame>>) -> bool {
        let mut state = self.lock();
        if state.ended {
            return false;
        }
        for frame in frames {
            state.append(frame);
        }
        true
    }

    /// The listener knows the stream carries a track in `codec` (see [`crate::settle`]).
    pub(crate) fn expect(&self, codec: Codec) {
        self.lock().settle.expect(codec);
    }

    /// Applies `change` to a copy of the configuration; frames pushed from now on carry the
    /// result. An unchanged configuration keeps its identity (no new announcement). The
    /// tracks stay the relay's.
    pub(crate) fn update_config(&self, change: impl FnOnce(&mut StreamConfig)) {
        let mut state = self.lock();
        let mut config = state.config.config.clone();
        change(&mut config);
        config.tracks = state.config.config.tracks;
        if config == state.config.config {
            return;
        }
        state.config = Arc::new(SharedConfig::new(config));
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> Arc<SharedConfig> {
        Arc::clone(&self.lock().config)
    }

    /// Marks the session ended; readers get `Ended` once they have read what is left.
    pub(crate) fn end(&self) {
        self.lock().ended = true;
    }

    /// Where a reader that joins the live stream now starts (the GOP, then live frames), or
    /// `None` if the session has ended. The reader takes a place among the session's readers,
    /// which it gives back with [`Session::leave`].
    pub(crate) fn join(&self) -> Option<JoinPoint> {
        let mut state = self.lock();
        if state.ended {
            return None;
        }
        let cursor = state.ring.head();
        Some(JoinPoint {
            backlog: VecDeque::from(state.gop.snapshot()),
            cursor,
            place: state.readers.add(cursor),
            missed: 0,
        })
    }

    /// Where a subscriber that was waiting for the session starts: its very first frame, if
    /// the ring still holds it; otherwise (it came to read only after the first frames were
    /// let go or overwritten) with the GOP, as a reader joining now does, and every frame
    /// before the GOP counts as missed. Whatever has ended, the reader reads what is left.
    pub(crate) fn join_from_start(&self) -> JoinPoint {
        let mut state = self.lock();
        let (backlog, cursor, missed) = if state.ring.base() == 0 {
            (VecDeque::new(), 0, 0)
        } else {
            let head = state.ring.head();
            let gop = state.gop.snapshot();
            let missed = head.saturating_sub(gop.len() as u64);
            (VecDeque::from(gop), head, missed)
        };
        JoinPoint {
            backlog,
            cursor,
            place: state.readers.add(cursor),
            missed,
        }
    }

    /// Gives a reader's place back.
    pub(crate) fn leave(&self, place: usize) {
        self.lock().readers.remove(place);
    }
}
