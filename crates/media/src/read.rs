//! Bounds-checked cursors over untrusted bytes: every read returns an error instead of panicking.

use crate::MediaError;

/// A forward-only cursor over bytes that reports truncation as [`MediaError::Truncated`].
#[derive(Debug)]
pub(crate) struct ByteReader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    /// Starts reading `data`; `what` names the structure in errors.
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, what }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len()
    }

    /// Everything not yet read, consuming it.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], MediaError> {
        match self.data.split_at_checked(n) {
            Some((head, tail)) => {
                self.data = tail;
                Ok(head)
            }
            None => Err(MediaError::Truncated {
                what: self.what,
                needed: n,
                available: self.data.len(),
            }),
        }
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], MediaError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, MediaError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    /// A big-endian 16-bit integer.
    pub(crate) fn u16(&mut self) -> Result<u16, MediaError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian unsigned integer of `size` bytes (1 to 4).
    pub(crate) fn uint(&mut self, size: usize) -> Result<u32, MediaError> {
        if !(1..=4).contains(&size) {
            return Err(MediaError::Unsupported {
                what: "integer size",
                value: u32::try_from(size).unwrap_or(u32::MAX),
            });
        }
        let bytes = self.take(size)?;
        Ok(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
    }
}

/// A most-significant-bit-first reader for bit fields such as AudioSpecificConfig and ADTS.
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
    what: &'static str,
}

impl<'a> BitReader<'a> {
    /// Starts reading `data` at its first bit; `what` names the structure in errors.
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, bit: 0, what }
    }

    /// Reads `count` bits (at most 32) as an unsigned integer.
    pub(crate) fn bits(&mut self, count: u32) -> Result<u32, MediaError> {
        let mut value = 0u32;
        for _ in 0..count.min(32) {
            let byte = self.data.get(self.bit / 8).ok_or(MediaError::Truncated {
                what: self.what,
                needed: 1,
                available: 0,
            })?;
            let shift = 7 - (self.bit % 8);
            value = (value << 1) | u32::from((byte >> shift) & 1);
            self.bit += 1;
        }
        Ok(value)
    }

    /// Reads one flag bit.
    pub(crate) fn flag(&mut self) -> Result<bool, MediaError> {
        Ok(self.bits(1)? == 1)
    }

    /// Reads an unsigned exp-Golomb code (H.264 7.2 `ue(v)`), at most 32 bits of value.
    pub(crate) fn ue(&mut self) -> Result<u32, MediaError> {
        let mut zeros = 0u32;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(MediaError::Invalid {
                    what: self.what,
                    reason: "exp-Golomb code longer than 32 bits",
                });
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// Reads a signed exp-Golomb code (H.264 7.2 `se(v)`).
    pub(crate) fn se(&mut self) -> Result<i64, MediaError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Packs bit fields most-significant-bit first.
#[derive(Debug, Default)]
pub(crate) struct BitWriter {
    out: Vec<u8>,
    bit: usize,
}

impl BitWriter {
    /// Appends the low `count` bits of `value`.
    pub(crate) fn put(&mut self, count: u32, value: u32) {
        for i in (0..count.min(32)).rev() {
            if self.bit.is_multiple_of(8) {
                self.out.push(0);
            }
            let set = (value >> i) & 1 == 1;
            if let Some(last) = self.out.last_mut() {
                if set {
                    *last |= 1 << (7 - (self.bit % 8));
                }
            }
            self.bit += 1;
        }
    }

    /// The bytes written, the last one padded with zero bits.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_reader_reports_truncation() {
        let mut r = ByteReader::new(&[1, 2, 3], "test");
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert!(matches!(
            r.u16(),
            Err(MediaError::Truncated {
                needed: 2,
                available: 1,
                ..
            })
        ));
        assert_eq!(r.uint(1).unwrap(), 3);
        assert!(r.uint(5).is_err());
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn bits_round_trip() {
        let mut w = BitWriter::default();
        w.put(5, 2);
        w.put(4, 4);
        w.put(4, 2);
        w.put(3, 0);
        let bytes = w.finish();
        assert_eq!(bytes, vec![0x12, 0x10]);
        let mut r = BitReader::new(&bytes, "test");
        assert_eq!(r.bits(5).unwrap(), 2);
        assert_eq!(r.bits(4).unwrap(), 4);
        assert_eq!(r.bits(4).unwrap(), 2);
        assert_eq!(r.bits(3).unwrap(), 0);
        assert!(r.bits(1).is_err());
    }
}
