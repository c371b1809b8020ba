//! The admission path in memory: decisions, relay attachment, binding, ends and counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use streamgate_auth::{AuthConfig, MemoryStore, TokenKind, TokenSpec};
use streamgate_media::{Codec, Frame, TrackKind};
use streamgate_relay::Event;

use super::*;

fn admission(policy: FailurePolicy) -> Admission {
    let auth = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default()).unwrap();
    Admission::new(Arc::new(auth), Hub::new(), policy)
}

fn no_delay() -> FailurePolicy {
    FailurePolicy {
        base_delay: Duration::ZERO,
        ..FailurePolicy::default()
    }
}

fn token(a: &Admission, kind: TokenKind, edit: impl FnOnce(&mut TokenSpec)) -> (i64, String) {
    let mut spec = TokenSpec::new("t");
    edit(&mut spec);
    let (rec, secret) = a.auth().create(kind, spec, SystemTime::now()).unwrap();
    (rec.id.0, secret.expose().to_owned())
}

fn req(action: Action, stream: &str, token: Option<&str>) -> AdmitRequest {
    AdmitRequest::new(
        Protocol::Rtmp,
        action,
        streamgate_auth::StreamName::new(stream).unwrap(),
        token.map(str::to_owned),
        IpAddr::from([127, 0, 0, 1]),
    )
}

fn keyframe() -> Frame {
    Frame {
        track: TrackKind::Video,
        codec: Codec::H264,
        pts: 0,
        dts: 0,
        keyframe: true,
        payload: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
    }
}

#[tokio::test]
async fn a_publish_holds_the_name_in_the_registry_and_the_relay_together() {
    let a = admission(no_delay());
    let (_, secret) = token(&a, TokenKind::Publish, |_| {});
    let first = a
        .admit_publish(req(Action::Publish, "live/a", Some(&secret)))
        .await
        .unwrap();
    assert_eq!(
        a.admit_publish(req(Action::Publish, "live/a", Some(&secret)))
            .await
            .unwrap_err(),
        Denial::StreamInUse
    );
    drop(first);
    // Released in one go: the next publish is taken at once by both.
    let again = a
        .admit_publish(req(Action::Publish, "live/a", Some(&secret)))
        .await
        .unwrap();
    drop(again);
    assert_eq!(a.auth().registry().counts().publishers, 0);
    assert!(a.hub().stream_stats("live/a").is_none());
}

#[tokio::test]
async fn an_anonymous_viewer_reads_its_publish_only_and_ends_with_it() {
    let a = admission(no_delay());
    let (_, public) = token(&a, TokenKind::Publish, |_| {});
    let (_, protected) = token(&a, TokenKind::Publish, |s| s.subscribe_requires_auth = true);
    let (_, viewer) = token(&a, TokenKind::Subscribe, |_| {});
    let publish = a
        .admit_publish(req(Action::Publish, "live/a", Some(&public)))
        .await
        .unwrap();
    let mut anonymous = a
        .admit_play(req(Action::Play, "live/a", None))
        .await
        .unwrap();
    let mut with_token = a
        .admit_play(req(Action::Play, "live/a", Some(&viewer)))
        .await
        .unwrap();
    assert!(!anonymous.follows_publishes() && with_token.follows_publishes());
    // A listener that sees the stream end before the registry says why ends an anonymous
    // viewer as the registry would: with its publish. A viewer with a token just saw the
    // stream end.
    let mut early = a
        .admit_play(req(Action::Play, "live/a", None))
        .await
        .unwrap();
    assert_eq!(
        early.set_end_reason(EndReason::StreamEnded),
        EndReason::Revoked(Revocation::PublisherEnded)
    );
    drop(early);
    let mut watcher = a
        .admit_play(req(Action::Play, "live/a", Some(&viewer)))
        .await
        .unwrap();
    assert_eq!(
        watcher.set_end_reason(EndReason::StreamEnded),
        EndReason::StreamEnded
    );
    drop(watcher);
    publish.publisher().push(keyframe());
    let sub = anonymous.subscriber_mut().unwrap();
    assert!(matches!(sub.recv().await, Event::Started(..)));
    drop(publish);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), anonymous.revoked())
            .await
            .unwrap(),
        Revocation::PublisherEnded
    );
    assert!(!with_token.is_revoked());

    let next = a
        .admit_publish(req(Action::Publish, "live/a", Some(&protected)))
        .await
        .unwrap();
    next.publisher().push(keyframe());
    // The subscribe-token viewer goes on to the next publish; no anonymous viewer is let in.
    let sub = with_token.subscriber_mut().unwrap();
    let mut started = 0;
    while started < 2 {
        if let Event::Started(..) = sub.recv().await {
            started += 1;
        }
    }
    assert_eq!(
        a.admit_play(req(Action::Play, "live/a", None))
            .await
            .unwrap_err(),
        Denial::Missing
    );
    assert_eq!(
        anonymous.set_end_reason(EndReason::ClientClosed),
        EndReason::Revoked(Revocation::PublisherEnded),
        "the revocation stands"
    );
    drop(anonymous);
    let ends = a.stats().ends();
    assert!(
        ends.contains(&("rtmp", "play", "publisher_ended", 2)),
        "{ends:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_tokens_are_decided_off_the_workers_and_spent_once() {
    let a = Arc::new(admission(no_delay()));
    let (_, once) = token(&a, TokenKind::Publish, |s| s.max_uses = Some(1));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (a, once) = (Arc::clone(&a), once.clone());
        tasks.push(tokio::spawn(async move {
            a.admit_publish(req(Action::Publish, &format!("live/{i}"), Some(&once)))
                .await
        }));
    }
    let mut granted = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => granted.push(s),
            Err(d) => assert_eq!(d, Denial::UsesExhausted),
        }
    }
    assert_eq!(granted.len(), 1);
}

#[tokio::test]
async fn failures_are_delayed_counted_and_refused_per_reason() {
    let a = admission(FailurePolicy {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        window: Duration::from_secs(60),
    });
    let started = Instant::now();
    assert_eq!(
        a.admit_publish(req(Action::Publish, "live/a", Some("guess")))
            .await
            .unwrap_err(),
        Denial::Unknown
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    let second = Instant::now();
    let _ = a
        .admit_publish(req(Action::Publish, "live/a", Some("guess2")))
        .await;
    assert!(second.elapsed() >= Duration::from_millis(200), "doubled");
    // A viewer of a stream that is not live is no failed authentication.
    let quick = Instant::now();
    assert_eq!(
        a.admit_play(req(Action::Play, "live/a", None))
            .await
            .unwrap_err(),
        Denial::StreamNotLive
    );
    assert!(quick.elapsed() < Duration::from_millis(100));
    assert_eq!(a.failures().total(), 2);
    assert_eq!(
        a.stats().refusals(),
        vec![("rtmp", "stream_not_live", 1), ("rtmp", "unknown", 2)]
    );
    let (_, count, _) = a.stats().latency();
    assert_eq!(count, 3);
}

#[tokio::test]
async fn narrowing_the_token_ends_the_session_with_the_reason() {
    let a = admission(no_delay());
    let (id, secret) = token(&a, TokenKind::Publish, |_| {});
    let mut publish = a
        .admit_publish(req(Action::Publish, "live/a", Some(&secret)))
        .await
        .unwrap();
    a.auth()
        .update(
            TokenKind::Publish,
            streamgate_auth::TokenId(id),
            Box::new(|s| {
                s.streams = vec![streamgate_auth::rules::StreamRule::exact("live/b").unwrap()];
                Ok(())
            }),
            false,
        )
        .unwrap();
    assert_eq!(
        publish.revoked().await,
        Revocation::NotAllowed(Denial::StreamNotAllowed)
    );
    assert_eq!(
        publish.set_end_reason(EndReason::ClientClosed).code(),
        "no_longer_allowed"
    );
}
