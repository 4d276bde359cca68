//! The canonical bytes of records that the control plane binds with a MAC under the master key
//! (`airlock_crypto::Keyring::bind`), so that the data plane can tell a record written through
//! the API from one changed in the database.
//!
//! A gateway config decides where a secret goes and how it is presented: its endpoint, its
//! auth mechanism and its custom headers. Its binding covers exactly those, plus the account and
//! the config's id (so a binding cannot be copied to another config). Name and description are
//! labels and stay unbound. Every field is length-prefixed, so no two different configs encode
//! to the same bytes.

use crate::auth::{AuthMechanism, CustomHeader, HeaderSource};
use crate::endpoint::Endpoint;
use crate::ids::{AccountId, GatewayConfigId};

/// The purpose of a gateway config's binding.
pub const GATEWAY_BINDING: &str = "airlock.gateway-config.v1";

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The bytes a gateway config's binding covers.
pub fn gateway_binding_message(
    account: &AccountId,
    id: &GatewayConfigId,
    endpoint: &Endpoint,
    auth: &AuthMechanism,
    custom_headers: &[CustomHeader],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    field(&mut out, account.as_str().as_bytes());
    field(&mut out, id.as_str().as_bytes());
    field(&mut out, endpoint.to_string().as_bytes());
    field(&mut out, auth.kind().as_bytes());
    field(&mut out, auth.key().unwrap_or("").as_bytes());
    out.extend_from_slice(&(custom_headers.len() as u32).to_be_bytes());
    for header in custom_headers {
        field(&mut out, header.name.as_bytes());
        match &header.source {
            HeaderSource::Literal(value) => {
                field(&mut out, b"value");
                field(&mut out, value.as_bytes());
            }
            HeaderSource::Secret(id) => {
                field(&mut out, b"secret");
                field(&mut out, id.as_str().as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SecretId;

    #[test]
    fn every_bound_field_changes_the_message() {
        let account = AccountId::generate();
        let id = GatewayConfigId::generate();
        let endpoint = Endpoint::parse("e", "https://api.example.com/v1").unwrap();
        let secret = SecretId::generate();
        let headers = vec![CustomHeader {
            name: "x-org".into(),
            source: HeaderSource::Literal("a".into()),
        }];
        let base =
            gateway_binding_message(&account, &id, &endpoint, &AuthMechanism::Bearer, &headers);
        let other_endpoint = Endpoint::parse("e", "https://evil.example.com/v1").unwrap();
        let other_port = Endpoint::parse("e", "https://api.example.com:8443/v1").unwrap();
        let other_path = Endpoint::parse("e", "https://api.example.com/v2").unwrap();
        let header_auth = AuthMechanism::Header {
            key: "x-api-key".into(),
        };
        let secret_header = vec![CustomHeader {
            name: "x-org".into(),
            source: HeaderSource::Secret(secret),
        }];
        let renamed = vec![CustomHeader {
            name: "x-orh".into(),
            source: HeaderSource::Literal("a".into()),
        }];
        for changed in [
            gateway_binding_message(
                &AccountId::generate(),
                &id,
                &endpoint,
                &AuthMechanism::Bearer,
                &headers,
            ),
            gateway_binding_message(
                &account,
                &GatewayConfigId::generate(),
                &endpoint,
                &AuthMechanism::Bearer,
                &headers,
            ),
            gateway_binding_message(
                &account,
                &id,
                &other_endpoint,
                &AuthMechanism::Bearer,
                &headers,
            ),
            gateway_binding_message(&account, &id, &other_port, &AuthMechanism::Bearer, &headers),
            gateway_binding_message(&account, &id, &other_path, &AuthMechanism::Bearer, &headers),
            gateway_binding_message(&account, &id, &endpoint, &AuthMechanism::Basic, &headers),
            gateway_binding_message(&account, &id, &endpoint, &header_auth, &headers),
            gateway_binding_message(&account, &id, &endpoint, &AuthMechanism::Bearer, &[]),
            gateway_binding_message(
                &account,
                &id,
                &endpoint,
                &AuthMechanism::Bearer,
                &secret_header,
            ),
            gateway_binding_message(&account, &id, &endpoint, &AuthMechanism::Bearer, &renamed),
        ] {
            assert_ne!(changed, base);
        }
        // The same config gives the same bytes.
        assert_eq!(
            gateway_binding_message(&account, &id, &endpoint, &AuthMechanism::Bearer, &headers),
            base
        );
    }
}
