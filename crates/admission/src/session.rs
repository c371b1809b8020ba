//! The handles of admitted sessions: [`PublishSession`] and [`PlaySession`].

use std::sync::Arc;

use streamgate_auth::{Action, Grant, Protocol, Revocation, SessionEnd, StreamName};
use streamgate_relay::{Publisher, Subscriber};

use crate::{AdmissionStats, AdmitRequest, EndReason};

/// What both kinds of handle keep besides their relay attachment.
#[derive(Debug)]
struct Common {
    grant: Grant,
    stream: StreamName,
    protocol: Protocol,
    action: Action,
    /// Why the session ended, as the listener said (a revocation wins over it).
    reason: Option<EndReason>,
    stats: Arc<AdmissionStats>,
}

impl Common {
    fn new(grant: Grant, req: &AdmitRequest, stats: Arc<AdmissionStats>) -> Self {
        Self {
            grant,
            stream: req.stream.clone(),
            protocol: req.protocol,
            action: req.action,
            reason: None,
            stats,
        }
    }

    fn end_reason(&self) -> EndReason {
        match (self.grant.end_reason(), self.reason) {
            (Some(r), _) => EndReason::Revoked(r),
            // An anonymous viewer's stream ends with the publish that admitted it: the same
            // end whether the listener saw the stream end or the registry said so first.
            (None, Some(EndReason::StreamEnded)) if self.grant.bound_to().is_some() => {
                EndReason::Revoked(Revocation::PublisherEnded)
            }
            (None, reason) => reason.unwrap_or(EndReason::ClientClosed),
        }
    }
}

impl Drop for Common {
    fn drop(&mut self) {
        let reason = self.end_reason();
        self.stats.ended(self.protocol, self.action, reason);
    }
}

macro_rules! common_methods {
    () => {
        /// The stream.
        pub fn stream(&self) -> &StreamName {
            &self.common.stream
        }

        /// The protocol the session was admitted on.
        pub fn protocol(&self) -> Protocol {
            self.common.protocol
        }

        /// The grant: the token that admitted the session and the registry's id.
        pub fn grant(&self) -> &Grant {
            &self.common.grant
        }

        /// Fires when the server ends the session; watch it independently of any queue.
        pub fn end_signal(&self) -> &SessionEnd {
            self.common.grant.end()
        }

        /// Resolves when the server ends the session, with the reason.
        pub async fn revoked(&self) -> Revocation {
            self.common.grant.cancelled().await
        }

        /// Whether the server has ended the session.
        pub fn is_revoked(&self) -> bool {
            self.common.grant.is_cancelled()
        }

        /// Records why the session is ending (from the listener's side); a revocation by
        /// the server is kept over it. Returns the reason that stands.
        pub fn set_end_reason(&mut self, reason: EndReason) -> EndReason {
            if self.common.reason.is_none() {
                self.common.reason = Some(reason);
            }
            self.common.end_reason()
        }

        /// Why the session ends, as things stand.
        pub fn end_reason(&self) -> EndReason {
            self.common.end_reason()
        }
    };
}

/// An admitted publish: the relay's publisher for the stream and the grant holding the
/// stream's lease. Dropping it detaches the publisher first, then releases the lease.
#[derive(Debug)]
pub struct PublishSession {
    // Field order is drop order: the publisher leaves the relay before the lease is free.
    // Shared with the tasks that push into it; they must end before the handle is dropped.
    publisher: Arc<Publisher>,
    common: Common,
}

impl PublishSession {
    pub(crate) fn new(
        publisher: Publisher,
        grant: Grant,
        req: &AdmitRequest,
        stats: Arc<AdmissionStats>,
    ) -> Self {
        Self {
            publisher: Arc::new(publisher),
            common: Common::new(grant, req, stats),
        }
    }

    /// The relay's publisher, for pushing frames and configurations. Clones given to other
    /// tasks must be dropped before this handle, or the name stays attached in the relay.
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    common_methods!();
}

/// An admitted play: the relay subscriber and the grant. An anonymous viewer's subscriber
/// reads only the publish that admitted it, and the server ends the session with that
/// publish; a viewer with a token waits for the next publish.
#[derive(Debug)]
pub struct PlaySession {
    subscriber: Option<Subscriber>,
    common: Common,
}

impl PlaySession {
    pub(crate) fn new(
        subscriber: Subscriber,
        grant: Grant,
        req: &AdmitRequest,
        stats: Arc<AdmissionStats>,
    ) -> Self {
        Self {
            subscriber: Some(subscriber),
            common: Common::new(grant, req, stats),
        }
    }

    /// The relay subscriber, unless it was taken.
    pub fn subscriber_mut(&mut self) -> Option<&mut Subscriber> {
        self.subscriber.as_mut()
    }

    /// Takes the relay subscriber out, for a listener that drives it elsewhere (a fan-out
    /// shard); the session stays admitted while this handle lives.
    pub fn take_subscriber(&mut self) -> Option<Subscriber> {
        self.subscriber.take()
    }

    /// Whether the viewer waits for the next publish when this one ends (it has a token).
    pub fn follows_publishes(&self) -> bool {
        self.common.grant.bound_to().is_none()
    }

    common_methods!();
}
