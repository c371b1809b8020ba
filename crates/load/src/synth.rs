//! The stream a native publisher sends: a short real H.264 + AAC clip looped, so that ffmpeg
//! viewers can decode it, with every video frame led by an SEI NAL unit of unregistered user
//! data (which decoders ignore) that carries a marker with the frame's sequence number and
//! send time, and pads the frame to the asked bit rate. Viewers read the marker to measure
//! latency and count lost frames. SEI rather than filler data: WebRTC's H.264 packetizers drop
//! filler NAL units (and with them the marker and the padding).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Marker at the start of the user data, after the UUID.
pub const MARKER: &[u8; 4] = b"SGLT";
/// The UUID of the user data (text, like every byte of the SEI, so that the NAL payload never
/// holds a `00 00 0x` run, which Annex-B (MPEG-TS) would take for a start code).
const UUID: &[u8; 16] = b"streamgate-stamp";
/// Marker, sequence and send time, written as hexadecimal text.
const MARKER_LEN: usize = 4 + 8 + 16;
/// NAL type of SEI, and the SEI payload type of unregistered user data.
const NAL_SEI: u8 = 6;
const USER_DATA_UNREGISTERED: u8 = 5;
/// SEI NAL bytes besides its padding and its payload size: NAL header, payload type, UUID,
/// marker with its fields, trailing byte.
const SEI_OVERHEAD: usize = 1 + 1 + UUID.len() + MARKER_LEN + 1;
/// Video frames per second of the clip.
pub const FPS: u32 = 25;
/// Audio frames per second of the clip (AAC at 44.1 kHz, 1024 samples a frame).
pub const AUDIO_FPS: f64 = 44_100.0 / 1024.0;

const CLIP: &[u8] = include_bytes!("../assets/clip.flv");

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The looped clip: sequence headers and the frames' FLV bodies.
#[derive(Debug, Clone)]
pub struct Clip {
    /// AVC sequence header (FLV body).
    pub avc_header: Bytes,
    /// AAC sequence header (FLV body).
    pub aac_header: Bytes,
    /// Video frames: FLV bodies and keyframe flags.
    pub video: Vec<(Bytes, bool)>,
    /// Audio frames: FLV bodies.
    pub audio: Vec<Bytes>,
    /// Bytes each video frame is padded to (at least its own size).
    pub video_target: usize,
}

impl Clip {
    /// Reads the bundled clip and sizes frames for `kbps` in all.
    pub fn load(kbps: u32) -> Result<Self, String> {
        let mut clip = Self {
            avc_header: Bytes::new(),
            aac_header: Bytes::new(),
            video: Vec::new(),
            audio: Vec::new(),
            video_target: 0,
        };
        let data = Bytes::from_static(CLIP);
        let mut at = 13; // FLV header (9) and the first previous-tag-size (4)
        while let Some(&[kind, s0, s1, s2]) = data.get(at..at + 4) {
            let size = usize::from(s0) << 16 | usize::from(s1) << 8 | usize::from(s2);
            let body = data.slice((at + 11).min(data.len())..(at + 11 + size).min(data.len()));
            at += 11 + size + 4;
            let key = body.first().is_some_and(|b| b >> 4 == 1);
            match (kind, body.get(1)) {
                (9, Some(0)) => clip.avc_header = body,
                (9, Some(1)) => clip.video.push((body, key)),
                (8, Some(0)) => clip.aac_header = body,
                (8, Some(1)) => clip.audio.push(body),
                _ => {}
            }
        }
        if clip.video.is_empty() || clip.audio.is_empty() || clip.avc_header.is_empty() {
            return Err("the bundled clip is unreadable".into());
        }
        let audio_bytes: usize = clip.audio.iter().map(Bytes::len).sum();
        let audio_kbps = audio_bytes as f64 * 8.0 / 1000.0 / (clip.audio.len() as f64 / AUDIO_FPS);
        let video_kbps = (f64::from(kbps) - audio_kbps).max(16.0);
        clip.video_target = (video_kbps * 1000.0 / 8.0 / f64::from(FPS)) as usize;
        Ok(clip)
    }

    /// Video frame `seq` as an FLV body, led by the marker NAL.
    pub fn video_frame(&self, seq: u32) -> (Bytes, bool) {
        let Some((body, key)) = self.video.get(seq as usize % self.video.len().max(1)) else {
            return (Bytes::new(), false);
        };
        // The SEI NAL's length, whose payload size takes a byte per 255.
        let want = self.video_target.saturating_sub(body.len() + 4);
        let mut pad = want.saturating_sub(SEI_OVERHEAD + 1);
        let size_bytes = |pad: usize| (UUID.len() + MARKER_LEN + pad) / 255 + 1;
        while pad > 0 && SEI_OVERHEAD + size_bytes(pad) + pad > want {
            pad -= 1;
        }
        let sei_len = SEI_OVERHEAD + size_bytes(pad) + pad;
        let mut b = BytesMut::with_capacity(body.len() + 4 + sei_len);
        b.put_slice(body.get(..5).unwrap_or_default());
        b.put_u32(sei_len as u32);
        b.put_u8(NAL_SEI);
        b.put_u8(USER_DATA_UNREGISTERED);
        let mut size = UUID.len() + MARKER_LEN + pad;
        while size >= 255 {
            b.put_u8(0xFF);
            size -= 255;
        }
        b.put_u8(size as u8);
        b.put_slice(UUID);
        b.put_slice(MARKER);
        b.put_slice(format!("{seq:08x}{:016x}", now_us()).as_bytes());
        b.put_bytes(0xFF, pad);
        b.put_u8(0x80);
        b.put_slice(body.get(5..).unwrap_or_default());
        (b.freeze(), *key)
    }

    /// Audio frame `n` as an FLV body.
    pub fn audio_frame(&self, n: u64) -> Bytes {
        let i = (n % self.audio.len().max(1) as u64) as usize;
        self.audio.get(i).cloned().unwrap_or_default()
    }
}

/// What a viewer reads back from a video body: (sequence, send time µs, keyframe).
pub fn read_marker(body: &[u8]) -> Option<(u32, u64, bool)> {
    let key = body.first()? >> 4 == 1;
    if body.get(1) != Some(&1) {
        return None;
    }
    let (seq, sent) = find_marker_avcc(body.get(5..)?)?;
    Some((seq, sent, key))
}

/// The marker in an SEI NAL unit, given the bytes after its NAL header (the first SEI
/// message, if it is our user data).
fn parse_sei(rbsp: &[u8]) -> Option<(u32, u64)> {
    if *rbsp.first()? != USER_DATA_UNREGISTERED {
        return None;
    }
    let size_bytes = rbsp.get(1..)?.iter().take_while(|&&b| b == 0xFF).count() + 1;
    let data = rbsp.get(1 + size_bytes..)?;
    if data.get(..UUID.len())? != UUID {
        return None;
    }
    parse_marker(data.get(UUID.len()..)?)
}

/// Reads a marker at the start of `m`.
fn parse_marker(m: &[u8]) -> Option<(u32, u64)> {
    if m.get(..4)? != MARKER {
        return None;
    }
    let seq = u32::from_str_radix(std::str::from_utf8(m.get(4..12)?).ok()?, 16).ok()?;
    let sent = u64::from_str_radix(std::str::from_utf8(m.get(12..MARKER_LEN)?).ok()?, 16).ok()?;
    Some((seq, sent))
}

/// Every marker in `data` (a fragmented MP4 segment, say), in order: (sequence, send time µs).
pub fn find_markers(data: &[u8]) -> impl Iterator<Item = (u32, u64)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || loop {
        let rest = data.get(at..)?;
        let found = rest.windows(MARKER.len()).position(|w| w == MARKER)?;
        at += found + 1;
        if let Some(m) = rest.get(found..).and_then(parse_marker) {
            return Some(m);
        }
    })
}

/// The marker of a frame payload in AVCC form (as the MPEG-TS demuxer gives it), wherever the
/// SEI NAL unit sits among the frame's NAL units: (sequence, send time µs).
pub fn find_marker_avcc(payload: &[u8]) -> Option<(u32, u64)> {
    let mut rest = payload;
    while let Some(len) = rest.get(..4) {
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let nal = rest.get(4..4 + len)?;
        if nal.first().map(|h| h & 0x1F) == Some(NAL_SEI) {
            if let Some(m) = nal.get(1..).and_then(parse_sei) {
                return Some(m);
            }
        }
        rest = rest.get(4 + len..)?;
    }
    None
}

/// The marker in one H.264 RTP payload (RFC 6184), if it carries the start of the SEI NAL
/// unit: a single NAL unit, a STAP-A holding it, or the first fragment of a FU-A.
pub fn find_marker_rtp_h264(payload: &[u8]) -> Option<(u32, u64)> {
    match payload.first()? & 0x1F {
        NAL_SEI => parse_sei(payload.get(1..)?),
        24 => {
            let mut rest = payload.get(1..)?;
            while let Some(&[hi, lo]) = rest.get(..2) {
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                let nal = rest.get(2..2 + len)?;
                if nal.first().map(|h| h & 0x1F) == Some(NAL_SEI) {
                    return parse_sei(nal.get(1..)?);
                }
                rest = rest.get(2 + len..)?;
            }
            None
        }
        28 => {
            let fu = payload.get(1)?;
            (fu & 0x80 != 0 && fu & 0x1F == NAL_SEI)
                .then(|| parse_sei(payload.get(2..)?))
                .flatten()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_frames_carry_markers_at_the_asked_rate() {
        let clip = Clip::load(1000).unwrap();
        assert_eq!(clip.video.len(), 50);
        assert!(clip.video[0].1 && !clip.video[1].1);
        let (b, key) = clip.video_frame(50);
        assert!(key);
        let (seq, sent, k) = read_marker(&b).unwrap();
        assert_eq!((seq, k), (50, true));
        assert!(now_us() - sent < 1_000_000);
        let total: usize = (0..50).map(|i| clip.video_frame(i).0.len()).sum();
        let kbps = total as f64 * 8.0 / 1000.0 / 2.0;
        assert!((900.0..1100.0).contains(&kbps), "{kbps}");
        assert!(read_marker(&clip.audio_frame(3)).is_none());
        let avcc = b.get(5..).unwrap();
        assert_eq!(find_marker_avcc(avcc).map(|m| m.0), Some(50));
        let two = [clip.video_frame(7).0, clip.video_frame(8).0].concat();
        let seqs: Vec<u32> = find_markers(&two).map(|m| m.0).collect();
        assert_eq!(seqs, vec![7, 8]);
        let nal_len = u32::from_be_bytes(avcc[..4].try_into().unwrap()) as usize;
        let nal = &avcc[4..4 + nal_len];
        assert_eq!(nal[0] & 0x1F, NAL_SEI);
        assert!(
            !nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 3),
            "no start-code emulation"
        );
        assert_eq!(find_marker_avcc(&avcc[..20]), None);
        // Padding of every size codes its SEI payload size right.
        for kbps in [100, 500, 2500, 8000] {
            let clip = Clip::load(kbps).unwrap();
            for i in 0..50 {
                let (b, _) = clip.video_frame(i);
                assert_eq!(
                    read_marker(&b).map(|m| m.0),
                    Some(i),
                    "{kbps} kbit/s, frame {i}"
                );
            }
        }

        // The SEI NAL in RTP: alone, in a STAP-A, and fragmented.
        assert_eq!(find_marker_rtp_h264(nal).map(|m| m.0), Some(50));
        let mut stap = vec![24u8, 0, 2, 0x09, 0x10];
        stap.extend_from_slice(&u16::try_from(nal.len()).unwrap().to_be_bytes());
        stap.extend_from_slice(nal);
        assert_eq!(find_marker_rtp_h264(&stap).map(|m| m.0), Some(50));
        let mut first = vec![(nal[0] & 0xE0) | 28, 0x80 | NAL_SEI];
        first.extend_from_slice(&nal[1..100]);
        assert_eq!(find_marker_rtp_h264(&first).map(|m| m.0), Some(50));
        first[1] = NAL_SEI;
        assert_eq!(find_marker_rtp_h264(&first), None, "not the first fragment");
        assert_eq!(find_marker_rtp_h264(&[]), None);
    }
}
