//! The requests of HTTP playback: playlists and manifests, initialization segments,
//! segments and parts, with caching headers, ETags and CORS.
//!
//! Refusals are a status and a short text: 400 for a malformed request, 403 when the
//! admission path refuses or the session id is not (or no longer) valid, 404 for a stream
//! that is not live or media that is not (or no longer) kept, 503 when the server is full
//! or a blocking request waited too long.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use streamgate_admission::AdmitRequest;
use streamgate_auth::{Action, Denial, Protocol, StreamName};
use streamgate_media::TrackKind;

use crate::feed::{FeedState, Snapshot};
use crate::playlist::{self, MediaOptions};
use crate::session::{Full, HttpSession, RejoinKey};
use crate::HlsContext;

/// How long a first request waits for a live stream's first media.
const START_WAIT: Duration = Duration::from_secs(10);
/// Media types.
const M3U8: &str = "application/vnd.apple.mpegurl";
const MPD: &str = "application/dash+xml";
const MP4_VIDEO: &str = "video/mp4";
const MP4_AUDIO: &str = "audio/mp4";
/// Segments, parts and initialization segments never change once served.
const IMMUTABLE: &str = "public, max-age=86400, immutable";
/// Playlists and manifests change with every part.
const SHORT: &str = "max-age=1";
/// A response that opens a session is that client's alone.
const PRIVATE: &str = "private, no-store";
/// Headers a page's script may read.
const EXPOSED: &str = "Token-Expires, ETag";

pub(crate) fn routes() -> Router<Arc<HlsContext>> {
    Router::new()
        .route("/{app}/streams/{file}", get(top).options(preflight))
        .route(
            "/{app}/streams/{stream}/{file}",
            get(inner).options(preflight),
        )
}

/// The query of every request.
#[derive(Debug, Default, Deserialize)]
struct Params {
    token: Option<String>,
    /// Mediastream's name for it.
    access_token: Option<String>,
    sid: Option<String>,
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
}

impl Params {
    fn token(&self) -> Option<&str> {
        self.token
            .as_deref()
            .or(self.access_token.as_deref())
            .filter(|t| !t.is_empty())
    }
}

/// What a request under `/{app}/streams/{stream}/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    Media,
    Mpd,
    Init {
        version: u64,
        track: Option<TrackKind>,
    },
    Segment {
        msn: u64,
        track: Option<TrackKind>,
    },
    Part {
        msn: u64,
        index: usize,
    },
}

fn number(s: &str) -> Option<u64> {
    (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `42`, `42-video` or `42-audio`.
fn numbered_track(s: &str) -> Option<(u64, Option<TrackKind>)> {
    if let Some(n) = s.strip_suffix("-video") {
        return Some((number(n)?, Some(TrackKind::Video)));
    }
    if let Some(n) = s.strip_suffix("-audio") {
        return Some((number(n)?, Some(TrackKind::Audio)));
    }
    Some((number(s)?, None))
}

fn parse_file(stream: &str, file: &str) -> Option<File> {
    if file == "media.m3u8" {
        return Some(File::Media);
    }
    if file.strip_suffix(".mpd") == Some(stream) {
        return Some(File::Mpd);
    }
    if let Some(rest) = file
        .strip_prefix("init-")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        let (version, track) = numbered_track(rest)?;
        return Some(File::Init { version, track });
    }
    if let Some(rest) = file
        .strip_prefix("seg-")
        .and_then(|r| r.strip_suffix(".m4s"))
    {
        let (msn, track) = numbered_track(rest)?;
        return Some(File::Segment { msn, track });
    }
    if let Some(rest) = file
        .strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".m4s"))
    {
        let (msn, index) = rest.split_once('.')?;
        return Some(File::Part {
            msn: number(msn)?,
            index: usize::try_from(number(index)?).ok()?,
        });
    }
    None
}

/// One request's facts.
struct Req {
    ip: IpAddr,
    origin: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
    if_none_match: Option<String>,
}

impl Req {
    fn new(peer: SocketAddr, headers: &HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            ip: peer.ip(),
            origin: text(header::ORIGIN),
            referer: text(header::REFERER),
            user_agent: text(header::USER_AGENT),
            if_none_match: text(header::IF_NONE_MATCH),
        }
    }
}

fn refuse(status: StatusCode, text: &str) -> Response {
    let mut response = (status, format!("{text}\n")).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn stream_name(app: &str, stream: &str) -> Option<StreamName> {
    StreamName::new(&format!("{app}/{stream}")).ok()
}

/// `Access-Control-Allow-Origin` for a request from the origin its session was opened from.
fn cors(response: &mut Response, req: &Req, allowed: Option<&str>) {
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = req.origin.as_deref() else {
        return;
    };
    if allowed != Some(origin) {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
}

async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    if let Some(origin) = headers.get(header::ORIGIN) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Range, If-None-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

async fn top(
    State(ctx): State<Arc<HlsContext>>,
    Path((app, file)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let req = Req::new(peer, &headers);
    match file.strip_suffix(".m3u8") {
        Some(stream) if !stream.is_empty() => {
            first(&ctx, Protocol::Hls, &app, stream, &params, &req).await
        }
        _ => refuse(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn inner(
    State(ctx): State<Arc<HlsContext>>,
    Path((app, stream, file)): Path<(String, String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let req = Req::new(peer, &headers);
    let Some(what) = parse_file(&stream, &file) else {
        return refuse(StatusCode::NOT_FOUND, "not found");
    };
    if what == File::Mpd {
        return first(&ctx, Protocol::Dash, &app, &stream, &params, &req).await;
    }
    let Some(name) = stream_name(&app, &stream) else {
        return refuse(StatusCode::BAD_REQUEST, "not a stream name");
    };
    let Some(sid) = params.sid.as_deref() else {
        return refuse(StatusCode::FORBIDDEN, "no session: open the playlist first");
    };
    let session = match ctx.sessions.find(sid, &name, req.ip) {
        Ok(s) => s,
        Err(_) => return refuse(StatusCode::FORBIDDEN, "session not valid or ended"),
    };
    ctx.feeds.touch(session.feed());
    let mut response = match what {
        File::Media => media(&ctx, &session, &params).await,
        File::Init { version, track } => init(&session, version, track),
        File::Segment { msn, track } => segment(&session, msn, track).await,
        File::Part { msn, index } => part(&session, msn, index).await,
        File::Mpd => unreachable_mpd(),
    };
    not_modified(&mut response, &req);
    cors(&mut response, &req, session.origin());
    response
}

/// The MPD is answered by [`first`]; this arm cannot be reached.
fn unreachable_mpd() -> Response {
    refuse(StatusCode::NOT_FOUND, "not found")
}

/// A 304 for a request whose `If-None-Match` names the response's `ETag`.
fn not_modified(response: &mut Response, req: &Req) {
    let (Some(tags), Some(etag)) = (
        req.if_none_match.as_deref(),
        response.headers().get(header::ETAG),
    ) else {
        return;
    };
    if response.status() != StatusCode::OK {
        return;
    }
    let etag = etag.as_bytes();
    if tags.split(',').any(|t| t.trim().as_bytes() == etag) {
        let mut headers = std::mem::take(response.headers_mut());
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::CONTENT_TYPE);
        *response = StatusCode::NOT_MODIFIED.into_response();
        *response.headers_mut() = headers;
    }
}

/// A master playlist or an MPD: the first request of a playback (with a token, or none),
/// or a reload with the session's id.
async fn first(
    ctx: &Arc<HlsContext>,
    protocol: Protocol,
    app: &str,
    stream: &str,
    params: &Params,
    req: &Req,
) -> Response {
    let Some(name) = stream_name(app, stream) else {
        return refuse(StatusCode::BAD_REQUEST, "not a stream name");
    };
    let session = match params.sid.as_deref() {
        Some(sid) => match ctx.sessions.find(sid, &name, req.ip) {
            Ok(s) => s,
            Err(_) => return refuse(StatusCode::FORBIDDEN, "session not valid or ended"),
        },
        None => match open(ctx, protocol, &name, params.token(), req).await {
            Ok(s) => s,
            Err(response) => return response,
        },
    };
    ctx.feeds.touch(session.feed());
    let dash = protocol == Protocol::Dash;
    let (snapshot, _) = session
        .feed()
        .wait(START_WAIT, |s| {
            !matches!(s.state, FeedState::Waiting | FeedState::Live)
                || (s.configured() && s.playable(!dash))
        })
        .await;
    if let FeedState::Refused(reason) = snapshot.state {
        return refuse(StatusCode::NOT_FOUND, reason);
    }
    if !snapshot.configured() || !snapshot.playable(!dash) {
        return refuse(StatusCode::NOT_FOUND, "the stream is not live");
    }
    let stream_segment = name.as_str().rsplit('/').next().unwrap_or(stream);
    let mut response = if dash {
        // Where to reload it from: players that honour `Location` keep the session.
        let location = format!(
            "{}.mpd?sid={}",
            playlist::escape_path(stream_segment),
            session.sid()
        );
        text(
            MPD,
            playlist::mpd(&snapshot, session.sid(), &location, SystemTime::now()),
        )
    } else {
        text(
            M3U8,
            playlist::master(&snapshot, stream_segment, session.sid()),
        )
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(PRIVATE));
    if let Some(expires) = session.expires_on() {
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(expires).unwrap_or(0));
        if let Ok(v) = HeaderValue::from_str(&playlist::rfc3339(at)) {
            headers.insert("token-expires", v);
        }
    }
    cors(&mut response, req, session.origin());
    response
}

/// Opens a session through the admission path, or rejoins the one this client opened with
/// the same token.
async fn open(
    ctx: &Arc<HlsContext>,
    protocol: Protocol,
    name: &StreamName,
    token: Option<&str>,
    req: &Req,
) -> Result<Arc<HttpSession>, Response> {
    let admission = &ctx.admission;
    let auth = admission.auth();
    // Tokens that count their uses are spent once per playback: no rejoining.
    let rejoin = (!auth.spends_uses(token)).then_some(RejoinKey {
        token,
        stream: name,
        ip: req.ip,
        origin: req.origin.as_deref(),
        user_agent: req.user_agent.as_deref(),
        protocol,
    });
    if let Some(session) = rejoin.and_then(|k| ctx.sessions.rejoin(k)) {
        tracing::debug!(stream = %name, protocol = protocol.as_str(), peer = %req.ip, "http playback session rejoined");
        return Ok(session);
    }
    // Nothing to play: answered before a token is spent. A stream another node of the
    // cluster publishes is pulled here by the admission.
    if auth.registry().live(name).is_none() && auth.registry().remote(name).is_none() {
        return Err(refuse(StatusCode::NOT_FOUND, "the stream is not live"));
    }
    let pass = ctx.sessions.reserve(req.ip).map_err(|full| match full {
        Full::Server => refuse(StatusCode::SERVICE_UNAVAILABLE, "too many sessions"),
        Full::Address => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sessions from this address",
        ),
    })?;
    if !ctx.feeds.has_room(name.as_str()) {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streams watched over HTTP",
        ));
    }
    let request = AdmitRequest::new(
        protocol,
        Action::Play,
        name.clone(),
        token.map(str::to_owned),
        req.ip,
    )
    .with_headers(
        req.origin.clone(),
        req.referer.clone(),
        req.user_agent.clone(),
    );
    let play = admission
        .admit_play(request)
        .await
        .map_err(|d| refuse(denial_status(d), &d.to_string()))?;
    let Some(feed) = ctx.feeds.get(name.as_str()) else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streams watched over HTTP",
        ));
    };
    tracing::debug!(stream = %name, protocol = protocol.as_str(), peer = %req.ip, "http playback session opened");
    Ok(ctx
        .sessions
        .open(play, req.ip, req.origin.clone(), feed, pass, rejoin))
}

/// Every refusal of the token rules is a 403, as players expect of HLS.
fn denial_status(denial: Denial) -> StatusCode {
    match denial {
        Denial::StreamNotLive => StatusCode::NOT_FOUND,
        Denial::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    }
}

fn text(content_type: &'static str, body: String) -> Response {
    let etag = {
        let mut h = DefaultHasher::new();
        body.hash(&mut h);
        format!("\"{:016x}\"", h.finish())
    };
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(SHORT));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    response
}

/// The media playlist; with `_HLS_msn` (and `_HLS_part`), once it holds that segment (part).
async fn media(ctx: &HlsContext, session: &HttpSession, params: &Params) -> Response {
    let low_latency = ctx.settings.low_latency;
    let feed = session.feed();
    let blocking = match (params.msn.as_deref(), params.part.as_deref()) {
        (None, None) => None,
        (Some(msn), part) => {
            let Some(msn) = number(msn) else {
                return refuse(StatusCode::BAD_REQUEST, "_HLS_msn is not a number");
            };
            let part = match part.map(number) {
                None => None,
                Some(Some(p)) => usize::try_from(p).ok(),
                Some(None) => return refuse(StatusCode::BAD_REQUEST, "_HLS_part is not a number"),
            };
            Some((msn, part))
        }
        (None, Some(_)) => return refuse(StatusCode::BAD_REQUEST, "_HLS_part without _HLS_msn"),
    };
    let snapshot = match blocking {
        Some((msn, part)) if low_latency => {
            let now = feed.snapshot();
            let last = now.segments.last().map_or(0, |s| s.msn);
            if msn > last + 2 {
                return refuse(StatusCode::BAD_REQUEST, "_HLS_msn is too far ahead");
            }
            let wait = now.target * 3;
            let (snapshot, ready) = feed
                .wait(wait, |s| s.state != FeedState::Live || holds(s, msn, part))
                .await;
            if !ready {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the segment asked for did not come in time",
                );
            }
            snapshot
        }
        // Every player can start from a complete segment (players that do not read parts
        // find nothing else to play).
        _ => {
            feed.wait(START_WAIT, |s| {
                !matches!(s.state, FeedState::Waiting | FeedState::Live) || s.playable(false)
            })
            .await
            .0
        }
    };
    if let FeedState::Refused(reason) = snapshot.state {
        return refuse(StatusCode::NOT_FOUND, reason);
    }
    if !snapshot.playable(false) && snapshot.state != FeedState::Ended {
        return refuse(StatusCode::NOT_FOUND, "the stream is not live");
    }
    text(
        M3U8,
        playlist::media(
            &snapshot,
            MediaOptions {
                sid: session.sid(),
                low_latency,
            },
        ),
    )
}

/// Whether the playlist of `s` holds segment `msn` (complete), or its part `part`, or
/// anything after it.
fn holds(s: &Snapshot, msn: u64, part: Option<usize>) -> bool {
    match s.segments.last() {
        None => false,
        Some(last) if last.msn > msn => true,
        Some(_) => s.has(msn, part) || s.segment(msn).is_some_and(|seg| seg.complete),
    }
}

fn init(session: &HttpSession, version: u64, track: Option<TrackKind>) -> Response {
    let snapshot = session.feed().snapshot();
    let Some(inits) = snapshot.init(version) else {
        return refuse(StatusCode::NOT_FOUND, "no such initialization segment");
    };
    let bytes = inits.of(track).clone();
    if bytes.is_empty() {
        return refuse(StatusCode::NOT_FOUND, "the stream has no such track");
    }
    let etag = format!(
        "\"{:x}-i{version}-{}\"",
        session.feed().id(),
        track_tag(track)
    );
    media_response(vec![bytes], track, &etag)
}

fn track_tag(track: Option<TrackKind>) -> &'static str {
    match track {
        None => "av",
        Some(TrackKind::Video) => "v",
        Some(TrackKind::Audio) => "a",
    }
}

/// A segment (both tracks, or one for DASH); the one being made is waited for.
async fn segment(session: &HttpSession, msn: u64, track: Option<TrackKind>) -> Response {
    let feed = session.feed();
    let now = feed.snapshot();
    let coming = now
        .segments
        .last()
        .is_some_and(|last| msn == last.msn || (last.complete && msn == last.msn + 1));
    let snapshot = if now.has(msn, None) || !coming {
        now
    } else {
        let wait = now.target * 3;
        feed.wait(wait, |s| s.has(msn, None) || s.state != FeedState::Live)
            .await
            .0
    };
    let Some(seg) = snapshot.segment(msn).filter(|s| s.complete) else {
        return refuse(StatusCode::NOT_FOUND, "no such segment");
    };
    let chunks: Vec<Bytes> = match track {
        None => seg.parts.iter().flat_map(|p| p.chunks()).collect(),
        Some(kind) => seg.track_chunks(kind).collect(),
    };
    if chunks.is_empty() {
        return refuse(StatusCode::NOT_FOUND, "the stream has no such track");
    }
    let etag = format!("\"{:x}-s{msn}-{}\"", feed.id(), track_tag(track));
    media_response(chunks, track, &etag)
}

/// A part (LL-HLS); the next one (the preload hint) is waited for.
async fn part(session: &HttpSession, msn: u64, index: usize) -> Response {
    let feed = session.feed();
    let now = feed.snapshot();
    let next = now.next_part();
    // The part the playlist hints at, or the one after it.
    let coming = next.is_some_and(|(m, i)| {
        (msn == m && (index == i || index == i + 1)) || (msn == m + 1 && index == 0)
    });
    let snapshot = if now.has(msn, Some(index)) || !coming {
        now
    } else {
        let wait = now.target * 3;
        feed.wait(wait, |s| {
            s.has(msn, Some(index))
                || s.segment(msn).is_some_and(|seg| seg.complete)
                || s.state != FeedState::Live
        })
        .await
        .0
    };
    let Some(p) = snapshot.segment(msn).and_then(|seg| seg.parts.get(index)) else {
        return refuse(StatusCode::NOT_FOUND, "no such part");
    };
    let etag = format!("\"{:x}-p{msn}.{index}\"", feed.id());
    media_response(p.chunks().collect(), None, &etag)
}

fn media_response(chunks: Vec<Bytes>, track: Option<TrackKind>, etag: &str) -> Response {
    let content_type = if track == Some(TrackKind::Audio) {
        MP4_AUDIO
    } else {
        MP4_VIDEO
    };
    let mut response = Response::new(Body::new(Chunks::new(chunks)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    response
}

/// A response body of shared chunks, sent as they are (the segments' bytes are never
/// copied per request), with its exact length.
struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<Bytes>) -> Self {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            remaining,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let cases = [
            ("media.m3u8", Some(File::Media)),
            ("cam1.mpd", Some(File::Mpd)),
            ("cam2.mpd", None),
            (
                "init-3.mp4",
                Some(File::Init {
                    version: 3,
                    track: None,
                }),
            ),
            (
                "init-3-audio.mp4",
                Some(File::Init {
                    version: 3,
                    track: Some(TrackKind::Audio),
                }),
            ),
            (
                "seg-17.m4s",
                Some(File::Segment {
                    msn: 17,
                    track: None,
                }),
            ),
            (
                "seg-17-video.m4s",
                Some(File::Segment {
                    msn: 17,
                    track: Some(TrackKind::Video),
                }),
            ),
            ("part-17.4.m4s", Some(File::Part { msn: 17, index: 4 })),
            ("part-17.m4s", None),
            ("seg-+1.m4s", None),
            ("seg--1.m4s", None),
            ("seg-99999999999999999999.m4s", None),
            ("seg-1-other.m4s", None),
            ("part-1.2.3.m4s", None),
            ("", None),
        ];
        for (file, expected) in cases {
            assert_eq!(parse_file("cam1", file), expected, "{file}");
        }
    }

    #[test]
    fn chunked_bodies_keep_their_length() {
        use http_body::Body as _;
        let body = Chunks::new(vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"de"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
    }
}
