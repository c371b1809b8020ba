//! streamgate's SRT listener: publish and play over SRT (srt-tokio) for encoders and players
//! such as ffmpeg, OBS and hardware encoders, every connection admitted by the auth decision
//! before its handshake completes, with media carried through the relay as MPEG-TS.
//!
//! Main loop ([`SrtListener::run`]): srt-tokio hands over each connection request with its
//! `streamid`, peer address and key size before it is accepted. A task per request
//! ([`admit`]) parses the `streamid` ([`streamid::parse_stream_id`], a pure function),
//! asks the auth crate, checks the caller's encryption against the passphrase the stream
//! needs ([`keys`]; where the request cannot show it, the handshake itself:
//! [`key_material`]) and attaches to the relay; any refusal is an SRT rejection with a code
//! ([`reject`]). Only then is the connection accepted. A publisher's messages go through the
//! media crate's TS demuxer into the relay; a viewer gets each frame as TS packets muxed once
//! per frame for all SRT viewers of the stream ([`feeds`]), 7 packets per SRT message. A
//! cancelled grant, the end of the stream or shutdown closes the connection.
//!
//! MPEG-TS itself lives in `streamgate_media::ts`: demuxing uses `mpeg2ts-reader`, the muxer
//! is our own (the module documentation says why).

pub mod admit;
pub mod feeds;
#[cfg(target_os = "linux")]
pub mod filter;
pub mod key_material;
pub mod keys;
mod listener;
pub mod reject;
pub mod session;
pub mod streamid;

use std::sync::Arc;

use streamgate_admission::Admission;
use streamgate_relay::Hub;

pub use listener::{SrtListener, MAX_CONNECTIONS, SEND_BUFFER_BYTES};

/// What every SRT connection needs.
#[derive(Clone)]
pub struct SrtContext {
    /// The admission path (the auth decision and the relay attachment).
    pub admission: Arc<Admission>,
    /// The relay.
    pub hub: Hub,
    /// The passphrase every connection must use, unless a publish token sets its own; `None`
    /// for no encryption.
    pub server_passphrase: Option<String>,
}

impl std::fmt::Debug for SrtContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtContext")
            .field(
                "server_passphrase",
                &self.server_passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}
