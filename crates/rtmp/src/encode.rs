//! A viewer's bytes for relay events: frames and sequence headers as RTMP chunks, from the
//! relay's encode-once cache when the viewer uses the common message stream id.

use bytes::{Bytes, BytesMut};
use streamgate_media::flv;
use streamgate_media::{Codec, Frame, StreamConfig};
use streamgate_relay::{SharedConfig, SharedFrame, WireFormat};

use crate::chunk::{encode_message, msg_type, AUDIO_CSID, VIDEO_CSID};

/// The message stream id every ffmpeg/OBS player uses (the first `createStream`). Viewers on
/// it share one encoding of each frame; any other id gets its own.
pub(crate) const SHARED_STREAM_ID: u32 = 1;

/// A frame's chunks for a viewer on `stream_id`; empty for codecs RTMP cannot carry.
pub(crate) fn frame_bytes(shared: &SharedFrame, stream_id: u32) -> Bytes {
    if stream_id == SHARED_STREAM_ID {
        shared.encoded(WireFormat::Rtmp, |f| frame_message(f, stream_id))
    } else {
        frame_message(&shared.frame, stream_id)
    }
}

/// A configuration's sequence headers for a viewer on `stream_id`.
pub(crate) fn config_bytes(config: &SharedConfig, stream_id: u32) -> Bytes {
    if stream_id == SHARED_STREAM_ID {
        config.encoded(WireFormat::Rtmp, |c| sequence_headers(c, stream_id))
    } else {
        sequence_headers(&config.config, stream_id)
    }
}

/// The AVC and AAC sequence headers of a configuration, as chunks.
fn sequence_headers(c: &StreamConfig, stream_id: u32) -> Bytes {
    let mut out = BytesMut::new();
    if let Some(v) = &c.video {
        if let Ok(b) = encode_message(
            VIDEO_CSID,
            0,
            msg_type::VIDEO,
            stream_id,
            &flv::avc_sequence_header_body(v),
        ) {
            out.extend_from_slice(&b);
        }
    }
    if let Some(a) = &c.audio {
        if let Ok(b) = encode_message(
            AUDIO_CSID,
            0,
            msg_type::AUDIO,
            stream_id,
            &flv::aac_sequence_header_body(a),
        ) {
            out.extend_from_slice(&b);
        }
    }
    out.freeze()
}

/// One frame as an RTMP message; empty for codecs RTMP viewers cannot take.
fn frame_message(f: &Frame, stream_id: u32) -> Bytes {
    let ts = flv::timestamp_ms(f);
    let encoded = match f.codec {
        Codec::H264 => encode_message(
            VIDEO_CSID,
            ts,
            msg_type::VIDEO,
            stream_id,
            &flv::video_body(f),
        ),
        Codec::Aac => encode_message(
            AUDIO_CSID,
            ts,
            msg_type::AUDIO,
            stream_id,
            &flv::audio_body(f),
        ),
        Codec::Opus | Codec::Vp8 => return Bytes::new(),
    };
    encoded.unwrap_or_default()
}
