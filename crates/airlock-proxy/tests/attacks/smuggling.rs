//! Request smuggling (SECURITY #8): ambiguous message lengths, hidden requests behind bodies,
//! and attempts to switch the framing check off with an upgrade. Every hidden request carries
//! the token, so that only the framing can stop it.

use crate::attacks::common::{exchange, target, upstream_paths, Seen};
use crate::support::Harness;

/// What must happen.
enum Expect {
    /// 400 and the connection closed; nothing reached the upstream.
    Refused,
    /// These statuses, in order, and the upstream received exactly these paths.
    Answers(&'static [u16], &'static [&'static str]),
    /// A chunked body broke the rules: the connection is closed, the hidden request never
    /// reaches the upstream, and no request reaches it whole.
    BodyCutOff,
}

pub async fn run(h: &Harness, seen: &mut Seen) {
    let s = target(h).await;
    let t = s.token.expose();
    let hidden = format!("GET /smuggled HTTP/1.1\r\nHost: x\r\nx-api-key: {t}\r\n\r\n");
    let bad_hidden = format!("GET /smuggled HTTP/1.1\nHost: x\r\nx-api-key: {t}\r\n\r\n");
    let first = format!("Host: x\r\nx-api-key: {t}\r\n");
    let chunked = "Transfer-Encoding: chunked\r\n";
    let cases: Vec<(&str, String, Expect)> = vec![
        ("cl then te", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 4\r\n{chunked}\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te then cl", format!("POST /a HTTP/1.1\r\n{first}{chunked}Content-Length: 40\r\n\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te then cl 0", format!("POST /a HTTP/1.1\r\n{first}{chunked}Content-Length: 0\r\n\r\n5\r\nhello\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("two content-lengths", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd{hidden}"), Expect::Refused),
        ("content-length list", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 4, 5\r\n\r\nabcd{hidden}"), Expect::Refused),
        ("signed content-length", format!("POST /a HTTP/1.1\r\n{first}Content-Length: +4\r\n\r\nabcd{hidden}"), Expect::Refused),
        ("te xchunked", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te chunked, gzip", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te gzip, chunked", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te twice", format!("POST /a HTTP/1.1\r\n{first}{chunked}{chunked}\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te with vertical tab", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te space before colon", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te folded", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        ("te in http/1.0", format!("POST /a HTTP/1.0\r\n{first}{chunked}\r\n0\r\n\r\n{hidden}"), Expect::Refused),
        // Bodies that break the chunked rules after the request was accepted.
        ("chunk size with bare lf", format!("POST /a HTTP/1.1\r\n{first}{chunked}\r\n5\nhello\r\n0\r\n\r\n{hidden}"), Expect::BodyCutOff),
        ("chunk size with space", format!("POST /a HTTP/1.1\r\n{first}{chunked}\r\n5 \r\nhello\r\n0\r\n\r\n{hidden}"), Expect::BodyCutOff),
        ("chunk size overflow", format!("POST /a HTTP/1.1\r\n{first}{chunked}\r\n10000000000000005\r\nhello\r\n0\r\n\r\n{hidden}"), Expect::BodyCutOff),
        ("chunk longer than said", format!("POST /a HTTP/1.1\r\n{first}{chunked}\r\n3\r\nhello\r\n0\r\n\r\n{hidden}"), Expect::BodyCutOff),
        ("chunk extension with bare lf", format!("POST /a HTTP/1.1\r\n{first}{chunked}\r\n5;x\ny\r\nhello\r\n0\r\n\r\n{hidden}"), Expect::BodyCutOff),
        ("trailer with bare lf", format!("POST /a HTTP/1.1\r\n{first}{chunked}\r\n0\r\nx-t: 1\n\r\n{hidden}"), Expect::BodyCutOff),
        ("last chunk ended by bare lf", format!("POST /a HTTP/1.1\r\n{first}{chunked}\r\n0\n\n{hidden}"), Expect::BodyCutOff),
        // A malformed head hidden behind a well-framed body is refused like a first one.
        ("bad head after a content-length body", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 5\r\n\r\nhello{bad_hidden}"), Expect::Answers(&[200, 400], &["/v1/a"])),
        ("bad head after a chunked body", format!("POST /a HTTP/1.1\r\n{first}{chunked}\r\n5\r\nhello\r\n0\r\n\r\n{bad_hidden}"), Expect::Answers(&[200, 400], &["/v1/a"])),
        ("obs-fold after a body", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 1\r\n\r\nxGET /smuggled HTTP/1.1\r\nx-api-key: {t}\r\nX: a\r\n b\r\n\r\n"), Expect::Answers(&[200, 400], &["/v1/a"])),
        // An upgrade that is not granted does not switch the check off.
        ("after a refused upgrade", format!("GET /a HTTP/1.1\r\n{first}Upgrade: foo\r\nConnection: upgrade\r\n\r\n{bad_hidden}"), Expect::Answers(&[200, 400], &["/v1/a"])),
        ("after a websocket upgrade the upstream declines", format!("GET /a HTTP/1.1\r\n{first}Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{bad_hidden}"), Expect::Answers(&[200, 400], &["/v1/a"])),
        ("after CONNECT", format!("CONNECT localhost:443 HTTP/1.1\r\n{first}\r\n{bad_hidden}"), Expect::Answers(&[405, 400], &[])),
        // Well-framed pipelining works, and every request is checked on its own.
        ("three pipelined requests", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\n{first}{chunked}\r\n3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\nGET /c HTTP/1.1\r\n{first}Connection: close\r\n\r\n"), Expect::Answers(&[200, 200, 200], &["/v1/a", "/v1/b", "/v1/c"])),
        ("a second request without a token", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), Expect::Answers(&[200, 401], &["/v1/a"])),
    ];
    for (name, request, expect) in cases {
        h.upstream.clear();
        let answer = exchange(h, seen, request.as_bytes()).await;
        let statuses = answer.statuses();
        let paths = upstream_paths(h);
        assert!(
            !paths.iter().any(|p| p.contains("smuggled")),
            "{name}: the hidden request reached the upstream: {paths:?}"
        );
        match expect {
            Expect::Refused => {
                assert_eq!(statuses, [400], "{name}: {}", answer.text);
                assert!(answer.closed, "{name}: the connection stayed open");
                assert!(paths.is_empty(), "{name}: {paths:?}");
            }
            Expect::Answers(expected, expected_paths) => {
                assert_eq!(
                    statuses, expected,
                    "{name}: closed {}: {}",
                    answer.closed, answer.text
                );
                assert_eq!(paths, expected_paths, "{name}");
                if expected.last() == Some(&400) {
                    assert!(answer.closed, "{name}: the connection stayed open");
                }
            }
            Expect::BodyCutOff => {
                assert!(answer.closed, "{name}: the connection stayed open");
                // The request went upstream with a streamed body before the body broke; let the
                // upstream record it (or give up on it) so that it does not spill into the
                // next case.
                let _ = h
                    .upstream
                    .wait_for_requests(1, std::time::Duration::from_millis(500))
                    .await;
                assert!(
                    statuses.len() <= 1 && statuses.iter().all(|s| *s != 200 || paths.len() <= 1),
                    "{name}: {}",
                    answer.text
                );
                for r in h.upstream.requests() {
                    assert!(!r.body_complete, "{name}: a cut-off body arrived whole");
                }
            }
        }
        // What was forwarded is re-framed by Airlock: no Transfer-Encoding travels upstream.
        for r in h.upstream.requests() {
            assert!(r.header_values("transfer-encoding").is_empty(), "{name}");
        }
    }
}
