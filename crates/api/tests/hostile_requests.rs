//! Random and mutated requests against the whole router: none may panic or answer 500 (the
//! stable-toolchain counterpart of the `rest_api` fuzz target).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use axum::http::StatusCode;
use proptest::prelude::*;
use streamgate_api::fuzzing::{router, send};

/// Requests as a backend sends them (flags byte, target, newline, body).
const SEEDS: &[&[u8]] = &[
    b"\x09/api/publish_token\n{\"label\":\"cam\",\"streams\":[{\"streamName\":\"live/cam1\"}],\"expires\":86400,\"allowedIpAddresses\":[\"10.0.0.0/8\"],\"maxUses\":2}",
    b"\x09/api/subscribe_token\n{\"label\":\"v\",\"streams\":[{\"streamName\":\"live/.*\",\"isRegex\":true}],\"allowedOrigins\":[\"*.example.com\"]}",
    b"\x08/api/publish_token/list?page=1&itemsOnPage=10&sortBy=AddedOn&isDescending=true&tag=x\n",
    b"\x0a/api/publish_token/1\n{\"isActive\":false,\"addTokenStreams\":[{\"streamName\":\"a/b\"}],\"refreshToken\":true}",
    b"\x0b/api/subscribe_token/2\n",
    b"\x09/api/revoked_jti\n{\"jti\":\"abc\",\"expiresOn\":4102444800}",
    b"\x08/LiveApp/rest/v2/broadcasts/cam1/token?expireDate=4102444800&type=publish\n",
    b"\x08/LiveApp/rest/v2/broadcasts/cam1/jwt-token?expireDate=4102444800&type=play\n",
    b"\x0b/LiveApp/rest/v2/broadcasts/cam1/tokens\n",
    b"\x01/api/access/issue?id=live/cam1&type=live&token=fuzzing-api-secret-0123456789&ip=1.2.3.4&time_limit=60\n",
    b"\x00/healthz\n",
    b"\x08/metrics\n",
    b"\x0a/api/v2/publish_token/1\n{\"removeTokenStreams\":[\"a/b\"],\"addTokenStreams\":[{\"streamName\":\"live/c\"}]}",
];

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(SEEDS),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(|(seed, edits)| {
            let mut out = seed.to_vec();
            for (at, byte, kind) in edits {
                let i = at.index(out.len().max(1));
                match kind {
                    0 => out.insert(i.min(out.len()), byte),
                    1 if out.len() > 1 => {
                        out.remove(i.min(out.len() - 1));
                    }
                    _ => {
                        if let Some(b) = out.get_mut(i) {
                            *b = byte;
                        }
                    }
                }
            }
            out
        })
}

fn check(input: &[u8]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let app = router().ok_or_else(|| TestCaseError::fail("no router"))?;
    // The seeds first, so that the mutated request meets tokens that exist.
    rt.block_on(async {
        for seed in SEEDS {
            send(&app, seed).await;
        }
        let status = send(&app, input).await;
        prop_assert_ne!(status, Some(StatusCode::INTERNAL_SERVER_ERROR));
        Ok(())
    })
}

#[test]
fn the_seeds_are_answered_with_success() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = router().unwrap();
    rt.block_on(async {
        for seed in SEEDS {
            let status = send(&app, seed).await;
            assert!(
                status.is_some_and(|s| s.is_success()),
                "{}: {status:?}",
                String::from_utf8_lossy(seed)
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn mutated_requests_never_panic_or_fail(input in mutated()) {
        check(&input)?;
    }

    #[test]
    fn random_requests_never_panic_or_fail(input in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&input)?;
    }
}
