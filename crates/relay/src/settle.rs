//! What a publish carries, settled before its first frame reaches a viewer, so that every
//! viewer chooses its tracks once, at its start, from what the stream really has.
//!
//! A listener tells the relay which tracks it knows the stream carries as soon as it knows
//! ([`crate::Publisher::expect`]: from RTMP's `onMetaData` and sequence headers, from
//! MPEG-TS's program map, from the browser's SDP). The publish's first frames are held until
//! a frame of every expected track has come, so that the video's first frames have shown
//! whether it has B-frames, and are then released together. A track that was expected but
//! does not come within [`SETTLE_WINDOW`] of media (or within the held-frame bounds) is taken
//! as it was announced. A publisher that announces nothing is settled at its first frame.
//!
//! After that, the tracks only grow or change with what the frames show (a track that starts
//! late, another codec, B-frames first seen later): each change is a new stream configuration,
//! announced to every viewer before the frame that brought it.

use std::sync::Arc;

use streamgate_media::{Codec, Frame, TrackKind, Tracks, VideoTrack, CLOCK_HZ};

use crate::SharedFrame;

/// How much media (in [`CLOCK_HZ`] ticks of decoding time, one second) is held at most while
/// waiting for an expected track's first frame.
pub const SETTLE_WINDOW: i64 = CLOCK_HZ;

/// The settling state of one publish.
#[derive(Debug)]
pub(crate) struct Settle {
    /// Tracks the listener said the stream carries.
    expected: Expected,
    /// Tracks seen in frames so far, and once settled, the stream's tracks.
    tracks: Tracks,
    settled: bool,
    /// Frames held until the tracks are settled, their payload bytes and decoding times.
    held: Vec<Arc<SharedFrame>>,
    held_bytes: usize,
    held_dts: Option<(i64, i64)>,
    max_frames: usize,
    max_bytes: usize,
}

/// The codec expected for each kind of track.
#[derive(Debug, Default, Clone, Copy)]
struct Expected {
    video: Option<Codec>,
    audio: Option<Codec>,
}

/// What becomes of a pushed frame.
#[derive(Debug)]
pub(crate) enum Admit {
    /// It goes to the viewers now.
    Now(Arc<SharedFrame>),
    /// It is held until the tracks are settled.
    Held,
    /// The tracks are settled: these frames (the ones held and this one) go now, in order.
    Released(Vec<Arc<SharedFrame>>),
}

impl Settle {
    /// Nothing seen or expected yet; at most `max_frames` and `max_bytes` of payload are held.
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            expected: Expected::default(),
            tracks: Tracks::default(),
            settled: false,
            held: Vec::new(),
            held_bytes: 0,
            held_dts: None,
            max_frames: max_frames.max(1),
            max_bytes,
        }
    }

    /// The tracks as settled; empty before.
    pub(crate) fn tracks(&self) -> Tracks {
        if self.settled {
            self.tracks
        } else {
            Tracks::default()
        }
    }

    /// The listener knows the stream carries a track in `codec`. Before the tracks are
    /// settled this is waited for; after, it changes nothing (the frames will tell). An
    /// expectation only adds a track to wait for, so it never releases frames itself.
    pub(crate) fn expect(&mut self, codec: Codec) {
        if self.settled {
            return;
        }
        match codec.track() {
            TrackKind::Video => self.expected.video = Some(codec),
            TrackKind::Audio => self.expected.audio = Some(codec),
        }
    }

    /// A frame of the stream's own.
    pub(crate) fn push(&mut self, frame: Arc<SharedFrame>) -> Admit {
        observe(&mut self.tracks, &frame.frame);
        if self.settled {
            return Admit::Now(frame);
        }
        self.held_bytes += frame.frame.payload.len();
        let dts = frame.frame.dts;
        self.held_dts = Some(match self.held_dts {
            None => (dts, dts),
            Some((low, high)) => (low.min(dts), high.max(dts)),
        });
        self.held.push(frame);
        if self.ready() {
            Admit::Released(self.settle())
        } else {
            Admit::Held
        }
    }

    /// Whether the tracks can be settled now.
    fn ready(&self) -> bool {
        let seen = |expected: Option<Codec>, seen: bool| expected.is_none() || seen;
        let all_seen = seen(self.expected.video, self.tracks.video.is_some())
            && seen(self.expected.audio, self.tracks.audio.is_some());
        let waited = self
            .held_dts
            .is_some_and(|(low, high)| high.saturating_sub(low) >= SETTLE_WINDOW);
        all_seen
            || waited
            || self.held.len() >= self.max_frames
            || self.held_bytes >= self.max_bytes
    }

    /// Settles the tracks: what was seen, and what was expected but has not come. Returns the
    /// frames held.
    fn settle(&mut self) -> Vec<Arc<SharedFrame>> {
        self.settled = true;
        if self.tracks.video.is_none() {
            self.tracks.video = self.expected.video.map(|codec| VideoTrack {
                codec,
                bframes: false,
            });
        }
        if self.tracks.audio.is_none() {
            self.tracks.audio = self.expected.audio;
        }
        self.held_bytes = 0;
        self.held_dts = None;
        std::mem::take(&mut self.held)
    }
}

/// Adds what `frame` shows to `tracks`: its kind if new, its codec if another, and B-frames.
fn observe(tracks: &mut Tracks, frame: &Frame) {
    match frame.track {
        TrackKind::Video => {
            let bframes = frame.pts != frame.dts;
            match &mut tracks.video {
                Some(v) if v.codec == frame.codec => v.bframes |= bframes,
                other => {
                    *other = Some(VideoTrack {
                        codec: frame.codec,
                        bframes,
                    })
                }
            }
        }
        TrackKind::Audio => tracks.audio = Some(frame.codec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(codec: Codec, ms: i64, cts_ms: i64) -> Arc<SharedFrame> {
        Arc::new(SharedFrame::new(Frame {
            track: codec.track(),
            codec,
            pts: (ms + cts_ms) * 90,
            dts: ms * 90,
            keyframe: true,
            payload: Bytes::from_static(&[0; 10]),
        }))
    }

    fn released(admit: Admit) -> usize {
        match admit {
            Admit::Released(frames) => frames.len(),
            other => panic!("expected the frames released, got {other:?}"),
        }
    }

    fn h264(bframes: bool) -> Option<VideoTrack> {
        Some(VideoTrack {
            codec: Codec::H264,
            bframes,
        })
    }

    #[test]
    fn frames_wait_for_every_expected_track() {
        let mut s = Settle::new(100, 1 << 20);
        s.expect(Codec::H264);
        s.expect(Codec::Aac);
        assert!(matches!(s.push(frame(Codec::Aac, 0, 0)), Admit::Held));
        assert!(matches!(s.push(frame(Codec::Aac, 20, 0)), Admit::Held));
        assert_eq!(s.tracks(), Tracks::default(), "nothing settled yet");
        // The first video frame shows B-frames (it is shown after it is decoded).
        assert_eq!(released(s.push(frame(Codec::H264, 33, 66))), 3);
        assert_eq!(
            s.tracks(),
            Tracks {
                video: h264(true),
                audio: Some(Codec::Aac)
            }
        );
        assert!(matches!(s.push(frame(Codec::Aac, 40, 0)), Admit::Now(_)));
    }

    #[test]
    fn an_expected_track_that_does_not_come_is_taken_as_announced_after_the_window() {
        let mut s = Settle::new(1000, 1 << 30);
        s.expect(Codec::H264);
        s.expect(Codec::Aac);
        let mut ms = 0;
        while matches!(s.push(frame(Codec::Aac, ms, 0)), Admit::Held) {
            ms += 20;
        }
        assert_eq!(ms, 1000, "held for one second of media");
        assert_eq!(
            s.tracks(),
            Tracks {
                video: h264(false),
                audio: Some(Codec::Aac)
            }
        );
    }

    #[test]
    fn held_frames_are_bounded_in_count_and_bytes() {
        let mut s = Settle::new(3, 1 << 20);
        s.expect(Codec::H264);
        assert!(matches!(s.push(frame(Codec::Aac, 0, 0)), Admit::Held));
        assert!(matches!(s.push(frame(Codec::Aac, 0, 0)), Admit::Held));
        assert_eq!(released(s.push(frame(Codec::Aac, 0, 0))), 3);

        let mut s = Settle::new(100, 25);
        s.expect(Codec::H264);
        assert!(matches!(s.push(frame(Codec::Aac, 0, 0)), Admit::Held));
        assert!(matches!(s.push(frame(Codec::Aac, 0, 0)), Admit::Held));
        assert_eq!(
            released(s.push(frame(Codec::Aac, 0, 0))),
            3,
            "30 bytes > 25"
        );
    }

    #[test]
    fn a_publisher_that_announces_nothing_is_settled_at_its_first_frame() {
        let mut s = Settle::new(100, 1 << 20);
        assert_eq!(released(s.push(frame(Codec::H264, 0, 0))), 1);
        assert_eq!(
            s.tracks(),
            Tracks {
                video: h264(false),
                audio: None
            }
        );
        s.expect(Codec::Aac);
        assert!(
            matches!(s.push(frame(Codec::H264, 33, 0)), Admit::Now(_)),
            "too late to wait for"
        );
    }

    #[test]
    fn settled_tracks_follow_what_later_frames_show() {
        let mut s = Settle::new(100, 1 << 20);
        let _ = s.push(frame(Codec::H264, 0, 0));
        let _ = s.push(frame(Codec::Aac, 10, 0));
        assert_eq!(s.tracks().audio, Some(Codec::Aac), "a late track");
        let _ = s.push(frame(Codec::H264, 33, 33));
        assert_eq!(s.tracks().video, h264(true), "B-frames seen late");
        let _ = s.push(frame(Codec::H264, 66, 0));
        assert_eq!(s.tracks().video, h264(true), "B-frames are never unseen");
        let _ = s.push(frame(Codec::Vp8, 99, 0));
        assert_eq!(
            s.tracks().video,
            Some(VideoTrack {
                codec: Codec::Vp8,
                bframes: false
            }),
            "another codec"
        );
    }
}
