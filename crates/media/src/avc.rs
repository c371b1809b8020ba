//! The H.264 decoder configuration: AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3).

use bytes::{BufMut, Bytes, BytesMut};

use crate::nal::{join_annexb, nal_type, AVCC_LENGTH_SIZE, NAL_TYPE_PPS, NAL_TYPE_SPS};
use crate::read::{BitReader, ByteReader};
use crate::MediaError;

/// Most SPS a record can list (a 5-bit count).
const MAX_SPS: usize = 31;
/// Most PPS a record can list (an 8-bit count).
const MAX_PPS: usize = 255;
/// Longest parameter set a record can hold (a 16-bit length).
const MAX_PARAMETER_SET_LEN: usize = u16::MAX as usize;

/// A parsed AVCDecoderConfigurationRecord: what an H.264 decoder needs before the first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// AVCProfileIndication (66 baseline, 77 main, 100 high, ...).
    pub profile: u8,
    /// profile_compatibility flags.
    pub compatibility: u8,
    /// AVCLevelIndication (31 = level 3.1).
    pub level: u8,
    /// Size in bytes (1, 2 or 4) of the NAL unit length prefixes in frames using this record.
    pub nal_length_size: u8,
    /// Sequence parameter sets, each one NAL unit without a length or start code.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets, each one NAL unit without a length or start code.
    pub pps: Vec<Bytes>,
    /// The record exactly as parsed or built (what an FLV sequence header carries).
    pub record: Bytes,
}

impl AvcConfig {
    /// Parses a record, keeping any trailing extension bytes (high-profile chroma fields) in
    /// [`AvcConfig::record`] without interpreting them.
    pub fn parse(data: &[u8]) -> Result<Self, MediaError> {
        let mut r = ByteReader::new(data, "AVC decoder configuration record");
        let version = r.u8()?;
        if version != 1 {
            return Err(MediaError::Unsupported {
                what: "AVC configurationVersion",
                value: u32::from(version),
            });
        }
        let profile = r.u8()?;
        let compatibility = r.u8()?;
        let level = r.u8()?;
        let nal_length_size = (r.u8()? & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(MediaError::Unsupported {
                what: "AVC NAL length size",
                value: 3,
            });
        }
        let sps_count = usize::from(r.u8()? & 0x1f);
        let sps = read_parameter_sets(&mut r, sps_count)?;
        let pps_count = usize::from(r.u8()?);
        let pps = read_parameter_sets(&mut r, pps_count)?;
        Ok(Self {
            profile,
            compatibility,
            level,
            nal_length_size,
            sps,
            pps,
            record: Bytes::copy_from_slice(data),
        })
    }

    /// Builds a record from parameter sets found in-band (Annex-B streams such as SRT), with
    /// 4-byte NAL lengths; profile, compatibility and level are taken from the first SPS.
    ///
    /// The optional high-profile extension (chroma format, bit depths) is not written; decoders
    /// read those values from the SPS itself.
    pub fn from_parameter_sets(sps: Vec<Bytes>, pps: Vec<Bytes>) -> Result<Self, MediaError> {
        let first = sps.first().ok_or(MediaError::Invalid {
            what: "AVC parameter sets",
            reason: "no SPS",
        })?;
        let Some([_, profile, compatibility, level]) =
            first.get(..4).and_then(|h| <[u8; 4]>::try_from(h).ok())
        else {
            return Err(MediaError::Truncated {
                what: "SPS",
                needed: 4,
                available: first.len(),
            });
        };
        if pps.is_empty() {
            return Err(MediaError::Invalid {
                what: "AVC parameter sets",
                reason: "no PPS",
            });
        }
        check_sets(&sps, MAX_SPS, NAL_TYPE_SPS, "SPS")?;
        check_sets(&pps, MAX_PPS, NAL_TYPE_PPS, "PPS")?;

        let mut out = BytesMut::new();
        out.put_u8(1);
        out.put_u8(profile);
        out.put_u8(compatibility);
        out.put_u8(level);
        out.put_u8(0xfc | (AVCC_LENGTH_SIZE - 1));
        // Counts were checked against MAX_SPS / MAX_PPS above.
        out.put_u8(0xe0 | u8::try_from(sps.len()).unwrap_or(0));
        write_parameter_sets(&mut out, &sps);
        out.put_u8(u8::try_from(pps.len()).unwrap_or(0));
        write_parameter_sets(&mut out, &pps);
        Ok(Self {
            profile,
            compatibility,
            level,
            nal_length_size: AVCC_LENGTH_SIZE,
            sps,
            pps,
            record: out.freeze(),
        })
    }

    /// All SPS then all PPS in Annex-B form, to put before a keyframe for SRT or WebRTC.
    pub fn parameter_sets_annexb(&self) -> Bytes {
        let units: Vec<&[u8]> = self
            .sps
            .iter()
            .chain(&self.pps)
            .map(Bytes::as_ref)
            .collect();
        join_annexb(&units)
    }

    /// The RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }
}

/// A picture size read from a sequence parameter set, in pixels before cropping (whole
/// macroblocks), which is what a decoder allocates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Reads the picture size from an SPS NAL unit (H.264 7.3.2.1.1), header byte included:
/// what a decoder would allocate for, checked before any decoder sees the unit.
pub fn sps_picture_size(sps: &[u8]) -> Result<PictureSize, MediaError> {
    sps_sizes(sps).map(|(coded, _)| coded)
}

/// Reads the displayed picture size from an SPS NAL unit: the coded size less the frame
/// cropping (what players show and playlists announce).
pub fn sps_display_size(sps: &[u8]) -> Result<PictureSize, MediaError> {
    sps_sizes(sps).map(|(_, shown)| shown)
}

/// The coded and the displayed picture size of an SPS.
fn sps_sizes(sps: &[u8]) -> Result<(PictureSize, PictureSize), MediaError> {
    if nal_type(sps) != Some(NAL_TYPE_SPS) {
        return Err(MediaError::Invalid {
            what: "SPS",
            reason: "wrong NAL unit type",
        });
    }
    let rbsp = unescape(sps.get(1..).unwrap_or_default());
    let mut r = BitReader::new(&rbsp, "SPS");
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
             // 4:2:0 unless the profile says otherwise; crop units follow the chroma format.
    let mut chroma_array_type = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        let chroma_format = r.ue()?;
        chroma_array_type = chroma_format;
        if chroma_format == 3 && r.flag()? {
            // separate_colour_plane_flag: each plane coded as monochrome
            chroma_array_type = 0;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.flag()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(MediaError::Unsupported {
                    what: "SPS num_ref_frames_in_pic_order_cnt_cycle",
                    value: cycle,
                });
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    let height_mbs = if frame_mbs_only {
        height_units
    } else {
        height_units * 2
    };
    let px = |mbs: u64| u32::try_from(mbs * 16).unwrap_or(u32::MAX);
    let coded = PictureSize {
        width: px(width_mbs),
        height: px(height_mbs),
    };
    // The cropping follows; an SPS cut short before it is taken as uncropped.
    let mut cropped = || -> Result<PictureSize, MediaError> {
        if !frame_mbs_only {
            r.flag()?; // mb_adaptive_frame_field_flag
        }
        r.flag()?; // direct_8x8_inference_flag
        if !r.flag()? {
            return Ok(coded);
        }
        // frame_cropping_flag: offsets in crop units (H.264 7.4.2.1.1)
        let (unit_x, sub_height): (u64, u64) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let unit_y = sub_height * if frame_mbs_only { 1 } else { 2 };
        let (left, right) = (u64::from(r.ue()?), u64::from(r.ue()?));
        let (top, bottom) = (u64::from(r.ue()?), u64::from(r.ue()?));
        let crop = |size: u32, a: u64, b: u64, unit: u64| {
            u32::try_from(u64::from(size).saturating_sub((a + b).saturating_mul(unit)))
                .unwrap_or(size)
        };
        Ok(PictureSize {
            width: crop(coded.width, left, right, unit_x),
            height: crop(coded.height, top, bottom, unit_y),
        })
    };
    let shown = cropped().unwrap_or(coded);
    Ok((coded, shown))
}

/// Skips one scaling list of `size` entries (H.264 7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), MediaError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()?).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// The RBSP of a NAL unit payload: emulation prevention bytes (`00 00 03`) removed.
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads `count` parameter sets, each behind a 16-bit length.
fn read_parameter_sets(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<Bytes>, MediaError> {
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        if len == 0 {
            return Err(MediaError::Invalid {
                what: "AVC parameter set",
                reason: "zero length",
            });
        }
        sets.push(Bytes::copy_from_slice(r.take(len)?));
    }
    Ok(sets)
}

/// Checks a list of parameter sets against the record's limits and their NAL type.
fn check_sets(
    sets: &[Bytes],
    max_count: usize,
    expected_type: u8,
    what: &'static str,
) -> Result<(), MediaError> {
    if sets.len() > max_count {
        return Err(MediaError::TooLarge {
            what,
            len: sets.len(),
            max: max_count,
        });
    }
    for set in sets {
        if set.len() > MAX_PARAMETER_SET_LEN {
            return Err(MediaError::TooLarge {
                what,
                len: set.len(),
                max: MAX_PARAMETER_SET_LEN,
            });
        }
        if nal_type(set) != Some(expected_type) {
            return Err(MediaError::Invalid {
                what,
                reason: "wrong NAL unit type",
            });
        }
    }
    Ok(())
}

/// Writes parameter sets, each behind a 16-bit length (checked by [`check_sets`]).
fn write_parameter_sets(out: &mut BytesMut, sets: &[Bytes]) {
    for set in sets {
        out.put_u16(u16::try_from(set.len()).unwrap_or(0));
        out.put_slice(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A baseline record: one 4-byte SPS, one 2-byte PPS.
    const RECORD: [u8; 17] = [
        1, 66, 0xc0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xc0, 30, 1, 0, 2, 0x68, 0xce,
    ];

    #[test]
    fn parse_and_build_agree() {
        let parsed = AvcConfig::parse(&RECORD).unwrap();
        assert_eq!(parsed.profile, 66);
        assert_eq!(parsed.level, 30);
        assert_eq!(parsed.nal_length_size, 4);
        assert_eq!(parsed.sps.len(), 1);
        assert_eq!(&parsed.pps[0][..], &[0x68, 0xce]);
        let built = AvcConfig::from_parameter_sets(parsed.sps.clone(), parsed.pps.clone()).unwrap();
        assert_eq!(built, parsed);
        assert_eq!(parsed.codec_string(), "avc1.42c01e");
        assert_eq!(
            &parsed.parameter_sets_annexb()[..],
            &[0, 0, 0, 1, 0x67, 66, 0xc0, 30, 0, 0, 0, 1, 0x68, 0xce]
        );
    }

    /// An SPS written bit by bit: Exp-Golomb codes and plain bits, RBSP trailing bits, and
    /// emulation prevention where the bytes need it.
    #[derive(Default)]
    struct SpsWriter {
        bits: Vec<bool>,
    }

    impl SpsWriter {
        fn bits(&mut self, value: u64, n: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push(value >> i & 1 == 1);
            }
            self
        }
        fn ue(&mut self, value: u64) -> &mut Self {
            let v = value + 1;
            let n = 64 - v.leading_zeros();
            self.bits(0, n - 1).bits(v, n)
        }
        fn se(&mut self, value: i64) -> &mut Self {
            let code = if value > 0 { value * 2 - 1 } else { -value * 2 };
            self.ue(code as u64)
        }
        fn nal(&mut self) -> Vec<u8> {
            self.bits.push(true);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            let mut out = vec![0x67];
            let mut zeros = 0;
            for byte in self.bits.chunks(8) {
                let b = byte.iter().fold(0u8, |acc, &bit| acc << 1 | u8::from(bit));
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    /// A baseline SPS of `width_mbs` x `height_mbs` macroblocks.
    fn baseline_sps(width_mbs: u64, height_mbs: u64) -> Vec<u8> {
        SpsWriter::default()
            .bits(66, 8)
            .bits(0xc0, 8)
            .bits(31, 8)
            .ue(0) // sps id
            .ue(0) // log2_max_frame_num_minus4
            .ue(0) // pic_order_cnt_type
            .ue(0) // log2_max_pic_order_cnt_lsb_minus4
            .ue(1) // max_num_ref_frames
            .bits(0, 1)
            .ue(width_mbs - 1)
            .ue(height_mbs - 1)
            .bits(1, 1) // frame_mbs_only
            .bits(0b100, 3) // direct_8x8_inference, no cropping, no VUI
            .nal()
    }

    #[test]
    fn sps_picture_size_reads_every_profile_layout() {
        // Real: libx264's 320x240 High profile SPS (20 x 15 macroblocks), with an emulation
        // prevention byte.
        let x264 = [
            0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03,
            0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
        ];
        assert_eq!(
            sps_picture_size(&x264).unwrap(),
            PictureSize {
                width: 320,
                height: 240
            }
        );
        assert_eq!(
            sps_picture_size(&baseline_sps(120, 68)).unwrap(),
            PictureSize {
                width: 1920,
                height: 1088
            }
        );
        // High profile with scaling lists, fields, and the cyclic POC type.
        let mut w = SpsWriter::default();
        w.bits(100, 8).bits(0, 8).bits(40, 8).ue(0);
        w.ue(1).ue(0).ue(0).bits(0, 1); // 4:2:0, 8 bit, no bypass
        w.bits(1, 1); // scaling matrix present
        for i in 0..8 {
            w.bits(1, 1);
            for _ in 0..if i < 6 { 16 } else { 64 } {
                w.se(-3);
            }
        }
        w.ue(0)
            .ue(1)
            .bits(0, 1)
            .se(-2)
            .se(1)
            .ue(3)
            .se(1)
            .se(2)
            .se(-1);
        w.ue(4).bits(0, 1).ue(79).ue(22).bits(0, 1); // 80 x 23 x 2 macroblocks, fields
        w.bits(0b000, 3);
        assert_eq!(
            sps_picture_size(&w.nal()).unwrap(),
            PictureSize {
                width: 1280,
                height: 736
            }
        );
        assert_eq!(sps_display_size(&w.nal()), sps_picture_size(&w.nal()));
        // The real 640x360 of libx264: 40 x 23 macroblocks, cropped by 4 units of 2 rows.
        let mut w = SpsWriter::default();
        w.bits(100, 8).bits(0, 8).bits(30, 8).ue(0);
        w.ue(1).ue(0).ue(0).bits(0, 1).bits(0, 1); // 4:2:0, 8 bit, no matrices
        w.ue(0).ue(2).ue(4).bits(0, 1); // frame num, POC type 2, 4 refs, no gaps
        w.ue(39).ue(22).bits(1, 1); // 40 x 23 macroblocks, frames only
        w.bits(1, 1).bits(1, 1).ue(0).ue(0).ue(0).ue(4); // direct 8x8, cropping 0 0 0 4
        w.bits(0, 1); // no VUI
        let sps = w.nal();
        assert_eq!(sps_picture_size(&sps).unwrap().height, 368);
        assert_eq!(
            sps_display_size(&sps).unwrap(),
            PictureSize {
                width: 640,
                height: 360
            }
        );
        // A huge picture is read as it is (the caller bounds it), cut SPS are errors.
        assert_eq!(
            sps_picture_size(&baseline_sps(1 << 20, 1 << 20))
                .unwrap()
                .width,
            1 << 24
        );
        // Cut before the frame size ends: an error; after it (in the VUI): the same size.
        let full = sps_picture_size(&x264).unwrap();
        let shortest = (1..x264.len())
            .find(|&len| sps_picture_size(&x264[..len]).is_ok())
            .unwrap();
        assert!(shortest > 6, "{shortest}");
        for len in shortest..x264.len() {
            assert_eq!(sps_picture_size(&x264[..len]), Ok(full), "prefix {len}");
        }
        assert!(
            sps_picture_size(&[0x68, 0xce]).is_err(),
            "a PPS is not an SPS"
        );
    }

    #[test]
    fn every_truncation_fails() {
        for len in 0..RECORD.len() {
            assert!(AvcConfig::parse(&RECORD[..len]).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn malformed_records_fail() {
        let mut bad_version = RECORD;
        bad_version[0] = 0;
        assert!(matches!(
            AvcConfig::parse(&bad_version),
            Err(MediaError::Unsupported { .. })
        ));
        let mut three_byte_lengths = RECORD;
        three_byte_lengths[4] = 0xfe;
        assert!(AvcConfig::parse(&three_byte_lengths).is_err());
        let mut huge_sps = RECORD;
        huge_sps[6] = 0xff;
        huge_sps[7] = 0xff;
        assert!(matches!(
            AvcConfig::parse(&huge_sps),
            Err(MediaError::Truncated { .. })
        ));
        let mut zero_sps = RECORD;
        zero_sps[7] = 0;
        assert!(AvcConfig::parse(&zero_sps).is_err());
    }

    #[test]
    fn building_checks_its_inputs() {
        let sps = Bytes::from_static(&[0x67, 100, 0, 31, 0xac]);
        let pps = Bytes::from_static(&[0x68, 0xeb]);
        assert!(AvcConfig::from_parameter_sets(vec![], vec![pps.clone()]).is_err());
        assert!(AvcConfig::from_parameter_sets(vec![sps.clone()], vec![]).is_err());
        assert!(AvcConfig::from_parameter_sets(
            vec![Bytes::from_static(&[0x67, 1])],
            vec![pps.clone()]
        )
        .is_err());
        assert!(AvcConfig::from_parameter_sets(vec![pps.clone()], vec![pps.clone()]).is_err());
        assert!(AvcConfig::from_parameter_sets(vec![sps.clone(); 32], vec![pps.clone()]).is_err());
        let long = Bytes::from(vec![0x67; MAX_PARAMETER_SET_LEN + 1]);
        assert!(AvcConfig::from_parameter_sets(vec![long], vec![pps.clone()]).is_err());
        let built = AvcConfig::from_parameter_sets(vec![sps], vec![pps]).unwrap();
        assert_eq!(built.codec_string(), "avc1.64001f");
        assert_eq!(AvcConfig::parse(&built.record).unwrap(), built);
    }
}
