//! Frames to transport-stream packets.

use bytes::{BufMut, Bytes, BytesMut};

use super::psi::{pat_section, pmt_section, Tracks};
use super::{AUDIO_PID, PACKET_LEN, PAT_PID, PMT_PID, SYNC_BYTE, TIMESTAMP_MODULUS, VIDEO_PID};
use crate::nal::{nal_type, split_avcc, AVCC_LENGTH_SIZE, NAL_TYPE_PPS, NAL_TYPE_SPS};
use crate::{Codec, Frame, StreamConfig, CLOCK_HZ};

/// Added to every frame timestamp written (1.4 s, as ffmpeg's muxer does), so that a stream
/// starting at zero never needs a PCR below zero.
pub const TIMESTAMP_OFFSET: i64 = CLOCK_HZ * 14 / 10;
/// How far the PCR runs behind the decoding time of the frame it comes with (0.7 s): the
/// decoder's buffering allowance.
pub const PCR_LEAD: i64 = CLOCK_HZ * 7 / 10;
/// Longest stretch of stream time without a PAT and PMT (100 ms).
pub const PSI_INTERVAL: i64 = CLOCK_HZ / 10;

/// Bytes of a packet after its 4-byte header.
const PACKET_PAYLOAD: usize = PACKET_LEN - 4;
/// NAL unit type of an access unit delimiter.
const NAL_TYPE_AUD: u8 = 9;
/// The access unit delimiter written before every H.264 access unit (any slice type).
const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xf0];
/// PES stream_id of the first video stream.
const PES_VIDEO: u8 = 0xe0;
/// PES stream_id of the first audio stream.
const PES_AUDIO: u8 = 0xc0;

/// The state of one output transport stream: continuity counters, the PMT version and when
/// PSI was last written.
///
/// Output depends on the frames passed so far, so a stream shared by several viewers must
/// pass every frame through one muxer, in order, and hand the same bytes to every viewer.
#[derive(Debug, Default)]
pub struct TsMuxer {
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
    pmt_version: u8,
    tracks: Option<Tracks>,
    last_psi_dts: Option<i64>,
}

impl TsMuxer {
    /// A muxer that has written nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The packets of one frame, preceded by PAT and PMT when they are due, under the
    /// configuration in force for it. Empty when the frame cannot be carried: a codec TS
    /// has no mapping for here (Opus, VP8), a track the configuration does not describe, or
    /// a payload that does not parse.
    pub fn frame(&mut self, frame: &Frame, config: &StreamConfig) -> Bytes {
        let tracks = Tracks {
            video: config.video.is_some(),
            audio: config.audio.is_some(),
        };
        let Some(pes_payload) = es_payload(frame, config) else {
            return Bytes::new();
        };
        let (pid, stream_id) = match frame.codec {
            Codec::H264 => (VIDEO_PID, PES_VIDEO),
            _ => (AUDIO_PID, PES_AUDIO),
        };
        let pes = pes_packet(stream_id, frame, &pes_payload);
        let packets = pes.len().div_ceil(PACKET_PAYLOAD);
        let mut out = BytesMut::with_capacity((packets + 2) * PACKET_LEN);

        if self.tracks != Some(tracks) {
            if self.tracks.is_some() {
                self.pmt_version = (self.pmt_version + 1) % 32;
            }
            self.tracks = Some(tracks);
            self.last_psi_dts = None;
        }
        let psi_due = match self.last_psi_dts {
            None => true,
            Some(last) => {
                (frame.codec == Codec::H264 && frame.keyframe)
                    || frame.dts.saturating_sub(last) >= PSI_INTERVAL
                    || frame.dts < last
            }
        };
        if psi_due {
            write_section(&mut out, PAT_PID, &mut self.cc_pat, &pat_section());
            write_section(
                &mut out,
                PMT_PID,
                &mut self.cc_pmt,
                &pmt_section(tracks, self.pmt_version),
            );
            self.last_psi_dts = Some(frame.dts);
        }
        let pcr = (pid == tracks.pcr_pid()).then(|| wrap(frame.dts + TIMESTAMP_OFFSET - PCR_LEAD));
        let random_access = frame.keyframe && frame.codec == Codec::H264;
        let cc = if pid == VIDEO_PID {
            &mut self.cc_video
        } else {
            &mut self.cc_audio
        };
        write_pes(&mut out, pid, cc, &pes, pcr, random_access);
        out.freeze()
    }
}

/// A timestamp brought into the 33-bit range.
fn wrap(ticks: i64) -> u64 {
    u64::try_from(ticks.rem_euclid(TIMESTAMP_MODULUS)).unwrap_or(0)
}

/// The elementary-stream bytes of a frame: Annex-B with an access unit delimiter (and SPS
/// and PPS before a keyframe) for H.264, an ADTS frame for AAC.
fn es_payload(frame: &Frame, config: &StreamConfig) -> Option<Vec<u8>> {
    match frame.codec {
        Codec::H264 => {
            let avc = config.video.as_ref()?;
            let units = split_avcc(&frame.payload, AVCC_LENGTH_SIZE).ok()?;
            let mut out = Vec::with_capacity(frame.payload.len() + 64);
            out.extend_from_slice(&AUD);
            if frame.keyframe {
                out.extend_from_slice(&avc.parameter_sets_annexb());
            }
            for unit in units {
                match nal_type(unit) {
                    Some(NAL_TYPE_AUD) => continue,
                    // Parameter sets come from the configuration, before keyframes.
                    Some(NAL_TYPE_SPS | NAL_TYPE_PPS) if frame.keyframe => continue,
                    _ => {}
                }
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(unit);
            }
            Some(out)
        }
        Codec::Aac => {
            let aac = config.audio.as_ref()?;
            let header = aac.adts_header(frame.payload.len()).ok()?;
            let mut out = Vec::with_capacity(header.len() + frame.payload.len());
            out.extend_from_slice(&header);
            out.extend_from_slice(&frame.payload);
            Some(out)
        }
        Codec::Opus | Codec::Vp8 => None,
    }
}

/// Writes a 33-bit timestamp with its 4-bit prefix and marker bits.
fn put_timestamp(out: &mut Vec<u8>, prefix: u8, ts: u64) {
    let b = |shift: u32, mask: u64| ((ts >> shift) & mask) as u8;
    out.push((prefix << 4) | (b(30, 0x07) << 1) | 1);
    out.push(b(22, 0xff));
    out.push((b(15, 0x7f) << 1) | 1);
    out.push(b(7, 0xff));
    out.push((b(0, 0x7f) << 1) | 1);
}

/// A whole PES packet: header with PTS (and DTS when it differs), then the payload.
fn pes_packet(stream_id: u8, frame: &Frame, payload: &[u8]) -> Vec<u8> {
    let pts = wrap(frame.pts + TIMESTAMP_OFFSET);
    let dts = wrap(frame.dts + TIMESTAMP_OFFSET);
    let with_dts = pts != dts;
    let header_data_len: u8 = if with_dts { 10 } else { 5 };
    let mut pes = Vec::with_capacity(payload.len() + 19);
    pes.extend_from_slice(&[0, 0, 1, stream_id]);
    // PES_packet_length counts what follows it; zero (unbounded) is allowed for video only.
    let length = 3 + usize::from(header_data_len) + payload.len();
    let length = match u16::try_from(length) {
        Ok(l) => l,
        Err(_) if stream_id == PES_VIDEO => 0,
        // An audio frame never comes near 64 KiB (ADTS frames stop at 8 KiB).
        Err(_) => u16::MAX,
    };
    pes.extend_from_slice(&length.to_be_bytes());
    pes.push(0x84); // marker bits, data_alignment_indicator
    pes.push(if with_dts { 0xc0 } else { 0x80 });
    pes.push(header_data_len);
    if with_dts {
        put_timestamp(&mut pes, 0b0011, pts);
        put_timestamp(&mut pes, 0b0001, dts);
    } else {
        put_timestamp(&mut pes, 0b0010, pts);
    }
    pes.extend_from_slice(payload);
    pes
}

/// The 4-byte packet header.
fn put_header(out: &mut BytesMut, pid: u16, start: bool, adaptation: bool, cc: u8) {
    out.put_u8(SYNC_BYTE);
    out.put_u8((u8::from(start) << 6) | ((pid >> 8) as u8 & 0x1f));
    out.put_u8((pid & 0xff) as u8);
    let control = if adaptation { 0x30 } else { 0x10 };
    out.put_u8(control | (cc & 0x0f));
}

/// Splits a PES packet into TS packets on `pid`, the first carrying the PCR and random
/// access flag if given, the last padded with adaptation-field stuffing.
fn write_pes(
    out: &mut BytesMut,
    pid: u16,
    cc: &mut u8,
    pes: &[u8],
    pcr: Option<u64>,
    random_access: bool,
) {
    let mut rest = pes;
    let mut first = true;
    while !rest.is_empty() {
        // Adaptation field content after its length byte: flags, then the PCR.
        let mut field: Vec<u8> = Vec::new();
        if first && (pcr.is_some() || random_access) {
            let mut flags = 0u8;
            if random_access {
                flags |= 0x40;
            }
            if pcr.is_some() {
                flags |= 0x10;
            }
            field.push(flags);
            if let Some(base) = pcr {
                let b = |shift: u32| ((base >> shift) & 0xff) as u8;
                field.extend_from_slice(&[b(25), b(17), b(9), b(1)]);
                field.push((((base & 1) as u8) << 7) | 0x7e);
                field.push(0);
            }
        }
        let mut has_field = !field.is_empty();
        let room = PACKET_PAYLOAD - if has_field { 1 + field.len() } else { 0 };
        let take = rest.len().min(room);
        let mut stuffing = room - take;
        if stuffing > 0 && !has_field {
            has_field = true;
            stuffing -= 1; // the length byte
            if stuffing > 0 {
                field.push(0); // no flags
                stuffing -= 1;
            }
        }
        field.resize(field.len() + stuffing, 0xff);
        put_header(out, pid, first, has_field, *cc);
        if has_field {
            out.put_u8(field.len() as u8);
            out.put_slice(&field);
        }
        let (chunk, tail) = rest.split_at(take);
        out.put_slice(chunk);
        rest = tail;
        *cc = (*cc + 1) & 0x0f;
        first = false;
    }
}

/// Writes one PSI section in as many packets as it needs (one, for ours).
fn write_section(out: &mut BytesMut, pid: u16, cc: &mut u8, section: &[u8]) {
    let mut payload = Vec::with_capacity(section.len() + 1);
    payload.push(0); // pointer_field
    payload.extend_from_slice(section);
    let mut first = true;
    for chunk in payload.chunks(PACKET_PAYLOAD) {
        put_header(out, pid, first, false, *cc);
        out.put_slice(chunk);
        // Sections are padded with 0xff, not with adaptation fields.
        out.put_bytes(0xff, PACKET_PAYLOAD - chunk.len());
        *cc = (*cc + 1) & 0x0f;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AacConfig, AvcConfig, TrackKind};

    fn config() -> StreamConfig {
        StreamConfig {
            video: Some(
                AvcConfig::from_parameter_sets(
                    vec![Bytes::from_static(&[0x67, 66, 0xc0, 30])],
                    vec![Bytes::from_static(&[0x68, 0xce])],
                )
                .unwrap(),
            ),
            audio: Some(AacConfig::new(2, 4, 2).unwrap()),
            ..StreamConfig::default()
        }
    }

    fn video(dts: i64, keyframe: bool, len: usize) -> Frame {
        let mut payload = (len as u32).to_be_bytes().to_vec();
        payload.push(if keyframe { 0x65 } else { 0x41 });
        payload.resize(4 + len, 0xab);
        Frame {
            track: TrackKind::Video,
            codec: Codec::H264,
            pts: dts + 3000,
            dts,
            keyframe,
            payload: payload.into(),
        }
    }

    fn packets(b: &Bytes) -> Vec<&[u8]> {
        assert_eq!(b.len() % PACKET_LEN, 0);
        b.chunks(PACKET_LEN).collect()
    }

    fn pid(p: &[u8]) -> u16 {
        (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
    }

    #[test]
    fn keyframes_get_psi_pcr_and_continuous_counters() {
        let mut m = TsMuxer::new();
        let c = config();
        let key = m.frame(&video(0, true, 1000), &c);
        let ps = packets(&key);
        assert_eq!(pid(ps[0]), PAT_PID);
        assert_eq!(pid(ps[1]), PMT_PID);
        assert_eq!(pid(ps[2]), VIDEO_PID);
        // PUSI, adaptation field with random access and PCR.
        assert_eq!(ps[2][1] & 0x40, 0x40);
        assert_eq!(ps[2][3] & 0x30, 0x30);
        assert_eq!(ps[2][5], 0x50);
        // The PCR is the offset decoding time less the lead.
        let pcr = (u64::from(ps[2][6]) << 25)
            | (u64::from(ps[2][7]) << 17)
            | (u64::from(ps[2][8]) << 9)
            | (u64::from(ps[2][9]) << 1)
            | u64::from(ps[2][10] >> 7);
        assert_eq!(pcr as i64, TIMESTAMP_OFFSET - PCR_LEAD);
        let video_ccs: Vec<u8> = ps[2..].iter().map(|p| p[3] & 0x0f).collect();
        assert_eq!(video_ccs, (0..video_ccs.len() as u8).collect::<Vec<_>>());

        // A delta frame 40 ms later: no PSI, counters go on.
        let delta = m.frame(&video(3600, false, 300), &c);
        let ds = packets(&delta);
        assert!(ds.iter().all(|p| pid(p) == VIDEO_PID));
        assert_eq!(ds[0][3] & 0x0f, video_ccs.len() as u8);
        // 100 ms after the last PSI it comes again.
        let later = m.frame(&video(9000, false, 10), &c);
        assert_eq!(pid(packets(&later)[0]), PAT_PID);
        assert_eq!(packets(&later)[0][3] & 0x0f, 1);
    }

    #[test]
    fn audio_frames_are_adts_in_bounded_pes() {
        let mut m = TsMuxer::new();
        let c = config();
        let frame = Frame {
            track: TrackKind::Audio,
            codec: Codec::Aac,
            pts: 0,
            dts: 0,
            keyframe: true,
            payload: Bytes::from(vec![0x21; 300]),
        };
        let out = m.frame(&frame, &c);
        let ps = packets(&out);
        let first = ps.iter().find(|p| pid(p) == AUDIO_PID).unwrap();
        // No PCR on audio while there is video; PES header follows the 4-byte header.
        assert_eq!(first[3] & 0x30, 0x10);
        assert_eq!(&first[4..8], &[0, 0, 1, PES_AUDIO]);
        let len = u16::from_be_bytes([first[8], first[9]]);
        assert_eq!(usize::from(len), 3 + 5 + 7 + 300);
        assert_eq!(&first[18..20], &[0xff, 0xf1]);
    }

    #[test]
    fn unsupported_frames_write_nothing() {
        let mut m = TsMuxer::new();
        let opus = Frame {
            track: TrackKind::Audio,
            codec: Codec::Opus,
            pts: 0,
            dts: 0,
            keyframe: true,
            payload: Bytes::from_static(b"x"),
        };
        assert!(m.frame(&opus, &config()).is_empty());
        // H.264 without a configuration, or with a broken payload.
        assert!(m
            .frame(&video(0, true, 10), &StreamConfig::default())
            .is_empty());
        let mut broken = video(0, true, 10);
        broken.payload = Bytes::from_static(&[0, 0, 0, 9, 1]);
        assert!(m.frame(&broken, &config()).is_empty());
    }

    #[test]
    fn every_stuffing_length_is_well_formed() {
        let mut m = TsMuxer::new();
        let c = config();
        for len in 1..600 {
            let out = m.frame(&video(i64::from(len as u32) * 3600, len % 50 == 1, len), &c);
            for p in packets(&out) {
                assert_eq!(p[0], SYNC_BYTE);
                if p[3] & 0x20 != 0 {
                    assert!(usize::from(p[4]) <= 183);
                }
            }
        }
    }
}
