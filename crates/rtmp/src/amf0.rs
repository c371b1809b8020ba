//! A bounded AMF0 decoder for what clients send: command and data messages.
//!
//! The AMF0 decoder of `rml_amf0` recurses without a depth limit and allocates as the input
//! asks, so one crafted message could overflow a runtime worker's stack or ask for gigabytes.
//! This one limits nesting to [`MAX_DEPTH`] and the number of values to [`MAX_VALUES`], never
//! reserves more than the input can fill, and returns an error instead of panicking. It yields
//! `rml_amf0`'s value type, whose serialiser (of values we build ourselves) we keep using.

use std::collections::HashMap;

use rml_amf0::Amf0Value;

/// Deepest nesting of objects and arrays accepted (a `connect` command has 1, metadata 1 or 2).
pub const MAX_DEPTH: usize = 16;
/// Most values (nested ones included) one message may hold.
pub const MAX_VALUES: usize = 4096;

mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const UNSUPPORTED: u8 = 0x0D;
    pub const XML_DOCUMENT: u8 = 0x0F;
    pub const TYPED_OBJECT: u8 = 0x10;
}

/// Why an AMF0 payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    /// The payload ends inside a value.
    #[error("AMF0 value cut short")]
    Truncated,
    /// Objects or arrays nest deeper than [`MAX_DEPTH`].
    #[error("AMF0 values nest deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More than [`MAX_VALUES`] values.
    #[error("more than {MAX_VALUES} AMF0 values")]
    TooManyValues,
    /// A type marker this server does not take (references, AMF3, movie clips...).
    #[error("unsupported AMF0 type marker {0:#04x}")]
    Unsupported(u8),
}

/// Decodes every value of `data`, in order.
pub fn decode_all(data: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut d = Decoder {
        input: data,
        values: 0,
    };
    let mut out = Vec::new();
    while !d.input.is_empty() {
        out.push(d.value(0)?);
    }
    Ok(out)
}

struct Decoder<'a> {
    input: &'a [u8],
    values: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Amf0Error> {
        if self.input.len() < n {
            return Err(Amf0Error::Truncated);
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes(
            b.try_into().map_err(|_| Amf0Error::Truncated)?,
        ))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(
            b.try_into().map_err(|_| Amf0Error::Truncated)?,
        ))
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        let b = self.take(8)?;
        Ok(f64::from_be_bytes(
            b.try_into().map_err(|_| Amf0Error::Truncated)?,
        ))
    }

    fn string(&mut self, len: usize) -> Result<String, Amf0Error> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let len = usize::from(self.u16()?);
        self.string(len)
    }

    fn long_string(&mut self) -> Result<String, Amf0Error> {
        let len = usize::try_from(self.u32()?).map_err(|_| Amf0Error::Truncated)?;
        self.string(len)
    }

    fn count_value(&mut self) -> Result<(), Amf0Error> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(Amf0Error::TooManyValues);
        }
        Ok(())
    }

    /// One value at nesting level `depth`.
    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        self.count_value()?;
        let m = self.u8()?;
        Ok(match m {
            marker::NUMBER => Amf0Value::Number(self.f64()?),
            marker::BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            marker::STRING => Amf0Value::Utf8String(self.short_string()?),
            marker::LONG_STRING | marker::XML_DOCUMENT => {
                Amf0Value::Utf8String(self.long_string()?)
            }
            marker::NULL => Amf0Value::Null,
            marker::UNDEFINED | marker::UNSUPPORTED => Amf0Value::Undefined,
            marker::DATE => {
                let ms = self.f64()?;
                self.take(2)?; // time zone, unused by the format's own definition
                Amf0Value::Number(ms)
            }
            marker::OBJECT => Amf0Value::Object(self.properties(depth + 1)?),
            marker::TYPED_OBJECT => {
                self.short_string()?; // class name
                Amf0Value::Object(self.properties(depth + 1)?)
            }
            marker::ECMA_ARRAY => {
                self.u32()?; // a count hint, which the end marker overrides
                Amf0Value::Object(self.properties(depth + 1)?)
            }
            marker::STRICT_ARRAY => {
                let depth = depth + 1;
                if depth > MAX_DEPTH {
                    return Err(Amf0Error::TooDeep);
                }
                let count = usize::try_from(self.u32()?).map_err(|_| Amf0Error::Truncated)?;
                // Every value takes at least one byte: a count beyond the input is a lie.
                if count > self.input.len() {
                    return Err(Amf0Error::Truncated);
                }
                let mut items = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    items.push(self.value(depth)?);
                }
                Amf0Value::StrictArray(items)
            }
            other => return Err(Amf0Error::Unsupported(other)),
        })
    }

    /// Key/value pairs up to the object end marker, for an object at level `depth`.
    fn properties(&mut self, depth: usize) -> Result<HashMap<String, Amf0Value>, Amf0Error> {
        if depth > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        let mut props = HashMap::new();
        loop {
            let key = self.short_string()?;
            if key.is_empty() && self.input.first() == Some(&marker::OBJECT_END) {
                self.take(1)?;
                return Ok(props);
            }
            let value = self.value(depth)?;
            props.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(values: Vec<Amf0Value>) {
        let bytes = rml_amf0::serialize(&values).unwrap();
        assert_eq!(decode_all(&bytes).unwrap(), values);
    }

    #[test]
    fn decodes_what_clients_send() {
        let mut props = HashMap::new();
        props.insert("app".to_owned(), Amf0Value::Utf8String("live".into()));
        props.insert(
            "tcUrl".to_owned(),
            Amf0Value::Utf8String("rtmp://h/live".into()),
        );
        props.insert("fpad".to_owned(), Amf0Value::Boolean(false));
        props.insert("audioCodecs".to_owned(), Amf0Value::Number(4071.0));
        roundtrip(vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(props),
        ]);
        roundtrip(vec![
            Amf0Value::Utf8String("publish".into()),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            Amf0Value::Utf8String("cam1?token=x".into()),
            Amf0Value::Utf8String("live".into()),
        ]);
        roundtrip(vec![Amf0Value::StrictArray(vec![
            Amf0Value::Number(1.0),
            Amf0Value::Undefined,
        ])]);
    }

    #[test]
    fn ecma_arrays_dates_and_long_strings() {
        // ffmpeg's onMetaData: an ECMA array with a count hint and the end marker.
        let mut b = vec![marker::STRING, 0, 10];
        b.extend_from_slice(b"onMetaData");
        b.extend_from_slice(&[marker::ECMA_ARRAY, 0, 0, 0, 1, 0, 5]);
        b.extend_from_slice(b"width");
        b.push(marker::NUMBER);
        b.extend_from_slice(&1280f64.to_be_bytes());
        b.extend_from_slice(&[0, 0, marker::OBJECT_END]);
        b.push(marker::DATE);
        b.extend_from_slice(&5f64.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&[marker::LONG_STRING, 0, 0, 0, 2, b'h', b'i']);
        let v = decode_all(&b).unwrap();
        assert_eq!(v.len(), 4);
        let Amf0Value::Object(meta) = &v[1] else {
            panic!("not an object: {v:?}")
        };
        assert_eq!(meta.get("width"), Some(&Amf0Value::Number(1280.0)));
        assert_eq!(v[2], Amf0Value::Number(5.0));
        assert_eq!(v[3], Amf0Value::Utf8String("hi".into()));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing_far() {
        // An object holding an object holding ... a million levels deep: what overflowed a
        // worker's stack in the unbounded decoder.
        let mut b = Vec::new();
        for _ in 0..1_000_000 {
            b.extend_from_slice(&[marker::OBJECT, 0, 1, b'a']);
        }
        assert_eq!(decode_all(&b), Err(Amf0Error::TooDeep));
        let mut arrays = Vec::new();
        for _ in 0..100_000 {
            arrays.extend_from_slice(&[marker::STRICT_ARRAY, 0, 0, 0, 1]);
        }
        assert_eq!(decode_all(&arrays), Err(Amf0Error::TooDeep));
    }

    #[test]
    fn value_counts_and_lying_lengths_are_bounded() {
        let nulls = vec![marker::NULL; MAX_VALUES + 1];
        assert_eq!(decode_all(&nulls), Err(Amf0Error::TooManyValues));
        assert_eq!(decode_all(&nulls[..MAX_VALUES]).unwrap().len(), MAX_VALUES);
        // A strict array that claims four billion items, and strings longer than the input.
        let huge = [marker::STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, marker::NULL];
        assert_eq!(decode_all(&huge), Err(Amf0Error::Truncated));
        assert_eq!(
            decode_all(&[marker::STRING, 0xFF, 0xFF, b'a']),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(
            decode_all(&[marker::LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(decode_all(&[0x07, 0, 1]), Err(Amf0Error::Unsupported(0x07)));
        assert_eq!(decode_all(&[0x11]), Err(Amf0Error::Unsupported(0x11)));
        assert_eq!(
            decode_all(&[marker::OBJECT, 0, 1]),
            Err(Amf0Error::Truncated)
        );
    }
}
