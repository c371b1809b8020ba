//! RTP from a publishing browser to [`Frame`]s: reassembly of one track's packets into access
//! units, loss handling and timestamp unwrapping. No IO: the peer's read loop feeds packets in.
//!
//! Loss policy: a gap in sequence numbers damages the frame being assembled; it is dropped,
//! and so is every video frame until the next keyframe (decoding on would show corruption),
//! and the caller is told to ask the browser for a keyframe.

use bytes::{Bytes, BytesMut};
use rtp::codecs::h264::H264Packet;
use rtp::codecs::vp8::Vp8Packet;
use rtp::packetizer::Depacketizer;
use streamgate_media::{nal, AvcConfig, Codec, Frame, CLOCK_HZ};

use crate::outbound::clock_rate;

/// Largest access unit assembled, in bytes; a larger one is dropped as damaged.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// The fields of one received RTP packet that reassembly needs.
#[derive(Debug, Clone)]
pub struct RtpIn {
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload (after the RTP header).
    pub payload: Bytes,
}

/// What one packet produced.
#[derive(Debug, Default)]
pub struct Assembled {
    /// A complete frame.
    pub frame: Option<Frame>,
    /// New H.264 parameter sets, seen in-band before a keyframe.
    pub config: Option<AvcConfig>,
    /// A frame was lost: ask the publisher for a keyframe.
    pub want_keyframe: bool,
}

/// One track's reassembly state.
#[derive(Debug)]
pub struct Reassembler {
    codec: Codec,
    clock: u32,
    /// [`CLOCK_HZ`] ticks added to every timestamp: when, after the session started, this
    /// track's first packet arrived (puts audio and video on one time line).
    offset: i64,
    last_ts: Option<u32>,
    ts_ext: i64,
    expected_seq: Option<u16>,
    current: Option<Partial>,
    awaiting_keyframe: bool,
    last_config: Option<AvcConfig>,
    h264: H264Packet,
}

/// The frame being assembled.
#[derive(Debug)]
struct Partial {
    timestamp: u32,
    data: BytesMut,
    /// Payload bytes of the packets given to the depacketizer for this frame.
    fed: usize,
    damaged: bool,
}

impl Reassembler {
    /// State for a track of `codec` whose first packet arrived `offset` ticks after the
    /// session started.
    pub fn new(codec: Codec, offset: i64) -> Self {
        Self {
            codec,
            clock: clock_rate(codec),
            offset,
            last_ts: None,
            ts_ext: 0,
            expected_seq: None,
            current: None,
            awaiting_keyframe: codec.track() == streamgate_media::TrackKind::Video,
            last_config: None,
            h264: H264Packet::default(),
        }
    }

    /// Feeds one packet.
    pub fn push(&mut self, pkt: RtpIn) -> Assembled {
        let mut out = Assembled::default();
        if let Some(expected) = self.expected_seq {
            let ahead = pkt.seq.wrapping_sub(expected);
            if ahead >= 0x8000 {
                // Late or duplicate (a retransmission after we moved on): ignore it.
                return out;
            }
            if ahead != 0 {
                if let Some(cur) = &mut self.current {
                    cur.damaged = true;
                }
                self.loss(&mut out);
            }
        }
        self.expected_seq = Some(pkt.seq.wrapping_add(1));

        if self
            .current
            .as_ref()
            .is_some_and(|c| c.timestamp != pkt.timestamp)
        {
            // The previous frame's last packet was lost (no marker seen).
            self.finish(&mut out);
        }
        let damaged_before = self.current.as_ref().is_some_and(|c| c.damaged);
        let fed = self.current.as_ref().map_or(0, |c| c.fed) + pkt.payload.len();
        // The depacketizer keeps fragments of its own until their last one: bound what it is
        // given per frame too, and stop feeding a damaged frame.
        let piece = if damaged_before || fed > MAX_FRAME_BYTES {
            self.h264 = H264Packet::default();
            Err(rtp::Error::ErrShortPacket)
        } else {
            self.depacketize(&pkt.payload)
        };
        let cur = self.current.get_or_insert_with(|| Partial {
            timestamp: pkt.timestamp,
            data: BytesMut::new(),
            fed: 0,
            damaged: false,
        });
        cur.fed = fed;
        match piece {
            Ok(bytes) if cur.data.len() + bytes.len() <= MAX_FRAME_BYTES => {
                cur.data.extend_from_slice(&bytes)
            }
            _ => cur.damaged = true,
        }
        if cur.damaged && !damaged_before {
            self.loss(&mut out);
        }
        if pkt.marker || self.codec == Codec::Opus {
            self.finish(&mut out);
        }
        out
    }

    fn loss(&mut self, out: &mut Assembled) {
        if self.codec.track() == streamgate_media::TrackKind::Video {
            self.awaiting_keyframe = true;
            out.want_keyframe = true;
        }
    }

    fn depacketize(&mut self, payload: &Bytes) -> Result<Bytes, rtp::Error> {
        match self.codec {
            // The depacketizer indexes past the end of a STAP-A whose last size field is cut.
            Codec::H264 if !stap_a_is_whole(payload) => Err(rtp::Error::ErrShortPacket),
            Codec::H264 => self.h264.depacketize(payload),
            Codec::Vp8 => Vp8Packet::default().depacketize(payload),
            Codec::Opus | Codec::Aac => Ok(payload.clone()),
        }
    }

    /// Completes the current frame, if any.
    fn finish(&mut self, out: &mut Assembled) {
        let Some(partial) = self.current.take() else {
            return;
        };
        self.h264 = H264Packet::default();
        let pts = self.unwrap_ts(partial.timestamp);
        if partial.damaged || partial.data.is_empty() {
            return;
        }
        let data = partial.data.freeze();
        let (payload, keyframe) = match self.codec {
            Codec::H264 => match self.h264_frame(&data, out) {
                Some(v) => v,
                None => return,
            },
            Codec::Vp8 => {
                let key = data.first().is_some_and(|b| b & 0x01 == 0);
                (data, key)
            }
            Codec::Opus | Codec::Aac => (data, true),
        };
        if self.awaiting_keyframe {
            if !keyframe {
                out.want_keyframe = true;
                return;
            }
            self.awaiting_keyframe = false;
        }
        out.frame = Some(Frame {
            track: self.codec.track(),
            codec: self.codec,
            pts,
            dts: pts,
            keyframe,
            payload,
        });
    }

    /// Annex-B access unit to an AVCC payload without parameter sets; records new ones.
    fn h264_frame(&mut self, annexb: &[u8], out: &mut Assembled) -> Option<(Bytes, bool)> {
        let units = nal::split_annexb(annexb).ok()?;
        let mut sps = Vec::new();
        let mut pps = Vec::new();
        let mut rest = Vec::new();
        let mut keyframe = false;
        for unit in units {
            match nal::nal_type(unit) {
                Some(nal::NAL_TYPE_SPS) => sps.push(Bytes::copy_from_slice(unit)),
                Some(nal::NAL_TYPE_PPS) => pps.push(Bytes::copy_from_slice(unit)),
                Some(9) | None => {}
                Some(t) => {
                    keyframe |= t == nal::NAL_TYPE_IDR;
                    rest.push(unit);
                }
            }
        }
        if !sps.is_empty() && !pps.is_empty() {
            if let Ok(config) = AvcConfig::from_parameter_sets(sps, pps) {
                if self.last_config.as_ref() != Some(&config) {
                    self.last_config = Some(config.clone());
                    out.config = Some(config);
                }
            }
        }
        if rest.is_empty() {
            return None;
        }
        Some((nal::join_avcc(&rest), keyframe))
    }

    /// The frame time of an RTP timestamp, in [`CLOCK_HZ`] ticks from the session start.
    fn unwrap_ts(&mut self, ts: u32) -> i64 {
        if let Some(last) = self.last_ts {
            // The signed distance modulo 2^32: reinterpreting the wrapped difference is the
            // point.
            self.ts_ext += i64::from(ts.wrapping_sub(last) as i32);
        }
        self.last_ts = Some(ts);
        self.offset + self.ts_ext * CLOCK_HZ / i64::from(self.clock)
    }
}

/// NAL unit type of an aggregation packet (RFC 6184, 5.7.1).
const STAP_A: u8 = 24;

/// Whether `payload`, if it is a STAP-A, is a whole sequence of size-prefixed NAL units (any
/// other packet passes).
fn stap_a_is_whole(payload: &[u8]) -> bool {
    let Some((&header, mut rest)) = payload.split_first() else {
        return true;
    };
    if header & 0x1F != STAP_A {
        return true;
    }
    while !rest.is_empty() {
        let [hi, lo, tail @ ..] = rest else {
            return false;
        };
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(next) = tail.get(size..) else {
            return false;
        };
        rest = next;
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::outbound::{encode_payloads, Payloads, Stamper};
    use bytes::BufMut;
    use streamgate_media::TrackKind;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0x11];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn avcc(units: &[&[u8]]) -> Bytes {
        let mut b = BytesMut::new();
        for u in units {
            b.put_u32(u32::try_from(u.len()).unwrap());
            b.extend_from_slice(u);
        }
        b.freeze()
    }

    fn packets(frame: &Frame, config: Option<&AvcConfig>, stamper: &mut Stamper) -> Vec<RtpIn> {
        let payloads: Vec<Bytes> = Payloads::new(encode_payloads(frame, config)).collect();
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let s = stamper.stamp(frame.pts, i + 1 == n);
                RtpIn {
                    seq: s.seq,
                    timestamp: s.timestamp,
                    marker: s.marker,
                    payload,
                }
            })
            .collect()
    }

    fn video(pts: i64, keyframe: bool, len: usize) -> Frame {
        let mut slice = vec![if keyframe { 0x65 } else { 0x41 }];
        slice.extend(std::iter::repeat_n(0x5a, len));
        Frame {
            track: TrackKind::Video,
            codec: Codec::H264,
            pts,
            dts: pts,
            keyframe,
            payload: avcc(&[&slice]),
        }
    }

    #[test]
    fn h264_round_trip_through_rtp() {
        let config = AvcConfig::from_parameter_sets(
            vec![Bytes::from_static(SPS)],
            vec![Bytes::from_static(PPS)],
        )
        .unwrap();
        let mut stamper = Stamper::new(65_530, u32::MAX - 1000, 90_000);
        let mut r = Reassembler::new(Codec::H264, 0);
        let mut frames = Vec::new();
        let mut configs = 0;
        for (i, (key, len)) in [(true, 4000), (false, 300), (false, 2500)]
            .iter()
            .enumerate()
        {
            let f = video(3000 * i64::try_from(i).unwrap(), *key, *len);
            for p in packets(&f, Some(&config), &mut stamper) {
                let out = r.push(p);
                configs += usize::from(out.config.is_some());
                assert!(!out.want_keyframe);
                frames.extend(out.frame);
            }
        }
        assert_eq!(configs, 1);
        assert_eq!(frames.len(), 3);
        assert!(frames[0].keyframe && !frames[1].keyframe);
        assert_eq!(frames[0].payload, video(0, true, 4000).payload);
        assert_eq!(frames[2].payload, video(0, false, 2500).payload);
        assert_eq!(frames[1].pts, 3000);
        assert_eq!(frames[2].pts, 6000);
    }

    #[test]
    fn a_lost_packet_drops_frames_until_the_next_keyframe() {
        let mut stamper = Stamper::new(0, 0, 90_000);
        let mut r = Reassembler::new(Codec::H264, 0);
        let key = packets(&video(0, true, 100), None, &mut stamper);
        for p in key {
            assert!(r.push(p).frame.is_some());
        }
        let mut big = packets(&video(3000, false, 3000), None, &mut stamper);
        big.remove(1);
        let mut wanted = false;
        for p in big {
            let out = r.push(p);
            wanted |= out.want_keyframe;
            assert!(out.frame.is_none());
        }
        assert!(wanted);
        for p in packets(&video(6000, false, 100), None, &mut stamper) {
            assert!(r.push(p).frame.is_none());
        }
        let mut got = None;
        for p in packets(&video(9000, true, 100), None, &mut stamper) {
            got = r.push(p).frame.or(got);
        }
        assert!(got.unwrap().keyframe);
    }

    #[test]
    fn video_waits_for_a_first_keyframe_and_garbage_never_panics() {
        let mut r = Reassembler::new(Codec::H264, 0);
        let mut stamper = Stamper::new(0, 0, 90_000);
        for p in packets(&video(0, false, 10), None, &mut stamper) {
            let out = r.push(p);
            assert!(out.frame.is_none() && out.want_keyframe);
        }
        for (i, junk) in [
            &[][..],
            &[0x1c][..],
            &[0x18, 0xff, 0xff][..],
            &[0x1c, 0x85, 1, 2][..],
            &[0xff; 40][..],
        ]
        .iter()
        .enumerate()
        {
            for codec in [Codec::H264, Codec::Vp8, Codec::Opus] {
                let mut r = Reassembler::new(codec, 0);
                let _ = r.push(RtpIn {
                    seq: u16::try_from(i).unwrap(),
                    timestamp: 1,
                    marker: true,
                    payload: Bytes::copy_from_slice(junk),
                });
            }
        }
    }

    #[test]
    fn a_cut_stap_a_is_damage_not_a_panic() {
        // Found by the rtp_reassembly fuzz target: a STAP-A whose last size field has one byte.
        let mut r = Reassembler::new(Codec::H264, 0);
        let out = r.push(RtpIn {
            seq: 1,
            timestamp: 1,
            marker: true,
            payload: Bytes::from_static(&[
                0x18, 0x00, 0x08, 0x00, 0x03, 0xfc, 0xff, 0xfe, 0x02, 0xff, 0xb5, 0xfe,
            ]),
        });
        assert!(out.frame.is_none() && out.want_keyframe);
        assert!(stap_a_is_whole(&[0x18, 0, 1, 0x65, 0, 2, 0x41, 0]));
        assert!(!stap_a_is_whole(&[0x18, 0, 1, 0x65, 0]));
        assert!(!stap_a_is_whole(&[0x18, 0, 9, 0x65]));
        assert!(stap_a_is_whole(&[0x65, 1]));
    }

    #[test]
    fn an_endless_fragmented_frame_is_dropped_at_the_size_limit() {
        let mut r = Reassembler::new(Codec::H264, 0);
        // FU-A fragments of one IDR slice: a start, then middles that never end.
        let fragment = |start: bool| {
            let mut p = vec![0x7c, if start { 0x85 } else { 0x05 }];
            p.extend(std::iter::repeat_n(0x5a, 1000));
            Bytes::from(p)
        };
        let mut damaged = 0;
        for seq in 0..(MAX_FRAME_BYTES / 1000 + 50) as u16 {
            let out = r.push(RtpIn {
                seq,
                timestamp: 7,
                marker: false,
                payload: fragment(seq == 0),
            });
            damaged += usize::from(out.want_keyframe);
            assert!(out.frame.is_none());
        }
        assert_eq!(damaged, 1, "the frame is damaged once, at the limit");
        let fed = r.current.as_ref().map_or(0, |c| c.fed);
        assert!(fed > MAX_FRAME_BYTES);
        assert!(r
            .current
            .as_ref()
            .is_some_and(|c| c.damaged && c.data.is_empty()));
    }

    #[test]
    fn opus_packets_are_frames_on_the_shared_clock() {
        let mut r = Reassembler::new(Codec::Opus, 900);
        let a = r.push(RtpIn {
            seq: 1,
            timestamp: u32::MAX - 479,
            marker: false,
            payload: Bytes::from_static(&[0xfc, 1]),
        });
        let b = r.push(RtpIn {
            seq: 2,
            timestamp: 480,
            marker: false,
            payload: Bytes::from_static(&[0xfc, 2]),
        });
        let (a, b) = (a.frame.unwrap(), b.frame.unwrap());
        assert_eq!(a.pts, 900);
        assert_eq!(b.pts, 900 + 1800);
        assert!(a.keyframe && a.track == TrackKind::Audio);
    }

    #[test]
    fn vp8_keyframes_are_recognised() {
        let mut r = Reassembler::new(Codec::Vp8, 0);
        // VP8 payload descriptor with S=1, then a key frame (bit 0 clear) header.
        let out = r.push(RtpIn {
            seq: 7,
            timestamp: 10,
            marker: true,
            payload: Bytes::from_static(&[0x10, 0x50, 0x2a, 0x01]),
        });
        let f = out.frame.unwrap();
        assert!(f.keyframe);
        assert_eq!(&f.payload[..], &[0x50, 0x2a, 0x01]);
    }
}
