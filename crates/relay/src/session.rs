//! One publish of a stream: its ring, GOP cache and current configuration. A new publish of
//! the same name gets a new session, so readers of the old one finish it undisturbed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use streamgate_media::{StreamConfig, TrackKind};

use crate::gop::GopCache;
use crate::queue::{Ring, Slot};
use crate::{RelayLimits, SharedConfig, SharedFrame};

/// Locks a mutex, ignoring poisoning (no code here panics while holding a lock, and the
/// guarded data stays consistent between statements).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A publish session, shared by its publisher and the subscribers reading it.
#[derive(Debug)]
pub(crate) struct Session {
    state: Mutex<SessionState>,
    /// The publisher's tag (see [`crate::Hub::publish_tagged`]).
    pub(crate) tag: u64,
}

/// Everything behind the session lock.
#[derive(Debug)]
pub(crate) struct SessionState {
    /// Every subscriber's queue (see [`crate::queue`]).
    pub(crate) ring: Ring,
    gop: GopCache,
    config: Arc<SharedConfig>,
    /// Whether the stream has video, so that readers must resume at video keyframes.
    pub(crate) has_video: bool,
    /// Whether the publisher has gone.
    pub(crate) ended: bool,
}

impl SessionState {
    /// Whether a reader may start (or resume) at `frame`: a video keyframe, or any keyframe
    /// (every audio frame) when the stream has no video.
    pub(crate) fn is_start_point(&self, frame: &SharedFrame) -> bool {
        let frame = &frame.frame;
        frame.keyframe && (frame.track == TrackKind::Video || !self.has_video)
    }
}

/// Where a subscriber joining a session starts.
#[derive(Debug)]
pub(crate) struct JoinPoint {
    /// Cached frames to deliver first (the GOP).
    pub(crate) backlog: VecDeque<Slot>,
    /// Ring sequence number of the first live frame after the backlog.
    pub(crate) cursor: u64,
}

impl JoinPoint {
    /// The very first frame of a session, for a subscriber that was waiting when it began.
    pub(crate) fn session_start() -> Self {
        Self {
            backlog: VecDeque::new(),
            cursor: 0,
        }
    }
}

impl Session {
    /// A new, live session with an empty configuration, bounded by `limits`.
    pub(crate) fn new(limits: &RelayLimits, tag: u64) -> Self {
        Self {
            tag,
            state: Mutex::new(SessionState {
                ring: Ring::new(limits.buffer_frames, limits.buffer_bytes),
                gop: GopCache::new(limits.gop_frames, limits.gop_bytes),
                config: Arc::new(SharedConfig::new(StreamConfig::default())),
                has_video: false,
                ended: false,
            }),
        }
    }

    /// Locks the session state.
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        lock(&self.state)
    }

    /// Appends frames, in order, for every reader and the GOP cache, under one lock.
    pub(crate) fn push_all(&self, frames: impl IntoIterator<Item = Arc<SharedFrame>>) {
        let mut state = self.lock();
        for frame in frames {
            if frame.frame.track == TrackKind::Video {
                state.has_video = true;
            }
            let slot = Slot {
                frame,
                config: Arc::clone(&state.config),
            };
            state.gop.push(&slot);
            state.ring.push(slot);
        }
    }

    /// Applies `change` to a copy of the configuration; frames pushed from now on carry the
    /// result. An unchanged configuration keeps its identity (no new announcement).
    pub(crate) fn update_config(&self, change: impl FnOnce(&mut StreamConfig)) {
        let mut state = self.lock();
        let mut config = state.config.config.clone();
        change(&mut config);
        if config == state.config.config {
            return;
        }
        if config.video.is_some() {
            state.has_video = true;
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
    /// `None` if the session has ended.
    pub(crate) fn join(&self) -> Option<JoinPoint> {
        let state = self.lock();
        if state.ended {
            return None;
        }
        Some(JoinPoint {
            backlog: VecDeque::from(state.gop.snapshot()),
            cursor: state.ring.head(),
        })
    }
}
