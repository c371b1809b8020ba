//! Pacing of one viewer's frames on the media clock, so that a browser gets audio and video
//! lined up and evenly spaced whatever the way they reached the relay.
//!
//! Publishers do not deliver the two tracks together: ffmpeg's MPEG-TS muxer sends AAC in
//! PES packets of several frames (hundreds of milliseconds late for the first of them), and
//! the AAC -> Opus transcode adds its own buffering. A browser sizes its audio jitter buffer
//! to such bursts and starts its video with none, so audio plays that much after the picture
//! until its lip-sync logic, which moves a few tens of milliseconds a second, has caught up.
//!
//! Each frame's *relative arrival* is its arrival time minus its presentation time. A frame
//! is released at `pts + r`, where `r` is the latest relative arrival seen, so that every
//! track leaves on one timeline with the delay of its slowest frames; frames that were on
//! time wait, late ones do not. A later frame moves the timeline back at once; once the
//! latest relative arrival over the last [`PACE_WINDOW`] (one to two windows, in fact) is
//! earlier than the timeline, the timeline moves forward by [`CATCH_UP_PER_SECOND`] only: a
//! jump forward would arrive as a burst, which a browser's audio and video buffers absorb
//! differently, and lip sync would suffer for seconds.
//! Frames more than [`MAX_HOLD`] behind the earliest relative arrival are stale (a start-up
//! backlog, a stall): they neither move the timeline nor wait; stale audio is dropped (a
//! browser conceals the gap), stale video goes at once (its decoder needs every frame).
//!
//! A publisher's clock that jumps is followed rather than paced: a frame more than
//! [`MAX_HOLD`] ahead of the timeline (a jump forward; holding it would freeze the picture
//! for as long) starts the timeline again from it, and so do frames that have stayed stale
//! for [`STALE_RESTART`] (a jump back; a stall's backlog is stale only while it drains).
//!
//! Sans-IO: `now` is passed in, the caller sleeps until [`Pacer::next_due`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use streamgate_media::CLOCK_HZ;

/// How long a relative arrival counts for the timeline, and the earliest one for staleness:
/// between one and two of these.
pub const PACE_WINDOW: Duration = Duration::from_secs(10);

/// How fast the timeline catches up once frames come earlier than it, per second: 0.5 %,
/// which a browser's audio buffer absorbs by playing imperceptibly faster.
pub const CATCH_UP_PER_SECOND: Duration = Duration::from_millis(5);

/// The most a frame is held back behind the earliest relative arrival; later frames are
/// stale.
pub const MAX_HOLD: Duration = Duration::from_millis(1000);

/// How long frames may keep arriving stale before the timeline starts again from them.
pub const STALE_RESTART: Duration = Duration::from_secs(2);

/// Frames held per track. When a track's queue is full its oldest frame goes at once.
pub const MAX_PACED_FRAMES: usize = 256;

/// Payload bytes held per track (about 1.3 s at 50 Mbit/s). When a frame would take a track
/// past it, its oldest frames go at once, so that a viewer holds little of the stream
/// whatever the size of the publisher's frames.
pub const MAX_PACED_BYTES: usize = 8 * 1024 * 1024;

/// Which queue a frame is paced in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Video frames.
    Video,
    /// Audio frames.
    Audio,
}

/// What [`Pacer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; it is released by [`Pacer::pop`] when due.
    Queued,
    /// Stale audio, dropped.
    Dropped,
}

/// When a queued frame goes.
#[derive(Debug, Clone, Copy)]
enum At {
    /// At this instant (stale video, or the oldest of a full queue).
    Now(Instant),
    /// On the timeline, at this presentation time in microseconds.
    Media(i64),
}

/// The extreme of values seen over the current window and the one before it.
#[derive(Debug, Clone)]
struct Windowed {
    current: Option<i64>,
    previous: Option<i64>,
    since: Option<Instant>,
    keep_max: bool,
}

impl Windowed {
    fn new(keep_max: bool) -> Self {
        Self {
            current: None,
            previous: None,
            since: None,
            keep_max,
        }
    }

    fn pick(&self, a: Option<i64>, b: Option<i64>) -> Option<i64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if self.keep_max { a.max(b) } else { a.min(b) }),
            (a, b) => a.or(b),
        }
    }

    fn roll(&mut self, now: Instant) {
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) >= PACE_WINDOW {
            self.previous = self.current.take();
            self.since = Some(now);
        }
    }

    fn add(&mut self, now: Instant, value: i64) {
        self.roll(now);
        self.current = self.pick(self.current, Some(value));
    }

    fn get(&self) -> Option<i64> {
        self.pick(self.current, self.previous)
    }
}

/// One track's frames: when each goes, the frame, its payload bytes; and their sum.
#[derive(Debug)]
struct Queue<T> {
    items: VecDeque<(At, T, usize)>,
    bytes: usize,
}

impl<T> Queue<T> {
    fn new() -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
        }
    }

    fn front(&self) -> Option<&(At, T, usize)> {
        self.items.front()
    }

    fn pop_front(&mut self) -> Option<T> {
        let (_, item, bytes) = self.items.pop_front()?;
        self.bytes -= bytes;
        Some(item)
    }

    /// Queues `item`, first sending the oldest frames at once (`now`) while the queue would
    /// be full in frames or bytes.
    fn push(&mut self, now: Instant, at: At, item: T, bytes: usize) {
        let mut over_frames = (self.items.len() + 1).saturating_sub(MAX_PACED_FRAMES);
        let mut over_bytes = (self.bytes + bytes).saturating_sub(MAX_PACED_BYTES);
        for front in self.items.iter_mut() {
            if over_frames == 0 && over_bytes == 0 {
                break;
            }
            front.0 = At::Now(now);
            over_frames = over_frames.saturating_sub(1);
            over_bytes = over_bytes.saturating_sub(front.2);
        }
        self.bytes += bytes;
        self.items.push_back((at, item, bytes));
    }
}

/// One viewer's pacing of its video and audio frames.
#[derive(Debug)]
pub struct Pacer<T> {
    /// Zero of the relative-arrival scale.
    origin: Instant,
    /// Earliest relative arrival, in microseconds.
    earliest: Windowed,
    /// Latest relative arrival of recent frames that were not stale, in microseconds.
    latest: Windowed,
    /// The timeline: release time minus presentation time, in microseconds, and when it
    /// last moved.
    timeline: Option<(i64, Instant)>,
    video: Queue<T>,
    audio: Queue<T>,
    dropped: u64,
    /// When the frames arriving stale began to, if the last one was.
    stale_since: Option<Instant>,
}

fn ticks_to_micros(pts: i64) -> i64 {
    let us = i128::from(pts) * 1_000_000 / i128::from(CLOCK_HZ);
    // Presentation times fit in i64 microseconds for hundreds of thousands of years.
    i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl<T> Pacer<T> {
    /// A pacer whose relative arrivals count from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            origin: now,
            earliest: Windowed::new(false),
            latest: Windowed::new(true),
            timeline: None,
            video: Queue::new(),
            audio: Queue::new(),
            dropped: 0,
            stale_since: None,
        }
    }

    /// Forgets the relative arrivals and the timeline (the publisher's clock jumped); frames
    /// already queued fall due at once.
    fn restart(&mut self) {
        self.earliest = Windowed::new(false);
        self.latest = Windowed::new(true);
        self.timeline = None;
        self.stale_since = None;
    }

    /// Takes a frame of `bytes` payload bytes that arrived `now` with presentation time `pts`
    /// (in [`CLOCK_HZ`] ticks).
    pub fn push(&mut self, now: Instant, pts: i64, lane: Lane, item: T, bytes: usize) -> Pushed {
        let pts_us = ticks_to_micros(pts);
        let arrived = micros(now.saturating_duration_since(self.origin));
        let relative = arrived.saturating_sub(pts_us);
        if self
            .timeline
            .is_some_and(|(line, _)| line.saturating_sub(relative) > micros(MAX_HOLD))
        {
            self.restart();
        }
        self.earliest.add(now, relative);
        let earliest = self.earliest.get().unwrap_or(relative);
        let stale = relative.saturating_sub(earliest) > micros(MAX_HOLD);
        let since = match (stale, self.stale_since) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, Some(since)) => Some(since),
        };
        self.stale_since = since;
        if since.is_some_and(|since| now.saturating_duration_since(since) >= STALE_RESTART) {
            self.restart();
            self.earliest.add(now, relative);
        }
        let at = if self.stale_since.is_some() {
            if lane == Lane::Audio {
                self.dropped += 1;
                return Pushed::Dropped;
            }
            At::Now(now)
        } else {
            self.latest.add(now, relative);
            self.follow(now, relative);
            At::Media(pts_us)
        };
        let queue = match lane {
            Lane::Video => &mut self.video,
            Lane::Audio => &mut self.audio,
        };
        queue.push(now, at, item, bytes);
        Pushed::Queued
    }

    /// Moves the timeline for a frame of relative arrival `relative` at `now`.
    fn follow(&mut self, now: Instant, relative: i64) {
        let recent = self.latest.get().unwrap_or(relative);
        self.timeline = Some(match self.timeline {
            Some((line, _)) if relative > line => (relative, now),
            Some((line, since)) if recent < line => {
                let elapsed = now.saturating_duration_since(since);
                let step = elapsed.as_micros() * CATCH_UP_PER_SECOND.as_micros() / 1_000_000;
                match i64::try_from(step).unwrap_or(i64::MAX) {
                    // Too soon to move by a microsecond: keep counting from `since`.
                    0 => (line, since),
                    step => (line.saturating_sub(step).max(recent), now),
                }
            }
            Some((line, _)) => (line, now),
            None => (relative, now),
        });
    }

    /// When a queued frame is due: on the timeline as it is now, so that frames already
    /// queued move with it.
    fn due(&self, at: At) -> Instant {
        match at {
            At::Now(now) => now,
            At::Media(pts_us) => {
                let line = self.timeline.map_or(0, |t| t.0);
                let release = pts_us.saturating_add(line);
                u64::try_from(release)
                    .ok()
                    .and_then(|us| self.origin.checked_add(Duration::from_micros(us)))
                    .unwrap_or(self.origin)
            }
        }
    }

    /// When the next frame is due, if any is queued.
    pub fn next_due(&self) -> Option<Instant> {
        let v = self.video.front().map(|f| self.due(f.0));
        let a = self.audio.front().map(|f| self.due(f.0));
        match (v, a) {
            (Some(v), Some(a)) => Some(v.min(a)),
            (v, a) => v.or(a),
        }
    }

    /// The frame due first, if it is due at `now`. Each track keeps its order.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        let v = self
            .video
            .front()
            .map(|f| self.due(f.0))
            .filter(|d| *d <= now);
        let a = self
            .audio
            .front()
            .map(|f| self.due(f.0))
            .filter(|d| *d <= now);
        let queue = match (v, a) {
            (Some(v), Some(a)) if a < v => &mut self.audio,
            (Some(_), _) => &mut self.video,
            (None, Some(_)) => &mut self.audio,
            (None, None) => return None,
        };
        queue.pop_front()
    }

    /// Stale audio frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MS: i64 = CLOCK_HZ / 1000;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn drain(p: &mut Pacer<&'static str>, now: Instant) -> Vec<&'static str> {
        std::iter::from_fn(|| p.pop(now)).collect()
    }

    #[test]
    fn large_frames_go_at_once_past_the_byte_bound() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        // Frames far ahead of the timeline, 3 MiB each: the third pushes the first out.
        p.push(t0, 0, Lane::Video, "anchor", 1);
        assert_eq!(p.pop(t0), Some("anchor"));
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            p.push(
                t0,
                (i as i64 + 1) * 100 * MS,
                Lane::Video,
                name,
                3 * 1024 * 1024,
            );
        }
        assert_eq!(p.pop(t0), Some("a"), "over 8 MiB: the oldest goes now");
        assert_eq!(p.pop(t0), None, "the others wait");
        assert!(p.video.bytes <= MAX_PACED_BYTES);
    }

    #[test]
    fn late_audio_holds_video_back_by_its_delay() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        // Video on time (pts 0 at 0 ms), audio of pts 0 arriving 300 ms late.
        p.push(t0, 0, Lane::Video, "v0", 1);
        assert_eq!(drain(&mut p, t0), ["v0"]);
        assert_eq!(p.push(at(t0, 300), 0, Lane::Audio, "a0", 1), Pushed::Queued);
        assert_eq!(drain(&mut p, at(t0, 300)), ["a0"]);
        // From now on both go out 300 ms after their presentation time.
        p.push(at(t0, 333), 33 * MS, Lane::Video, "v1", 1);
        assert_eq!(p.next_due(), Some(at(t0, 333)));
        p.push(at(t0, 334), 34 * MS, Lane::Video, "v2", 1);
        assert_eq!(drain(&mut p, at(t0, 333)), ["v1"]);
        assert_eq!(p.next_due(), Some(at(t0, 334)));
        p.push(at(t0, 340), 100 * MS, Lane::Video, "v3", 1);
        // Audio of pts 20 ms 25 ms later than the timeline: the timeline, and v2 still
        // queued, move by 25 ms.
        p.push(at(t0, 345), 20 * MS, Lane::Audio, "a1", 1);
        assert_eq!(p.next_due(), Some(at(t0, 345)));
        assert_eq!(drain(&mut p, at(t0, 345)), ["a1"]);
        assert_eq!(p.next_due(), Some(at(t0, 359)));
        assert_eq!(drain(&mut p, at(t0, 424)), ["v2"]);
        assert_eq!(drain(&mut p, at(t0, 425)), ["v3"]);
    }

    #[test]
    fn stale_frames_do_not_move_the_timeline() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.push(at(t0, 2000), 2000 * MS, Lane::Video, "live", 1);
        // A frame two seconds behind: video goes at once, audio is dropped.
        p.push(at(t0, 2001), 0, Lane::Video, "old video", 1);
        assert_eq!(
            p.push(at(t0, 2001), 0, Lane::Audio, "old audio", 1),
            Pushed::Dropped
        );
        assert_eq!(p.dropped(), 1);
        assert_eq!(drain(&mut p, at(t0, 2001)), ["live", "old video"]);
        p.push(at(t0, 2033), 2033 * MS, Lane::Video, "next", 1);
        assert_eq!(p.next_due(), Some(at(t0, 2033)));
    }

    #[test]
    fn the_timeline_catches_up_slowly_once_delays_are_forgotten() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.push(t0, 0, Lane::Video, "v", 1);
        // One frame 500 ms late.
        p.push(at(t0, 600), 100 * MS, Lane::Audio, "late", 1);
        drain(&mut p, at(t0, 600));
        let mut ms = 600;
        let push = |p: &mut Pacer<&'static str>, ms: u64| {
            p.push(
                at(t0, ms),
                i64::try_from(ms).unwrap() * MS,
                Lane::Audio,
                "a",
                1,
            );
            let due = p.next_due().unwrap();
            drain(p, due);
            due.duration_since(at(t0, ms)).as_millis()
        };
        // The delay holds while the late frame is recent.
        while ms < 10_000 {
            ms += 20;
            assert_eq!(push(&mut p, ms), 500);
        }
        // Two windows on it is forgotten, and the timeline moves 5 ms a second.
        while ms < 20_000 {
            ms += 20;
            push(&mut p, ms);
        }
        let before = push(&mut p, ms + 20);
        let after = push(&mut p, ms + 2020);
        assert!(before < 500 && before > 400, "{before}");
        assert_eq!(before - after, 10);
    }

    #[test]
    fn a_clock_jumping_forward_is_followed_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.push(t0, 0, Lane::Video, "v0", 1);
        p.push(at(t0, 300), 0, Lane::Audio, "late a0", 1);
        drain(&mut p, at(t0, 300));
        // The publisher's clock jumps 60 s ahead: sent on arrival, not a minute later.
        p.push(at(t0, 340), 60_040 * MS, Lane::Video, "v1", 1);
        assert_eq!(p.next_due(), Some(at(t0, 340)));
        assert_eq!(drain(&mut p, at(t0, 340)), ["v1"]);
        p.push(at(t0, 380), 60_080 * MS, Lane::Audio, "a1", 1);
        assert_eq!(p.next_due(), Some(at(t0, 380)));
    }

    #[test]
    fn a_clock_jumping_back_is_followed_after_a_while() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.push(at(t0, 60_000), 60_000 * MS, Lane::Video, "v0", 1);
        drain(&mut p, at(t0, 60_000));
        // The clock goes back to 0: stale at first (audio dropped, as after a stall)...
        let mut ms = 60_000;
        let mut dropped = 0;
        while ms < 60_000 + 2 * 1000 {
            ms += 20;
            let pts = i64::try_from(ms - 60_000).unwrap() * MS;
            if p.push(at(t0, ms), pts, Lane::Audio, "a", 1) == Pushed::Dropped {
                dropped += 1;
            }
            drain(&mut p, at(t0, ms));
        }
        assert!(dropped >= 95, "{dropped}");
        // ...then paced again on the new clock.
        let pts = i64::try_from(ms + 20 - 60_000).unwrap() * MS;
        assert_eq!(
            p.push(at(t0, ms + 20), pts, Lane::Audio, "a", 1),
            Pushed::Queued
        );
        assert_eq!(p.next_due(), Some(at(t0, ms + 20)));
        let pts = i64::try_from(ms + 40 - 60_000).unwrap() * MS;
        assert_eq!(
            p.push(at(t0, ms + 30), pts, Lane::Audio, "a", 1),
            Pushed::Queued
        );
    }

    #[test]
    fn a_full_queue_releases_its_oldest_frame() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.push(t0, 0, Lane::Video, "first", 1);
        assert_eq!(p.pop(t0), Some("first"));
        p.push(t0, 500 * MS, Lane::Video, "held", 1);
        assert_eq!(p.next_due(), Some(at(t0, 500)));
        for _ in 0..MAX_PACED_FRAMES {
            p.push(t0, 500 * MS, Lane::Video, "x", 1);
        }
        assert_eq!(p.next_due(), Some(t0));
        assert_eq!(p.pop(t0), Some("held"));
    }
}
