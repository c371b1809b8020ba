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
//! What a viewer takes of a stream is the relay's choice, announced with the stream's
//! configuration: the stream's own H.264 or VP8 and Opus, or the derived tracks the relay runs
//! once per stream for browsers (AAC from RTMP and SRT publishers as Opus; H.264 with
//! B-frames, x264's and OBS's defaults, which browsers' WebRTC receivers do not reorder,
//! re-encoded without them), or a refusal the viewer is told. A browser publisher's answer
//! tells the relay which tracks it sends, and its Opus reaches RTMP and SRT viewers as AAC
//! through the same derived tracks.
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
pub mod outbound;
pub mod pace;
mod pages;
pub mod peer;
mod play;
mod publish;
pub mod sdpfrag;
mod session;
mod socket;
pub mod whip;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use streamgate_admission::Admission;
use streamgate_relay::Hub;
use tokio_util::sync::CancellationToken;

pub use keyframe::{KeyframeBoard, KEYFRAME_REQUEST_INTERVAL};
pub use limits::WebRtcLimits;
pub use message::MAX_MESSAGE_BYTES;
pub use peer::IceSettings;
pub use play::MAX_START_BACKLOG;
pub use session::NEGOTIATION_TIMEOUT;
pub use socket::MAX_SESSIONS_PER_SOCKET;
pub use whip::{IceServer, Resources};

/// What every WebRTC session needs.
#[derive(Debug)]
pub struct WebRtcContext {
    /// The admission path (the auth decision and the relay attachment).
    pub admission: Arc<Admission>,
    /// The relay.
    pub hub: Hub,
    /// ICE settings for every peer connection.
    pub ice: IceSettings,
    /// STUN and TURN servers given to clients.
    pub ice_servers: Vec<IceServer>,
    /// The sessions signaled over HTTP (WHIP, WHEP).
    pub resources: Resources,
    /// WebRTC publishers that viewers may ask for keyframes.
    pub keyframes: KeyframeBoard,
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
        ice_servers: Vec<IceServer>,
        limits: WebRtcLimits,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            hub: admission.hub().clone(),
            admission,
            ice,
            ice_servers,
            resources: Resources::default(),
            limits,
            counts: limits::Counts::new(&limits),
            keyframes: KeyframeBoard::default(),
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
        .merge(whip::routes())
        .merge(pages::router())
        .with_state(ctx)
}
