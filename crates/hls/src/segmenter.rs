//! From a stream's frames to CMAF segments and their parts, made once per stream and kept in
//! memory, bounded: sans IO, the stream's frames and configuration in, segments out.
//!
//! A segment starts at a video keyframe (any frame of a stream without video) once the one
//! before has lasted [`SegmenterSettings::target`]; within it, a part is cut once it has lasted
//! [`SegmenterSettings::part_target`] (LL-HLS). A part is one media fragment (`moof` + `mdat`)
//! of both tracks; a segment is its parts end to end. A video sample's duration is the time
//! to the next video frame, so a part is complete when the frame after its last one arrives.
//! A new decoder configuration starts a new segment with a new initialization segment (a
//! discontinuity for players).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use streamgate_media::fmp4::{self, Sample, Tracks};
use streamgate_media::{AacConfig, AvcConfig, Codec, Frame, TrackKind, CLOCK_HZ};

/// How segments are cut and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterSettings {
    /// A segment's length: the next keyframe after this long starts the next one.
    pub target: Duration,
    /// A part's length (LL-HLS).
    pub part_target: Duration,
    /// Complete segments kept (the playlist's window).
    pub keep_segments: usize,
    /// Most bytes of segments and parts kept; the oldest segments go first.
    pub max_bytes: usize,
}

impl Default for SegmenterSettings {
    fn default() -> Self {
        Self {
            target: Duration::from_secs(2),
            part_target: Duration::from_millis(334),
            keep_segments: 6,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One part of a segment: a media fragment of each track (`moof` + `mdat`; HLS serves them
/// end to end, DASH each with its own track).
#[derive(Debug, Clone)]
pub struct Part {
    /// Its duration.
    pub duration: Duration,
    /// Whether it starts with a video keyframe (or the stream has no video).
    pub independent: bool,
    /// The video fragment (empty without video).
    pub video: Bytes,
    /// The sound fragment (empty without sound).
    pub audio: Bytes,
    /// The video samples' decode times, start and end, in the video timescale (90 kHz).
    pub video_span: Option<(u64, u64)>,
    /// The sound samples' decode times, start and end, in the sound's sample rate.
    pub audio_span: Option<(u64, u64)>,
}

impl Part {
    /// Its bytes as HLS serves them: the fragments end to end.
    pub fn chunks(&self) -> impl Iterator<Item = Bytes> + '_ {
        [&self.video, &self.audio]
            .into_iter()
            .filter(|b| !b.is_empty())
            .cloned()
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.video.len() + self.audio.len()
    }

    /// Whether it has no bytes (never, for a part a segmenter made).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One segment, complete or still growing.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its media sequence number.
    pub msn: u64,
    /// Its initialization segment's version (a new one after a configuration change).
    pub init: u64,
    /// Whether a discontinuity comes before it (a new initialization segment, or a new
    /// publish).
    pub discontinuity: bool,
    /// Its parts so far.
    pub parts: Vec<Part>,
    /// Whether it is complete.
    pub complete: bool,
    /// The stream time of its start, in seconds since the epoch's first frame.
    pub start: f64,
    /// Its start in decode ticks since the epoch's first frame.
    decode_start: i64,
    /// The epoch it belongs to.
    epoch: u64,
    /// The wall-clock time of its start: when the epoch's first frame arrived, plus its
    /// stream time (`EXT-X-PROGRAM-DATE-TIME`, DASH's availability times).
    pub wall: SystemTime,
}

impl Segment {
    /// Its duration so far.
    pub fn duration(&self) -> Duration {
        self.parts.iter().map(|p| p.duration).sum()
    }

    /// Its size in bytes so far.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Part::len).sum()
    }

    /// Whether it has no parts yet.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Its decode times in one track, start and end, in the track's timescale.
    pub fn span(&self, kind: TrackKind) -> Option<(u64, u64)> {
        let spans = self.parts.iter().filter_map(|p| match kind {
            TrackKind::Video => p.video_span,
            TrackKind::Audio => p.audio_span,
        });
        let mut out: Option<(u64, u64)> = None;
        for (a, b) in spans {
            out = Some(out.map_or((a, b), |(s, _)| (s, b)));
        }
        out
    }

    /// The fragments of one track, end to end (a DASH segment of that track).
    pub fn track_chunks(&self, kind: TrackKind) -> impl Iterator<Item = Bytes> + '_ {
        self.parts
            .iter()
            .map(move |p| match kind {
                TrackKind::Video => p.video.clone(),
                TrackKind::Audio => p.audio.clone(),
            })
            .filter(|b| !b.is_empty())
    }
}

/// The samples of the part being made.
#[derive(Debug, Default)]
struct OpenPart {
    video: Vec<Sample>,
    audio: Vec<Sample>,
    /// Decode time (90 kHz, from the epoch's zero) of its start.
    start: Option<i64>,
}

/// A stream's segmenter.
#[derive(Debug)]
pub struct Segmenter {
    settings: SegmenterSettings,
    /// The configuration the current initialization segment was made from.
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    init: Option<Bytes>,
    init_version: u64,
    /// Whether the next segment follows a discontinuity (a new initialization segment, or a
    /// new publish whose timestamps start over).
    discontinuity: bool,
    /// Decode time (90 kHz) of the epoch's first frame, the zero of its decode times, and
    /// the wall-clock time of that zero: the earliest of every frame's arrival less its
    /// stream time (frames replayed from the relay's GOP cache arrive late; live ones on
    /// time). An epoch ends with [`Segmenter::finish`].
    zero: Option<(i64, SystemTime)>,
    /// The epoch's number.
    epoch: u64,
    /// Whether the epoch's first video keyframe is still awaited (nothing before it is kept).
    awaiting_keyframe: bool,
    /// The last video frame, whose duration the next one tells.
    held_video: Option<Frame>,
    /// The decode time of the last frame of the leading track (the video, or the sound of
    /// a stream without video), and the last time between two of its frames in ticks: how
    /// much the next one will add to the part.
    last_leading: Option<i64>,
    step: i64,
    part: OpenPart,
    segments: VecDeque<Segment>,
    next_msn: u64,
    sequence: u32,
    /// The decode time (sound timescale) the next sound frame follows on from, so that
    /// sound samples stay contiguous across fragments despite rounded timestamps.
    next_audio: Option<u64>,
    /// The longest complete segment so far.
    longest: Duration,
    /// Discontinuities of the segments dropped so far (`EXT-X-DISCONTINUITY-SEQUENCE`).
    dropped_discontinuities: u64,
}

impl Segmenter {
    /// A segmenter with nothing yet.
    pub fn new(settings: SegmenterSettings) -> Self {
        Self {
            settings,
            video: None,
            audio: None,
            init: None,
            init_version: 0,
            discontinuity: false,
            zero: None,
            epoch: 0,
            awaiting_keyframe: true,
            held_video: None,
            last_leading: None,
            step: 0,
            part: OpenPart::default(),
            segments: VecDeque::new(),
            next_msn: 0,
            sequence: 0,
            next_audio: None,
            longest: Duration::ZERO,
            dropped_discontinuities: 0,
        }
    }

    /// The settings.
    pub fn settings(&self) -> SegmenterSettings {
        self.settings
    }

    /// The decoder configurations of the tracks the segments carry (H.264 and AAC; the
    /// caller leaves out what its viewers do not take), announced before the frames they
    /// apply to. A change closes the segment being made; the next one starts at a keyframe
    /// after a discontinuity.
    pub fn configure(&mut self, video: Option<&AvcConfig>, audio: Option<&AacConfig>) {
        if video == self.video.as_ref() && audio == self.audio.as_ref() && self.init.is_some() {
            return;
        }
        if self.init.is_some() {
            self.flush_video();
            self.close_part();
            self.close_segment();
            self.discontinuity = true;
            self.awaiting_keyframe = true;
        }
        self.video = video.cloned();
        self.audio = audio.cloned();
        self.init_version += 1;
        self.init = Some(fmp4::init_segment(self.tracks()));
    }

    fn tracks(&self) -> Tracks<'_> {
        Tracks {
            video: self.video.as_ref(),
            audio: self.audio.as_ref(),
        }
    }

    /// The RFC 6381 codecs of the stream (for the master playlist and the MPD).
    pub fn codecs(&self) -> String {
        fmp4::codecs(self.tracks())
    }

    /// The current initialization segment and its version.
    pub fn init(&self) -> Option<(u64, Bytes)> {
        self.init.clone().map(|b| (self.init_version, b))
    }

    /// The picture's configuration, if the segments carry video.
    pub fn video(&self) -> Option<&AvcConfig> {
        self.video.as_ref()
    }

    /// The sound's configuration, if the segments carry sound.
    pub fn audio(&self) -> Option<&AacConfig> {
        self.audio.as_ref()
    }

    /// Whether the stream has video.
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// The longest complete segment so far (at least the target): the playlist's target
    /// duration.
    pub fn longest_segment(&self) -> Duration {
        self.longest.max(self.settings.target)
    }

    /// Whether the segment being made has lasted its target and waits only for a keyframe
    /// to end: a publisher that sends keyframes only when asked (a browser) should be asked.
    pub fn wants_keyframe(&self) -> bool {
        let (Some(held), Some((zero, _))) = (&self.held_video, self.zero) else {
            return false;
        };
        self.segments.back().is_some_and(|s| {
            !s.complete && ticks(held.dts - zero - s.decode_start) >= self.settings.target
        })
    }

    /// Takes one of the stream's frames, which arrived at `now`; a frame of a codec or kind
    /// the configuration does not describe is left out, as is everything before the first
    /// video keyframe.
    pub fn push(&mut self, frame: Frame, now: SystemTime) {
        let described = match frame.codec {
            Codec::H264 => self.video.is_some(),
            Codec::Aac => self.audio.is_some(),
            Codec::Opus | Codec::Vp8 => false,
        };
        if !described || self.init.is_none() {
            return;
        }
        if self.awaiting_keyframe && self.has_video() {
            if !(frame.track == TrackKind::Video && frame.keyframe) {
                return;
            }
            self.awaiting_keyframe = false;
        }
        let zero = self.zero.get_or_insert((frame.dts, now)).0;
        let decode = frame.dts - zero;
        self.observe_arrival(decode, now);
        let leading = frame.track == TrackKind::Video || !self.has_video();
        if leading {
            if let Some(last) = self.last_leading.replace(frame.dts) {
                let step = frame.dts - last;
                if step > 0 && step < CLOCK_HZ {
                    self.step = step;
                }
            }
        }
        if frame.track == TrackKind::Video {
            // The held frame's duration is now known: it goes into the part, and then this
            // frame may start a new part or segment.
            self.flush_video_until(frame.dts);
            self.maybe_cut(decode, frame.keyframe);
            self.open_part_at(decode);
            self.held_video = Some(frame);
        } else {
            if leading {
                self.maybe_cut(decode, true);
            }
            self.open_part_at(decode);
            self.add_audio(frame, decode);
        }
    }

    /// Moves the epoch's wall-clock zero earlier if a frame at stream time `decode` arrived
    /// at `now` sooner than it says, and the wall-clock times of the epoch's segments with it.
    fn observe_arrival(&mut self, decode: i64, now: SystemTime) {
        let Some((zero, anchor)) = self.zero else {
            return;
        };
        let Some(candidate) = now.checked_sub(ticks(decode)) else {
            return;
        };
        if candidate >= anchor {
            return;
        }
        self.zero = Some((zero, candidate));
        for segment in self.segments.iter_mut().rev() {
            if segment.epoch != self.epoch {
                break;
            }
            segment.wall = candidate + Duration::from_secs_f64(segment.start.max(0.0));
        }
    }

    /// Closes the part, and the segment if `start_point` may start the next one, when they
    /// are long enough: a segment once it has lasted its target, a part once the next frame
    /// would take it past its target.
    fn maybe_cut(&mut self, decode: i64, start_point: bool) {
        let Some(start) = self.part.start else {
            return;
        };
        let segment_start = self
            .segments
            .back()
            .filter(|s| !s.complete)
            .map_or(decode, |s| s.decode_start);
        if start_point && ticks(decode - segment_start) >= self.settings.target {
            self.close_part();
            self.close_segment();
        } else if decode > start && ticks(decode - start + self.step) > self.settings.part_target {
            self.close_part();
        }
    }

    /// Moves the held video frame into the part, with the time to `next_dts` as duration.
    fn flush_video_until(&mut self, next_dts: i64) {
        let Some(held) = self.held_video.take() else {
            return;
        };
        let zero = self.zero.map_or(held.dts, |z| z.0);
        let duration = u32::try_from(next_dts - held.dts)
            .ok()
            .filter(|d| *d > 0 && i64::from(*d) < 10 * CLOCK_HZ)
            .unwrap_or(3000);
        let decode = held.dts - zero;
        self.open_part_at(decode);
        let composition_offset = i32::try_from(held.pts - held.dts).unwrap_or(0);
        self.part.video.push(Sample {
            decode_time: u64::try_from(decode).unwrap_or(0),
            duration,
            composition_offset,
            frame: held,
        });
    }

    /// Moves the held video frame into the part with the last frame interval as duration
    /// (at a configuration change; the stream's end).
    fn flush_video(&mut self) {
        let step = if self.step > 0 { self.step } else { 3000 };
        if let Some(dts) = self.held_video.as_ref().map(|f| f.dts + step) {
            self.flush_video_until(dts);
        }
    }

    fn add_audio(&mut self, frame: Frame, decode: i64) {
        let Some(rate) = self.audio.as_ref().map(|a| u64::from(a.sample_rate)) else {
            return;
        };
        let stamped = u64::try_from(decode).unwrap_or(0) * rate / CLOCK_HZ.unsigned_abs();
        // Within two frames of where the last one ended, it follows on; further off (a gap
        // in the sound, a jump), it starts where its timestamp says.
        let decode_time = match self.next_audio {
            Some(next) if stamped.abs_diff(next) <= 2048 => next,
            _ => stamped,
        };
        self.next_audio = Some(decode_time + 1024);
        self.part.audio.push(Sample {
            decode_time,
            // An AAC frame is 1024 samples.
            duration: 1024,
            composition_offset: 0,
            frame,
        });
    }

    /// Notes the start of the part being made, opening a segment if none is open.
    fn open_part_at(&mut self, decode: i64) {
        if self.part.start.is_none() {
            self.part.start = Some(decode);
        }
        if self.segments.back().is_none_or(|s| s.complete) {
            let wall = self.zero.map_or(SystemTime::UNIX_EPOCH, |z| z.1);
            let since = Duration::from_secs_f64(ticks_to_secs(decode.max(0)));
            self.segments.push_back(Segment {
                msn: self.next_msn,
                init: self.init_version,
                discontinuity: std::mem::take(&mut self.discontinuity),
                parts: Vec::new(),
                complete: false,
                start: ticks_to_secs(decode),
                decode_start: decode,
                epoch: self.epoch,
                wall: wall + since,
            });
            self.next_msn += 1;
        }
    }

    /// Ends the part being made: its fragments join the open segment, which is closed
    /// early if it alone has grown past half the byte bound (a publisher that sends no more
    /// keyframes); then the oldest segments go while the bound is passed.
    fn close_part(&mut self) {
        let part = std::mem::take(&mut self.part);
        if part.video.is_empty() && part.audio.is_empty() {
            return;
        }
        let rate = u64::from(self.audio.as_ref().map_or(48_000, |a| a.sample_rate)).max(1);
        // The part lasts as long as its leading track's samples: the video's, or the sound's
        // in a stream without video.
        let duration = if self.has_video() {
            span(&part.video).map_or(Duration::ZERO, |(a, b)| ticks((b - a) as i64))
        } else {
            span(&part.audio).map_or(Duration::ZERO, |(a, b)| {
                Duration::from_secs_f64((b - a) as f64 / rate as f64)
            })
        };
        let independent = if self.has_video() {
            part.video.first().is_some_and(|s| s.frame.keyframe)
        } else {
            true
        };
        let mut fragment = |samples: &[Sample], video: bool| {
            if samples.is_empty() {
                return Bytes::new();
            }
            self.sequence = self.sequence.wrapping_add(1);
            if video {
                fmp4::fragment(self.sequence, samples, &[])
            } else {
                fmp4::fragment(self.sequence, &[], samples)
            }
        };
        let made = Part {
            duration,
            independent,
            video: fragment(&part.video, true),
            audio: fragment(&part.audio, false),
            video_span: span(&part.video),
            audio_span: span(&part.audio),
        };
        let Some(segment) = self.segments.back_mut().filter(|s| !s.complete) else {
            return;
        };
        segment.parts.push(made);
        if segment.len() > self.settings.max_bytes / 2 {
            self.close_segment();
        } else {
            self.enforce_bounds();
        }
    }

    /// Completes the open segment and drops what is past the window or the byte bound.
    fn close_segment(&mut self) {
        if let Some(segment) = self.segments.back_mut().filter(|s| !s.complete) {
            segment.complete = true;
            if segment.parts.is_empty() {
                self.segments.pop_back();
                self.next_msn -= 1;
            } else {
                self.longest = self.longest.max(segment.duration());
            }
        }
        let complete = self.segments.iter().filter(|s| s.complete).count();
        let excess = complete.saturating_sub(self.settings.keep_segments);
        for _ in 0..excess {
            self.drop_oldest();
        }
        self.enforce_bounds();
    }

    /// Drops the oldest segments while the bytes kept pass the bound (never the last one).
    fn enforce_bounds(&mut self) {
        while self.segments.len() > 1
            && self.segments.iter().map(Segment::len).sum::<usize>() > self.settings.max_bytes
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if self.segments.pop_front().is_some_and(|s| s.discontinuity) {
            self.dropped_discontinuities += 1;
        }
    }

    /// How many discontinuities came before the first segment kept.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.dropped_discontinuities
    }

    /// The publish ended: what is held goes out and the last segment is complete. A next
    /// publish starts a new epoch, after a discontinuity.
    pub fn finish(&mut self) {
        self.flush_video();
        self.close_part();
        self.close_segment();
        if self.zero.take().is_some() {
            self.discontinuity = true;
            self.epoch += 1;
        }
        self.awaiting_keyframe = true;
        self.step = 0;
        self.last_leading = None;
        self.next_audio = None;
    }

    /// The segments kept, oldest first (the last one may be growing).
    pub fn segments(&self) -> &VecDeque<Segment> {
        &self.segments
    }

    /// The segment with media sequence number `msn`, if kept.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }
}

/// The decode times of `samples`, start and end, in their timescale.
fn span(samples: &[Sample]) -> Option<(u64, u64)> {
    let first = samples.first()?;
    let last = samples.last()?;
    Some((
        first.decode_time,
        last.decode_time + u64::from(last.duration),
    ))
}

fn ticks(t: i64) -> Duration {
    Duration::from_secs_f64(ticks_to_secs(t.max(0)))
}

fn ticks_to_secs(ticks: i64) -> f64 {
    ticks as f64 / CLOCK_HZ as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_media::ms_to_ticks;

    fn avc() -> AvcConfig {
        AvcConfig::from_parameter_sets(
            vec![Bytes::from_static(&[
                0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x80,
            ])],
            vec![Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])],
        )
        .unwrap()
    }

    fn aac() -> AacConfig {
        AacConfig::new(2, 3, 2).unwrap()
    }

    fn configured(settings: SegmenterSettings) -> Segmenter {
        let mut s = Segmenter::new(settings);
        s.configure(Some(&avc()), Some(&aac()));
        s
    }

    fn at(ms: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms.unsigned_abs())
    }

    fn video(ms: i64, keyframe: bool) -> Frame {
        Frame {
            track: TrackKind::Video,
            codec: Codec::H264,
            pts: ms_to_ticks(ms),
            dts: ms_to_ticks(ms),
            keyframe,
            payload: Bytes::from(vec![1; 100]),
        }
    }

    fn audio(ms: i64) -> Frame {
        Frame {
            track: TrackKind::Audio,
            codec: Codec::Aac,
            pts: ms_to_ticks(ms),
            dts: ms_to_ticks(ms),
            keyframe: true,
            payload: Bytes::from(vec![2; 10]),
        }
    }

    /// A 25 frames/s stream with a keyframe every `gop` frames and AAC every ~21 ms, from
    /// `from` ms for `seconds`.
    fn feed_from(s: &mut Segmenter, from: i64, seconds: i64, gop: i64) {
        // 1024 samples at 48 kHz, on a millisecond clock as RTMP rounds them.
        let audio_ms = |k: i64| from + (k * 1024 * 1000 + 24_000) / 48_000;
        let mut k = 0;
        for n in 0..seconds * 25 {
            let ms = from + n * 40;
            while audio_ms(k) <= ms {
                s.push(audio(audio_ms(k)), at(audio_ms(k)));
                k += 1;
            }
            s.push(video(ms, n % gop == 0), at(ms));
        }
    }

    fn feed(s: &mut Segmenter, seconds: i64, gop: i64) {
        feed_from(s, 0, seconds, gop);
    }

    #[test]
    fn segments_start_at_keyframes_and_are_cut_into_parts() {
        let mut s = configured(SegmenterSettings::default());
        feed(&mut s, 11, 25);
        let segs = s.segments();
        let complete: Vec<&Segment> = segs.iter().filter(|s| s.complete).collect();
        assert_eq!(complete.len(), 5, "2 s segments of 1 s GOPs over 11 s");
        for seg in &complete {
            let d = seg.duration().as_secs_f64();
            assert!((1.99..=2.01).contains(&d), "segment of {d} s");
            assert!(seg.parts[0].independent, "starts at a keyframe");
            assert!(seg.parts.len() >= 6, "parts of about a third of a second");
            for p in &seg.parts {
                let d = p.duration.as_secs_f64();
                assert!(d <= 0.334, "a part never exceeds the part target: {d} s");
            }
            assert!(seg.parts[1..]
                .iter()
                .all(|p| !p.independent || seg.parts.len() < 7));
            assert_eq!(
                seg.len(),
                seg.parts
                    .iter()
                    .flat_map(Part::chunks)
                    .map(|b| b.len())
                    .sum::<usize>()
            );
            // Each track's decode times run on without gaps from part to part.
            for kind in [TrackKind::Video, TrackKind::Audio] {
                let spans: Vec<(u64, u64)> = seg
                    .parts
                    .iter()
                    .map(|p| match kind {
                        TrackKind::Video => p.video_span.unwrap(),
                        TrackKind::Audio => p.audio_span.unwrap(),
                    })
                    .collect();
                assert!(
                    spans.windows(2).all(|w| w[0].1 == w[1].0),
                    "{kind:?} {spans:?}"
                );
                assert_eq!(seg.span(kind).unwrap().0, spans[0].0);
            }
            let video: usize = seg.track_chunks(TrackKind::Video).map(|b| b.len()).sum();
            let audio: usize = seg.track_chunks(TrackKind::Audio).map(|b| b.len()).sum();
            assert_eq!(video + audio, seg.len());
        }
        let msns: Vec<u64> = segs.iter().map(|s| s.msn).collect();
        assert!(msns.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(s.segment(msns[1]).is_some_and(|x| x.msn == msns[1]));
        assert!(s.segment(1000).is_none());
        assert!(s.codecs().starts_with("avc1.42c01e"));
        assert_eq!(s.longest_segment(), Duration::from_secs(2));
        // Program date-times follow the stream time from the first frame's arrival.
        let second = &complete[1];
        let since = second.wall.duration_since(at(0)).unwrap().as_secs_f64();
        assert!(
            (since - second.start).abs() < 0.001,
            "{since} {}",
            second.start
        );
    }

    #[test]
    fn long_gops_make_long_segments_and_raise_the_target() {
        // ffmpeg's defaults with libx264: a keyframe every 250 frames (10 s at 25/s).
        let mut s = configured(SegmenterSettings::default());
        feed(&mut s, 1, 250);
        assert!(!s.wants_keyframe(), "one second in");
        feed_from(&mut s, 1000, 2, 250);
        assert!(s.wants_keyframe(), "three seconds in, past the target");
        let mut s = configured(SegmenterSettings::default());
        feed(&mut s, 21, 250);
        let complete: Vec<&Segment> = s.segments().iter().filter(|s| s.complete).collect();
        assert_eq!(complete.len(), 2);
        assert!(complete.iter().all(|s| s.parts[0].independent));
        assert_eq!(s.longest_segment(), Duration::from_secs(10));
    }

    #[test]
    fn frames_replayed_in_a_burst_do_not_delay_the_wall_clock() {
        let mut s = configured(SegmenterSettings::default());
        // A second of cached frames arrives at once at 5 s, then live frames on time.
        for n in 0..25 {
            s.push(video(n * 40, n == 0), at(5_000));
        }
        for n in 25..100 {
            s.push(video(n * 40, n % 25 == 0), at(4_000 + n * 40));
        }
        for seg in s.segments() {
            let since = seg.wall.duration_since(at(4_000)).unwrap().as_secs_f64();
            assert!((since - seg.start).abs() < 0.001, "{since} {}", seg.start);
        }
    }

    #[test]
    fn nothing_is_kept_before_the_first_keyframe() {
        let mut s = configured(SegmenterSettings::default());
        s.push(audio(0), at(0));
        s.push(video(0, false), at(0));
        s.push(video(40, false), at(40));
        assert!(s.segments().is_empty());
        feed_from(&mut s, 80, 3, 25);
        let first = s.segments().front().unwrap();
        assert!(first.parts[0].independent);
        assert_eq!(first.wall, at(80), "the epoch starts at the keyframe");
    }

    #[test]
    fn the_window_and_the_byte_bound_drop_the_oldest() {
        let mut s = configured(SegmenterSettings {
            keep_segments: 3,
            ..SegmenterSettings::default()
        });
        feed(&mut s, 20, 25);
        assert_eq!(s.segments().iter().filter(|s| s.complete).count(), 3);
        let first = s.segments().front().unwrap().msn;
        assert!(first >= 5, "{first}");

        let mut small = configured(SegmenterSettings {
            max_bytes: 20_000,
            ..SegmenterSettings::default()
        });
        feed(&mut small, 20, 25);
        let kept: usize = small.segments().iter().map(Segment::len).sum();
        assert!(kept <= 20_000 || small.segments().len() == 1, "{kept}");
    }

    #[test]
    fn a_new_configuration_is_a_discontinuity_with_a_new_init() {
        let mut s = configured(SegmenterSettings::default());
        let (v1, _) = s.init().unwrap();
        feed(&mut s, 3, 25);
        let other = AacConfig::new(2, 4, 1).unwrap();
        s.configure(Some(&avc()), Some(&other));
        let (v2, _) = s.init().unwrap();
        assert_eq!(v2, v1 + 1);
        s.push(video(3000, true), at(3000));
        s.push(video(3040, false), at(3040));
        let last = s.segments().back().unwrap();
        assert!(last.discontinuity && last.init == v2);
        assert!(s.segments().iter().rev().nth(1).is_some_and(|p| p.complete));
        // The same configuration again changes nothing.
        s.configure(Some(&avc()), Some(&other));
        assert_eq!(s.init().unwrap().0, v2);
    }

    #[test]
    fn a_new_publish_starts_a_new_epoch_after_a_discontinuity() {
        let mut s = configured(SegmenterSettings::default());
        feed(&mut s, 5, 25);
        s.finish();
        assert!(s.segments().iter().all(|s| s.complete));
        let before = s.segments().back().unwrap().msn;
        // The next publish's timestamps start over.
        for n in 0..75 {
            s.push(video(n * 40, n % 25 == 0), at(10_000 + n * 40));
        }
        let next = s.segment(before + 1).unwrap();
        assert!(next.discontinuity && next.start == 0.0);
        assert_eq!(next.wall, at(10_000));
        assert!(next.parts[0].independent);
    }

    #[test]
    fn sound_alone_is_cut_by_time_and_frames_not_described_are_left_out() {
        let mut s = Segmenter::new(SegmenterSettings::default());
        s.configure(None, Some(&aac()));
        s.push(video(0, true), at(0));
        for k in 0..500 {
            let ms = (k * 1024 * 1000 + 24_000) / 48_000;
            s.push(audio(ms), at(ms));
        }
        let complete = s.segments().iter().filter(|s| s.complete).count();
        assert!(complete >= 4, "{complete}");
        assert!(s.segments().iter().all(|x| x
            .parts
            .iter()
            .all(|p| p.independent && p.duration.as_secs_f64() <= 0.334)));
        let mut nothing = Segmenter::new(SegmenterSettings::default());
        nothing.push(audio(0), at(0));
        assert!(nothing.segments().is_empty(), "no configuration yet");
    }
}
