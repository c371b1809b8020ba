//! Drives a publisher's and a viewer's session in memory with arbitrary client bytes: the
//! body of the `rtmp_session` fuzz target (`fuzz/`) and of this crate's property tests, so
//! that both exercise the same paths. Not part of the server.
//!
//! Input: four bytes (big-endian) give the length of the publisher's part; the viewer's part
//! is the rest. Each part is what a client sends after the handshake, which the driver does
//! itself, unless the length's top bit is set: then the publisher's part is fed from the very
//! first byte, handshake included. Parts are fed in pieces of a size taken from the input, the
//! relay's events reach the viewer's session, and the clock advances 10 ms per piece.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use streamgate_admission::Admission;
use streamgate_auth::{Auth, AuthConfig, FailurePolicy, MemoryStore};
use streamgate_relay::{Hub, Subscriber};

use crate::session::{Action, Session};
use crate::{RtmpContext, SessionLimits};

/// Publisher bytes fed before the viewer's first piece.
const VIEWER_START: usize = 1024;

/// A context whose auth lets anyone publish (so that the fuzzer reaches the publish paths),
/// with an in-memory store.
pub fn context() -> Option<Arc<RtmpContext>> {
    let config = AuthConfig {
        open_publish: true,
        ..AuthConfig::default()
    };
    let auth = Auth::open(Arc::new(MemoryStore::default()), config).ok()?;
    let admission = Admission::new(Arc::new(auth), Hub::new(), FailurePolicy::default());
    Some(Arc::new(RtmpContext::new(
        Arc::new(admission),
        SessionLimits {
            max_frame_bytes: 256 * 1024,
            ..SessionLimits::default()
        },
    )))
}

/// One side: its session, whether it has closed, and its subscriber once playing.
struct Side {
    session: Session,
    session_ctx: Arc<RtmpContext>,
    closed: bool,
    subscriber: Option<Subscriber>,
    /// Relay events given to the session.
    events: usize,
}

/// What a run did, for tests that check the driver reaches the paths it should.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Frames the publisher pushed into the relay.
    pub frames_published: u64,
    /// Relay events the viewer's session turned into bytes.
    pub viewer_events: usize,
    /// Whether each side's session ended (publisher, viewer).
    pub closed: (bool, bool),
}

impl Side {
    fn new(ctx: &Arc<RtmpContext>, port: u16, now: Instant, handshake: bool) -> Self {
        let peer = SocketAddr::from(([192, 0, 2, 1], port));
        let mut session = Session::new(ctx, peer, now);
        if handshake {
            complete_handshake(&mut session, now);
        }
        Self {
            session,
            session_ctx: Arc::clone(ctx),
            closed: false,
            subscriber: None,
            events: 0,
        }
    }

    /// Gives the session `bytes` (none: only the relay's events and the time).
    fn feed(&mut self, bytes: &[u8], now: Instant) {
        if self.closed {
            return;
        }
        let mut result = if bytes.is_empty() {
            Ok(())
        } else {
            self.session.receive(bytes, now)
        };
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Admit(request) => {
                    let decision = self.session_ctx.admission.admit_now(&request);
                    if result.is_ok() {
                        result = self.session.admitted(decision, now);
                    }
                }
                Action::Play { subscriber, .. } => self.subscriber = Some(subscriber),
                Action::Ended => self.subscriber = None,
                Action::Granted { .. } => {}
            }
        }
        if let Some(sub) = self.subscriber.as_mut() {
            while result.is_ok() {
                let Some(event) = sub.try_recv() else { break };
                self.events += 1;
                result = self.session.relay_event(event);
            }
        }
        if result.is_ok() {
            result = self.session.handle_timeout(now);
        }
        let mut out = Vec::new();
        self.session.take_output(&mut out);
        self.closed = result.is_err();
    }
}

fn complete_handshake(session: &mut Session, now: Instant) {
    let mut client = Handshake::new(PeerType::Client);
    let Ok(c0c1) = client.generate_outbound_p0_and_p1() else {
        return;
    };
    if session.receive(&c0c1, now).is_err() {
        return;
    }
    let mut s0s1s2 = Vec::new();
    session.take_output(&mut s0s1s2);
    if let Ok(HandshakeProcessResult::Completed { response_bytes, .. }) =
        client.process_bytes(&s0s1s2.concat())
    {
        let _ = session.receive(&response_bytes, now);
    }
    session.take_output(&mut Vec::new());
}

/// Runs `data` through a publisher's and a viewer's session (see the module documentation).
pub fn drive(ctx: &Arc<RtmpContext>, data: &[u8]) -> Report {
    let (head, rest) = match data {
        [a, b, c, d, rest @ ..] => (u32::from_be_bytes([*a, *b, *c, *d]), rest),
        _ => return Report::default(),
    };
    let raw = head & 0x8000_0000 != 0;
    let split = usize::try_from(head & 0x7FFF_FFFF)
        .unwrap_or(usize::MAX)
        .min(rest.len());
    let (publisher_bytes, viewer_bytes) = rest.split_at(split);
    let piece = 1 + data.len() % 97 + (head as usize >> 24) % 31;
    let mut now = Instant::now();
    let mut publisher = Side::new(ctx, 1, now, !raw);
    let mut viewer = Side::new(ctx, 2, now, true);
    let mut pieces = publisher_bytes.chunks(piece);
    let mut views = viewer_bytes.chunks(piece);
    // The viewer starts once the publisher had the time to publish.
    let mut fed = 0;
    let mut frames = 0;
    loop {
        let p = pieces.next();
        let v = if fed >= VIEWER_START.min(publisher_bytes.len()) {
            views.next()
        } else {
            None
        };
        fed += p.map_or(0, <[u8]>::len);
        if p.is_none() && v.is_none() && fed >= publisher_bytes.len() {
            // Whatever the viewer has left.
            for v in views.by_ref() {
                now += Duration::from_millis(10);
                viewer.feed(v, now);
            }
            break;
        }
        now += Duration::from_millis(10);
        if let Some(p) = p {
            publisher.feed(p, now);
        }
        viewer.feed(v.unwrap_or_default(), now);
        // The publisher's counts vanish with its stream when nobody watches: note them now.
        frames = frames.max(ctx.hub.stats().iter().map(|s| s.frames_in).sum());
    }
    Report {
        frames_published: frames,
        viewer_events: viewer.events,
        closed: (publisher.closed, viewer.closed),
    }
}

/// What [`drive_pull`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Whether the stream played.
    pub played: bool,
    /// Audio, video and aggregate messages the pull took into the relayed publish.
    pub media: u64,
    /// Whether the client gave up on the origin's bytes.
    pub failed: bool,
}

/// Runs an edge's pull client on arbitrary bytes from its origin, the media into a relayed
/// publish of `ctx`'s relay: the body of the `rtmp_pull` fuzz target. The handshake is done
/// first with a real server handshake; the first byte's lowest bit then plays the origin's
/// answers up to the start of the stream (so that the media paths are reached), its other
/// bits give the size of the pieces the rest is fed in.
pub fn drive_pull(ctx: &Arc<RtmpContext>, data: &[u8]) -> PullReport {
    use bytes::Bytes;
    use rml_amf0::Amf0Value;
    use streamgate_admission::{AdmitRequest, Admitted};
    use streamgate_auth::{Action as AuthAction, Protocol, StreamName};

    use crate::pull::PullClient;
    use crate::status::{connect_result, on_status, result};

    let mut report = PullReport::default();
    let Some((&mode, rest)) = data.split_first() else {
        return report;
    };
    let Ok(stream) = StreamName::new("live/pulled") else {
        return report;
    };
    let request = AdmitRequest::new(
        Protocol::Rtmp,
        AuthAction::Publish,
        stream.clone(),
        None,
        SocketAddr::from(([127, 0, 0, 1], 1)).ip(),
    );
    let Ok(Admitted::Publish(session)) = ctx.admission.admit_now(&request) else {
        return report;
    };
    let mut publishing = crate::session::Publishing::new(session, 0);
    let Ok(mut client) = PullClient::new("origin:1935", &stream, "proof", 256 * 1024) else {
        return report;
    };
    let mut server = Handshake::new(PeerType::Server);
    let hello: Vec<u8> = client.take_output().concat();
    let answer = match server.process_bytes(&hello) {
        Ok(HandshakeProcessResult::InProgress { response_bytes })
        | Ok(HandshakeProcessResult::Completed { response_bytes, .. }) => response_bytes,
        Err(_) => return report,
    };
    let mut feed = |client: &mut PullClient, bytes: &[u8]| -> bool {
        match client.receive(bytes) {
            Ok(media) => {
                for m in media {
                    if m.type_id != crate::dechunk::msg_type::DATA_AMF0 {
                        report.media += 1;
                    }
                    publishing.take_pulled(m, &SocketAddr::from(([127, 0, 0, 1], 1)));
                }
                publishing.push_frames();
                client.take_output();
                true
            }
            Err(_) => false,
        }
    };
    if !feed(&mut client, &answer) {
        report.failed = true;
        return report;
    }
    if mode & 1 == 1 {
        let start: Vec<Bytes> = vec![
            crate::control::set_chunk_size(crate::chunk::OUT_CHUNK_SIZE),
            connect_result(1.0, 0.0),
            result(2.0, Amf0Value::Null, Amf0Value::Number(1.0)),
            on_status(1, "NetStream.Play.Start", "Started playing"),
        ];
        if !feed(&mut client, &start.concat()) {
            report.failed = true;
            return report;
        }
    }
    let piece = usize::from(mode >> 1).max(1);
    for bytes in rest.chunks(piece) {
        if !feed(&mut client, bytes) {
            report.failed = true;
            break;
        }
        if client.has_ended() {
            break;
        }
    }
    report.played = client.is_playing() || client.has_ended();
    report
}
