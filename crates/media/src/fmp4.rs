//! Fragmented MP4 (ISO/IEC 14496-12, as CMAF uses it): the initialization segment of an
//! H.264 and AAC stream, and media fragments (`moof` + `mdat`) of its frames, for HLS and DASH.
//!
//! Track 1 is the video (90 kHz, the [`crate::CLOCK_HZ`] clock), track 2 the sound (its
//! sample rate). Decode times in fragments count from the zero the caller chooses (the
//! stream's first frame); composition offsets are signed (`trun` version 1), as B-frames need.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{sps_picture_size, AacConfig, AvcConfig, Codec, Frame, TrackKind, CLOCK_HZ};

/// The video track's id.
pub const VIDEO_TRACK: u32 = 1;
/// The sound track's id.
pub const AUDIO_TRACK: u32 = 2;

/// Sample flags of a sample every other can be decoded from (`sample_depends_on` 2).
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// Sample flags of a sample that depends on others and is no sync sample.
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// Appends a box: its size, type and what `body` writes.
fn boxed(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&size.to_be_bytes());
    }
}

/// Appends a full box: as [`boxed`], with its version and flags first.
fn full(
    out: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    boxed(out, kind, |out| {
        out.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        body(out);
    });
}

/// The unity transformation matrix of `mvhd` and `tkhd`.
fn matrix(out: &mut BytesMut) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        out.put_u32(v);
    }
}

/// What the initialization segment describes.
#[derive(Debug, Clone, Copy)]
pub struct Tracks<'a> {
    /// The H.264 configuration, if the stream has video.
    pub video: Option<&'a AvcConfig>,
    /// The AAC configuration, if the stream has sound.
    pub audio: Option<&'a AacConfig>,
}

/// The initialization segment (`ftyp` + `moov`) of a stream with `tracks`.
pub fn init_segment(tracks: Tracks<'_>) -> Bytes {
    let mut out = BytesMut::with_capacity(1024);
    boxed(&mut out, b"ftyp", |o| {
        o.put_slice(b"iso6");
        o.put_u32(0);
        for brand in [b"iso6", b"cmfc", b"mp41", b"dash"] {
            o.put_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |o| {
        full(o, b"mvhd", 0, 0, |o| {
            o.put_u32(0); // creation time
            o.put_u32(0); // modification time
            o.put_u32(1000); // timescale
            o.put_u32(0); // duration: unknown (live)
            o.put_u32(0x0001_0000); // rate 1.0
            o.put_u16(0x0100); // volume 1.0
            o.put_u16(0);
            o.put_u64(0);
            matrix(o);
            o.put_bytes(0, 24); // pre_defined
            o.put_u32(AUDIO_TRACK + 1); // next_track_ID
        });
        if let Some(v) = tracks.video {
            video_trak(o, v);
        }
        if let Some(a) = tracks.audio {
            audio_trak(o, a);
        }
        boxed(o, b"mvex", |o| {
            for (present, id) in [
                (tracks.video.is_some(), VIDEO_TRACK),
                (tracks.audio.is_some(), AUDIO_TRACK),
            ] {
                if present {
                    full(o, b"trex", 0, 0, |o| {
                        o.put_u32(id);
                        o.put_u32(1); // default sample description index
                        o.put_u32(0); // default duration
                        o.put_u32(0); // default size
                        o.put_u32(0); // default flags
                    });
                }
            }
        });
    });
    out.freeze()
}

/// `tkhd`, `mdhd` and `hdlr` of a track, then its `minf` from `media`.
fn trak(
    out: &mut BytesMut,
    id: u32,
    timescale: u32,
    (width, height): (u32, u32),
    handler: (&[u8; 4], &str),
    media: impl FnOnce(&mut BytesMut),
) {
    boxed(out, b"trak", |o| {
        full(o, b"tkhd", 0, 0x000003, |o| {
            o.put_u32(0);
            o.put_u32(0);
            o.put_u32(id);
            o.put_u32(0);
            o.put_u32(0); // duration
            o.put_u64(0);
            o.put_u16(0); // layer
            o.put_u16(0); // alternate group
            o.put_u16(if handler.0 == b"soun" { 0x0100 } else { 0 });
            o.put_u16(0);
            matrix(o);
            o.put_u32(width << 16);
            o.put_u32(height << 16);
        });
        boxed(o, b"mdia", |o| {
            full(o, b"mdhd", 0, 0, |o| {
                o.put_u32(0);
                o.put_u32(0);
                o.put_u32(timescale);
                o.put_u32(0);
                o.put_u16(0x55c4); // language "und"
                o.put_u16(0);
            });
            full(o, b"hdlr", 0, 0, |o| {
                o.put_u32(0);
                o.put_slice(handler.0);
                o.put_bytes(0, 12);
                o.put_slice(handler.1.as_bytes());
                o.put_u8(0);
            });
            boxed(o, b"minf", media);
        });
    });
}

/// `dinf` and the empty sample tables around `stsd`'s one entry.
fn sample_tables(out: &mut BytesMut, entry: impl FnOnce(&mut BytesMut)) {
    boxed(out, b"dinf", |o| {
        full(o, b"dref", 0, 0, |o| {
            o.put_u32(1);
            full(o, b"url ", 0, 1, |_| {});
        });
    });
    boxed(out, b"stbl", |o| {
        full(o, b"stsd", 0, 0, |o| {
            o.put_u32(1);
            entry(o);
        });
        for kind in [b"stts", b"stsc", b"stco"] {
            full(o, kind, 0, 0, |o| o.put_u32(0));
        }
        full(o, b"stsz", 0, 0, |o| {
            o.put_u32(0);
            o.put_u32(0);
        });
    });
}

fn video_trak(out: &mut BytesMut, v: &AvcConfig) {
    let size = v
        .sps
        .first()
        .and_then(|sps| sps_picture_size(sps).ok())
        .map_or((0, 0), |s| (s.width, s.height));
    trak(
        out,
        VIDEO_TRACK,
        CLOCK_HZ as u32,
        size,
        (b"vide", "VideoHandler"),
        |o| {
            full(o, b"vmhd", 0, 1, |o| o.put_bytes(0, 8));
            sample_tables(o, |o| {
                boxed(o, b"avc1", |o| {
                    o.put_bytes(0, 6);
                    o.put_u16(1); // data reference index
                    o.put_bytes(0, 16);
                    o.put_u16(u16::try_from(size.0).unwrap_or(u16::MAX));
                    o.put_u16(u16::try_from(size.1).unwrap_or(u16::MAX));
                    o.put_u32(0x0048_0000); // 72 dpi
                    o.put_u32(0x0048_0000);
                    o.put_u32(0);
                    o.put_u16(1); // frame count
                    o.put_bytes(0, 32); // compressor name
                    o.put_u16(0x0018); // depth
                    o.put_u16(0xffff); // pre_defined -1
                    boxed(o, b"avcC", |o| o.put_slice(&v.record));
                });
            });
        },
    );
}

fn audio_trak(out: &mut BytesMut, a: &AacConfig) {
    let channels = u16::from(a.channel_config.max(1));
    trak(
        out,
        AUDIO_TRACK,
        a.sample_rate,
        (0, 0),
        (b"soun", "SoundHandler"),
        |o| {
            full(o, b"smhd", 0, 0, |o| o.put_u32(0));
            sample_tables(o, |o| {
                boxed(o, b"mp4a", |o| {
                    o.put_bytes(0, 6);
                    o.put_u16(1);
                    o.put_bytes(0, 8);
                    o.put_u16(channels);
                    o.put_u16(16); // sample size
                    o.put_u32(0);
                    // The rate as 16.16 fixed point; rates above 65535 Hz do not fit and are
                    // given by the AudioSpecificConfig.
                    o.put_u32(u32::from(u16::try_from(a.sample_rate).unwrap_or(0)) << 16);
                    full(o, b"esds", 0, 0, |o| esds(o, a));
                });
            });
        },
    );
}

/// An MPEG-4 descriptor: its tag, its length (one byte: every one here is short) and body.
fn descriptor(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u8(u8::try_from(body.len()).unwrap_or(u8::MAX));
    out.put_slice(body);
}

/// The `esds` body: an ES descriptor with the AudioSpecificConfig.
fn esds(out: &mut BytesMut, a: &AacConfig) {
    let mut specific = BytesMut::new();
    descriptor(&mut specific, 0x05, &a.raw);
    let mut decoder = BytesMut::new();
    decoder.put_u8(0x40); // object type: MPEG-4 audio
    decoder.put_u8(0x15); // stream type: audio, upstream 0, reserved 1
    decoder.put_slice(&[0, 0, 0]); // buffer size
    decoder.put_u32(0); // max bit rate
    decoder.put_u32(0); // average bit rate
    decoder.put_slice(&specific);
    let mut es = BytesMut::new();
    es.put_u16(0); // ES id
    es.put_u8(0); // flags
    descriptor(&mut es, 0x04, &decoder);
    descriptor(&mut es, 0x06, &[0x02]); // SL config: predefined for MP4
    descriptor(out, 0x03, &es);
}

/// One sample of a fragment: a frame and how long it lasts, in its track's timescale.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The frame (its payload becomes the sample's data: AVCC for H.264, a raw access unit
    /// for AAC).
    pub frame: Frame,
    /// Decode time in the track's timescale, from the stream's zero.
    pub decode_time: u64,
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Composition offset (presentation minus decode time) in the track's timescale.
    pub composition_offset: i32,
}

/// A media fragment (`moof` + `mdat`) number `sequence` of the video and audio samples given
/// (either may be empty; each in decode order).
pub fn fragment(sequence: u32, video: &[Sample], audio: &[Sample]) -> Bytes {
    let tracks: Vec<(u32, &[Sample])> = [(VIDEO_TRACK, video), (AUDIO_TRACK, audio)]
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let data_len: usize = tracks
        .iter()
        .flat_map(|(_, s)| s.iter())
        .map(|s| s.frame.payload.len())
        .sum();
    let mut out = BytesMut::with_capacity(data_len + 256);
    // Where each track's `trun` data offset goes, to be written once the `moof` is done.
    let mut offsets: Vec<(usize, usize)> = Vec::new();
    let mut data_start = 0;
    boxed(&mut out, b"moof", |o| {
        full(o, b"mfhd", 0, 0, |o| o.put_u32(sequence));
        for (id, samples) in &tracks {
            boxed(o, b"traf", |o| {
                // default-base-is-moof
                full(o, b"tfhd", 0, 0x02_0000, |o| o.put_u32(*id));
                full(o, b"tfdt", 1, 0, |o| {
                    o.put_u64(samples.first().map_or(0, |s| s.decode_time));
                });
                // data offset, and per sample: duration, size, flags, composition offset
                full(o, b"trun", 1, 0x000f01, |o| {
                    o.put_u32(u32::try_from(samples.len()).unwrap_or(u32::MAX));
                    offsets.push((o.len(), data_start));
                    o.put_i32(0);
                    for s in samples.iter() {
                        o.put_u32(s.duration);
                        o.put_u32(u32::try_from(s.frame.payload.len()).unwrap_or(u32::MAX));
                        o.put_u32(flags(&s.frame));
                        o.put_i32(s.composition_offset);
                    }
                });
            });
            data_start += samples.iter().map(|s| s.frame.payload.len()).sum::<usize>();
        }
    });
    let moof_len = out.len();
    for (at, start) in offsets {
        // From the start of the moof to the track's first sample in the mdat (after its
        // 8-byte header).
        let offset = i32::try_from(moof_len + 8 + start).unwrap_or(i32::MAX);
        if let Some(slot) = out.get_mut(at..at + 4) {
            slot.copy_from_slice(&offset.to_be_bytes());
        }
    }
    boxed(&mut out, b"mdat", |o| {
        for (_, samples) in &tracks {
            for s in samples.iter() {
                o.put_slice(&s.frame.payload);
            }
        }
    });
    out.freeze()
}

/// The sample flags of a frame: sync for keyframes and every sound frame.
fn flags(frame: &Frame) -> u32 {
    if frame.keyframe || frame.track == TrackKind::Audio {
        SYNC_SAMPLE
    } else {
        NON_SYNC_SAMPLE
    }
}

/// The RFC 6381 codecs string of the tracks (`avc1.64001f,mp4a.40.2`), for playlists.
pub fn codecs(tracks: Tracks<'_>) -> String {
    let mut list = Vec::new();
    if let Some(v) = tracks.video {
        list.push(v.codec_string());
    }
    if let Some(a) = tracks.audio {
        list.push(format!("mp4a.40.{}", a.object_type));
    }
    list.join(",")
}

/// Whether this module muxes frames in `codec` (H.264 and AAC).
pub const fn carries(codec: Codec) -> bool {
    matches!(codec, Codec::H264 | Codec::Aac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc() -> AvcConfig {
        AvcConfig::from_parameter_sets(
            vec![Bytes::from_static(&[
                0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x80,
            ])],
            vec![Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])],
        )
        .unwrap()
    }

    /// The boxes at the top level of `data`: (type, size).
    fn top_boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            out.push((
                String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned(),
                size,
            ));
            assert!(size >= 8 && at + size <= data.len(), "box sizes add up");
            at += size;
        }
        assert_eq!(at, data.len());
        out
    }

    /// Finds the box path `path` (e.g. `moov/trak/mdia/mdhd`) in `data`, first match.
    fn find<'a>(data: &'a [u8], path: &[&str]) -> Option<&'a [u8]> {
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let kind = &data[at + 4..at + 8];
            if kind == path[0].as_bytes() {
                let body = &data[at + 8..at + size];
                if path.len() == 1 {
                    return Some(body);
                }
                // Containers with a header before their children.
                let skip = match path[0] {
                    "stsd" | "dref" => 8,
                    "avc1" => 78,
                    "mp4a" => 28,
                    _ => 0,
                };
                if let Some(found) = find(&body[skip.min(body.len())..], &path[1..]) {
                    return Some(found);
                }
            }
            at += size.max(8);
        }
        None
    }

    #[test]
    fn the_init_segment_describes_both_tracks() {
        let v = avc();
        let a = AacConfig::new(2, 3, 2).unwrap();
        let init = init_segment(Tracks {
            video: Some(&v),
            audio: Some(&a),
        });
        assert_eq!(
            top_boxes(&init)
                .iter()
                .map(|b| b.0.as_str())
                .collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        let avcc = find(
            &init,
            &[
                "moov", "trak", "mdia", "minf", "stbl", "stsd", "avc1", "avcC",
            ],
        )
        .unwrap();
        assert_eq!(avcc, &v.record[..]);
        let mdhd = find(&init, &["moov", "trak", "mdia", "mdhd"]).unwrap();
        assert_eq!(&mdhd[12..16], &90_000u32.to_be_bytes(), "video timescale");
        let esds = find(
            &init,
            &[
                "moov", "trak", "mdia", "minf", "stbl", "stsd", "mp4a", "esds",
            ],
        );
        assert!(esds.is_some_and(|e| e.windows(2).any(|w| w == &a.raw[..])));
        assert_eq!(
            codecs(Tracks {
                video: Some(&v),
                audio: Some(&a)
            }),
            "avc1.42c01e,mp4a.40.2"
        );
        // Sound only.
        let radio = init_segment(Tracks {
            video: None,
            audio: Some(&a),
        });
        assert!(find(&radio, &["moov", "trak", "mdia", "minf", "smhd"]).is_some());
        assert!(find(&radio, &["moov", "trak", "mdia", "minf", "vmhd"]).is_none());
    }

    fn sample(codec: Codec, decode_time: u64, len: usize, keyframe: bool, cts: i32) -> Sample {
        Sample {
            frame: Frame {
                track: codec.track(),
                codec,
                pts: 0,
                dts: 0,
                keyframe,
                payload: Bytes::from(vec![codec as u8; len]),
            },
            decode_time,
            duration: 3000,
            composition_offset: cts,
        }
    }

    #[test]
    fn a_fragment_points_each_track_at_its_data() {
        let video = [
            sample(Codec::H264, 9000, 100, true, 6000),
            sample(Codec::H264, 12000, 50, false, -3000),
        ];
        let audio = [sample(Codec::Aac, 4800, 7, true, 0)];
        let f = fragment(7, &video, &audio);
        let boxes = top_boxes(&f);
        assert_eq!(
            boxes.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["moof", "mdat"]
        );
        let moof_len = boxes[0].1;
        let mfhd = find(&f, &["moof", "mfhd"]).unwrap();
        assert_eq!(&mfhd[4..8], &7u32.to_be_bytes());
        let tfdt = find(&f, &["moof", "traf", "tfdt"]).unwrap();
        assert_eq!(&tfdt[4..12], &9000u64.to_be_bytes());
        let trun = find(&f, &["moof", "traf", "trun"]).unwrap();
        assert_eq!(&trun[4..8], &2u32.to_be_bytes(), "two video samples");
        let offset = i32::from_be_bytes(trun[8..12].try_into().unwrap()) as usize;
        assert_eq!(offset, moof_len + 8);
        assert_eq!(f[offset], Codec::H264 as u8);
        // Second sample (16 bytes a sample from byte 12): size 50, non-sync, negative
        // composition offset.
        assert_eq!(&trun[32..36], &50u32.to_be_bytes());
        assert_eq!(&trun[36..40], &NON_SYNC_SAMPLE.to_be_bytes());
        assert_eq!(&trun[40..44], &(-3000i32).to_be_bytes());
        // The audio track's data follows the video's.
        let audio_offset = moof_len + 8 + 150;
        assert_eq!(f[audio_offset], Codec::Aac as u8);
        assert_eq!(f.len(), audio_offset + 7);
        // A fragment of one track only.
        let only = fragment(1, &[], &audio);
        assert_eq!(top_boxes(&only).len(), 2);
    }
}
