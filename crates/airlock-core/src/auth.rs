//! How a credential is applied upstream: the auth mechanism and custom headers.

use crate::error::InvalidInput;
use crate::ids::SecretId;

/// At most this many custom headers per gateway config (the contract's limit).
pub const MAX_CUSTOM_HEADERS: usize = 8;
/// Longest literal custom header value.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// Header names a gateway config may not set, because they decide framing or routing, or are
/// hop-by-hop and would be stripped or misread by the next hop.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// The primary credential's placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMechanism {
    /// `Authorization: Bearer <secret>`
    Bearer,
    /// `<key>: <secret>`, with `key` a lower-cased header name.
    Header { key: String },
    /// `Authorization: Basic base64(<secret>)`; the secret is `user:pass`.
    Basic,
}

impl AuthMechanism {
    /// Parses the wire form `{"type", "key"?}`; `key` is required for `header` only.
    pub fn parse(field: &str, kind: &str, key: Option<&str>) -> Result<Self, InvalidInput> {
        match (kind, key) {
            ("bearer", None) => Ok(Self::Bearer),
            ("basic", None) => Ok(Self::Basic),
            ("bearer" | "basic", Some(_)) => Err(InvalidInput::new(
                format!("{field}.key"),
                format!("is not allowed for type {kind}"),
            )),
            ("header", Some(key)) => Ok(Self::Header {
                key: parse_header_name(&format!("{field}.key"), key)?,
            }),
            ("header", None) => Err(InvalidInput::new(
                format!("{field}.key"),
                "is required for type header",
            )),
            _ => Err(InvalidInput::new(
                format!("{field}.type"),
                "must be one of bearer, header, basic",
            )),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Header { .. } => "header",
            Self::Basic => "basic",
        }
    }

    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Header { key } => Some(key),
            _ => None,
        }
    }

    /// The name of the header that carries the credential upstream.
    pub fn header_name(&self) -> &str {
        match self {
            Self::Header { key } => key,
            Self::Bearer | Self::Basic => "authorization",
        }
    }
}

/// Parses a header name for a header Airlock sets: an RFC 9110 token, not reserved; lower-cased.
pub fn parse_header_name(field: &str, name: &str) -> Result<String, InvalidInput> {
    if name.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() || name.len() > 256 {
        return Err(InvalidInput::new(field, "must be a valid HTTP header name"));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(InvalidInput::new(
            field,
            format!("{lower} is a reserved header and cannot be set"),
        ));
    }
    Ok(lower)
}

/// Where a custom header's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderSource {
    /// A literal, stored in plaintext and shown on reads.
    Literal(String),
    /// A secret of the same account; only its id is stored and shown.
    Secret(SecretId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomHeader {
    pub name: String,
    pub source: HeaderSource,
}

/// Checks a literal header value: visible ASCII, spaces and tabs, bounded.
pub fn parse_header_value(field: &str, value: &str) -> Result<String, InvalidInput> {
    if value.len() > MAX_HEADER_VALUE {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {MAX_HEADER_VALUE} bytes"),
        ));
    }
    if http::HeaderValue::from_str(value).is_err() || value.bytes().any(|b| b >= 0x7f) {
        return Err(InvalidInput::new(
            field,
            "must be printable ASCII without line breaks",
        ));
    }
    Ok(value.to_owned())
}

/// Checks a whole custom header list (names unique, at most [`MAX_CUSTOM_HEADERS`], not the
/// credential header).
pub fn check_custom_headers(
    field: &str,
    auth: &AuthMechanism,
    headers: &[CustomHeader],
) -> Result<(), InvalidInput> {
    if headers.len() > MAX_CUSTOM_HEADERS {
        return Err(InvalidInput::new(
            field,
            format!("must have at most {MAX_CUSTOM_HEADERS} entries"),
        ));
    }
    for (i, h) in headers.iter().enumerate() {
        if headers[..i].iter().any(|prev| prev.name == h.name) {
            return Err(InvalidInput::new(
                format!("{field}[{i}].name"),
                "appears twice",
            ));
        }
        if h.name == auth.header_name() {
            return Err(InvalidInput::new(
                format!("{field}[{i}].name"),
                "is the header the auth mechanism sets; it cannot also be a custom header",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms() {
        assert_eq!(
            AuthMechanism::parse("auth_mechanism", "bearer", None),
            Ok(AuthMechanism::Bearer)
        );
        assert_eq!(
            AuthMechanism::parse("auth_mechanism", "header", Some("X-Api-Key")),
            Ok(AuthMechanism::Header {
                key: "x-api-key".into()
            })
        );
        for (kind, key, field, msg) in [
            ("bearer", Some("x"), "auth_mechanism.key", "not allowed"),
            ("basic", Some("x"), "auth_mechanism.key", "not allowed"),
            ("header", None, "auth_mechanism.key", "required"),
            ("header", Some(""), "auth_mechanism.key", "empty"),
            (
                "header",
                Some("bad header"),
                "auth_mechanism.key",
                "valid HTTP header",
            ),
            ("header", Some("Host"), "auth_mechanism.key", "reserved"),
            (
                "header",
                Some("transfer-encoding"),
                "auth_mechanism.key",
                "reserved",
            ),
            ("oauth", None, "auth_mechanism.type", "one of"),
        ] {
            let err = AuthMechanism::parse("auth_mechanism", kind, key).unwrap_err();
            assert_eq!(err.field, field, "{kind} {key:?}");
            assert!(err.message.contains(msg), "{kind} {key:?}: {}", err.message);
        }
    }

    #[test]
    fn header_values_and_lists() {
        assert!(parse_header_value("v", "abc def\t1").is_ok());
        assert!(parse_header_value("v", "a\r\nb").is_err());
        assert!(parse_header_value("v", "é").is_err());
        assert!(parse_header_value("v", &"x".repeat(MAX_HEADER_VALUE + 1)).is_err());
        let h = |n: &str| CustomHeader {
            name: n.into(),
            source: HeaderSource::Literal("v".into()),
        };
        let auth = AuthMechanism::Header {
            key: "x-api-key".into(),
        };
        assert!(check_custom_headers("custom_headers", &auth, &[h("a"), h("b")]).is_ok());
        assert_eq!(
            check_custom_headers("custom_headers", &auth, &[h("a"), h("a")])
                .unwrap_err()
                .field,
            "custom_headers[1].name"
        );
        assert!(check_custom_headers("custom_headers", &auth, &[h("x-api-key")]).is_err());
        let nine: Vec<_> = (0..9).map(|i| h(&format!("h{i}"))).collect();
        assert!(check_custom_headers("custom_headers", &auth, &nine)
            .unwrap_err()
            .message
            .contains("at most 8"));
    }
}
