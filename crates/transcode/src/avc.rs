//! H.264 re-encoding for WebRTC viewers: any H.264 a stream carries (High profile, B-frames)
//! in, Constrained Baseline without B-frames out, at the source's picture size and frame
//! rate.
//!
//! Library: OpenH264 (Cisco, BSD-2-Clause) through the `openh264` crate, built from its
//! bundled sources with the C++ compiler alone. Its decoder takes every profile browsers'
//! encoders and x264 produce; it holds back as many pictures as the stream reorders and
//! gives them out in display order, so each output picture takes the smallest presentation
//! time still waiting. Its encoder writes Constrained Baseline, which every browser decodes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::Bytes;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use openh264::OpenH264API;
use streamgate_media::nal::{annexb_to_avcc, join_annexb, nal_type, split_annexb, split_avcc};
use streamgate_media::{sps_picture_size, AvcConfig, Codec, Frame, TrackKind};

use crate::TranscodeError;

/// Largest picture re-encoded, in pixels (4096 x 2304); a stream whose pictures are larger
/// is not re-encoded. The encoder itself stops at 3840 x 2160 on either side.
pub const MAX_PICTURE_PIXELS: usize = 4096 * 2304;

/// Most input frames waiting for their picture. A decoder holds back at most 16 pictures
/// (the H.264 DPB); more means the timestamps no longer match the pictures, and they are
/// dropped.
const MAX_WAITING: usize = 32;

/// How the output is encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AvcSettings {
    /// Target bit rate.
    pub bitrate_bps: u32,
    /// The source's frame rate (the encoder's rate control counts with it).
    pub frame_rate: f32,
    /// Output keyframe interval, in frames; keyframes are also made on request.
    pub keyframe_interval: u32,
}

impl Default for AvcSettings {
    fn default() -> Self {
        Self {
            bitrate_bps: 2_500_000,
            frame_rate: 30.0,
            keyframe_interval: 60,
        }
    }
}

/// One stream's H.264 re-encode.
pub struct AvcReencoder {
    settings: AvcSettings,
    decoder: Decoder,
    encoder: Encoder,
    /// The source's parameter sets in Annex B, given to the decoder before each keyframe.
    source_sets: Option<Bytes>,
    /// Presentation times of the frames given to the decoder whose pictures are not out yet.
    waiting: BinaryHeap<Reverse<i64>>,
    /// The output's configuration, from the first keyframe's parameter sets.
    config: Option<AvcConfig>,
    /// Whether decoding waits for a keyframe (at start, after an error).
    need_keyframe: bool,
    keyframe_requested: bool,
    /// Reused buffers.
    annexb: Vec<u8>,
    encoded: Vec<u8>,
}

impl std::fmt::Debug for AvcReencoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvcReencoder")
            .field("settings", &self.settings)
            .field("waiting", &self.waiting.len())
            .field("config", &self.config.is_some())
            .finish_non_exhaustive()
    }
}

impl AvcReencoder {
    /// A re-encoder for a stream whose configuration is `source` (if known yet).
    pub fn new(source: Option<&AvcConfig>, settings: AvcSettings) -> Result<Self, TranscodeError> {
        let decoder = Decoder::with_api_config(
            OpenH264API::from_source(),
            // The crate's default flushes after every picture, which breaks reordered
            // (B-frame) streams: pictures are taken out as the decoder releases them.
            DecoderConfig::new().flush_after_decode(Flush::NoFlush),
        )
        .map_err(|e| TranscodeError::Codec(format!("H.264 decoder: {e}")))?;
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), encoder_config(settings))
                .map_err(|e| TranscodeError::Codec(format!("H.264 encoder: {e}")))?;
        let mut me = Self {
            settings,
            decoder,
            encoder,
            source_sets: None,
            waiting: BinaryHeap::new(),
            config: None,
            need_keyframe: true,
            keyframe_requested: true,
            annexb: Vec::new(),
            encoded: Vec::new(),
        };
        if let Some(c) = source {
            me.set_source(c)?;
        }
        Ok(me)
    }

    /// The source's configuration changed (a new sequence header): its parameter sets go to
    /// the decoder with the next keyframe, which decoding waits for. A configuration whose
    /// pictures are larger than [`MAX_PICTURE_PIXELS`] (or unreadable) is refused before the
    /// decoder sees it, and frames wait for one that is not.
    pub fn set_source(&mut self, config: &AvcConfig) -> Result<(), TranscodeError> {
        self.need_keyframe = true;
        self.source_sets = None;
        Self::takes(config)?;
        self.source_sets = Some(config.parameter_sets_annexb());
        Ok(())
    }

    /// Whether a stream of configuration `config` can be re-encoded: its parameter sets
    /// are readable and its pictures no larger than [`MAX_PICTURE_PIXELS`].
    pub fn takes(config: &AvcConfig) -> Result<(), TranscodeError> {
        config.sps.iter().try_for_each(|sps| check_sps(sps))
    }

    /// The next output picture is a keyframe (a new viewer, or one that lost packets).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// The output's configuration, known from its first keyframe on.
    pub fn config(&self) -> Option<&AvcConfig> {
        self.config.as_ref()
    }

    /// Re-encodes one source frame (AVCC); returns the output frames it completes (none
    /// while the decoder holds pictures back, or when the frame is skipped). An error skips
    /// the frame and decoding waits for the next keyframe.
    pub fn push(&mut self, frame: &Frame) -> Result<Vec<Frame>, TranscodeError> {
        if frame.codec != Codec::H264 {
            return Ok(Vec::new());
        }
        if self.source_sets.is_none() {
            // No configuration yet, or one that was refused.
            return Ok(Vec::new());
        }
        if self.need_keyframe {
            if !frame.keyframe {
                return Ok(Vec::new());
            }
            self.need_keyframe = false;
        }
        self.annexb.clear();
        if frame.keyframe {
            if let Some(sets) = &self.source_sets {
                self.annexb.extend_from_slice(sets);
            }
        }
        let units = split_avcc(&frame.payload, 4).map_err(|e| self.damaged(e.to_string()))?;
        // A parameter set sent in band is held to the same picture bound as the
        // configuration's, before the decoder allocates for it.
        for unit in units.iter().filter(|u| nal_type(u) == Some(7)) {
            if let Err(e) = check_sps(unit) {
                self.need_keyframe = true;
                return Err(e);
            }
        }
        // Access unit delimiters and SEI carry nothing the picture needs.
        let units: Vec<&[u8]> = units
            .into_iter()
            .filter(|u| !matches!(nal_type(u), Some(6 | 9)))
            .collect();
        self.annexb.extend_from_slice(&join_annexb(&units));
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.clear();
        }
        self.waiting.push(Reverse(frame.pts));
        let mut out = Vec::new();
        let picture = match self.decoder.decode(&self.annexb) {
            Ok(p) => p,
            Err(e) => {
                self.waiting.clear();
                self.need_keyframe = true;
                return Err(TranscodeError::Codec(format!("H.264 decode: {e}")));
            }
        };
        if let Some(picture) = picture {
            let pts = self.waiting.pop().map_or(frame.pts, |Reverse(p)| p);
            let encoded = encode(
                &mut self.encoder,
                &picture,
                &mut self.keyframe_requested,
                &mut self.encoded,
            )?;
            if let Some(f) = encoded.and_then(|key| self.output(pts, key)) {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Gives out the pictures the decoder still holds (at the end of a stream).
    pub fn finish(&mut self) -> Result<Vec<Frame>, TranscodeError> {
        let mut out = Vec::new();
        let pictures = self
            .decoder
            .flush_remaining()
            .map_err(|e| TranscodeError::Codec(format!("H.264 flush: {e}")))?;
        for picture in &pictures {
            let Some(Reverse(pts)) = self.waiting.pop() else {
                break;
            };
            let key = encode(
                &mut self.encoder,
                picture,
                &mut self.keyframe_requested,
                &mut self.encoded,
            )?;
            if let Some(key) = key {
                if let Some(f) = output_frame(&self.encoded, pts, key, &mut self.config) {
                    out.push(f);
                }
            }
        }
        self.waiting.clear();
        self.need_keyframe = true;
        Ok(out)
    }

    fn output(&mut self, pts: i64, keyframe: bool) -> Option<Frame> {
        output_frame(&self.encoded, pts, keyframe, &mut self.config)
    }

    fn damaged(&mut self, what: String) -> TranscodeError {
        self.need_keyframe = true;
        TranscodeError::Codec(format!("H.264 frame: {what}"))
    }
}

/// Refuses an SPS that cannot be read or whose pictures exceed [`MAX_PICTURE_PIXELS`].
fn check_sps(sps: &[u8]) -> Result<(), TranscodeError> {
    let size = sps_picture_size(sps).map_err(|e| TranscodeError::Codec(format!("H.264 {e}")))?;
    let pixels = u64::from(size.width) * u64::from(size.height);
    if pixels > MAX_PICTURE_PIXELS as u64 {
        return Err(TranscodeError::Codec(format!(
            "H.264 pictures of {}x{} are larger than the re-encoder takes",
            size.width, size.height
        )));
    }
    Ok(())
}

/// The encoder's settings for `settings`: real-time camera use, bit rate control, one
/// thread (a transcode is one of several on the machine). The encoder may skip a picture
/// to hold the bit rate, as real-time encoders do (its rate control needs that).
fn encoder_config(settings: AvcSettings) -> EncoderConfig {
    EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(settings.bitrate_bps.max(100_000)))
        .max_frame_rate(FrameRate::from_hz(settings.frame_rate.clamp(1.0, 120.0)))
        .intra_frame_period(IntraFramePeriod::from_num_frames(
            settings.keyframe_interval.max(1),
        ))
        .complexity(Complexity::Low)
        .skip_frames(true)
        .num_threads(1)
}

/// Encodes one decoded picture into `out` (Annex B); `Some(keyframe)` when there is output.
fn encode(
    encoder: &mut Encoder,
    picture: &DecodedYUV<'_>,
    keyframe_requested: &mut bool,
    out: &mut Vec<u8>,
) -> Result<Option<bool>, TranscodeError> {
    let (w, h) = picture.dimensions();
    if w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 || w.saturating_mul(h) > MAX_PICTURE_PIXELS {
        return Err(TranscodeError::Codec(format!(
            "H.264 picture of {w}x{h} not re-encoded"
        )));
    }
    if std::mem::take(keyframe_requested) {
        encoder.force_intra_frame();
    }
    let bits = encoder
        .encode(picture)
        .map_err(|e| TranscodeError::Codec(format!("H.264 encode: {e}")))?;
    let keyframe = matches!(bits.frame_type(), FrameType::IDR | FrameType::I);
    if matches!(bits.frame_type(), FrameType::Skip | FrameType::Invalid) {
        return Ok(None);
    }
    out.clear();
    bits.write_vec(out);
    Ok((!out.is_empty()).then_some(keyframe))
}

/// The output frame of an encoded picture, learning the output configuration from the
/// first keyframe's parameter sets. Nothing before the first keyframe.
fn output_frame(
    annexb: &[u8],
    pts: i64,
    keyframe: bool,
    config: &mut Option<AvcConfig>,
) -> Option<Frame> {
    if keyframe {
        let units = split_annexb(annexb).ok()?;
        let sets = |t: u8| -> Vec<Bytes> {
            units
                .iter()
                .filter(|u| nal_type(u) == Some(t))
                .map(|u| Bytes::copy_from_slice(u))
                .collect()
        };
        let (sps, pps) = (sets(7), sets(8));
        if !sps.is_empty() && !pps.is_empty() {
            let fresh = AvcConfig::from_parameter_sets(sps, pps).ok()?;
            if config.as_ref() != Some(&fresh) {
                *config = Some(fresh);
            }
        }
    }
    config.as_ref()?;
    let payload = annexb_to_avcc(annexb).ok()?;
    Some(Frame {
        track: TrackKind::Video,
        codec: Codec::H264,
        pts,
        dts: pts,
        keyframe,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_media::flv::file_video;

    /// Two seconds of 320x240 at 30 frames/s from libx264, High profile with two B-frames
    /// and a keyframe each second, video only, as FLV.
    const HIGH_BFRAMES: &[u8] = include_bytes!("../testdata/high-bframes.flv");

    /// The fixture's configuration and frames, in decoding order.
    fn fixture() -> (AvcConfig, Vec<Frame>) {
        let (config, frames) = file_video(HIGH_BFRAMES).expect("FLV");
        (config.expect("a sequence header"), frames)
    }

    #[test]
    fn high_profile_with_b_frames_comes_out_baseline_in_display_order() {
        let (config, frames) = fixture();
        assert_eq!(config.profile, 100, "the fixture is High profile");
        assert!(
            frames.iter().any(|f| f.cts() != 0),
            "the fixture has B-frames"
        );
        let mut r = AvcReencoder::new(Some(&config), AvcSettings::default()).expect("codec");
        let mut out = Vec::new();
        for f in &frames {
            out.extend(r.push(f).expect("re-encoded"));
        }
        out.extend(r.finish().expect("flushed"));
        assert_eq!(out.len(), frames.len(), "one picture per frame");
        // Display order, no reordering left, the source's presentation times.
        let mut source_pts: Vec<i64> = frames.iter().map(|f| f.pts).collect();
        source_pts.sort_unstable();
        let pts: Vec<i64> = out.iter().map(|f| f.pts).collect();
        assert_eq!(pts, source_pts);
        assert!(out.iter().all(|f| f.cts() == 0));
        // Constrained Baseline, starting with a keyframe.
        let c = r.config().expect("an output configuration");
        assert_eq!((c.profile, c.compatibility & 0x40), (66, 0x40), "{c:?}");
        assert!(out.first().is_some_and(|f| f.keyframe));
        // Every output frame is AVCC of non-IDR and IDR slices (no B slice: Baseline has none),
        // and each keyframe carries its own parameter sets.
        for f in &out {
            let types: Vec<Option<u8>> = split_avcc(&f.payload, 4)
                .expect("AVCC")
                .iter()
                .map(|u| nal_type(u))
                .collect();
            assert!(
                types.iter().all(|t| matches!(t, Some(1 | 5 | 7 | 8))),
                "{types:?}"
            );
            assert_eq!(f.keyframe, types.contains(&Some(7)), "{types:?}");
        }
    }

    #[test]
    fn a_keyframe_is_made_on_request_and_damage_waits_for_the_next_keyframe() {
        let (config, frames) = fixture();
        let mut r = AvcReencoder::new(Some(&config), AvcSettings::default()).expect("codec");
        let mut keys = 0;
        for (i, f) in frames.iter().enumerate() {
            if i == 10 {
                r.request_keyframe();
            }
            for o in r.push(f).expect("re-encoded").iter().filter(|o| o.keyframe) {
                keys += 1;
                let units = split_avcc(&o.payload, 4).expect("AVCC");
                assert!(units.iter().any(|u| nal_type(u) == Some(7)), "an SPS");
            }
        }
        // The first keyframe, the requested one, and the source's second second starts none:
        // the output keeps its own interval (60 frames) otherwise.
        assert_eq!(keys, 2);

        // Garbage and a frame cut short are errors, not panics; decoding resumes at the next
        // keyframe.
        let mut r = AvcReencoder::new(Some(&config), AvcSettings::default()).expect("codec");
        let mut bad = frames[0].clone();
        bad.payload = Bytes::from_static(&[0, 0, 0, 9, 0x65, 1, 2]);
        assert!(r.push(&bad).is_err());
        let mut cut = frames[0].clone();
        cut.payload = cut.payload.slice(..cut.payload.len() / 3);
        let _ = r.push(&cut);
        let mut out = Vec::new();
        for f in &frames {
            if let Ok(o) = r.push(f) {
                out.extend(o);
            }
        }
        assert!(
            out.len() > frames.len() / 2,
            "{} pictures after damage",
            out.len()
        );
    }

    #[test]
    fn pictures_above_the_bound_are_refused_before_the_decoder_sees_them() {
        // A baseline SPS of 257 x 144 macroblocks (4112 x 2304 pixels).
        let huge =
            Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f, 0xf4, 0x00, 0x80, 0x80, 0x90, 0xc8]);
        let pps = Bytes::from_static(&[0x68, 0xce, 0x38, 0x80]);
        let config =
            AvcConfig::from_parameter_sets(vec![huge.clone()], vec![pps.clone()]).expect("record");
        assert!(AvcReencoder::takes(&config).is_err());
        assert!(AvcReencoder::new(Some(&config), AvcSettings::default()).is_err());
        assert!(AvcReencoder::takes(&fixture().0).is_ok());

        // The same SPS in band, in a keyframe of a stream that started well: refused, and the
        // stream goes on at its next keyframe.
        let (config, frames) = fixture();
        let mut r = AvcReencoder::new(Some(&config), AvcSettings::default()).expect("codec");
        let mut key = frames[0].clone();
        let mut payload = Vec::new();
        for unit in [&huge[..], &pps[..]] {
            payload.extend_from_slice(&u32::try_from(unit.len()).expect("len").to_be_bytes());
            payload.extend_from_slice(unit);
        }
        payload.extend_from_slice(&key.payload);
        key.payload = Bytes::from(payload);
        let err = r.push(&key).expect_err("refused");
        assert!(err.to_string().contains("4112x2304"), "{err}");
        let mut out = 0;
        for f in &frames[1..] {
            out += r.push(f).expect("re-encoded").len();
        }
        assert!(out > 0, "pictures after the next keyframe");
    }
}
