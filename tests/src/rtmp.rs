//! A small blocking RTMP client for what ffmpeg cannot do on purpose: stop reading, send
//! garbage, announce an absurd chunk size.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
};

/// A connected client session.
pub struct RtmpClient {
    /// The socket.
    pub socket: TcpStream,
    session: ClientSession,
    pending: Vec<ClientSessionEvent>,
}

/// Completes the handshake on a new socket; returns it and any bytes read past the handshake.
pub fn handshake(addr: SocketAddr) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(
        &hs.generate_outbound_p0_and_p1()
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?,
    )?;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes)?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes)?;
                return Ok((s, remaining_bytes));
            }
        }
    }
}

impl RtmpClient {
    /// Handshakes and connects to `app`.
    pub fn connect(addr: SocketAddr, app: &str) -> Result<Self, String> {
        let (socket, rest) = handshake(addr).map_err(|e| e.to_string())?;
        let (session, _) =
            ClientSession::new(ClientSessionConfig::new()).map_err(|e| format!("{e:?}"))?;
        let mut c = Self {
            socket,
            session,
            pending: Vec::new(),
        };
        c.feed(&rest)?;
        let r = c
            .session
            .request_connection(app.to_owned())
            .map_err(|e| format!("{e:?}"))?;
        c.send(vec![r])?;
        c.wait_for(
            |e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted),
            Duration::from_secs(5),
        )?;
        Ok(c)
    }

    /// Asks to play `key` and waits for the acceptance.
    pub fn play(&mut self, key: &str) -> Result<(), String> {
        let r = self
            .session
            .request_playback(key.to_owned())
            .map_err(|e| format!("{e:?}"))?;
        self.send(vec![r])?;
        self.wait_for(
            |e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted),
            Duration::from_secs(5),
        )
    }

    /// Reads for `duration`, returning how many video and audio messages arrived.
    pub fn count_media(&mut self, duration: Duration) -> Result<(u64, u64), String> {
        let (mut video, mut audio) = (0, 0);
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            self.read_once()?;
            for e in self.pending.drain(..) {
                match e {
                    ClientSessionEvent::VideoDataReceived { .. } => video += 1,
                    ClientSessionEvent::AudioDataReceived { .. } => audio += 1,
                    _ => {}
                }
            }
        }
        Ok((video, audio))
    }

    /// Reads for `duration`, returning each video message's timestamp and when it arrived,
    /// and why reading stopped early, if it did.
    pub fn video_arrivals(&mut self, duration: Duration) -> (Vec<(u32, Instant)>, Option<String>) {
        let mut out = Vec::new();
        let _ = self
            .socket
            .set_read_timeout(Some(Duration::from_millis(20)));
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            let read = self.read_once();
            let now = Instant::now();
            for e in self.pending.drain(..) {
                if let ClientSessionEvent::VideoDataReceived { timestamp, .. } = e {
                    out.push((timestamp.value, now));
                }
            }
            if let Err(e) = read {
                return (out, Some(e));
            }
        }
        (out, None)
    }

    /// Asks to publish `key` and waits for the acceptance.
    pub fn publish(&mut self, key: &str) -> Result<(), String> {
        let r = self
            .session
            .request_publishing(key.to_owned(), rml_rtmp::sessions::PublishRequestType::Live)
            .map_err(|e| format!("{e:?}"))?;
        self.send(vec![r])?;
        self.wait_for(
            |e| matches!(e, ClientSessionEvent::PublishRequestAccepted),
            Duration::from_secs(5),
        )
    }

    /// Writes raw bytes (chunks built by hand; the session announced chunk size 4096).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket.write_all(bytes)
    }

    /// Reads on a thread, noting every video and audio message, until [`MediaWatch::finish`].
    pub fn watch(mut self) -> MediaWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let _ = self
            .socket
            .set_read_timeout(Some(Duration::from_millis(50)));
        let thread = std::thread::spawn(move || {
            let mut report = WatchReport::default();
            let start = Instant::now();
            let mut last_video: Option<Instant> = None;
            while !flag.load(Ordering::Relaxed) {
                if let Err(e) = self.read_once() {
                    report.error = Some(e);
                    break;
                }
                for e in self.pending.drain(..) {
                    match e {
                        ClientSessionEvent::VideoDataReceived { .. } => {
                            let now = Instant::now();
                            let since = now.duration_since(last_video.unwrap_or(start));
                            report.max_gap = report.max_gap.max(since);
                            last_video = Some(now);
                            report.video += 1;
                        }
                        ClientSessionEvent::AudioDataReceived { .. } => report.audio += 1,
                        _ => {}
                    }
                }
            }
            let tail = Instant::now().duration_since(last_video.unwrap_or(start));
            report.max_gap = report.max_gap.max(tail);
            report
        });
        MediaWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn wait_for(
        &mut self,
        want: impl Fn(&ClientSessionEvent) -> bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.pending.iter().position(&want) {
                self.pending.drain(..=i);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("timed out; events: {:?}", self.pending));
            }
            self.read_once()?;
        }
    }

    fn read_once(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 65536];
        match self.socket.read(&mut buf) {
            Ok(0) => Err("server closed the connection".into()),
            Ok(n) => self.feed(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        let results = self
            .session
            .handle_input(bytes)
            .map_err(|e| format!("{e:?}"))?;
        self.send(results)
    }

    fn send(&mut self, results: Vec<ClientSessionResult>) -> Result<(), String> {
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => {
                    self.socket.write_all(&p.bytes).map_err(|e| e.to_string())?
                }
                ClientSessionResult::RaisedEvent(e) => self.pending.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }
}

/// Whether the server closes `socket` within `timeout` (reads until EOF or reset).
pub fn closed_within(socket: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// A viewer reading on its own thread (see [`RtmpClient::watch`]).
pub struct MediaWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<WatchReport>>,
}

/// What a watching viewer received.
#[derive(Debug, Clone, Default)]
pub struct WatchReport {
    /// Video messages.
    pub video: u64,
    /// Audio messages.
    pub audio: u64,
    /// The longest time without a video message, the end of the watch included.
    pub max_gap: Duration,
    /// Why reading stopped early, if it did.
    pub error: Option<String>,
}

impl MediaWatch {
    /// Stops reading and reports.
    pub fn finish(mut self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for MediaWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
