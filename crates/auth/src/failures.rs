//! Failed authentication, counted per source address, and the delay before each failure is
//! answered: [`AuthFailures`]. Wire-free; callers sleep (asynchronously) for the delay it
//! gives, so that guessing tokens or the API secret is slow and visible without holding a
//! worker.
//!
//! The delay doubles with each failure a source made within [`FailurePolicy::window`], from
//! [`FailurePolicy::base_delay`] up to [`FailurePolicy::max_delay`]. IPv6 sources are counted
//! per /64 (see [`crate::source_key`]). The table is bounded: at most
//! [`MAX_FAILURE_SOURCES`] sources are tracked; when it is full and none has aged out, a new
//! source gets the base delay and is not tracked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::source_key;

/// Most source addresses whose failures are tracked at once.
pub const MAX_FAILURE_SOURCES: usize = 65_536;

/// How failures are delayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Delay of a source's first failure in the window (zero: no delay at all).
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// How long a failure counts towards its source's delay.
    pub window: Duration,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Source {
    /// Failures in the current window.
    count: u32,
    /// Every failure in all.
    total: u64,
    last: Instant,
}

/// Failures per source address; see the module documentation.
#[derive(Debug)]
pub struct AuthFailures {
    policy: FailurePolicy,
    sources: Mutex<HashMap<IpAddr, Source>>,
    total: AtomicU64,
}

impl AuthFailures {
    /// An empty table under `policy`.
    pub fn new(policy: FailurePolicy) -> Self {
        Self {
            policy,
            sources: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Source>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a failure from `ip` at `now`; returns how long to wait before answering it.
    pub fn record(&self, ip: IpAddr, now: Instant) -> Duration {
        self.total.fetch_add(1, Ordering::Relaxed);
        let key = source_key(ip);
        let window = self.policy.window;
        let mut sources = self.lock();
        if sources.len() >= MAX_FAILURE_SOURCES && !sources.contains_key(&key) {
            sources.retain(|_, s| now.saturating_duration_since(s.last) < window);
            if sources.len() >= MAX_FAILURE_SOURCES {
                return self.policy.base_delay;
            }
        }
        let source = sources.entry(key).or_insert(Source {
            count: 0,
            total: 0,
            last: now,
        });
        if now.saturating_duration_since(source.last) >= window {
            source.count = 0;
        }
        source.count = source.count.saturating_add(1);
        source.total = source.total.saturating_add(1);
        source.last = now;
        self.delay_for(source.count)
    }

    /// The delay of a source's `n`th failure in the window.
    fn delay_for(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(16);
        self.policy
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.policy.max_delay)
    }

    /// Failures counted since the start, from every source.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Sources with a failure within the window at `now`.
    pub fn active_sources(&self, now: Instant) -> usize {
        let window = self.policy.window;
        self.lock()
            .values()
            .filter(|s| now.saturating_duration_since(s.last) < window)
            .count()
    }

    /// The `n` sources with the most failures within the window at `now`: address (IPv6 as
    /// its /64) and failures in the window, most first.
    pub fn top(&self, n: usize, now: Instant) -> Vec<(IpAddr, u32)> {
        let window = self.policy.window;
        let mut v: Vec<(IpAddr, u32)> = self
            .lock()
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last) < window)
            .map(|(ip, s)| (*ip, s.count))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::new(FailurePolicy::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn delay_doubles_per_source_up_to_the_cap_and_resets_after_the_window() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        let delays: Vec<u128> = (0..6)
            .map(|i| {
                f.record(ip("192.0.2.1"), t0 + Duration::from_secs(i))
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(
            f.record(ip("192.0.2.2"), t0).as_millis(),
            250,
            "another source"
        );
        // The same /64 is one source.
        f.record(ip("2001:db8::1"), t0);
        assert_eq!(f.record(ip("2001:db8::2"), t0).as_millis(), 500);
        assert_eq!(
            f.record(ip("192.0.2.1"), t0 + Duration::from_secs(70))
                .as_millis(),
            250,
            "a failure older than the window no longer counts"
        );
        assert_eq!(f.total(), 10);
        let top = f.top(1, t0 + Duration::from_secs(70));
        assert_eq!(top, vec![(ip("192.0.2.1"), 1)]);
    }

    #[test]
    fn the_table_stays_bounded() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..(MAX_FAILURE_SOURCES as u32 + 10) {
            f.record(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(f.active_sources(t0), MAX_FAILURE_SOURCES);
        // Once the window has passed, new sources take the place of old ones.
        let later = t0 + Duration::from_secs(61);
        f.record(ip("198.51.100.1"), later);
        assert_eq!(f.active_sources(later), 1);
    }

    #[test]
    fn no_delay_when_switched_off() {
        let f = AuthFailures::new(FailurePolicy {
            base_delay: Duration::ZERO,
            ..FailurePolicy::default()
        });
        assert_eq!(f.record(ip("192.0.2.1"), Instant::now()), Duration::ZERO);
    }
}
