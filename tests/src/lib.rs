//! Helpers for the end-to-end tests: start the real `streamgate` binary on free loopback ports
//! with its own data dir, talk HTTP to it, and clean up every process and file on drop.
//!
//! The binary is built by the test command (`cargo build --bins` before `cargo test`); set
//! `STREAMGATE_BIN` to test another build.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_debug_implementations
)]

pub mod avsync;
pub mod browser;
pub mod ffmpeg;
pub mod hls;
pub mod hostile;
pub mod http;
pub mod postgres;
pub mod rtmp;
pub mod srt;
pub mod tls;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use http::{HttpResponse, HttpResult};

/// The API secret every test server uses.
pub const API_SECRET: &str = "test-api-secret-0123456789abcdef";
/// How long a server may take to report healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the `streamgate` binary under test. A relative `STREAMGATE_BIN` is taken from the
/// workspace root, where the commands in the docs are run (cargo runs the tests from `tests/`).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("STREAMGATE_BIN") {
        let p = PathBuf::from(p);
        if p.is_relative() {
            return Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p);
        }
        return p;
    }
    workspace_binary("streamgate")
}

/// Path of a binary of this workspace, built next to the test executable.
pub fn workspace_binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` before the tests (scripts/test does)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1, never one handed out before in this process.
pub fn free_tcp_port() -> u16 {
    unique_port(|| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// A free UDP port on 127.0.0.1, never one handed out before in this process.
pub fn free_udp_port() -> u16 {
    unique_port(|| {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// A port from `probe` that this process has not handed out yet. The kernel may give the port
/// of a socket just closed again at once, and a server started with the same port for two of
/// its listeners cannot start ("Address already in use", seen in CI).
fn unique_port(probe: impl Fn() -> u16) -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = probe();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// A new empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "streamgate-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options for a test server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A command the server is started under (such as `prlimit --nofile=256:256 --`), which
    /// must exec it so that the process keeps its pid.
    pub wrapper: Vec<String>,
}

impl Options {
    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the server under `command` (see [`Options::wrapper`]).
    pub fn wrapped(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

/// A running `streamgate` process.
pub struct Server {
    child: Option<Child>,
    /// Its data dir (kept across restarts).
    pub data: TempDir,
    /// Where its log goes.
    pub log_path: PathBuf,
    /// HTTP address.
    pub http: SocketAddr,
    /// RTMP address.
    pub rtmp: SocketAddr,
    /// SRT address (UDP).
    pub srt: SocketAddr,
    options: Options,
}

impl Server {
    /// Starts a server with default options and waits until it is healthy.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Starts a server with `options` and waits until it is healthy.
    pub fn start_with(options: Options) -> Self {
        let data = TempDir::new("server");
        let mut s = Self {
            child: None,
            log_path: data.path().join("streamgate.log"),
            data,
            http: SocketAddr::from(([127, 0, 0, 1], free_tcp_port())),
            rtmp: SocketAddr::from(([127, 0, 0, 1], free_tcp_port())),
            srt: SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
            options,
        };
        s.spawn();
        s
    }

    fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = match self.options.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STREAMGATE_CONFIG", self.data.path().join("no-config.toml"))
            .env("STREAMGATE_HTTP_LISTEN", self.http.to_string())
            .env("STREAMGATE_RTMP_LISTEN", self.rtmp.to_string())
            .env("STREAMGATE_SRT_LISTEN", self.srt.to_string())
            .env("STREAMGATE_DATA_DIR", self.data_dir())
            .env("STREAMGATE_API_SECRET", API_SECRET)
            .env("STREAMGATE_LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        std::fs::write(self.data.path().join("no-config.toml"), "").unwrap();
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn streamgate"));
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = self.get("/healthz") {
                if r.status == 200 {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "streamgate exited during start ({status}); log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "streamgate not healthy in time; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process (SIGTERM, then kill) and starts it again on the same data. It gets
    /// fresh ports: while it is down, another test's client may be handed one of the old ones.
    pub fn restart(&mut self) {
        self.stop();
        self.http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        self.rtmp = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        self.srt = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        self.spawn();
    }

    /// Sends SIGTERM and waits for the process to exit (killing it after a grace period).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Lines of the log containing `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let f = match std::fs::File::open(&self.log_path) {
            Ok(f) => f,
            Err(_) => return Vec::new(),
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// Every file in the data dir, as bytes (database, WAL, secret file...).
    pub fn data_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.data_dir()) {
            for e in entries.flatten() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    out.push((e.path(), bytes));
                }
            }
        }
        out
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// GET without credentials.
    pub fn get(&self, path: &str) -> HttpResult {
        http::request(self.http, "GET", path, &[], None)
    }

    /// An `/api` request with the API secret.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        let auth = format!("Bearer {API_SECRET}");
        http::request(
            self.http,
            method,
            path,
            &[("Authorization", &auth)],
            body.map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// An RTMP URL for `stream`, with `?token=` when one is given.
    pub fn rtmp_url(&self, stream: &str, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("rtmp://{}/{stream}?token={t}", self.rtmp),
            None => format!("rtmp://{}/{stream}", self.rtmp),
        }
    }

    /// `/metrics` as a scraper reads it (with the API secret).
    pub fn metrics_text(&self) -> String {
        let auth = format!("Bearer {API_SECRET}");
        http::request(
            self.http,
            "GET",
            "/metrics",
            &[("Authorization", &auth)],
            None,
        )
        .map(|r| r.body)
        .unwrap_or_default()
    }

    /// Frames the publisher of live `stream` has pushed so far (0 when it is not live), from
    /// `/metrics`.
    pub fn frames_in(&self, stream: &str) -> u64 {
        let m = self.metrics_text();
        let prefix =
            format!("streamgate_stream_frames_total{{stream=\"{stream}\",live=\"true\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Starts an endless ffmpeg publisher with `args` (its log in `dir`) and waits until `stream`
    /// is live.
    pub fn start_publisher(&self, dir: &TempDir, stream: &str, args: &[String]) -> ffmpeg::Proc {
        let log = dir
            .path()
            .join(format!("pub-{}.log", stream.replace('/', "_")));
        let mut p = ffmpeg::Proc::ffmpeg(args, &log);
        let live = wait_until(Duration::from_secs(15), || self.frames_in(stream) > 0);
        assert!(
            live && p.running(),
            "{stream} did not go live: {}",
            p.stderr()
        );
        p
    }

    /// Creates a token of `kind` (`publish` or `subscribe`) from a JSON body; returns
    /// (id, secret).
    pub fn create_token(&self, kind: &str, body: serde_json::Value) -> (i64, String) {
        let r = self.api(
            "POST",
            &format!("/api/{kind}_token"),
            Some(&body.to_string()),
        );
        assert_eq!(r.status, 200, "create {kind} token: {}", r.body);
        let v = r.json();
        (
            v["data"]["id"].as_i64().unwrap(),
            v["data"]["token"].as_str().unwrap().to_owned(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- streamgate log ----\n{}", self.log());
        }
    }
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status` (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU ticks (1/100 s) of a process, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
