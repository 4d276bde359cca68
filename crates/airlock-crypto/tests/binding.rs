//! Bindings (MACs under the master key over plaintext records): what checks and what does not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use airlock_crypto::{CryptoError, Keyring, MasterKey, BINDING_LEN};

const PURPOSE: &str = "airlock.gateway-config.v1";
const MESSAGE: &[u8] = b"\0\0\0\x05acc_1\0\0\0\x05gwc_1https://api.example.com";

fn keyring() -> Keyring {
    Keyring::new(vec![MasterKey::generate().unwrap()]).unwrap()
}

#[test]
fn a_binding_checks_only_for_its_purpose_message_and_keyring() {
    let k = keyring();
    let b = k.bind(PURPOSE, MESSAGE).unwrap();
    assert_eq!(b.len(), BINDING_LEN);
    k.verify_binding(PURPOSE, MESSAGE, &b).unwrap();
    let mut other_message = MESSAGE.to_vec();
    other_message.push(b'/');
    for (purpose, message) in [
        ("airlock.other.v1", MESSAGE),
        (PURPOSE, &other_message[..]),
        (PURPOSE, &MESSAGE[..MESSAGE.len() - 1]),
        (PURPOSE, b""),
    ] {
        assert!(matches!(
            k.verify_binding(purpose, message, &b),
            Err(CryptoError::BindingMismatch)
        ));
    }
    // A keyring without the key that made it cannot check it.
    assert!(matches!(
        keyring().verify_binding(PURPOSE, MESSAGE, &b),
        Err(CryptoError::UnknownKey(_))
    ));
}

#[test]
fn every_single_byte_flip_and_every_truncation_fails() {
    let k = keyring();
    let b = k.bind(PURPOSE, MESSAGE).unwrap();
    for i in 0..b.len() {
        for bit in 0..8 {
            let mut bad = b.clone();
            bad[i] ^= 1 << bit;
            assert!(
                k.verify_binding(PURPOSE, MESSAGE, &bad).is_err(),
                "byte {i} bit {bit}"
            );
        }
    }
    for len in 0..b.len() {
        assert!(
            k.verify_binding(PURPOSE, MESSAGE, &b[..len]).is_err(),
            "{len}"
        );
    }
    let mut longer = b.clone();
    longer.push(0);
    assert!(k.verify_binding(PURPOSE, MESSAGE, &longer).is_err());
}

#[test]
fn a_binding_relabelled_with_another_loaded_key_fails() {
    let old = MasterKey::generate().unwrap();
    let old_b64 = old.to_base64();
    let k = Keyring::new(vec![MasterKey::generate().unwrap(), old]).unwrap();
    let ids = k.ids();
    let mut b = k.bind(PURPOSE, MESSAGE).unwrap();
    b[1..5].copy_from_slice(&ids[1].0.to_be_bytes());
    assert!(matches!(
        k.verify_binding(PURPOSE, MESSAGE, &b),
        Err(CryptoError::BindingMismatch)
    ));
    drop(old_b64);
}

#[test]
fn rotation_rebinds_and_retirement_locks_out_the_old_key() {
    let old = MasterKey::generate().unwrap();
    let old_b64 = old.to_base64();
    let before = Keyring::new(vec![old]).unwrap();
    let b = before.bind(PURPOSE, MESSAGE).unwrap();

    let new = MasterKey::generate().unwrap();
    let new_b64 = new.to_base64();
    let both = Keyring::parse(&format!("{},{}", new_b64.as_str(), old_b64.as_str())).unwrap();
    both.verify_binding(PURPOSE, MESSAGE, &b).unwrap();
    let rebound = both.rebind(PURPOSE, MESSAGE, &b).unwrap().unwrap();
    assert_ne!(rebound, b);
    assert_eq!(&rebound[1..5], &both.active_id().0.to_be_bytes());
    assert_eq!(both.rebind(PURPOSE, MESSAGE, &rebound).unwrap(), None);
    // A binding that does not check is not vouched for again.
    let mut tampered = b.clone();
    tampered[10] ^= 1;
    assert!(both.rebind(PURPOSE, MESSAGE, &tampered).is_err());
    assert!(both.rebind(PURPOSE, b"another record", &b).is_err());

    let retired = Keyring::parse(new_b64.as_str()).unwrap();
    retired.verify_binding(PURPOSE, MESSAGE, &rebound).unwrap();
    assert!(matches!(
        retired.verify_binding(PURPOSE, MESSAGE, &b),
        Err(CryptoError::UnknownKey(_))
    ));
}

#[test]
fn error_messages_are_fixed_texts() {
    let k = keyring();
    let b = k.bind(PURPOSE, MESSAGE).unwrap();
    let err = k.verify_binding(PURPOSE, b"x", &b).unwrap_err().to_string();
    assert_eq!(err, "the binding does not match its record or was altered");
    let mut v2 = b.clone();
    v2[0] = 2;
    assert_eq!(
        k.verify_binding(PURPOSE, MESSAGE, &v2)
            .unwrap_err()
            .to_string(),
        "unsupported ciphertext version 2"
    );
}
