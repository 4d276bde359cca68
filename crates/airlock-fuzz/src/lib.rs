//! The fuzz targets' bodies (SECURITY #25), as plain functions.
//!
//! `fuzz/fuzz_targets/<name>.rs` (cargo-fuzz, run by `scripts/fuzz`) calls [`run`] with the
//! fuzzer's input; `tests/corpus.rs` here calls it with every file under
//! `fuzz/corpus/<name>/`, so `cargo test --workspace` replays the whole corpus, and an input that
//! once crashed becomes a regression test when it is copied into the corpus.
//!
//! Each body parses untrusted bytes the way Airlock does at a trust boundary and checks, besides
//! "no panic", the property that boundary promises:
//!
//! | target | what it parses | what it checks |
//! |---|---|---|
//! | `token` | `gws_`/`alk_` tokens, digests in hex | accepted tokens have the shape, digests round-trip |
//! | `endpoint` | endpoints, upstream policies, source addresses, IPs | canonical forms re-parse to themselves; IPv4-mapped IPv6 is judged as its IPv4 |
//! | `envelope` | ciphertext blobs, keyrings, bindings | nothing but a real blob opens; a flipped byte never does; errors never quote input |
//! | `rewrite` | request targets and headers with real tokens in them | what would go upstream has one real credential and no token |
//! | `h1guard` | raw HTTP/1 byte streams | the verdict does not depend on how the bytes are split; head boundaries agree with httparse |
//! | `meter` | upstream response bodies, JSON and SSE, in every dialect (the first byte picks the dialect and the cuts) | state stays fixed and bounded; cutting the body anywhere changes nothing; counts keep their invariants; exact only when complete |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use airlock_core::endpoint::{is_non_public, normalize_ip};
use airlock_core::token::check_format;
use airlock_core::{
    BearerSecret, Endpoint, SecretKind, SourceAddresses, TokenDigest, UpstreamPolicy,
};
use airlock_crypto::{Keyring, MasterKey, SecretContext};
use airlock_proxy::h1guard::{Scan, Scanner};

/// Every target, by name.
pub const TARGETS: [&str; 6] = [
    "token", "endpoint", "envelope", "rewrite", "h1guard", "meter",
];

/// Runs the body of the target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "token" => token(data),
        "endpoint" => endpoint(data),
        "envelope" => envelope(data),
        "rewrite" => airlock_proxy::fuzzing::rewrite_input(data),
        "h1guard" => h1guard(data),
        "meter" => airlock_llm::fuzz_meter(data),
        other => panic!("no fuzz target named {other}"),
    }
}

/// Token parsing: whatever passes the format check has the documented shape, parses as a
/// [`BearerSecret`] of that kind with the same digest, and a digest's hex round-trips.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [SecretKind::Gateway, SecretKind::ApiKey] {
        if check_format(kind, text).is_ok() {
            assert!(text.starts_with(kind.prefix()));
            assert_eq!(text.len(), kind.token_len());
            assert!(text[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            let parsed = BearerSecret::parse(kind, text).unwrap_or_else(|e| panic!("{e}"));
            assert!(parsed.digest().ct_eq(&TokenDigest::of(text)));
        } else {
            assert!(BearerSecret::parse(kind, text).is_err());
        }
    }
    // One digest, one spelling: only the canonical lower-case hex parses.
    if let Some(digest) = TokenDigest::from_hex(text) {
        assert_eq!(digest.to_hex(), text);
    }
    let digest = TokenDigest::of(text);
    assert_eq!(
        TokenDigest::from_hex(&digest.to_hex()).map(|d| d.ct_eq(&digest)),
        Some(true)
    );
}

/// Endpoint and address parsing: an accepted endpoint's canonical form parses back to the same
/// endpoint and has no way out of its base path; policies and source lists never panic; an
/// IPv4-mapped IPv6 address is judged exactly as the IPv4 address it carries.
pub fn endpoint(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(endpoint) = Endpoint::parse("endpoint", &text) {
        let canonical = endpoint.to_string();
        let again = Endpoint::parse("endpoint", &canonical)
            .unwrap_or_else(|e| panic!("{canonical} does not re-parse: {e}"));
        assert_eq!(again, endpoint, "{canonical}");
        assert_eq!(again.to_string(), canonical);
        let base = endpoint.base_path();
        assert!(
            base.is_empty() || (base.starts_with('/') && !base.ends_with('/')),
            "{base}"
        );
        assert!(
            !base.contains("//") && !base.contains('\\') && !base.contains('?'),
            "{base}"
        );
        assert!(!base.split('/').any(|s| s == "." || s == ".."), "{base}");
        let loopback = UpstreamPolicy::parse("127.0.0.0/8, ::1").unwrap_or_default();
        for policy in [UpstreamPolicy::default(), loopback] {
            let _ = policy.check_endpoint("endpoint", &endpoint);
        }
    }
    let _ = UpstreamPolicy::parse(&text);
    let items: Vec<&str> = text.split(',').collect();
    if let Ok(sources) = SourceAddresses::parse("source_addresses", &items) {
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        ] {
            let _ = sources.contains(ip);
        }
        let _ = sources.to_strings();
    }
    if let Ok(ip) = text.trim().parse::<IpAddr>() {
        let _ = is_non_public(ip);
    }
    // Raw addresses: the first 4 bytes as IPv4, the first 16 as IPv6.
    if data.len() >= 4 {
        let v4 = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(normalize_ip(mapped), IpAddr::V4(v4));
        assert_eq!(is_non_public(mapped), is_non_public(IpAddr::V4(v4)), "{v4}");
        let policy = UpstreamPolicy::default();
        for scheme in [airlock_core::Scheme::Https, airlock_core::Scheme::Http] {
            assert_eq!(
                policy.check_dial(scheme, mapped).is_ok(),
                policy.check_dial(scheme, IpAddr::V4(v4)).is_ok(),
                "{v4}"
            );
        }
    }
    if data.len() >= 16 {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&data[..16]);
        let v6 = IpAddr::V6(Ipv6Addr::from(octets));
        let _ = is_non_public(v6);
        let _ = UpstreamPolicy::default().check_dial(airlock_core::Scheme::Https, v6);
    }
}

/// The fixed key the envelope target and its seeds use (`fuzz-seeds` makes blobs with it).
pub const FUZZ_KEY: &str = "ZnV6ei1vbmx5LWtleS1ub3QtYS1zZWNyZXQtMDAwMDA=";

/// The contexts the envelope target chooses from (by the input's first byte).
pub const CONTEXTS: [(&str, &str, i64); 3] = [
    ("acc_fuzz", "sec_fuzz", 1),
    ("acc_fuzz", "sec_fuzz", 2),
    ("acc_other", "sec_fuzz", 1),
];

#[allow(clippy::expect_used)] // A constant that does not parse is a bug in this file.
fn fuzz_keyring() -> Keyring {
    Keyring::new(vec![MasterKey::from_base64(FUZZ_KEY).expect("FUZZ_KEY")]).expect("one key")
}

/// Ciphertext decoding: the first byte picks a context, the rest is a blob. Opening never
/// panics; if a blob opens, changing any one byte of it (the one the input's second byte
/// names) makes it fail, and it does not open under the other contexts; re-wrapping and the
/// binding check never accept garbage; error messages never quote the input; a keyring parsed
/// from the input never echoes it in an error.
pub fn envelope(data: &[u8]) {
    let keyring = fuzz_keyring();
    if let Some((&first, blob)) = data.split_first() {
        let pick = |i: usize| {
            let (account, secret, version) = CONTEXTS[i % CONTEXTS.len()];
            SecretContext {
                account_id: account,
                secret_id: secret,
                version,
            }
        };
        let chosen = usize::from(first);
        let ctx = pick(chosen);
        match keyring.open(&ctx, blob) {
            Ok(_) => {
                let at = usize::from(blob.get(1).copied().unwrap_or(0)) % blob.len();
                let mut flipped = blob.to_vec();
                flipped[at] ^= 0x01;
                assert!(
                    keyring.open(&ctx, &flipped).is_err(),
                    "a flipped byte {at} opened"
                );
                for other in 1..CONTEXTS.len() {
                    assert!(
                        keyring.open(&pick(chosen + other), blob).is_err(),
                        "a blob opened under another context"
                    );
                }
            }
            Err(err) => assert_fixed_message(&err.to_string()),
        }
        let _ = keyring.rewrap(&ctx, blob);
        let _ = Keyring::key_id_of(blob);
        assert!(
            keyring
                .verify_binding("airlock.gateway-config.v1", b"record", blob)
                .is_err(),
            "a binding was forged"
        );
    }
    let text = String::from_utf8_lossy(data);
    if let Err(err) = Keyring::parse(&text) {
        assert_fixed_key_message(&err.to_string());
    }
}

/// A keyring error is one of the documented fixed texts, with at most a position, a length or a
/// key id in it: never the text a key was parsed from.
fn assert_fixed_key_message(message: &str) {
    let rest = message.strip_prefix("master key ").map(|r| {
        r.trim_start_matches(|c: char| c == '#' || c.is_ascii_digit())
            .trim_start()
            .trim_start_matches("in the list")
            .trim_start()
    });
    let ok = message == "no master key given"
        || rest == Some("is not valid base64")
        || rest
            .and_then(|r| r.strip_prefix("is "))
            .and_then(|r| r.strip_suffix(" bytes, need 32"))
            .is_some_and(|n| n.parse::<usize>().is_ok())
        || message
            .strip_prefix("master key ")
            .and_then(|r| r.strip_suffix(" is listed more than once"))
            .is_some_and(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(ok, "not a fixed error text: {message}");
}

/// An error from opening a blob is one of the documented fixed texts, with at most a format byte
/// or a key id in it, so it can quote nothing of the input.
fn assert_fixed_message(message: &str) {
    let fixed = [
        "ciphertext is truncated",
        "decryption failed: the ciphertext does not match its context or was altered",
        "the binding does not match its record or was altered",
        "value or context is too large to encrypt",
    ];
    let version = message
        .strip_prefix("unsupported ciphertext version ")
        .is_some_and(|n| n.parse::<u8>().is_ok());
    let key = message
        .strip_prefix("no master key with id ")
        .and_then(|rest| rest.strip_suffix(" is loaded"))
        .is_some_and(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        fixed.contains(&message) || version || key,
        "not a fixed error text: {message}"
    );
}

/// What [`scan_in_pieces`] saw.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    verdict: Scan,
    messages: u64,
    heads: u64,
}

/// Scans `data` in pieces of `stride` bytes, translating positions to offsets in `data`.
fn scan_in_pieces(data: &[u8], stride: usize) -> Outcome {
    let mut scanner = Scanner::new();
    let mut verdict = Scan::Clean;
    let mut offset = 0;
    for piece in data.chunks(stride.max(1)) {
        match scanner.scan(piece) {
            Scan::Clean => {}
            Scan::Violation {
                at,
                violation,
                in_body,
            } => {
                verdict = Scan::Violation {
                    at: offset + at,
                    violation,
                    in_body,
                };
                break;
            }
            Scan::Upgrade { at } => {
                verdict = Scan::Upgrade { at: offset + at };
                break;
            }
        }
        offset += piece.len();
    }
    Outcome {
        verdict,
        messages: scanner.messages(),
        heads: scanner.heads(),
    }
}

/// The framing guard: the verdict, its position and the message count do not depend on how the
/// bytes are split into reads; where the guard ends a request head, httparse ends it at the
/// same byte, and a `Content-Length` body ends where the length says.
pub fn h1guard(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let whole = scan_in_pieces(input, input.len());
    let stride = usize::from(first % 17) + 1;
    assert_eq!(
        scan_in_pieces(input, stride),
        whole,
        "split every {stride} bytes"
    );
    assert_eq!(scan_in_pieces(input, 1), whole, "split into single bytes");

    // Walk the stream byte by byte, noting where heads and messages end.
    let mut scanner = Scanner::new();
    let mut start = 0;
    let mut head_end = None;
    for i in 0..input.len() {
        let (heads, messages) = (scanner.heads(), scanner.messages());
        let verdict = scanner.scan(&input[i..=i]);
        if scanner.is_off() {
            return;
        }
        if scanner.heads() > heads {
            let end = i + 1;
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&input[start..]) {
                Ok(httparse::Status::Complete(len)) => {
                    assert_eq!(start + len, end, "httparse ends the head elsewhere");
                    let length = request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| {
                            std::str::from_utf8(h.value)
                                .ok()?
                                .trim()
                                .parse::<u64>()
                                .ok()
                        });
                    let chunked = request
                        .headers
                        .iter()
                        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
                    head_end = (!chunked).then_some((end, length.unwrap_or(0)));
                }
                Ok(httparse::Status::Partial) => panic!("the guard ended a head httparse has not"),
                // Stricter than the guard: hyper refuses it and closes the connection.
                Err(_) => return,
            }
        }
        if scanner.messages() > messages {
            if let Some((end, length)) = head_end.take() {
                assert_eq!(
                    (i + 1) as u64,
                    end as u64 + length,
                    "the body ends elsewhere"
                );
            }
            start = i + 1;
        }
        if verdict != Scan::Clean {
            return;
        }
    }
    // A head the guard has not finished must not be complete for httparse either.
    if scanner.heads() == scanner.messages() && start < input.len() {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        assert!(
            !matches!(
                request.parse(&input[start..]),
                Ok(httparse::Status::Complete(_))
            ),
            "httparse ends a head the guard does not"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_texts_are_recognised_and_nothing_else() {
        let ring = fuzz_keyring();
        let ctx = SecretContext {
            account_id: "a",
            secret_id: "s",
            version: 1,
        };
        for blob in [&b""[..], &[9u8; 200][..], &[1u8; 200][..]] {
            assert_fixed_message(&ring.open(&ctx, blob).unwrap_err().to_string());
        }
        let key = MasterKey::generate().unwrap().to_base64();
        for text in [
            String::new(),
            "not base64!".to_owned(),
            "AAAA".to_owned(),
            format!("{},{}", key.as_str(), key.as_str()),
            format!("{},AAAA", key.as_str()),
        ] {
            assert_fixed_key_message(&Keyring::parse(&text).unwrap_err().to_string());
        }
        for quoted in [
            "unsupported ciphertext version 1x",
            "master key is not valid base64: abc",
            "decryption failed: sk-secret",
        ] {
            let caught = std::panic::catch_unwind(|| {
                assert_fixed_message(quoted);
                assert_fixed_key_message(quoted);
            });
            assert!(caught.is_err(), "{quoted}");
        }
    }
}
