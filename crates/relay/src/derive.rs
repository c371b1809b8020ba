//! Derived tracks: a stream's transcodes (AAC -> Opus, Opus -> AAC, H.264 without B-frames),
//! each run at most once per publish for every viewer that takes it.
//!
//! A subscriber whose [`crate::Selection`] picks a derived track takes a lease on it from the
//! publish session when it announces that selection: the first lease starts the derivation
//! through the hub's [`Deriver`] (the server's transcoders), later ones share it, and when
//! the last lease is dropped (the viewer leaves, the publish ends, or the viewer's selection
//! changes) the derivation's handle is dropped, which stops it. A derivation reads the
//! stream's own frames through a subscriber of its own (no viewer of any format) and pushes
//! its frames into the same session, marked with the derivation, where the viewers that
//! take it read them like any other frame; their bytes for each wire format are made once.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use streamgate_media::Frame;

use crate::hub::{HubInner, StreamEntry};
use crate::session::{lock, Session};
use crate::{Derivation, Refusal, SharedConfig, SharedFrame, Subscriber};

/// Starts derivations for the hub (see [`crate::Hub::set_deriver`]).
pub trait Deriver: Send + Sync + std::fmt::Debug {
    /// Starts `derivation` of one publish: read the stream from `job.input`, push the result
    /// through `job.output`, until the returned handle is dropped. Must return at once (start
    /// threads or tasks; never wait for a codec); refusing is cheap and leaves nothing behind.
    fn start(&self, derivation: Derivation, job: DeriveJob) -> Result<DeriveHandle, Refusal>;
}

/// Keeps a derivation running; dropping it stops the derivation.
pub type DeriveHandle = Box<dyn Any + Send + Sync>;

/// What a derivation works with.
#[derive(Debug)]
pub struct DeriveJob {
    /// The stream's configuration in force when the derivation starts.
    pub config: Arc<SharedConfig>,
    /// The stream's own frames, from the current GOP on (no viewer of any format, so it
    /// starts no derivation itself). It ends with the publish.
    pub input: Subscriber,
    /// Where the derived frames go.
    pub output: DerivedOutput,
}

/// The shared state of one running derivation.
#[derive(Debug, Default)]
struct Flags {
    /// A viewer asked for a keyframe (joining, or after a loss).
    keyframe: AtomicBool,
    /// The derivation stopped for good; its viewers are told at their next read.
    failed: AtomicBool,
}

/// Where a derivation pushes its frames: the publish session it was started for.
#[derive(Debug)]
pub struct DerivedOutput {
    session: Arc<Session>,
    entry: Arc<StreamEntry>,
    derivation: Derivation,
    flags: Arc<Flags>,
    /// The hub's [`crate::RelayLimits::max_frame_bytes`].
    max_frame_bytes: usize,
}

impl DerivedOutput {
    /// The derivation this output is for.
    pub fn derivation(&self) -> Derivation {
        self.derivation
    }

    /// The stream name.
    pub fn stream(&self) -> &str {
        self.entry.name()
    }

    /// Hands derived frames to the viewers that take them, in order, with one wake-up. Never
    /// waits; frames over the hub's size limit are dropped, and frames pushed after the
    /// publish has ended are dropped too.
    pub fn push_all(&self, frames: impl IntoIterator<Item = Frame>) {
        let shared: Vec<Arc<SharedFrame>> = frames
            .into_iter()
            .filter(|f| f.payload.len() <= self.max_frame_bytes)
            .map(|f| Arc::new(SharedFrame::derived(f, self.derivation)))
            .collect();
        if !shared.is_empty() && self.session.push_derived(shared) {
            self.entry.signal.wake_all();
        }
    }

    /// Whether a viewer has asked for a keyframe since the last call (the first call after
    /// the start says yes: the first viewer needs one).
    pub fn keyframe_requested(&self) -> bool {
        self.flags.keyframe.swap(false, Ordering::Relaxed)
    }

    /// Reports that the derivation has stopped for good (its codec failed): every viewer
    /// taking it is told at its next read (a new `Started` whose selection has it refused),
    /// and it is started afresh for viewers who come after those have left.
    pub fn fail(&self) {
        self.flags.failed.store(true, Ordering::Relaxed);
        self.entry.signal.wake_all();
    }
}

/// One running derivation, shared by the leases of its viewers.
#[derive(Debug)]
pub(crate) struct Running {
    derivation: Derivation,
    flags: Arc<Flags>,
    _handle: DeriveHandle,
}

/// A viewer's hold on a running derivation.
pub(crate) type Lease = Arc<Running>;

impl Running {
    /// The derivation.
    pub(crate) fn derivation(&self) -> Derivation {
        self.derivation
    }

    /// Asks for the next derived picture to be a keyframe.
    pub(crate) fn request_keyframe(&self) {
        self.flags.keyframe.store(true, Ordering::Relaxed);
    }

    /// Whether the derivation has stopped for good.
    pub(crate) fn failed(&self) -> bool {
        self.flags.failed.load(Ordering::Relaxed)
    }
}

/// The derivations running for one publish session, by kind. Lock order: this table before
/// the hub's map, the entry's state and the session's state (starting a derivation attaches
/// its input subscriber).
#[derive(Debug, Default)]
pub(crate) struct Derivations {
    running: Mutex<HashMap<Derivation, Weak<Running>>>,
}

impl Derivations {
    /// A lease on `derivation` of `session`: the running one (asking it for a keyframe, for
    /// the new viewer), or a new one started through the hub's deriver.
    pub(crate) fn lease(
        &self,
        derivation: Derivation,
        hub: &Arc<HubInner>,
        entry: &Arc<StreamEntry>,
        session: &Arc<Session>,
    ) -> Result<Lease, Refusal> {
        let mut running = lock(&self.running);
        if let Some(r) = running.get(&derivation).and_then(Weak::upgrade) {
            if r.failed() {
                return Err(Refusal::Failed);
            }
            r.request_keyframe();
            return Ok(r);
        }
        running.retain(|_, r| r.strong_count() > 0);
        let deriver = hub.deriver().ok_or(Refusal::Failed)?;
        let input = Subscriber::internal(Arc::clone(hub), Arc::clone(entry), Arc::clone(session))
            .ok_or(Refusal::Failed)?;
        let flags = Arc::new(Flags {
            keyframe: AtomicBool::new(true),
            failed: AtomicBool::new(false),
        });
        let job = DeriveJob {
            config: session.config(),
            input,
            output: DerivedOutput {
                session: Arc::clone(session),
                entry: Arc::clone(entry),
                derivation,
                flags: Arc::clone(&flags),
                max_frame_bytes: hub.limits.max_frame_bytes,
            },
        };
        let handle = deriver.start(derivation, job)?;
        let lease = Arc::new(Running {
            derivation,
            flags,
            _handle: handle,
        });
        running.insert(derivation, Arc::downgrade(&lease));
        Ok(lease)
    }
}
