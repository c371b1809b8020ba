//! `streamgate`: reads the configuration, opens the token store, starts the listeners and the
//! HTTP server on one runtime, and shuts everything down on SIGINT/SIGTERM.

mod config;
mod http;
mod metrics;
mod proxy;
mod secret_file;
mod supervise;
mod tls;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use clap::error::ErrorKind;
use streamgate_admission::{Admission, EdgeRelay};
use streamgate_api::{ApiState, Health, MetricsAccess};
use streamgate_auth::cluster::ClusterKey;
use streamgate_auth::jwt::JwtVerifier;
use streamgate_auth::{
    Auth, AuthConfig, ConnectionGate, NodeIdentity, PostgresStore, Secret, SqliteStore, TokenStore,
};
use streamgate_relay::{Deriver, Hub};
use streamgate_rtmp::edge::EdgePulls;
use streamgate_rtmp::{RtmpContext, RtmpListener, RtmpsListener};
use streamgate_srt::{SrtContext, SrtListener};
use streamgate_transcode::Transcoders;
use streamgate_webrtc::WebRtcContext;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LoadError, LogFormat};
use crate::secret_file::SecretSource;
use crate::supervise::{spawn_listener, PanicCount};

/// Name of the token database inside the data dir.
const DB_FILE: &str = "streamgate.db";
/// How long shutdown waits for the shared store to release this node's publish leases.
const LEASE_RELEASE_WAIT: Duration = Duration::from_secs(2);
/// How long shutdown waits for sessions to end before leaving anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// File descriptors kept aside for the store, the WebRTC sockets and the like, beyond the
/// HTTP and RTMP connection caps, when checking the descriptor limit.
const SPARE_DESCRIPTORS: u64 = 1024;

fn main() -> ExitCode {
    let config = match Config::load(std::env::args_os()) {
        Ok(c) => c,
        Err(LoadError::Flags(e)) => return flag_error(e),
        Err(LoadError::Invalid(e)) => {
            eprintln!("streamgate: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let panics = supervise::count_panics();
    raise_descriptor_limit(&config);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.workers > 0 {
        builder.worker_threads(config.workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, panics)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("streamgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `--help` or `--version`, or a command-line error, and exits (2 for an error).
fn flag_error(e: clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    eprintln!("streamgate: invalid configuration: {first}");
    ExitCode::from(2)
}

/// Raises the soft limit of open files to the hard limit (systemd starts services at 1024,
/// which a thousand idle sockets would exhaust), and logs both.
fn raise_descriptor_limit(config: &Config) {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE);
    let raised = rlimit::increase_nofile_limit(u64::MAX);
    match (before, raised) {
        (Ok((soft, hard)), Ok(now)) => {
            tracing::info!(soft_before = soft, soft = now, hard, "open file limit");
            let wanted = (config.http.max_connections + config.rtmp.max_connections) as u64
                + SPARE_DESCRIPTORS;
            if now < wanted {
                tracing::warn!(
                    limit = now,
                    wanted,
                    "the open file limit is below the HTTP and RTMP connection caps; when it is reached, new connections wait while the others are served"
                );
            }
        }
        (_, Err(e)) | (Err(e), _) => {
            tracing::warn!(error = %e, "cannot read or raise the open file limit")
        }
    }
}

/// Libraries whose own log lines are kept to errors unless the filter names them: the SRT
/// crates log every packet at debug (stream ids, and so tokens, included) and warn once per
/// malformed datagram, which any peer can send; the TS reader warns on every damaged packet;
/// the PostgreSQL client logs every statement's parameters at debug (token policies, SRT
/// passphrases among them).
const QUIET_LIBRARIES: [&str; 4] = [
    "srt_protocol",
    "srt_tokio",
    "mpeg2ts_reader",
    "tokio_postgres",
];

/// The configured filter, with [`QUIET_LIBRARIES`] at `error` unless it mentions them.
fn log_filter(level: &str) -> String {
    let mut filter = level.to_owned();
    for lib in QUIET_LIBRARIES {
        if !level.contains(lib) {
            filter.push_str(&format!(",{lib}=error"));
        }
    }
    filter
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: Config, panics: PanicCount) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let (api_secret, source) = secret_file::resolve(
        config.api.secret.expose(),
        &config.data_dir,
        secret_file::API_SECRET_FILE,
    )
    .map_err(|e| format!("cannot read or create the API secret: {e}"))?;
    match source {
        SecretSource::Configured => tracing::info!("API secret taken from the configuration"),
        SecretSource::File(p) => tracing::info!(path = %p.display(), "API secret read from file"),
        SecretSource::Generated(p) => {
            tracing::info!(path = %p.display(), "API secret generated and written (mode 0600)")
        }
    }
    let db = config.data_dir.join(DB_FILE);
    let (store, where_stored): (Arc<dyn TokenStore>, String) = match config.store.postgres_url() {
        Some(url) => (
            Arc::new(
                PostgresStore::open(
                    url,
                    NodeIdentity {
                        name: config.cluster.node_id.clone(),
                        origin: config.cluster.origin(config.rtmp.listen),
                    },
                )
                .map_err(|e| e.to_string())?,
            ),
            "postgresql".to_owned(),
        ),
        None => (
            Arc::new(SqliteStore::open(&db).map_err(|e| e.to_string())?),
            db.display().to_string(),
        ),
    };
    let auth_config = AuthConfig {
        open_publish: config.auth.open_publish,
        require_play_token: config.auth.require_play_token,
        default_expiry: config.tokens.default_expiry(),
        max_expiry: config.tokens.max_expiry(),
    };
    let (jwt_secret, jwt_source) = secret_file::resolve(
        config.jwt.hs256_secret.expose(),
        &config.data_dir,
        secret_file::JWT_SECRET_FILE,
    )
    .map_err(|e| format!("cannot read or create the token signing key: {e}"))?;
    if let SecretSource::Generated(p) = jwt_source {
        tracing::info!(path = %p.display(), "signing key for signed tokens generated (mode 0600)");
    }
    let jwks = config.jwt.jwks()?;
    let verifier = JwtVerifier::new(Some(&jwt_secret), jwks.as_deref())
        .map_err(|e| e.to_string())?
        .with_policy(config.jwt.policy());
    let mut auth = Auth::open(store, auth_config)
        .map_err(|e| e.to_string())?
        .with_jwt(verifier);
    let cluster_secret = config.cluster.secret.expose();
    if !cluster_secret.is_empty() {
        auth = auth.with_cluster(ClusterKey::new(cluster_secret).map_err(|e| e.to_string())?);
    }
    let auth = Arc::new(auth);
    tracing::info!(db = %where_stored, tokens = auth.token_count(), "token store open");
    auth.follow_store()
        .map_err(|e| format!("cannot follow the token store's changes: {e}"))?;
    if auth_config.open_publish {
        tracing::warn!("auth.open_publish is on: anyone may publish without a token");
    }

    let shutdown = CancellationToken::new();
    let health = Health::default();
    health.expect("http");
    health.expect("rtmp");
    health.expect("srt");
    let proxies = Arc::new(config.http.proxies().map_err(|e| e.0)?);
    if !proxies.is_empty() {
        tracing::info!(
            proxies = %config.http.trusted_proxies,
            "client addresses are taken from Forwarded / X-Forwarded-For of these proxies"
        );
    }
    let certificates = match config.tls.files() {
        Some((cert, key)) => {
            health.expect("https");
            health.expect("rtmps");
            Some(tls::Certificates::load(cert, key).map_err(|e| format!("TLS: {e}"))?)
        }
        None => None,
    };
    let hub = Hub::with_limits(config.relay.limits());
    let transcoders = Arc::new(Transcoders::new(config.webrtc.transcode_settings()));
    hub.set_deriver(Arc::clone(&transcoders) as Arc<dyn Deriver>);
    health.add_metrics(Arc::new(metrics::RelayMetrics(hub.clone())));
    let admission = Arc::new(Admission::new(
        Arc::clone(&auth),
        hub.clone(),
        config.auth.failure_policy(),
    ));
    health.add_metrics(Arc::new(metrics::AdmissionMetrics(Arc::clone(&admission))));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(Arc::clone(&auth).run_expiry_sweeper(shutdown.clone()));

    let rtmp = RtmpListener::bind(config.rtmp.listen)
        .await
        .map_err(|e| format!("cannot listen for RTMP on {}: {e}", config.rtmp.listen))?;
    let rtmp_ctx = Arc::new(RtmpContext::new(
        Arc::clone(&admission),
        config.rtmp.session_limits(&config.relay),
    ));
    tracing::info!(
        addr = %rtmp.local_addr().map_err(|e| e.to_string())?,
        limits = ?rtmp_ctx.limits,
        max_connections = config.rtmp.max_connections,
        max_connections_per_ip = config.rtmp.max_connections_per_ip,
        "RTMP listening"
    );
    if auth.registry().shares_leases() {
        if auth.cluster_key().is_some() {
            // Viewers here of the streams other nodes publish: pulled from there.
            let edge = EdgePulls::new(Arc::clone(&rtmp_ctx), shutdown.clone());
            admission.set_edge(Arc::clone(&edge) as Arc<dyn EdgeRelay>);
            tasks.spawn(edge.run());
            tracing::info!(origin = %config.cluster.origin(config.rtmp.listen), node = %config.cluster.node_id, "relaying the streams of the other nodes");
        } else {
            tracing::warn!("cluster.secret is empty: the streams other nodes publish are not served here, and theirs cannot pull this node's");
        }
    }
    let rtmp_gate = ConnectionGate::new(
        "rtmp",
        config.rtmp.max_connections,
        config.rtmp.max_connections_per_ip,
    );
    spawn_listener(
        &mut tasks,
        "rtmp",
        &health,
        &shutdown,
        rtmp.run(Arc::clone(&rtmp_ctx), rtmp_gate.clone(), shutdown.clone()),
    );
    health.up("rtmp");
    if let Some(certs) = &certificates {
        let rtmps = RtmpsListener::bind(config.rtmps.listen, certs.rtmps_acceptor())
            .await
            .map_err(|e| format!("cannot listen for RTMPS on {}: {e}", config.rtmps.listen))?;
        tracing::info!(addr = %rtmps.local_addr().map_err(|e| e.to_string())?, "RTMPS listening");
        let (ctx, gate, stop) = (Arc::clone(&rtmp_ctx), rtmp_gate.clone(), shutdown.clone());
        spawn_listener(&mut tasks, "rtmps", &health, &shutdown, async move {
            if let Err(e) = rtmps.run(ctx, gate, stop).await {
                tracing::error!(error = %e, "the RTMPS listener could not run");
            }
        });
        health.up("rtmps");
        tasks.spawn(Arc::clone(certs).watch(shutdown.clone()));
    }

    let srt = SrtListener::bind(config.srt.listen)
        .await
        .map_err(|e| format!("cannot listen for SRT on {}: {e}", config.srt.listen))?;
    let server_passphrase = config.srt.passphrase();
    let srt_stats = srt.stats();
    tracing::info!(
        addr = %srt.local_addr().map_err(|e| e.to_string())?,
        passphrase = server_passphrase.is_some(),
        "SRT listening"
    );
    let srt_ctx = Arc::new(SrtContext {
        admission: Arc::clone(&admission),
        hub: hub.clone(),
        server_passphrase,
    });
    spawn_listener(
        &mut tasks,
        "srt",
        &health,
        &shutdown,
        srt.run(srt_ctx, shutdown.clone()),
    );
    health.up("srt");

    let state = ApiState {
        auth: Arc::clone(&auth),
        api_secret: Arc::new(api_secret),
        health: health.clone(),
        failures: Arc::clone(admission.failures()),
        metrics: MetricsAccess {
            public: config.metrics.public,
            token: (!config.metrics.token.is_empty()).then(|| {
                Arc::new(Secret::from_string(
                    config.metrics.token.expose().to_owned(),
                ))
            }),
        },
    };
    if config.metrics.public {
        tracing::warn!(
            "metrics.public is on: /metrics (stream names, refusals by source) is open to anyone"
        );
    }
    let webrtc_ctx = Arc::new(WebRtcContext::new(
        Arc::clone(&admission),
        config.webrtc.ice_settings().map_err(|e| e.0)?,
        config.webrtc.ice_servers().map_err(|e| e.0)?,
        config.webrtc.limits(),
        shutdown.clone(),
    ));
    // Browser publishers send keyframes when asked: segments end at keyframes.
    let keyframes = webrtc_ctx.keyframes.clone();
    let hls_ctx = streamgate_hls::HlsContext::new(
        Arc::clone(&admission),
        config.hls.settings(),
        Arc::new(move |name: &str| {
            keyframes.request(name, std::time::Instant::now());
        }),
        shutdown.clone(),
    );
    tasks.spawn(Arc::clone(&hls_ctx).run_sweeper(shutdown.clone()));
    let http_gate = ConnectionGate::new(
        "http",
        config.http.max_connections,
        config.http.max_connections_per_ip,
    );
    health.add_metrics(Arc::new(metrics::ListenerMetrics {
        gates: vec![
            ("http", http_gate.clone()),
            ("rtmp", rtmp_gate),
            ("webrtc", webrtc_ctx.session_gate().clone()),
            ("hls", hls_ctx.sessions.gate().clone()),
        ],
        rtmp: rtmp_ctx,
        transcoders,
        panics,
        srt: srt_stats,
    }));
    if let Some(addr) = config.metrics.listen.0 {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
        tracing::info!(addr = %addr, "metrics listening (no credentials: keep this address private)");
        let gate = ConnectionGate::new("metrics", 64, 16);
        spawn_listener(
            &mut tasks,
            "metrics",
            &health,
            &shutdown,
            http::serve(
                listener,
                streamgate_api::metrics_router(state.clone()),
                config.http.limits(),
                gate,
                http::Transport::default(),
                shutdown.clone(),
            ),
        );
    }
    let app = streamgate_api::router(state)
        .merge(streamgate_webrtc::router(webrtc_ctx))
        .merge(streamgate_hls::router(hls_ctx))
        .layer(axum::middleware::from_fn(log_request));
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", config.http.listen))?;
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let http_limits = config.http.limits();
    tracing::info!(
        addr = %http_addr,
        limits = ?http_limits,
        max_connections = config.http.max_connections,
        max_connections_per_ip = config.http.max_connections_per_ip,
        "HTTP listening"
    );
    if let Some(certs) = &certificates {
        let listener = tokio::net::TcpListener::bind(config.https.listen)
            .await
            .map_err(|e| format!("cannot listen for HTTPS on {}: {e}", config.https.listen))?;
        let https_addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(addr = %https_addr, "HTTPS listening");
        let transport = http::Transport {
            tls: Some(certs.https_acceptor()),
            proxies: Arc::clone(&proxies),
        };
        spawn_listener(
            &mut tasks,
            "https",
            &health,
            &shutdown,
            http::serve(
                listener,
                app.clone(),
                http_limits,
                http_gate.clone(),
                transport,
                shutdown.clone(),
            ),
        );
        health.up("https");
    }
    let plain = if config.tls.redirect_http {
        let port = config.https.listen.port();
        app.layer(axum::middleware::from_fn(move |req, next| {
            http::redirect_to_https(req, next, port)
        }))
    } else {
        app
    };
    let transport = http::Transport { tls: None, proxies };
    spawn_listener(
        &mut tasks,
        "http",
        &health,
        &shutdown,
        http::serve(
            listener,
            plain,
            http_limits,
            http_gate,
            transport,
            shutdown.clone(),
        ),
    );
    health.up("http");

    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}");
    }
    // Other nodes may publish this node's streams at once, without waiting for the leases to
    // expire.
    let released = tokio::task::spawn_blocking(move || auth.release_leases(LEASE_RELEASE_WAIT));
    match released.await {
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not release the publish leases; they expire")
        }
        Err(e) => tracing::warn!(error = %e, "could not release the publish leases; they expire"),
        Ok(Ok(())) => {}
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Logs each HTTP request's method, path (never the query, which may hold a token), status
/// and duration.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = start.elapsed().as_millis() as u64, "http");
    resp
}
