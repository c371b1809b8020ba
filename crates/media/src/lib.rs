//! Codec-level media types for streamgate: the [`Frame`] every listener turns its protocol
//! into, the stream configurations ([`AvcConfig`], [`AacConfig`], [`Metadata`],
//! [`StreamConfig`], whose [`Tracks`] say what a stream carries), and the conversions between them and the byte layouts the protocols
//! carry (AVCC/Annex-B in [`nal`], ADTS in [`AacConfig::adts_header`] / [`parse_adts`], FLV tag
//! bodies in [`flv`], MPEG-TS in [`ts`]).
//!
//! The main loop lives in the listeners: a listener parses what it receives into configs and
//! frames with this crate (for RTMP, [`flv::parse_video`] / [`flv::parse_audio`]), hands them
//! to the relay, and on the way out asks this crate for the bytes of its own format
//! ([`flv::video_body`], [`nal::avcc_to_annexb`], ...). This crate does no IO and keeps no
//! state; every parser takes untrusted bytes and returns [`MediaError`] instead of panicking.

mod aac;
mod avc;
mod config;
mod error;
pub mod flv;
pub mod fmp4;
mod frame;
pub mod nal;
mod read;
pub mod ts;

pub use aac::{parse_adts, AacConfig, AdtsHeader, ADTS_HEADER_LEN, MAX_ADTS_FRAME_LEN};
pub use avc::{sps_display_size, sps_picture_size, AvcConfig, PictureSize};
pub use config::{Metadata, StreamConfig, Tracks, VideoTrack};
pub use error::MediaError;
pub use frame::{ms_to_ticks, ticks_to_ms, Codec, Frame, TrackKind, CLOCK_HZ};
