//! Where the token may sit, and where it must not (SECURITY #5, #6, #7): odd casing of header
//! names and schemes, duplicates, a client's own credential, hop-by-hop tricks, and the token
//! hidden where it would travel upstream (another header, a header's name, the URL, encoded).
//! Sent over raw TCP, so that no client library normalises the casing or the order.
//!
//! Whenever a request is forwarded, the upstream sees exactly one credential header, holding
//! the real key, and no `gws_` anywhere in the bytes it received.

use crate::attacks::common::{exchange, Seen, SECRET, WAIT};
use crate::support::Harness;
use airlock_core::AuthMechanism;

pub async fn run(h: &Harness, seen: &mut Seen) {
    for (auth, credential, expected) in [
        (
            AuthMechanism::Header {
                key: "x-api-key".into(),
            },
            "x-api-key",
            SECRET.to_owned(),
        ),
        (
            AuthMechanism::Bearer,
            "authorization",
            format!("Bearer {SECRET}"),
        ),
    ] {
        let s = h.simple(auth.clone(), SECRET).await;
        let t = s.token.expose();
        let lower = t.to_ascii_lowercase();
        let upper_prefix = format!("GWS_{}", &t[4..]);
        let pct = t.replacen('_', "%5F", 1);
        // (name, header lines, status, code)
        let cases: Vec<(&str, String, u16, &str)> = vec![
            ("upper-case name", format!("X-API-KEY: {t}"), 200, ""),
            ("mixed-case name", format!("x-Api-kEy: {t}"), 200, ""),
            ("upper-case bearer", format!("AUTHORIZATION: BEARER {t}"), 200, ""),
            ("bearer with extra spaces", format!("Authorization: bearer    {t}   "), 200, ""),
            ("the token twice, two carriers", format!("X-Api-Key: {t}\r\nauthorization: Bearer {t}"), 200, ""),
            ("the token twice, one carrier", format!("x-api-key: {t}\r\nX-API-KEY: {t}"), 200, ""),
            ("every carrier at once", format!("x-api-key: {t}\r\napi-key: {t}\r\nx-goog-api-key: {t}\r\nAuthorization: Bearer {t}\r\nProxy-Authorization: Bearer {t}"), 200, ""),
            ("the client's own credentials too", format!("x-api-key: {t}\r\nAuthorization: Bearer sk-mine\r\nX-Api-Key: sk-mine\r\napi-key: sk-mine\r\nx-goog-api-key: sk-mine"), 200, ""),
            ("proxy-authorization only", format!("Proxy-Authorization: Bearer {t}\r\nx-api-key: sk-mine\r\nauthorization: Bearer sk-mine"), 200, ""),
            ("connection names the credential", format!("Authorization: Bearer {t}\r\nConnection: {credential}, x-api-key, authorization\r\n{credential}: sk-mine"), 200, ""),
            ("te, trailer, keep-alive, proxy-*", format!("x-api-key: {t}\r\nTE: trailers\r\nTrailer: {credential}\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authenticate: Basic"), 200, ""),
            ("two different tokens", format!("x-api-key: {t}\r\napi-key: {}", s_other(t)), 400, "conflicting_tokens"),
            ("the token in another header", format!("x-api-key: {t}\r\nx-note: {t}"), 400, "misplaced_token"),
            ("the token in a cookie", format!("x-api-key: {t}\r\nCookie: session={t}"), 400, "misplaced_token"),
            ("the token in a basic credential", format!("Authorization: Basic {t}"), 400, "misplaced_token"),
            ("the token after another word", format!("x-api-key: key {t}"), 400, "misplaced_token"),
            ("the token in a header name", format!("x-api-key: {t}\r\nx-{lower}: 1"), 400, "misplaced_token"),
            ("the token as a header name", format!("x-api-key: {t}\r\n{lower}: 1"), 400, "misplaced_token"),
            ("an upper-case prefix", format!("x-api-key: {upper_prefix}"), 401, "missing_token"),
            ("a truncated token", format!("x-api-key: {}", &t[..t.len() - 1]), 401, "malformed_token"),
            ("the token split over two lines", format!("x-api-key: {}\r\nx-api-key: {}", &t[..10], &t[10..]), 401, "malformed_token"),
        ];
        for (name, headers, status, code) in cases {
            h.upstream.clear();
            let request = format!(
                "GET /x HTTP/1.1\r\nHost: localhost\r\n{headers}\r\nConnection: close\r\n\r\n"
            );
            let answer = exchange(h, seen, request.as_bytes()).await;
            assert_eq!(
                answer.statuses(),
                [status],
                "{auth:?} {name}: {}",
                answer.text
            );
            assert!(
                answer.text.contains(&format!("x-airlock-error: {code}")) || code.is_empty(),
                "{name}: {}",
                answer.text
            );
            if status == 200 {
                let r = h.upstream.last_request().unwrap();
                assert_eq!(
                    r.header_values(credential),
                    vec![expected.as_bytes()],
                    "{auth:?} {name}"
                );
                let other = if credential == "x-api-key" {
                    "authorization"
                } else {
                    "x-api-key"
                };
                assert!(
                    r.header_values(other).is_empty(),
                    "{auth:?} {name}: {other} was forwarded"
                );
                assert!(r.header_values("proxy-authorization").is_empty(), "{name}");
            } else {
                assert!(h.upstream.requests().is_empty(), "{name}");
            }
            assert!(
                !h.upstream.received_contains(b"gws_"),
                "{auth:?} {name}: a token went upstream"
            );
            assert!(!h.upstream.received_contains(lower.as_bytes()), "{name}");
            assert!(!h.upstream.received_contains(b"sk-mine"), "{name}");
        }

        // The token in the URL, plain or percent-encoded, never goes upstream.
        for target in [
            format!("/x?key={t}"),
            format!("/x?key={pct}"),
            format!("/x/{t}"),
            format!("/x?key=%67%77%73%5f{}", &t[4..]),
        ] {
            h.upstream.clear();
            let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n");
            let answer = exchange(h, seen, request.as_bytes()).await;
            assert_eq!(answer.statuses(), [400], "{target}: {}", answer.text);
            assert!(answer.text.contains("misplaced_token"), "{target}");
            assert!(h.upstream.requests().is_empty());
        }
    }
    methods(h, seen).await;
}

/// The method is a carrier too (it travels upstream as sent): a token there, an over-long
/// method, and methods that make the upstream echo the request (the credential with it) are
/// refused before anything is sent; and what the audit trail records of a refused request is
/// only what passed the same checks (a token in the method or, percent-encoded, in the path is
/// never recorded).
async fn methods(h: &Harness, seen: &mut Seen) {
    let s = h
        .simple(
            AuthMechanism::Header {
                key: "x-api-key".into(),
            },
            SECRET,
        )
        .await;
    let t = s.token.expose();
    let long = "A".repeat(60_000);
    let rest = &t[4..];
    // (name, request line, status, code)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "the token as the method",
            format!("{t} /x HTTP/1.1"),
            400,
            "misplaced_token",
        ),
        (
            "the token inside the method",
            format!("X{t} /x HTTP/1.1"),
            400,
            "misplaced_token",
        ),
        (
            "a 60 000-byte method",
            format!("{long} /x HTTP/1.1"),
            400,
            "bad_method",
        ),
        (
            "a 33-byte method",
            format!("{} /x HTTP/1.1", "B".repeat(33)),
            400,
            "bad_method",
        ),
        (
            "TRACE",
            "TRACE /x HTTP/1.1".to_owned(),
            405,
            "method_not_allowed",
        ),
        (
            "TRACK",
            "TRACK /x HTTP/1.1".to_owned(),
            405,
            "method_not_allowed",
        ),
        (
            "trace in lower case",
            "trace /x HTTP/1.1".to_owned(),
            405,
            "method_not_allowed",
        ),
        (
            "CONNECT",
            "CONNECT localhost:443 HTTP/1.1".to_owned(),
            405,
            "method_not_allowed",
        ),
        (
            "the token percent-encoded in the path",
            format!("GET /gw%73_{rest} HTTP/1.1"),
            400,
            "misplaced_token",
        ),
        (
            "the token with an encoded underscore",
            format!("GET /a/gws%5F{rest} HTTP/1.1"),
            400,
            "misplaced_token",
        ),
        (
            "a 32-byte method",
            format!("{} /x HTTP/1.1", "C".repeat(32)),
            200,
            "",
        ),
        ("PROPFIND", "PROPFIND /x HTTP/1.1".to_owned(), 200, ""),
    ];
    for (name, line, status, code) in cases {
        h.upstream.clear();
        let request =
            format!("{line}\r\nHost: localhost\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n");
        let answer = exchange(h, seen, request.as_bytes()).await;
        assert_eq!(answer.statuses(), [status], "{name}: {:.300}", answer.text);
        if status == 200 {
            let sent = h.upstream.last_request().unwrap();
            assert_eq!(line.split(' ').next(), Some(sent.method.as_str()), "{name}");
        } else {
            assert!(
                answer.text.contains(&format!("x-airlock-error: {code}")),
                "{name}: {:.300}",
                answer.text
            );
            assert!(h.upstream.requests().is_empty(), "{name}: forwarded");
        }
        assert!(!h.upstream.received_contains(b"gws_"), "{name}");
    }
    // The same over HTTP/2, where the method is the `:method` pseudo-header.
    for (name, method, status) in [
        ("h2: the token as the method", t.to_owned(), Some(400)),
        ("h2: a 1 000-byte method", "D".repeat(1000), Some(400)),
        // 405 is not in HPACK's static table; its literal may be Huffman-coded.
        ("h2: TRACE", "TRACE".to_owned(), None),
    ] {
        h.upstream.clear();
        let mut frames = airlock_testkit::h2raw::settings();
        frames.extend(airlock_testkit::h2raw::frame(
            airlock_testkit::h2raw::HEADERS,
            airlock_testkit::h2raw::END_HEADERS | airlock_testkit::h2raw::END_STREAM,
            1,
            &airlock_testkit::h2raw::request_block(&method, "/h2", &[("x-api-key", t)]),
        ));
        let answer = airlock_testkit::h2raw::exchange(h.proxy, &frames, WAIT).await;
        seen.push(format!("{name}: {answer:?}"));
        assert!(answer.responded(1), "{name}: {answer:?}");
        if status.is_some() {
            assert_eq!(answer.status(1), status, "{name}: {answer:?}");
        }
        assert!(h.upstream.requests().is_empty(), "{name}: forwarded");
    }
    // Every event written holds a checked method and path: no token, nothing over-long.
    let recorded = Harness::eventually(std::time::Duration::from_secs(10), || async {
        h.sink.written().iter().any(|e| e.method == "PROPFIND")
    })
    .await;
    assert!(recorded, "the events were not written");
    let events = h.sink.written();
    for e in &events {
        let text = format!("{e:?}");
        assert!(
            !text.contains("gws_") && !text.contains(rest),
            "{text:.300}"
        );
        assert!(
            e.method.len() <= 32 || e.method == "<invalid>",
            "{:.100}",
            e.method
        );
    }
    assert!(events.iter().any(|e| e.method == "<invalid>"));
    assert!(events.iter().any(|e| e.path == "/<redacted>"));
}

/// Another well-formed token that is not `t`.
fn s_other(t: &str) -> String {
    let other = airlock_core::BearerSecret::generate(airlock_core::SecretKind::Gateway);
    assert_ne!(other.expose(), t);
    other.expose().to_owned()
}
