//! streamgate's RTMP listener: publish and play sessions for encoders and players such as
//! ffmpeg and OBS, every one admitted by the auth decision, with media carried through the
//! relay.
//!
//! Main loop, per connection ([`connection`]): the socket loop completes the handshake, then
//! feeds every byte to the sans-IO session library (`rml_rtmp`) and to an [`watch::InboundWatch`]
//! that bounds the client's chunk size and reads the connect command's tcUrl and flashVer.
//! A publish or play request becomes an `AccessRequest`; with a grant, a publisher pushes FLV
//! tags converted to frames into the relay, and a player writes the relay's frames, serialised
//! once per frame for every viewer ([`chunk`]). A revoked grant, the end of the stream or
//! shutdown closes the connection.

pub mod chunk;
mod connection;
mod encode;
mod fanout;
mod listener;
pub mod status;
mod stop;
pub mod target;
pub mod watch;
mod write;

use std::sync::Arc;

use streamgate_auth::Auth;
use streamgate_relay::Hub;

pub use connection::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, PUBLISH_READ_TIMEOUT, WRITE_STALL_TIMEOUT};
pub use listener::{RtmpListener, MAX_CONNECTIONS};

/// What every RTMP connection needs.
#[derive(Debug, Clone)]
pub struct RtmpContext {
    /// The auth service.
    pub auth: Arc<Auth>,
    /// The relay.
    pub hub: Hub,
}
