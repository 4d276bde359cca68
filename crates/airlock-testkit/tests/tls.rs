//! TLS fixtures: the CA's PEM is readable by other tools, and issued certificates carry the
//! names asked for.

// Test code panics with the value on failure: that is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_testkit::tls::TestCa;

#[test]
fn ca_pem_round_trips_and_certificates_verify() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let dir = tempfile::tempdir()?;
    let path = ca.write_pem(dir.path());
    let pem = std::fs::read(&path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>()?;
    assert_eq!(certs, vec![ca.cert_der()]);
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));

    let (chain, _key) = ca.issue(&["localhost", "127.0.0.1", "::1"]);
    assert_eq!(chain.len(), 1);
    let (cert_pem, key_pem) = ca.issue_pem(&["example.test"]);
    assert!(cert_pem.contains("BEGIN CERTIFICATE"));
    assert!(key_pem.contains("BEGIN PRIVATE KEY"));

    // Two CAs are distinct: a client of one does not trust the other.
    assert_ne!(TestCa::new().cert_der(), ca.cert_der());
    Ok(())
}
