//! The playlists and the manifest, written from a [`Snapshot`]: HLS's master and media
//! playlists (with LL-HLS's parts, preload hint and server control), and DASH's MPD over the
//! same segments (a video and a sound adaptation set, each segment's fragments of that track).
//!
//! Every URI carries the session's id as its query, so that the players need no cookies;
//! URIs are relative to the playlist, under `/{app}/streams/{stream}/`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use streamgate_media::TrackKind;

use crate::feed::{FeedState, Snapshot};
use crate::segmenter::Segment;

/// The playlist version: fragmented MP4 with `EXT-X-MAP` needs 6, and 7 is what LL-HLS
/// players expect at least.
const VERSION: u32 = 7;
/// Complete segments whose parts are still listed (LL-HLS asks for the last three target
/// durations or so).
const SEGMENTS_WITH_PARTS: usize = 2;

/// The master playlist: one variant, the media playlist of `stream`.
pub fn master(snapshot: &Snapshot, stream: &str, sid: &str) -> String {
    let mut out = format!("#EXTM3U\n#EXT-X-VERSION:{VERSION}\n");
    let mut inf = format!("#EXT-X-STREAM-INF:BANDWIDTH={}", bandwidth(snapshot).max(1));
    let codecs = snapshot.codecs();
    if !codecs.is_empty() {
        let _ = write!(inf, ",CODECS=\"{codecs}\"");
    }
    if let Some((w, h)) = snapshot.video.as_ref().and_then(|v| v.size) {
        let _ = write!(inf, ",RESOLUTION={w}x{h}");
    }
    let _ = writeln!(out, "{inf}");
    let _ = writeln!(out, "{}/media.m3u8?sid={sid}", escape_path(stream));
    out
}

/// The bit rate announced: the peak of the segments kept, or an estimate from the parts of
/// the first segment.
fn bandwidth(snapshot: &Snapshot) -> u64 {
    if snapshot.bandwidth > 0 {
        return snapshot.bandwidth + snapshot.bandwidth / 10;
    }
    let (bytes, secs) = snapshot
        .segments
        .iter()
        .flat_map(|s| &s.parts)
        .fold((0usize, 0f64), |(b, d), p| {
            (b + p.len(), d + p.duration.as_secs_f64())
        });
    if secs > 0.0 {
        (bytes as f64 * 8.0 / secs * 1.1) as u64
    } else {
        2_000_000
    }
}

/// How a media playlist is written.
#[derive(Debug, Clone, Copy)]
pub struct MediaOptions<'a> {
    /// The session id every URI carries.
    pub sid: &'a str,
    /// Whether to write LL-HLS's parts, preload hint and server control.
    pub low_latency: bool,
}

/// The media playlist.
pub fn media(snapshot: &Snapshot, options: MediaOptions<'_>) -> String {
    let sid = options.sid;
    // Every segment's duration, rounded to the nearest second, is at most this.
    let target = snapshot.target.as_secs_f64().round().max(1.0) as u64;
    let listed: Vec<&Segment> = snapshot
        .segments
        .iter()
        .filter(|s| s.complete || (options.low_latency && !s.parts.is_empty()))
        .collect();
    let first_msn = listed.first().map_or(0, |s| s.msn);
    let mut out = String::with_capacity(256 + listed.len() * 512);
    let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:{VERSION}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    let _ = writeln!(
        out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        snapshot.discontinuity_sequence
    );
    let part_target = snapshot.part_target.as_secs_f64();
    if options.low_latency {
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            part_target * 3.0
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
    }
    let with_parts_from = listed
        .iter()
        .filter(|s| s.complete)
        .count()
        .saturating_sub(SEGMENTS_WITH_PARTS);
    let mut map: Option<u64> = None;
    for (i, segment) in listed.iter().enumerate() {
        if segment.discontinuity {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if map != Some(segment.init) {
            let _ = writeln!(
                out,
                "#EXT-X-MAP:URI=\"init-{}.mp4?sid={sid}\"",
                segment.init
            );
            map = Some(segment.init);
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339(segment.wall));
        if options.low_latency && (i >= with_parts_from || !segment.complete) {
            for (n, part) in segment.parts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"part-{}.{n}.m4s?sid={sid}\"{}",
                    part.duration.as_secs_f64(),
                    segment.msn,
                    if part.independent {
                        ",INDEPENDENT=YES"
                    } else {
                        ""
                    }
                );
            }
        }
        if segment.complete {
            let _ = writeln!(
                out,
                "#EXTINF:{:.5},\nseg-{}.m4s?sid={sid}",
                segment.duration().as_secs_f64(),
                segment.msn
            );
        }
    }
    if snapshot.state == FeedState::Ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    } else if options.low_latency {
        if let Some((msn, part)) = snapshot.next_part() {
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{msn}.{part}.m4s?sid={sid}\""
            );
        }
    }
    out
}

/// The MPD (DASH, live profile): the complete segments since the last discontinuity, a
/// video and a sound adaptation set with a segment timeline each; `location` is where
/// players reload it from (`Location`, relative to the MPD).
pub fn mpd(snapshot: &Snapshot, sid: &str, location: &str, now: SystemTime) -> String {
    let complete: Vec<&Segment> = snapshot.segments.iter().filter(|s| s.complete).collect();
    let since = complete.iter().rposition(|s| s.discontinuity).unwrap_or(0);
    let listed = complete.get(since..).unwrap_or_default();
    let target = snapshot.target.as_secs_f64().ceil().max(1.0);
    // The epoch's zero on the wall clock: every segment's wall time less its stream time.
    let zero = listed
        .first()
        .map_or(now, |s| s.wall - Duration::from_secs_f64(s.start.max(0.0)));
    let window: f64 = listed.iter().map(|s| s.duration().as_secs_f64()).sum();
    let dynamic = snapshot.state != FeedState::Ended;
    let mut out = String::with_capacity(2048 + listed.len() * 120);
    let _ = writeln!(out, "<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    let _ = write!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
         profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"{}\" \
         availabilityStartTime=\"{}\" publishTime=\"{}\" minBufferTime=\"PT{target:.1}S\"",
        if dynamic { "dynamic" } else { "static" },
        rfc3339(zero),
        rfc3339(now),
    );
    if dynamic {
        let _ = write!(
            out,
            " minimumUpdatePeriod=\"PT{target:.1}S\" timeShiftBufferDepth=\"PT{window:.3}S\" \
             suggestedPresentationDelay=\"PT{:.1}S\"",
            target * 2.0
        );
    } else {
        let _ = write!(out, " mediaPresentationDuration=\"PT{window:.3}S\"");
    }
    let _ = writeln!(out, ">");
    let _ = writeln!(out, "  <Location>{}</Location>", xml_escape(location));
    let version = listed.first().map_or(0, |s| s.init);
    let _ = writeln!(out, "  <Period id=\"{version}\" start=\"PT0S\">");
    if let Some(video) = &snapshot.video {
        let _ = write!(
            out,
            "    <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" \
             segmentAlignment=\"true\" startWithSAP=\"1\">\n      <Representation id=\"video\" \
             codecs=\"{}\" bandwidth=\"{}\"",
            video.codec,
            bandwidth(snapshot).max(1)
        );
        if let Some((w, h)) = video.size {
            let _ = write!(out, " width=\"{w}\" height=\"{h}\"");
        }
        let _ = writeln!(out, ">");
        timeline(&mut out, listed, TrackKind::Video, 90_000, version, sid);
        let _ = writeln!(out, "      </Representation>\n    </AdaptationSet>");
    }
    if let Some(audio) = &snapshot.audio {
        let _ = writeln!(
            out,
            "    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" \
             segmentAlignment=\"true\" startWithSAP=\"1\">\n      <Representation id=\"audio\" \
             codecs=\"{}\" bandwidth=\"128000\" audioSamplingRate=\"{}\">\n        \
             <AudioChannelConfiguration \
             schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" \
             value=\"{}\"/>",
            audio.codec, audio.sample_rate, audio.channels
        );
        timeline(
            &mut out,
            listed,
            TrackKind::Audio,
            audio.sample_rate,
            version,
            sid,
        );
        let _ = writeln!(out, "      </Representation>\n    </AdaptationSet>");
    }
    let _ = writeln!(out, "  </Period>");
    let _ = writeln!(
        out,
        "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"{}\"/>",
        rfc3339(now)
    );
    let _ = writeln!(out, "</MPD>");
    out
}

/// A representation's segment template and timeline: each segment's span in the track.
fn timeline(
    out: &mut String,
    segments: &[&Segment],
    kind: TrackKind,
    timescale: u32,
    version: u64,
    sid: &str,
) {
    let name = match kind {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
    };
    let start = segments.first().map_or(0, |s| s.msn);
    let _ = writeln!(
        out,
        "        <SegmentTemplate timescale=\"{timescale}\" startNumber=\"{start}\" \
         initialization=\"init-{version}-{name}.mp4?sid={sid}\" \
         media=\"seg-$Number$-{name}.m4s?sid={sid}\">\n          <SegmentTimeline>"
    );
    let mut expected: Option<u64> = None;
    for segment in segments {
        let Some((from, to)) = segment.span(kind) else {
            continue;
        };
        // `t` only where the timeline does not simply follow on.
        if expected == Some(from) {
            let _ = writeln!(out, "            <S d=\"{}\"/>", to - from);
        } else {
            let _ = writeln!(out, "            <S t=\"{from}\" d=\"{}\"/>", to - from);
        }
        expected = Some(to);
    }
    let _ = writeln!(
        out,
        "          </SegmentTimeline>\n        </SegmentTemplate>"
    );
}

/// Escapes text for an XML element or attribute.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Percent-escapes what a URI path segment cannot hold as it is.
pub fn escape_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A wall-clock time as RFC 3339 in UTC with milliseconds (`2026-12-06T21:30:00.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    streamgate_auth::iso8601(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_592_600_123);
        assert_eq!(rfc3339(t), "2026-12-06T21:30:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(escape_path("cam1"), "cam1");
        assert_eq!(escape_path("a b/c\"d"), "a%20b%2Fc%22d");
    }
}
