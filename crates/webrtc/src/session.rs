//! What the socket loop and the publish and play sessions share: the control messages a
//! session receives and the outbox it writes to.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::message::SdpKind;

/// How long a session may take from admission to a connected peer before it is ended with
/// the `error` definition `timeout` (a waiting viewer's clock starts when the stream does).
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Capacity of a session's control channel from the socket loop. Browsers send an offer or
/// answer and a few dozen candidates; when it is full the socket loop waits (back-pressure
/// on that one browser's socket).
pub const CONTROL_CAPACITY: usize = 32;

/// Capacity of a socket's outgoing message queue. Nobody waits on it: a browser that lets
/// it fill (it does not read what the server writes) has its socket closed, so that a
/// session never blocks on a client and always sees its revocation at once.
pub const OUTBOX_CAPACITY: usize = 64;

/// What the socket loop tells a session.
#[derive(Debug)]
pub enum Control {
    /// The browser's SDP.
    Sdp(SdpKind, String),
    /// One of the browser's ICE candidates.
    Candidate {
        /// The candidate line.
        candidate: String,
        /// m-line index.
        label: Option<u16>,
        /// Media id.
        mid: Option<String>,
    },
    /// The browser asked to stop.
    Stop,
    /// The client restarts ICE with new credentials (a WHIP or WHEP `PATCH`): the session
    /// answers with its own new credentials and candidates, as an SDP fragment.
    IceRestart {
        /// The client's new `ice-ufrag`.
        ufrag: String,
        /// The client's new `ice-pwd`.
        pwd: String,
        /// The client's candidates that came with them (`candidate:` lines).
        candidates: Vec<String>,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
}

/// What is written to the socket.
#[derive(Debug)]
pub enum Outgoing {
    /// A JSON text message.
    Text(String),
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
    /// A ping (the browser answers with a pong).
    Ping,
}

/// The sending side of a socket's queue; see [`OUTBOX_CAPACITY`].
#[derive(Debug, Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Outgoing>,
    /// Fired when the queue overflowed: the socket loop closes the socket.
    overflow: CancellationToken,
}

impl Outbox {
    /// An outbox over `queue`.
    pub fn new(queue: mpsc::Sender<Outgoing>) -> Self {
        Self {
            queue,
            overflow: CancellationToken::new(),
        }
    }

    /// An outbox that drops everything: for sessions signaled over HTTP (WHIP, WHEP),
    /// whose client learns what happens from status codes and its peer connection.
    pub fn silent() -> Self {
        let (queue, _) = mpsc::channel(1);
        Self::new(queue)
    }

    /// Queues a text message without waiting; dropped if the socket is gone. A full queue
    /// fires [`Outbox::overflowed`]. Async only so that callers read as before.
    pub async fn text(&self, text: String) {
        self.send(Outgoing::Text(text));
    }

    /// Queues a message without waiting (see [`Outbox::text`]).
    pub fn send(&self, message: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(message) {
            self.overflow.cancel();
        }
    }

    /// Resolves once the queue has overflowed.
    pub async fn overflowed(&self) {
        self.overflow.cancelled().await
    }
}
