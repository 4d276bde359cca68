//! Bearer secrets Airlock mints: gateway tokens (`gws_`) and control-plane API keys (`alk_`).
//!
//! Format: prefix + 32 base62 characters from the system RNG (about 190 bits) + 6 base62
//! characters of checksum (the first 32 bits of SHA-256 over prefix and random part). The
//! checksum lets the data plane refuse typos and garbage without asking the database (it checks
//! it when its in-memory lookup misses), and lets secret scanners recognise leaked tokens. Only
//! the SHA-256 digest of the whole token is ever stored; the token itself is shown once, when it
//! is minted.

use std::fmt;

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::InvalidInput;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;

/// Which kind of bearer secret, and so which prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A gateway token handed to a sandbox.
    Gateway,
    /// A control-plane API key.
    ApiKey,
}

impl SecretKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Gateway => "gws_",
            Self::ApiKey => "alk_",
        }
    }

    pub fn token_len(self) -> usize {
        self.prefix().len() + RANDOM_LEN + CHECKSUM_LEN
    }
}

/// Why a presented bearer secret was refused before any lookup. Carries nothing of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("the token does not have the expected prefix")]
    Prefix,
    #[error("the token has the wrong length or characters")]
    Shape,
    #[error("the token's checksum does not match")]
    Checksum,
}

/// A minted or presented bearer secret. No `Debug` of the value, no `Display`, zeroized on drop.
///
/// No `PartialEq` either (SECURITY #14); compare digests with [`TokenDigest::ct_eq`]:
///
/// ```compile_fail
/// use airlock_core::{BearerSecret, SecretKind};
/// let (a, b) = (BearerSecret::generate(SecretKind::Gateway), BearerSecret::generate(SecretKind::Gateway));
/// let _ = a == b;
/// ```
///
/// ```
/// use airlock_core::{BearerSecret, SecretKind};
/// let (a, b) = (BearerSecret::generate(SecretKind::Gateway), BearerSecret::generate(SecretKind::Gateway));
/// assert!(!a.digest().ct_eq(&b.digest()));
/// ```
pub struct BearerSecret {
    kind: SecretKind,
    text: Zeroizing<String>,
}

impl BearerSecret {
    /// Mints a new one from the system RNG.
    pub fn generate(kind: SecretKind) -> Self {
        let rng = SystemRandom::new();
        let mut text = Zeroizing::new(String::with_capacity(kind.token_len()));
        text.push_str(kind.prefix());
        let mut buf = Zeroizing::new([0u8; 64]);
        while text.len() < kind.prefix().len() + RANDOM_LEN {
            // Without randomness no credential can be minted; this is not recoverable.
            if rng.fill(&mut buf[..]).is_err() {
                panic!("system random number generator failed");
            }
            // Rejection sampling keeps every character uniform: 248 = 4 × 62.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if text.len() == kind.prefix().len() + RANDOM_LEN {
                    break;
                }
                text.push(BASE62[usize::from(b % 62)] as char);
            }
        }
        let sum = checksum(&text);
        text.extend(sum.iter().map(|&c| char::from(c)));
        Self { kind, text }
    }

    /// Checks prefix, length, alphabet and checksum. Does no lookup and allocates only on success.
    pub fn parse(kind: SecretKind, presented: &str) -> Result<Self, TokenFormatError> {
        check_format(kind, presented)?;
        Ok(Self {
            kind,
            text: Zeroizing::new(presented.to_owned()),
        })
    }

    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The token text, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(&self.text)
    }
}

impl fmt::Debug for BearerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerSecret({}<redacted>)", self.kind.prefix())
    }
}

/// The format check alone, for callers that hash the presented bytes without copying them.
pub fn check_format(kind: SecretKind, presented: &str) -> Result<(), TokenFormatError> {
    check_shape(kind, presented)?;
    check_checksum(presented)
}

/// Prefix, length and alphabet: the checks that cost nothing.
pub fn check_shape(kind: SecretKind, presented: &str) -> Result<(), TokenFormatError> {
    let Some(rest) = presented.strip_prefix(kind.prefix()) else {
        return Err(TokenFormatError::Prefix);
    };
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TokenFormatError::Shape);
    }
    Ok(())
}

/// The checksum of a token whose shape [`check_shape`] accepted: one SHA-256 of the token's
/// body. A caller that looks the token up by its digest anyway may check this only when the
/// lookup misses: a token whose digest is stored was minted, so its checksum holds.
pub fn check_checksum(presented: &str) -> Result<(), TokenFormatError> {
    if presented.len() < CHECKSUM_LEN || !presented.is_char_boundary(presented.len() - CHECKSUM_LEN)
    {
        return Err(TokenFormatError::Shape);
    }
    let (body, sum) = presented.split_at(presented.len() - CHECKSUM_LEN);
    let expected = checksum(body);
    if bool::from(expected.ct_eq(sum.as_bytes())) {
        Ok(())
    } else {
        Err(TokenFormatError::Checksum)
    }
}

/// The last characters of a token: base62 of the first four bytes of the body's SHA-256.
fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let d = digest(&SHA256, body.as_bytes());
    let mut n = u64::from(u32::from_be_bytes([
        d.as_ref()[0],
        d.as_ref()[1],
        d.as_ref()[2],
        d.as_ref()[3],
    ]));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// SHA-256 of a bearer secret: what the store keeps and what lookups key on.
///
/// There is no `PartialEq` (SECURITY #14): digests are compared with [`TokenDigest::ct_eq`],
/// in constant time. This does not compile:
///
/// ```compile_fail
/// let (a, b) = (airlock_core::TokenDigest::of("gws_a"), airlock_core::TokenDigest::of("gws_b"));
/// let _ = a == b;
/// ```
///
/// and this does:
///
/// ```
/// let (a, b) = (airlock_core::TokenDigest::of("gws_a"), airlock_core::TokenDigest::of("gws_b"));
/// assert!(!a.ct_eq(&b));
/// ```
#[derive(Clone, Copy)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        let d = digest(&SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the stored lower-case hex form, and nothing else: one digest, one spelling.
    pub fn from_hex(text: &str) -> Option<Self> {
        // `from_str_radix` alone would also take a sign ("+6") and upper case.
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A non-secret 64-bit key for hash maps: the digest is uniformly distributed, so its first
    /// 8 bytes are too. The full digest is then compared in constant time.
    pub fn lookup_key(&self) -> u64 {
        let mut k = [0u8; 8];
        k.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(k)
    }

    /// Constant-time comparison of two digests.
    pub fn ct_eq(&self, other: &TokenDigest) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_and_differ() {
        let a = BearerSecret::generate(SecretKind::Gateway);
        let b = BearerSecret::generate(SecretKind::Gateway);
        assert!(a.expose().starts_with("gws_"));
        assert_eq!(a.expose().len(), SecretKind::Gateway.token_len());
        assert_ne!(a.expose(), b.expose());
        let parsed = BearerSecret::parse(SecretKind::Gateway, a.expose()).unwrap();
        assert!(parsed.digest().ct_eq(&a.digest()));
        assert!(!parsed.digest().ct_eq(&b.digest()));
        assert!(!format!("{a:?}").contains(&a.expose()[4..]));
    }

    #[test]
    fn malformed_tokens_are_refused_before_lookup() {
        let good = BearerSecret::generate(SecretKind::Gateway)
            .expose()
            .to_owned();
        let mut flipped = good.clone().into_bytes();
        let i = 10;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        let api_key = BearerSecret::generate(SecretKind::ApiKey)
            .expose()
            .to_owned();
        for (input, err) in [
            ("", TokenFormatError::Prefix),
            ("sk-abc", TokenFormatError::Prefix),
            ("GWS_abc", TokenFormatError::Prefix),
            (api_key.as_str(), TokenFormatError::Prefix),
            ("gws_", TokenFormatError::Shape),
            (&good[..good.len() - 1], TokenFormatError::Shape),
            (&format!("{good}x"), TokenFormatError::Shape),
            (
                &format!("{}-{}", &good[..20], &good[21..]),
                TokenFormatError::Shape,
            ),
            (flipped.as_str(), TokenFormatError::Checksum),
        ] {
            assert_eq!(
                check_format(SecretKind::Gateway, input).unwrap_err(),
                err,
                "{input}"
            );
            // The two halves the data plane runs apart: the shape refuses all but the checksum
            // case, which only the checksum refuses.
            let shape = check_shape(SecretKind::Gateway, input);
            if err == TokenFormatError::Checksum {
                shape.unwrap();
                assert_eq!(check_checksum(input).unwrap_err(), err, "{input}");
            } else {
                assert_eq!(shape.unwrap_err(), err, "{input}");
            }
        }
        check_shape(SecretKind::Gateway, &good).unwrap();
        check_checksum(&good).unwrap();
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = TokenDigest::of("gws_x");
        assert!(TokenDigest::from_hex(&d.to_hex()).unwrap().ct_eq(&d));
        assert!(TokenDigest::from_hex("zz").is_none());
        // Found by the `token` fuzz target: a sign inside a byte, and upper case, are not hex.
        let hex = d.to_hex();
        for bad in [
            format!("+{}", &hex[1..]),
            format!("{}+{}", &hex[..40], &hex[41..]),
            hex.to_ascii_uppercase(),
            format!(" {}", &hex[1..]),
        ] {
            assert!(TokenDigest::from_hex(&bad).is_none(), "{bad}");
        }
    }
}

/// What a scoped gateway token may do besides being valid (`create_gateway_token`'s
/// `allowed_methods` and `allowed_path_prefixes`): a request outside it is refused with 403
/// `token_scope`. An empty list allows everything of its kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenScope {
    /// Upper-case method names, compared exactly.
    pub methods: Vec<String>,
    /// Path prefixes (`/v1/messages`), matched on whole segments.
    pub path_prefixes: Vec<String>,
    /// Requests the token may make in all (`max_requests`), counted on every replica.
    pub max_requests: Option<u64>,
}

/// At most this many methods or path prefixes in a scope.
pub const MAX_SCOPE_ENTRIES: usize = 32;

impl TokenScope {
    /// Parses a scope; `None` when both lists are empty (an unscoped token).
    pub fn parse(
        methods: &[String],
        path_prefixes: &[String],
    ) -> Result<Option<TokenScope>, InvalidInput> {
        if methods.len() > MAX_SCOPE_ENTRIES {
            return Err(InvalidInput::new(
                "allowed_methods",
                format!("must have at most {MAX_SCOPE_ENTRIES} entries"),
            ));
        }
        if path_prefixes.len() > MAX_SCOPE_ENTRIES {
            return Err(InvalidInput::new(
                "allowed_path_prefixes",
                format!("must have at most {MAX_SCOPE_ENTRIES} entries"),
            ));
        }
        let mut scope = TokenScope::default();
        for (i, m) in methods.iter().enumerate() {
            let upper = m.to_ascii_uppercase();
            let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if upper.is_empty() || upper.len() > 32 || !upper.bytes().all(token_char) {
                return Err(InvalidInput::new(
                    format!("allowed_methods[{i}]"),
                    "must be an HTTP method such as GET or POST",
                ));
            }
            if !scope.methods.contains(&upper) {
                scope.methods.push(upper);
            }
        }
        for (i, p) in path_prefixes.iter().enumerate() {
            let field = format!("allowed_path_prefixes[{i}]");
            if !p.starts_with('/') || p.len() > 512 {
                return Err(InvalidInput::new(
                    field,
                    "must be a path starting with / of at most 512 characters",
                ));
            }
            let bad = p
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#')
                || p.split('/').any(|s| s == "." || s == "..")
                || p.contains("//")
                || p.contains('%');
            if bad {
                return Err(InvalidInput::new(
                    field,
                    "must be a plain path: no query, fragment, percent-encoding, dot or empty segments",
                ));
            }
            scope.path_prefixes.push(p.clone());
        }
        Ok((!scope.methods.is_empty() || !scope.path_prefixes.is_empty()).then_some(scope))
    }

    /// `scope` with a request budget: a scope of its own when it had none.
    pub fn with_max_requests(
        scope: Option<TokenScope>,
        max_requests: Option<u64>,
    ) -> Option<TokenScope> {
        match (scope, max_requests) {
            (scope, None) => scope,
            (scope, Some(n)) => Some(TokenScope {
                max_requests: Some(n),
                ..scope.unwrap_or_default()
            }),
        }
    }

    /// Whether a request with this method and path is within the scope. A prefix matches whole
    /// segments: `/v1/messages` allows `/v1/messages` and `/v1/messages/count_tokens`, not
    /// `/v1/messagesx`; a prefix ending in `/` allows what starts with it.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == method);
        let path_ok = self.path_prefixes.is_empty()
            || self.path_prefixes.iter().any(|p| {
                path.strip_prefix(p.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || p.ends_with('/')
                })
            });
        method_ok && path_ok
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn scopes_parse_and_match() {
        let s = |m: &[&str], p: &[&str]| {
            TokenScope::parse(
                &m.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                &p.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(s(&[], &[]).unwrap(), None);
        let scope = s(&["post", "POST"], &["/v1/messages", "/v1/models/"])
            .unwrap()
            .unwrap();
        assert_eq!(scope.methods, ["POST"]);
        for (method, path, ok) in [
            ("POST", "/v1/messages", true),
            ("POST", "/v1/messages/count_tokens", true),
            ("POST", "/v1/messagesx", false),
            ("POST", "/v1/models/claude", true),
            ("POST", "/v1/models", false),
            ("GET", "/v1/messages", false),
            ("post", "/v1/messages", false),
            ("POST", "/v2/messages", false),
        ] {
            assert_eq!(scope.allows(method, path), ok, "{method} {path}");
        }
        for (m, p, field) in [
            (vec!["GE T"], vec![], "allowed_methods[0]"),
            (vec![""], vec![], "allowed_methods[0]"),
            (vec![], vec!["v1"], "allowed_path_prefixes[0]"),
            (vec![], vec!["/a/../b"], "allowed_path_prefixes[0]"),
            (vec![], vec!["/ok", "/a?b"], "allowed_path_prefixes[1]"),
            (vec![], vec!["/a%2e"], "allowed_path_prefixes[0]"),
            (vec![], vec!["//a"], "allowed_path_prefixes[0]"),
        ] {
            let err = s(&m, &p).unwrap_err();
            assert_eq!(err.field, field, "{m:?} {p:?}");
        }
    }
}
