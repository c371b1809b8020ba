//! The viewing side of a stream: a cursor into the stream's ring plus the catch-up state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::derive::Lease;
use crate::hub::{HubInner, StreamEntry};
use crate::queue::Slot;
use crate::session::{JoinPoint, Session};
use crate::wake::{Registration, NEVER};
use crate::{Refusal, Selection, SharedConfig, SharedFrame, WireFormat};

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Event {
    /// The stream is live with this configuration, and this is what the subscriber takes of
    /// it (the tracks it gets, derived or not, and why it gets none of a kind): sent before
    /// the first frame of a publish, again before the first frame that follows a
    /// configuration change, and when a derived track it takes has failed.
    Started(Arc<SharedConfig>, Selection),
    /// The next frame, in push order (possibly after a gap: see [`Subscriber`]).
    Frame(Arc<SharedFrame>),
    /// The publisher has gone (sent only after a `Started`). The subscriber stays subscribed:
    /// reading on waits for the next publish of the same name.
    Ended,
}

/// One viewer of a stream name, whether or not it is live.
///
/// It reads only the frames its [`Selection`] takes: the stream's own tracks that its wire
/// format carries, and the derived tracks (transcodes) of those it does not, which it keeps
/// running while it takes them (see [`crate::Deriver`]).
///
/// Joining a live stream, it starts at the latest keyframe of the video it takes, from the
/// GOP cache (without video, with the next frame of its sound); waiting for a stream, it
/// starts at the first such point of the publish. Its queue holds at most the hub's
/// [`crate::RelayLimits::buffer_frames`] frames and [`crate::RelayLimits::buffer_bytes`]
/// bytes; a subscriber that falls further behind loses frames and, at its next read, skips
/// to the newest video keyframe still queued (or waits for the next one), so that
/// decoding resumes cleanly and as close to live as possible. Every frame skipped that way
/// is counted in [`Subscriber::dropped`].
#[derive(Debug)]
pub struct Subscriber {
    hub: Arc<HubInner>,
    entry: Arc<StreamEntry>,
    reader: Option<Reader>,
    dropped: u64,
    /// This subscriber's parking slot in the stream's signal.
    parking: Registration,
    /// The stream's epoch when this subscriber last had everything read, or [`NEVER`]: while
    /// the epoch stays there, nothing is new (see [`crate::wake`]).
    seen: u64,
    /// Bound to the publish it joined (see [`crate::Hub::subscribe_bound`]): once that one is
    /// read to its end, nothing more comes.
    bound: Bound,
    /// The format it takes the stream in (`None`: the stream's own tracks, for the server's
    /// own readers).
    format: Option<WireFormat>,
}

/// Whether a subscriber follows later publishes of its stream name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Every publish of the name, one after the other.
    No,
    /// Only the publish it joined, still being read.
    Reading,
    /// Only the publish it joined, which is over.
    Finished,
}

/// Where a subscriber stands in one publish session.
#[derive(Debug)]
struct Reader {
    session: Arc<Session>,
    /// GOP frames still to deliver before the ring.
    backlog: VecDeque<Slot>,
    /// Ring sequence number of the next live frame.
    cursor: u64,
    /// Its place among the session's readers, where the cursor is noted.
    place: usize,
    /// Frames it missed before it started reading, counted as dropped at its first read.
    missed: u64,
    /// Whether frames are skipped until a start point.
    resume: Resume,
    /// The configuration last announced, compared by identity.
    last_config: Option<Arc<SharedConfig>>,
    /// A frame held back while its `Started` is delivered.
    pending: Option<Arc<SharedFrame>>,
    /// What the subscriber takes of this session, as last announced (`None` before the first
    /// `Started`), and the selection it was resolved from (before any derivation was
    /// refused), to tell whether a new configuration changes it.
    selection: Option<Selection>,
    wanted: Option<Selection>,
    /// The derived tracks it takes, kept running while it holds them.
    leases: Vec<Lease>,
    /// The subscriber's format.
    format: Option<WireFormat>,
}

/// How the reader takes the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// Any frame.
    Any,
    /// Only a start point (a video keyframe, or any audio frame without video); frames
    /// skipped before it are counted as drops when `counted`.
    StartPoint { counted: bool },
}

/// The outcome of one read attempt.
#[derive(Debug)]
enum Step {
    /// Something to deliver; `drained` when nothing more was readable at that moment.
    Deliver { event: Event, drained: bool },
    /// Nothing new yet.
    Empty,
    /// The session ended and everything in it was read.
    Finished { started: bool },
}

impl Subscriber {
    /// A subscriber counted in `entry`, joining `live` (the stream's session) if there is one.
    pub(crate) fn new(
        hub: Arc<HubInner>,
        entry: Arc<StreamEntry>,
        live: Option<Arc<Session>>,
        format: Option<WireFormat>,
    ) -> Self {
        // Registered before joining, so that no change after the join is missed.
        let parking = entry.signal.register();
        let reader = live.and_then(|session| {
            let join = session.join()?;
            Some(Reader::new(session, join, format))
        });
        Self {
            hub,
            entry,
            reader,
            dropped: 0,
            parking,
            seen: NEVER,
            bound: Bound::No,
            format,
        }
    }

    /// A subscriber of the server's own (a derivation's input): counted in `entry` like a
    /// viewer, bound to `session`, taking the stream's own tracks. `None` if the session has
    /// ended.
    pub(crate) fn internal(
        hub: Arc<HubInner>,
        entry: Arc<StreamEntry>,
        session: Arc<Session>,
    ) -> Option<Self> {
        hub.attach_subscriber(&entry);
        Self::new_bound(hub, entry, session, None)
    }

    /// A subscriber counted in `entry` that reads `session` only; `None` (and uncounted) if
    /// the session has ended meanwhile.
    pub(crate) fn new_bound(
        hub: Arc<HubInner>,
        entry: Arc<StreamEntry>,
        session: Arc<Session>,
        format: Option<WireFormat>,
    ) -> Option<Self> {
        let mut sub = Self::new(hub, entry, None, format);
        let join = session.join()?;
        sub.reader = Some(Reader::new(session, join, format));
        sub.bound = Bound::Reading;
        Some(sub)
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        self.entry.name()
    }

    /// The format this subscriber takes the stream in, if it is a viewer.
    pub fn format(&self) -> Option<WireFormat> {
        self.format
    }

    /// Frames this subscriber lost by falling behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// What this subscriber takes of the publish it reads, as announced by its last
    /// [`Event::Started`]; `None` before that.
    pub fn selection(&self) -> Option<Selection> {
        self.reader.as_ref().and_then(|r| r.selection)
    }

    /// Asks the derived video this subscriber takes, if any, for a keyframe (after a loss, or
    /// when the viewer's decoder asks). The stream's own video is the publisher's business.
    pub fn request_keyframe(&self) {
        if let Some(reader) = &self.reader {
            for lease in &reader.leases {
                if lease.derivation().output().track() == streamgate_media::TrackKind::Video {
                    lease.request_keyframe();
                }
            }
        }
    }

    /// Waits for the next event. Cancel-safe: if the future is dropped before it completes,
    /// no event is lost.
    pub async fn recv(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is ready; otherwise `Pending`, and `cx`'s waker is woken when
    /// something may have arrived (the basis of [`Subscriber::recv`], for hand-written
    /// futures). Waiting takes no lock shared with other subscribers.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        loop {
            if let Some(event) = self.try_recv() {
                return Poll::Ready(event);
            }
            // Nothing new as of `seen`. Park, then look at the epoch once more: a change
            // made meanwhile is either seen here or wakes us.
            self.parking.park(cx.waker());
            if self.entry.signal.epoch() == self.seen {
                return Poll::Pending;
            }
            self.parking.unpark();
        }
    }

    /// The next event if one is ready, without waiting. When this subscriber has read
    /// everything and nothing changed since, this is one atomic load and takes no lock.
    pub fn try_recv(&mut self) -> Option<Event> {
        // Loaded before reading: if the read then finds nothing more, every change up to
        // this epoch has been read.
        let epoch = self.entry.signal.epoch();
        if epoch == self.seen {
            return None;
        }
        let (event, drained) = self.read();
        if drained {
            self.seen = epoch;
        }
        event
    }

    /// Reads the next event, if any, and whether nothing more was readable (nothing held
    /// back, nothing left in the session, or no session).
    fn read(&mut self) -> (Option<Event>, bool) {
        loop {
            if self.reader.is_none() {
                if self.bound != Bound::No {
                    return (None, true);
                }
                // Waiting, or done with the previous publish: a new one is read from its
                // start (the entry never holds a session that has ended).
                let Some(session) = self.entry.session() else {
                    return (None, true);
                };
                let join = session.join_from_start();
                self.reader = Some(Reader::new(session, join, self.format));
            }
            let Some(reader) = self.reader.as_mut() else {
                return (None, true);
            };
            if let Some(event) = reader.failed_derivation() {
                return (Some(event), false);
            }
            match reader.next(&self.entry, &mut self.dropped) {
                Step::Deliver {
                    event: Event::Started(config, _),
                    drained,
                } => {
                    // No lock is held here: leasing may start a derivation.
                    let selection = reader.select(&config, &self.hub, &self.entry);
                    return (Some(Event::Started(config, selection)), drained);
                }
                Step::Deliver { event, drained } => return (Some(event), drained),
                Step::Empty => return (None, true),
                Step::Finished { started } => {
                    self.reader = None;
                    if self.bound == Bound::Reading {
                        self.bound = Bound::Finished;
                    }
                    if started {
                        return (Some(Event::Ended), false);
                    }
                }
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.entry.signal.unregister(&self.parking);
        self.hub.detach_subscriber(&self.entry);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.session.leave(self.place);
    }
}

impl Reader {
    /// Starts reading `session` at `join`, from its first start point (the GOP's keyframe,
    /// for a viewer of the stream's own video).
    fn new(session: Arc<Session>, join: JoinPoint, format: Option<WireFormat>) -> Self {
        Self {
            session,
            backlog: join.backlog,
            cursor: join.cursor,
            place: join.place,
            missed: join.missed,
            resume: Resume::StartPoint { counted: false },
            last_config: None,
            pending: None,
            selection: None,
            wanted: None,
            leases: Vec::new(),
            format,
        }
    }

    /// The selection for a newly announced `config`: what `format` takes of its tracks, each
    /// derived track leased (started if need be) or, refused, replaced by the reason. A
    /// change of what is taken makes the reader wait for a start point of the new selection.
    fn select(
        &mut self,
        config: &SharedConfig,
        hub: &Arc<HubInner>,
        entry: &Arc<StreamEntry>,
    ) -> Selection {
        let wanted = wanted(self.format, config);
        if self.wanted == Some(wanted) {
            if let Some(selection) = self.selection {
                return selection;
            }
        }
        let mut selection = wanted;
        let mut leases = Vec::new();
        for derivation in wanted.derivations() {
            let held = self
                .leases
                .iter()
                .position(|l| l.derivation() == derivation)
                .map(|i| self.leases.swap_remove(i));
            let lease = match held {
                Some(lease) => Ok(lease),
                None => self
                    .session
                    .derivations
                    .lease(derivation, hub, entry, &self.session),
            };
            match lease {
                Ok(lease) => leases.push(lease),
                Err(why) => selection = selection.refuse(derivation, why),
            }
        }
        // Leases no longer taken are dropped here, outside every lock.
        self.leases = leases;
        if self.selection.is_some_and(|s| s.video != selection.video) {
            // Another picture: decoding starts again at one of its keyframes. (Sound decodes
            // from any frame.)
            self.resume = Resume::StartPoint { counted: false };
        }
        self.wanted = Some(wanted);
        self.selection = Some(selection);
        selection
    }

    /// A new announcement if a derived track this reader takes has failed: the same
    /// configuration, with that track refused. Its lease is let go.
    fn failed_derivation(&mut self) -> Option<Event> {
        let i = self.leases.iter().position(|l| l.failed())?;
        let failed = self.leases.swap_remove(i);
        let config = self.last_config.clone()?;
        let selection = self.selection?.refuse(failed.derivation(), Refusal::Failed);
        self.selection = Some(selection);
        Some(Event::Started(config, selection))
    }

    /// Takes the next deliverable frame (skipping frames it does not take, and as `resume`
    /// says), or reports that there is none yet or the session is over. Lost frames are added
    /// to `dropped` and the entry.
    fn next(&mut self, entry: &StreamEntry, dropped: &mut u64) -> Step {
        let mut lost = std::mem::take(&mut self.missed);
        if let Some(frame) = self.pending.take() {
            if admit(self.selection, &mut self.resume, &frame, &mut lost) {
                count_lost(entry, dropped, lost);
                return Step::Deliver {
                    event: Event::Frame(frame),
                    drained: false,
                };
            }
        }
        let (event, at_end, ended) = {
            let mut state = self.session.lock();
            if self.cursor < state.ring.base() {
                // Frames were overwritten before we read them. Resume at the newest start
                // point still queued (or the next one to come), so that the viewer gets
                // back as close to live as possible; everything in between is lost.
                let (selection, format) = (self.selection, self.format);
                let resume_at = state
                    .ring
                    .newest(|slot| {
                        selection
                            .unwrap_or_else(|| wanted(format, &slot.config))
                            .is_start_point(&slot.frame)
                    })
                    .unwrap_or_else(|| state.ring.head());
                lost += resume_at - self.cursor + self.backlog.len() as u64;
                self.backlog.clear();
                self.cursor = resume_at;
                self.resume = Resume::StartPoint { counted: true };
            }
            let mut event = None;
            while event.is_none() {
                let from_backlog = self.backlog.pop_front();
                let slot = match &from_backlog {
                    Some(slot) => slot,
                    None => match state.ring.get(self.cursor) {
                        Some(slot) => {
                            self.cursor += 1;
                            slot
                        }
                        None => break,
                    },
                };
                let announced = self
                    .last_config
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, &slot.config));
                if announced {
                    if admit(self.selection, &mut self.resume, &slot.frame, &mut lost) {
                        event = Some(Event::Frame(Arc::clone(&slot.frame)));
                    }
                    continue;
                }
                // A new configuration is announced right before the first frame taken under
                // it (judged here by what the format takes of its tracks, and again once the
                // subscriber has resolved its derived tracks, outside this lock), or at once
                // if it changes what the subscriber takes (it must know at once, a picture it
                // can no longer take say), or if it takes a derived track (announcing is what
                // starts the derivation).
                let wanted = wanted(self.format, &slot.config);
                let mut resume = self.resume;
                let changed = self.wanted.is_some_and(|w| w != wanted);
                if changed
                    || wanted.derivations().next().is_some()
                    || admit(Some(wanted), &mut resume, &slot.frame, &mut lost)
                {
                    self.last_config = Some(Arc::clone(&slot.config));
                    self.pending = Some(Arc::clone(&slot.frame));
                    event = Some(Event::Started(Arc::clone(&slot.config), wanted));
                }
            }
            state.readers.set(self.place, self.cursor);
            let at_end =
                self.backlog.is_empty() && self.cursor >= state.ring.head() && !state.ended;
            (event, at_end, state.ended)
        };
        count_lost(entry, dropped, lost);
        match event {
            Some(event) => Step::Deliver {
                event,
                drained: at_end && self.pending.is_none(),
            },
            None if ended => Step::Finished {
                started: self.last_config.is_some(),
            },
            None => Step::Empty,
        }
    }
}

/// Whether a subscriber with `selection` takes `frame` now: a frame of its selection, at a
/// start point if `resume` waits for one (frames of its selection skipped before it are
/// counted in `lost` when the wait follows a loss).
fn admit(
    selection: Option<Selection>,
    resume: &mut Resume,
    frame: &SharedFrame,
    lost: &mut u64,
) -> bool {
    let Some(selection) = selection else {
        return false;
    };
    if !selection.takes(frame) {
        return false;
    }
    match *resume {
        Resume::Any => true,
        Resume::StartPoint { counted } => {
            if selection.is_start_point(frame) {
                *resume = Resume::Any;
                true
            } else {
                *lost += u64::from(counted);
                false
            }
        }
    }
}

/// Adds frames a subscriber lost to its count and the stream's.
fn count_lost(entry: &StreamEntry, dropped: &mut u64, lost: u64) {
    if lost > 0 {
        *dropped += lost;
        entry.count_dropped(lost);
    }
}

/// What a subscriber in `format` takes of a stream with `config`, before any derivation is
/// asked for (`None`: the stream's own tracks).
fn wanted(format: Option<WireFormat>, config: &SharedConfig) -> Selection {
    let tracks = &config.config.tracks;
    format.map_or_else(|| Selection::source(tracks), |f| f.select(tracks))
}
