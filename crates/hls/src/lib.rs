//! streamgate's HTTP playback: HLS (with LL-HLS's parts, blocking playlist reloads and
//! preload hints) and DASH, in Ant Media's URL shapes, over CMAF segments made once per
//! stream.
//!
//! - `GET /{app}/streams/{stream}.m3u8?token=T`: the master playlist, which opens a playback
//!   session through the one admission path (protocol `hls`).
//! - `GET /{app}/streams/{stream}/{stream}.mpd?token=T`: the DASH manifest, the same way
//!   (protocol `dash`).
//! - Everything else under `/{app}/streams/{stream}/` (the media playlist, initialization
//!   segments, segments and parts) carries the session's id (`?sid=`), which the server
//!   writes into the URIs it serves ([`session`]).
//!
//! Main loop: a stream's first request starts its [`feed`], a task that reads the stream
//! from the relay and cuts it into segments and parts ([`segmenter`], sans IO) once for every
//! viewer, publishing each new part as an immutable snapshot; requests render the playlists
//! ([`playlist`]) from the latest snapshot, or wait on the next one when they ask for what
//! is about to exist. Segments are kept in memory within a byte bound per stream and served
//! as shared chunks, never copied per request. A sweeper ends idle and revoked sessions.

pub mod feed;
mod http;
pub mod playlist;
pub mod segmenter;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use streamgate_admission::Admission;
use tokio_util::sync::CancellationToken;

pub use feed::{FeedSettings, Feeds, KeyframeRequester};
pub use segmenter::SegmenterSettings;
pub use session::{SessionSettings, Sessions};

/// How often ended and idle sessions are swept (a revoked session's requests are refused at
/// once; the sweep frees what it held).
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// How HTTP playback runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlsSettings {
    /// Whether media playlists carry LL-HLS's parts, preload hints and server control.
    pub low_latency: bool,
    /// Segments and feeds.
    pub feed: FeedSettings,
    /// Sessions.
    pub sessions: SessionSettings,
}

impl Default for HlsSettings {
    fn default() -> Self {
        Self {
            low_latency: true,
            feed: FeedSettings::default(),
            sessions: SessionSettings::default(),
        }
    }
}

/// What every HTTP playback request needs.
#[derive(Debug)]
pub struct HlsContext {
    /// The admission path.
    pub admission: Arc<Admission>,
    /// The feeds, one per stream watched.
    pub feeds: Arc<Feeds>,
    /// The playback sessions.
    pub sessions: Arc<Sessions>,
    /// The settings.
    pub settings: HlsSettings,
}

impl HlsContext {
    /// A context whose feeds and sweeper stop at `shutdown`. A feed outlives the idle time
    /// of its sessions, so that a session never reads a stopped feed.
    pub fn new(
        admission: Arc<Admission>,
        mut settings: HlsSettings,
        keyframes: KeyframeRequester,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        settings.feed.idle = settings
            .feed
            .idle
            .max(settings.sessions.idle + Duration::from_secs(10));
        let feeds = Feeds::new(admission.hub().clone(), settings.feed, keyframes, shutdown);
        Arc::new(Self {
            admission,
            feeds,
            sessions: Arc::new(Sessions::new(settings.sessions)),
            settings,
        })
    }

    /// Sweeps ended and idle sessions until `shutdown`, then ends them all.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    self.sessions.sweep();
                }
            }
        }
        self.sessions.clear();
    }
}

/// The routes of HTTP playback, under `/{app}/streams/`. The server must be run with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(ctx: Arc<HlsContext>) -> Router {
    http::routes().with_state(ctx)
}
