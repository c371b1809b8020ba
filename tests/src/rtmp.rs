//! A small blocking RTMP client for what ffmpeg cannot do on purpose: stop reading, send
//! garbage, announce an absurd chunk size.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
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
