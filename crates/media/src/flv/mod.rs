//! FLV video and audio tag bodies (what RTMP video and audio messages carry) to and from
//! [`crate::Frame`] and the stream configs.
//!
//! FLV timestamps are milliseconds; frames carry [`crate::CLOCK_HZ`] ticks. Parsing takes the
//! message timestamp as the decoding time and adds the AVC composition offset for the
//! presentation time; writing gives back the decoding time through [`timestamp_ms`] and the
//! offset, in milliseconds, inside the body.

mod audio;
mod video;

pub use audio::{aac_sequence_header_body, audio_body, parse_audio, FlvAudio};
pub use video::{avc_sequence_header_body, parse_video, video_body, FlvVideo};

use crate::read::ByteReader;
use crate::{ticks_to_ms, AvcConfig, Frame, MediaError};

/// The FLV CodecID of H.264 / AVC.
pub const CODEC_ID_AVC: u8 = 7;

/// The FLV SoundFormat of AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;

/// The FLV message timestamp (milliseconds) for a frame: its decoding time, wrapped to 32
/// bits as RTMP timestamps are.
pub fn timestamp_ms(frame: &Frame) -> u32 {
    let ms = ticks_to_ms(frame.dts).rem_euclid(1 << 32);
    u32::try_from(ms).unwrap_or(0)
}

/// The FLV tag type of audio.
pub const TAG_AUDIO: u8 = 8;

/// The FLV tag type of video.
pub const TAG_VIDEO: u8 = 9;

/// One tag of an FLV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTag<'a> {
    /// [`TAG_AUDIO`], [`TAG_VIDEO`], or 18 (script data).
    pub kind: u8,
    /// The tag's timestamp in milliseconds (its decoding time).
    pub timestamp_ms: u32,
    /// The tag body, as RTMP messages carry it.
    pub body: &'a [u8],
}

/// The tags of an FLV file (header, then tags each followed by its size), in order; a
/// file that is not FLV, or is cut inside a tag, ends with an error.
pub fn file_tags(file: &[u8]) -> FileTags<'_> {
    FileTags {
        r: ByteReader::new(file, "FLV file"),
        started: false,
        failed: false,
    }
}

/// The iterator of [`file_tags`].
#[derive(Debug)]
pub struct FileTags<'a> {
    r: ByteReader<'a>,
    started: bool,
    failed: bool,
}

impl<'a> Iterator for FileTags<'a> {
    type Item = Result<FileTag<'a>, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            if let Err(e) = self.read_header() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        if self.failed || self.r.remaining() == 0 {
            return None;
        }
        let tag = self.read_tag();
        self.failed = tag.is_err();
        Some(tag)
    }
}

impl<'a> FileTags<'a> {
    fn read_header(&mut self) -> Result<(), MediaError> {
        if self.r.take(9)?.get(..3) != Some(b"FLV") {
            return Err(MediaError::Invalid {
                what: "FLV file",
                reason: "no FLV signature",
            });
        }
        self.r.take(4)?; // the first previous tag size
        Ok(())
    }

    fn read_tag(&mut self) -> Result<FileTag<'a>, MediaError> {
        let r = &mut self.r;
        let kind = r.u8()?;
        let size = r.uint(3)? as usize;
        let low = r.uint(3)?;
        let high = r.u8()?;
        r.take(3)?; // stream id
        let body = r.take(size)?;
        r.take(4)?; // previous tag size
        Ok(FileTag {
            kind,
            timestamp_ms: u32::from(high) << 24 | low,
            body,
        })
    }
}

/// The H.264 configuration (the last sequence header) and the video frames, in decoding
/// order, of an FLV file: what recordings and test fixtures hold.
pub fn file_video(file: &[u8]) -> Result<(Option<AvcConfig>, Vec<Frame>), MediaError> {
    let mut config = None;
    let mut frames = Vec::new();
    for tag in file_tags(file) {
        let tag = tag?;
        if tag.kind != TAG_VIDEO {
            continue;
        }
        match parse_video(tag.timestamp_ms, bytes::Bytes::copy_from_slice(tag.body))? {
            FlvVideo::Config(c) => config = Some(c),
            FlvVideo::Frame(f) => frames.push(f),
            _ => {}
        }
    }
    Ok((config, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_tags_reads_each_tag_and_stops_at_damage() {
        let mut file = b"FLV\x01\x01\0\0\0\x09\0\0\0\0".to_vec();
        for (kind, ts, body) in [(9u8, 0x0100_0002u32, &b"abc"[..]), (8, 40, &b"de"[..])] {
            file.push(kind);
            file.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            file.extend_from_slice(&(ts & 0xff_ffff).to_be_bytes()[1..]);
            file.push((ts >> 24) as u8);
            file.extend_from_slice(&[0, 0, 0]);
            file.extend_from_slice(body);
            file.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        let tags: Vec<FileTag<'_>> = file_tags(&file).map(Result::unwrap).collect();
        assert_eq!(
            tags,
            [
                FileTag {
                    kind: 9,
                    timestamp_ms: 0x0100_0002,
                    body: b"abc"
                },
                FileTag {
                    kind: 8,
                    timestamp_ms: 40,
                    body: b"de"
                },
            ]
        );
        let cut: Vec<_> = file_tags(&file[..file.len() - 3]).collect();
        assert_eq!(cut.len(), 2);
        assert!(cut[1].is_err());
        assert!(file_tags(b"GIF89a...").next().unwrap().is_err());
        assert_eq!(file_tags(&file[..13]).count(), 0, "a header alone: no tag");
        assert!(file_tags(&file[..12]).next().unwrap().is_err());
    }
}
