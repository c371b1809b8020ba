//! The session core driven in memory: `rml_rtmp`'s client session on one side, ours on the
//! other, real auth (in-memory store) and relay, no socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use streamgate_admission::Admission;
use streamgate_admission::{AdmitRequest, Admitted};
use streamgate_auth::cluster::{ClusterKey, ProofUse};
use streamgate_auth::{Auth, AuthConfig, FailurePolicy, MemoryStore, StreamName, TokenKind};
use streamgate_relay::{Event, Hub, Subscriber};

use super::*;
use crate::chunk::encode_message;
use crate::dechunk::MAX_COMMAND_BYTES;

const AVC_RECORD: [u8; 19] = [
    1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 4, 0x67, 0x42, 0xC0, 0x1E, 1, 0, 2, 0x68, 0xCE, 0, 0,
];

fn peer() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], 40000))
}

fn context(config: AuthConfig) -> Arc<RtmpContext> {
    let auth = Auth::open(Arc::new(MemoryStore::default()), config).unwrap();
    let admission = Admission::new(Arc::new(auth), Hub::new(), FailurePolicy::default());
    Arc::new(RtmpContext::new(
        Arc::new(admission),
        SessionLimits::default(),
    ))
}

fn publish_token(ctx: &RtmpContext) -> String {
    let spec = serde_json::from_value(serde_json::json!({"label": "cam"})).unwrap();
    let (_, secret) = ctx
        .admission
        .auth()
        .create(TokenKind::Publish, spec, SystemTime::now())
        .unwrap();
    secret.expose().to_owned()
}

/// A client session talking to a server session, with the time under the test's control.
struct Pair {
    ctx: Arc<RtmpContext>,
    server: Session,
    client: ClientSession,
    now: Instant,
    events: Vec<ClientSessionEvent>,
    actions: Vec<Action>,
}

impl Pair {
    /// Handshaken, with the client session's opening messages sent.
    fn new(ctx: &Arc<RtmpContext>) -> Self {
        let now = Instant::now();
        let mut server = Session::new(ctx, peer(), now);
        let mut hs = Handshake::new(PeerType::Client);
        server
            .receive(&hs.generate_outbound_p0_and_p1().unwrap(), now)
            .unwrap();
        let mut s = Vec::new();
        server.take_output(&mut s);
        let HandshakeProcessResult::Completed { response_bytes, .. } =
            hs.process_bytes(&s.concat()).unwrap()
        else {
            panic!("the handshake did not complete")
        };
        server.receive(&response_bytes, now).unwrap();
        let (client, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut pair = Self {
            ctx: Arc::clone(ctx),
            server,
            client,
            now,
            events: Vec::new(),
            actions: Vec::new(),
        };
        pair.send(initial).unwrap();
        pair
    }

    /// Handshaken and connected to `app`.
    fn connected(ctx: &Arc<RtmpContext>, app: &str) -> Self {
        let mut p = Self::new(ctx);
        let r = p.client.request_connection(app.into()).unwrap();
        p.send(vec![r]).unwrap();
        p.expect(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted));
        p
    }

    fn send(&mut self, results: Vec<ClientSessionResult>) -> Result<(), Close> {
        for r in results {
            if let ClientSessionResult::OutboundResponse(packet) = r {
                self.send_raw(&packet.bytes)?;
            }
        }
        Ok(())
    }

    /// Feeds bytes to the server and its answers to the client; the first error of the
    /// server on the way (the client's answers included).
    fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Close> {
        let mut result = self.server.receive(bytes, self.now);
        while let Some(a) = self.server.poll_action() {
            match a {
                // Decided at once, as the socket task does after the admission's wait.
                Action::Admit(request) => {
                    let decision = self.ctx.admission.admit_now(&request);
                    if result.is_ok() {
                        result = self.server.admitted(decision, self.now);
                    }
                }
                a => self.actions.push(a),
            }
        }
        let delivered = self.deliver();
        result.and(delivered)
    }

    /// Moves the server's output into the client, and the client's answers back.
    fn deliver(&mut self) -> Result<(), Close> {
        let mut out = Vec::new();
        self.server.take_output(&mut out);
        if out.is_empty() {
            return Ok(());
        }
        let results = self.client.handle_input(&out.concat()).unwrap();
        let mut answers = Ok(());
        for r in results {
            match r {
                ClientSessionResult::RaisedEvent(e) => self.events.push(e),
                ClientSessionResult::OutboundResponse(p) => {
                    let sent = self.send_raw(&p.bytes);
                    answers = answers.and(sent);
                }
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        answers
    }

    fn expect(&mut self, want: impl Fn(&ClientSessionEvent) -> bool) {
        let i = self
            .events
            .iter()
            .position(want)
            .unwrap_or_else(|| panic!("not among {:?}", self.events));
        self.events.drain(..=i);
    }

    fn publish(&mut self, key: &str) -> Result<(), Close> {
        let r = self
            .client
            .request_publishing(key.into(), PublishRequestType::Live)
            .unwrap();
        self.send(vec![r])
    }

    fn play(&mut self, key: &str) -> Result<(), Close> {
        let r = self.client.request_playback(key.into()).unwrap();
        self.send(vec![r])
    }

    fn video(&mut self, ts: u32, body: &[u8]) -> Result<(), Close> {
        let r = self
            .client
            .publish_video_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ts), false)
            .unwrap();
        self.send(vec![r])
    }

    fn audio(&mut self, ts: u32, body: &[u8]) -> Result<(), Close> {
        let r = self
            .client
            .publish_audio_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ts), false)
            .unwrap();
        self.send(vec![r])
    }

    /// The subscriber of the play the server started.
    fn subscriber(&mut self) -> (Subscriber, u32) {
        let i = self
            .actions
            .iter()
            .position(|a| matches!(a, Action::Play { .. }))
            .expect("a play action");
        match self.actions.remove(i) {
            Action::Play {
                subscriber,
                stream_id,
            } => (subscriber, stream_id),
            _ => unreachable!(),
        }
    }
}

fn avc_header() -> Vec<u8> {
    let mut b = vec![0x17, 0, 0, 0, 0];
    b.extend_from_slice(&AVC_RECORD);
    b
}

fn keyframe(n: u8) -> Vec<u8> {
    vec![0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, n]
}

/// A command message as raw chunks (the session starts at chunk size 128: these use 4096, so
/// [`chunk_size_4096`] goes first).
fn command(values: &[Amf0Value]) -> Vec<u8> {
    let payload = rml_amf0::serialize(&values.to_vec()).unwrap();
    encode_message(3, 0, msg_type::COMMAND_AMF0, 0, &payload)
        .unwrap()
        .to_vec()
}

fn chunk_size_4096() -> Vec<u8> {
    control::set_chunk_size(4096).to_vec()
}

fn s(v: &str) -> Amf0Value {
    Amf0Value::Utf8String(v.into())
}

#[test]
fn publish_reaches_a_viewer_through_the_relay() {
    let ctx = context(AuthConfig::default());
    let token = publish_token(&ctx);
    let mut publisher = Pair::connected(&ctx, "live");
    publisher.publish(&format!("cam1?token={token}")).unwrap();
    publisher.expect(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted));
    assert!(matches!(publisher.actions[0], Action::Granted { .. }));
    assert_eq!(
        publisher.server.granted().map(|(w, n)| (w, n.as_str())),
        Some(("publish", "live/cam1"))
    );

    let mut viewer = Pair::connected(&ctx, "live");
    viewer.play("cam1").unwrap();
    viewer.expect(|e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted));
    let (mut subscriber, stream_id) = viewer.subscriber();
    assert_eq!(stream_id, 1);

    let mut meta = StreamMetadata::new();
    meta.video_width = Some(640);
    let r = publisher.client.publish_metadata(&meta).unwrap();
    publisher.send(vec![r]).unwrap();
    publisher.video(0, &avc_header()).unwrap();
    publisher.audio(0, &[0xAF, 0, 0x12, 0x10]).unwrap();
    for i in 0..3u8 {
        publisher.video(u32::from(i) * 40, &keyframe(i)).unwrap();
        publisher.audio(u32::from(i) * 23, &[0xAF, 1, i]).unwrap();
    }
    let mut events = Vec::new();
    while let Some(e) = subscriber.try_recv() {
        events.push(e);
    }
    assert!(matches!(events[0], Event::Started(..)));
    for e in events {
        viewer.server.relay_event(e).unwrap();
    }
    viewer.deliver().unwrap();
    let videos = viewer
        .events
        .iter()
        .filter(|e| matches!(e, ClientSessionEvent::VideoDataReceived { .. }))
        .count();
    let audios = viewer
        .events
        .iter()
        .filter(|e| matches!(e, ClientSessionEvent::AudioDataReceived { .. }))
        .count();
    // The sequence headers, then every frame.
    assert_eq!((videos, audios), (4, 4), "{:?}", viewer.events);
    assert!(viewer.events.iter().any(|e| matches!(
        e,
        ClientSessionEvent::StreamMetadataReceived { metadata } if metadata.video_width == Some(640)
    )));
}

#[test]
fn refused_requests_get_a_status_and_close() {
    let ctx = context(AuthConfig::default());
    let mut p = Pair::connected(&ctx, "live");
    let err = p.publish("cam1?token=wrong").unwrap_err();
    assert!(matches!(err, Close::Refused), "{err}");
    assert!(
        p.events.iter().any(|e| matches!(e,
            ClientSessionEvent::UnhandleableOnStatusCode { code } if code == "NetStream.Publish.Unauthorized")),
        "{:?}",
        p.events
    );
    // Playing a stream that is not live, without a token.
    let mut v = Pair::connected(&ctx, "live");
    assert!(matches!(v.play("nothing"), Err(Close::Refused)));
}

#[test]
fn a_deep_or_huge_command_before_connect_is_refused_cheaply() {
    let ctx = context(AuthConfig::default());
    // The message that overflowed a worker's stack: objects nested as deep as 64 KiB allows.
    let mut nested = vec![0x02, 0, 7];
    nested.extend_from_slice(b"connect");
    while nested.len() + 4 < MAX_COMMAND_BYTES {
        nested.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    let mut p = Pair::new(&ctx);
    let mut wire = chunk_size_4096();
    wire.extend_from_slice(&encode_message(3, 0, msg_type::COMMAND_AMF0, 0, &nested).unwrap());
    assert!(matches!(
        p.send_raw(&wire),
        Err(Close::Amf0(Amf0Error::TooDeep))
    ));

    // A 16 MiB command is refused from its header: nothing of it is buffered.
    let mut p = Pair::new(&ctx);
    let header = [
        3,
        0,
        0,
        0,
        0xFF,
        0xFF,
        0xFF,
        msg_type::COMMAND_AMF0,
        0,
        0,
        0,
        0,
    ];
    assert!(matches!(
        p.send_raw(&header),
        Err(Close::Chunk(ChunkError::TooLarge { .. }))
    ));
}

#[test]
fn before_a_grant_only_a_few_commands_and_streams_are_taken() {
    let ctx = context(AuthConfig::default());
    // createStream over and over: the message streams are capped.
    let mut p = Pair::connected(&ctx, "live");
    let mut err = None;
    p.send_raw(&chunk_size_4096()).unwrap();
    for txn in 0..100 {
        let create = command(&[
            s("createStream"),
            Amf0Value::Number(f64::from(txn)),
            Amf0Value::Null,
        ]);
        if let Err(e) = p.send_raw(&create) {
            err = Some((txn, e));
            break;
        }
    }
    let (txn, e) = err.expect("createStream is capped");
    assert!(matches!(e, Close::Limit(_)), "{e}");
    assert_eq!(txn as usize, MAX_MESSAGE_STREAMS);

    // Any other command over and over: the command budget runs out.
    let mut p = Pair::connected(&ctx, "live");
    p.send_raw(&chunk_size_4096()).unwrap();
    let ping = command(&[s("_checkbw"), Amf0Value::Number(9.0), Amf0Value::Null]);
    let sent = (0..100).take_while(|_| p.send_raw(&ping).is_ok()).count();
    // connect was the first of the budget.
    assert_eq!(sent as u32, MAX_PRE_GRANT_COMMANDS - 1);

    // Media or data before publish, and commands before connect, close at once.
    let mut p = Pair::connected(&ctx, "live");
    let video = encode_message(6, 0, msg_type::VIDEO, 1, &keyframe(0)).unwrap();
    assert!(matches!(p.send_raw(&video), Err(Close::Protocol(_))));
    let mut p = Pair::new(&ctx);
    let early = command(&[s("createStream"), Amf0Value::Number(2.0), Amf0Value::Null]);
    assert!(matches!(p.send_raw(&early), Err(Close::Protocol(_))));
}

#[test]
fn trickled_bytes_do_not_move_the_grant_deadline() {
    let ctx = context(AuthConfig::default());
    let mut p = Pair::new(&ctx);
    let deadline = p.server.timeout().unwrap();
    let start = p.now;
    assert_eq!(deadline, start + SessionLimits::default().grant_timeout);
    // One byte of a 1000-byte command every 100 ms.
    let mut wire = vec![
        3,
        0,
        0,
        0,
        0,
        0x03,
        0xE8,
        msg_type::COMMAND_AMF0,
        0,
        0,
        0,
        0,
    ];
    wire.resize(200, 0);
    for (i, b) in wire.iter().take(99).enumerate() {
        p.now = start + Duration::from_millis(100 * i as u64);
        p.send_raw(std::slice::from_ref(b)).unwrap();
        assert_eq!(p.server.timeout(), Some(deadline));
        p.server.handle_timeout(p.now).unwrap();
    }
    assert!(matches!(
        p.server.handle_timeout(deadline),
        Err(Close::GrantTimeout)
    ));
}

#[test]
fn the_handshake_has_its_own_deadline() {
    let ctx = context(AuthConfig::default());
    let now = Instant::now();
    let mut server = Session::new(&ctx, peer(), now);
    server.receive(&[3; 100], now).unwrap();
    let t = server.timeout().unwrap();
    assert_eq!(t, now + SessionLimits::default().handshake_timeout);
    assert!(matches!(
        server.handle_timeout(t),
        Err(Close::HandshakeTimeout)
    ));
}

#[test]
fn odd_data_messages_from_a_publisher_are_harmless() {
    let ctx = context(AuthConfig {
        open_publish: true,
        ..AuthConfig::default()
    });
    let mut p = Pair::connected(&ctx, "live");
    p.publish("cam2").unwrap();
    p.expect(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted));
    p.send_raw(&chunk_size_4096()).unwrap();
    let data = |values: &[Amf0Value]| {
        let payload = rml_amf0::serialize(&values.to_vec()).unwrap();
        encode_message(4, 0, msg_type::DATA_AMF0, 1, &payload).unwrap()
    };
    // @setDataFrame without arguments panicked a session library; an empty data message, a
    // metadata object that is not one, and a command without arguments.
    p.send_raw(&data(&[s("@setDataFrame")])).unwrap();
    p.send_raw(&encode_message(4, 0, msg_type::DATA_AMF0, 1, &[]).unwrap())
        .unwrap();
    p.send_raw(&data(&[
        s("@setDataFrame"),
        s("onMetaData"),
        Amf0Value::Number(1.0),
    ]))
    .unwrap();
    p.send_raw(&command(&[s("FCUnpublish")])).unwrap();
    let mut props = HashMap::new();
    props.insert("width".to_owned(), Amf0Value::Number(-5.0));
    p.send_raw(&data(&[s("onMetaData"), Amf0Value::Object(props)]))
        .unwrap();
    // A command without a name.
    assert!(matches!(
        p.send_raw(&command(&[Amf0Value::Number(1.0)])),
        Err(Close::Protocol(_))
    ));
}

#[test]
fn interleaved_media_reaches_the_relay_whole() {
    let ctx = context(AuthConfig {
        open_publish: true,
        ..AuthConfig::default()
    });
    let mut viewer_sub = ctx.hub.subscribe("live/cam3");
    let mut p = Pair::connected(&ctx, "live");
    p.publish("cam3").unwrap();
    p.video(0, &avc_header()).unwrap();
    p.video(0, &keyframe(0)).unwrap();
    // A 300-byte video frame and an audio frame, their 128-byte chunks interleaved.
    let mut frame = vec![0x17, 1, 0, 0, 0, 0, 0, 1, 35, 0x65];
    frame.resize(300, 7);
    let audio = [0xAF, 1, 9, 9];
    let mut w = control::set_chunk_size(128).to_vec();
    w.extend_from_slice(&[6, 0, 0, 40, 0, 1, 44, msg_type::VIDEO, 1, 0, 0, 0]);
    w.extend_from_slice(&frame[..128]);
    w.extend_from_slice(&[4, 0, 0, 40, 0, 0, 4, msg_type::AUDIO, 1, 0, 0, 0]);
    w.extend_from_slice(&audio);
    w.push(0xC6);
    w.extend_from_slice(&frame[128..256]);
    w.push(0xC6);
    w.extend_from_slice(&frame[256..]);
    p.send_raw(&w).unwrap();
    let mut sizes = Vec::new();
    while let Some(e) = viewer_sub.try_recv() {
        if let Event::Frame(f) = e {
            sizes.push(f.frame.payload.len());
        }
    }
    assert_eq!(sizes, [6, 2, 295]);
}

#[test]
fn a_silent_publisher_is_closed_and_a_viewer_is_not() {
    let ctx = context(AuthConfig {
        open_publish: true,
        ..AuthConfig::default()
    });
    let mut p = Pair::connected(&ctx, "live");
    p.publish("cam4").unwrap();
    let idle = SessionLimits::default().idle_timeout;
    assert_eq!(p.server.timeout(), Some(p.now + idle));
    p.now += idle / 2;
    p.video(0, &keyframe(1)).unwrap();
    assert_eq!(p.server.timeout(), Some(p.now + idle), "media moves it");
    assert!(matches!(
        p.server.handle_timeout(p.now + idle),
        Err(Close::PublisherIdle)
    ));
    let mut v = Pair::connected(&ctx, "live");
    v.play("cam4").unwrap();
    assert_eq!(v.server.timeout(), None);
}

#[test]
fn deleting_the_stream_ends_the_publish_and_restarts_the_clock() {
    let ctx = context(AuthConfig {
        open_publish: true,
        ..AuthConfig::default()
    });
    let mut p = Pair::connected(&ctx, "live");
    p.publish("cam5").unwrap();
    assert!(ctx.hub.stream_stats("live/cam5").is_some_and(|s| s.live));
    let r = p.client.stop_publishing().unwrap();
    p.send(r).unwrap();
    assert!(matches!(p.actions.last(), Some(Action::Ended)));
    assert!(p.server.granted().is_none());
    assert!(ctx.hub.stream_stats("live/cam5").is_none_or(|s| !s.live));
    assert_eq!(
        p.server.timeout(),
        Some(p.now + SessionLimits::default().grant_timeout)
    );
}

#[test]
fn pings_and_acknowledgements_are_answered() {
    let ctx = context(AuthConfig::default());
    let mut p = Pair::connected(&ctx, "live");
    let (ping, _) = p.client.send_ping_request().unwrap();
    p.send_raw(&ping.bytes).unwrap();
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, ClientSessionEvent::PingResponseReceived { .. })));
    // The client announced a window of 2.5 MB: after that much, an acknowledgement.
    let filler = command(&[s("_checkbw"), Amf0Value::Number(3.0), Amf0Value::Null]);
    p.send_raw(&chunk_size_4096()).unwrap();
    let before = p.server.received;
    while p.server.received - before < 100 {
        p.send_raw(&filler).unwrap();
    }
    p.server.client_window = 100;
    p.send_raw(&filler).unwrap();
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, ClientSessionEvent::AcknowledgementReceived { .. })));
}

#[test]
fn every_close_reason_is_counted_under_its_kind() {
    let closes = [
        Close::PeerClosed,
        Close::Io(std::io::Error::other("x")),
        Close::Handshake("x".into()),
        Close::Chunk(ChunkError::TooManyChunkStreams),
        Close::Amf0(Amf0Error::TooDeep),
        Close::Protocol("x"),
        Close::Limit("x"),
        Close::HandshakeTimeout,
        Close::GrantTimeout,
        Close::PublisherIdle,
        Close::Refused,
        Close::Revoked,
        Close::Shutdown,
        Close::StreamEnded,
        Close::Stalled,
    ];
    let ctx = context(AuthConfig::default());
    for c in &closes {
        ctx.stats.count(c);
    }
    let counted = ctx.stats.closed();
    assert_eq!(counted.len(), closes.len());
    assert!(counted.iter().all(|(_, n)| *n == 1), "{counted:?}");
}

/// An origin and an edge sharing a cluster secret, each with its own relay.
fn cluster_contexts() -> (Arc<RtmpContext>, Arc<RtmpContext>, ClusterKey) {
    let key = ClusterKey::new("a cluster secret of some length").unwrap();
    let node = |key: &ClusterKey| {
        let auth = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
            .unwrap()
            .with_cluster(key.clone());
        let admission = Admission::new(Arc::new(auth), Hub::new(), FailurePolicy::default());
        Arc::new(RtmpContext::new(
            Arc::new(admission),
            SessionLimits::default(),
        ))
    };
    (node(&key), node(&key), key)
}

/// The edge's pull client against the origin's session, in memory: what each says goes to
/// the other until neither has more; the media the client read.
fn exchange(
    ctx: &RtmpContext,
    server: &mut Session,
    client: &mut crate::pull::PullClient,
    plays: &mut Vec<Action>,
    now: Instant,
) -> Result<Vec<crate::dechunk::Message>, crate::pull::PullError> {
    let mut media = Vec::new();
    loop {
        let to_server = client.take_output();
        if !to_server.is_empty() {
            // The origin's verdicts on the way come back as its output.
            let _ = server.receive(&to_server.concat(), now);
            while let Some(a) = server.poll_action() {
                match a {
                    Action::Admit(request) => {
                        let decision = ctx.admission.admit_now(&request);
                        let _ = server.admitted(decision, now);
                    }
                    a => plays.push(a),
                }
            }
        }
        let mut to_client = Vec::new();
        server.take_output(&mut to_client);
        if to_client.is_empty() && to_server.is_empty() {
            return Ok(media);
        }
        if !to_client.is_empty() {
            media.extend(client.receive(&to_client.concat())?);
        }
    }
}

#[test]
fn an_edge_pulls_a_stream_from_its_origin_into_its_own_relay() {
    let (origin, edge, key) = cluster_contexts();
    let cam = StreamName::new("live/cam1").unwrap();
    let now = Instant::now();
    // The origin's publish.
    let token = publish_token(&origin);
    let mut publisher = Pair::connected(&origin, "live");
    publisher.publish(&format!("cam1?token={token}")).unwrap();
    publisher.expect(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted));
    publisher.video(0, &avc_header()).unwrap();
    publisher.audio(0, &[0xAF, 0, 0x12, 0x10]).unwrap();

    // The edge's relayed publish, and a viewer of it on the edge.
    let relay = AdmitRequest::new(
        Protocol::Cluster,
        AuthAction::Publish,
        cam.clone(),
        Some(key.proof(ProofUse::Relay, &cam, SystemTime::now())),
        peer().ip(),
    );
    let Ok(Admitted::Publish(relayed)) = edge.admission.admit_now(&relay) else {
        panic!("the relayed publish was refused");
    };
    let mut edge_viewer = edge.hub.subscribe("live/cam1");
    let mut publishing = Publishing::new(relayed, 0);

    // The pull, admitted on the origin by its proof, whatever the stream's tokens say.
    let proof = key.proof(ProofUse::Pull, &cam, SystemTime::now());
    let mut server = Session::new(&origin, peer(), now);
    let mut client = crate::pull::PullClient::new("origin:1935", &cam, &proof, 1 << 20).unwrap();
    let mut plays = Vec::new();
    let media = exchange(&origin, &mut server, &mut client, &mut plays, now).unwrap();
    assert!(client.is_playing(), "{client:?}");
    assert!(
        media.iter().all(|m| m.type_id == msg_type::DATA_AMF0),
        "no media before the publisher sends it"
    );
    let Some(Action::Play { mut subscriber, .. }) =
        plays.into_iter().find(|a| matches!(a, Action::Play { .. }))
    else {
        panic!("the origin started no play");
    };
    for i in 0..3u8 {
        publisher.video(u32::from(i) * 40, &keyframe(i)).unwrap();
        publisher.audio(u32::from(i) * 23, &[0xAF, 1, i]).unwrap();
    }
    while let Some(e) = subscriber.try_recv() {
        server.relay_event(e).unwrap();
    }
    let mut plays = Vec::new();
    let media = exchange(&origin, &mut server, &mut client, &mut plays, now).unwrap();
    for m in media {
        if m.type_id == msg_type::DATA_AMF0 {
            publishing.take_data(&m.payload).unwrap();
        } else {
            publishing.take_media(m, &peer());
        }
    }
    publishing.push_frames();
    // The edge's viewer reads the origin's frames: the configuration, then the keyframes.
    let mut frames = 0;
    let mut started = false;
    while let Some(e) = edge_viewer.try_recv() {
        match e {
            Event::Started(..) => started = true,
            Event::Frame(_) => frames += 1,
            Event::Ended => {}
        }
    }
    assert!(started);
    assert_eq!(frames, 6, "three keyframes and three audio frames");

    // The origin's publish ends: so does the pull.
    drop(publisher);
    while let Some(e) = subscriber.try_recv() {
        let _ = server.relay_event(e);
    }
    let mut plays = Vec::new();
    let _ = exchange(&origin, &mut server, &mut client, &mut plays, now);
    assert!(client.has_ended(), "{client:?}");
}

#[test]
fn a_pull_with_a_proof_of_another_cluster_or_stream_is_refused() {
    let (origin, _, key) = cluster_contexts();
    let cam = StreamName::new("live/cam1").unwrap();
    let other = StreamName::new("live/other").unwrap();
    let now = Instant::now();
    let token = publish_token(&origin);
    let mut publisher = Pair::connected(&origin, "live");
    publisher.publish(&format!("cam1?token={token}")).unwrap();
    let stranger = ClusterKey::new("another cluster's secret").unwrap();
    for proof in [
        stranger.proof(ProofUse::Pull, &cam, SystemTime::now()),
        key.proof(ProofUse::Pull, &other, SystemTime::now()),
        key.proof(ProofUse::Relay, &cam, SystemTime::now()),
    ] {
        let mut server = Session::new(&origin, peer(), now);
        let mut client =
            crate::pull::PullClient::new("origin:1935", &cam, &proof, 1 << 20).unwrap();
        let err = exchange(&origin, &mut server, &mut client, &mut Vec::new(), now).unwrap_err();
        assert!(matches!(err, crate::pull::PullError::Refused(_)), "{err}");
        assert!(!client.is_playing());
    }
    // A relayed publish asked for over RTMP, with a genuine proof, is refused too.
    let mut p = Pair::connected(&origin, "live");
    let proof = key.proof(ProofUse::Relay, &cam, SystemTime::now());
    assert!(matches!(
        p.publish(&format!("cam2?token={proof}")),
        Err(Close::Refused)
    ));
}
