//! Frames to RTP for viewers, in two steps so that the costly one is shared:
//!
//! 1. [`encode_payloads`] turns one frame into its RTP payloads (H.264 in Annex-B with SPS+PPS
//!    before each keyframe, fragmented by the `rtp` crate's payloaders). It runs once per frame
//!    for all viewers, through the relay's [`streamgate_relay::WireFormat::Rtp`] cache; the
//!    result is one buffer of length-prefixed payloads ([`Payloads`] reads it back).
//! 2. Each viewer stamps its own sequence numbers and timestamps ([`Stamper`]); SSRC, payload
//!    type and SRTP are per viewer anyway.

use bytes::{BufMut, Bytes, BytesMut};
use rtp::codecs::h264::H264Payloader;
use rtp::codecs::opus::OpusPayloader;
use rtp::codecs::vp8::Vp8Payloader;
use rtp::packetizer::Payloader;
use streamgate_media::{nal, AvcConfig, Codec, Frame, CLOCK_HZ};

/// Largest RTP payload written, in bytes: 1200 leaves room for the RTP header, SRTP tag and
/// IP/UDP headers within the common 1280-byte path MTU floor.
pub const RTP_PAYLOAD_MTU: usize = 1200;

/// RTP clock of a codec, in Hz.
pub fn clock_rate(codec: Codec) -> u32 {
    match codec {
        Codec::Opus => 48_000,
        Codec::Aac => 48_000,
        Codec::H264 | Codec::Vp8 => 90_000,
    }
}

/// The RTP payloads of one frame, each preceded by its length as a big-endian `u16`. Empty if
/// the frame cannot be sent over WebRTC (AAC, or a malformed H.264 payload).
pub fn encode_payloads(frame: &Frame, video_config: Option<&AvcConfig>) -> Bytes {
    let payloads = match frame.codec {
        Codec::H264 => {
            let Ok(mut annexb) = nal::avcc_to_annexb(&frame.payload) else {
                return Bytes::new();
            };
            if frame.keyframe && !has_sps(&frame.payload) {
                if let Some(config) = video_config {
                    let mut joined = BytesMut::from(config.parameter_sets_annexb().as_ref());
                    joined.extend_from_slice(&annexb);
                    annexb = joined.freeze();
                }
            }
            H264Payloader::default().payload(RTP_PAYLOAD_MTU, &annexb)
        }
        Codec::Vp8 => Vp8Payloader::default().payload(RTP_PAYLOAD_MTU, &frame.payload),
        Codec::Opus => OpusPayloader.payload(RTP_PAYLOAD_MTU, &frame.payload),
        Codec::Aac => return Bytes::new(),
    };
    let Ok(payloads) = payloads else {
        return Bytes::new();
    };
    let total: usize = payloads.iter().map(|p| p.len() + 2).sum();
    let mut out = BytesMut::with_capacity(total);
    for p in payloads {
        let Ok(len) = u16::try_from(p.len()) else {
            return Bytes::new();
        };
        out.put_u16(len);
        out.extend_from_slice(&p);
    }
    out.freeze()
}

/// Whether an AVCC payload carries its own SPS.
fn has_sps(avcc: &[u8]) -> bool {
    nal::split_avcc(avcc, nal::AVCC_LENGTH_SIZE)
        .map(|units| {
            units
                .iter()
                .any(|u| nal::nal_type(u) == Some(nal::NAL_TYPE_SPS))
        })
        .unwrap_or(false)
}

/// Reads back the payloads [`encode_payloads`] wrote, as slices of the shared buffer.
#[derive(Debug, Clone)]
pub struct Payloads {
    rest: Bytes,
}

impl Payloads {
    /// Iterates over an encoded buffer.
    pub fn new(encoded: Bytes) -> Self {
        Self { rest: encoded }
    }
}

impl Iterator for Payloads {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let len = match self.rest.get(..2) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return None,
        };
        if self.rest.len() < 2 + len {
            self.rest = Bytes::new();
            return None;
        }
        let payload = self.rest.slice(2..2 + len);
        self.rest = self.rest.slice(2 + len..);
        Some(payload)
    }
}

/// One viewer's RTP numbering for one track.
#[derive(Debug, Clone)]
pub struct Stamper {
    next_seq: u16,
    ts_base: u32,
    clock: u32,
}

/// The header fields of one outgoing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit (last packet of a video frame).
    pub marker: bool,
}

impl Stamper {
    /// Numbering starting at `first_seq` and `ts_base` (random per viewer, RFC 3550) for a
    /// track with the given clock.
    pub fn new(first_seq: u16, ts_base: u32, clock: u32) -> Self {
        Self {
            next_seq: first_seq,
            ts_base,
            clock,
        }
    }

    /// The stamp of the next packet of a frame with presentation time `pts` (in
    /// [`CLOCK_HZ`] ticks); `last` for the frame's last packet.
    pub fn stamp(&mut self, pts: i64, last: bool) -> Stamp {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Stamp {
            seq,
            timestamp: self.rtp_time(pts),
            marker: last,
        }
    }

    /// The RTP timestamp of presentation time `pts` (in [`CLOCK_HZ`] ticks) on this track.
    pub fn rtp_time(&self, pts: i64) -> u32 {
        let ticks = i128::from(pts) * i128::from(self.clock) / i128::from(CLOCK_HZ);
        // RTP timestamps are modulo 2^32: the truncation is the wrap-around.
        self.ts_base.wrapping_add(ticks as u32)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use streamgate_media::TrackKind;

    fn h264(keyframe: bool, nal_len: usize) -> Frame {
        let mut avcc = BytesMut::new();
        let nal_type = if keyframe { 0x65 } else { 0x41 };
        avcc.put_u32(u32::try_from(nal_len).unwrap());
        avcc.put_u8(nal_type);
        avcc.extend(std::iter::repeat_n(0xabu8, nal_len - 1));
        Frame {
            track: TrackKind::Video,
            codec: Codec::H264,
            pts: 9000,
            dts: 9000,
            keyframe,
            payload: avcc.freeze(),
        }
    }

    #[test]
    fn keyframes_get_parameter_sets_and_large_nals_are_fragmented() {
        let config = AvcConfig::from_parameter_sets(
            vec![Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f, 0x11])],
            vec![Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])],
        )
        .unwrap();
        let encoded = encode_payloads(&h264(true, 5000), Some(&config));
        let payloads: Vec<Bytes> = Payloads::new(encoded).collect();
        // STAP-A with SPS+PPS, then FU-A fragments of the IDR slice.
        assert_eq!(payloads[0][0] & 0x1f, 24);
        assert!(payloads.len() >= 5);
        assert!(payloads.iter().all(|p| p.len() <= RTP_PAYLOAD_MTU));
        assert!(payloads[1..].iter().all(|p| p[0] & 0x1f == 28));

        let encoded = encode_payloads(&h264(false, 100), Some(&config));
        let payloads: Vec<Bytes> = Payloads::new(encoded).collect();
        assert_eq!(payloads.len(), 1);
        assert_eq!(payloads[0][0], 0x41);
    }

    #[test]
    fn unusable_frames_encode_to_nothing() {
        let mut bad = h264(false, 100);
        bad.payload = Bytes::from_static(&[0, 0, 0, 200, 1]);
        assert!(encode_payloads(&bad, None).is_empty());
        let aac = Frame {
            track: TrackKind::Audio,
            codec: Codec::Aac,
            pts: 0,
            dts: 0,
            keyframe: true,
            payload: Bytes::from_static(b"x"),
        };
        assert!(encode_payloads(&aac, None).is_empty());
        assert_eq!(Payloads::new(Bytes::from_static(&[0, 9, 1])).count(), 0);
        assert_eq!(Payloads::new(Bytes::from_static(&[7])).count(), 0);
    }

    #[test]
    fn stamps_count_per_viewer_and_scale_audio_clocks() {
        let mut video = Stamper::new(u16::MAX, u32::MAX - 10, 90_000);
        let a = video.stamp(90_000, false);
        let b = video.stamp(90_000, true);
        assert_eq!((a.seq, b.seq), (u16::MAX, 0));
        assert_eq!(a.timestamp, (u32::MAX - 10).wrapping_add(90_000));
        assert!(b.marker && !a.marker);
        let mut audio = Stamper::new(0, 0, 48_000);
        assert_eq!(audio.stamp(90_000, true).timestamp, 48_000);
        assert_eq!(audio.stamp(1_800, true).timestamp, 960);
    }
}
