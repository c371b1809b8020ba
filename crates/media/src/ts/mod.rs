//! MPEG-TS (ISO/IEC 13818-1), the container SRT carries: [`TsMuxer`] turns frames into
//! transport-stream packets, [`TsDemuxer`] turns a transport stream back into configs and
//! frames.
//!
//! Demuxing uses the `mpeg2ts-reader` crate for packet, PSI and PES parsing; this module adds
//! what it leaves to the caller: finding packet boundaries again after garbage, splitting PES
//! payloads into H.264 access units and ADTS frames, and unwrapping 33-bit timestamps.
//!
//! The muxer is written here: the Rust TS writers we looked at either own the output stream
//! (so the bytes of one frame cannot be produced once and shared by many viewers) or give no
//! control over continuity counters and PCR placement. Ours is small: one program, H.264 on
//! [`VIDEO_PID`], AAC (ADTS) on [`AUDIO_PID`], PAT and PMT before every video keyframe and at
//! least every [`PSI_INTERVAL`], and a PCR with every frame of the PCR track.

mod demux;
mod es;
mod mux;
mod psi;

pub use demux::{DemuxStats, TsDemuxer, TsEvent, MAX_PES_LEN};
pub use mux::{TsMuxer, PCR_LEAD, PSI_INTERVAL, TIMESTAMP_OFFSET};

/// Length of one transport-stream packet.
pub const PACKET_LEN: usize = 188;
/// The byte every packet starts with.
pub const SYNC_BYTE: u8 = 0x47;
/// PID of the program association table.
pub const PAT_PID: u16 = 0;
/// PID the muxer gives the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID the muxer gives the H.264 track.
pub const VIDEO_PID: u16 = 0x100;
/// PID the muxer gives the AAC track.
pub const AUDIO_PID: u16 = 0x101;
/// PMT stream type of H.264.
pub const STREAM_TYPE_H264: u8 = 0x1b;
/// PMT stream type of AAC in ADTS.
pub const STREAM_TYPE_ADTS: u8 = 0x0f;
/// Timestamps in PES headers and PCRs count modulo 2^33.
pub const TIMESTAMP_MODULUS: i64 = 1 << 33;
