//! Headless Chromium driven over the DevTools protocol (CDP) on its WebSocket, with the fake
//! camera and microphone; a tiny static file server for pages served from elsewhere; and a
//! plain WebSocket client for signaling tests.
//!
//! The browser is Debian's `chromium` (`/usr/bin/chromium`, or `STREAMGATE_CHROMIUM`). Every
//! process started here is killed by its own PID on drop, and its profile directory removed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::TempDir;

/// How long one CDP command may take.
const CDP_TIMEOUT: Duration = Duration::from_secs(30);

/// The Chromium binary.
pub fn chromium() -> PathBuf {
    std::env::var("STREAMGATE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"))
}

/// A headless Chromium process and its CDP connection.
pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: TempDir,
}

/// One tab, attached through a flat CDP session.
#[derive(Clone, Debug)]
pub struct Tab {
    session: String,
    target: String,
}

impl Browser {
    /// Starts Chromium with fake media devices and loopback WebRTC allowed.
    pub fn launch() -> Self {
        Self::launch_with(&[])
    }

    /// As [`Browser::launch`], with extra command-line switches (such as
    /// `--use-file-for-fake-video-capture=<file>`).
    pub fn launch_with(extra: &[String]) -> Self {
        let profile = TempDir::new("chromium");
        let mut cmd = Command::new(chromium());
        cmd.env("HOME", profile.path());
        Self::spawn(cmd, profile, extra)
    }

    /// As [`Browser::launch`], trusting the certificate authority of `ca_file` (PEM) as a
    /// person's browser trusts the ones installed: it goes into the NSS database of the
    /// browser's own home (`certutil`, from Debian's libnss3-tools).
    pub fn launch_trusting(ca_file: &Path) -> Self {
        let profile = TempDir::new("chromium");
        let db = format!("sql:{}", profile.path().join(".pki/nssdb").display());
        std::fs::create_dir_all(profile.path().join(".pki/nssdb")).unwrap();
        let certutil = |args: &[&str]| {
            let out = Command::new("certutil")
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("certutil (libnss3-tools): {e}"));
            assert!(
                out.status.success(),
                "certutil {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        certutil(&["-N", "-d", &db, "--empty-password"]);
        let ca = ca_file.display().to_string();
        certutil(&[
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "streamgate test CA",
            "-i",
            &ca,
        ]);
        let mut cmd = Command::new(chromium());
        cmd.env("HOME", profile.path());
        Self::spawn(cmd, profile, &[])
    }

    /// Starts Chromium from `cmd` with the profile in `profile` and `extra` switches.
    fn spawn(mut cmd: Command, profile: TempDir, extra: &[String]) -> Self {
        let mut child = cmd
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--metrics-recording-only",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium().display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = tx.send(url.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not report its DevTools address");
            }
        };
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        Self {
            child,
            ws,
            next_id: 1,
            _profile: profile,
        }
    }

    /// Sends a CDP command (to the browser, or to a tab's session) and waits for its result.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = Value::from(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send CDP command");
        let deadline = Instant::now() + CDP_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "CDP {method} timed out");
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["id"].as_u64() == Some(id) {
                        if let Some(err) = v.get("error") {
                            panic!("CDP {method} failed: {err}");
                        }
                        return v["result"].clone();
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("CDP connection lost: {e}"),
            }
        }
    }

    /// Opens `url` in a new tab.
    pub fn open(&mut self, url: &str) -> Tab {
        let target = self.call(None, "Target.createTarget", json!({"url": url}))["targetId"]
            .as_str()
            .unwrap()
            .to_owned();
        self.attach(target)
    }

    /// Opens `url` in a new window: unlike a second tab, it stays visible beside the others,
    /// so its page keeps rendering (video frame callbacks, animation frames).
    pub fn open_window(&mut self, url: &str) -> Tab {
        let target = self.call(
            None,
            "Target.createTarget",
            json!({"url": url, "newWindow": true}),
        )["targetId"]
            .as_str()
            .unwrap()
            .to_owned();
        self.attach(target)
    }

    /// Attaches to a target through a flat session.
    fn attach(&mut self, target: String) -> Tab {
        let session = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        Tab { session, target }
    }

    /// Closes a tab.
    pub fn close(&mut self, tab: &Tab) {
        self.call(None, "Target.closeTarget", json!({"targetId": tab.target}));
    }

    /// Evaluates `expr` in the tab (awaiting a promise) and returns its JSON value;
    /// `Value::Null` if it threw.
    pub fn eval(&mut self, tab: &Tab, expr: &str) -> Value {
        let r = self.call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if r.get("exceptionDetails").is_some() {
            return Value::Null;
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` every 200 ms until `check` accepts its value or `timeout` passes; returns
    /// the last value.
    pub fn wait_for(
        &mut self,
        tab: &Tab,
        expr: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value, Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(tab, expr);
            if check(&v) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(v);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A static file server on 127.0.0.1 for pages that streamgate does not serve (another origin,
/// as a real front end would be).
pub struct StaticServer {
    /// Its address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl StaticServer {
    /// Serves the files under `root` (GET only, no directory listings).
    pub fn serve(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let root = root.to_owned();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let root = root.clone();
                        std::thread::spawn(move || serve_one(stream, &root));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(mut stream: TcpStream, root: &Path) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_owned();
    let file = root.join(&path);
    let body = if path.split('/').any(|s| s == "..") {
        None
    } else {
        std::fs::read(&file).ok()
    };
    let (status, body, ctype) = match body {
        Some(b) => {
            let ctype = match file.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                _ => "application/octet-stream",
            };
            ("200 OK", b, ctype)
        }
        None => ("404 Not Found", b"not found".to_vec(), "text/plain"),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}

/// A plain WebSocket client for signaling tests.
pub struct WsClient {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects to `ws://<addr><path>`, sending `origin` if given.
    pub fn connect(addr: SocketAddr, path: &str, origin: Option<&str>) -> Self {
        use tungstenite::client::IntoClientRequest as _;
        let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        let (ws, _) = tungstenite::connect(req).expect("WebSocket connect");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        Self { ws }
    }

    /// Sends a text message.
    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).unwrap();
    }

    /// Sends a JSON message.
    pub fn send_json(&mut self, v: &Value) {
        self.send(&v.to_string());
    }

    /// The next JSON message within `timeout`; `None` on timeout, `Some(Value::Null)` when
    /// the socket closed.
    pub fn recv(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Message::Close(_)) => return Some(Value::Null),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(Value::Null),
            }
        }
        None
    }

    /// Waits for a message whose `command` (and `definition`, if given) match, skipping
    /// others (candidates, pongs); panics on timeout or close.
    pub fn expect(&mut self, command: &str, definition: Option<&str>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(500)) {
                Some(Value::Null) => panic!("socket closed; seen {seen:?}"),
                Some(v) => {
                    if v["command"] == command && definition.is_none_or(|d| v["definition"] == d) {
                        return v;
                    }
                    seen.push(v);
                }
                None => {}
            }
        }
        panic!("no {command} {definition:?}; seen {seen:?}");
    }

    /// Whether the server closed the socket within `timeout` (any messages before are
    /// skipped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Value::Null) = self.recv(Duration::from_millis(200)) {
                return true;
            }
        }
        false
    }

    /// Closes the socket from this side.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// Frames the tab's `#remote` video decoded so far.
pub const VIDEO_FRAMES: &str = "(() => { const v = document.querySelector('#remote'); \
     return v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0; })()";

/// Audio RTP packets the peer connection `pc` (an expression) received, and the energy of the
/// sound it played (zero for silence): `[packets, energy]`.
pub fn audio_stats_expr(pc: &str) -> String {
    format!(
        "(async () => {{ const pc = {pc}; if (!pc) return [0, 0]; let n = 0, e = 0; \
         (await pc.getStats()).forEach(r => {{ if (r.type === 'inbound-rtp' && r.kind === 'audio') \
         {{ n += r.packetsReceived || 0; e += r.totalAudioEnergy || 0; }} }}); \
         return [n, e]; }})()"
    )
}

/// Waits until the tab's `#status` text contains `needle`; returns it.
pub fn wait_status(b: &mut Browser, tab: &Tab, needle: &str, secs: u64) -> Value {
    let expr = "document.getElementById('status').textContent";
    b.wait_for(tab, expr, Duration::from_secs(secs), |v| {
        v.as_str().is_some_and(|t| t.contains(needle))
    })
    .unwrap_or_else(|v| panic!("status never contained {needle:?}; last {v}"))
}

/// Waits for decoded video (over 30 frames of `#remote`) and for audio with energy (over 50
/// packets on the peer connection `pc`, an expression): picture and sound, not silence.
pub fn assert_plays(b: &mut Browser, tab: &Tab, pc: &str, what: &str) {
    let frames = b.wait_for(tab, VIDEO_FRAMES, Duration::from_secs(20), |v| {
        v.as_u64().is_some_and(|n| n > 30)
    });
    assert!(frames.is_ok(), "{what}: video frames {frames:?}");
    let audio = b.wait_for(tab, &audio_stats_expr(pc), Duration::from_secs(15), |v| {
        v[0].as_u64().is_some_and(|n| n > 50) && v[1].as_f64().is_some_and(|e| e > 0.0)
    });
    assert!(audio.is_ok(), "{what}: audio [packets, energy] {audio:?}");
}
