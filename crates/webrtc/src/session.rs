//! What the socket loop and the publish and play sessions share: the control messages a
//! session receives and the outbox it writes to.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::message::SdpKind;

/// How long a session may take from admission to a connected peer before it is ended with
/// the `error` definition `timeout` (a waiting viewer's clock starts when the stream does).
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Capacity of a session's control channel from the socket loop. Browsers send an offer or
/// answer and a few dozen candidates; when it is full the socket loop waits (back-pressure
/// on that one browser's socket).
pub const CONTROL_CAPACITY: usize = 32;

/// Capacity of a socket's outgoing message queue. Sessions wait when it is full
/// (back-pressure: signaling messages are few and small).
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

/// The sending side of a socket's queue.
#[derive(Debug, Clone)]
pub struct Outbox(pub mpsc::Sender<Outgoing>);

impl Outbox {
    /// Queues a text message; dropped if the socket is gone.
    pub async fn text(&self, text: String) {
        let _ = self.0.send(Outgoing::Text(text)).await;
    }
}
