//! Malformed HTTP/2 (SECURITY #9), as raw frames: bodies longer or shorter than their
//! `content-length`, connection-specific headers, upper-case names, misplaced or unknown
//! pseudo-headers, and frames whose length field lies. Each stream is reset (or the connection
//! closed with GOAWAY) and the upstream never receives a whole request.

use airlock_testkit::h2raw::{
    self, request_block, CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PADDED, SETTINGS,
};

use crate::attacks::common::{target, Seen, WAIT};
use crate::support::Harness;

pub async fn run(h: &Harness, seen: &mut Seen) {
    let s = target(h).await;
    let t = s.token.expose();
    let key = ("x-api-key", t);
    let post = |extra: &[(&str, &str)]| {
        let mut fields = vec![key];
        fields.extend_from_slice(extra);
        request_block("POST", "/h2", &fields)
    };
    let headers = |block: &[u8], flags: u8| h2raw::frame(HEADERS, END_HEADERS | flags, 1, block);
    let data = |payload: &[u8], flags: u8| h2raw::frame(DATA, flags, 1, payload);
    let cat = |parts: Vec<Vec<u8>>| -> Vec<u8> { parts.concat() };
    let raw_fields = |fields: &[(&[u8], &[u8])]| {
        let mut all: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"localhost"),
            (b":path", b"/h2"),
            (b"x-api-key", t.as_bytes()),
        ];
        all.extend_from_slice(fields);
        h2raw::hpack(&all)
    };
    let cl10 = post(&[("content-length", "10")]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "body longer than content-length",
            cat(vec![headers(&cl10, 0), data(&[b'a'; 20], END_STREAM)]),
        ),
        (
            "body shorter than content-length",
            cat(vec![headers(&cl10, 0), data(b"abc", END_STREAM)]),
        ),
        (
            "two data frames past content-length",
            cat(vec![
                headers(&cl10, 0),
                data(&[b'a'; 6], 0),
                data(&[b'b'; 6], END_STREAM),
            ]),
        ),
        ("content-length with no body", headers(&cl10, END_STREAM)),
        (
            "transfer-encoding",
            headers(&post(&[("transfer-encoding", "chunked")]), END_STREAM),
        ),
        (
            "connection",
            headers(&post(&[("connection", "keep-alive")]), END_STREAM),
        ),
        (
            "keep-alive",
            headers(&post(&[("keep-alive", "timeout=5")]), END_STREAM),
        ),
        (
            "proxy-connection",
            headers(&post(&[("proxy-connection", "keep-alive")]), END_STREAM),
        ),
        (
            "upgrade",
            headers(&post(&[("upgrade", "websocket")]), END_STREAM),
        ),
        (
            "te other than trailers",
            headers(&post(&[("te", "gzip")]), END_STREAM),
        ),
        (
            "upper-case name",
            headers(&raw_fields(&[(b"X-Evil", b"1")]), END_STREAM),
        ),
        (
            "upper-case token header",
            headers(
                &h2raw::hpack(&[
                    (b":method", b"GET"),
                    (b":scheme", b"http"),
                    (b":authority", b"localhost"),
                    (b":path", b"/h2"),
                    (b"X-Api-Key", t.as_bytes()),
                ]),
                END_STREAM,
            ),
        ),
        (
            "pseudo-header after a field",
            headers(&raw_fields(&[(b":authority", b"evil.example")]), END_STREAM),
        ),
        (
            "unknown pseudo-header",
            headers(&raw_fields(&[(b":evil", b"1")]), END_STREAM),
        ),
        (
            "two paths",
            headers(
                &h2raw::hpack(&[
                    (b":method", b"GET"),
                    (b":scheme", b"http"),
                    (b":path", b"/a"),
                    (b":path", b"/b"),
                    (b"x-api-key", t.as_bytes()),
                ]),
                END_STREAM,
            ),
        ),
        (
            "no path",
            headers(
                &h2raw::hpack(&[
                    (b":method", b"GET"),
                    (b":scheme", b"http"),
                    (b"x-api-key", t.as_bytes()),
                ]),
                END_STREAM,
            ),
        ),
        (
            "a response pseudo-header",
            headers(&raw_fields(&[(b":status", b"200")]), END_STREAM),
        ),
        (
            "nul in a value",
            headers(&raw_fields(&[(b"x-evil", b"a\0b")]), END_STREAM),
        ),
        (
            "newline in a value",
            headers(
                &raw_fields(&[(b"x-evil", b"a\r\nx-injected: 1")]),
                END_STREAM,
            ),
        ),
        (
            "headers frame claims more than it holds",
            cat(vec![h2raw::frame_claiming(
                60_000,
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &raw_fields(&[]),
            )]),
        ),
        (
            "data frame over the maximum frame size",
            cat(vec![
                headers(&post(&[]), 0),
                h2raw::frame(DATA, END_STREAM, 1, &[b'a'; 16_385]),
            ]),
        ),
        (
            "padding longer than the frame",
            h2raw::frame(
                HEADERS,
                END_HEADERS | END_STREAM | PADDED,
                1,
                &[&[200u8][..], &raw_fields(&[])].concat(),
            ),
        ),
        (
            "header block cut in the middle",
            headers(&raw_fields(&[])[..20], END_STREAM),
        ),
        (
            "continuation without headers",
            h2raw::frame(CONTINUATION, END_HEADERS, 1, &raw_fields(&[])),
        ),
        (
            "data on stream 0",
            cat(vec![
                headers(&post(&[]), 0),
                h2raw::frame(DATA, END_STREAM, 0, b"abc"),
            ]),
        ),
        (
            "settings of a bad length",
            cat(vec![
                h2raw::frame(SETTINGS, 0, 0, &[0, 1, 0]),
                headers(&raw_fields(&[]), END_STREAM),
            ]),
        ),
        (
            "even stream id",
            h2raw::frame(HEADERS, END_HEADERS | END_STREAM, 2, &raw_fields(&[])),
        ),
    ];
    for (name, frames) in cases {
        h.upstream.clear();
        let mut all = h2raw::settings();
        all.extend(frames);
        let answer = h2raw::exchange(h.proxy, &all, WAIT).await;
        seen.push(format!("{name}: {answer:?}"));
        // Refused: the stream reset, the connection closed with an error, or a 4xx answer.
        let refused = answer.reset(1).is_some()
            || answer.goaway().is_some_and(|code| code != 0)
            || answer.status(1).is_some_and(|s| (400..500).contains(&s));
        assert!(refused, "{name}: not refused: {answer:?}");
        assert!(
            !answer.responded(1) || answer.status(1).is_some_and(|s| s >= 400),
            "{name}: answered as a success: {answer:?}"
        );
        for r in h.upstream.requests() {
            assert!(
                !r.body_complete,
                "{name}: the upstream received a whole request"
            );
            assert!(
                r.body.len() <= 10,
                "{name}: more than content-length went upstream"
            );
        }
    }

    // For contrast, the same frames well formed are answered and forwarded whole.
    h.upstream.clear();
    let mut all = h2raw::settings();
    all.extend(headers(&cl10, 0));
    all.extend(data(b"0123456789", END_STREAM));
    let answer = h2raw::exchange(h.proxy, &all, WAIT).await;
    assert_eq!(answer.status(1), Some(200), "{answer:?}");
    let r = h.upstream.last_request().unwrap();
    assert_eq!(r.body_str(), "0123456789");
    assert!(r.body_complete);
}
