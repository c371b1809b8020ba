//! Admission latency (p50, p99) through the whole path: the decision, the registration and
//! the relay attachment, each handle dropped again. One thread, 10,000 other tokens in the
//! index, a live publish for the viewers.
//!
//! Run: `cargo bench -p streamgate-admission --bench admit`

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use streamgate_admission::{Admission, AdmitRequest, Protocol};
use streamgate_auth::rules::StreamRule;
use streamgate_auth::{
    Action, Auth, AuthConfig, FailurePolicy, MemoryStore, StreamName, TokenKind, TokenSpec,
};
use streamgate_relay::Hub;

const RUN: Duration = Duration::from_secs(2);
const OTHER_TOKENS: usize = 10_000;

fn main() {
    let auth = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
        .unwrap_or_else(|e| panic!("open: {e}"));
    let now = SystemTime::now();
    for i in 0..OTHER_TOKENS {
        let mut spec = TokenSpec::new(format!("t{i}"));
        spec.streams =
            vec![StreamRule::exact(&format!("live/s{i}")).unwrap_or_else(|e| panic!("{e}"))];
        auth.create(TokenKind::Subscribe, spec, now)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let token = |kind, stream: &str| {
        let mut spec = TokenSpec::new("bench");
        spec.streams = vec![StreamRule::exact(stream).unwrap_or_else(|e| panic!("{e}"))];
        let (_, s) = auth
            .create(kind, spec, now)
            .unwrap_or_else(|e| panic!("{e}"));
        s.expose().to_owned()
    };
    let live = token(TokenKind::Publish, "live/cam1");
    let publish = token(TokenKind::Publish, "live/cam2");
    let play = token(TokenKind::Subscribe, "live/cam1");
    let admission = Admission::new(Arc::new(auth), Hub::new(), FailurePolicy::default());
    let req = |action, stream: &str, token: Option<&str>| {
        AdmitRequest::new(
            Protocol::Rtmp,
            action,
            StreamName::new(stream).unwrap_or_else(|e| panic!("{e}")),
            token.map(str::to_owned),
            IpAddr::from([127, 0, 0, 1]),
        )
    };
    let _live = admission
        .admit_now(&req(Action::Publish, "live/cam1", Some(&live)))
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for (what, r) in [
        (
            "play, subscribe token",
            req(Action::Play, "live/cam1", Some(&play)),
        ),
        (
            "play, anonymous (bound to the publish)",
            req(Action::Play, "live/cam1", None),
        ),
        (
            "publish (lease and relay publisher)",
            req(Action::Publish, "live/cam2", Some(&publish)),
        ),
    ] {
        let mut took = Vec::new();
        let start = Instant::now();
        while start.elapsed() < RUN {
            // The request is built outside the timing, as a listener has it before it asks.
            let request = r.clone();
            let t = Instant::now();
            let admitted = rt.block_on(admission.admit(request));
            let elapsed = t.elapsed();
            assert!(admitted.is_ok());
            drop(admitted);
            took.push(elapsed);
        }
        took.sort();
        let at = |q: f64| {
            took.get(((took.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        println!(
            "admit {what}: p50 {:.1} us, p99 {:.1} us, {:.0} admissions/s (handle dropped each time)",
            at(0.5).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6,
            took.len() as f64 / start.elapsed().as_secs_f64()
        );
    }
}
