//! Paths that try to leave the endpoint's base path (SECURITY #10): dot segments, encoded dots
//! and slashes, doubled slashes, backslashes, NUL. Each is refused with 400 `bad_path`, or
//! forwarded exactly as checked (appended to the base path, byte for byte).

use crate::attacks::common::{exchange, target, upstream_paths, Seen};
use crate::support::Harness;

pub async fn run(h: &Harness, seen: &mut Seen) {
    let s = target(h).await;
    let t = s.token.expose();
    let refused = [
        "/../admin",
        "/v1/../../admin",
        "/a/..",
        "/a/.",
        "/./x",
        "/%2e%2e/admin",
        "/%2E%2E/admin",
        "/.%2e/admin",
        "/%2e./admin",
        "/a/%2e%2e",
        "/a%2fb",
        "/a%2F..%2Fb",
        "/..%2f..%2fadmin",
        "/a%5cb",
        "/a%5C..%5Cb",
        "//evil.example/x",
        "/a//b",
        "/a/",
        "/a%00b",
        "/a;/../b",
        "http://localhost/../admin",
        // Other spellings of dot segments: `;params` that Tomcat and Spring drop, double and
        // triple encoding, IIS's %u, overlong UTF-8, full-width and other look-alike dots and
        // slashes (best-fit mappings and NFKC turn them into the real ones).
        "/..;/admin",
        "/a/..;jsessionid=x/b",
        "/a/.;/b",
        "/a/%2e%2e;/b",
        "/%252e%252e/admin",
        "/a%252e%252e/../b",
        "/a/%252e%252e/b",
        "/%25252e%25252e/admin",
        "/a%252fb",
        "/a%255cb",
        "/%u002e%u002e/admin",
        "/%U002E./admin",
        "/a%u002fb",
        "/%c0%ae%c0%ae/admin",
        "/%c0%af",
        "/%e0%80%ae%e0%80%ae/admin",
        "/%ef%bc%8e%ef%bc%8e/admin",
        "/%e2%80%a4%e2%80%a4/admin",
        "/a%ef%bc%8fb",
        "/a%ef%bc%bcb",
        "/%ef%bc%8e%252e/x",
    ];
    for target in refused {
        h.upstream.clear();
        let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n");
        let answer = exchange(h, seen, request.as_bytes()).await;
        if target == "/a/" {
            // A trailing slash is not an empty segment in the middle: it goes through.
            assert_eq!(answer.statuses(), [200], "{target}: {}", answer.text);
            assert_eq!(upstream_paths(h), ["/v1/a/"]);
            continue;
        }
        assert_eq!(answer.statuses(), [400], "{target}: {}", answer.text);
        assert!(
            answer.text.contains("x-airlock-error: bad_path"),
            "{target}: {}",
            answer.text
        );
        assert!(upstream_paths(h).is_empty(), "{target}");
    }
    // Targets the HTTP parser itself refuses.
    for target in ["/a\\b", "/a b", "/a\x7fb"] {
        h.upstream.clear();
        let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n");
        let answer = exchange(h, seen, request.as_bytes()).await;
        assert_eq!(answer.statuses(), [400], "{target:?}: {}", answer.text);
        assert!(upstream_paths(h).is_empty(), "{target:?}");
    }
    // Forwarded exactly as checked: nothing is decoded or normalised on the way.
    for (target, upstream) in [
        ("/a..b/.c/d.", "/v1/a..b/.c/d."),
        ("/a;b/c;d=1", "/v1/a;b/c;d=1"),
        ("/files/100%25", "/v1/files/100%25"),
        ("/a%2541/%e2%82%ac", "/v1/a%2541/%e2%82%ac"),
        ("/%ef%bc%8e.x/y", "/v1/%ef%bc%8e.x/y"),
        ("/x?path=../../admin&u=%2F", "/v1/x?path=../../admin&u=%2F"),
        ("/%41%42", "/v1/%41%42"),
        ("/a?", "/v1/a?"),
        // A fragment is not part of what is sent.
        ("/a#/../../admin", "/v1/a"),
    ] {
        h.upstream.clear();
        let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n");
        let answer = exchange(h, seen, request.as_bytes()).await;
        assert_eq!(answer.statuses(), [200], "{target}: {}", answer.text);
        assert_eq!(upstream_paths(h), [upstream], "{target}");
    }
}
