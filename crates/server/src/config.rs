//! Configuration: `config/streamgate.toml`, overridden by `STREAMGATE_<SECTION>_<KEY>`
//! environment variables, overridden by command-line flags.
//!
//! Each setting is declared once, as a field of its section (with its default) and a row of
//! [`SETTINGS`] (with its help line); its flag (`--section-key`) and environment variable are
//! derived from the row, and a value given either way is put into the file's table before the
//! whole is deserialised, so that every value is checked by the same types.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};
use serde::{Deserialize, Serialize};
use streamgate_auth::{MAX_SRT_PASSPHRASE_LEN, MIN_SRT_PASSPHRASE_LEN};

/// The config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG_PATH: &str = "config/streamgate.toml";
/// Shortest API secret accepted from config or environment.
pub const MIN_API_SECRET_LEN: usize = 16;
/// Shortest HS256 signing key accepted, in bytes (the hash's size).
pub const MIN_JWT_SECRET_LEN: usize = 32;
/// Largest media frame the relay can be configured to take: the largest RTMP message.
pub const MAX_FRAME_BYTES_LIMIT: usize = 0xFF_FFFF;
/// Most runtime worker threads (`workers`).
pub const MAX_WORKERS: usize = 1024;
/// Most `rtmp.write_coalesce_ms` and `rtmp.large_audience_coalesce_ms`: more would be latency
/// no viewer asked for.
pub const MAX_WRITE_COALESCE_MS: u64 = 100;

/// A duration in whole seconds, as the file writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub u64);

impl Seconds {
    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// As a duration, `None` for 0 (the settings where 0 means "none").
    pub fn nonzero(self) -> Option<Duration> {
        (self.0 > 0).then(|| self.duration())
    }
}

/// A duration in milliseconds, as the file writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// A secret setting; `Debug` shows only whether it is set.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigSecret(pub String);

impl ConfigSecret {
    /// The secret in clear.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

/// An optional listen address: empty in the file for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl TryFrom<String> for OptionalAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.trim() {
            "" => Ok(Self(None)),
            a => a
                .parse()
                .map(|a| Self(Some(a)))
                .map_err(|_| format!("{a:?} is not an address such as 127.0.0.1:9090")),
        }
    }
}

impl From<OptionalAddr> for String {
    fn from(a: OptionalAddr) -> String {
        a.0.map(|a| a.to_string()).unwrap_or_default()
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the token database and the generated secrets.
    pub data_dir: PathBuf,
    /// Worker threads of the runtime that serves every connection; 0: one per core.
    pub workers: usize,
    /// Where tokens are stored.
    pub store: StoreSection,
    /// The other nodes sharing the store.
    pub cluster: ClusterSection,
    /// HTTP listener.
    pub http: HttpSection,
    /// TLS: the certificate of the HTTPS and RTMPS listeners.
    pub tls: TlsSection,
    /// HTTPS listener (with `[tls]`).
    pub https: HttpsSection,
    /// RTMPS listener (with `[tls]`).
    pub rtmps: RtmpsSection,
    /// REST API.
    pub api: ApiSection,
    /// RTMP listener.
    pub rtmp: RtmpSection,
    /// SRT listener.
    pub srt: SrtSection,
    /// WebRTC peers and their WebSocket signaling.
    pub webrtc: WebRtcSection,
    /// The fan-out relay's memory bounds.
    pub relay: RelaySection,
    /// HLS, LL-HLS and DASH playback.
    pub hls: HlsSection,
    /// Server-wide authorization policy.
    pub auth: AuthSection,
    /// Token expiry policy.
    pub tokens: TokensSection,
    /// Signed tokens.
    pub jwt: JwtSection,
    /// Who reads `/metrics`, and where.
    pub metrics: MetricsSection,
    /// Logging.
    pub log: LogSection,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Seconds a client has to send a request's head, from the connection's start or the end
    /// of the previous response (so also the keep-alive idle time).
    pub header_timeout: Seconds,
    /// Seconds a client has to send a request's body.
    pub body_timeout: Seconds,
    /// Seconds a connection may pass with no byte in either direction (upgraded WebSockets
    /// have their own ping and idle timeout).
    pub idle_timeout: Seconds,
    /// Most HTTP connections at once.
    pub max_connections: usize,
    /// Most HTTP connections from one address (IPv6: one /64) at once.
    pub max_connections_per_ip: usize,
    /// Comma-separated addresses and CIDR blocks of the proxies in front of the server, whose
    /// `Forwarded` and `X-Forwarded-For` headers give the client address; empty: none.
    pub trusted_proxies: String,
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM file of the certificate chain; with `key_file`, HTTPS, WSS and RTMPS are served.
    pub cert_file: PathBuf,
    /// PEM file of the private key.
    pub key_file: PathBuf,
    /// Answer plain HTTP with a redirect to HTTPS (but `/healthz` and `/metrics`).
    pub redirect_http: bool,
}

impl TlsSection {
    /// The certificate and key files, if TLS is on.
    pub fn files(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        (!self.cert_file.as_os_str().is_empty())
            .then_some((self.cert_file.as_path(), self.key_file.as_path()))
    }
}

/// `[https]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsSection {
    /// Address the HTTPS server binds (everything the HTTP port serves, over TLS).
    pub listen: SocketAddr,
}

impl Default for HttpsSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
        }
    }
}

/// `[rtmps]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpsSection {
    /// Address the RTMPS listener binds.
    pub listen: SocketAddr,
}

impl Default for RtmpsSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1936)),
        }
    }
}

/// `[rtmp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpSection {
    /// Address the RTMP listener binds.
    pub listen: SocketAddr,
    /// Seconds from accept to a completed handshake.
    pub handshake_timeout: Seconds,
    /// Seconds from accept to a granted publish or play; bytes sent meanwhile do not extend it.
    pub grant_timeout: Seconds,
    /// Seconds a publisher may send no audio or video.
    pub idle_timeout: Seconds,
    /// Most RTMP connections at once.
    pub max_connections: usize,
    /// Most RTMP connections from one address (IPv6: one /64) at once.
    pub max_connections_per_ip: usize,
    /// Milliseconds a viewer's frames may gather before they are written together (0: each
    /// change of the stream is written at once).
    pub write_coalesce_ms: u64,
    /// Milliseconds a stream's frames gather before they are written once it has more than
    /// 1,024 viewers; up to `write_coalesce_ms`, that one holds.
    pub large_audience_coalesce_ms: u64,
}

/// `[srt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrtSection {
    /// Address (UDP) the SRT listener binds.
    pub listen: SocketAddr,
    /// Passphrase every SRT connection must use unless its publish token sets one; empty
    /// means none.
    pub passphrase: ConfigSecret,
}

/// `[webrtc]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcSection {
    /// Address announced in ICE candidates instead of the local ones (1:1 NAT); empty: none.
    pub public_ip: String,
    /// Lowest UDP port ICE may use; 0 with `udp_port_max` 0 lets the OS choose.
    pub udp_port_min: u16,
    /// Highest UDP port ICE may use.
    pub udp_port_max: u16,
    /// Comma-separated local addresses to gather ICE candidates on; empty: every interface
    /// but loopback.
    pub ice_ips: String,
    /// Most ICE candidates a browser may trickle to one session.
    pub max_candidates: usize,
    /// Most peer connections (publish and play sessions) from one address at once.
    pub max_peers_per_ip: usize,
    /// Most sessions admitted whose peer connection is not yet connected, server-wide.
    pub max_pending: usize,
    /// Seconds between the server's WebSocket pings.
    pub ws_ping_interval: Seconds,
    /// Seconds a WebSocket may stay without any message (pongs included), or leave what the
    /// server writes unread, before it closes.
    pub ws_idle_timeout: Seconds,
    /// What browser viewers of a stream whose H.264 has B-frames get.
    pub bframes: BFrames,
    /// Most H.264 re-encodes (for B-frames) running at once.
    pub max_video_transcodes: usize,
    /// Bit rate of re-encoded H.264, in kbit/s.
    pub video_transcode_bitrate: u32,
    /// A STUN server given to clients (`stun:host:port`); empty for none.
    pub stun_server: String,
    /// A TURN server given to clients (`turn:host:port?transport=udp`); empty for none.
    pub turn_server: String,
    /// The TURN server's user name.
    pub turn_username: String,
    /// The TURN server's password.
    pub turn_credential: ConfigSecret,
}

/// `webrtc.bframes`: what browser viewers of a stream whose H.264 has B-frames get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BFrames {
    /// The stream's video re-encoded without B-frames, once per stream.
    #[default]
    Transcode,
    /// A refusal (`bframes_not_supported`).
    Refuse,
}

/// `[relay]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// Largest media frame taken at ingest, in bytes; larger ones close an RTMP publisher and
    /// are dropped (and counted) elsewhere.
    pub max_frame_bytes: usize,
    /// Frames each stream keeps for its viewers to catch up (every viewer's queue).
    pub buffer_frames: usize,
    /// Bytes of frames each stream keeps for its viewers.
    pub buffer_bytes: usize,
    /// Most frames of the GOP cache (a new viewer's start).
    pub gop_frames: usize,
    /// Most bytes of the GOP cache.
    pub gop_bytes: usize,
}

/// `[hls]`: HTTP playback (HLS, LL-HLS, DASH).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsSection {
    /// Whether media playlists carry LL-HLS's parts, preload hints and blocking reloads.
    pub low_latency: bool,
    /// Target length of a segment; segments start at keyframes, so they last at least this
    /// and as long as the stream's keyframe interval.
    pub segment_ms: Millis,
    /// Target length of an LL-HLS part (parts never exceed it).
    pub part_ms: Millis,
    /// Complete segments each stream keeps (the playlists' window).
    pub window: usize,
    /// Most bytes of segments each stream keeps.
    pub max_stream_bytes: usize,
    /// Streams watched over HTTP at once.
    pub max_streams: usize,
    /// Seconds a playback session may pass without a request before it ends.
    pub session_idle: Seconds,
    /// Most playback sessions at once.
    pub max_sessions: usize,
    /// Most playback sessions from one address (IPv6: /64).
    pub max_sessions_per_ip: usize,
}

impl Default for HlsSection {
    fn default() -> Self {
        let h = streamgate_hls::HlsSettings::default();
        Self {
            low_latency: h.low_latency,
            segment_ms: Millis(h.feed.segmenter.target.as_millis() as u64),
            part_ms: Millis(h.feed.segmenter.part_target.as_millis() as u64),
            window: h.feed.segmenter.keep_segments,
            max_stream_bytes: h.feed.segmenter.max_bytes,
            max_streams: h.feed.max_feeds,
            session_idle: Seconds(h.sessions.idle.as_secs()),
            max_sessions: h.sessions.max_sessions,
            max_sessions_per_ip: h.sessions.max_per_ip,
        }
    }
}

impl HlsSection {
    /// The settings of HTTP playback.
    pub fn settings(&self) -> streamgate_hls::HlsSettings {
        let mut h = streamgate_hls::HlsSettings {
            low_latency: self.low_latency,
            ..Default::default()
        };
        h.feed.segmenter.target = self.segment_ms.duration();
        h.feed.segmenter.part_target = self.part_ms.duration();
        h.feed.segmenter.keep_segments = self.window;
        h.feed.segmenter.max_bytes = self.max_stream_bytes;
        h.feed.max_feeds = self.max_streams;
        h.sessions.idle = self.session_idle.duration();
        h.sessions.max_sessions = self.max_sessions;
        h.sessions.max_per_ip = self.max_sessions_per_ip;
        h
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.into()));
        if !(500..=30_000).contains(&self.segment_ms.0) {
            return err("hls.segment_ms: must be 500 to 30000");
        }
        if !(100..=self.segment_ms.0).contains(&self.part_ms.0) {
            return err("hls.part_ms: must be 100 to hls.segment_ms");
        }
        if !(3..=100).contains(&self.window) {
            return err("hls.window: must be 3 to 100");
        }
        if self.max_stream_bytes < 1024 * 1024 {
            return err("hls.max_stream_bytes: must be at least 1048576");
        }
        if self.session_idle.0 < 5 {
            return err("hls.session_idle: must be at least 5");
        }
        for (key, n) in [
            ("hls.max_streams", self.max_streams),
            ("hls.max_sessions", self.max_sessions),
            ("hls.max_sessions_per_ip", self.max_sessions_per_ip),
        ] {
            if n == 0 {
                return Err(ConfigError(format!("{key}: must be at least 1")));
            }
        }
        Ok(())
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Bearer secret for `/api`; empty means generate one into the data dir.
    pub secret: ConfigSecret,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Development mode: publishing needs no token.
    pub open_publish: bool,
    /// Every viewer needs a subscribe token.
    pub require_play_token: bool,
    /// Delay before answering a source's first failed authentication in a minute; each
    /// further one doubles it. 0 = no delay.
    pub failure_delay_ms: Millis,
    /// Longest delay of a failed authentication.
    pub max_failure_delay_ms: Millis,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// A PostgreSQL database for the tokens (`postgres://user:password@host:port/db`); empty:
    /// the embedded SQLite file in the data directory.
    pub url: ConfigSecret,
}

impl StoreSection {
    /// The PostgreSQL URL, if one is set.
    pub fn postgres_url(&self) -> Option<&str> {
        let url = self.url.expose();
        (!url.is_empty()).then_some(url)
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// This node's name, shown beside its publish leases in the shared store.
    pub node_id: String,
    /// Where the other nodes reach this node's RTMP listener to pull the streams published
    /// here (`host:port`); empty: the RTMP listen address, when it is not a wildcard.
    pub advertise: String,
    /// The secret the nodes share to pull streams from each other; empty: none do.
    pub secret: ConfigSecret,
}

impl ClusterSection {
    /// Where the other nodes pull this node's streams from: `advertise`, else the RTMP
    /// listen address when it names one interface; empty: nowhere.
    pub fn origin(&self, rtmp_listen: SocketAddr) -> String {
        if !self.advertise.is_empty() {
            return self.advertise.clone();
        }
        if rtmp_listen.ip().is_unspecified() {
            return String::new();
        }
        rtmp_listen.to_string()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let secret = self.secret.expose();
        if !secret.is_empty() && secret.len() < streamgate_auth::cluster::MIN_CLUSTER_SECRET_LEN {
            return Err(ConfigError(format!(
                "cluster.secret (STREAMGATE_CLUSTER_SECRET): must be at least {} bytes, or empty for none",
                streamgate_auth::cluster::MIN_CLUSTER_SECRET_LEN
            )));
        }
        if !self.advertise.is_empty()
            && !self
                .advertise
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            return Err(ConfigError(
                "cluster.advertise: must be host:port, such as 10.0.0.5:1935".into(),
            ));
        }
        if self.node_id.len() > 128 {
            return Err(ConfigError("cluster.node_id: at most 128 bytes".into()));
        }
        Ok(())
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve `/metrics` on the HTTP port to anyone (it names streams and sources).
    pub public: bool,
    /// A bearer token for scrapers, accepted on `/metrics` besides the API secret.
    pub token: ConfigSecret,
    /// A listen address of its own for `/metrics`, without credentials (bind it where only
    /// the scraper reaches); empty = none.
    pub listen: OptionalAddr,
}

/// `[tokens]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TokensSection {
    /// Seconds of validity for tokens created without `expires`; 0 = they never expire.
    pub default_expiry: Seconds,
    /// Longest `expires` accepted, in seconds; 0 = no limit.
    pub max_expiry: Seconds,
}

/// `[jwt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSection {
    /// HS256 signing key; empty = generate one into `<data_dir>/jwt_secret`.
    pub hs256_secret: ConfigSecret,
    /// A JWKS file with the public keys (RS256, ES256, EdDSA) of signed tokens; empty = none.
    pub jwks_file: PathBuf,
    /// When set, a signed token's `iss` must be this.
    pub issuer: String,
    /// When set, a signed token's `aud` must hold this.
    pub audience: String,
    /// Longest validity of a signed token (`exp - iat`), in seconds; 0 = no limit.
    pub max_lifetime: Seconds,
    /// Whether signed tokens must carry a `jti` (so that each can be revoked).
    pub require_jti: bool,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `streamgate=debug,info`.
    pub level: String,
}

/// One setting as the command line and the environment see it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// `section.key` (or `key` at the top level), as in the file.
    pub key: &'static str,
    /// What the value is, for `--help`.
    pub value_name: &'static str,
    /// The help line.
    pub help: &'static str,
    /// Whether the value is a secret (its environment value is never shown).
    pub secret: bool,
}

impl Setting {
    /// The flag, without its dashes: `http.listen` -> `http-listen`.
    pub fn flag(&self) -> String {
        self.key.replace(['.', '_'], "-")
    }

    /// The environment variable: `http.listen` -> `STREAMGATE_HTTP_LISTEN`.
    pub fn env(&self) -> String {
        format!("STREAMGATE_{}", self.key.replace('.', "_").to_uppercase())
    }
}

const fn setting(key: &'static str, value_name: &'static str, help: &'static str) -> Setting {
    Setting {
        key,
        value_name,
        help,
        secret: false,
    }
}

const fn secret(key: &'static str, value_name: &'static str, help: &'static str) -> Setting {
    Setting {
        key,
        value_name,
        help,
        secret: true,
    }
}

/// Every setting, in the order `--help` lists them.
pub const SETTINGS: &[Setting] = &[
    setting("data_dir", "DIR", "Data directory (token database, generated secrets)"),
    setting("workers", "N", "Worker threads serving the connections, 0 for one per core (at most 1024)"),
    secret("store.url", "URL", "PostgreSQL database for the tokens (postgres://user:password@host:port/db); empty: SQLite in the data dir (prefer the environment variable)"),
    setting("cluster.node_id", "NAME", "This node's name among the nodes sharing the PostgreSQL store"),
    setting("cluster.advertise", "HOST:PORT", "Where the other nodes reach this node's RTMP listener to pull its streams; empty: rtmp.listen unless it is a wildcard"),
    secret("cluster.secret", "SECRET", "Secret the nodes share to pull streams from each other, at least 16 bytes; empty: no relay between nodes (prefer the environment variable)"),
    setting("http.listen", "ADDR", "HTTP listen address: REST API, WebSocket, pages, /healthz, /metrics"),
    setting("http.header_timeout", "SECONDS", "Time to send a request head (also the keep-alive idle time)"),
    setting("http.body_timeout", "SECONDS", "Time to send a request body"),
    setting("http.idle_timeout", "SECONDS", "Time an HTTP connection may pass without a byte either way"),
    setting("http.max_connections", "N", "Most HTTP connections at once"),
    setting("http.max_connections_per_ip", "N", "Most HTTP connections from one address (IPv6: /64)"),
    setting("http.trusted_proxies", "CIDRS", "Comma-separated proxies whose Forwarded / X-Forwarded-For give the client address; empty: none"),
    setting("tls.cert_file", "FILE", "PEM certificate chain; with tls.key_file, HTTPS, WSS and RTMPS are served"),
    setting("tls.key_file", "FILE", "PEM private key of tls.cert_file"),
    setting("tls.redirect_http", "BOOL", "Redirect plain HTTP to HTTPS (but /healthz and /metrics)"),
    setting("https.listen", "ADDR", "HTTPS listen address (with [tls]): everything the HTTP port serves"),
    setting("rtmps.listen", "ADDR", "RTMPS listen address (with [tls])"),
    setting("rtmp.listen", "ADDR", "RTMP listen address"),
    setting("rtmp.handshake_timeout", "SECONDS", "Time from accept to a completed RTMP handshake"),
    setting("rtmp.grant_timeout", "SECONDS", "Time from accept to a granted publish or play"),
    setting("rtmp.idle_timeout", "SECONDS", "Time an RTMP publisher may send no audio or video"),
    setting("rtmp.max_connections", "N", "Most RTMP connections at once"),
    setting("rtmp.max_connections_per_ip", "N", "Most RTMP connections from one address (IPv6: /64)"),
    setting("rtmp.write_coalesce_ms", "MS", "Time a viewer's frames may gather to be written together, 0 to 100 (adds up to this much latency)"),
    setting("rtmp.large_audience_coalesce_ms", "MS", "The same for the viewers of a stream with more than 1024 of them, 0 to 100"),
    setting("srt.listen", "ADDR", "SRT listen address (UDP)"),
    secret("srt.passphrase", "PASSPHRASE", "Passphrase for every SRT connection, 10 to 79 bytes; empty for none (prefer the environment variable: flags show in process lists)"),
    setting("webrtc.public_ip", "IP", "Address announced in WebRTC ICE candidates (1:1 NAT); empty for none"),
    setting("webrtc.udp_port_min", "PORT", "Lowest UDP port for WebRTC ICE (0 with the highest 0: any)"),
    setting("webrtc.udp_port_max", "PORT", "Highest UDP port for WebRTC ICE"),
    setting("webrtc.ice_ips", "IPS", "Comma-separated local IPs for WebRTC ICE candidates; empty: all but loopback"),
    setting("webrtc.max_candidates", "N", "Most ICE candidates a browser may send to one session"),
    setting("webrtc.max_peers_per_ip", "N", "Most WebRTC sessions from one address at once"),
    setting("webrtc.max_pending", "N", "Most WebRTC sessions negotiating at once, server-wide"),
    setting("webrtc.ws_ping_interval", "SECONDS", "Time between WebSocket pings"),
    setting("webrtc.ws_idle_timeout", "SECONDS", "Time a WebSocket may stay silent (no message, no pong) or unread"),
    setting("webrtc.bframes", "transcode|refuse", "Browser viewers of H.264 with B-frames: re-encode it without them, or refuse them"),
    setting("webrtc.max_video_transcodes", "N", "Most H.264 re-encodes (for B-frames) at once; 0: none"),
    setting("webrtc.video_transcode_bitrate", "KBITS", "Bit rate of re-encoded H.264, in kbit/s"),
    setting("webrtc.stun_server", "URL", "STUN server given to clients (stun:host:port); empty for none"),
    setting("webrtc.turn_server", "URL", "TURN server given to clients (turn:host:port?transport=udp); empty for none"),
    setting("webrtc.turn_username", "NAME", "The TURN server's user name"),
    secret("webrtc.turn_credential", "PASSWORD", "The TURN server's password (prefer the environment variable)"),
    setting("relay.max_frame_bytes", "BYTES", "Largest media frame taken at ingest"),
    setting("relay.buffer_frames", "N", "Frames each stream keeps for its viewers"),
    setting("relay.buffer_bytes", "BYTES", "Bytes of frames each stream keeps for its viewers"),
    setting("relay.gop_frames", "N", "Most frames of a stream's GOP cache"),
    setting("relay.gop_bytes", "BYTES", "Most bytes of a stream's GOP cache"),
    setting("hls.low_latency", "BOOL", "LL-HLS: parts, preload hints and blocking playlist reloads in media playlists"),
    setting("hls.segment_ms", "MS", "Target segment length (segments start at keyframes)"),
    setting("hls.part_ms", "MS", "Target LL-HLS part length"),
    setting("hls.window", "N", "Complete segments each stream keeps (the playlists' window)"),
    setting("hls.max_stream_bytes", "BYTES", "Most bytes of segments each stream keeps"),
    setting("hls.max_streams", "N", "Streams watched over HLS and DASH at once"),
    setting("hls.session_idle", "SECONDS", "Time an HLS or DASH session may pass without a request"),
    setting("hls.max_sessions", "N", "Most HLS and DASH sessions at once"),
    setting("hls.max_sessions_per_ip", "N", "Most HLS and DASH sessions from one address (IPv6: /64)"),
    secret("api.secret", "SECRET", "API secret for /api (prefer the environment variable: flags show in process lists)"),
    setting("auth.open_publish", "BOOL", "Development mode: publishing needs no token"),
    setting("auth.require_play_token", "BOOL", "Every viewer needs a subscribe token"),
    setting("auth.failure_delay_ms", "MS", "Delay of a source's first failed authentication in a minute, doubled for each further one (0: none)"),
    setting("auth.max_failure_delay_ms", "MS", "Longest delay of a failed authentication"),
    setting("tokens.default_expiry", "SECONDS", "Validity of tokens created without `expires` (0 = never expire)"),
    setting("tokens.max_expiry", "SECONDS", "Longest token expiry accepted (0 = no limit)"),
    secret("jwt.hs256_secret", "SECRET", "HS256 key for signed tokens (prefer the environment variable); empty: generated into the data dir"),
    setting("jwt.jwks_file", "FILE", "JWKS file with the public keys of signed tokens"),
    setting("jwt.issuer", "ISS", "Issuer signed tokens must name in `iss`; empty: any"),
    setting("jwt.audience", "AUD", "Audience signed tokens must name in `aud`; empty: any"),
    setting("jwt.max_lifetime", "SECONDS", "Longest validity of a signed token, exp - iat (0 = no limit)"),
    setting("jwt.require_jti", "BOOL", "Signed tokens must carry a jti (so that each can be revoked)"),
    setting("metrics.public", "BOOL", "Serve /metrics to anyone on the HTTP port (otherwise the API secret or metrics.token is needed)"),
    secret("metrics.token", "TOKEN", "Bearer token for scrapers on /metrics, besides the API secret"),
    setting("metrics.listen", "ADDR", "Separate listen address serving /metrics without credentials; empty for none"),
    setting("log.format", "FORMAT", "Log format: human or json"),
    setting("log.level", "FILTER", "Log filter, e.g. info or streamgate=debug"),
];

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            workers: 0,
            store: StoreSection::default(),
            cluster: ClusterSection::default(),
            http: HttpSection::default(),
            tls: TlsSection::default(),
            https: HttpsSection::default(),
            rtmps: RtmpsSection::default(),
            api: ApiSection::default(),
            rtmp: RtmpSection::default(),
            srt: SrtSection::default(),
            webrtc: WebRtcSection::default(),
            relay: RelaySection::default(),
            hls: HlsSection::default(),
            auth: AuthSection::default(),
            tokens: TokensSection::default(),
            jwt: JwtSection::default(),
            metrics: MetricsSection::default(),
            log: LogSection::default(),
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            header_timeout: Seconds(10),
            body_timeout: Seconds(10),
            idle_timeout: Seconds(60),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            trusted_proxies: String::new(),
        }
    }
}

impl Default for RtmpSection {
    fn default() -> Self {
        let session = streamgate_rtmp::SessionLimits::default();
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            handshake_timeout: Seconds(session.handshake_timeout.as_secs()),
            grant_timeout: Seconds(session.grant_timeout.as_secs()),
            idle_timeout: Seconds(session.idle_timeout.as_secs()),
            max_connections: 20_000,
            max_connections_per_ip: 1_000,
            write_coalesce_ms: u64::try_from(session.write_coalesce.as_millis()).unwrap_or(0),
            large_audience_coalesce_ms: u64::try_from(session.large_audience_coalesce.as_millis())
                .unwrap_or(0),
        }
    }
}

impl Default for SrtSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            passphrase: ConfigSecret::default(),
        }
    }
}

impl Default for WebRtcSection {
    fn default() -> Self {
        let limits = streamgate_webrtc::WebRtcLimits::default();
        let transcode = streamgate_transcode::TranscodeSettings::default();
        Self {
            public_ip: String::new(),
            udp_port_min: 0,
            udp_port_max: 0,
            ice_ips: String::new(),
            max_candidates: limits.max_candidates,
            max_peers_per_ip: limits.max_peers_per_ip,
            max_pending: limits.max_pending,
            ws_ping_interval: Seconds(limits.ws_ping_interval.as_secs()),
            ws_idle_timeout: Seconds(limits.ws_idle_timeout.as_secs()),
            bframes: match transcode.bframes {
                streamgate_transcode::BFramesPolicy::Transcode => BFrames::Transcode,
                streamgate_transcode::BFramesPolicy::Refuse => BFrames::Refuse,
            },
            max_video_transcodes: transcode.max_video,
            video_transcode_bitrate: transcode.video_bitrate_bps / 1000,
            stun_server: String::new(),
            turn_server: String::new(),
            turn_username: String::new(),
            turn_credential: ConfigSecret::default(),
        }
    }
}

impl Default for RelaySection {
    fn default() -> Self {
        let limits = streamgate_relay::RelayLimits::default();
        Self {
            max_frame_bytes: limits.max_frame_bytes,
            buffer_frames: limits.buffer_frames,
            buffer_bytes: limits.buffer_bytes,
            gop_frames: limits.gop_frames,
            gop_bytes: limits.gop_bytes,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        let policy = streamgate_auth::FailurePolicy::default();
        Self {
            open_publish: false,
            require_play_token: false,
            failure_delay_ms: Millis(u64::try_from(policy.base_delay.as_millis()).unwrap_or(0)),
            max_failure_delay_ms: Millis(u64::try_from(policy.max_delay.as_millis()).unwrap_or(0)),
        }
    }
}

impl AuthSection {
    /// How failed authentications are delayed.
    pub fn failure_policy(&self) -> streamgate_auth::FailurePolicy {
        streamgate_auth::FailurePolicy {
            base_delay: self.failure_delay_ms.duration(),
            max_delay: self.max_failure_delay_ms.duration(),
            ..streamgate_auth::FailurePolicy::default()
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl HttpSection {
    /// The HTTP server's limits.
    pub fn limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            header_timeout: self.header_timeout.duration(),
            body_timeout: self.body_timeout.duration(),
            idle_timeout: self.idle_timeout.duration(),
        }
    }
}

impl RtmpSection {
    /// Every RTMP session's limits.
    pub fn session_limits(&self, relay: &RelaySection) -> streamgate_rtmp::SessionLimits {
        streamgate_rtmp::SessionLimits {
            handshake_timeout: self.handshake_timeout.duration(),
            grant_timeout: self.grant_timeout.duration(),
            idle_timeout: self.idle_timeout.duration(),
            max_frame_bytes: relay.max_frame_bytes,
            write_coalesce: Duration::from_millis(self.write_coalesce_ms),
            large_audience_coalesce: Duration::from_millis(self.large_audience_coalesce_ms),
        }
    }
}

impl SrtSection {
    /// The server-wide passphrase, if one is set.
    pub fn passphrase(&self) -> Option<String> {
        (!self.passphrase.is_empty()).then(|| self.passphrase.expose().to_owned())
    }
}

impl WebRtcSection {
    /// The STUN and TURN servers given to clients.
    pub fn ice_servers(&self) -> Result<Vec<streamgate_webrtc::IceServer>, ConfigError> {
        let mut servers = Vec::new();
        for (key, url, scheme) in [
            ("webrtc.stun_server", &self.stun_server, "stun"),
            ("webrtc.turn_server", &self.turn_server, "turn"),
        ] {
            let url = url.trim();
            if url.is_empty() {
                continue;
            }
            let known = url
                .split_once(':')
                .is_some_and(|(s, rest)| s.trim_end_matches('s') == scheme && !rest.is_empty());
            if !known
                || url
                    .chars()
                    .any(|c| c.is_whitespace() || c == '<' || c == '>')
            {
                return Err(ConfigError(format!(
                    "{key}: {url:?} is not a {scheme}: or {scheme}s: URL"
                )));
            }
            let turn = scheme == "turn";
            servers.push(streamgate_webrtc::IceServer {
                url: url.to_owned(),
                username: if turn {
                    self.turn_username.clone()
                } else {
                    String::new()
                },
                credential: if turn {
                    self.turn_credential.expose().to_owned()
                } else {
                    String::new()
                },
            });
        }
        Ok(servers)
    }

    /// The ICE settings these values describe.
    pub fn ice_settings(&self) -> Result<streamgate_webrtc::IceSettings, ConfigError> {
        let public_ip = match self.public_ip.trim() {
            "" => None,
            ip => Some(ip.parse().map_err(|_| {
                ConfigError(format!(
                    "webrtc.public_ip (STREAMGATE_WEBRTC_PUBLIC_IP): {ip:?} is not an IP address"
                ))
            })?),
        };
        let udp_ports = match (self.udp_port_min, self.udp_port_max) {
            (0, 0) => None,
            (min, max) if min > 0 && min <= max => Some((min, max)),
            (min, max) => {
                return Err(ConfigError(format!(
                    "webrtc.udp_port_min/udp_port_max: {min}..{max} is not a port range (both 0 for any)"
                )))
            }
        };
        let mut ips = Vec::new();
        for ip in self
            .ice_ips
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            ips.push(ip.parse().map_err(|_| {
                ConfigError(format!(
                    "webrtc.ice_ips (STREAMGATE_WEBRTC_ICE_IPS): {ip:?} is not an IP address"
                ))
            })?);
        }
        Ok(streamgate_webrtc::IceSettings {
            public_ip,
            udp_ports,
            ips,
        })
    }

    /// The limits of WebRTC sessions and their sockets.
    pub fn limits(&self) -> streamgate_webrtc::WebRtcLimits {
        streamgate_webrtc::WebRtcLimits {
            max_candidates: self.max_candidates,
            max_peers_per_ip: self.max_peers_per_ip,
            max_pending: self.max_pending,
            ws_ping_interval: self.ws_ping_interval.duration(),
            ws_idle_timeout: self.ws_idle_timeout.duration(),
        }
    }

    /// How the relay's derived tracks for browsers run (the H.264 re-encode's policy, cap
    /// and bit rate).
    pub fn transcode_settings(&self) -> streamgate_transcode::TranscodeSettings {
        streamgate_transcode::TranscodeSettings {
            bframes: match self.bframes {
                BFrames::Transcode => streamgate_transcode::BFramesPolicy::Transcode,
                BFrames::Refuse => streamgate_transcode::BFramesPolicy::Refuse,
            },
            max_video: self.max_video_transcodes,
            video_bitrate_bps: self.video_transcode_bitrate.saturating_mul(1000),
        }
    }
}

impl RelaySection {
    /// The relay's bounds.
    pub fn limits(&self) -> streamgate_relay::RelayLimits {
        streamgate_relay::RelayLimits {
            max_frame_bytes: self.max_frame_bytes,
            buffer_frames: self.buffer_frames,
            buffer_bytes: self.buffer_bytes,
            gop_frames: self.gop_frames,
            gop_bytes: self.gop_bytes,
        }
    }
}

impl HttpSection {
    /// The trusted proxies.
    pub fn proxies(&self) -> Result<crate::proxy::TrustedProxies, ConfigError> {
        crate::proxy::TrustedProxies::parse(&self.trusted_proxies).map_err(|e| {
            ConfigError(format!(
                "http.trusted_proxies (STREAMGATE_HTTP_TRUSTED_PROXIES): {e}"
            ))
        })
    }
}

impl TokensSection {
    /// The default expiry, if set.
    pub fn default_expiry(&self) -> Option<Duration> {
        self.default_expiry.nonzero()
    }

    /// The longest expiry, if set.
    pub fn max_expiry(&self) -> Option<Duration> {
        self.max_expiry.nonzero()
    }
}

impl JwtSection {
    /// What signed tokens must show besides a valid signature.
    pub fn policy(&self) -> streamgate_auth::jwt::JwtPolicy {
        let text = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        streamgate_auth::jwt::JwtPolicy {
            issuer: text(&self.issuer),
            audience: text(&self.audience),
            max_lifetime: self.max_lifetime.nonzero(),
            require_jti: self.require_jti,
        }
    }

    /// The JWKS document, read from `jwks_file` when set.
    pub fn jwks(&self) -> Result<Option<String>, String> {
        if self.jwks_file.as_os_str().is_empty() {
            return Ok(None);
        }
        std::fs::read_to_string(&self.jwks_file)
            .map(Some)
            .map_err(|e| format!("jwt.jwks_file {}: {e}", self.jwks_file.display()))
    }
}

/// A configuration that cannot be used; the message says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line could not be parsed, or asked for help or the version.
    #[error(transparent)]
    Flags(#[from] clap::Error),
    /// A value is wrong.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// The command line's parser: `--config` and one flag (with its variable) per setting.
pub fn command() -> Command {
    let defaults = defaults();
    let mut cmd = Command::new("streamgate")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Token-guarded live-streaming ingest and signaling server")
        .arg(
            Arg::new("config")
                .long("config")
                .short('c')
                .env("STREAMGATE_CONFIG")
                .value_name("FILE")
                .help("Config file [default: config/streamgate.toml if it exists]"),
        );
    for s in SETTINGS {
        let default = match lookup(&defaults, s.key) {
            Some(toml::Value::String(v)) if v.is_empty() => "empty".to_owned(),
            Some(toml::Value::String(v)) if s.secret => format!("{} bytes", v.len()),
            Some(toml::Value::String(v)) => v.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        cmd = cmd.arg(
            Arg::new(s.key)
                .long(s.flag())
                .env(s.env())
                .value_name(s.value_name)
                .action(ArgAction::Set)
                .hide_env_values(s.secret)
                .help(format!("{} [default: {default}]", s.help)),
        );
    }
    cmd
}

/// The defaults as a TOML table.
fn defaults() -> toml::Table {
    match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

/// The value at `section.key` (or top-level `key`) of `table`.
fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    match key.split_once('.') {
        Some((section, key)) => table.get(section)?.as_table()?.get(key),
        None => table.get(key),
    }
}

/// Puts `value` at `section.key` of `table`, making the section if needed.
fn insert(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        Some((section, key)) => {
            let entry = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let Some(t) = entry.as_table_mut() {
                t.insert(key.to_owned(), value);
            }
        }
        None => {
            table.insert(key.to_owned(), value);
        }
    }
}

/// A flag's or variable's text as the TOML value the setting's type takes.
fn typed(text: &str, default: Option<&toml::Value>) -> Result<toml::Value, String> {
    match default {
        Some(toml::Value::Integer(_)) => text
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{text:?} is not a whole number")),
        Some(toml::Value::Boolean(_)) => match text.trim() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        Some(toml::Value::Float(_)) => text
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("{text:?} is not a number")),
        _ => Ok(toml::Value::String(text.to_owned())),
    }
}

impl Config {
    /// Reads the command line (`args`, the program name first), the environment and the file
    /// (the default one only if it exists), and checks the result.
    pub fn load<I, T>(args: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args)?;
        let (path, required) = match matches.get_one::<String>("config") {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ConfigError(format!("cannot read {}: {e}", path.display())).into())
            }
        };
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.message())))?;
        let defaults = defaults();
        // Where each overridden value came from, for the error messages.
        let mut given: HashMap<&str, String> = HashMap::new();
        for s in SETTINGS {
            let Some(text) = matches.get_one::<String>(s.key) else {
                continue;
            };
            let from = match matches.value_source(s.key) {
                Some(ValueSource::EnvVariable) => s.env(),
                _ => format!("--{}", s.flag()),
            };
            let value = typed(text, lookup(&defaults, s.key))
                .map_err(|e| ConfigError(format!("{} ({from}): {e}", s.key)))?;
            insert(&mut table, s.key, value);
            given.insert(s.key, from);
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let origin = given
                    .get(key.as_str())
                    .cloned()
                    .unwrap_or_else(|| path.display().to_string());
                ConfigError(format!("{key} ({origin}): {}", e.inner()))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        self.webrtc.ice_settings()?;
        self.webrtc.ice_servers()?;
        self.http.proxies()?;
        let (cert, key) = (
            self.tls.cert_file.as_os_str().is_empty(),
            self.tls.key_file.as_os_str().is_empty(),
        );
        if cert != key {
            return fail("tls.cert_file and tls.key_file: set both (TLS on) or neither".into());
        }
        if self.tls.redirect_http && cert {
            return fail("tls.redirect_http: needs tls.cert_file and tls.key_file".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir: must not be empty".into());
        }
        if self.workers > MAX_WORKERS {
            return fail(format!(
                "workers (STREAMGATE_WORKERS): must be 0 (one per core) to {MAX_WORKERS}"
            ));
        }
        let api_secret = self.api.secret.expose();
        if !api_secret.is_empty() && api_secret.len() < MIN_API_SECRET_LEN {
            return fail(format!(
                "api.secret (STREAMGATE_API_SECRET): must be at least {MIN_API_SECRET_LEN} characters, or empty to generate one"
            ));
        }
        if api_secret.trim() != api_secret {
            return fail(
                "api.secret (STREAMGATE_API_SECRET): must not start or end with spaces".into(),
            );
        }
        if !self.jwt.hs256_secret.is_empty()
            && self.jwt.hs256_secret.expose().len() < MIN_JWT_SECRET_LEN
        {
            return fail(format!(
                "jwt.hs256_secret (STREAMGATE_JWT_HS256_SECRET): must be at least {MIN_JWT_SECRET_LEN} bytes, or empty to generate one"
            ));
        }
        if self.tokens.max_expiry.0 > 0 && self.tokens.default_expiry > self.tokens.max_expiry {
            return fail("tokens.default_expiry: must not exceed tokens.max_expiry".into());
        }
        if let Some(jwks) = self.jwt.jwks().map_err(ConfigError)? {
            streamgate_auth::jwt::JwtVerifier::new(None, Some(&jwks)).map_err(|e| {
                ConfigError(format!(
                    "jwt.jwks_file {}: {e}",
                    self.jwt.jwks_file.display()
                ))
            })?;
        }
        if !self.srt.passphrase.is_empty()
            && !(MIN_SRT_PASSPHRASE_LEN..=MAX_SRT_PASSPHRASE_LEN)
                .contains(&self.srt.passphrase.expose().len())
        {
            return fail(format!(
                "srt.passphrase (STREAMGATE_SRT_PASSPHRASE): must be {MIN_SRT_PASSPHRASE_LEN} to {MAX_SRT_PASSPHRASE_LEN} bytes, or empty for none"
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return fail(format!(
                "log.level: {:?} is not a valid filter",
                self.log.level
            ));
        }
        if self.auth.max_failure_delay_ms < self.auth.failure_delay_ms {
            return fail(
                "auth.max_failure_delay_ms: must be at least auth.failure_delay_ms".into(),
            );
        }
        if !self.metrics.token.is_empty() && self.metrics.token.expose().len() < MIN_API_SECRET_LEN
        {
            return fail(format!(
                "metrics.token (STREAMGATE_METRICS_TOKEN): must be at least {MIN_API_SECRET_LEN} characters, or empty for none"
            ));
        }
        self.validate_limits()
    }

    /// Checks the timeouts and bounds: none may be switched off.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        self.hls.validate()?;
        self.cluster.validate()?;
        for (name, ms) in [
            ("rtmp.write_coalesce_ms", self.rtmp.write_coalesce_ms),
            (
                "rtmp.large_audience_coalesce_ms",
                self.rtmp.large_audience_coalesce_ms,
            ),
        ] {
            if ms > MAX_WRITE_COALESCE_MS {
                return Err(ConfigError(format!(
                    "{name}: must be 0 to {MAX_WRITE_COALESCE_MS}"
                )));
            }
        }
        let positive: [(&str, u64); 11] = [
            ("http.header_timeout", self.http.header_timeout.0),
            ("http.body_timeout", self.http.body_timeout.0),
            ("http.idle_timeout", self.http.idle_timeout.0),
            ("rtmp.handshake_timeout", self.rtmp.handshake_timeout.0),
            ("rtmp.grant_timeout", self.rtmp.grant_timeout.0),
            ("rtmp.idle_timeout", self.rtmp.idle_timeout.0),
            ("webrtc.ws_ping_interval", self.webrtc.ws_ping_interval.0),
            ("webrtc.ws_idle_timeout", self.webrtc.ws_idle_timeout.0),
            ("http.max_connections", self.http.max_connections as u64),
            ("rtmp.max_connections", self.rtmp.max_connections as u64),
            ("webrtc.max_pending", self.webrtc.max_pending as u64),
        ];
        let counts: [(&str, usize); 6] = [
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip,
            ),
            (
                "rtmp.max_connections_per_ip",
                self.rtmp.max_connections_per_ip,
            ),
            ("webrtc.max_candidates", self.webrtc.max_candidates),
            ("webrtc.max_peers_per_ip", self.webrtc.max_peers_per_ip),
            ("relay.gop_frames", self.relay.gop_frames),
            ("relay.buffer_frames", self.relay.buffer_frames),
        ];
        let zero = positive
            .iter()
            .map(|(k, v)| (*k, *v == 0))
            .chain(counts.iter().map(|(k, v)| (*k, *v == 0)))
            .find(|(_, zero)| *zero);
        if let Some((key, _)) = zero {
            return Err(ConfigError(format!("{key}: must be at least 1")));
        }
        if self.webrtc.ws_ping_interval >= self.webrtc.ws_idle_timeout {
            return Err(ConfigError(
                "webrtc.ws_ping_interval: must be shorter than webrtc.ws_idle_timeout".into(),
            ));
        }
        let frame = self.relay.max_frame_bytes;
        if !(64 * 1024..=MAX_FRAME_BYTES_LIMIT).contains(&frame) {
            return Err(ConfigError(format!(
                "relay.max_frame_bytes: must be 65536 to {MAX_FRAME_BYTES_LIMIT}"
            )));
        }
        for (key, bytes) in [
            ("relay.buffer_bytes", self.relay.buffer_bytes),
            ("relay.gop_bytes", self.relay.gop_bytes),
        ] {
            if bytes < frame {
                return Err(ConfigError(format!(
                    "{key}: must be at least relay.max_frame_bytes ({frame})"
                )));
            }
        }
        if !(100..=50_000).contains(&self.webrtc.video_transcode_bitrate) {
            return Err(ConfigError(
                "webrtc.video_transcode_bitrate: must be 100 to 50000 (kbit/s)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    impl Config {
        /// Parses a config file's text.
        fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
            toml::from_str(text)
                .map_err(|e| ConfigError(format!("{}: {}", origin.display(), e.message())))
        }
    }

    /// Every leaf key of a table, as `section.key`.
    fn keys(table: &toml::Table) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in table {
            match v {
                toml::Value::Table(t) => out.extend(t.keys().map(|s| format!("{k}.{s}"))),
                _ => out.push(k.clone()),
            }
        }
        out.sort();
        out
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let mut c = Config::default();
        let secrets = [
            "api-secret-value-0123",
            "jwt-key-value-0123456789abcdef0123",
            "srt-pass-phrase",
            "metrics-scraper-token",
            "turn-password-value",
        ];
        c.api.secret = ConfigSecret(secrets[0].into());
        c.jwt.hs256_secret = ConfigSecret(secrets[1].into());
        c.srt.passphrase = ConfigSecret(secrets[2].into());
        c.metrics.token = ConfigSecret(secrets[3].into());
        c.webrtc.turn_credential = ConfigSecret(secrets[4].into());
        let text = format!("{c:?} {c:#?}");
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn every_setting_has_one_row_and_every_row_a_setting() {
        let mut rows: Vec<String> = SETTINGS.iter().map(|s| s.key.to_owned()).collect();
        rows.sort();
        assert_eq!(rows, keys(&defaults()));
        assert_eq!(
            SETTINGS
                .iter()
                .find(|s| s.key == "http.max_connections_per_ip")
                .map(|s| (s.flag(), s.env())),
            Some((
                "http-max-connections-per-ip".to_owned(),
                "STREAMGATE_HTTP_MAX_CONNECTIONS_PER_IP".to_owned()
            ))
        );
        command().debug_assert();
    }

    #[test]
    fn shipped_config_loads_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/streamgate.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::from_toml(&text, &path).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config,
            Config::default(),
            "the shipped file documents the defaults"
        );
        let mut shipped = keys(&toml::from_str(&text).unwrap());
        shipped.sort();
        assert_eq!(
            shipped,
            keys(&defaults()),
            "the shipped file shows every key"
        );
    }

    fn load(file: &str, args: &[&str]) -> Result<Config, String> {
        // A directory of its own per call: tests run in parallel, and each removes its own.
        static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("streamgate-config-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, file).unwrap();
        let mut all = vec!["streamgate", "--config", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let result = Config::load(all).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[test]
    fn flags_override_the_file_and_errors_name_the_source() {
        let c = load(
            "[http]\nlisten = \"127.0.0.1:1\"\n[rtmp]\ngrant_timeout = 4",
            &[
                "--http-listen",
                "127.0.0.1:9",
                "--auth-open-publish",
                "true",
            ],
        )
        .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9".parse::<SocketAddr>().unwrap());
        assert!(c.auth.open_publish);
        assert_eq!(c.rtmp.grant_timeout, Seconds(4));
        let e = load("", &["--http-listen", "nope"]).unwrap_err();
        assert!(e.contains("http.listen (--http-listen)"), "{e}");
        let e = load("", &["--rtmp-grant-timeout", "soon"]).unwrap_err();
        assert!(
            e.contains("--rtmp-grant-timeout") && e.contains("whole number"),
            "{e}"
        );
        let e = load("[http]\nlisten = \"nope\"", &[]).unwrap_err();
        assert!(e.contains("http.listen") && e.contains("c.toml"), "{e}");
        let e = load("[http]\nlisen = \"0.0.0.0:1\"", &[]).unwrap_err();
        assert!(e.contains("lisen"), "{e}");
        let e = load("", &["--log-format", "xml"]).unwrap_err();
        assert!(e.contains("log.format (--log-format)"), "{e}");
        let e = load("", &["--rtmp-grant-timeout", "0"]).unwrap_err();
        assert!(e.contains("rtmp.grant_timeout: must be at least 1"), "{e}");
        let e = load("", &["--relay-buffer-bytes", "1000"]).unwrap_err();
        assert!(e.contains("relay.buffer_bytes"), "{e}");
    }

    #[test]
    fn workers_default_to_one_per_core_and_are_bounded() {
        assert_eq!(load("", &[]).unwrap().workers, 0);
        assert_eq!(load("workers = 1", &[]).unwrap().workers, 1);
        assert_eq!(load("", &["--workers", "3"]).unwrap().workers, 3);
        let e = load("", &["--workers", "1025"]).unwrap_err();
        assert!(e.contains("workers (STREAMGATE_WORKERS): must be 0"), "{e}");
    }

    #[test]
    fn rtmp_coalescing_times_are_bounded() {
        let c = load("", &[]).unwrap();
        let limits = c.rtmp.session_limits(&c.relay);
        assert_eq!(limits.write_coalesce, Duration::ZERO);
        assert_eq!(limits.large_audience_coalesce, Duration::from_millis(40));
        let c = load(
            "[rtmp]\nwrite_coalesce_ms = 5",
            &["--rtmp-large-audience-coalesce-ms", "0"],
        )
        .unwrap();
        let limits = c.rtmp.session_limits(&c.relay);
        assert_eq!(limits.write_coalesce, Duration::from_millis(5));
        assert_eq!(limits.large_audience_coalesce, Duration::ZERO);
        for key in ["write_coalesce_ms", "large_audience_coalesce_ms"] {
            let e = load(&format!("[rtmp]\n{key} = 101"), &[]).unwrap_err();
            assert!(e.contains(&format!("rtmp.{key}: must be 0 to 100")), "{e}");
        }
    }

    #[test]
    fn webrtc_settings() {
        let p = Path::new("x.toml");
        let c = Config::from_toml(
            "[webrtc]\npublic_ip = \"203.0.113.7\"\nudp_port_min = 50000\nudp_port_max = 50100\nice_ips = \"127.0.0.1, ::1\"",
            p,
        )
        .unwrap();
        let ice = c.webrtc.ice_settings().unwrap();
        assert_eq!(ice.public_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(ice.udp_ports, Some((50000, 50100)));
        assert_eq!(ice.ips.len(), 2);
        assert_eq!(
            Config::default().webrtc.ice_settings().unwrap(),
            streamgate_webrtc::IceSettings::default()
        );
        for bad in [
            "[webrtc]\npublic_ip = \"nope\"",
            "[webrtc]\nudp_port_min = 10\nudp_port_max = 5",
            "[webrtc]\nudp_port_max = 5",
            "[webrtc]\nice_ips = \"1.2.3\"",
            "[webrtc]\nws_ping_interval = 60\nws_idle_timeout = 30",
            "[webrtc]\nstun_server = \"http://stun.example.net\"",
            "[webrtc]\nturn_server = \"turn:a b\"",
            "[webrtc]\nstun_server = \"stun:\"",
        ] {
            let c = Config::from_toml(bad, p).unwrap();
            assert!(c.validate().unwrap_err().0.contains("webrtc"), "{bad}");
        }
        let c = Config::from_toml(
            "[webrtc]\nstun_server = \"stun:stun.example.net:3478\"\nturn_server = \"turns:turn.example.net\"\nturn_username = \"u\"\nturn_credential = \"p\"",
            p,
        )
        .unwrap();
        let servers = c.webrtc.ice_servers().unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, "", "STUN takes no credentials");
        assert_eq!(
            (servers[1].username.as_str(), servers[1].credential.as_str()),
            ("u", "p")
        );
        assert!(Config::default().webrtc.ice_servers().unwrap().is_empty());
    }

    #[test]
    fn srt_settings_and_secrets() {
        let p = Path::new("x.toml");
        let c = Config::from_toml(
            "[srt]\nlisten = \"127.0.0.1:9999\"\npassphrase = \"0123456789\"",
            p,
        )
        .unwrap();
        assert_eq!(c.srt.passphrase().as_deref(), Some("0123456789"));
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("0123456789"));
        let short = Config::from_toml("[srt]\npassphrase = \"short\"", p).unwrap();
        assert!(short.validate().unwrap_err().0.contains("srt.passphrase"));
        let mut c = Config::from_toml("[api]\nsecret = \"short\"", p).unwrap();
        assert!(c.validate().unwrap_err().0.contains("api.secret"));
        c.api.secret = ConfigSecret("a".repeat(16));
        assert!(c.validate().is_ok());
        let help = command().render_help().to_string();
        assert!(help.contains("STREAMGATE_API_SECRET"));
        assert!(help.contains("STREAMGATE_RTMP_GRANT_TIMEOUT"));
    }
}
