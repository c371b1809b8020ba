//! The AAC decoder configuration (AudioSpecificConfig, ISO/IEC 14496-3 1.6.2.1) and the ADTS
//! header that MPEG-TS carries in front of every AAC frame.

use bytes::Bytes;

use crate::read::{BitReader, BitWriter};
use crate::MediaError;

/// Sampling frequencies by their 4-bit index (indices 13 and 14 are reserved, 15 is "explicit").
const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// The index value that means "the rate follows as a 24-bit number".
const EXPLICIT_RATE_INDEX: u8 = 15;

/// Length of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;

/// Length of an ADTS header with its 16-bit CRC.
const ADTS_HEADER_WITH_CRC_LEN: usize = 9;

/// Largest ADTS frame (header included): the frame_length field has 13 bits.
pub const MAX_ADTS_FRAME_LEN: usize = 0x1fff;

/// A parsed AudioSpecificConfig: what an AAC decoder needs before the first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC LC, 5 = SBR/HE-AAC, 29 = PS).
    pub object_type: u8,
    /// Sampling frequency index (0..=12), or 15 when the rate is given explicitly.
    pub sample_rate_index: u8,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// Channel configuration (1 = mono, 2 = stereo, 0 = defined in the bitstream).
    pub channel_config: u8,
    /// The AudioSpecificConfig bytes exactly as parsed or built.
    pub raw: Bytes,
}

/// What an ADTS header says about the frame it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdtsHeader {
    /// The decoder configuration the header implies.
    pub config: AacConfig,
    /// Header length: 7, or 9 with a CRC.
    pub header_len: usize,
    /// Whole frame length including the header; the raw access unit is
    /// `frame[header_len..frame_len]`.
    pub frame_len: usize,
}

impl AacConfig {
    /// Parses an AudioSpecificConfig; fields after the channel configuration (SBR/PS
    /// extensions, program config) are kept in [`AacConfig::raw`] but not interpreted.
    pub fn parse(data: &[u8]) -> Result<Self, MediaError> {
        let mut bits = BitReader::new(data, "AudioSpecificConfig");
        let mut object_type = bits.bits(5)?;
        if object_type == 31 {
            object_type = 32 + bits.bits(6)?;
        }
        let object_type = u8::try_from(object_type).unwrap_or(u8::MAX);
        if object_type == 0 {
            return Err(MediaError::Invalid {
                what: "AAC audio object type",
                reason: "zero",
            });
        }
        let sample_rate_index = u8::try_from(bits.bits(4)?).unwrap_or(u8::MAX);
        let sample_rate = if sample_rate_index == EXPLICIT_RATE_INDEX {
            bits.bits(24)?
        } else {
            rate_for_index(sample_rate_index)?
        };
        if sample_rate == 0 {
            return Err(MediaError::Invalid {
                what: "AAC sample rate",
                reason: "zero",
            });
        }
        let channel_config = u8::try_from(bits.bits(4)?).unwrap_or(u8::MAX);
        Ok(Self {
            object_type,
            sample_rate_index,
            sample_rate,
            channel_config,
            raw: Bytes::copy_from_slice(data),
        })
    }

    /// Builds the 2-byte AudioSpecificConfig for an object type (1..=30), a sampling
    /// frequency index (0..=12) and a channel configuration (0..=7).
    pub fn new(
        object_type: u8,
        sample_rate_index: u8,
        channel_config: u8,
    ) -> Result<Self, MediaError> {
        if !(1..=30).contains(&object_type) {
            return Err(MediaError::Unsupported {
                what: "AAC audio object type",
                value: u32::from(object_type),
            });
        }
        let sample_rate = rate_for_index(sample_rate_index)?;
        if channel_config > 7 {
            return Err(MediaError::Unsupported {
                what: "AAC channel configuration",
                value: u32::from(channel_config),
            });
        }
        let mut w = BitWriter::default();
        w.put(5, u32::from(object_type));
        w.put(4, u32::from(sample_rate_index));
        w.put(4, u32::from(channel_config));
        // GASpecificConfig: frameLengthFlag, dependsOnCoreCoder, extensionFlag, all zero.
        w.put(3, 0);
        Ok(Self {
            object_type,
            sample_rate_index,
            sample_rate,
            channel_config,
            raw: Bytes::from(w.finish()),
        })
    }

    /// The sampling frequency index for a rate in Hz, if the standard table has it.
    pub fn index_for_rate(rate: u32) -> Option<u8> {
        SAMPLE_RATES
            .iter()
            .position(|r| *r == rate)
            .and_then(|i| u8::try_from(i).ok())
    }

    /// The 7-byte ADTS header (no CRC) for an access unit of `payload_len` bytes.
    ///
    /// ADTS can only express object types 1 to 4, a table sampling rate and channel
    /// configurations up to 7; other configs and frames over [`MAX_ADTS_FRAME_LEN`] fail.
    pub fn adts_header(&self, payload_len: usize) -> Result<[u8; ADTS_HEADER_LEN], MediaError> {
        if !(1..=4).contains(&self.object_type) {
            return Err(MediaError::Unsupported {
                what: "ADTS profile (object type)",
                value: u32::from(self.object_type),
            });
        }
        rate_for_index(self.sample_rate_index)?;
        if self.channel_config > 7 {
            return Err(MediaError::Unsupported {
                what: "ADTS channel configuration",
                value: u32::from(self.channel_config),
            });
        }
        let frame_len = payload_len.saturating_add(ADTS_HEADER_LEN);
        if frame_len > MAX_ADTS_FRAME_LEN {
            return Err(MediaError::TooLarge {
                what: "ADTS frame",
                len: frame_len,
                max: MAX_ADTS_FRAME_LEN,
            });
        }
        let mut w = BitWriter::default();
        w.put(12, 0xfff); // syncword
        w.put(1, 0); // ID: MPEG-4
        w.put(2, 0); // layer
        w.put(1, 1); // protection_absent: no CRC
        w.put(2, u32::from(self.object_type - 1)); // profile
        w.put(4, u32::from(self.sample_rate_index));
        w.put(1, 0); // private_bit
        w.put(3, u32::from(self.channel_config));
        w.put(4, 0); // original_copy, home, copyright id bit and start
        w.put(13, u32::try_from(frame_len).unwrap_or(0));
        w.put(11, 0x7ff); // buffer fullness: variable rate
        w.put(2, 0); // one raw data block
        let bytes = w.finish();
        let mut out = [0u8; ADTS_HEADER_LEN];
        out.copy_from_slice(
            bytes
                .get(..ADTS_HEADER_LEN)
                .unwrap_or(&[0; ADTS_HEADER_LEN]),
        );
        Ok(out)
    }
}

/// Parses the ADTS header at the start of `data` (a frame need not be complete).
///
/// Headers announcing several raw data blocks in one frame are refused as unsupported.
pub fn parse_adts(data: &[u8]) -> Result<AdtsHeader, MediaError> {
    let mut bits = BitReader::new(data, "ADTS header");
    if bits.bits(12)? != 0xfff {
        return Err(MediaError::Invalid {
            what: "ADTS header",
            reason: "no syncword",
        });
    }
    let _id = bits.bits(1)?;
    let layer = bits.bits(2)?;
    if layer != 0 {
        return Err(MediaError::Invalid {
            what: "ADTS header",
            reason: "layer is not 0",
        });
    }
    let protection_absent = bits.bits(1)? == 1;
    let profile = u8::try_from(bits.bits(2)?).unwrap_or(0);
    let sample_rate_index = u8::try_from(bits.bits(4)?).unwrap_or(u8::MAX);
    let _private = bits.bits(1)?;
    let channel_config = u8::try_from(bits.bits(3)?).unwrap_or(0);
    let _flags = bits.bits(4)?;
    let frame_len = usize::try_from(bits.bits(13)?).unwrap_or(0);
    let _fullness = bits.bits(11)?;
    let extra_blocks = bits.bits(2)?;
    if extra_blocks != 0 {
        return Err(MediaError::Unsupported {
            what: "ADTS raw data blocks per frame",
            value: extra_blocks + 1,
        });
    }
    let header_len = if protection_absent {
        ADTS_HEADER_LEN
    } else {
        ADTS_HEADER_WITH_CRC_LEN
    };
    if frame_len <= header_len {
        return Err(MediaError::Invalid {
            what: "ADTS header",
            reason: "frame length not above header length",
        });
    }
    let config = AacConfig::new(profile + 1, sample_rate_index, channel_config)?;
    Ok(AdtsHeader {
        config,
        header_len,
        frame_len,
    })
}

/// The sampling rate for a table index.
fn rate_for_index(index: u8) -> Result<u32, MediaError> {
    SAMPLE_RATES
        .get(usize::from(index))
        .copied()
        .ok_or(MediaError::Unsupported {
            what: "AAC sampling frequency index",
            value: u32::from(index),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_stereo_44k1() {
        let config = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(config.object_type, 2);
        assert_eq!(config.sample_rate_index, 4);
        assert_eq!(config.sample_rate, 44_100);
        assert_eq!(config.channel_config, 2);
        let built = AacConfig::new(2, 4, 2).unwrap();
        assert_eq!(built, config);
        assert_eq!(AacConfig::index_for_rate(44_100), Some(4));
        assert_eq!(AacConfig::index_for_rate(44_000), None);
    }

    #[test]
    fn escape_object_type_and_explicit_rate() {
        // object type 31 + 6 bits (value 10 -> 42), index 15, rate 50_000, channels 1.
        let mut w = BitWriter::default();
        w.put(5, 31);
        w.put(6, 10);
        w.put(4, 15);
        w.put(24, 50_000);
        w.put(4, 1);
        let bytes = w.finish();
        let config = AacConfig::parse(&bytes).unwrap();
        assert_eq!(config.object_type, 42);
        assert_eq!(config.sample_rate, 50_000);
        assert_eq!(config.channel_config, 1);
        assert!(config.adts_header(10).is_err());
    }

    #[test]
    fn malformed_configs_fail() {
        assert!(AacConfig::parse(&[]).is_err());
        assert!(AacConfig::parse(&[0x12]).is_err());
        assert!(AacConfig::parse(&[0x00, 0x10]).is_err());
        // Reserved sampling index 13.
        assert!(AacConfig::parse(&[0x16, 0x90]).is_err());
        // Explicit rate cut short.
        assert!(AacConfig::parse(&[0x17, 0x80, 0x00]).is_err());
        assert!(AacConfig::new(0, 4, 2).is_err());
        assert!(AacConfig::new(2, 13, 2).is_err());
        assert!(AacConfig::new(2, 4, 8).is_err());
    }

    #[test]
    fn adts_round_trip() {
        let config = AacConfig::new(2, 3, 2).unwrap();
        let header = config.adts_header(100).unwrap();
        let parsed = parse_adts(&header).unwrap();
        assert_eq!(parsed.config, config);
        assert_eq!(parsed.header_len, 7);
        assert_eq!(parsed.frame_len, 107);
        assert!(config.adts_header(MAX_ADTS_FRAME_LEN).is_err());
        assert!(config
            .adts_header(MAX_ADTS_FRAME_LEN - ADTS_HEADER_LEN)
            .is_ok());
    }

    #[test]
    fn malformed_adts_fails() {
        let good = AacConfig::new(2, 4, 2).unwrap().adts_header(10).unwrap();
        for len in 0..good.len() {
            assert!(parse_adts(&good[..len]).is_err(), "prefix {len}");
        }
        let mut no_sync = good;
        no_sync[0] = 0xfe;
        assert!(parse_adts(&no_sync).is_err());
        let mut layer = good;
        layer[1] |= 0x02;
        assert!(parse_adts(&layer).is_err());
        // frame_length 0.
        let mut zero_len = good;
        zero_len[3] &= 0xfc;
        zero_len[4] = 0;
        zero_len[5] &= 0x1f;
        assert!(parse_adts(&zero_len).is_err());
        // Two raw data blocks.
        let mut blocks = good;
        blocks[6] |= 0x01;
        assert!(matches!(
            parse_adts(&blocks),
            Err(MediaError::Unsupported { .. })
        ));
        // Reserved sampling index.
        let mut index = good;
        index[2] = (index[2] & 0xc3) | (13 << 2);
        assert!(parse_adts(&index).is_err());
    }
}
