//! What a connection's packets must look like before srt-protocol sees them.
//!
//! srt-protocol 0.4.4 panics, or works without bound, on packets a peer can craft for an open
//! connection: a congestion warning or a peer error (`todo!()`), an SRT control packet other
//! than keying material, keying material that wraps no key, a drop request whose range runs
//! backwards, a NAK whose last range is open, runs backwards or ends where it starts (and
//! whose ranges it walks number by number), an ACK whose round-trip figures overflow its
//! arithmetic (in debug builds). This module reads the header and the body of every control
//! packet and lets through only what srt-protocol handles, bounded ([`check`]); the parser then
//! runs on what passed, and still behind `catch_unwind`, so that anything this list misses ends
//! one connection, not the process.

use srt_protocol::packet::KeyingMaterialMessage;

/// Sequence numbers are 31 bits.
const SEQ_MASK: u32 = 0x7FFF_FFFF;
/// The widest range a NAK or a drop request may name, and the most numbers one NAK may name
/// in all: a connection's send buffer holds fewer packets.
pub const MAX_RANGE: u32 = 16_384;
/// Round-trip figures above this (µs) are not believed.
const MAX_RTT_MICROS: i32 = 10_000_000;

/// Control packet types (the 15 bits after the control bit).
const KEEPALIVE: u16 = 0x1;
const ACK: u16 = 0x2;
const NAK: u16 = 0x3;
const SHUTDOWN: u16 = 0x5;
const ACKACK: u16 = 0x6;
const DROP_REQUEST: u16 = 0x7;
const SRT: u16 = 0x7FFF;
/// SRT control subtypes that an open connection takes: keying material request and response.
const SRT_KMREQ: u16 = 3;
const SRT_KMRSP: u16 = 4;

/// Why a packet is kept from srt-protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Shorter than an SRT header, or than its body needs.
    #[error("truncated packet")]
    Truncated,
    /// A control type an open connection does not take (handshakes go elsewhere).
    #[error("unexpected control type")]
    Type,
    /// Numbers out of range or running backwards.
    #[error("malformed numbers")]
    Numbers,
    /// Keying material that does not wrap a key.
    #[error("malformed keying material")]
    KeyMaterial,
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(w))
}

/// The distance from `from` to `to`, if `to` is not before `from`. Ranges across the
/// sequence numbers' wrap are refused with the backwards ones: srt-protocol indexes its
/// buffers with them as plain numbers (at most one range in 2^31 packets is lost this way:
/// its packets are waited for, then dropped late, as any lost packet).
fn forward(from: u32, to: u32) -> Option<u32> {
    to.checked_sub(from)
}

/// Checks an SRT packet for an open connection; data packets always pass.
pub fn check(packet: &[u8]) -> Result<(), Refused> {
    let first = word(packet, 0).ok_or(Refused::Truncated)?;
    if packet.len() < 16 {
        return Err(Refused::Truncated);
    }
    if first & 0x8000_0000 == 0 {
        return Ok(());
    }
    let kind = ((first >> 16) & 0x7FFF) as u16;
    let subtype = (first & 0xFFFF) as u16;
    let info = word(packet, 4).ok_or(Refused::Truncated)?;
    let body = packet.get(16..).unwrap_or_default();
    match kind {
        KEEPALIVE | SHUTDOWN => Ok(()),
        ACK => check_ack(info, body),
        ACKACK => {
            if info == 0 || info > SEQ_MASK {
                return Err(Refused::Numbers);
            }
            Ok(())
        }
        NAK => check_nak(body),
        DROP_REQUEST => {
            let (Some(start), Some(end)) = (word(body, 0), word(body, 4)) else {
                return Err(Refused::Truncated);
            };
            if start > SEQ_MASK || end > SEQ_MASK {
                return Err(Refused::Numbers);
            }
            match forward(start, end) {
                Some(d) if d < MAX_RANGE => Ok(()),
                _ => Err(Refused::Numbers),
            }
        }
        SRT if matches!(subtype, SRT_KMREQ | SRT_KMRSP) => {
            let mut b = body;
            let km = KeyingMaterialMessage::parse(&mut b).map_err(|_| Refused::KeyMaterial)?;
            if km.key_flags.is_empty() || km.salt.len() != 16 {
                return Err(Refused::KeyMaterial);
            }
            Ok(())
        }
        // Handshakes (answered by the listener), congestion warnings, peer errors, other SRT
        // control packets and unknown types.
        _ => Err(Refused::Type),
    }
}

fn check_ack(full_ack: u32, body: &[u8]) -> Result<(), Refused> {
    let seq = word(body, 0).ok_or(Refused::Truncated)?;
    if seq > SEQ_MASK || full_ack > SEQ_MASK {
        return Err(Refused::Numbers);
    }
    if body.len() >= 16 {
        let rtt = word(body, 4).ok_or(Refused::Truncated)? as i32;
        let var = word(body, 8).ok_or(Refused::Truncated)? as i32;
        if !(0..=MAX_RTT_MICROS).contains(&rtt) || !(0..=MAX_RTT_MICROS).contains(&var) {
            return Err(Refused::Numbers);
        }
    }
    Ok(())
}

fn check_nak(body: &[u8]) -> Result<(), Refused> {
    let mut words = body
        .chunks_exact(4)
        .filter_map(|w| <[u8; 4]>::try_from(w).ok())
        .map(u32::from_be_bytes);
    let mut named: u32 = 0;
    let mut any = false;
    while let Some(w) = words.next() {
        any = true;
        if w & 0x8000_0000 == 0 {
            named += 1;
        } else {
            // A range: its start (flagged) and its end, not before it.
            let start = w & SEQ_MASK;
            let end = words.next().ok_or(Refused::Numbers)?;
            if end > SEQ_MASK {
                return Err(Refused::Numbers);
            }
            // A range ends after its start: srt-protocol walks one whose end is its start
            // from start + 1 on through every 32-bit number until it comes round (about 30 s
            // of the engine's thread, found by the srt_datagrams fuzz target).
            let d = forward(start, end)
                .filter(|d| *d > 0)
                .ok_or(Refused::Numbers)?;
            named = named.saturating_add(d + 1);
        }
        if named > MAX_RANGE {
            return Err(Refused::Numbers);
        }
    }
    if !any {
        return Err(Refused::Truncated);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(kind: u16, subtype: u16, info: u32, body: &[u32]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend((0x8000_0000 | u32::from(kind) << 16 | u32::from(subtype)).to_be_bytes());
        p.extend(info.to_be_bytes());
        p.extend(0u32.to_be_bytes());
        p.extend(7u32.to_be_bytes());
        for w in body {
            p.extend(w.to_be_bytes());
        }
        p
    }

    #[test]
    fn what_passes_and_what_does_not() {
        let cases: &[(&str, Vec<u8>, bool)] = &[
            ("data", vec![0u8; 16 + 1316], true),
            ("keepalive", control(KEEPALIVE, 0, 0, &[]), true),
            ("shutdown", control(SHUTDOWN, 0, 0, &[]), true),
            ("light ack", control(ACK, 0, 0, &[100]), true),
            (
                "full ack",
                control(ACK, 0, 5, &[100, 20_000, 1_000, 8192, 1000, 5000, 9000]),
                true,
            ),
            (
                "ack with a huge rtt",
                control(ACK, 0, 5, &[100, i32::MAX as u32, 0, 8192]),
                false,
            ),
            (
                "ack with a negative rtt",
                control(ACK, 0, 5, &[100, u32::MAX, 0, 8192]),
                false,
            ),
            (
                "ack of an out-of-range number",
                control(ACK, 0, 0xFFFF_FFFF, &[100]),
                false,
            ),
            ("empty ack", control(ACK, 0, 0, &[]), false),
            ("ackack", control(ACKACK, 0, 5, &[]), true),
            ("ackack zero", control(ACKACK, 0, 0, &[]), false),
            ("nak", control(NAK, 0, 0, &[5, 0x8000_0007, 9, 20]), true),
            (
                "nak open range",
                control(NAK, 0, 0, &[5, 0x8000_0007]),
                false,
            ),
            (
                "nak backwards",
                control(NAK, 0, 0, &[0x8000_0009, 7]),
                false,
            ),
            (
                "nak range ending where it starts",
                control(NAK, 0, 0, &[0x8000_0007, 7]),
                false,
            ),
            (
                "nak range of two",
                control(NAK, 0, 0, &[0x8000_0007, 8]),
                true,
            ),
            (
                "nak too wide",
                control(NAK, 0, 0, &[0x8000_0000, 0x7000_0000]),
                false,
            ),
            (
                "nak across the wrap",
                control(NAK, 0, 0, &[0xFFFF_FFF0, 5]),
                false,
            ),
            ("empty nak", control(NAK, 0, 0, &[]), false),
            ("drop request", control(DROP_REQUEST, 0, 1, &[10, 20]), true),
            (
                "drop request across the wrap",
                control(DROP_REQUEST, 0, 1, &[0x7FFF_FFFF, 0]),
                false,
            ),
            (
                "drop request backwards",
                control(DROP_REQUEST, 0, 1, &[20, 10]),
                false,
            ),
            ("congestion warning", control(0x4, 0, 0, &[]), false),
            ("peer error", control(0x8, 0, 0, &[]), false),
            ("handshake", control(0x0, 0, 0, &[0; 12]), false),
            ("srt reject", control(SRT, 0, 0, &[]), false),
            ("srt group", control(SRT, 8, 0, &[1]), false),
            (
                "srt km without key",
                control(
                    SRT,
                    SRT_KMREQ,
                    0,
                    &[0x1220_2900, 0, 0x0200_0200, 0x0000_0404, 0, 0, 0, 0],
                ),
                false,
            ),
            ("unknown type", control(0x99, 0, 0, &[]), false),
            ("short", vec![0x80, 0, 0, 0], false),
        ];
        for (what, packet, passes) in cases {
            assert_eq!(
                check(packet).is_ok(),
                *passes,
                "{what}: {:?}",
                check(packet)
            );
        }
    }
}
