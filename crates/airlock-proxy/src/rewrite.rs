//! The pure parts of the pipeline: finding the token, checking the target, and rewriting headers.
//!
//! Nothing here does IO, so every rule is a table test away (and a fuzz target away).
//!
//! - The token may sit in `Authorization: Bearer`, `x-api-key`, `api-key`, `x-goog-api-key` or
//!   `Proxy-Authorization: Bearer` (the headers the providers' SDKs put their key in). Every
//!   header value that contains `gws_` must be one of those, holding exactly a token; anywhere
//!   else (another header, a `Basic` credential, the URL) it would travel upstream, so the request
//!   is refused (`misplaced_token`).
//! - The target is used for its path and query only. An absolute-form target
//!   (`GET http://evil/x`) and HTTP/2's `:authority` are ignored: the upstream comes from the
//!   gateway config alone (SECURITY #1). Paths that could climb out of the endpoint's base path
//!   (dot segments, encoded dots, slashes or backslashes, empty segments) are refused (#10).
//! - Hop-by-hop headers, and every header the `Connection` header names, are removed before the
//!   credential is set, so `Connection: x-api-key` cannot remove the credential (#7).

use airlock_core::token::{check_checksum, check_shape};
use airlock_core::{SecretKind, TokenDigest};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use subtle::ConstantTimeEq;

use crate::error::ProxyError;
use crate::scrub::Needle;
use crate::state::{Credential, CustomValue, GatewayEntry, Material, SecretEntry};

/// Headers a token may arrive in, in this order. `true`: the value is `Bearer <token>`.
const CARRIERS: [(HeaderName, bool); 5] = [
    (header::AUTHORIZATION, true),
    (HeaderName::from_static("x-api-key"), false),
    (HeaderName::from_static("api-key"), false),
    (HeaderName::from_static("x-goog-api-key"), false),
    (header::PROXY_AUTHORIZATION, true),
];

/// Connection-specific headers (RFC 9110 §7.6.1), never forwarded in either direction. Header
/// names are lower case, so one `match` on the text answers for each name a message has.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The token a request presented: its shape checked, its checksum not yet (see
/// [`Presented::check_checksum`]).
pub(crate) struct Presented<'a> {
    text: &'a str,
    pub(crate) digest: TokenDigest,
}

impl Presented<'_> {
    /// The token's checksum, for a token the in-memory lookup did not find, before anything
    /// else is asked: a typo or a made-up token never costs a database query. A token that is
    /// found needs no check (its digest is stored, so it was minted), which spares every
    /// request a second SHA-256.
    pub(crate) fn check_checksum(&self) -> Result<(), ProxyError> {
        check_checksum(self.text).map_err(|_| ProxyError::MalformedToken)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// `Bearer <token>`, scheme case-insensitive.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| trim(rest))
}

/// Finds the token. Its shape (prefix, length, alphabet) is checked here, before it is hashed;
/// its checksum when the in-memory lookup misses ([`Presented::check_checksum`]).
pub(crate) fn identify(headers: &HeaderMap) -> Result<Presented<'_>, ProxyError> {
    let mut found: Option<&[u8]> = None;
    for (name, value) in headers {
        // A token in a header's name would travel upstream (lower-cased) with the name.
        if contains(name.as_str().as_bytes(), b"gws_") {
            return Err(ProxyError::MisplacedToken);
        }
        let bytes = value.as_bytes();
        if !contains(bytes, b"gws_") {
            continue;
        }
        let carrier = CARRIERS.iter().position(|(n, _)| n == name);
        let token = carrier
            .and_then(|i| {
                if CARRIERS[i].1 {
                    bearer(bytes)
                } else {
                    Some(trim(bytes))
                }
            })
            .filter(|t| t.starts_with(b"gws_"));
        let (Some(_), Some(token)) = (carrier, token) else {
            return Err(ProxyError::MisplacedToken);
        };
        match found {
            None => found = Some(token),
            // Two presented tokens are compared like secrets: they may be one.
            Some(first) if bool::from(first.ct_eq(token)) => {}
            Some(_) => return Err(ProxyError::ConflictingTokens),
        }
    }
    let token = found.ok_or(ProxyError::MissingToken)?;
    let text = std::str::from_utf8(token).map_err(|_| ProxyError::MalformedToken)?;
    check_shape(SecretKind::Gateway, text).map_err(|_| ProxyError::MalformedToken)?;
    Ok(Presented {
        text,
        digest: TokenDigest::of(text),
    })
}

/// Longest method forwarded. The longest registered method (`UPDATEREDIRECTREF`) has 17 bytes;
/// anything much longer is not a method but something smuggled in its place.
pub(crate) const MAX_METHOD: usize = 32;

/// Request-line checks: the method, the size of the head, the shape of the target.
pub(crate) fn check_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    max_header_bytes: usize,
) -> Result<(), ProxyError> {
    check_method(method)?;
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if size > max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    check_path(uri.path())?;
    let target = uri.path_and_query().map_or("", |pq| pq.as_str());
    if token_like(target.as_bytes()) {
        return Err(ProxyError::MisplacedToken);
    }
    Ok(())
}

/// The method is forwarded as sent, so it is checked like every other place a token could
/// hide: not a token, not longer than any real method, and not one that makes the upstream echo
/// the request back (`TRACE`, and IIS's `TRACK`: the echo would hold the injected credential).
/// Methods are case-sensitive, but some servers fold them, so these are refused in any case.
pub(crate) fn check_method(method: &Method) -> Result<(), ProxyError> {
    let m = method.as_str();
    if token_like(m.as_bytes()) {
        return Err(ProxyError::MisplacedToken);
    }
    if m.len() > MAX_METHOD {
        return Err(ProxyError::BadMethod);
    }
    if m.eq_ignore_ascii_case("CONNECT") {
        return Err(ProxyError::MethodNotAllowed(
            "CONNECT is not supported: call the data plane's URL directly",
        ));
    }
    if m.eq_ignore_ascii_case("TRACE") || m.eq_ignore_ascii_case("TRACK") {
        return Err(ProxyError::MethodNotAllowed(
            "TRACE and TRACK are not forwarded: the upstream would echo the credential back",
        ));
    }
    Ok(())
}

/// Whether bytes hold `gws_`, also once percent-decoded (`gw%73_`, `gws%5F`): an upstream that
/// decodes a target would see the token. The refusal (`misplaced_token`) and what the audit
/// trail records use this one test.
pub(crate) fn token_like(target: &[u8]) -> bool {
    let mut window = [0u8; 4];
    let mut i = 0;
    while i < target.len() {
        let mut b = target[i];
        if b == b'%' {
            let digit = |j: usize| target.get(j).and_then(|c| (*c as char).to_digit(16));
            if let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) {
                b = (hi * 16 + lo) as u8;
                i += 2;
            }
        }
        window.copy_within(1.., 0);
        window[3] = b;
        if &window == b"gws_" {
            return true;
        }
        i += 1;
    }
    false
}

/// A path is forwarded only if it means what it reads as, appended to the base path.
///
/// Servers disagree about what a path means: some decode it twice (`%252e` is `.`), IIS reads
/// `%u002e`, lenient UTF-8 decoders read overlong `%c0%ae` as `.`, best-fit mappings turn a
/// full-width `．` into `.`, and Tomcat and Spring drop `;params` from a segment before they
/// resolve dot segments (`..;` is `..`). So the checks run on the path as written and again on
/// every decoding of it; a path without `%`, `;` or non-ASCII bytes (nearly all of them) is
/// checked in one pass without allocating.
pub(crate) fn check_path(path: &str) -> Result<(), ProxyError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ProxyError::BadPath(
            "the request target must be a path starting with /",
        ));
    };
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') {
        return Err(ProxyError::BadPath("the path must not contain backslashes"));
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment == "." || segment == ".." {
            return Err(ProxyError::BadPath(
                "the path must not contain . or .. segments",
            ));
        }
        if segment.is_empty() && segments.peek().is_some() {
            return Err(ProxyError::BadPath(
                "the path must not contain empty segments (//)",
            ));
        }
    }
    if bytes
        .iter()
        .any(|b| matches!(b, b'%' | b';') || !b.is_ascii())
    {
        check_decoded(bytes)?;
    }
    Ok(())
}

/// How many rounds of percent-decoding are looked through (`%25252e` needs three).
const DECODE_ROUNDS: usize = 4;

const ENCODED: ProxyError = ProxyError::BadPath(
    "the path must not contain encoded dots, slashes, backslashes or nul, in any spelling",
);
const DOTS: ProxyError = ProxyError::BadPath(
    "the path must not contain . or .. segments, in any spelling (..; %252e full-width dots)",
);

/// The checks of [`check_path`] on what other servers may decode the path into.
fn check_decoded(raw: &[u8]) -> Result<(), ProxyError> {
    let mut current = std::borrow::Cow::Borrowed(raw);
    for _ in 0..DECODE_ROUNDS {
        match decode_once(&current)? {
            Some(next) => current = std::borrow::Cow::Owned(next),
            None => break,
        }
    }
    // Overlong or otherwise invalid UTF-8 (`%c0%ae`) is how lenient decoders are fooled.
    let text = std::str::from_utf8(&current)
        .map_err(|_| ProxyError::BadPath("the path must be valid UTF-8 once percent-decoded"))?;
    for segment in text.split('/') {
        // Tomcat and Spring drop `;params` before resolving dot segments.
        let name = segment.split(';').next().unwrap_or_default();
        let mut dots = 0;
        let mut other = false;
        for c in name.chars() {
            match fold(c) {
                '.' => dots += 1,
                '/' | '\\' => return Err(ENCODED),
                _ => other = true,
            }
        }
        if !other && (dots == 1 || dots == 2) {
            return Err(DOTS);
        }
    }
    Ok(())
}

/// Look-alikes that best-fit mappings and Unicode normalisation (NFKC) turn into `.`, `/` or
/// `\`.
fn fold(c: char) -> char {
    match c {
        '\u{ff0e}' | '\u{2024}' | '\u{fe52}' => '.',
        '\u{ff0f}' | '\u{2215}' | '\u{2044}' => '/',
        '\u{ff3c}' | '\u{fe68}' | '\u{2216}' => '\\',
        c => c,
    }
}

/// One round of decoding `%XX` and `%uXXXX`; `None` when there is nothing to decode. An escape
/// that decodes to `.`, `/`, `\` or NUL is refused here: the path would mean something else
/// to a server that decodes before it resolves.
fn decode_once(input: &[u8]) -> Result<Option<Vec<u8>>, ProxyError> {
    if !input.contains(&b'%') {
        return Ok(None);
    }
    let hex = |at: usize, n: usize| -> Option<u32> {
        let digits = input.get(at..at + n)?;
        digits
            .iter()
            .try_fold(0u32, |acc, d| Some(acc * 16 + (*d as char).to_digit(16)?))
    };
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if let Some(v) = hex(i + 1, 2) {
                if matches!(v, 0x2e | 0x2f | 0x5c | 0x00) {
                    return Err(ENCODED);
                }
                out.push(v as u8);
                i += 3;
                changed = true;
                continue;
            }
            if matches!(input.get(i + 1), Some(b'u' | b'U')) {
                if let Some(v) = hex(i + 2, 4) {
                    let c = char::from_u32(v).unwrap_or('\u{fffd}');
                    if matches!(fold(c), '.' | '/' | '\\' | '\0') {
                        return Err(ENCODED);
                    }
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    i += 6;
                    changed = true;
                    continue;
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    Ok(changed.then_some(out))
}

/// The upstream URL: endpoint scheme and authority, base path + request path + query.
pub(crate) fn upstream_uri(gateway: &GatewayEntry, target: &Uri) -> Result<Uri, ProxyError> {
    let path = target.path();
    let query = target.query();
    let mut pq = String::with_capacity(
        gateway.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
    );
    pq.push_str(&gateway.base_path);
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::builder()
        .scheme(gateway.scheme.clone())
        .authority(gateway.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| ProxyError::BadPath("the request target is not a valid path"))
}

/// `GET` with `Upgrade: websocket` and `Connection: upgrade`, over HTTP/1.1.
pub(crate) fn is_websocket(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    method == Method::GET
        && version == Version::HTTP_11
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| contains_token(v, "websocket"))
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| contains_token(v, "upgrade"))
}

fn contains_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Removes hop-by-hop headers and those the `Connection` header names. `keep_upgrade` keeps
/// `Upgrade` (a websocket handshake; `Connection: upgrade` is set again by the caller).
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.keys().any(|n| n == header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
    remove_where(headers, |name| {
        is_hop_by_hop(name) && !(keep_upgrade && name == header::UPGRADE)
    });
}

/// Removes every header whose name `doomed` picks. Most messages hold none: one pass over the
/// few names a message has finds them, where a `remove` of each candidate name would hash it.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let mut gone: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if doomed(name) && !gone.contains(name) {
            gone.push(name.clone());
        }
    }
    for name in gone {
        headers.remove(name);
    }
}

/// What a request needs from the state to be rewritten: loaded once, at its start.
pub(crate) struct Route {
    pub(crate) gateway: std::sync::Arc<GatewayEntry>,
    pub(crate) secret: std::sync::Arc<SecretEntry>,
    /// The secrets of secret-backed custom headers, in the order of `gateway.custom`.
    pub(crate) custom_secrets: Vec<std::sync::Arc<SecretEntry>>,
}

impl Route {
    fn material(&self) -> Result<&Material, ProxyError> {
        self.secret.material().ok_or(ProxyError::SecretUnavailable)
    }

    /// The exact byte strings to scrub from response headers.
    fn needles(&self) -> impl Iterator<Item = &Needle> {
        let basic = matches!(self.gateway.credential, Credential::Basic);
        let primary = self.secret.material().into_iter().flat_map(move |m| {
            let [raw, b64] = &m.needles;
            std::iter::once(raw).chain(basic.then_some(b64))
        });
        let custom = self
            .custom_secrets
            .iter()
            .filter_map(|s| s.material())
            .map(|m| &m.needles[0]);
        primary.chain(custom)
    }
}

/// Rewrites the client's headers into the upstream request's.
///
/// Every carrier header goes, whether it held the token or a value of the client's own, so that
/// the upstream sees exactly one credential: the one set here.
pub(crate) fn request_headers(
    headers: &mut HeaderMap,
    route: &Route,
    websocket: bool,
) -> Result<(), ProxyError> {
    strip_hop_by_hop(headers, websocket);
    remove_where(headers, |name| {
        CARRIERS.iter().any(|(carrier, _)| carrier == name)
    });
    let gateway = &route.gateway;
    headers.insert(header::HOST, gateway.host.clone());
    let credential = route
        .material()?
        .credential(&gateway.credential)
        .ok_or(ProxyError::SecretUnavailable)?;
    let name = match &gateway.credential {
        Credential::Header(name) => name.clone(),
        Credential::Bearer | Credential::Basic => header::AUTHORIZATION,
    };
    // `insert` replaces every value the client sent under that name.
    headers.insert(name, credential.clone());
    let mut secrets = route.custom_secrets.iter();
    for (name, value) in gateway.custom.iter() {
        let value = match value {
            CustomValue::Literal(v) => v.clone(),
            CustomValue::Secret(_) => secrets
                .next()
                .and_then(|s| s.material())
                .and_then(|m| m.raw.clone())
                .ok_or(ProxyError::SecretUnavailable)?,
        };
        headers.insert(name.clone(), value);
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    Ok(())
}

/// Cleans the upstream's response headers: hop-by-hop headers go, and so does any value that
/// contains an injected secret.
pub(crate) fn response_headers(headers: &mut HeaderMap, route: &Route, upgraded: bool) {
    strip_hop_by_hop(headers, upgraded);
    scrub(headers, route);
    if upgraded {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes every header value that contains an injected secret, and every header whose name
/// contains one (response headers and trailers). A tainted name is not logged: it is the secret.
pub(crate) fn scrub(headers: &mut HeaderMap, route: &Route) {
    let mut tainted_names: Vec<HeaderName> = Vec::new();
    let mut tainted_values: Vec<HeaderName> = Vec::new();
    for needle in route.needles() {
        for (name, value) in headers.iter() {
            if needle.found_in_name(name.as_str().as_bytes()) {
                if !tainted_names.contains(name) {
                    tainted_names.push(name.clone());
                }
            } else if needle.found_in(value.as_bytes()) && !tainted_values.contains(name) {
                tainted_values.push(name.clone());
            }
        }
    }
    if !tainted_names.is_empty() {
        tracing::warn!(
            headers = tainted_names.len(),
            "the upstream reflected an injected secret in a response header's name; removed it"
        );
        for name in &tainted_names {
            headers.remove(name);
        }
    }
    for name in tainted_values {
        if tainted_names.contains(&name) {
            continue;
        }
        tracing::warn!(
            header = %name,
            "the upstream reflected an injected secret in a response header; removed it"
        );
        let kept: Vec<HeaderValue> = headers
            .get_all(&name)
            .iter()
            .filter(|v| !route.needles().any(|n| n.found_in(v.as_bytes())))
            .cloned()
            .collect();
        headers.remove(&name);
        for value in kept {
            headers.append(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::BearerSecret;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn tokens_are_found_in_every_carrier() {
        let token = BearerSecret::generate(SecretKind::Gateway);
        let t = token.expose();
        let bearer = format!("Bearer {t}");
        let lower = format!("bearer   {t} ");
        for headers in [
            vec![("authorization", bearer.as_str())],
            vec![("Authorization", lower.as_str())],
            vec![("x-api-key", t)],
            vec![("api-key", t)],
            vec![("x-goog-api-key", t)],
            vec![("proxy-authorization", bearer.as_str())],
            vec![("x-api-key", t), ("authorization", bearer.as_str())],
            vec![("x-api-key", t), ("x-api-key", t)],
            vec![
                ("x-api-key", t),
                ("content-type", "application/json"),
                ("authorization", "Basic Zm9vOmJhcg=="),
            ],
        ] {
            let headers_map = map(&headers);
            let presented = identify(&headers_map).unwrap_or_else(|e| panic!("{headers:?}: {e}"));
            assert!(presented.digest.ct_eq(&token.digest()));
            presented.check_checksum().unwrap();
        }
    }

    #[test]
    fn tokens_that_are_refused() {
        let a = BearerSecret::generate(SecretKind::Gateway);
        let b = BearerSecret::generate(SecretKind::Gateway);
        let (a, b) = (a.expose(), b.expose());
        let mut bad_sum = a.to_owned().into_bytes();
        bad_sum[a.len() - 1] = if bad_sum[a.len() - 1] == b'a' {
            b'b'
        } else {
            b'a'
        };
        let bad_sum = String::from_utf8(bad_sum).unwrap();
        let api_key = BearerSecret::generate(SecretKind::ApiKey);
        let bearer_a = format!("Bearer {a}");
        let basic_a = format!("Basic {a}");
        let bearer_x = format!("Bearer {a}x");
        for (headers, code) in [
            (vec![], "missing_token"),
            (
                vec![("authorization", "Bearer sk-real-looking")],
                "missing_token",
            ),
            (vec![("x-api-key", api_key.expose())], "missing_token"),
            (vec![("x-api-key", bad_sum.as_str())], "malformed_token"),
            (vec![("x-api-key", "gws_short")], "malformed_token"),
            (
                vec![("authorization", bearer_x.as_str())],
                "malformed_token",
            ),
            (vec![("x-api-key", a), ("api-key", b)], "conflicting_tokens"),
            (
                vec![("authorization", bearer_a.as_str()), ("x-goog-api-key", b)],
                "conflicting_tokens",
            ),
            (vec![("authorization", basic_a.as_str())], "misplaced_token"),
            (
                vec![("x-api-key", a), ("cookie", &format!("s={b}"))],
                "misplaced_token",
            ),
            (vec![("x-custom", a)], "misplaced_token"),
            (
                vec![
                    ("x-api-key", a),
                    (&format!("x-{}", a.to_ascii_lowercase()), "1"),
                ],
                "misplaced_token",
            ),
        ] {
            // What `authenticate` does for a token the lookup does not find (none here is known):
            // the checksum.
            let err = identify(&map(&headers))
                .and_then(|presented| presented.check_checksum())
                .err()
                .unwrap_or_else(|| panic!("{headers:?} passed"));
            assert_eq!(err.describe().code.as_str(), code, "{headers:?}");
            assert!(!err.to_string().contains("gws_"));
        }
    }

    #[test]
    fn paths() {
        for ok in [
            "/",
            "/v1/chat/completions",
            "/v1/models/",
            "/a.b/c..d/.e",
            "/%41%20",
            "/files/a%2Dz",
            "/a;b/c;d=1",
            "/files/100%25",
            "/%ef%bc%8e.x",
            "/caf%c3%a9",
            "/v1/gws%5",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*",
            "a",
            "/..",
            "/../admin",
            "/a/../b",
            "/a/./b",
            "/.",
            "//",
            "//evil",
            "/a//b",
            "/%2e%2e/x",
            "/%2E./x",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a%00",
            "/x/%2e",
            "/..;/x",
            "/a/.;x=1/b",
            "/%252e%252e/x",
            "/%25252f",
            "/%u002e%u002e/x",
            "/a%u2215b",
            "/%c0%ae%c0%ae/x",
            "/%ff",
            "/%ef%bc%8e%ef%bc%8e/x",
            "/%ef%b9%92/x",
        ] {
            let err = check_path(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} passed"));
            assert_eq!(err.describe().code.as_str(), "bad_path", "{bad}");
        }
    }

    #[test]
    fn request_checks() {
        let h = HeaderMap::new();
        let ok: Uri = "/v1/x?key=1".parse().unwrap();
        assert!(check_request(&Method::POST, &ok, &h, 1024).is_ok());
        let absolute: Uri = "http://evil.example/v1/x".parse().unwrap();
        assert!(check_request(&Method::GET, &absolute, &h, 1024).is_ok());
        assert_eq!(
            check_request(&Method::CONNECT, &ok, &h, 1024)
                .unwrap_err()
                .describe()
                .code
                .as_str(),
            "method_not_allowed"
        );
        let big = map(&[("x-big", &"a".repeat(2000))]);
        assert_eq!(
            check_request(&Method::GET, &ok, &big, 1024)
                .unwrap_err()
                .describe()
                .code
                .as_str(),
            "headers_too_large"
        );
        for leaky in [
            "/v1/x?key=gws_abc",
            "/v1/gws_abc",
            "/v1/x?key=gws%5Fabc",
            "/v1/x?key=gws%5fabc",
            "/v1/x?key=%67%77%73%5f",
            "/v1/x?key=g%77s_",
        ] {
            let leaky: Uri = leaky.parse().unwrap();
            assert_eq!(
                check_request(&Method::GET, &leaky, &h, 1024)
                    .unwrap_err()
                    .describe()
                    .code
                    .as_str(),
                "misplaced_token",
                "{leaky}"
            );
        }
        for fine in [
            "/v1/gws",
            "/v1/x?gws=1",
            "/v1/GWS_x",
            "/v1/gws%5",
            "/v1/gws%",
            "/%5F",
        ] {
            let fine: Uri = fine.parse().unwrap();
            assert!(
                check_request(&Method::GET, &fine, &h, 1024).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn methods() {
        let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
        for (method, code) in [
            ("GET", ""),
            ("PROPFIND", ""),
            (&"M".repeat(MAX_METHOD), ""),
            (&"M".repeat(MAX_METHOD + 1), "bad_method"),
            ("CONNECT", "method_not_allowed"),
            ("TRACE", "method_not_allowed"),
            ("Track", "method_not_allowed"),
            ("gws_abc", "misplaced_token"),
            ("Xgw%73_", "misplaced_token"),
        ] {
            let got = check_method(&m(method))
                .err()
                .map(|e| e.describe().code.as_str());
            assert_eq!(got.unwrap_or(""), code, "{method}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "x-api-key, x-secret-thing"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-foo"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic eDp5"),
            ("x-api-key", "client"),
            ("x-secret-thing", "1"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
        let mut ws = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        strip_hop_by_hop(&mut ws, true);
        assert!(ws.contains_key("upgrade") && !ws.contains_key("connection"));
    }
}
