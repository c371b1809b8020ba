//! HLS and DASH playback sessions. The first request of a playback (a playlist or manifest
//! with `?token=`) goes through the one admission path; the session it opens continues with a
//! session id the server writes into every URI of its playlists, so players need no cookies.
//!
//! The id is 128 random bits and a MAC over them, the stream and the client address, keyed
//! with a secret of this server process: a request whose id does not verify for its stream and
//! address is refused before any lookup. The table holds the admitted [`PlaySession`] (its
//! grant, counted among the stream's viewers), so a change to the token ends the session as it
//! ends every other: the next request gets 403. Sessions end when idle, and are capped in all
//! and per source address.
//!
//! A player that asks for the playlist or manifest again with the same token (ffmpeg reloads
//! a DASH manifest from its first URL; a page is reloaded) from the same address, with the
//! same Origin and User-Agent, while its session lasts, rejoins that session instead of
//! opening another, unless the token counts its uses (one-time and N-use tokens, and those
//! that bind addresses on use): those are spent once per playback.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use streamgate_admission::{EndReason, PlaySession};
use streamgate_auth::{ConnectionGate, GatePass, Protocol, StreamName};

use crate::feed::Feed;

/// Bytes of a session id's random part, and of its MAC.
const ID_LEN: usize = 16;
const MAC_LEN: usize = 16;

/// The bounds of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// A session no request has used for this long ends.
    pub idle: Duration,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most sessions from one source address (IPv6: one /64).
    pub max_per_ip: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30),
            max_sessions: 20_000,
            max_per_ip: 256,
        }
    }
}

/// One playback session.
#[derive(Debug)]
pub struct HttpSession {
    id: [u8; ID_LEN],
    /// The sid as written into URIs.
    sid: String,
    stream: StreamName,
    ip: IpAddr,
    /// The Origin of the request that opened it: later requests from that origin get it
    /// back in `Access-Control-Allow-Origin`.
    origin: Option<String>,
    /// Its key among the sessions a repeated first request may rejoin.
    rejoin: Option<[u8; 32]>,
    play: Mutex<PlaySession>,
    feed: Arc<Feed>,
    used: AtomicU64,
    _pass: GatePass,
}

impl HttpSession {
    /// The session id, as URIs carry it.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The stream.
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// The Origin it was opened from.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The stream's feed.
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// HLS or DASH.
    pub fn protocol(&self) -> Protocol {
        self.lock().protocol()
    }

    /// When its token expires (Unix milliseconds), if it does.
    pub fn expires_on(&self) -> Option<i64> {
        self.lock().grant().expires_on()
    }

    /// Whether the server has ended it (its token revoked, changed or expired; an
    /// anonymous viewer's publish ended).
    pub fn is_ended(&self) -> bool {
        self.lock().is_revoked()
    }

    fn lock(&self) -> MutexGuard<'_, PlaySession> {
        self.play.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a request's session id is not honoured (each answered 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It is not one this server made for this stream and address.
    Invalid,
    /// It was, but the session has ended (revoked, expired, idle).
    Ended,
}

/// Why no session could be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// As many sessions as allowed are open.
    Server,
    /// As many sessions as allowed are open from the client's address.
    Address,
}

/// The sessions by id, and those that may be rejoined by their rejoin key.
#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<[u8; ID_LEN], Arc<HttpSession>>,
    by_rejoin: HashMap<[u8; 32], [u8; ID_LEN]>,
}

impl Table {
    fn remove(&mut self, id: &[u8; ID_LEN]) -> Option<Arc<HttpSession>> {
        let session = self.by_id.remove(id)?;
        if let Some(key) = &session.rejoin {
            if self.by_rejoin.get(key) == Some(id) {
                self.by_rejoin.remove(key);
            }
        }
        Some(session)
    }
}

/// What a repeated first request must match to rejoin a session.
#[derive(Debug, Clone, Copy)]
pub struct RejoinKey<'a> {
    /// The token presented (`None`: none).
    pub token: Option<&'a str>,
    /// The stream.
    pub stream: &'a StreamName,
    /// The client address.
    pub ip: IpAddr,
    /// The Origin header.
    pub origin: Option<&'a str>,
    /// The User-Agent header.
    pub user_agent: Option<&'a str>,
    /// HLS or DASH.
    pub protocol: Protocol,
}

/// The sessions.
#[derive(Debug)]
pub struct Sessions {
    key: [u8; 32],
    settings: SessionSettings,
    map: Mutex<Table>,
    gate: ConnectionGate,
    start: Instant,
}

impl Sessions {
    /// An empty table with a fresh key.
    pub fn new(settings: SessionSettings) -> Self {
        let mut key = [0; 32];
        fill_random(&mut key);
        Self::with_key(settings, key)
    }

    fn with_key(settings: SessionSettings, key: [u8; 32]) -> Self {
        Self {
            key,
            settings,
            map: Mutex::new(Table::default()),
            gate: ConnectionGate::new("hls", settings.max_sessions, settings.max_per_ip),
            start: Instant::now(),
        }
    }

    /// The count of sessions per source address (for metrics).
    pub fn gate(&self) -> &ConnectionGate {
        &self.gate
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place for a session from `ip`, taken before admission (so that a full server
    /// spends no token).
    pub fn reserve(&self, ip: IpAddr) -> Result<GatePass, Full> {
        self.gate.try_enter(ip).map_err(|r| match r {
            streamgate_auth::GateRefusal::ListenerFull => Full::Server,
            streamgate_auth::GateRefusal::AddressFull => Full::Address,
        })
    }

    /// Opens a session for an admitted play from `ip`, reading `feed`; one that `rejoin`
    /// (if given) may find again.
    pub fn open(
        &self,
        play: PlaySession,
        ip: IpAddr,
        origin: Option<String>,
        feed: Arc<Feed>,
        pass: GatePass,
        rejoin: Option<RejoinKey<'_>>,
    ) -> Arc<HttpSession> {
        let mut id = [0; ID_LEN];
        fill_random(&mut id);
        let stream = play.stream().clone();
        let sid = encode(&id, &self.mac(&id, &stream, ip));
        let rejoin = rejoin.map(|k| self.rejoin_key(k));
        let session = Arc::new(HttpSession {
            id,
            sid,
            stream,
            ip,
            origin,
            rejoin,
            play: Mutex::new(play),
            feed,
            used: AtomicU64::new(self.now_ms()),
            _pass: pass,
        });
        let mut table = self.lock();
        table.by_id.insert(id, Arc::clone(&session));
        if let Some(key) = rejoin {
            table.by_rejoin.insert(key, id);
        }
        session
    }

    /// The live session a repeated first request rejoins, marked used.
    pub fn rejoin(&self, key: RejoinKey<'_>) -> Option<Arc<HttpSession>> {
        let key = self.rejoin_key(key);
        let session = {
            let table = self.lock();
            let id = table.by_rejoin.get(&key)?;
            Arc::clone(table.by_id.get(id)?)
        };
        if session.is_ended() {
            self.end(&session, None);
            return None;
        }
        session.used.store(self.now_ms(), Ordering::Relaxed);
        Some(session)
    }

    fn rejoin_key(&self, k: RejoinKey<'_>) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(b"streamgate hls rejoin\0");
        for field in [
            k.token,
            Some(k.stream.as_str()),
            k.origin,
            k.user_agent,
            Some(k.protocol.as_str()),
        ] {
            // Each field with its length, so that no two lists of fields read the same.
            let bytes = field.map_or(&b""[..], str::as_bytes);
            mac.update(&[u8::from(field.is_some())]);
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        }
        match k.ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.finalize().into_bytes().into()
    }

    /// The session of `sid` for a request on `stream` from `ip`, marked used.
    pub fn find(
        &self,
        sid: &str,
        stream: &StreamName,
        ip: IpAddr,
    ) -> Result<Arc<HttpSession>, Refused> {
        let (id, mac) = decode(sid).ok_or(Refused::Invalid)?;
        if !self.verify(&id, stream, ip, &mac) {
            return Err(Refused::Invalid);
        }
        let session = self.lock().by_id.get(&id).cloned().ok_or(Refused::Ended)?;
        if session.stream != *stream || session.ip != ip {
            return Err(Refused::Invalid);
        }
        if session.is_ended() {
            self.end(&session, None);
            return Err(Refused::Ended);
        }
        session.used.store(self.now_ms(), Ordering::Relaxed);
        Ok(session)
    }

    /// Ends `session` (its grant is released; `reason` if the server did not end it).
    fn end(&self, session: &HttpSession, reason: Option<EndReason>) {
        let removed = self.lock().remove(&session.id);
        if let (Some(removed), Some(reason)) = (removed, reason) {
            removed.lock().set_end_reason(reason);
        }
    }

    /// Ends the sessions the server has ended and those idle for the idle time; returns
    /// how many ended.
    pub fn sweep(&self) -> usize {
        let idle_ms = u64::try_from(self.settings.idle.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let ended: Vec<(Arc<HttpSession>, bool)> = self
            .lock()
            .by_id
            .values()
            .filter_map(|s| {
                let idle = now.saturating_sub(s.used.load(Ordering::Relaxed)) >= idle_ms;
                (idle || s.is_ended()).then(|| (Arc::clone(s), idle))
            })
            .collect();
        for (session, idle) in &ended {
            // An idle session's client has gone away.
            self.end(session, idle.then_some(EndReason::ClientClosed));
        }
        ended.len()
    }

    /// Ends every session (server shutdown).
    pub fn clear(&self) {
        let all: Vec<Arc<HttpSession>> = {
            let mut table = self.lock();
            table.by_rejoin.clear();
            table.by_id.drain().map(|(_, s)| s).collect()
        };
        for s in all {
            s.lock().set_end_reason(EndReason::Shutdown);
        }
    }

    fn mac_of(&self, id: &[u8; ID_LEN], stream: &StreamName, ip: IpAddr) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(b"streamgate hls session\0");
        mac.update(id);
        mac.update(stream.as_str().as_bytes());
        mac.update(b"\0");
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac
    }

    fn mac(&self, id: &[u8; ID_LEN], stream: &StreamName, ip: IpAddr) -> [u8; MAC_LEN] {
        let tag = self.mac_of(id, stream, ip).finalize().into_bytes();
        let mut out = [0; MAC_LEN];
        for (o, t) in out.iter_mut().zip(tag.iter()) {
            *o = *t;
        }
        out
    }

    fn verify(&self, id: &[u8; ID_LEN], stream: &StreamName, ip: IpAddr, mac: &[u8]) -> bool {
        self.mac_of(id, stream, ip)
            .verify_truncated_left(mac)
            .is_ok()
    }
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // The OS's generator is how the server makes every secret; without it, no session
        // id can be trusted, and the process cannot serve safely.
        panic!("the operating system's random number generator failed");
    }
}

/// The id and MAC as 64 hexadecimal digits.
fn encode(id: &[u8; ID_LEN], mac: &[u8; MAC_LEN]) -> String {
    id.iter()
        .chain(mac.iter())
        .flat_map(|b| [b >> 4, b & 15])
        .filter_map(|d| char::from_digit(u32::from(d), 16))
        .collect()
}

fn decode(sid: &str) -> Option<([u8; ID_LEN], [u8; MAC_LEN])> {
    let bytes = sid.as_bytes();
    if bytes.len() != 2 * (ID_LEN + MAC_LEN) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; ID_LEN + MAC_LEN];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let &[high, low] = pair else { return None };
        *o = digit(high)? << 4 | digit(low)?;
    }
    let mut id = [0; ID_LEN];
    let mut mac = [0; MAC_LEN];
    id.copy_from_slice(&out[..ID_LEN]);
    mac.copy_from_slice(&out[ID_LEN..]);
    Some((id, mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use streamgate_admission::{Admission, AdmitRequest, Admitted};
    use streamgate_auth::{
        Action, Auth, AuthConfig, FailurePolicy, MemoryStore, TokenKind, TokenSpec,
    };
    use streamgate_relay::Hub;
    use tokio_util::sync::CancellationToken;

    use crate::feed::{FeedSettings, Feeds};

    struct World {
        admission: Admission,
        feeds: Arc<Feeds>,
        stream: StreamName,
        ip: IpAddr,
        _publish: Admitted,
    }

    /// A live stream `live/cam1` in memory, and what plays it over HTTP.
    fn world() -> World {
        let auth =
            Arc::new(Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default()).unwrap());
        let hub = Hub::new();
        let admission = Admission::new(
            Arc::clone(&auth),
            hub.clone(),
            FailurePolicy {
                base_delay: Duration::ZERO,
                ..FailurePolicy::default()
            },
        );
        let stream = StreamName::new("live/cam1").unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let (_, secret) = auth
            .create(TokenKind::Publish, TokenSpec::new("p"), SystemTime::now())
            .unwrap();
        let publish = admission
            .admit_now(&AdmitRequest::new(
                Protocol::Rtmp,
                Action::Publish,
                stream.clone(),
                Some(secret.expose().to_owned()),
                ip,
            ))
            .unwrap();
        let feeds = Feeds::new(
            hub,
            FeedSettings::default(),
            Arc::new(|_: &str| {}),
            CancellationToken::new(),
        );
        World {
            admission,
            feeds,
            stream,
            ip,
            _publish: publish,
        }
    }

    impl World {
        /// A subscribe token, and a session it admits.
        fn play(&self, sessions: &Sessions) -> (i64, String, Arc<HttpSession>) {
            let (rec, secret) = self
                .admission
                .auth()
                .create(TokenKind::Subscribe, TokenSpec::new("s"), SystemTime::now())
                .unwrap();
            let token = secret.expose().to_owned();
            let Ok(Admitted::Play(play)) = self.admission.admit_now(&AdmitRequest::new(
                Protocol::Hls,
                Action::Play,
                self.stream.clone(),
                Some(token.clone()),
                self.ip,
            )) else {
                panic!("not admitted");
            };
            let pass = sessions.reserve(self.ip).unwrap();
            let feed = self.feeds.get(self.stream.as_str()).unwrap();
            let session = sessions.open(play, self.ip, None, feed, pass, None);
            (rec.id.0, token, session)
        }
    }

    #[tokio::test]
    async fn a_session_ends_with_its_token_and_when_idle() {
        let w = world();
        let sessions = Sessions::with_key(
            SessionSettings {
                idle: Duration::from_millis(200),
                ..SessionSettings::default()
            },
            [9; 32],
        );
        let (id, _, session) = w.play(&sessions);
        let sid = session.sid().to_owned();
        assert!(sessions.find(&sid, &w.stream, w.ip).is_ok());
        assert_eq!(session.protocol(), Protocol::Hls);
        // Another address, even with the id: refused.
        let elsewhere: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(
            sessions.find(&sid, &w.stream, elsewhere).unwrap_err(),
            Refused::Invalid
        );
        // Deleting the token ends it: its next request is refused, and the table lets go.
        w.admission
            .auth()
            .delete(TokenKind::Subscribe, streamgate_auth::TokenId(id))
            .unwrap();
        assert_eq!(
            sessions.find(&sid, &w.stream, w.ip).unwrap_err(),
            Refused::Ended
        );
        assert!(sessions.is_empty());
        drop(session);
        assert_eq!(sessions.gate().stats().open, 0, "its place is given back");

        // A session nobody uses ends after the idle time; one in use does not.
        let (_, _, idle) = w.play(&sessions);
        let (_, _, used) = w.play(&sessions);
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(sessions.find(used.sid(), &w.stream, w.ip).is_ok());
            sessions.sweep();
        }
        assert_eq!(
            sessions.find(idle.sid(), &w.stream, w.ip).unwrap_err(),
            Refused::Ended
        );
        assert_eq!(sessions.len(), 1);
        sessions.clear();
        assert!(sessions.is_empty());
    }

    #[tokio::test]
    async fn sessions_are_capped_per_address_and_rejoined_by_the_same_client() {
        let w = world();
        let sessions = Sessions::with_key(
            SessionSettings {
                max_per_ip: 2,
                ..SessionSettings::default()
            },
            [3; 32],
        );
        let (_, token, first) = w.play(&sessions);
        let _second = w.play(&sessions);
        assert_eq!(sessions.reserve(w.ip).unwrap_err(), Full::Address);
        assert!(sessions.reserve("192.0.2.99".parse().unwrap()).is_ok());

        // The same token, address, Origin and User-Agent find the session again; any other
        // fact, or no rejoin key at opening, does not.
        let key = |token, ua| RejoinKey {
            token: Some(token),
            stream: &w.stream,
            ip: w.ip,
            origin: None,
            user_agent: ua,
            protocol: Protocol::Hls,
        };
        assert!(sessions.rejoin(key(&token, Some("ffmpeg"))).is_none());
        let Ok(Admitted::Play(play)) = w.admission.admit_now(&AdmitRequest::new(
            Protocol::Hls,
            Action::Play,
            w.stream.clone(),
            Some(token.clone()),
            "192.0.2.50".parse().unwrap(),
        )) else {
            panic!("not admitted");
        };
        drop(first);
        let pass = sessions.reserve("192.0.2.50".parse().unwrap()).unwrap();
        let feed = w.feeds.get(w.stream.as_str()).unwrap();
        let other_ip: IpAddr = "192.0.2.50".parse().unwrap();
        let rejoinable = sessions.open(
            play,
            other_ip,
            None,
            feed,
            pass,
            Some(RejoinKey {
                ip: other_ip,
                ..key(&token, Some("ffmpeg"))
            }),
        );
        let again = sessions
            .rejoin(RejoinKey {
                ip: other_ip,
                ..key(&token, Some("ffmpeg"))
            })
            .unwrap();
        assert!(Arc::ptr_eq(&again, &rejoinable));
        assert!(sessions
            .rejoin(RejoinKey {
                ip: other_ip,
                ..key(&token, Some("curl"))
            })
            .is_none());
        assert!(sessions.rejoin(key(&token, Some("ffmpeg"))).is_none());
    }

    #[test]
    fn ids_round_trip_and_bind_stream_and_address() {
        let sessions = Sessions::with_key(SessionSettings::default(), [7; 32]);
        let stream = StreamName::new("live/cam1").unwrap();
        let other = StreamName::new("live/cam2").unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let id = [3; ID_LEN];
        let mac = sessions.mac(&id, &stream, ip);
        let sid = encode(&id, &mac);
        assert_eq!(sid.len(), 64);
        assert_eq!(decode(&sid), Some((id, mac)));
        assert!(sessions.verify(&id, &stream, ip, &mac));
        assert!(!sessions.verify(&id, &other, ip, &mac));
        assert!(!sessions.verify(&id, &stream, "192.0.2.2".parse().unwrap(), &mac));
        let other_key = Sessions::with_key(SessionSettings::default(), [8; 32]);
        assert!(!other_key.verify(&id, &stream, ip, &mac));
        // A well-formed id the table does not hold is an ended session; anything else is
        // not an id.
        assert_eq!(
            sessions.find(&sid, &stream, ip).unwrap_err(),
            Refused::Ended
        );
        assert_eq!(
            sessions.find(&sid, &other, ip).unwrap_err(),
            Refused::Invalid
        );
        for bad in [
            "",
            "zz",
            &sid[..63],
            &sid.to_uppercase(),
            &format!("{sid}0"),
        ] {
            assert_eq!(
                sessions.find(bad, &stream, ip).unwrap_err(),
                Refused::Invalid,
                "{bad}"
            );
        }
    }
}
