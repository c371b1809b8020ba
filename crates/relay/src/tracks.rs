//! Which codecs each wire format carries, and what each viewer takes of a stream: the
//! stream's own tracks, a derived track (a transcode), or nothing, with the reason.
//!
//! This is the one table: every listener asks it (through the [`Selection`] its subscriber
//! announces with each [`crate::Event::Started`]) instead of deciding by codec itself.

use streamgate_media::{Codec, TrackKind, Tracks, VideoTrack};

use crate::SharedFrame;

/// A wire format whose encoded bytes are cached per frame, and which viewers take streams in.
/// The relay knows only the names; each listener supplies its own encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// RTMP / FLV message bodies.
    Rtmp,
    /// MPEG-TS packets (SRT).
    MpegTs,
    /// RTP payloads (WebRTC).
    Rtp,
    /// Fragmented MP4 (CMAF) segments, for HLS and DASH: made once per stream by its
    /// segmenter, so its frames' bytes are not cached per frame.
    Cmaf,
}

impl WireFormat {
    /// Every format.
    pub const ALL: [Self; 4] = [Self::Rtmp, Self::MpegTs, Self::Rtp, Self::Cmaf];

    /// Which codecs the format carries here: H.264 everywhere, VP8 only in RTP; AAC in RTMP,
    /// MPEG-TS and CMAF, Opus only in RTP (each sound reaches the other side through a
    /// [`Derivation`]).
    pub const fn carries(self, codec: Codec) -> bool {
        matches!(
            (self, codec),
            (_, Codec::H264)
                | (Self::Rtmp | Self::MpegTs | Self::Cmaf, Codec::Aac)
                | (Self::Rtp, Codec::Opus | Codec::Vp8)
        )
    }

    /// Whether the format's players take pictures out of decoding order (B-frames): RTMP,
    /// MPEG-TS and CMAF carry each frame's presentation time; browsers' WebRTC receivers do not
    /// reorder.
    pub const fn carries_bframes(self) -> bool {
        !matches!(self, Self::Rtp)
    }

    /// What a viewer in this format takes of a stream with `tracks`: each track as it is if
    /// the format carries it, else the derived track that turns it into one it carries, else
    /// nothing ([`Unavailable::NotCarried`]).
    pub fn select(self, tracks: &Tracks) -> Selection {
        Selection {
            video: match tracks.video {
                None => Pick::Absent,
                Some(v) if self.carries(v.codec) && (!v.bframes || self.carries_bframes()) => {
                    Pick::Source(v.codec)
                }
                Some(v) => self.derive(v.codec, v.bframes),
            },
            audio: match tracks.audio {
                None => Pick::Absent,
                Some(codec) if self.carries(codec) => Pick::Source(codec),
                Some(codec) => self.derive(codec, false),
            },
        }
    }

    /// The derived track that turns a `codec` track into one this format carries.
    fn derive(self, codec: Codec, bframes: bool) -> Pick {
        let derivation = match codec {
            Codec::H264 if bframes && !self.carries_bframes() => Derivation::H264WithoutBFrames,
            Codec::Aac if self.carries(Codec::Opus) => Derivation::AacToOpus,
            Codec::Opus if self.carries(Codec::Aac) => Derivation::OpusToAac,
            _ => return Pick::Unavailable(Unavailable::NotCarried(codec)),
        };
        Pick::Derived(derivation)
    }
}

/// A track derived from a stream's own by a transcode, run once per publish for every
/// viewer that takes it (see [`crate::Deriver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Derivation {
    /// AAC sound as Opus, for WebRTC viewers of RTMP and SRT publishers.
    AacToOpus,
    /// Opus sound as AAC, for RTMP and SRT viewers of browser publishers.
    OpusToAac,
    /// H.264 with B-frames re-encoded without them, for WebRTC viewers.
    H264WithoutBFrames,
}

impl Derivation {
    /// Every derivation.
    pub const ALL: [Self; 3] = [Self::AacToOpus, Self::OpusToAac, Self::H264WithoutBFrames];

    /// The codec it reads.
    pub const fn input(self) -> Codec {
        match self {
            Self::AacToOpus => Codec::Aac,
            Self::OpusToAac => Codec::Opus,
            Self::H264WithoutBFrames => Codec::H264,
        }
    }

    /// The codec it makes.
    pub const fn output(self) -> Codec {
        match self {
            Self::AacToOpus => Codec::Opus,
            Self::OpusToAac => Codec::Aac,
            Self::H264WithoutBFrames => Codec::H264,
        }
    }

    /// A short name, for metrics labels (`aac_opus`, `opus_aac`, `h264`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::AacToOpus => "aac_opus",
            Self::OpusToAac => "opus_aac",
            Self::H264WithoutBFrames => "h264",
        }
    }
}

/// Why a derived track could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server is configured not to run it.
    Disabled,
    /// As many of its kind run as the server allows.
    Busy,
    /// This stream cannot be derived that way (its pictures are too large, say).
    Unsupported,
    /// It could not start, or it stopped (no transcoder, no thread, a codec failure).
    Failed,
}

/// Why a viewer gets no track of a kind the stream has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The viewer's format cannot carry the stream's codec, and no derivation makes one it
    /// can (VP8 for RTMP and SRT).
    NotCarried(Codec),
    /// The derivation the viewer would take was refused.
    Refused(Derivation, Refusal),
}

/// What a viewer takes of one kind of track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The stream has no such track.
    Absent,
    /// The stream's own track, in this codec.
    Source(Codec),
    /// A derived track.
    Derived(Derivation),
    /// Nothing, though the stream has such a track.
    Unavailable(Unavailable),
}

impl Pick {
    /// The codec of the frames the viewer gets, if it gets any.
    pub const fn codec(self) -> Option<Codec> {
        match self {
            Self::Source(codec) => Some(codec),
            Self::Derived(d) => Some(d.output()),
            Self::Absent | Self::Unavailable(_) => None,
        }
    }

    /// Whether the viewer takes `frame` under this pick.
    fn takes(self, frame: &SharedFrame) -> bool {
        match self {
            Self::Source(codec) => frame.derived.is_none() && frame.frame.codec == codec,
            Self::Derived(d) => frame.derived == Some(d),
            Self::Absent | Self::Unavailable(_) => false,
        }
    }
}

/// What one viewer takes of a stream: a [`Pick`] per kind of track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// The picture.
    pub video: Pick,
    /// The sound.
    pub audio: Pick,
}

impl Selection {
    /// Every track as it is: what the server's own readers (a transcode's input) take.
    pub fn source(tracks: &Tracks) -> Self {
        Self {
            video: tracks
                .video
                .map_or(Pick::Absent, |VideoTrack { codec, .. }| Pick::Source(codec)),
            audio: tracks.audio.map_or(Pick::Absent, Pick::Source),
        }
    }

    /// The pick for `kind`.
    pub const fn of(&self, kind: TrackKind) -> Pick {
        match kind {
            TrackKind::Video => self.video,
            TrackKind::Audio => self.audio,
        }
    }

    /// Whether the viewer takes `frame`.
    pub fn takes(&self, frame: &SharedFrame) -> bool {
        self.of(frame.frame.track).takes(frame)
    }

    /// Whether the viewer may start (or resume after a loss) at `frame`: a keyframe of the
    /// video it takes, or, when it takes no video, any frame of the sound it takes.
    pub fn is_start_point(&self, frame: &SharedFrame) -> bool {
        if !self.takes(frame) {
            return false;
        }
        match frame.frame.track {
            TrackKind::Video => frame.frame.keyframe,
            TrackKind::Audio => self.video.codec().is_none(),
        }
    }

    /// The derived tracks it takes.
    pub fn derivations(&self) -> impl Iterator<Item = Derivation> {
        [self.video, self.audio]
            .into_iter()
            .filter_map(|p| match p {
                Pick::Derived(d) => Some(d),
                _ => None,
            })
    }

    /// The selection with `derivation` refused for `why`.
    pub(crate) fn refuse(mut self, derivation: Derivation, why: Refusal) -> Self {
        for pick in [&mut self.video, &mut self.audio] {
            if *pick == Pick::Derived(derivation) {
                *pick = Pick::Unavailable(Unavailable::Refused(derivation, why));
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use streamgate_media::Frame;

    #[test]
    fn the_codec_table() {
        use Codec::{Aac, Opus, Vp8, H264};
        let rows = [
            (WireFormat::Rtmp, [true, true, false, false], true),
            (WireFormat::MpegTs, [true, true, false, false], true),
            (WireFormat::Rtp, [true, false, true, true], false),
            (WireFormat::Cmaf, [true, true, false, false], true),
        ];
        for (format, expected, bframes) in rows {
            let got = [H264, Aac, Opus, Vp8].map(|c| format.carries(c));
            assert_eq!(got, expected, "{format:?}");
            assert_eq!(format.carries_bframes(), bframes, "{format:?}");
        }
        for d in Derivation::ALL {
            assert_eq!(d.input().track(), d.output().track(), "{d:?}");
        }
    }

    fn tracks(video: Option<(Codec, bool)>, audio: Option<Codec>) -> Tracks {
        Tracks {
            video: video.map(|(codec, bframes)| VideoTrack { codec, bframes }),
            audio,
        }
    }

    #[test]
    fn each_format_takes_what_it_carries_and_derives_the_rest() {
        use Pick::{Absent, Derived, Source};
        let encoder = tracks(Some((Codec::H264, false)), Some(Codec::Aac));
        let obs = tracks(Some((Codec::H264, true)), Some(Codec::Aac));
        let browser = tracks(Some((Codec::H264, false)), Some(Codec::Opus));
        let vp8 = tracks(Some((Codec::Vp8, false)), Some(Codec::Opus));
        let radio = tracks(None, Some(Codec::Aac));
        let not_carried = |c| Pick::Unavailable(Unavailable::NotCarried(c));
        let cases = [
            (
                WireFormat::Rtmp,
                encoder,
                Source(Codec::H264),
                Source(Codec::Aac),
            ),
            (
                WireFormat::Rtmp,
                obs,
                Source(Codec::H264),
                Source(Codec::Aac),
            ),
            (
                WireFormat::MpegTs,
                obs,
                Source(Codec::H264),
                Source(Codec::Aac),
            ),
            (
                WireFormat::Rtp,
                encoder,
                Source(Codec::H264),
                Derived(Derivation::AacToOpus),
            ),
            (
                WireFormat::Rtp,
                obs,
                Derived(Derivation::H264WithoutBFrames),
                Derived(Derivation::AacToOpus),
            ),
            (
                WireFormat::Rtmp,
                browser,
                Source(Codec::H264),
                Derived(Derivation::OpusToAac),
            ),
            (
                WireFormat::MpegTs,
                browser,
                Source(Codec::H264),
                Derived(Derivation::OpusToAac),
            ),
            (
                WireFormat::Rtp,
                browser,
                Source(Codec::H264),
                Source(Codec::Opus),
            ),
            (
                WireFormat::Rtp,
                vp8,
                Source(Codec::Vp8),
                Source(Codec::Opus),
            ),
            (
                WireFormat::Rtmp,
                vp8,
                not_carried(Codec::Vp8),
                Derived(Derivation::OpusToAac),
            ),
            (
                WireFormat::MpegTs,
                vp8,
                not_carried(Codec::Vp8),
                Derived(Derivation::OpusToAac),
            ),
            (
                WireFormat::Rtp,
                radio,
                Absent,
                Derived(Derivation::AacToOpus),
            ),
            (
                WireFormat::Cmaf,
                obs,
                Source(Codec::H264),
                Source(Codec::Aac),
            ),
            (
                WireFormat::Cmaf,
                browser,
                Source(Codec::H264),
                Derived(Derivation::OpusToAac),
            ),
            (
                WireFormat::Cmaf,
                vp8,
                not_carried(Codec::Vp8),
                Derived(Derivation::OpusToAac),
            ),
            (WireFormat::Rtmp, Tracks::default(), Absent, Absent),
        ];
        for (format, tracks, video, audio) in cases {
            assert_eq!(
                format.select(&tracks),
                Selection { video, audio },
                "{format:?} {tracks:?}"
            );
        }
        assert_eq!(
            Selection::source(&obs),
            Selection {
                video: Source(Codec::H264),
                audio: Source(Codec::Aac)
            }
        );
    }

    fn shared(codec: Codec, keyframe: bool, derived: Option<Derivation>) -> SharedFrame {
        let frame = Frame {
            track: codec.track(),
            codec,
            pts: 0,
            dts: 0,
            keyframe,
            payload: Bytes::new(),
        };
        match derived {
            Some(d) => SharedFrame::derived(frame, d),
            None => SharedFrame::new(frame),
        }
    }

    #[test]
    fn a_selection_takes_its_frames_and_starts_at_its_own_keyframes() {
        let obs = tracks(Some((Codec::H264, true)), Some(Codec::Aac));
        let browser = WireFormat::Rtp.select(&obs);
        let source_key = shared(Codec::H264, true, None);
        let derived_key = shared(Codec::H264, true, Some(Derivation::H264WithoutBFrames));
        let aac = shared(Codec::Aac, true, None);
        let opus = shared(Codec::Opus, true, Some(Derivation::AacToOpus));
        assert!(!browser.takes(&source_key) && !browser.takes(&aac));
        assert!(browser.takes(&derived_key) && browser.takes(&opus));
        assert!(browser.is_start_point(&derived_key));
        assert!(!browser.is_start_point(&source_key), "not its video");
        assert!(
            !browser.is_start_point(&opus),
            "sound waits for the picture"
        );
        assert_eq!(
            browser.derivations().collect::<Vec<_>>(),
            [Derivation::H264WithoutBFrames, Derivation::AacToOpus]
        );

        let rtmp = WireFormat::Rtmp.select(&obs);
        assert!(rtmp.takes(&source_key) && rtmp.takes(&aac));
        assert!(!rtmp.takes(&derived_key) && !rtmp.takes(&opus));
        assert!(rtmp.is_start_point(&source_key) && !rtmp.is_start_point(&aac));
        assert_eq!(rtmp.derivations().count(), 0);

        // Without a picture to take, any frame of its sound is a start point.
        let radio = WireFormat::Rtmp.select(&tracks(Some((Codec::Vp8, false)), Some(Codec::Opus)));
        let derived_aac = shared(Codec::Aac, true, Some(Derivation::OpusToAac));
        assert!(radio.is_start_point(&derived_aac));

        let refused = browser.refuse(Derivation::H264WithoutBFrames, Refusal::Busy);
        assert_eq!(
            refused.video,
            Pick::Unavailable(Unavailable::Refused(
                Derivation::H264WithoutBFrames,
                Refusal::Busy
            ))
        );
        assert_eq!(refused.audio, browser.audio);
        assert!(!refused.takes(&derived_key));
        assert!(refused.is_start_point(&opus), "no picture to wait for");
    }
}
