//! The fan-out relay of streamgate: a [`Hub`] of streams by name, each with at most one
//! [`Publisher`] and any number of [`Subscriber`]s, a bounded queue per subscriber, a GOP
//! cache for instant start, live/ended events, and per-wire-format encode-once caches
//! ([`SharedFrame::encoded`], [`SharedConfig::encoded`]). It knows no tokens and no sockets:
//! listeners attach to it only after the auth crate has granted the request.
//!
//! It knows which codecs each wire format carries ([`WireFormat::carries`]) and what each
//! viewer takes of a stream ([`Selection`]): the stream's own tracks, or a derived track (a
//! transcode, run once per publish for every viewer that takes it through the hub's
//! [`Deriver`]), or nothing, with the reason. A publish's tracks are settled from its first
//! frames before any viewer reads them ([`settle`]).
//!
//! Main loop: a listener's publish task calls [`Hub::publish`], says which tracks it knows
//! the stream carries ([`Publisher::expect`]), sets the stream configuration and calls
//! [`Publisher::push`] for each frame, which never waits; each play task calls
//! [`Hub::subscribe_as`] with its wire format and loops on [`Subscriber::recv`], writing
//! every [`Event::Frame`] in its own wire format through the shared encode cache, after the
//! [`Event::Started`] that says what it takes.
//!
//! Queue design: each stream keeps one ring of the last frames (at most
//! [`RelayLimits::buffer_frames`] and [`RelayLimits::buffer_bytes`]) and each subscriber only a cursor into it, so a push does no per-subscriber queueing (one
//! allocation for the shared frame, one short lock, then a wake-up of the subscribers that
//! wait). A subscriber that has read everything sees with one atomic load that nothing is
//! new and waits in its own parking slot, so idle checks and waits take no shared lock. A subscriber whose cursor falls off the ring has lost frames: it
//! skips to the newest video keyframe still queued (or waits for the next one), and the
//! loss is counted, per subscriber and per stream.
//! No lock is held across an `.await`, and no unbounded channel carries media. A frame larger
//! than [`RelayLimits::max_frame_bytes`] is dropped at the push, so that the memory of a stream
//! stays within its [`RelayLimits`] whatever its publisher sends.

mod derive;
mod error;
mod gop;
mod hub;
mod limits;
mod publisher;
mod queue;
mod session;
pub mod settle;
mod shared;
mod stream_watch;
mod subscriber;
mod tracks;
mod wake;

pub use derive::{DeriveHandle, DeriveJob, DerivedOutput, Deriver};
pub use error::RelayError;
pub use gop::{GOP_CACHE_MAX_BYTES, GOP_CACHE_MAX_FRAMES};
pub use hub::{Hub, StreamStats};
pub use limits::{RelayLimits, MAX_FRAME_BYTES};
pub use publisher::Publisher;
pub use queue::{SUBSCRIBER_QUEUE_BYTES, SUBSCRIBER_QUEUE_FRAMES};
pub use settle::SETTLE_WINDOW;
pub use shared::{SharedConfig, SharedFrame};
pub use stream_watch::StreamWatch;
pub use subscriber::{Event, Subscriber};
pub use tracks::{Derivation, Pick, Refusal, Selection, Unavailable, WireFormat};
