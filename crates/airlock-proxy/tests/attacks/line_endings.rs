//! Line ends and header syntax another parser may read differently (SECURITY #8): bare LF,
//! bare CR, obs-fold, whitespace before the colon, lines without a colon. Each head is refused
//! with 400 and the connection closed, before anything reaches the upstream.

use crate::attacks::common::{exchange, target, upstream_paths, Seen};
use crate::support::Harness;

pub async fn run(h: &Harness, seen: &mut Seen) {
    let s = target(h).await;
    let t = s.token.expose();
    let key = format!("x-api-key: {t}");
    let refused: Vec<(&str, String)> = vec![
        (
            "bare lf everywhere",
            format!("GET /a HTTP/1.1\nHost: x\n{key}\n\n"),
        ),
        (
            "bare lf after the request line",
            format!("GET /a HTTP/1.1\nHost: x\r\n{key}\r\n\r\n"),
        ),
        (
            "bare lf after a header",
            format!("GET /a HTTP/1.1\r\nHost: x\n{key}\r\n\r\n"),
        ),
        (
            "bare lf ends the head",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\n\n"),
        ),
        (
            "bare lf before the request",
            format!("\nGET /a HTTP/1.1\r\nHost: x\r\n{key}\r\n\r\n"),
        ),
        (
            "bare cr in a value",
            format!("GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n{key}\r\n\r\n"),
        ),
        (
            "bare cr ends the request line",
            format!("GET /a HTTP/1.1\rHost: x\r\n{key}\r\n\r\n"),
        ),
        (
            "obs-fold with a space",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nX-Foo: a\r\n b\r\n\r\n"),
        ),
        (
            "obs-fold with a tab",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nX-Foo: a\r\n\tb\r\n\r\n"),
        ),
        (
            "obs-fold of the token header",
            format!("GET /a HTTP/1.1\r\nHost: x\r\nx-api-key:\r\n {t}\r\n\r\n"),
        ),
        (
            "first header indented",
            format!("GET /a HTTP/1.1\r\n Host: x\r\n{key}\r\n\r\n"),
        ),
        (
            "space before colon",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nX-Foo : a\r\n\r\n"),
        ),
        (
            "tab before colon",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nX-Foo\t: a\r\n\r\n"),
        ),
        (
            "space before the token header's colon",
            format!("GET /a HTTP/1.1\r\nHost: x\r\nx-api-key : {t}\r\n\r\n"),
        ),
        (
            "a line without a colon",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nno colon here\r\n\r\n"),
        ),
        (
            "an empty header name",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\n: empty\r\n\r\n"),
        ),
        (
            "nul in a value",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nX-Foo: a\0b\r\n\r\n"),
        ),
        (
            "two spaces in the request line",
            format!("GET  /a HTTP/1.1\r\nHost: x\r\n{key}\r\n\r\n"),
        ),
        (
            "a tab in the request line",
            format!("GET\t/a HTTP/1.1\r\nHost: x\r\n{key}\r\n\r\n"),
        ),
        ("no version", format!("GET /a\r\nHost: x\r\n{key}\r\n\r\n")),
        ("http/0.9", "GET /a\r\n\r\n".to_owned()),
        (
            "http/1.2",
            format!("GET /a HTTP/1.2\r\nHost: x\r\n{key}\r\n\r\n"),
        ),
    ];
    for (name, request) in refused {
        h.upstream.clear();
        let answer = exchange(h, seen, request.as_bytes()).await;
        assert_eq!(answer.statuses(), [400], "{name}: {}", answer.text);
        assert!(answer.closed, "{name}: the connection stayed open");
        assert!(upstream_paths(h).is_empty(), "{name}");
        assert_eq!(h.upstream.connections(), 0, "{name}");
    }

    // For contrast: the same requests, well formed, go through. Empty lines before a request
    // are allowed (RFC 9112 §2.2) when they are CRLF.
    for (name, request) in [
        ("crlf everywhere", format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nX-Foo: a b\r\nConnection: close\r\n\r\n")),
        ("empty lines first", format!("\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nConnection: close\r\n\r\n")),
        ("tabs inside a value", format!("GET /a HTTP/1.1\r\nHost: x\r\n{key}\r\nX-Foo:\ta\tb\t\r\nConnection: close\r\n\r\n")),
        ("http/1.0", format!("GET /a HTTP/1.0\r\nHost: x\r\n{key}\r\n\r\n")),
    ] {
        h.upstream.clear();
        let answer = exchange(h, seen, request.as_bytes()).await;
        assert_eq!(answer.statuses(), [200], "{name}: {}", answer.text);
        assert_eq!(upstream_paths(h), ["/v1/a"], "{name}");
    }
}
