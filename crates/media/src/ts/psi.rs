//! Program-specific information the muxer writes: the PAT and PMT sections and their CRC.

use super::{AUDIO_PID, PMT_PID, STREAM_TYPE_ADTS, STREAM_TYPE_H264, VIDEO_PID};

/// The program number of the one program the muxer writes.
const PROGRAM_NUMBER: u16 = 1;
/// The transport_stream_id written in the PAT.
const TRANSPORT_STREAM_ID: u16 = 1;

/// Which tracks a PMT lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracks {
    /// H.264 on [`VIDEO_PID`].
    pub(crate) video: bool,
    /// AAC on [`AUDIO_PID`].
    pub(crate) audio: bool,
}

impl Tracks {
    /// The PID that carries the PCR: video if there is any, else audio.
    pub(crate) fn pcr_pid(self) -> u16 {
        if self.video || !self.audio {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }
}

/// The CRC-32 of MPEG-2 sections (polynomial 0x04C11DB7, initial value all ones, no
/// reflection, no final xor).
pub(crate) fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Completes a section whose header (table id and length placeholder) and body are in
/// `section`: writes section_length and appends the CRC.
fn finish_section(mut section: Vec<u8>) -> Vec<u8> {
    // section_length counts the bytes after the length field, CRC included.
    let length = section.len() - 3 + 4;
    let [hi, lo] = u16::try_from(length).unwrap_or(0).to_be_bytes();
    if let Some(b) = section.get_mut(1) {
        *b = 0xb0 | (hi & 0x0f);
    }
    if let Some(b) = section.get_mut(2) {
        *b = lo;
    }
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    section
}

/// The PAT section: program [`PROGRAM_NUMBER`] on [`PMT_PID`].
pub(crate) fn pat_section() -> Vec<u8> {
    let mut s = vec![0x00, 0, 0];
    s.extend_from_slice(&TRANSPORT_STREAM_ID.to_be_bytes());
    s.push(0xc1); // version 0, current
    s.extend_from_slice(&[0, 0]); // section 0 of 0
    s.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
    s.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
    finish_section(s)
}

/// The PMT section for `tracks` with `version` (0..32).
pub(crate) fn pmt_section(tracks: Tracks, version: u8) -> Vec<u8> {
    let mut s = vec![0x02, 0, 0];
    s.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
    s.push(0xc1 | ((version & 0x1f) << 1));
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(&(0xe000 | tracks.pcr_pid()).to_be_bytes());
    s.extend_from_slice(&[0xf0, 0x00]); // no program descriptors
    let mut stream = |stream_type: u8, pid: u16| {
        s.push(stream_type);
        s.extend_from_slice(&(0xe000 | pid).to_be_bytes());
        s.extend_from_slice(&[0xf0, 0x00]);
    };
    if tracks.video {
        stream(STREAM_TYPE_H264, VIDEO_PID);
    }
    if tracks.audio {
        stream(STREAM_TYPE_ADTS, AUDIO_PID);
    }
    finish_section(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        // The CRC-32/MPEG-2 check value of "123456789".
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        // A section followed by its own CRC checks to zero.
        let pat = pat_section();
        assert_eq!(crc32_mpeg2(&pat), 0);
        let pmt = pmt_section(
            Tracks {
                video: true,
                audio: true,
            },
            3,
        );
        assert_eq!(crc32_mpeg2(&pmt), 0);
        assert_eq!(pmt.len(), 3 + 9 + 2 * 5 + 4);
    }

    #[test]
    fn pcr_follows_video_when_present() {
        let t = |video, audio| Tracks { video, audio };
        assert_eq!(t(true, true).pcr_pid(), VIDEO_PID);
        assert_eq!(t(false, true).pcr_pid(), AUDIO_PID);
        assert_eq!(t(true, false).pcr_pid(), VIDEO_PID);
    }
}
