//! Configuration: `config/streamgate.toml`, overridden by `STREAMGATE_<SECTION>_<KEY>`
//! environment variables, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use streamgate_auth::{MAX_SRT_PASSPHRASE_LEN, MIN_SRT_PASSPHRASE_LEN};

/// The config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG_PATH: &str = "config/streamgate.toml";
/// Shortest API secret accepted from config or environment.
pub const MIN_API_SECRET_LEN: usize = 16;
/// Shortest HS256 signing key accepted, in bytes (the hash's size).
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the token database and the generated API secret.
    pub data_dir: PathBuf,
    /// HTTP listener (REST API, health, metrics).
    pub http: HttpConfig,
    /// REST API settings.
    pub api: ApiConfig,
    /// RTMP listener.
    pub rtmp: RtmpSection,
    /// SRT listener.
    pub srt: SrtSection,
    /// WebRTC peers (ICE).
    pub webrtc: WebRtcSection,
    /// Server-wide authorization policy.
    pub auth: AuthSection,
    /// Token expiry policy.
    pub tokens: TokensSection,
    /// Signed tokens.
    pub jwt: JwtSection,
    /// Logging.
    pub log: LogConfig,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
}

/// `[rtmp]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpSection {
    /// Address the RTMP listener binds.
    pub listen: SocketAddr,
}

impl Default for RtmpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
        }
    }
}

/// `[srt]`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrtSection {
    /// Address (UDP) the SRT listener binds.
    pub listen: SocketAddr,
    /// Passphrase every SRT connection must use unless its publish token sets one; empty
    /// means none.
    pub passphrase: String,
}

impl Default for SrtSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            passphrase: String::new(),
        }
    }
}

impl SrtSection {
    /// The server-wide passphrase, if one is set.
    pub fn passphrase(&self) -> Option<String> {
        (!self.passphrase.is_empty()).then(|| self.passphrase.clone())
    }
}

impl std::fmt::Debug for SrtSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtSection")
            .field("listen", &self.listen)
            .field(
                "passphrase",
                &(!self.passphrase.is_empty()).then_some("<redacted>"),
            )
            .finish()
    }
}

/// `[webrtc]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
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
}

impl WebRtcSection {
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
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer secret for `/api`; empty means generate one into the data dir.
    pub secret: String,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Development mode: publishing needs no token.
    pub open_publish: bool,
    /// Every viewer needs a subscribe token.
    pub require_play_token: bool,
}

/// `[tokens]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TokensSection {
    /// Seconds of validity for tokens created without `expires`; 0 = they never expire.
    pub default_expiry: u64,
    /// Longest `expires` accepted, in seconds; 0 = no limit.
    pub max_expiry: u64,
}

impl TokensSection {
    /// The default expiry, if set.
    pub fn default_expiry(&self) -> Option<std::time::Duration> {
        (self.default_expiry > 0).then(|| std::time::Duration::from_secs(self.default_expiry))
    }

    /// The longest expiry, if set.
    pub fn max_expiry(&self) -> Option<std::time::Duration> {
        (self.max_expiry > 0).then(|| std::time::Duration::from_secs(self.max_expiry))
    }
}

/// `[jwt]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSection {
    /// HS256 signing key; empty = generate one into `<data_dir>/jwt_secret`.
    pub hs256_secret: String,
    /// A JWKS file with the public keys (RS256, ES256, EdDSA) of signed tokens; empty = none.
    pub jwks_file: PathBuf,
}

impl JwtSection {
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

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `streamgate=debug,info`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            http: HttpConfig::default(),
            api: ApiConfig::default(),
            rtmp: RtmpSection::default(),
            srt: SrtSection::default(),
            webrtc: WebRtcSection::default(),
            auth: AuthSection::default(),
            tokens: TokensSection::default(),
            jwt: JwtSection::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Command-line flags; each also reads its environment variable. Flags win over the
/// environment, which wins over the config file.
#[derive(Debug, Parser)]
#[command(
    name = "streamgate",
    version,
    about = "Token-guarded live-streaming ingest and signaling server"
)]
pub struct Cli {
    /// Config file [default: config/streamgate.toml if it exists]
    #[arg(long, short = 'c', env = "STREAMGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (token database, generated API secret) [default: ./data]
    #[arg(long, env = "STREAMGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address: REST API, WebSocket, pages, /healthz, /metrics [default: 0.0.0.0:8080]
    #[arg(long, env = "STREAMGATE_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// RTMP listen address [default: 0.0.0.0:1935]
    #[arg(long, env = "STREAMGATE_RTMP_LISTEN", value_name = "ADDR")]
    pub rtmp_listen: Option<SocketAddr>,
    /// SRT listen address (UDP) [default: 0.0.0.0:9000]
    #[arg(long, env = "STREAMGATE_SRT_LISTEN", value_name = "ADDR")]
    pub srt_listen: Option<SocketAddr>,
    /// Passphrase for every SRT connection, 10 to 79 bytes; empty for none (prefer the
    /// environment variable: flags show in process lists)
    #[arg(
        long,
        env = "STREAMGATE_SRT_PASSPHRASE",
        value_name = "PASSPHRASE",
        hide_env_values = true
    )]
    pub srt_passphrase: Option<String>,
    /// Address announced in WebRTC ICE candidates (1:1 NAT); empty for none
    #[arg(long, env = "STREAMGATE_WEBRTC_PUBLIC_IP", value_name = "IP")]
    pub webrtc_public_ip: Option<String>,
    /// Lowest UDP port for WebRTC ICE (0 with the highest 0: any) [default: 0]
    #[arg(long, env = "STREAMGATE_WEBRTC_UDP_PORT_MIN", value_name = "PORT")]
    pub webrtc_udp_port_min: Option<u16>,
    /// Highest UDP port for WebRTC ICE [default: 0]
    #[arg(long, env = "STREAMGATE_WEBRTC_UDP_PORT_MAX", value_name = "PORT")]
    pub webrtc_udp_port_max: Option<u16>,
    /// Comma-separated local IPs for WebRTC ICE candidates; empty: all but loopback
    #[arg(long, env = "STREAMGATE_WEBRTC_ICE_IPS", value_name = "IPS")]
    pub webrtc_ice_ips: Option<String>,
    /// API secret for /api (prefer the environment variable: flags show in process lists)
    #[arg(
        long,
        env = "STREAMGATE_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub api_secret: Option<String>,
    /// Development mode: publishing needs no token
    #[arg(long, env = "STREAMGATE_AUTH_OPEN_PUBLISH", value_name = "BOOL")]
    pub auth_open_publish: Option<bool>,
    /// Every viewer needs a subscribe token
    #[arg(long, env = "STREAMGATE_AUTH_REQUIRE_PLAY_TOKEN", value_name = "BOOL")]
    pub auth_require_play_token: Option<bool>,
    /// Seconds of validity for tokens created without `expires` (0 = never expire)
    #[arg(long, env = "STREAMGATE_TOKENS_DEFAULT_EXPIRY", value_name = "SECONDS")]
    pub tokens_default_expiry: Option<u64>,
    /// Longest token expiry accepted, in seconds (0 = no limit)
    #[arg(long, env = "STREAMGATE_TOKENS_MAX_EXPIRY", value_name = "SECONDS")]
    pub tokens_max_expiry: Option<u64>,
    /// HS256 key for signed tokens (prefer the environment variable) [default: generated into the data dir]
    #[arg(
        long,
        env = "STREAMGATE_JWT_HS256_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_hs256_secret: Option<String>,
    /// JWKS file with the public keys of signed tokens
    #[arg(long, env = "STREAMGATE_JWT_JWKS_FILE", value_name = "FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Log format
    #[arg(long, env = "STREAMGATE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or streamgate=debug
    #[arg(long, env = "STREAMGATE_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// A configuration that cannot be used; the message says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses a config file's text.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError(format!("{}: {}", origin.display(), e.message())))
    }

    /// Reads the file (the default one only if it exists), then applies the flags and environment.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let (path, required) = match &cli.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text, &path)?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
        };
        config.apply(cli);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, cli: &Cli) {
        if let Some(v) = &cli.data_dir {
            self.data_dir.clone_from(v);
        }
        if let Some(v) = cli.http_listen {
            self.http.listen = v;
        }
        if let Some(v) = cli.rtmp_listen {
            self.rtmp.listen = v;
        }
        if let Some(v) = cli.srt_listen {
            self.srt.listen = v;
        }
        if let Some(v) = &cli.srt_passphrase {
            self.srt.passphrase.clone_from(v);
        }
        if let Some(v) = &cli.webrtc_public_ip {
            self.webrtc.public_ip.clone_from(v);
        }
        if let Some(v) = cli.webrtc_udp_port_min {
            self.webrtc.udp_port_min = v;
        }
        if let Some(v) = cli.webrtc_udp_port_max {
            self.webrtc.udp_port_max = v;
        }
        if let Some(v) = &cli.webrtc_ice_ips {
            self.webrtc.ice_ips.clone_from(v);
        }
        if let Some(v) = &cli.api_secret {
            self.api.secret.clone_from(v);
        }
        if let Some(v) = cli.auth_open_publish {
            self.auth.open_publish = v;
        }
        if let Some(v) = cli.auth_require_play_token {
            self.auth.require_play_token = v;
        }
        if let Some(v) = cli.tokens_default_expiry {
            self.tokens.default_expiry = v;
        }
        if let Some(v) = cli.tokens_max_expiry {
            self.tokens.max_expiry = v;
        }
        if let Some(v) = &cli.jwt_hs256_secret {
            self.jwt.hs256_secret.clone_from(v);
        }
        if let Some(v) = &cli.jwt_jwks_file {
            self.jwt.jwks_file.clone_from(v);
        }
        if let Some(v) = cli.log_format {
            self.log.format = v;
        }
        if let Some(v) = &cli.log_level {
            self.log.level.clone_from(v);
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.webrtc.ice_settings()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError("data_dir: must not be empty".into()));
        }
        if !self.api.secret.is_empty() && self.api.secret.len() < MIN_API_SECRET_LEN {
            return Err(ConfigError(format!(
                "api.secret (STREAMGATE_API_SECRET): must be at least {MIN_API_SECRET_LEN} characters, or empty to generate one"
            )));
        }
        if self.api.secret.trim() != self.api.secret {
            return Err(ConfigError(
                "api.secret (STREAMGATE_API_SECRET): must not start or end with spaces".into(),
            ));
        }
        if !self.jwt.hs256_secret.is_empty() && self.jwt.hs256_secret.len() < MIN_JWT_SECRET_LEN {
            return Err(ConfigError(format!(
                "jwt.hs256_secret (STREAMGATE_JWT_HS256_SECRET): must be at least {MIN_JWT_SECRET_LEN} bytes, or empty to generate one"
            )));
        }
        if self.tokens.max_expiry > 0 && self.tokens.default_expiry > self.tokens.max_expiry {
            return Err(ConfigError(
                "tokens.default_expiry: must not exceed tokens.max_expiry".into(),
            ));
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
                .contains(&self.srt.passphrase.len())
        {
            return Err(ConfigError(format!(
                "srt.passphrase (STREAMGATE_SRT_PASSPHRASE): must be {MIN_SRT_PASSPHRASE_LEN} to {MAX_SRT_PASSPHRASE_LEN} bytes, or empty for none"
            )));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError(format!(
                "log.level: {:?} is not a valid filter",
                self.log.level
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let p = Path::new("x.toml");
        assert!(Config::from_toml("[http]\nlisten = \"nope\"", p).is_err());
        assert!(Config::from_toml("[http]\nlisen = \"0.0.0.0:1\"", p)
            .unwrap_err()
            .0
            .contains("lisen"));
        assert!(Config::from_toml("colour = 1", p).is_err());
        let mut c = Config::from_toml("[api]\nsecret = \"short\"", p).unwrap();
        assert!(c.validate().unwrap_err().0.contains("api.secret"));
        c.api.secret = "a".repeat(16);
        assert!(c.validate().is_ok());
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
        ] {
            let c = Config::from_toml(bad, p).unwrap();
            assert!(c.validate().unwrap_err().0.contains("webrtc"), "{bad}");
        }
        let cli = Cli::parse_from(["streamgate", "--webrtc-ice-ips", "127.0.0.1"]);
        let mut c = Config::default();
        c.apply(&cli);
        assert_eq!(c.webrtc.ice_ips, "127.0.0.1");
    }

    #[test]
    fn srt_settings() {
        let p = Path::new("x.toml");
        let c = Config::from_toml(
            "[srt]\nlisten = \"127.0.0.1:9999\"\npassphrase = \"0123456789\"",
            p,
        )
        .unwrap();
        assert_eq!(
            c.srt.listen,
            "127.0.0.1:9999".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.srt.passphrase().as_deref(), Some("0123456789"));
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("0123456789"));
        let short = Config::from_toml("[srt]\npassphrase = \"short\"", p).unwrap();
        assert!(short.validate().unwrap_err().0.contains("srt.passphrase"));
        assert_eq!(Config::default().srt.passphrase(), None);
        let cli = Cli::parse_from(["streamgate", "--srt-listen", "127.0.0.1:7"]);
        let mut c = Config::default();
        c.apply(&cli);
        assert_eq!(c.srt.listen, "127.0.0.1:7".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::parse_from([
            "streamgate",
            "--http-listen",
            "127.0.0.1:9",
            "--auth-open-publish",
            "true",
        ]);
        let mut c = Config::from_toml("[http]\nlisten = \"127.0.0.1:1\"", Path::new("x")).unwrap();
        c.apply(&cli);
        assert_eq!(c.http.listen, "127.0.0.1:9".parse::<SocketAddr>().unwrap());
        assert!(c.auth.open_publish);
    }
}
