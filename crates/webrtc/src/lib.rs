//! streamgate's WebRTC listener for browsers: WebSocket signaling with Ant Media's message
//! set (so pages written for its JavaScript SDK work unchanged), WebRTC peers for publish and
//! play, RTP <-> [`streamgate_media::Frame`], and the bundled publish and play pages.
//!
//! Main loop, per WebSocket ([`socket`]): each text message is parsed ([`message`]); a
//! `publish` or `play` becomes an `AccessRequest` with the socket's Origin, User-Agent and
//! peer IP, and with a grant a session task starts ([`publish`], [`play`]) that owns the grant,
//! the peer connection ([`peer`], the one module that uses the `webrtc` crate) and the relay
//! handle. A publisher's RTP is reassembled into frames ([`inbound`]); a viewer's frames are
//! packetized once per frame for every viewer and numbered per viewer ([`outbound`]), and
//! paced on the media clock so that audio and video reach the browser together ([`pace`]).
//! AAC from RTMP and SRT publishers reaches viewers as Opus through one transcode per stream
//! ([`opus_feed`]); a browser publisher's Opus reaches RTMP and SRT viewers as AAC, encoded
//! in its publish session while the relay counts such viewers. H.264 with B-frames (x264's and
//! OBS's defaults), which browsers' WebRTC receivers do not reorder, reaches viewers
//! re-encoded without them, once per stream on a thread of its own ([`video_feed`]), or is
//! refused ([`WebRtcLimits::bframes`]).
//! Keyframe requests from viewers reach the publisher through [`keyframe`], rate-limited.
//! Every socket is pinged and closed when silent ([`WebRtcLimits::ws_idle_timeout`]); sessions
//! per source address, candidates per session and peer connections negotiating at once are
//! capped ([`WebRtcLimits`]).
//! A session ends on `stop`, when its socket closes, when its peer connection fails, when
//! the stream ends (viewers), or when its grant is cancelled (token revoked or expired).

pub mod inbound;
pub mod keyframe;
mod limits;
pub mod message;
pub mod name;
pub mod negotiate;
pub mod opus_feed;
pub mod outbound;
pub mod pace;
mod pages;
pub mod peer;
mod play;
mod publish;
mod session;
mod socket;
pub mod video_feed;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use streamgate_admission::Admission;
use streamgate_relay::Hub;
use tokio_util::sync::CancellationToken;

pub use keyframe::{KeyframeBoard, KEYFRAME_REQUEST_INTERVAL};
pub use limits::WebRtcLimits;
pub use message::MAX_MESSAGE_BYTES;
pub use opus_feed::{OpusFeeds, OPUS_FEED_CAPACITY};
pub use peer::IceSettings;
pub use play::{CODEC_PROBE_TIME, MAX_START_BACKLOG};
pub use session::NEGOTIATION_TIMEOUT;
pub use socket::MAX_SESSIONS_PER_SOCKET;
pub use video_feed::{BFramesPolicy, VideoFeeds, VIDEO_FEED_CAPACITY};

/// What every WebRTC session needs.
#[derive(Debug)]
pub struct WebRtcContext {
    /// The admission path (the auth decision and the relay attachment).
    pub admission: Arc<Admission>,
    /// The relay.
    pub hub: Hub,
    /// ICE settings for every peer connection.
    pub ice: IceSettings,
    /// WebRTC publishers that viewers may ask for keyframes.
    pub keyframes: KeyframeBoard,
    /// AAC -> Opus transcodes for viewers of RTMP and SRT streams, one per stream.
    pub opus: OpusFeeds,
    /// H.264 re-encodes without B-frames, one per stream that needs one.
    pub video: VideoFeeds,
    /// Fires at server shutdown: every socket and session ends.
    pub shutdown: CancellationToken,
    /// Bounds of sessions and sockets.
    pub limits: WebRtcLimits,
    /// What the limits are checked against.
    counts: limits::Counts,
}

impl WebRtcContext {
    /// A context with an empty keyframe board.
    pub fn new(
        admission: Arc<Admission>,
        ice: IceSettings,
        limits: WebRtcLimits,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            hub: admission.hub().clone(),
            admission,
            ice,
            limits,
            counts: limits::Counts::new(&limits),
            keyframes: KeyframeBoard::default(),
            opus: OpusFeeds::default(),
            video: VideoFeeds::new(&limits),
            shutdown,
        }
    }
}

impl WebRtcContext {
    /// The count of sessions per source address (for metrics).
    pub fn session_gate(&self) -> &streamgate_auth::ConnectionGate {
        &self.counts.peers
    }
}

/// The HTTP routes of the WebRTC listener: the WebSocket endpoints `/websocket` and
/// `/<App>/websocket`, and the pages `/publish.html`, `/play.html` and their script. The
/// server must be run with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(ctx: Arc<WebRtcContext>) -> Router {
    Router::new()
        .route("/websocket", get(socket::root))
        .route("/{app}/websocket", get(socket::app))
        .merge(pages::router())
        .with_state(ctx)
}
