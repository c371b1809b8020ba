//! The stream a native publisher sends: a short real H.264 + AAC clip looped, so that ffmpeg
//! viewers can decode it, with every video frame led by a filler-data NAL unit (which decoders
//! ignore) that carries a marker with the frame's sequence number and send time, and pads the
//! frame to the asked bit rate. Viewers read the marker to measure latency and count lost frames.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Marker at the start of the filler NAL's payload.
pub const MARKER: &[u8; 4] = b"SGLT";
/// Offset of the marker in an FLV video body: 5 bytes of FLV AVC header, the 4-byte NAL length
/// and the 1-byte NAL header.
pub const MARKER_OFFSET: usize = 10;
/// Marker, sequence and send time, written as hexadecimal text so that the NAL payload never
/// holds a `00 00 0x` run, which Annex-B (MPEG-TS) would take for a start code.
const MARKER_LEN: usize = 4 + 8 + 16;
/// Filler NAL bytes besides its padding: header, marker with its fields, trailing byte.
const FILLER_OVERHEAD: usize = 1 + MARKER_LEN + 1;
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
        let pad = self
            .video_target
            .saturating_sub(body.len() + 4 + FILLER_OVERHEAD);
        let filler_len = FILLER_OVERHEAD + pad;
        let mut b = BytesMut::with_capacity(body.len() + 4 + filler_len);
        b.put_slice(body.get(..5).unwrap_or_default());
        b.put_u32(filler_len as u32);
        b.put_u8(0x0C); // NAL type 12: filler data
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
    let (seq, sent) = parse_marker(body.get(MARKER_OFFSET..)?)?;
    Some((seq, sent, key))
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
/// filler NAL unit sits among the frame's NAL units: (sequence, send time µs).
pub fn find_marker_avcc(payload: &[u8]) -> Option<(u32, u64)> {
    let mut rest = payload;
    while let Some(len) = rest.get(..4) {
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let nal = rest.get(4..4 + len)?;
        if nal.first().map(|h| h & 0x1F) == Some(12) {
            if let Some(m) = nal.get(1..).and_then(parse_marker) {
                return Some(m);
            }
        }
        rest = rest.get(4 + len..)?;
    }
    None
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
        let filler = &avcc[4..4 + 30];
        assert!(
            !filler
                .windows(3)
                .any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 3),
            "no start-code emulation"
        );
        assert_eq!(find_marker_avcc(&avcc[..20]), None);
    }
}
