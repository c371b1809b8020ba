//! The H.264 decoder configuration: AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3).

use bytes::{BufMut, Bytes, BytesMut};

use crate::nal::{join_annexb, nal_type, AVCC_LENGTH_SIZE, NAL_TYPE_PPS, NAL_TYPE_SPS};
use crate::read::ByteReader;
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
