//! H.264 NAL unit framing: AVCC (length-prefixed) and Annex-B (start-code) forms.
//!
//! RTMP carries AVCC; MPEG-TS (SRT) and RTP packetizers want Annex-B or bare NAL units. Every
//! function here bounds the number of NAL units by [`MAX_NALS_PER_FRAME`] and each unit's
//! length by [`MAX_NAL_LEN`], and returns an error rather than panicking on malformed input.

use bytes::{BufMut, Bytes, BytesMut};

use crate::read::ByteReader;
use crate::MediaError;

/// Most NAL units accepted in one access unit; beyond it conversion fails with
/// [`MediaError::TooLarge`]. Real encoders emit a handful (AUD, SEI, a few slices).
pub const MAX_NALS_PER_FRAME: usize = 1024;

/// Longest NAL unit accepted, in bytes (a 4K intra slice stays well below); longer ones fail
/// with [`MediaError::TooLarge`].
pub const MAX_NAL_LEN: usize = 16 * 1024 * 1024;

/// The length-prefix size used in [`crate::Frame`] payloads.
pub const AVCC_LENGTH_SIZE: u8 = 4;

/// The 4-byte Annex-B start code written before each NAL unit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// NAL unit type of a sequence parameter set.
pub const NAL_TYPE_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_TYPE_PPS: u8 = 8;
/// NAL unit type of an IDR (key) slice.
pub const NAL_TYPE_IDR: u8 = 5;

/// The `nal_unit_type` of a NAL unit (its first byte's low 5 bits), `None` if it is empty.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Splits an AVCC buffer whose lengths are `length_size` bytes (1, 2 or 4) into NAL units.
pub fn split_avcc(data: &[u8], length_size: u8) -> Result<Vec<&[u8]>, MediaError> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(MediaError::Unsupported {
            what: "AVCC length size",
            value: u32::from(length_size),
        });
    }
    let mut reader = ByteReader::new(data, "AVCC NAL unit");
    let mut units = Vec::new();
    while reader.remaining() > 0 {
        if units.len() >= MAX_NALS_PER_FRAME {
            return Err(MediaError::TooLarge {
                what: "NAL units in one frame",
                len: units.len() + 1,
                max: MAX_NALS_PER_FRAME,
            });
        }
        let len = usize::try_from(reader.uint(usize::from(length_size))?).unwrap_or(usize::MAX);
        if len > MAX_NAL_LEN {
            return Err(MediaError::TooLarge {
                what: "NAL unit length",
                len,
                max: MAX_NAL_LEN,
            });
        }
        if len == 0 {
            return Err(MediaError::Invalid {
                what: "AVCC NAL unit",
                reason: "zero length",
            });
        }
        units.push(reader.take(len)?);
    }
    Ok(units)
}

/// Splits an Annex-B buffer at its 3- or 4-byte start codes into NAL units.
///
/// Bytes before the first start code and empty units are skipped; trailing zero bytes of a
/// unit (the leading zero of a following 4-byte start code) are trimmed.
pub fn split_annexb(data: &[u8]) -> Result<Vec<&[u8]>, MediaError> {
    let mut units = Vec::new();
    let mut rest = match find_start_code(data) {
        Some((_, after)) => data.get(after..).unwrap_or_default(),
        None => return Ok(units),
    };
    loop {
        let (unit, next) = match find_start_code(rest) {
            Some((at, after)) => (
                rest.get(..at).unwrap_or_default(),
                Some(rest.get(after..).unwrap_or_default()),
            ),
            None => (rest, None),
        };
        let unit = trim_trailing_zeros(unit);
        if !unit.is_empty() {
            if units.len() >= MAX_NALS_PER_FRAME {
                return Err(MediaError::TooLarge {
                    what: "NAL units in one frame",
                    len: units.len() + 1,
                    max: MAX_NALS_PER_FRAME,
                });
            }
            if unit.len() > MAX_NAL_LEN {
                return Err(MediaError::TooLarge {
                    what: "NAL unit length",
                    len: unit.len(),
                    max: MAX_NAL_LEN,
                });
            }
            units.push(unit);
        }
        match next {
            Some(next) => rest = next,
            None => return Ok(units),
        }
    }
}

/// Converts a [`crate::Frame`] H.264 payload (4-byte AVCC) to Annex-B with 4-byte start codes.
pub fn avcc_to_annexb(avcc: &[u8]) -> Result<Bytes, MediaError> {
    let units = split_avcc(avcc, AVCC_LENGTH_SIZE)?;
    Ok(join_annexb(&units))
}

/// Writes NAL units in Annex-B form, each after a 4-byte start code.
pub fn join_annexb(units: &[&[u8]]) -> Bytes {
    let total = units.iter().map(|u| u.len() + START_CODE.len()).sum();
    let mut out = BytesMut::with_capacity(total);
    for unit in units {
        out.put_slice(&START_CODE);
        out.put_slice(unit);
    }
    out.freeze()
}

/// Converts Annex-B to the 4-byte AVCC form of [`crate::Frame`] payloads.
pub fn annexb_to_avcc(annexb: &[u8]) -> Result<Bytes, MediaError> {
    let units = split_annexb(annexb)?;
    Ok(join_avcc(&units))
}

/// Writes NAL units in 4-byte AVCC form.
///
/// Units are at most [`MAX_NAL_LEN`] long when they come from this module's split functions,
/// so their length always fits the 4-byte prefix.
pub fn join_avcc(units: &[&[u8]]) -> Bytes {
    let total = units.iter().map(|u| u.len() + 4).sum();
    let mut out = BytesMut::with_capacity(total);
    for unit in units {
        out.put_u32(u32::try_from(unit.len()).unwrap_or(u32::MAX));
        out.put_slice(unit);
    }
    out.freeze()
}

/// Rewrites AVCC with `length_size`-byte prefixes into the 4-byte form of [`crate::Frame`]
/// payloads; returns the input unchanged (without copying) when it already is.
pub fn normalize_avcc(data: Bytes, length_size: u8) -> Result<Bytes, MediaError> {
    if length_size == AVCC_LENGTH_SIZE {
        return Ok(data);
    }
    let units = split_avcc(&data, length_size)?;
    Ok(join_avcc(&units))
}

/// Position of the first start code in `data` and the index just after it.
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    let at = data.windows(3).position(|w| w == [0, 0, 1])?;
    Some((at, at + 3))
}

/// `unit` without its trailing zero bytes.
fn trim_trailing_zeros(unit: &[u8]) -> &[u8] {
    let end = unit.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    unit.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_with_mixed_start_codes() {
        let data = [
            0xff, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 4, 5, 0, 0, 1,
        ];
        let units = split_annexb(&data).unwrap();
        assert_eq!(units, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        let avcc = annexb_to_avcc(&data).unwrap();
        assert_eq!(
            &avcc[..],
            &[0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 3, 0x65, 4, 5]
        );
        let back = avcc_to_annexb(&avcc).unwrap();
        assert_eq!(
            &back[..],
            &[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5]
        );
        assert_eq!(nal_type(units[2]), Some(NAL_TYPE_IDR));
        assert_eq!(nal_type(&[]), None);
    }

    #[test]
    fn annexb_without_start_code_is_empty() {
        assert!(split_annexb(&[]).unwrap().is_empty());
        assert!(split_annexb(&[1, 2, 3, 0, 0]).unwrap().is_empty());
        assert!(split_annexb(&[0, 0, 1]).unwrap().is_empty());
        assert!(split_annexb(&[0, 0, 1, 0, 0, 1, 0, 0, 0])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn annexb_count_is_bounded() {
        let mut data = Vec::new();
        for _ in 0..=MAX_NALS_PER_FRAME {
            data.extend_from_slice(&[0, 0, 1, 0x41]);
        }
        assert!(matches!(
            split_annexb(&data),
            Err(MediaError::TooLarge { .. })
        ));
    }

    #[test]
    fn avcc_malformed_inputs_fail_without_panic() {
        // Truncated length prefix.
        assert!(matches!(
            split_avcc(&[0, 0, 1], 4),
            Err(MediaError::Truncated { .. })
        ));
        // Length longer than the data.
        assert!(matches!(
            split_avcc(&[0, 0, 0, 9, 0x65], 4),
            Err(MediaError::Truncated { .. })
        ));
        // Absurd length.
        assert!(matches!(
            split_avcc(&[0xff, 0xff, 0xff, 0xff, 0x65], 4),
            Err(MediaError::TooLarge { .. })
        ));
        // Zero length.
        assert!(matches!(
            split_avcc(&[0, 0, 0, 0], 4),
            Err(MediaError::Invalid { .. })
        ));
        // Length size 3 is not allowed by the record format.
        assert!(matches!(
            split_avcc(&[0, 0, 1, 0x65], 3),
            Err(MediaError::Unsupported { .. })
        ));
        assert!(split_avcc(&[], 4).unwrap().is_empty());
        let many = [0u8, 1, 0x41].repeat(MAX_NALS_PER_FRAME + 1);
        assert!(matches!(
            split_avcc(&many, 2),
            Err(MediaError::TooLarge { .. })
        ));
    }

    #[test]
    fn normalize_rewrites_short_prefixes() {
        let two = Bytes::from_static(&[0, 2, 0x65, 1, 0, 1, 0x41]);
        let four = normalize_avcc(two, 2).unwrap();
        assert_eq!(&four[..], &[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41]);
        let same = normalize_avcc(four.clone(), 4).unwrap();
        assert_eq!(same.as_ptr(), four.as_ptr());
    }
}
