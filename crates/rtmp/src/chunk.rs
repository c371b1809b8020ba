//! Serialising media messages into RTMP chunks once, for every viewer of a stream.
//!
//! Each message is written with a full (type 0) header followed by type 3 continuation chunks,
//! so the bytes depend on no per-connection compression state and can be shared. They go on
//! chunk streams the session library never uses (it uses 2 to 6), so its own header
//! compression is not disturbed. Every play session uses [`OUT_CHUNK_SIZE`].

use bytes::{BufMut, Bytes, BytesMut};

/// Chunk size the server sends with (announced at session start); 4096 like nginx-rtmp.
pub const OUT_CHUNK_SIZE: u32 = 4096;
/// Chunk stream for audio messages.
pub const AUDIO_CSID: u8 = 7;
/// Chunk stream for video messages.
pub const VIDEO_CSID: u8 = 8;
/// Chunk stream for status and data messages written by this crate.
pub const DATA_CSID: u8 = 9;
/// Largest message the 24-bit length field can carry.
pub const MAX_MESSAGE_LEN: usize = 0xFF_FFFF;

/// RTMP message type ids used here.
pub mod msg_type {
    /// Audio data.
    pub const AUDIO: u8 = 8;
    /// Video data.
    pub const VIDEO: u8 = 9;
    /// AMF0 data (onMetaData).
    pub const DATA_AMF0: u8 = 18;
    /// AMF0 command (onStatus).
    pub const COMMAND_AMF0: u8 = 20;
}

/// A message too large for one RTMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message of {0} bytes exceeds the RTMP limit")]
pub struct TooLarge(pub usize);

/// One message as chunks: type 0 header, then type 3 headers every [`OUT_CHUNK_SIZE`] bytes.
pub fn encode_message(
    csid: u8,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
) -> Result<Bytes, TooLarge> {
    if payload.len() > MAX_MESSAGE_LEN {
        return Err(TooLarge(payload.len()));
    }
    let chunk = OUT_CHUNK_SIZE as usize;
    let extended = timestamp >= 0xFF_FFFF;
    let chunks = payload.len().div_ceil(chunk).max(1);
    let ext_len = if extended { 4 } else { 0 };
    let mut out =
        BytesMut::with_capacity(12 + ext_len + payload.len() + (chunks - 1) * (1 + ext_len));
    // Basic header, format 0; csid 2..=63 fits one byte.
    out.put_u8(csid & 0x3F);
    let len = payload.len() as u32;
    out.put_uint(u64::from(if extended { 0xFF_FFFF } else { timestamp }), 3);
    out.put_uint(u64::from(len), 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    for (i, piece) in payload.chunks(chunk).enumerate() {
        if i > 0 {
            out.put_u8(0xC0 | (csid & 0x3F));
            if extended {
                out.put_u32(timestamp);
            }
        }
        out.put_slice(piece);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    fn decode_all(bytes: &[u8]) -> Vec<rml_rtmp::messages::MessagePayload> {
        let mut d = ChunkDeserializer::new();
        d.set_max_chunk_size(OUT_CHUNK_SIZE as usize).unwrap();
        let mut out = Vec::new();
        let mut input = bytes;
        while let Some(m) = d.get_next_message(input).unwrap() {
            out.push(m);
            input = &[];
        }
        out
    }

    #[test]
    fn round_trips_through_a_reference_decoder() {
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let cases: [(&[u8], u32); 5] = [
            (b"", 0),
            (b"abc", 40),
            (&big, 1_000),
            (&big, 0xFF_FFFF),
            (&big[..OUT_CHUNK_SIZE as usize], 0x1234_5678),
        ];
        let mut all = Vec::new();
        for (payload, ts) in cases {
            let bytes = encode_message(VIDEO_CSID, ts, msg_type::VIDEO, 1, payload).unwrap();
            all.extend_from_slice(&bytes);
            let got = decode_all(&bytes);
            assert_eq!(got.len(), 1);
            assert_eq!(&got[0].data[..], payload);
            assert_eq!(got[0].timestamp.value, ts);
            assert_eq!(got[0].type_id, msg_type::VIDEO);
            assert_eq!(got[0].message_stream_id, 1);
        }
        assert_eq!(
            decode_all(&all).len(),
            5,
            "messages back to back on one chunk stream"
        );
    }

    #[test]
    fn refuses_oversized_messages() {
        let huge = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert_eq!(
            encode_message(AUDIO_CSID, 0, msg_type::AUDIO, 1, &huge),
            Err(TooLarge(MAX_MESSAGE_LEN + 1))
        );
    }
}
