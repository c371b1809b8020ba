//! The viewing side of a stream: a cursor into the stream's ring plus the catch-up state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::hub::{HubInner, StreamEntry};
use crate::queue::Slot;
use crate::session::{JoinPoint, Session};
use crate::wake::{Registration, NEVER};
use crate::{SharedConfig, SharedFrame, WireFormat};

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Event {
    /// The stream is live with this configuration: sent before the first frame of a publish
    /// and again before the first frame that follows a configuration change.
    Started(Arc<SharedConfig>),
    /// The next frame, in push order (possibly after a gap: see [`Subscriber`]).
    Frame(Arc<SharedFrame>),
    /// The publisher has gone (sent only after a `Started`). The subscriber stays subscribed:
    /// reading on waits for the next publish of the same name.
    Ended,
}

/// One viewer of a stream name, whether or not it is live.
///
/// Joining a live stream, it starts at the latest video keyframe from the GOP cache (an
/// audio-only stream starts with the next frame); waiting for a stream, it starts with the
/// first frame of the publish. Its queue holds at most the hub's
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
    /// The format it takes the stream in, counted in the stream's demand.
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
    /// Whether frames are skipped until a start point.
    resume: Resume,
    /// The configuration last announced, compared by identity.
    last_config: Option<Arc<SharedConfig>>,
    /// A frame held back while its `Started` is delivered.
    pending: Option<Arc<SharedFrame>>,
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
            Some(Reader::new(session, join))
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
        sub.reader = Some(Reader::new(session, join));
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
                self.reader = Some(Reader::new(session, JoinPoint::session_start()));
            }
            let Some(reader) = self.reader.as_mut() else {
                return (None, true);
            };
            match reader.next(&self.entry, &mut self.dropped) {
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
        self.hub.detach_subscriber(&self.entry, self.format);
    }
}

impl Reader {
    /// Starts reading `session` at `join`: the GOP if there is one, else the next start point.
    fn new(session: Arc<Session>, join: JoinPoint) -> Self {
        let resume = if join.backlog.is_empty() {
            Resume::StartPoint { counted: false }
        } else {
            Resume::Any
        };
        Self {
            session,
            backlog: join.backlog,
            cursor: join.cursor,
            resume,
            last_config: None,
            pending: None,
        }
    }

    /// Takes the next deliverable frame (skipping as `resume` says), or reports that there
    /// is none yet or the session is over. Lost frames are added to `dropped` and the entry.
    fn next(&mut self, entry: &StreamEntry, dropped: &mut u64) -> Step {
        if let Some(frame) = self.pending.take() {
            return Step::Deliver {
                event: Event::Frame(frame),
                drained: false,
            };
        }
        let mut lost = 0u64;
        let (event, at_end, ended) = {
            let state = self.session.lock();
            if self.cursor < state.ring.base() {
                // Frames were overwritten before we read them. Resume at the newest start
                // point still queued (or the next one to come), so that the viewer gets
                // back as close to live as possible; everything in between is lost.
                let resume_at = state
                    .ring
                    .newest(|slot| state.is_start_point(&slot.frame))
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
                let take = match self.resume {
                    Resume::Any => true,
                    Resume::StartPoint { counted } => {
                        let start = state.is_start_point(&slot.frame);
                        if start {
                            self.resume = Resume::Any;
                        } else if counted {
                            lost += 1;
                        }
                        start
                    }
                };
                if take {
                    event = Some(announce(&mut self.last_config, &mut self.pending, slot));
                }
            }
            let at_end =
                self.backlog.is_empty() && self.cursor >= state.ring.head() && !state.ended;
            (event, at_end, state.ended)
        };
        if lost > 0 {
            *dropped += lost;
            entry.count_dropped(lost);
        }
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

/// The event for `slot`: the frame itself, or first a `Started` if its configuration is not
/// the one last announced (the frame is then held back in `pending` for the next read). Only
/// the references handed out are cloned.
fn announce(
    last_config: &mut Option<Arc<SharedConfig>>,
    pending: &mut Option<Arc<SharedFrame>>,
    slot: &Slot,
) -> Event {
    if last_config
        .as_ref()
        .is_some_and(|c| Arc::ptr_eq(c, &slot.config))
    {
        return Event::Frame(Arc::clone(&slot.frame));
    }
    *last_config = Some(Arc::clone(&slot.config));
    *pending = Some(Arc::clone(&slot.frame));
    Event::Started(Arc::clone(&slot.config))
}
