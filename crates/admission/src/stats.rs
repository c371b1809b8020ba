//! Counters of the admission path, for `/metrics`: refusals by protocol and reason,
//! admissions by protocol and action, ended sessions by protocol, action and reason, and a
//! histogram of admission latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use streamgate_auth::{Action, Denial, Protocol};

use crate::EndReason;

/// Upper bounds of the admission latency histogram's buckets, in microseconds.
pub const LATENCY_BUCKETS_MICROS: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
];

/// The counters; see the module documentation.
#[derive(Debug, Default)]
pub struct AdmissionStats {
    refusals: Mutex<HashMap<(Protocol, &'static str), u64>>,
    admitted: Mutex<HashMap<(Protocol, Action), u64>>,
    ended: Mutex<HashMap<(Protocol, Action, &'static str), u64>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

fn bump<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u64>>, key: K) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry(key).or_default() += 1;
}

/// The entries of `map`, named by `name` and sorted.
fn listed<K, T: Ord>(map: &Mutex<HashMap<K, u64>>, name: impl Fn(&K, u64) -> T) -> Vec<T> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<T> = map.iter().map(|(k, n)| name(k, *n)).collect();
    v.sort();
    v
}

impl AdmissionStats {
    pub(crate) fn refused(&self, protocol: Protocol, denial: Denial) {
        bump(&self.refusals, (protocol, denial.code()));
    }

    pub(crate) fn admitted(&self, protocol: Protocol, action: Action) {
        bump(&self.admitted, (protocol, action));
    }

    pub(crate) fn ended(&self, protocol: Protocol, action: Action, reason: EndReason) {
        bump(&self.ended, (protocol, action, reason.code()));
    }

    pub(crate) fn observe_latency(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        for (bound, bucket) in LATENCY_BUCKETS_MICROS.iter().zip(&self.latency_buckets) {
            if micros <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Refusals: (protocol, reason code, count), sorted.
    pub fn refusals(&self) -> Vec<(&'static str, &'static str, u64)> {
        listed(&self.refusals, |(p, r), n| (p.as_str(), *r, n))
    }

    /// Admissions: (protocol, action, count), sorted.
    pub fn admissions(&self) -> Vec<(&'static str, &'static str, u64)> {
        listed(&self.admitted, |(p, a), n| {
            (p.as_str(), crate::action_name(*a), n)
        })
    }

    /// Ended sessions: (protocol, action, reason code, count), sorted.
    pub fn ends(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        listed(&self.ended, |(p, a, r), n| {
            (p.as_str(), crate::action_name(*a), *r, n)
        })
    }

    /// The latency histogram: cumulative counts per bucket of [`LATENCY_BUCKETS_MICROS`],
    /// the number of admissions and the sum of their latencies in microseconds.
    pub fn latency(&self) -> (Vec<u64>, u64, u64) {
        (
            self.latency_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.latency_count.load(Ordering::Relaxed),
            self.latency_sum_micros.load(Ordering::Relaxed),
        )
    }
}
