//! TLS fixtures: a test certificate authority that issues server certificates for DNS names and
//! IP addresses, and rustls configs that trust it (and nothing else).
//!
//! Every config is built with an explicit `ring` crypto provider, so no process-wide default
//! provider has to be installed first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ALPN protocols a server offers by default: HTTP/2, then HTTP/1.1.
pub const ALPN_H2_HTTP11: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The `ring` crypto provider every config here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority that exists only for a test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA with a fresh ECDSA P-256 key.
    pub fn new() -> Self {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Airlock Test CA");
        name.push(DnType::OrganizationName, "airlock-testkit");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generating the test CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signing the test CA");
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes the CA certificate as `test-ca.pem` into `dir` (for `AIRLOCK_UPSTREAM_CA_FILE`,
    /// or `SSL_CERT_FILE` of a client) and returns the file's path.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, self.cert_pem())
            .unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
        path
    }

    /// A server certificate for `names` (DNS names, or IP addresses such as `127.0.0.1` and
    /// `::1`), signed by this CA, and its private key. The chain holds the leaf certificate only.
    pub fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = self.issue_leaf(names);
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key_der)
    }

    /// Like [`issue`](Self::issue), as PEM: (certificate, PKCS#8 private key).
    pub fn issue_pem(&self, names: &[&str]) -> (String, String) {
        let (cert, key) = self.issue_leaf(names);
        (cert.pem(), key.serialize_pem())
    }

    fn issue_leaf(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        assert!(!names.is_empty(), "a certificate needs at least one name");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap_or_else(|err| panic!("certificate names {names:?}: {err}"));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0]);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generating a certificate key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a certificate with the test CA");
        (cert, key)
    }

    /// A server config presenting a certificate for `names` issued by this CA, offering the
    /// given ALPN protocols (empty: none).
    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let (certs, key) = self.issue(names);
        server_config_from(certs, key, alpn)
    }

    /// The root store holding this CA alone.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der())
            .expect("adding the test CA to a root store");
        roots
    }

    /// A client config that trusts this CA and nothing else, with no ALPN (so HTTP/1.1).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_with_alpn(&[])
    }

    /// A client config that trusts this CA and nothing else, offering the given ALPN protocols
    /// (for HTTP/2 over TLS: `&[b"h2"]`).
    pub fn client_config_with_alpn(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A server config for a certificate chain and key, offering the given ALPN protocols.
pub fn server_config_from(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("building a server config from the certificate and key");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A server config with a self-signed certificate for `names`: issued by no CA that any client
/// trusts, so a verifying client must refuse it. Offers ALPN `h2` and `http/1.1`.
pub fn self_signed_server_config(names: &[&str]) -> Arc<ServerConfig> {
    let key = KeyPair::generate().expect("generating a certificate key");
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|err| panic!("certificate names {names:?}: {err}"));
    let cert = params
        .self_signed(&key)
        .expect("self-signing a certificate");
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    server_config_from(vec![cert.der().clone()], key_der, ALPN_H2_HTTP11)
}
