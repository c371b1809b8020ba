//! Elementary streams out of PES payloads: H.264 access units (Annex-B) and ADTS frames
//! become configs and [`Frame`]s.

use bytes::Bytes;

use super::demux::{DemuxStats, TsEvent, MAX_PES_LEN};
use super::TIMESTAMP_MODULUS;
use crate::nal::{join_avcc, nal_type, split_annexb, NAL_TYPE_IDR, NAL_TYPE_PPS, NAL_TYPE_SPS};
use crate::{parse_adts, AacConfig, AvcConfig, Codec, Frame, TrackKind, ADTS_HEADER_LEN};

/// NAL unit type of an access unit delimiter (dropped: TS output writes its own).
const NAL_TYPE_AUD: u8 = 9;
/// Samples in one AAC frame.
const AAC_FRAME_SAMPLES: i64 = 1024;

/// Turns 33-bit timestamps into a continuous `i64` count, following wraps either way.
#[derive(Debug, Default)]
pub(crate) struct Unwrapper {
    last: Option<i64>,
}

impl Unwrapper {
    /// The extended value of `raw` (0..2^33): the one nearest to the last value returned.
    pub(crate) fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = i64::try_from(raw).unwrap_or(0) & (TIMESTAMP_MODULUS - 1);
        let value = match self.last {
            None => raw,
            Some(last) => {
                let half = TIMESTAMP_MODULUS / 2;
                let diff = (raw - last.rem_euclid(TIMESTAMP_MODULUS) + half)
                    .rem_euclid(TIMESTAMP_MODULUS)
                    - half;
                last + diff
            }
        };
        self.last = Some(value);
        value
    }
}

/// One H.264 PES at a time, to an access unit.
#[derive(Debug, Default)]
pub(crate) struct VideoAssembler {
    buf: Vec<u8>,
    times: Option<(i64, i64)>,
    overflow: bool,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    config: Option<AvcConfig>,
}

impl VideoAssembler {
    /// A PES starts with `(pts, dts)` (if it had a PTS) and the first payload bytes.
    pub(crate) fn begin(&mut self, times: Option<(i64, i64)>, data: &[u8], stats: &mut DemuxStats) {
        if !self.buf.is_empty() {
            stats.dropped_units += 1;
        }
        self.buf.clear();
        self.overflow = false;
        self.times = times;
        self.data(data, stats);
    }

    /// More payload of the current PES.
    pub(crate) fn data(&mut self, data: &[u8], stats: &mut DemuxStats) {
        if self.overflow {
            return;
        }
        if self.buf.len() + data.len() > MAX_PES_LEN {
            self.overflow = true;
            self.buf.clear();
            stats.dropped_units += 1;
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// Part of the current PES was lost: it is dropped.
    pub(crate) fn lost(&mut self, stats: &mut DemuxStats) {
        if !self.buf.is_empty() {
            stats.dropped_units += 1;
        }
        self.buf.clear();
        self.times = None;
    }

    /// The current PES is complete: emit its config (if new) and frame.
    pub(crate) fn end(&mut self, out: &mut Vec<TsEvent>, stats: &mut DemuxStats) {
        let data = std::mem::take(&mut self.buf);
        let times = self.times.take();
        if data.is_empty() {
            return;
        }
        let Some((pts, dts)) = times else {
            stats.dropped_units += 1;
            return;
        };
        let Ok(units) = split_annexb(&data) else {
            stats.dropped_units += 1;
            return;
        };
        let mut keyframe = false;
        let mut kept: Vec<&[u8]> = Vec::with_capacity(units.len());
        let mut new_sets = false;
        for unit in units {
            match nal_type(unit) {
                Some(NAL_TYPE_SPS) => {
                    if self.sps.as_deref() != Some(unit) {
                        self.sps = Some(Bytes::copy_from_slice(unit));
                        new_sets = true;
                    }
                }
                Some(NAL_TYPE_PPS) => {
                    if self.pps.as_deref() != Some(unit) {
                        self.pps = Some(Bytes::copy_from_slice(unit));
                        new_sets = true;
                    }
                }
                Some(NAL_TYPE_AUD) | None => {}
                Some(t) => {
                    keyframe |= t == NAL_TYPE_IDR;
                    kept.push(unit);
                }
            }
        }
        if new_sets || self.config.is_none() {
            if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
                if let Ok(config) =
                    AvcConfig::from_parameter_sets(vec![sps.clone()], vec![pps.clone()])
                {
                    if self.config.as_ref() != Some(&config) {
                        self.config = Some(config.clone());
                        out.push(TsEvent::VideoConfig(config));
                    }
                }
            }
        }
        if kept.is_empty() {
            return;
        }
        if self.config.is_none() {
            // Undecodable until the parameter sets arrive.
            stats.dropped_units += 1;
            return;
        }
        out.push(TsEvent::Frame(Frame {
            track: TrackKind::Video,
            codec: Codec::H264,
            pts,
            dts,
            keyframe,
            payload: join_avcc(&kept),
        }));
    }
}

/// ADTS frames out of audio PES payloads, emitted as soon as each is complete.
#[derive(Debug, Default)]
pub(crate) struct AudioAssembler {
    buf: Vec<u8>,
    /// Whether a PES with a PTS has started since the last loss.
    timed: bool,
    /// The PTS of the current PES, and the samples emitted since it: the frames after the
    /// first in a PES are timed by their sample count.
    base_pts: i64,
    samples: i64,
    config: Option<AacConfig>,
}

impl AudioAssembler {
    /// A PES starts, with its PTS if it had one.
    pub(crate) fn begin(
        &mut self,
        pts: Option<i64>,
        data: &[u8],
        out: &mut Vec<TsEvent>,
        stats: &mut DemuxStats,
    ) {
        if !self.buf.is_empty() {
            stats.dropped_units += 1;
            self.buf.clear();
        }
        if let Some(pts) = pts {
            self.base_pts = pts;
            self.samples = 0;
            self.timed = true;
        }
        self.data(data, out, stats);
    }

    /// More payload: every complete ADTS frame in it is emitted.
    pub(crate) fn data(&mut self, data: &[u8], out: &mut Vec<TsEvent>, stats: &mut DemuxStats) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(data);
        let mut at = 0;
        while let Some(rest) = buf.get(at..) {
            if rest.len() < ADTS_HEADER_LEN {
                break;
            }
            match parse_adts(rest) {
                Ok(h) if h.frame_len <= rest.len() => {
                    let au = rest.get(h.header_len..h.frame_len).unwrap_or_default();
                    self.emit(h.config, au, out);
                    at += h.frame_len;
                }
                // The rest of this frame is still to come.
                Ok(_) => break,
                Err(_) => {
                    // Not a header: look for the next syncword.
                    stats.resync_bytes += 1;
                    at += 1;
                }
            }
        }
        buf.drain(..at.min(buf.len()));
        if buf.len() > MAX_PES_LEN {
            buf.clear();
            stats.dropped_units += 1;
        }
        self.buf = buf;
    }

    /// Part of the current PES was lost.
    pub(crate) fn lost(&mut self, stats: &mut DemuxStats) {
        if !self.buf.is_empty() {
            stats.dropped_units += 1;
        }
        self.buf.clear();
        self.timed = false;
    }

    /// The PES ended: a partial frame left over is dropped.
    pub(crate) fn end(&mut self, stats: &mut DemuxStats) {
        if !self.buf.is_empty() {
            stats.dropped_units += 1;
            self.buf.clear();
        }
    }

    fn emit(&mut self, config: AacConfig, au: &[u8], out: &mut Vec<TsEvent>) {
        if au.is_empty() {
            return;
        }
        let rate = i64::from(config.sample_rate.max(1));
        if self.config.as_ref() != Some(&config) {
            self.config = Some(config.clone());
            out.push(TsEvent::AudioConfig(config));
        }
        if !self.timed {
            // No timestamp since a loss: wait for the next PES.
            return;
        }
        let pts = self.base_pts + self.samples * crate::CLOCK_HZ / rate;
        self.samples += AAC_FRAME_SAMPLES;
        out.push(TsEvent::Frame(Frame {
            track: TrackKind::Audio,
            codec: Codec::Aac,
            pts,
            dts: pts,
            keyframe: true,
            payload: Bytes::copy_from_slice(au),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrapping_follows_wraps_both_ways() {
        let mut u = Unwrapper::default();
        assert_eq!(u.unwrap(100), 100);
        let top = (TIMESTAMP_MODULUS - 50) as u64;
        assert_eq!(u.unwrap(top), -50);
        assert_eq!(u.unwrap(10), 10);
        assert_eq!(u.unwrap(top), -50);
        let mut v = Unwrapper::default();
        assert_eq!(v.unwrap(top), TIMESTAMP_MODULUS - 50);
        assert_eq!(v.unwrap(40), TIMESTAMP_MODULUS + 40);
        assert_eq!(v.unwrap(90_000), TIMESTAMP_MODULUS + 90_000);
        // Values beyond 33 bits are masked, not trusted.
        assert_eq!(v.unwrap(!((1 << 33) - 1)), TIMESTAMP_MODULUS);
    }

    #[test]
    fn adts_frames_split_across_pieces_come_out_whole() {
        let config = AacConfig::new(2, 3, 2).unwrap();
        let mut pes = Vec::new();
        for i in 0..3u8 {
            pes.extend_from_slice(&config.adts_header(10).unwrap());
            pes.extend_from_slice(&[i; 10]);
        }
        let mut a = AudioAssembler::default();
        let mut out = Vec::new();
        let mut stats = DemuxStats::default();
        let (first, rest) = pes.split_at(20);
        a.begin(Some(1000), first, &mut out, &mut stats);
        for b in rest.chunks(3) {
            a.data(b, &mut out, &mut stats);
        }
        a.end(&mut stats);
        assert!(matches!(&out[0], TsEvent::AudioConfig(c) if *c == config));
        let frames: Vec<&Frame> = out
            .iter()
            .filter_map(|e| match e {
                TsEvent::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].pts, 1000);
        assert_eq!(frames[1].pts, 1000 + 1024 * 90_000 / 48_000);
        assert_eq!(&frames[2].payload[..], &[2; 10]);
        assert_eq!(stats.dropped_units, 0);
    }

    #[test]
    fn video_waits_for_parameter_sets() {
        let mut v = VideoAssembler::default();
        let mut out = Vec::new();
        let mut stats = DemuxStats::default();
        v.begin(Some((0, 0)), &[0, 0, 0, 1, 0x41, 1, 2], &mut stats);
        v.end(&mut out, &mut stats);
        assert!(out.is_empty());
        assert_eq!(stats.dropped_units, 1);
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 66, 0xc0, 30, 0, 0, 0, 1, 0x68, 0xce, 0, 0,
            1, 0x65, 7, 7,
        ];
        v.begin(Some((3600, 0)), &au, &mut stats);
        v.end(&mut out, &mut stats);
        assert!(matches!(&out[0], TsEvent::VideoConfig(c) if c.profile == 66));
        let TsEvent::Frame(f) = &out[1] else {
            panic!("{out:?}")
        };
        assert!(f.keyframe);
        assert_eq!((f.pts, f.dts), (3600, 0));
        assert_eq!(&f.payload[..], &[0, 0, 0, 3, 0x65, 7, 7]);
        // The same parameter sets again announce nothing new.
        v.begin(Some((7200, 3600)), &au, &mut stats);
        v.end(&mut out, &mut stats);
        assert_eq!(out.len(), 3);
    }
}
