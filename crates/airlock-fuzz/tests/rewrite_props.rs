//! Property tests of the header rewrite (SECURITY #5–#7): for any request (random header names
//! in random case, duplicates, hop-by-hop headers, tokens in every placement, every auth
//! mechanism), what would go upstream has exactly one credential header holding the real value
//! and no `gws_` anywhere; `airlock_proxy::fuzzing::check_rewrite` asserts that on every
//! request it forwards. And the property is not vacuous: a request that presents its token
//! properly, whatever else it carries, is forwarded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use airlock_proxy::fuzzing::{bench, check_rewrite, header_map, Mechanism, Verdict};
use proptest::prelude::*;

const NAMES: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-type",
    "cookie",
    "x-upstream-auth",
    "anthropic-version",
    "x-org",
    "x-custom",
];

const VALUES: &[&str] = &[
    "Bearer $T",
    "bearer   $T  ",
    "BEARER $T",
    "$T",
    " $T ",
    "Basic $T",
    "key $T",
    "$T,$T",
    "s=$T",
    "$U",
    "Bearer $U",
    "$L",
    "sk-mine",
    "Bearer sk-mine",
    "x-api-key, authorization, api-key",
    "keep-alive, x-org",
    "trailers",
    "chunked",
    "websocket",
    "",
];

fn mechanism() -> impl Strategy<Value = Mechanism> {
    prop::sample::select(Mechanism::ALL.to_vec())
}

/// A name from the pool in random case, or a random lower-case name.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (prop::sample::select(NAMES), any::<u64>()).prop_map(|(n, mask)| recase(n, mask)),
        3 => "[a-z][a-z0-9-]{0,11}",
        // A token (or its lower-case form) inside a header's name, now and then.
        1 => Just("x-$L".to_owned()),
    ]
}

/// Mostly values without a token (so that requests get forwarded), sometimes a token
/// placement.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(VALUES).prop_map(str::to_owned),
        3 => prop::sample::select(&VALUES[12..]).prop_map(str::to_owned),
        2 => "[a-zA-Z0-9 ,=/.-]{0,24}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/x".to_owned()),
        Just("/v1/chat/completions?stream=true".to_owned()),
        Just("/x?key=$T".to_owned()),
        Just("/x?key=gws%5F".to_owned()),
        Just("/a/../b".to_owned()),
        Just("http://evil.example/x".to_owned()),
        "/[a-z0-9/._%-]{0,20}",
    ]
}

fn recase(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Replaces `$T` (the gateway's token), `$U` (an unknown well-formed token) and `$L` (the token
/// in lower case).
fn expand(text: &str, mechanism: Mechanism) -> String {
    let bench = bench();
    let token = bench.token(mechanism);
    text.replace("$T", token)
        .replace("$U", bench.stranger())
        .replace("$L", &token.to_ascii_lowercase())
}

/// Whatever the request, a forwarded one carries exactly the real credential and no token
/// (checked inside `check_rewrite`). Run by hand so that it can also count: at least a fifth of
/// the requests must be forwarded, or the property would hold for want of cases.
#[test]
fn forwarded_requests_carry_one_real_credential_and_no_token() {
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let forwarded = AtomicUsize::new(0);
    let cases = 4096;
    let strategy = (
        mechanism(),
        target(),
        prop::option::weighted(0.8, (0usize..5, any::<u64>())),
        prop::collection::vec((name(), value()), 0..10),
    );
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(&strategy, |(mechanism, target, presented, noise)| {
            let mut headers: Vec<(Vec<u8>, Vec<u8>)> = noise
                .iter()
                .map(|(n, v)| {
                    (
                        expand(n, mechanism).into_bytes(),
                        expand(v, mechanism).into_bytes(),
                    )
                })
                .collect();
            if let Some((carrier, mask)) = presented {
                let (name, value) = CARRIERS[carrier];
                let at = (mask % 11) as usize % (headers.len() + 1);
                headers.insert(
                    at,
                    (
                        recase(name, mask).into_bytes(),
                        expand(value, mechanism).into_bytes(),
                    ),
                );
            }
            let verdict = check_rewrite(
                mechanism,
                &expand(&target, mechanism),
                &header_map(&headers),
            );
            if verdict == Verdict::Forwarded {
                forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    let forwarded = forwarded.load(Ordering::Relaxed);
    assert!(
        forwarded * 5 >= cases as usize,
        "only {forwarded} of {cases} requests were forwarded"
    );
}

/// Each carrier in its proper form.
const CARRIERS: [(&str, &str); 5] = [
    ("authorization", "Bearer $T"),
    ("x-api-key", "$T"),
    ("api-key", "$T"),
    ("x-goog-api-key", "$T"),
    ("proxy-authorization", "bEaReR $T"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// A request with its token in one carrier, properly, is forwarded whatever else it carries
    /// (as long as nothing else holds a token).
    #[test]
    fn a_properly_presented_token_is_forwarded(
        mechanism in mechanism(),
        carrier in 0usize..5,
        mask in any::<u64>(),
        others in prop::collection::vec(
            (prop::sample::select(NAMES), "[a-zA-Z0-9 ,=/.-]{0,24}"),
            0..10,
        ),
    ) {
        let (name, value) = CARRIERS[carrier];
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = others
            .iter()
            .map(|(n, v)| (recase(n, mask).into_bytes(), v.clone().into_bytes()))
            .collect();
        // Other values of the carrier headers would be read as the token's neighbours: keep
        // them out, the safety property above covers them.
        headers.retain(|(n, _)| {
            let n = String::from_utf8_lossy(n).to_ascii_lowercase();
            !["authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization"]
                .contains(&n.as_str())
        });
        headers.insert(
            (mask % 8) as usize % (headers.len() + 1),
            (recase(name, mask.rotate_left(7)).into_bytes(), expand(value, mechanism).into_bytes()),
        );
        let verdict = check_rewrite(mechanism, "/x", &header_map(&headers));
        prop_assert_eq!(verdict, Verdict::Forwarded);
    }
}
