//! What the server offers a viewer's browser for a stream, and how it reads the browser's
//! answer: sans IO, on SDP text.
//!
//! Browsers take H.264 only in the profiles their `RTCRtpReceiver.getCapabilities` lists
//! (the Chromium here: `42001f`, `42e01f`, `4d001f`, `f4001f`; Firefox: `42e01f`), and their
//! decoders play other profiles' bitstreams behind those ids. So a stream is offered under its
//! own `profile-level-id` first and then under the ids browsers list, closest profile first;
//! the browser answers with the first it takes.
//!
//! A browser that takes none of a section's codecs rejects that section (port 0) and, in
//! Chromium, gives the rejected section ICE credentials of its own, which the peer connection
//! would refuse as conflicting. [`prepare_answer`] marks such sections inactive without
//! credentials, so that the sections the browser took still play, and says which were
//! rejected so that the viewer can be told.

use streamgate_media::{AvcConfig, Codec};

/// The `profile-level-id`s browsers list for H.264 with packetization mode 1, as fallbacks
/// after a stream's own: Main, Constrained Baseline, Baseline.
const MAIN: &str = "4d001f";
const CONSTRAINED_BASELINE: &str = "42e01f";
const BASELINE: &str = "42001f";

/// Payload types for the H.264 offers, in offer order.
pub const H264_PAYLOAD_TYPES: [u8; 4] = [102, 106, 112, 125];

/// The `profile-level-id`s under which a stream's H.264 is offered, in order of preference:
/// its own, then those browsers list, the profile closest to the stream's first (a High or
/// Main bitstream is nearer to Main than to Baseline: CABAC, 8x8 transforms' absence aside).
/// At most [`H264_PAYLOAD_TYPES`]'s length, without repeats.
pub fn h264_profile_ids(video: Option<&AvcConfig>) -> Vec<String> {
    let own = video.map(|v| format!("{:02x}{:02x}{:02x}", v.profile, v.compatibility, v.level));
    let baseline_family = video.is_none_or(|v| v.profile == 66);
    let fallbacks: &[&str] = if baseline_family {
        &[CONSTRAINED_BASELINE, BASELINE, MAIN]
    } else {
        &[MAIN, CONSTRAINED_BASELINE, BASELINE]
    };
    let mut ids: Vec<String> = own.into_iter().collect();
    for id in fallbacks {
        // The same profile under another level is the same offer to a browser.
        if !ids.iter().any(|o| same_profile(o, id)) {
            ids.push((*id).to_owned());
        }
    }
    ids.truncate(H264_PAYLOAD_TYPES.len());
    ids
}

/// Whether two `profile-level-id`s name the same profile (profile_idc and constraint flags;
/// the level aside, as `level-asymmetry-allowed=1` lets it differ).
fn same_profile(a: &str, b: &str) -> bool {
    a.get(..4)
        .zip(b.get(..4))
        .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// A kind of media section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// `m=video`.
    Video,
    /// `m=audio`.
    Audio,
    /// Anything else (`m=application`, ...).
    Other,
}

/// A browser's answer made ready for the peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedAnswer {
    /// The answer, rejected sections marked inactive without ICE credentials.
    pub sdp: String,
    /// The media sections the browser rejected, in order.
    pub rejected: Vec<SectionKind>,
}

/// Prepares a browser's answer: every media section with port 0 (rejected) loses its ICE
/// credentials and candidates and is marked `a=inactive`; everything else is kept as it was,
/// line by line, with the answer's own line endings.
pub fn prepare_answer(sdp: &str) -> PreparedAnswer {
    let crlf = sdp.contains("\r\n");
    let mut out = String::with_capacity(sdp.len());
    let mut rejected = Vec::new();
    let mut in_rejected = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split(' ');
            let kind = match fields.next() {
                Some("video") => SectionKind::Video,
                Some("audio") => SectionKind::Audio,
                _ => SectionKind::Other,
            };
            in_rejected = fields.next() == Some("0");
            push_line(&mut out, line, crlf);
            if in_rejected {
                rejected.push(kind);
                // The section's direction, whatever the browser wrote.
                push_line(&mut out, "a=inactive", crlf);
            }
            continue;
        }
        if in_rejected {
            let attribute = line.strip_prefix("a=").unwrap_or("");
            let name = attribute.split(':').next().unwrap_or("");
            if matches!(
                name,
                "ice-ufrag"
                    | "ice-pwd"
                    | "candidate"
                    | "end-of-candidates"
                    | "ice-options"
                    | "sendrecv"
                    | "sendonly"
                    | "recvonly"
                    | "inactive"
            ) {
                continue;
            }
        }
        push_line(&mut out, line, crlf);
    }
    PreparedAnswer { sdp: out, rejected }
}

/// The kinds of media sections an answer takes (port not 0, not `inactive`).
pub fn answered_kinds(sdp: &str) -> Vec<SectionKind> {
    let mut kinds = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut lines = section.lines().map(|l| l.trim_end_matches('\r'));
        let Some(m) = lines.next() else { continue };
        let mut fields = m.split(' ');
        let kind = match fields.next() {
            Some("video") => SectionKind::Video,
            Some("audio") => SectionKind::Audio,
            _ => SectionKind::Other,
        };
        if fields.next() == Some("0") || lines.any(|l| l == "a=inactive") {
            continue;
        }
        kinds.push(kind);
    }
    kinds
}

/// The codecs a publish answer (the server's, to a browser's offer) takes in: for each media
/// section the server receives on (port not 0, not `inactive`), the codec of its first
/// payload type, when streamgate carries it. What the relay waits for before the publish's
/// first frames reach viewers.
pub fn answered_codecs(sdp: &str) -> Vec<Codec> {
    let mut codecs = Vec::new();
    // Each media section, after the session part.
    for section in sdp.split("\nm=").skip(1) {
        let mut lines = section.lines().map(|l| l.trim_end_matches('\r'));
        let Some(m) = lines.next() else { continue };
        let mut fields = m.split(' ');
        let _kind = fields.next();
        let port = fields.next();
        let first_payload_type = fields.nth(1);
        let (Some(port), Some(pt)) = (port, first_payload_type) else {
            continue;
        };
        if port == "0" {
            continue;
        }
        let mut codec = None;
        let mut inactive = false;
        for line in lines {
            if line == "a=inactive" || line == "a=sendonly" {
                inactive = true;
            }
            let Some(map) = line.strip_prefix("a=rtpmap:") else {
                continue;
            };
            let Some((number, encoding)) = map.split_once(' ') else {
                continue;
            };
            if number != pt {
                continue;
            }
            let name = encoding.split('/').next().unwrap_or("");
            codec = if name.eq_ignore_ascii_case("H264") {
                Some(Codec::H264)
            } else if name.eq_ignore_ascii_case("VP8") {
                Some(Codec::Vp8)
            } else if name.eq_ignore_ascii_case("opus") {
                Some(Codec::Opus)
            } else {
                None
            };
        }
        if let (Some(codec), false) = (codec, inactive) {
            codecs.push(codec);
        }
    }
    codecs
}

fn push_line(out: &mut String, line: &str, crlf: bool) {
    out.push_str(line);
    out.push_str(if crlf { "\r\n" } else { "\n" });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium's real answer (Debian chromium 156) to an offer of a High profile stream under
    /// its own id only (`64000d`, see `offer-high-only.sdp`): the video section is rejected and
    /// carries ICE credentials other than the audio section's.
    const CHROMIUM_REJECTS_HIGH: &str = include_str!("fixtures/chromium-answer-rejects-high.sdp");

    /// H.264 `a=fmtp` lines of the browsers' own offers (what they take).
    const CHROMIUM_H264_FMTP: [&str; 4] = [
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=f4001f",
    ];
    const FIREFOX_H264_FMTP: [&str; 2] = [
        "profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1",
        "profile-level-id=42e01f;level-asymmetry-allowed=1",
    ];

    fn avc(profile: u8, compatibility: u8, level: u8) -> AvcConfig {
        AvcConfig {
            profile,
            compatibility,
            level,
            nal_length_size: 4,
            sps: Vec::new(),
            pps: Vec::new(),
            record: bytes::Bytes::new(),
        }
    }

    fn profile_of(fmtp: &str) -> Option<&str> {
        fmtp.split(';')
            .find_map(|p| p.strip_prefix("profile-level-id="))
    }

    /// The first of `offered` a browser taking `fmtps` (packetization mode 1) would answer.
    fn chosen<'a>(offered: &'a [String], fmtps: &[&str]) -> Option<&'a String> {
        offered.iter().find(|id| {
            fmtps
                .iter()
                .filter(|f| f.contains("packetization-mode=1"))
                .filter_map(|f| profile_of(f))
                .any(|p| same_profile(p, id))
        })
    }

    #[test]
    fn a_publish_answer_says_which_codecs_will_come() {
        let answer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            a=group:BUNDLE 0 1 2\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
            a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=recvonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
            a=rtpmap:103 rtx/90000\r\na=rtpmap:102 H264/90000\r\na=recvonly\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        assert_eq!(answered_codecs(answer), [Codec::Opus, Codec::H264]);
        // VP8 taken, the sound section rejected, then a section the server does not receive.
        let vp8 = answer
            .replace("a=rtpmap:102 H264/90000", "a=rtpmap:102 VP8/90000")
            .replace("m=audio 9 ", "m=audio 0 ");
        assert_eq!(answered_codecs(&vp8), [Codec::Vp8]);
        let inactive = answer.replace("a=recvonly\r\nm=video", "a=inactive\r\nm=video");
        assert_eq!(answered_codecs(&inactive), [Codec::H264]);
        for garbage in ["", "m=", "v=0\nm=audio", "v=0\nm=audio 9 X\na=rtpmap:111"] {
            assert!(answered_codecs(garbage).is_empty(), "{garbage:?}");
        }
        assert_eq!(
            answered_kinds(answer),
            [SectionKind::Audio, SectionKind::Video, SectionKind::Other]
        );
        assert_eq!(
            answered_kinds(&vp8),
            [SectionKind::Video, SectionKind::Other],
            "port 0"
        );
        assert_eq!(
            answered_kinds(&inactive),
            [SectionKind::Video, SectionKind::Other],
            "inactive"
        );
    }

    #[test]
    fn every_profile_is_offered_under_an_id_each_browser_takes() {
        for (what, config, own) in [
            ("High 3.1", avc(0x64, 0, 0x1f), "64001f"),
            ("High 4.0", avc(0x64, 0, 0x28), "640028"),
            ("Main 3.1", avc(0x4d, 0x40, 0x1f), "4d401f"),
            ("Constrained Baseline 3.0", avc(0x42, 0xc0, 0x1e), "42c01e"),
            ("High 4:4:4", avc(0xf4, 0, 0x1f), "f4001f"),
        ] {
            let ids = h264_profile_ids(Some(&config));
            assert_eq!(ids.first().map(String::as_str), Some(own), "{what}");
            assert!(ids.len() <= H264_PAYLOAD_TYPES.len());
            assert!(
                chosen(&ids, &CHROMIUM_H264_FMTP).is_some(),
                "{what}: Chromium takes none of {ids:?}"
            );
            assert!(
                chosen(&ids, &FIREFOX_H264_FMTP).is_some(),
                "{what}: Firefox takes none of {ids:?}"
            );
        }
        // A High stream reaches Chromium as Main, its nearest profile there; Firefox as
        // Constrained Baseline, its only one.
        let high = h264_profile_ids(Some(&avc(0x64, 0, 0x28)));
        assert_eq!(
            chosen(&high, &CHROMIUM_H264_FMTP).map(String::as_str),
            Some("4d001f")
        );
        assert_eq!(
            chosen(&high, &FIREFOX_H264_FMTP).map(String::as_str),
            Some("42e01f")
        );
        // A stream that has not said: baseline ids only, first the constrained one.
        assert_eq!(
            h264_profile_ids(None),
            ["42e01f", "42001f", "4d001f"].map(String::from)
        );
        // The stream's own id is not offered twice under another level.
        let cb = h264_profile_ids(Some(&avc(0x42, 0xe0, 0x1e)));
        assert_eq!(cb, ["42e01e", "42001f", "4d001f"].map(String::from));
    }

    #[test]
    fn a_rejected_section_loses_its_credentials_and_the_rest_is_kept() {
        let prepared = prepare_answer(CHROMIUM_REJECTS_HIGH);
        assert_eq!(prepared.rejected, [SectionKind::Video]);
        let (video, audio) = prepared
            .sdp
            .split_once("m=audio")
            .expect("an audio section");
        assert!(video.contains("m=video 0 "));
        assert!(!video.contains("a=ice-ufrag") && !video.contains("a=ice-pwd"));
        assert!(video.contains("a=inactive") && !video.contains("a=recvonly"));
        assert!(video.contains("a=mid:0"));
        // The audio section and the session part are as the browser wrote them.
        let original_audio = CHROMIUM_REJECTS_HIGH.split_once("m=audio").map(|(_, a)| a);
        assert_eq!(Some(audio), original_audio);
        assert!(prepared.sdp.starts_with("v=0\r\n"));
        assert!(prepared.sdp.lines().all(|l| !l.ends_with('\r')));
        assert_eq!(
            prepared.sdp.matches("a=ice-ufrag:").count(),
            1,
            "one set of credentials left"
        );
    }

    #[test]
    fn an_answer_that_rejects_nothing_is_unchanged() {
        let accepted = CHROMIUM_REJECTS_HIGH.replace(
            "m=video 0 UDP/TLS/RTP/SAVPF 0",
            "m=video 9 UDP/TLS/RTP/SAVPF 102",
        );
        let prepared = prepare_answer(&accepted);
        assert!(prepared.rejected.is_empty());
        assert_eq!(prepared.sdp, accepted);
        let lf = accepted.replace("\r\n", "\n");
        assert_eq!(prepare_answer(&lf).sdp, lf);
    }

    #[test]
    fn a_rejected_section_without_a_direction_is_marked_inactive_once() {
        let sdp = "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:1\r\na=ice-ufrag:x\r\n";
        let prepared = prepare_answer(sdp);
        assert_eq!(prepared.rejected, [SectionKind::Audio]);
        assert_eq!(
            prepared.sdp,
            "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=inactive\r\na=mid:1\r\n"
        );
        let both = "m=video 0 RTP 0\na=sendonly\na=recvonly\nm=application 0 DTLS 0\n";
        let prepared = prepare_answer(both);
        assert_eq!(prepared.rejected, [SectionKind::Video, SectionKind::Other]);
        assert_eq!(prepared.sdp.matches("a=inactive").count(), 2);
    }
}
