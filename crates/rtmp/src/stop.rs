//! A connection's stop signal: server shutdown and the revocation of the connection's grant,
//! folded into one flag that the connection's task checks at every wake-up.
//!
//! A viewer's task wakes once per frame. Waiting on the cancellation tokens themselves there
//! would lock two mutexes per token at each of those wake-ups (the token's state, then its
//! waiter list), on memory no other part of the frame path touches. Instead a small watcher
//! task per token waits on it once and fires the connection's [`StopSignal`], whose check is
//! an atomic load and an uncontended lock on one cache line of the connection's own.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// Why a connection must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The server is shutting down.
    Shutdown,
    /// The grant that admitted the connection was revoked, disabled, deleted or expired.
    Revoked,
}

/// No reason yet.
const RUNNING: u8 = 0;

impl StopReason {
    fn code(self) -> u8 {
        match self {
            StopReason::Shutdown => 1,
            StopReason::Revoked => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(StopReason::Shutdown),
            2 => Some(StopReason::Revoked),
            _ => None,
        }
    }
}

/// The stop flag of one connection; clones share it. The first reason fired wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopSignal {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    reason: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StopSignal {
    /// The reason fired, if any.
    pub(crate) fn reason(&self) -> Option<StopReason> {
        StopReason::from_code(self.inner.reason.load(Ordering::Acquire))
    }

    /// Fires `reason` (unless another was fired first) and wakes the waiting task.
    pub(crate) fn fire(&self, reason: StopReason) {
        let fired = self
            .inner
            .reason
            .compare_exchange(RUNNING, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if fired {
            let waker = lock(&self.inner.waker).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Ready with the reason once fired; until then `cx` is woken by [`StopSignal::fire`].
    pub(crate) fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<StopReason> {
        if let Some(reason) = self.reason() {
            return Poll::Ready(reason);
        }
        {
            let mut slot = lock(&self.inner.waker);
            match &mut *slot {
                Some(current) if current.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            }
        }
        // A fire between the first look and the registration found no waker to wake: look
        // again now that it would find ours.
        match self.reason() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }

    /// Completes with the reason once fired.
    pub(crate) fn fired(&self) -> impl Future<Output = StopReason> + '_ {
        std::future::poll_fn(|cx| self.poll_fired(cx))
    }
}

/// A watcher task: fires a stop signal when its token is cancelled; aborted when dropped.
#[derive(Debug)]
pub(crate) struct Watcher {
    task: AbortHandle,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Spawns a task that fires `stop` with `reason` once `token` is cancelled (at once if it
/// already is). Must be called inside a Tokio runtime.
pub(crate) fn watch(token: CancellationToken, reason: StopReason, stop: &StopSignal) -> Watcher {
    let stop = stop.clone();
    let task = tokio::spawn(async move {
        token.cancelled().await;
        stop.fire(reason);
    });
    Watcher {
        task: task.abort_handle(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn first_reason_wins_and_wakes_the_waiter() {
        let stop = StopSignal::default();
        let waiter = {
            let stop = stop.clone();
            tokio::spawn(async move { stop.fired().await })
        };
        tokio::task::yield_now().await;
        stop.fire(StopReason::Revoked);
        stop.fire(StopReason::Shutdown);
        let reason = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(reason, Ok(Ok(StopReason::Revoked))));
        assert_eq!(stop.reason(), Some(StopReason::Revoked));
    }

    #[tokio::test]
    async fn watcher_fires_on_cancel_and_not_after_drop() {
        let token = CancellationToken::new();
        let stop = StopSignal::default();
        let watcher = watch(token.clone(), StopReason::Shutdown, &stop);
        token.cancel();
        let reason = tokio::time::timeout(Duration::from_secs(5), stop.fired()).await;
        assert_eq!(reason.ok(), Some(StopReason::Shutdown));
        drop(watcher);

        let other = CancellationToken::new();
        let quiet = StopSignal::default();
        drop(watch(other.clone(), StopReason::Revoked, &quiet));
        tokio::task::yield_now().await;
        other.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(quiet.reason(), None, "an aborted watcher fires nothing");
    }

    #[tokio::test]
    async fn already_cancelled_token_fires_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let stop = StopSignal::default();
        let _watcher = watch(token, StopReason::Revoked, &stop);
        let reason = tokio::time::timeout(Duration::from_secs(5), stop.fired()).await;
        assert_eq!(reason.ok(), Some(StopReason::Revoked));
    }
}
