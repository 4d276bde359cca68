//! Entry points for the fuzz targets and the property tests (`crates/airlock-fuzz`), which need
//! the request rewrite's private parts. Not an API: nothing outside tests calls it.
//!
//! [`check_rewrite`] runs one request's headers and target through the same functions the
//! pipeline runs (`check_request`, `identify`, `authorize`, `request_headers`, `upstream_uri`)
//! against a real state built from records, and panics if what would go upstream breaks a
//! promise of SECURITY #5–#7: when a request is forwarded, the upstream sees exactly one
//! credential header holding the real value, no `gws_` anywhere, no other carrier of a token,
//! no hop-by-hop header, the endpoint's `Host`, and the configured custom headers.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use airlock_core::binding::GATEWAY_BINDING;
use airlock_core::state::{DevboxRecord, GatewayRecord, SecretRecord, StateSnapshot, TokenRecord};
use airlock_core::{
    AccountId, AuthMechanism, BearerSecret, CustomHeader, DevboxId, Endpoint, GatewayConfigId,
    HeaderSource, SecretId, SecretKind, SourceAddresses, TokenId,
};
use airlock_crypto::{Keyring, MasterKey, SecretContext};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::rewrite;
use crate::state::{self, State};

/// The real upstream key in every case.
pub const SECRET: &str = "sk-fuzz-real-upstream-key-0042";
/// The value of the secret-backed custom header.
pub const CUSTOM_SECRET: &str = "org-fuzz-custom-secret-7";

/// How the gateway of a case applies its credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Bearer,
    Basic,
    /// `x-api-key`, which is also a token carrier.
    XApiKey,
    /// `api-key`, also a carrier.
    ApiKey,
    /// A header no client sends a token in.
    Custom,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Bearer,
        Mechanism::Basic,
        Mechanism::XApiKey,
        Mechanism::ApiKey,
        Mechanism::Custom,
    ];

    fn auth(self) -> AuthMechanism {
        let header = |key: &str| AuthMechanism::Header { key: key.into() };
        match self {
            Mechanism::Bearer => AuthMechanism::Bearer,
            Mechanism::Basic => AuthMechanism::Basic,
            Mechanism::XApiKey => header("x-api-key"),
            Mechanism::ApiKey => header("api-key"),
            Mechanism::Custom => header("x-upstream-auth"),
        }
    }

    /// The credential header's name and the exact value the upstream must see.
    pub fn expected(self) -> (&'static str, String) {
        use base64::Engine as _;
        match self {
            Mechanism::Bearer => ("authorization", format!("Bearer {SECRET}")),
            Mechanism::Basic => (
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(SECRET)
                ),
            ),
            Mechanism::XApiKey => ("x-api-key", SECRET.to_owned()),
            Mechanism::ApiKey => ("api-key", SECRET.to_owned()),
            Mechanism::Custom => ("x-upstream-auth", SECRET.to_owned()),
        }
    }
}

/// A state with one token per mechanism, all bound to 127.0.0.1, plus a second well-formed
/// token that is not known.
pub struct Bench {
    state: State,
    tokens: Vec<(Mechanism, BearerSecret)>,
    stranger: BearerSecret,
}

/// The bench, built once per process.
pub fn bench() -> &'static Bench {
    static BENCH: OnceLock<Bench> = OnceLock::new();
    BENCH.get_or_init(Bench::new)
}

#[allow(clippy::expect_used)] // A bench that cannot be built is a bug in this file.
impl Bench {
    fn new() -> Bench {
        let keyring =
            Arc::new(Keyring::new(vec![MasterKey::generate().expect("rng")]).expect("one key"));
        let account = AccountId::generate();
        let seal = |id: &SecretId, value: &str| SecretRecord {
            id: id.clone(),
            account_id: account.clone(),
            version: 1,
            sealed: keyring
                .seal(
                    &SecretContext {
                        account_id: account.as_str(),
                        secret_id: id.as_str(),
                        version: 1,
                    },
                    value.as_bytes(),
                )
                .expect("seal"),
        };
        let secret_id = SecretId::generate();
        let custom_id = SecretId::generate();
        let devbox = DevboxRecord {
            id: DevboxId::generate(),
            account_id: account.clone(),
            running: true,
            source_addresses: SourceAddresses::parse("s", &["127.0.0.1"]).expect("address"),
        };
        let mut snapshot = StateSnapshot {
            tokens: Vec::new(),
            devboxes: vec![devbox.clone()],
            gateways: Vec::new(),
            secrets: vec![seal(&secret_id, SECRET), seal(&custom_id, CUSTOM_SECRET)],
        };
        let mut tokens = Vec::new();
        for mechanism in Mechanism::ALL {
            let mut gateway = GatewayRecord {
                id: GatewayConfigId::generate(),
                account_id: account.clone(),
                endpoint: Endpoint::parse("e", "https://api.example.com/v1").expect("endpoint"),
                auth: mechanism.auth(),
                custom_headers: vec![
                    CustomHeader {
                        name: "anthropic-version".into(),
                        source: HeaderSource::Literal("2023-06-01".into()),
                    },
                    CustomHeader {
                        name: "x-org".into(),
                        source: HeaderSource::Secret(custom_id.clone()),
                    },
                ],
                binding: None,
                llm: Default::default(),
                router: None,
            };
            gateway.binding = Some(
                keyring
                    .bind(GATEWAY_BINDING, &gateway.binding_message())
                    .expect("bind"),
            );
            let token = BearerSecret::generate(SecretKind::Gateway);
            snapshot.tokens.push(TokenRecord {
                id: TokenId::generate(),
                digest: token.digest(),
                account_id: account.clone(),
                devbox_id: devbox.id.clone(),
                gateway_config_id: gateway.id.clone(),
                secret_id: Some(secret_id.clone()),
                expires_at_ms: None,
                scope: None,
                revoked: false,
            });
            snapshot.gateways.push(gateway);
            tokens.push((mechanism, token));
        }
        let state = State::new(keyring.clone());
        state.replace(state::build(&keyring, &snapshot), state.version());
        Bench {
            state,
            tokens,
            stranger: BearerSecret::generate(SecretKind::Gateway),
        }
    }

    /// The valid token of the gateway with `mechanism`.
    pub fn token(&self, mechanism: Mechanism) -> &str {
        self.tokens
            .iter()
            .find(|(m, _)| *m == mechanism)
            .map_or("", |(_, t)| t.expose())
    }

    /// A well-formed token that the state does not know.
    pub fn stranger(&self) -> &str {
        self.stranger.expose()
    }
}

/// What happened to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refused with this code; nothing would go upstream.
    Refused(&'static str),
    /// Forwarded; the invariants held.
    Forwarded,
}

/// `headers` as a header map; entries that are not valid names or values are dropped (hyper
/// would have refused the request).
pub fn header_map(headers: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    map
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs a request through the rewrite for the gateway with `mechanism`, and panics if what
/// would go upstream breaks a promise.
pub fn check_rewrite(mechanism: Mechanism, target: &str, headers: &HeaderMap) -> Verdict {
    let bench = bench();
    let Ok(uri) = target.parse::<Uri>() else {
        return Verdict::Refused("bad_target");
    };
    if let Err(err) = rewrite::check_request(&Method::POST, &uri, headers, 64 * 1024) {
        return Verdict::Refused(err.describe().code.as_str());
    }
    let presented = match rewrite::identify(headers) {
        Ok(presented) => presented,
        Err(err) => return Verdict::Refused(err.describe().code.as_str()),
    };
    // Whatever was accepted was presented in a carrier, whole: no other header, name or value,
    // holds `gws_`.
    let Some(token) = bench.state.lookup(&presented.digest) else {
        if let Err(err) = presented.check_checksum() {
            return Verdict::Refused(err.describe().code.as_str());
        }
        return Verdict::Refused("unknown_token");
    };
    let route = match crate::pipeline::authorize(&token, IpAddr::V4(Ipv4Addr::LOCALHOST)) {
        Ok(route) => route,
        Err(err) => return Verdict::Refused(err.describe().code.as_str()),
    };
    // Which gateway the token belongs to decides the expected credential.
    let mechanism = bench
        .tokens
        .iter()
        .find(|(_, t)| t.digest().ct_eq(&presented.digest))
        .map_or(mechanism, |(m, _)| *m);
    let mut out = headers.clone();
    if let Err(err) = rewrite::request_headers(&mut out, &route, false) {
        return Verdict::Refused(err.describe().code.as_str());
    }
    let upstream = match rewrite::upstream_uri(&route.gateway, &uri) {
        Ok(u) => u,
        Err(err) => return Verdict::Refused(err.describe().code.as_str()),
    };

    let (credential, expected) = mechanism.expected();
    let values: Vec<&[u8]> = out
        .get_all(credential)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    assert_eq!(
        values,
        vec![expected.as_bytes()],
        "{mechanism:?}: the credential header is not exactly the real value"
    );
    for (name, value) in &out {
        assert!(
            !contains(name.as_str().as_bytes(), b"gws_") && !contains(value.as_bytes(), b"gws_"),
            "{mechanism:?}: a token goes upstream in {name}"
        );
        for carrier in [
            "authorization",
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "proxy-authorization",
        ] {
            assert!(
                name.as_str() != carrier || carrier == credential,
                "{mechanism:?}: the carrier {carrier} goes upstream"
            );
        }
        for hop in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(name.as_str() != hop, "{mechanism:?}: {hop} goes upstream");
        }
    }
    assert_eq!(
        out.get_all("host").iter().collect::<Vec<_>>(),
        ["api.example.com"],
        "{mechanism:?}: Host"
    );
    assert_eq!(
        out.get_all("anthropic-version").iter().collect::<Vec<_>>(),
        ["2023-06-01"]
    );
    assert_eq!(
        out.get_all("x-org").iter().collect::<Vec<_>>(),
        [CUSTOM_SECRET]
    );
    let text = upstream.to_string();
    assert!(
        text.starts_with("https://api.example.com/v1/"),
        "{mechanism:?}: upstream {text}"
    );
    assert!(!contains(text.as_bytes(), b"gws_"), "{text}");
    Verdict::Forwarded
}

/// The fuzz target's input format: the first byte picks the mechanism; the rest is lines, the
/// first being the target and each further one a header `name:value`. In names and values,
/// `$T` becomes the gateway's valid token, `$U` a well-formed unknown token, and `$L` the valid
/// token in lower case, so that the fuzzer moves real tokens around.
pub fn rewrite_input(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mechanism = Mechanism::ALL[usize::from(first) % Mechanism::ALL.len()];
    let bench = bench();
    let token = bench.token(mechanism);
    let expand = |bytes: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes.get(i..i + 2) {
                Some(b"$T") => out.extend_from_slice(token.as_bytes()),
                Some(b"$U") => out.extend_from_slice(bench.stranger().as_bytes()),
                Some(b"$L") => out.extend_from_slice(token.to_ascii_lowercase().as_bytes()),
                _ => {
                    out.push(bytes[i]);
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        out
    };
    let mut lines = rest.split(|b| *b == b'\n');
    let target = String::from_utf8_lossy(&expand(lines.next().unwrap_or_default())).into_owned();
    let headers: Vec<(Vec<u8>, Vec<u8>)> = lines
        .map(|line| match line.iter().position(|b| *b == b':') {
            Some(i) => (expand(&line[..i]), expand(&line[i + 1..])),
            None => (expand(line), Vec::new()),
        })
        .collect();
    let map = header_map(&headers);
    let _ = check_rewrite(mechanism, &target, &map);
}
