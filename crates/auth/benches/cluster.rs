//! Decisions per second of a node whose tokens are in a PostgreSQL store shared with another
//! node, with `THREADS` threads deciding at once: a play (memory only), a publish (its lease
//! claimed in the database and released again), and a use of an N-use token (one conditional
//! update in the database); then durable token creations per second. The database is the one `STREAMGATE_BENCH_STORE_URL` names;
//! `scripts/bench-cluster` starts one of its own and runs this.
//!
//! Run: `STREAMGATE_BENCH_STORE_URL=postgres://... cargo bench -p streamgate-auth --bench cluster`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use streamgate_auth::rules::StreamRule;
use streamgate_auth::{
    AccessRequest, Action, Auth, AuthConfig, NodeIdentity, PostgresStore, Protocol, StreamName,
    TokenKind, TokenSpec,
};

const RUN: Duration = Duration::from_secs(3);
/// Threads deciding at once, as a node's blocking pool does for decisions that wait for the
/// store.
const THREADS: usize = 16;

fn node(url: &str, name: &str) -> Arc<Auth> {
    let store = PostgresStore::open(
        url,
        NodeIdentity {
            name: name.into(),
            origin: String::new(),
        },
    )
    .unwrap_or_else(|e| panic!("open: {e}"));
    let auth = Arc::new(
        Auth::open(Arc::new(store), AuthConfig::default()).unwrap_or_else(|e| panic!("{e}")),
    );
    auth.follow_store().unwrap_or_else(|e| panic!("{e}"));
    auth
}

fn main() {
    let Ok(url) = std::env::var("STREAMGATE_BENCH_STORE_URL") else {
        println!("cluster bench skipped: STREAMGATE_BENCH_STORE_URL is not set (scripts/bench-cluster sets it)");
        return;
    };
    let a = node(&url, "a");
    // Another node on the same database, holding leases of its own meanwhile.
    let b = node(&url, "b");
    let now = SystemTime::now();
    let token = |kind, max_uses: Option<u32>| {
        let mut spec = TokenSpec::new("bench");
        spec.streams = vec![StreamRule::regex("live/.*").unwrap_or_else(|e| panic!("{e}"))];
        spec.max_uses = max_uses;
        let (_, s) = a.create(kind, spec, now).unwrap_or_else(|e| panic!("{e}"));
        s.expose().to_owned()
    };
    let play = token(TokenKind::Subscribe, None);
    let publish = token(TokenKind::Publish, None);
    let counted = token(TokenKind::Subscribe, Some(u32::MAX));
    let on_b: Vec<_> = (0..100)
        .map(|i| {
            let name = StreamName::new(&format!("live/b{i}")).unwrap_or_else(|e| panic!("{e}"));
            let req = request(Action::Publish, &name, &publish);
            b.authorize(&req, now).unwrap_or_else(|d| panic!("{d}"))
        })
        .collect();
    for (what, action, secret) in [
        ("play, memory only", Action::Play, &play),
        (
            "publish, lease claimed and released in PostgreSQL",
            Action::Publish,
            &publish,
        ),
        (
            "play with an N-use token, a use spent in PostgreSQL",
            Action::Play,
            &counted,
        ),
    ] {
        let rate = per_second(|t| {
            let name = StreamName::new(&format!("live/a{t}")).unwrap_or_else(|e| panic!("{e}"));
            let a = &a;
            move || {
                let req = request(action, &name, secret);
                let grant = a.authorize(black_box(&req), SystemTime::now());
                assert!(grant.is_ok(), "{grant:?}");
                drop(black_box(grant));
            }
        });
        println!("cluster node, {what}: {rate:.0} decisions/s ({THREADS} threads)");
    }
    drop(on_b);

    // Durable token creations through the node, each a transaction committed in PostgreSQL.
    let rate = per_second(|_| {
        let a = &a;
        move || {
            a.create(
                TokenKind::Publish,
                TokenSpec::new("created"),
                SystemTime::now(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    });
    println!("cluster node, token creations: {rate:.0} per second ({THREADS} threads)");
}

/// Runs an operation on [`THREADS`] threads for [`RUN`], each thread's own made by `make`
/// from the thread's index; the operations done per second.
fn per_second<F: FnMut()>(make: impl Fn(usize) -> F + Sync) -> f64 {
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (make, done) = (&make, &done);
            scope.spawn(move || {
                let mut op = make(t);
                let mut n = 0;
                while start.elapsed() < RUN {
                    op();
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn request<'a>(action: Action, stream: &'a StreamName, token: &'a str) -> AccessRequest<'a> {
    AccessRequest {
        action,
        stream,
        token: Some(token),
        peer_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        origin: None,
        referer: None,
        user_agent: None,
        protocol: Protocol::Rtmp,
    }
}
