//! Supervision: a listener task that ends before shutdown, with an error or a panic, turns
//! `/healthz` to 503 and is logged as an error, while the process keeps serving with the other
//! listeners; and every panic anywhere in the process is counted for `/metrics` and logged.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use streamgate_api::Health;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Runs listener `name` on its own task, watched from `tasks`: if it ends while `shutdown`
/// has not fired, `name` is marked down in `health` and an error is logged.
pub fn spawn_listener<F>(
    tasks: &mut JoinSet<()>,
    name: &'static str,
    health: &Health,
    shutdown: &CancellationToken,
    listener: F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(listener);
    let health = health.clone();
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let result = handle.await;
        if shutdown.is_cancelled() {
            return;
        }
        health.down(name);
        match result {
            Err(e) if e.is_panic() => {
                tracing::error!(
                    listener = name,
                    "the {name} listener panicked and stopped; /healthz reports it down"
                )
            }
            _ => {
                tracing::error!(
                    listener = name,
                    "the {name} listener stopped; /healthz reports it down"
                )
            }
        }
    });
}

/// Counts the process's panics.
#[derive(Debug, Clone, Default)]
pub struct PanicCount(Arc<AtomicU64>);

impl PanicCount {
    /// Panics so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Installs a panic hook that counts every panic and logs it as an error before the default
/// report (a panic is a bug in the server, whatever input caused it).
pub fn count_panics() -> PanicCount {
    let count = PanicCount::default();
    let counter = Arc::clone(&count.0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::Relaxed);
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic: {}", panic_text(info.payload()));
        previous(info);
    }));
    count
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn settle(tasks: &mut JoinSet<()>) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }

    #[tokio::test]
    async fn a_listener_that_dies_turns_health_down_and_the_others_stay() {
        let health = Health::default();
        for name in ["rtmp", "http", "srt"] {
            health.expect(name);
            health.up(name);
        }
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        spawn_listener(&mut tasks, "rtmp", &health, &shutdown, async {
            panic!("a bug in the listener");
        });
        spawn_listener(&mut tasks, "srt", &health, &shutdown, async {});
        let keep = CancellationToken::new();
        let running = keep.clone();
        spawn_listener(&mut tasks, "http", &health, &shutdown, async move {
            running.cancelled().await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(health.is_up("rtmp"), Some(false), "a panic");
        assert_eq!(health.is_up("srt"), Some(false), "an early return");
        assert_eq!(health.is_up("http"), Some(true));
        // Listeners that end because of the shutdown are not reported.
        shutdown.cancel();
        keep.cancel();
        settle(&mut tasks).await;
        assert_eq!(health.is_up("http"), Some(true));
    }
}
