//! Durable token creations per second through the REST API of the real binary.
//!
//! Run: `cargo build --release --bins && cargo bench -p streamgate-tests --bench token_create`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamgate_tests::Server;

const CLIENTS: usize = 32;
const RUN: Duration = Duration::from_secs(5);

fn main() {
    let server = Server::start();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let done = Arc::clone(&done);
            let http = server.http;
            std::thread::spawn(move || {
                let auth = format!("Bearer {}", streamgate_tests::API_SECRET);
                let mut n = 0;
                while start.elapsed() < RUN {
                    let body = format!(r#"{{"label":"bench {i} {n}","streams":[{{"streamName":"live/cam{n}"}}],"expires":3600}}"#);
                    let r = streamgate_tests::http::request(http, "POST", "/api/publish_token", &[("Authorization", &auth)], Some(body.as_bytes())).unwrap();
                    assert_eq!(r.status, 200, "{}", r.body);
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!("token creation: {n} in {secs:.1} s = {:.0}/s with {CLIENTS} concurrent clients (each durable: SQLite WAL, synchronous=FULL, group commit)", n as f64 / secs);
}
