//! WHIP (RFC 9725) and WHEP: publishing and playing over HTTP signaling, as OBS 30 and later,
//! Millicast's, Ant Media's and MediaMTX's clients do.
//!
//! `POST /{app}/{stream}/whip` (or Ant Media's `/{App}/whip/{streamId}`) with the client's
//! offer (`application/sdp`) and `Authorization: Bearer <publish token>` goes through the one
//! admission path like every other publish; the answer, with the server's ICE candidates in
//! it, comes back in the `201 Created` with the session's resource in `Location`, its ICE
//! session in `ETag` and any STUN or TURN servers configured in `Link` headers. `PATCH` on the
//! resource carries the client's trickled candidates and ICE restarts
//! (`application/trickle-ice-sdpfrag`, [`crate::sdpfrag`]); `DELETE` ends the session. WHEP is
//! the same for viewers (`/{app}/{stream}/whep`, the bearer a subscribe token where one is
//! needed), answering with the stream's tracks as the relay chooses them for browsers.
//!
//! A resource lives as long as its session: when the session ends for any reason (its token
//! revoked, its peer gone, a `DELETE`), later requests on it get 404. The resource's id is 128
//! random bits, the capability to change or end it. Refusals are a status and a short text:
//! 401 without a token or with one not valid, 403 when a rule refuses, 404 for a viewer of a
//! stream that is not live, 409 when the name is live, 503 when the server is busy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use streamgate_admission::{AdmitRequest, Admitted};
use streamgate_auth::{Action, Denial, GatePass, Protocol, StreamName};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::message::{Definition, MAX_MESSAGE_BYTES};
use crate::play::{self, AnswerError};
use crate::publish::{self, PrepareError};
use crate::sdpfrag::{self, FragmentError};
use crate::session::{Control, Outbox, CONTROL_CAPACITY};
use crate::WebRtcContext;

/// The media type of an offer and an answer.
const SDP: &str = "application/sdp";
/// The media type of a trickle or restart fragment.
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
/// How long a WHEP request waits for a live stream's first configuration (the relay settles
/// a publish's tracks within a second of media).
const FIRST_START_WAIT: Duration = Duration::from_secs(3);
/// How long a `PATCH` or `DELETE` waits for its session to act.
const SESSION_WAIT: Duration = Duration::from_secs(5);
/// The methods a resource and an endpoint answer, for CORS.
const METHODS: &str = "OPTIONS, POST, PATCH, DELETE";
/// The headers a browser script may send and read, for CORS.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, If-Match";
const EXPOSED_HEADERS: &str = "Location, ETag, Link, Accept-Patch";

/// A STUN or TURN server given to clients (in WHIP and WHEP `Link` headers, and Ant Media's
/// `iceServerConfig`).
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    /// The TURN user name; empty for none.
    pub username: String,
    /// The TURN password; empty for none.
    pub credential: String,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("credential", &(!self.credential.is_empty()))
            .finish()
    }
}

impl IceServer {
    /// The server as a `Link` header value (RFC 9725 section 4.6); `None` if it does not fit
    /// in one (characters a header cannot carry).
    fn link(&self) -> Option<HeaderValue> {
        let quote = |s: &str| s.replace(['"', '\\'], "");
        let mut value = format!("<{}>; rel=\"ice-server\"", self.url);
        if !self.username.is_empty() {
            value.push_str(&format!(
                "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                quote(&self.username),
                quote(&self.credential)
            ));
        }
        HeaderValue::from_str(&value).ok()
    }
}

/// Publish (WHIP) or play (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Whip,
    Whep,
}

/// The sessions signaled over HTTP, by resource id.
#[derive(Debug, Default)]
pub struct Resources {
    map: Mutex<HashMap<String, Resource>>,
}

/// One session's resource.
#[derive(Debug)]
struct Resource {
    kind: Kind,
    stream: StreamName,
    control: mpsc::Sender<Control>,
    /// The ICE session, as the `ETag` says it.
    etag: String,
    /// The client's ICE username fragment in force: a `PATCH` with another one restarts ICE.
    ufrag: Option<String>,
    /// Candidates the client has sent.
    candidates: usize,
    /// Fired when the session has ended.
    ended: CancellationToken,
}

impl Resources {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Resource>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sessions signaled over HTTP now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The routes of both protocols, Ant Media's shapes included.
pub(crate) fn routes() -> Router<Arc<WebRtcContext>> {
    Router::new()
        .route("/{app}/{stream}/whip", post(whip).options(preflight))
        .route("/{app}/whip/{stream}", post(whip).options(preflight))
        .route("/{app}/{stream}/whep", post(whep).options(preflight))
        .route("/{app}/whep/{stream}", post(whep).options(preflight))
        .route(
            "/{app}/{stream}/whip/{id}",
            axum::routing::patch(patch)
                .delete(delete)
                .options(preflight),
        )
        .route(
            "/{app}/whip/{stream}/{id}",
            axum::routing::patch(patch)
                .delete(delete)
                .options(preflight),
        )
        .route(
            "/{app}/{stream}/whep/{id}",
            axum::routing::patch(patch)
                .delete(delete)
                .options(preflight),
        )
        .route(
            "/{app}/whep/{stream}/{id}",
            axum::routing::patch(patch)
                .delete(delete)
                .options(preflight),
        )
}

/// A refusal: the status and a short text, and CORS headers so that a browser script can
/// read it.
fn refuse(status: StatusCode, text: &str, headers: &HeaderMap) -> Response {
    let mut response = (status, format!("{text}\n")).into_response();
    cors(&mut response, headers);
    response
}

/// The CORS headers of a response to a request from `headers`' Origin (the admission has
/// checked that Origin against the token's `allowedOrigins` where one was used).
fn cors(response: &mut Response, headers: &HeaderMap) {
    let h = response.headers_mut();
    let origin = headers
        .get(header::ORIGIN)
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// `OPTIONS`, and CORS preflights: the methods and headers allowed. A preflight carries no
/// token, so it is answered for any Origin; the request itself is refused (403) if the
/// token's `allowedOrigins` leave its Origin out.
async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(&mut response, &headers);
    let h = response.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(METHODS));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert("accept-post", HeaderValue::from_static(SDP));
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    response
}

/// The status a refused admission is answered with.
fn denial_status(denial: Denial) -> StatusCode {
    match denial {
        Denial::Missing
        | Denial::Unknown
        | Denial::Expired
        | Denial::NotYetValid
        | Denial::Disabled
        | Denial::Revoked
        | Denial::UsesExhausted
        | Denial::ClaimsRefused => StatusCode::UNAUTHORIZED,
        Denial::StreamInUse => StatusCode::CONFLICT,
        Denial::StreamNotLive => StatusCode::NOT_FOUND,
        Denial::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    }
}

/// What a `POST` asks for, read and checked.
struct Offer {
    name: StreamName,
    token: Option<String>,
    sdp: String,
}

/// A refusal before anything is admitted: the status and its text.
type Refused = (StatusCode, &'static str);

/// Reads a `POST`: the stream from the path, the bearer token, the offer.
fn read_offer(
    app: &str,
    stream: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Offer, Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !media_type_is(content_type, SDP) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be application/sdp",
        ));
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "the offer is too large"));
    }
    let Ok(sdp) = std::str::from_utf8(body) else {
        return Err((StatusCode::BAD_REQUEST, "the offer is not text"));
    };
    let Ok(name) = StreamName::new(&format!("{app}/{stream}")) else {
        return Err((StatusCode::BAD_REQUEST, "not a valid stream name"));
    };
    Ok(Offer {
        name,
        token: bearer(headers),
        sdp: sdp.to_owned(),
    })
}

/// Whether a `Content-Type` value names `expected` (parameters aside).
fn media_type_is(value: &str, expected: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(expected))
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// A header's value as text.
fn text_header(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// 128 random bits in hex.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Not reached on the platforms served; a clock-based id is still unique.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST .../whip`: admits the publish, answers the offer and starts the session.
async fn whip(
    State(ctx): State<Arc<WebRtcContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match read_offer(&path.0, &path.1, &headers, &body) {
        Ok(o) => o,
        Err((status, text)) => return refuse(status, text, &headers),
    };
    let (request, pass) = match admit_request(
        &ctx,
        Protocol::Whip,
        Action::Publish,
        &offer,
        peer,
        &headers,
    ) {
        Ok(r) => r,
        Err((status, text)) => return refuse(status, text, &headers),
    };
    let session = match ctx.admission.admit(request).await {
        Ok(Admitted::Publish(s)) => s,
        Ok(Admitted::Play(_)) => {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "not a publish", &headers)
        }
        Err(denial) => return refuse(denial_status(denial), &denial.to_string(), &headers),
    };
    let prepared = match publish::Prepared::new(&ctx).await {
        Ok(p) => p,
        Err(PrepareError::Busy) => {
            return busy(
                &headers,
                "the server negotiates as many connections as it may",
            )
        }
        Err(PrepareError::Peer(e)) => {
            tracing::warn!(stream = %offer.name, error = %e, "cannot create peer connection");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "server error", &headers);
        }
    };
    let answer = match prepared
        .answer_whip(offer.sdp.clone(), session.publisher(), &offer.name)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(stream = %offer.name, error = %e, "WHIP offer refused");
            return refuse(
                StatusCode::BAD_REQUEST,
                "the offer cannot be applied",
                &headers,
            );
        }
    };
    let name = offer.name.clone();
    let (resource, control, ended) = register(&ctx, Kind::Whip, &offer);
    let id = resource.0.clone();
    let task_ctx = Arc::clone(&ctx);
    tokio::spawn(async move {
        let stream_id = name.as_str().to_owned();
        publish::run(
            Arc::clone(&task_ctx),
            session,
            name,
            stream_id,
            Outbox::silent(),
            control,
            Some(prepared),
        )
        .await;
        end(&task_ctx, &id, &ended);
        drop(pass);
    });
    created(&ctx, &uri, &headers, answer, &resource)
}

/// `POST .../whep`: admits the play, waits for the stream's tracks, answers the offer with
/// them and starts the session.
async fn whep(
    State(ctx): State<Arc<WebRtcContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match read_offer(&path.0, &path.1, &headers, &body) {
        Ok(o) => o,
        Err((status, text)) => return refuse(status, text, &headers),
    };
    let (request, pass) =
        match admit_request(&ctx, Protocol::Whep, Action::Play, &offer, peer, &headers) {
            Ok(r) => r,
            Err((status, text)) => return refuse(status, text, &headers),
        };
    let mut session = match ctx.admission.admit(request).await {
        Ok(Admitted::Play(s)) => s,
        Ok(Admitted::Publish(_)) => {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "not a play", &headers)
        }
        Err(denial) => return refuse(denial_status(denial), &denial.to_string(), &headers),
    };
    let Some(mut sub) = session.take_subscriber() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "server error", &headers);
    };
    let live = ctx
        .hub
        .stream_stats(offer.name.as_str())
        .is_some_and(|s| s.live);
    let started = if live {
        play::first_start(&mut sub, FIRST_START_WAIT).await
    } else {
        None
    };
    let Some((config, selection)) = started else {
        return refuse(StatusCode::NOT_FOUND, "the stream is not live", &headers);
    };
    if let Some((definition, reason)) = play::unplayable(selection) {
        let status = match definition {
            Definition::HighResourceUsage => return busy(&headers, reason),
            Definition::BFramesUnsupported => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!(stream = %offer.name, "WHEP play refused: {reason}");
        return refuse(status, reason, &headers);
    }
    let (answer, answered) =
        match play::answer_whep(&ctx, config, selection, offer.sdp.clone()).await {
            Ok(a) => a,
            Err(AnswerError::Busy) => {
                return busy(
                    &headers,
                    "the server negotiates as many connections as it may",
                )
            }
            Err(AnswerError::Peer(e)) => {
                tracing::info!(stream = %offer.name, error = %e, "WHEP offer refused");
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "the offer cannot be applied, or takes none of the stream's codecs",
                    &headers,
                );
            }
        };
    let name = offer.name.clone();
    let (resource, control, ended) = register(&ctx, Kind::Whep, &offer);
    let id = resource.0.clone();
    let task_ctx = Arc::clone(&ctx);
    tokio::spawn(async move {
        let stream_id = name.as_str().to_owned();
        play::run(
            Arc::clone(&task_ctx),
            session,
            name,
            stream_id,
            Outbox::silent(),
            control,
            Some((sub, answered)),
        )
        .await;
        end(&task_ctx, &id, &ended);
        drop(pass);
    });
    created(&ctx, &uri, &headers, answer, &resource)
}

/// 503 with a short wait before trying again.
fn busy(headers: &HeaderMap, text: &str) -> Response {
    let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, text, headers);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// The admission request of a `POST`, and the place of its session among its address's.
fn admit_request(
    ctx: &WebRtcContext,
    protocol: Protocol,
    action: Action,
    offer: &Offer,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(AdmitRequest, GatePass), Refused> {
    let Ok(pass) = ctx.counts.peers.try_enter(peer.ip()) else {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "too many sessions from this address",
        ));
    };
    let request = AdmitRequest::new(
        protocol,
        action,
        offer.name.clone(),
        offer.token.clone(),
        peer.ip(),
    )
    .with_headers(
        text_header(headers, header::ORIGIN),
        text_header(headers, header::REFERER),
        text_header(headers, header::USER_AGENT),
    );
    Ok((request, pass))
}

/// Registers a session's resource; returns its id and `ETag`, the session's control channel
/// and the signal its end fires.
fn register(
    ctx: &WebRtcContext,
    kind: Kind,
    offer: &Offer,
) -> ((String, String), mpsc::Receiver<Control>, CancellationToken) {
    let (id, etag) = (random_id(), random_id());
    let (control, rx) = mpsc::channel(CONTROL_CAPACITY);
    let ended = CancellationToken::new();
    ctx.resources.lock().insert(
        id.clone(),
        Resource {
            kind,
            stream: offer.name.clone(),
            control,
            etag: etag.clone(),
            ufrag: sdpfrag::credentials(&offer.sdp).map(|(u, _)| u),
            candidates: 0,
            ended: ended.clone(),
        },
    );
    ((id, etag), rx, ended)
}

/// A session signaled over HTTP has ended: its resource goes.
fn end(ctx: &WebRtcContext, id: &str, ended: &CancellationToken) {
    ctx.resources.lock().remove(id);
    ended.cancel();
}

/// The `201 Created` of a `POST`, for the resource `(id, etag)`.
fn created(
    ctx: &WebRtcContext,
    uri: &Uri,
    headers: &HeaderMap,
    answer: String,
    (id, etag): &(String, String),
) -> Response {
    let mut response = (StatusCode::CREATED, answer).into_response();
    cors(&mut response, headers);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(location) = HeaderValue::from_str(&format!("{}/{id}", uri.path())) {
        h.insert(header::LOCATION, location);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, etag);
    }
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    for server in &ctx.ice_servers {
        if let Some(link) = server.link() {
            h.append(header::LINK, link);
        }
    }
    response
}

/// The resource at a path, if it is one of `kind` for the stream the path names.
fn resource_control(
    ctx: &WebRtcContext,
    app: &str,
    stream: &str,
    id: &str,
    uri: &Uri,
) -> Option<(mpsc::Sender<Control>, CancellationToken)> {
    let kind = if uri.path().contains("/whip/") {
        Kind::Whip
    } else {
        Kind::Whep
    };
    let resources = ctx.resources.lock();
    let r = resources.get(id)?;
    (r.kind == kind && r.stream.as_str() == format!("{app}/{stream}"))
        .then(|| (r.control.clone(), r.ended.clone()))
}

/// `PATCH` on a resource: the client's trickled candidates (204), or an ICE restart, answered
/// with the server's new credentials and candidates (200).
async fn patch(
    State(ctx): State<Arc<WebRtcContext>>,
    Path((app, stream, id)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((control, _)) = resource_control(&ctx, &app, &stream, &id, &uri) else {
        return refuse(StatusCode::NOT_FOUND, "no such session", &headers);
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !media_type_is(content_type, SDPFRAG) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a PATCH carries application/trickle-ice-sdpfrag",
            &headers,
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "not text", &headers);
    };
    if body.len() > MAX_MESSAGE_BYTES {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "too large", &headers);
    }
    let if_match = text_header(&headers, header::IF_MATCH);
    // What the resource allows: candidates left, its ICE session and credentials.
    let (left, etag, ufrag) = {
        let resources = ctx.resources.lock();
        let Some(r) = resources.get(&id) else {
            return refuse(StatusCode::NOT_FOUND, "no such session", &headers);
        };
        (
            ctx.limits.max_candidates.saturating_sub(r.candidates),
            r.etag.clone(),
            r.ufrag.clone(),
        )
    };
    let fragment = match sdpfrag::parse(text, left) {
        Ok(f) => f,
        Err(FragmentError::TooManyCandidates) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too many ICE candidates for this session",
                &headers,
            )
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string(), &headers),
    };
    let restart = match (&fragment.ufrag, &fragment.pwd) {
        (Some(u), Some(_)) => ufrag.as_ref() != Some(u),
        _ => false,
    };
    if !restart {
        if let Some(tag) = &if_match {
            if tag.trim() != "*" && tag.trim().trim_matches('"') != etag {
                return refuse(
                    StatusCode::PRECONDITION_FAILED,
                    "not this ICE session",
                    &headers,
                );
            }
        }
    }
    if let Some(r) = ctx.resources.lock().get_mut(&id) {
        r.candidates += fragment.candidates.len();
    }
    if restart {
        return ice_restart(&ctx, &id, control, fragment, &headers).await;
    }
    for (candidate, mid) in fragment.candidates {
        let c = Control::Candidate {
            candidate,
            label: None,
            mid,
        };
        if tokio::time::timeout(SESSION_WAIT, control.send(c))
            .await
            .map_or(true, |r| r.is_err())
        {
            return refuse(StatusCode::NOT_FOUND, "no such session", &headers);
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(&mut response, &headers);
    response
}

/// An ICE restart: the session applies the client's new credentials and answers with its
/// own; the resource gets a new ICE session (`ETag`).
async fn ice_restart(
    ctx: &WebRtcContext,
    id: &str,
    control: mpsc::Sender<Control>,
    fragment: sdpfrag::Fragment,
    headers: &HeaderMap,
) -> Response {
    let (Some(ufrag), Some(pwd)) = (fragment.ufrag, fragment.pwd) else {
        return refuse(StatusCode::BAD_REQUEST, "no ICE credentials", headers);
    };
    let (reply, answer) = oneshot::channel();
    let restart = Control::IceRestart {
        ufrag: ufrag.clone(),
        pwd,
        candidates: fragment.candidates.into_iter().map(|(c, _)| c).collect(),
        reply,
    };
    if control.send(restart).await.is_err() {
        return refuse(StatusCode::NOT_FOUND, "no such session", headers);
    }
    let fragment = match tokio::time::timeout(SESSION_WAIT, answer).await {
        Ok(Ok(Ok(f))) => f,
        Ok(Ok(Err(e))) => {
            tracing::info!(error = %e, "ICE restart refused");
            return refuse(StatusCode::BAD_REQUEST, "the ICE restart failed", headers);
        }
        _ => return refuse(StatusCode::NOT_FOUND, "no such session", headers),
    };
    let etag = random_id();
    if let Some(r) = ctx.resources.lock().get_mut(id) {
        r.etag.clone_from(&etag);
        r.ufrag = Some(ufrag);
    }
    let mut response = (StatusCode::OK, fragment).into_response();
    cors(&mut response, headers);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, etag);
    }
    response
}

/// `DELETE` on a resource: ends its session.
async fn delete(
    State(ctx): State<Arc<WebRtcContext>>,
    Path((app, stream, id)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some((control, ended)) = resource_control(&ctx, &app, &stream, &id, &uri) else {
        return refuse(StatusCode::NOT_FOUND, "no such session", &headers);
    };
    let _ = control.send(Control::Stop).await;
    let _ = tokio::time::timeout(SESSION_WAIT, ended.cancelled()).await;
    let mut response = StatusCode::OK.into_response();
    cors(&mut response, &headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_media_types() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sgp_abc"),
        );
        assert_eq!(bearer(&h).as_deref(), Some("sgp_abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  sgp_abc "),
        );
        assert_eq!(bearer(&h).as_deref(), Some("sgp_abc"));
        for bad in ["Basic abc", "Bearer", "Bearer ", "sgp_abc"] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(bearer(&h), None, "{bad}");
        }
        assert!(media_type_is("application/sdp", SDP));
        assert!(media_type_is("Application/SDP; charset=utf-8", SDP));
        assert!(!media_type_is("text/plain", SDP));
        assert!(!media_type_is("", SDP));
    }

    #[test]
    fn refusals_map_to_the_statuses_clients_expect() {
        assert_eq!(denial_status(Denial::Missing), StatusCode::UNAUTHORIZED);
        assert_eq!(denial_status(Denial::Unknown), StatusCode::UNAUTHORIZED);
        assert_eq!(denial_status(Denial::IpNotAllowed), StatusCode::FORBIDDEN);
        assert_eq!(
            denial_status(Denial::OriginNotAllowed),
            StatusCode::FORBIDDEN
        );
        assert_eq!(denial_status(Denial::WrongKind), StatusCode::FORBIDDEN);
        assert_eq!(denial_status(Denial::StreamInUse), StatusCode::CONFLICT);
        assert_eq!(denial_status(Denial::StreamNotLive), StatusCode::NOT_FOUND);
    }

    #[test]
    fn ice_servers_become_link_headers() {
        let stun = IceServer {
            url: "stun:stun.example.net:3478".into(),
            username: String::new(),
            credential: String::new(),
        };
        assert_eq!(
            stun.link().unwrap(),
            "<stun:stun.example.net:3478>; rel=\"ice-server\""
        );
        let turn = IceServer {
            url: "turn:turn.example.net?transport=udp".into(),
            username: "user".into(),
            credential: "pa\"ss".into(),
        };
        assert_eq!(
            turn.link().unwrap(),
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; \
             credential=\"pass\"; credential-type=\"password\""
        );
        assert!(!format!("{turn:?}").contains("pass"));
        let ids: Vec<String> = (0..3).map(|_| random_id()).collect();
        assert!(ids.iter().all(|i| i.len() == 32));
        assert_ne!(ids[0], ids[1]);
    }
}
