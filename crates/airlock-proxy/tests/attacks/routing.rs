//! Choosing the upstream from the request (SECURITY #1): absolute-form targets, a forged `Host`
//! (once, twice, with the upstream's own port), forwarding headers, `CONNECT`, and an HTTP/2
//! `:authority` that differs from `Host`. Each request either reaches the configured upstream
//! or is refused; a sinkhole standing in for the attacker's host gets no connection at all.

use airlock_testkit::h2raw::{self, END_HEADERS, END_STREAM, HEADERS};
use airlock_testkit::Sinkhole;

use crate::attacks::common::{exchange, target, upstream_paths, Seen, WAIT};
use crate::support::Harness;

pub async fn run(h: &Harness, seen: &mut Seen) {
    let s = target(h).await;
    let t = s.token.expose();
    let evil = Sinkhole::start().await.unwrap();
    let e = evil.host();
    let key = format!("x-api-key: {t}\r\nConnection: close");
    let upstream_host = format!("localhost:{}", h.upstream.addr().port());
    // (name, request, status, the path the upstream must see; None: nothing reaches it)
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("absolute-form http", format!("GET http://{e}/x HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 200, Some("/v1/x")),
        ("absolute-form https", format!("GET https://{e}/x?q=1 HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 200, Some("/v1/x?q=1")),
        ("absolute-form with user info", format!("GET http://user@{e}/x HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 200, Some("/v1/x")),
        ("absolute-form without a path", format!("GET http://{e} HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 200, Some("/v1/")),
        ("absolute-form, another scheme", format!("GET ftp://{e}/x HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 200, Some("/v1/x")),
        ("host names evil", format!("GET /x HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 200, Some("/v1/x")),
        ("two hosts", format!("GET /x HTTP/1.1\r\nHost: {upstream_host}\r\nHost: {e}\r\n{key}\r\n\r\n"), 200, Some("/v1/x")),
        ("no host", format!("GET /x HTTP/1.1\r\n{key}\r\n\r\n"), 200, Some("/v1/x")),
        ("forwarding headers", format!("GET /x HTTP/1.1\r\nHost: {e}\r\nX-Forwarded-Host: {e}\r\nForwarded: host={e};proto=http\r\nX-Original-URL: http://{e}/\r\n{key}\r\n\r\n"), 200, Some("/v1/x")),
        ("connect", format!("CONNECT {e} HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 405, None),
        ("asterisk-form", format!("OPTIONS * HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 400, None),
        ("authority-form with get", format!("GET {e} HTTP/1.1\r\nHost: {e}\r\n{key}\r\n\r\n"), 400, None),
    ];
    for (name, request, status, path) in cases {
        h.upstream.clear();
        let answer = exchange(h, seen, request.as_bytes()).await;
        assert_eq!(answer.statuses(), [status], "{name}: {}", answer.text);
        match path {
            Some(path) => {
                let seen_by_upstream = h.upstream.last_request().unwrap();
                assert_eq!(seen_by_upstream.path_and_query(), path, "{name}");
                assert_eq!(
                    seen_by_upstream.header_str("host").unwrap(),
                    upstream_host,
                    "{name}"
                );
                assert_eq!(seen_by_upstream.header_values("host").len(), 1, "{name}");
            }
            None => assert!(upstream_paths(h).is_empty(), "{name}"),
        }
    }

    // HTTP/2: `:authority` names evil, and so does a `host` header.
    h.upstream.clear();
    let block = h2raw::hpack(&[
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", e.as_bytes()),
        (b":path", b"/h2"),
        (b"host", e.as_bytes()),
        (b"x-api-key", t.as_bytes()),
    ]);
    let mut frames = h2raw::settings();
    frames.extend(h2raw::frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    let answer = h2raw::exchange(h.proxy, &frames, WAIT).await;
    seen.push(format!("{answer:?}"));
    assert!(answer.responded(1), "{answer:?}");
    assert_eq!(answer.status(1), Some(200), "{answer:?}");
    let seen_by_upstream = h.upstream.last_request().unwrap();
    assert_eq!(seen_by_upstream.path(), "/v1/h2");
    assert_eq!(seen_by_upstream.header_str("host").unwrap(), upstream_host);

    assert_eq!(evil.connections(), 0, "the attacker's host was contacted");
    assert!(evil.received().is_empty());
}
