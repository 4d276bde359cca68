//! The request id: `x-request-id`, kept from the client when it is usable, else generated.
//!
//! It travels upstream, comes back to the client on every response (Airlock's own errors
//! included), and is written into the request's log line and audit event, so that one id ties
//! a client's report, Airlock's records and the upstream's logs together.
//!
//! A client's id is kept if it is one header of 1 to 128 visible ASCII characters that does not
//! contain `gws_` (such a request is refused anyway, and its id must not carry a token into the
//! logs). Otherwise one is generated like every other Airlock id (`airlock_core::ids::ulid_bytes`:
//! time, sequence and per-thread random bits, no system call).

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Where an upstream's own `x-request-id` goes when Airlock's replaces it in the response.
pub(crate) static X_UPSTREAM_REQUEST_ID: HeaderName =
    HeaderName::from_static("x-upstream-request-id");

const MAX_LEN: usize = 128;

/// The request's id: the client's, or a new one.
pub(crate) fn of(headers: &HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    match (values.next(), values.next()) {
        // Copied, not shared: a shared value would pin the connection's read buffer for as long
        // as the request lives (see `audit::Recorder`).
        (Some(value), None) if usable(value.as_bytes()) => {
            HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| generate())
        }
        _ => generate(),
    }
}

fn usable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id.iter().all(|b| (0x21..=0x7e).contains(b))
        && !id.windows(4).any(|w| w == b"gws_")
}

/// Puts the id on a response; an upstream's different id moves to `x-upstream-request-id`.
pub(crate) fn stamp(headers: &mut HeaderMap, id: &HeaderValue) {
    if let Some(theirs) = headers.insert(&X_REQUEST_ID, id.clone()) {
        if theirs != id {
            headers.insert(&X_UPSTREAM_REQUEST_ID, theirs);
        }
    }
}

fn generate() -> HeaderValue {
    HeaderValue::from_bytes(&airlock_core::ids::ulid_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_client_ids_are_kept() {
        let long = "a".repeat(128);
        let too_long = "a".repeat(129);
        for (sent, kept) in [
            (vec!["abc-123"], true),
            (vec!["req_01HZX!~"], true),
            (vec![long.as_str()], true),
            (vec![too_long.as_str()], false),
            (vec![""], false),
            (vec!["has space"], false),
            (vec!["tab\there"], false),
            (vec!["x-gws_abcdef"], false),
            (vec!["one", "two"], false),
        ] {
            let mut headers = HeaderMap::new();
            for v in &sent {
                headers.append(&X_REQUEST_ID, HeaderValue::from_str(v).unwrap());
            }
            let id = of(&headers);
            assert_eq!(id.to_str().unwrap() == sent[0], kept, "{sent:?}");
            assert!(usable(id.as_bytes()));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            &X_REQUEST_ID,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(of(&headers).len(), 26);
    }

    #[test]
    fn generated_ids_are_distinct_and_sort_by_time() {
        let ids: std::collections::HashSet<_> =
            (0..10_000).map(|_| of(&HeaderMap::new())).collect();
        assert_eq!(ids.len(), 10_000);
        let a = generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = generate();
        assert!(a.as_bytes()[..10] < b.as_bytes()[..10]);
    }

    #[test]
    fn stamping_keeps_the_upstreams_id_aside() {
        let ours = HeaderValue::from_static("ours");
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("req_theirs"));
        stamp(&mut headers, &ours);
        assert_eq!(headers[&X_REQUEST_ID], "ours");
        assert_eq!(headers[&X_UPSTREAM_REQUEST_ID], "req_theirs");
        let mut headers = HeaderMap::new();
        stamp(&mut headers, &ours);
        assert_eq!(headers[&X_REQUEST_ID], "ours");
        assert!(headers.get(&X_UPSTREAM_REQUEST_ID).is_none());
    }
}
