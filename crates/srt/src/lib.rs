//! streamgate's SRT listener: publish and play over SRT for encoders and players such as
//! ffmpeg, OBS, `srt-live-transmit` and hardware encoders, every connection admitted by the
//! auth decision before its handshake completes, with media carried through the relay as
//! MPEG-TS.
//!
//! Main loop ([`SrtListener::run`]): the [`engine`] owns the UDP socket, the handshake and
//! every connection (srt-protocol's state machine, driven sans IO); it hands each caller's
//! conclusion over as a [`engine::ConnectRequest`] with its `streamid`, address, key size and
//! whether it encrypts. A task per request ([`admit`]) parses the `streamid`
//! ([`streamid::parse_stream_id`], a pure function), asks the auth crate, decides encryption
//! against the passphrase the stream needs ([`keys`]) and attaches to the relay; any refusal
//! is an SRT rejection with a code ([`reject`]). Only then is the handshake answered, and
//! the engine checks the caller's keying material against the passphrase. A publisher's
//! messages go through the media crate's TS demuxer into the relay; a viewer gets each frame
//! as TS packets muxed once per frame for all SRT viewers of the stream ([`feeds`]), cut by
//! the engine into 7 packets per SRT message. A cancelled grant, the end of the stream or
//! shutdown closes the connection.
//!
//! MPEG-TS itself lives in `streamgate_media::ts`: demuxing uses `mpeg2ts-reader`, the muxer
//! is our own (the module documentation says why).

pub mod admit;
pub mod engine;
pub mod feeds;
pub mod keys;
mod listener;
pub mod reject;
pub mod session;
pub mod streamid;

use std::sync::Arc;

use streamgate_admission::Admission;
use streamgate_relay::Hub;

pub use listener::{SrtListener, StatsSource, MAX_CONNECTIONS, SEND_BUFFER_BYTES};

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
