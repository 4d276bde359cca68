//! Seal, open and rewrap through the public API: the properties of SECURITY.md rows 17-19
//! (ciphertext bound to its context, key hygiene, rotation and retirement).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use airlock_crypto::{CryptoError, KeyId, Keyring, MasterKey, SecretContext};

const CTX: SecretContext<'static> = SecretContext {
    account_id: "acct_01",
    secret_id: "sec_01",
    version: 1,
};
const PLAINTEXT: &[u8] = b"sk-live-0123456789abcdef0123456789abcdef";
/// Everything in a blob except the value: header, wrapped data key, nonce, tag.
const OVERHEAD: usize = 93;

fn key() -> MasterKey {
    MasterKey::generate().unwrap()
}

fn ring_of(keys: &[&MasterKey]) -> Keyring {
    // MasterKey is not Clone on purpose; round-trip through base64 to put one key in two rings.
    Keyring::new(
        keys.iter()
            .map(|k| MasterKey::from_base64(&k.to_base64()).unwrap())
            .collect(),
    )
    .unwrap()
}

fn single() -> Keyring {
    Keyring::new(vec![key()]).unwrap()
}

#[test]
fn round_trip_and_layout() {
    let ring = single();
    for plaintext in [&b""[..], b"x", PLAINTEXT] {
        let sealed = ring.seal(&CTX, plaintext).unwrap();
        assert_eq!(sealed.len(), OVERHEAD + plaintext.len());
        assert_eq!(sealed[0], 1, "format version");
        assert_eq!(sealed[1..5], ring.active_id().0.to_be_bytes());
        let opened = ring.open(&CTX, &sealed).unwrap();
        assert!(opened.ct_eq(plaintext));
        assert_eq!(opened.len(), plaintext.len());
        assert_eq!(opened.is_empty(), plaintext.is_empty());
    }
}

#[test]
fn large_value_round_trips() {
    let ring = single();
    let plaintext: Vec<u8> = (0..64 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let sealed = ring.seal(&CTX, &plaintext).unwrap();
    assert_eq!(sealed.len(), OVERHEAD + plaintext.len());
    assert!(ring.open(&CTX, &sealed).unwrap().ct_eq(&plaintext));
}

#[test]
fn same_plaintext_twice_gives_different_ciphertexts() {
    let ring = single();
    let a = ring.seal(&CTX, PLAINTEXT).unwrap();
    let b = ring.seal(&CTX, PLAINTEXT).unwrap();
    assert_eq!(a[..5], b[..5], "same header");
    // Fresh wrap nonce, data key and value nonce each time: every part after the header differs.
    for (name, range) in [
        ("wrap nonce", 5..17),
        ("wrapped data key", 17..65),
        ("value nonce", 65..77),
        ("value", 77..a.len()),
    ] {
        assert_ne!(a[range.clone()], b[range], "{name}");
    }
}

#[test]
fn ciphertext_does_not_contain_the_plaintext() {
    let ring = single();
    let sealed = ring.seal(&CTX, PLAINTEXT).unwrap();
    assert!(!sealed
        .windows(8)
        .any(|w| PLAINTEXT.windows(8).any(|p| p == w)));
}

#[test]
fn every_single_byte_flip_fails() {
    let ring = single();
    let sealed = ring.seal(&CTX, PLAINTEXT).unwrap();
    for index in 0..sealed.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut altered = sealed.clone();
            altered[index] ^= mask;
            let error = ring.open(&CTX, &altered).unwrap_err();
            // The header fails on its own terms; everything after it is authenticated and fails
            // with the one generic message.
            match index {
                0 => assert!(
                    matches!(error, CryptoError::UnsupportedVersion(v) if v == 1 ^ mask),
                    "{error}"
                ),
                1..5 => assert!(matches!(error, CryptoError::UnknownKey(_)), "{error}"),
                _ => assert!(
                    matches!(error, CryptoError::Decrypt),
                    "byte {index} mask {mask:#x}: {error}"
                ),
            }
        }
    }
}

#[test]
fn every_truncation_and_extension_fails() {
    let ring = single();
    let sealed = ring.seal(&CTX, PLAINTEXT).unwrap();
    for len in 0..sealed.len() {
        let error = ring.open(&CTX, &sealed[..len]).unwrap_err();
        let expected_truncated = len < OVERHEAD;
        assert_eq!(
            matches!(error, CryptoError::Truncated),
            expected_truncated,
            "length {len}: {error}"
        );
        if !expected_truncated {
            assert!(
                matches!(error, CryptoError::Decrypt),
                "length {len}: {error}"
            );
        }
    }
    let mut extended = sealed.clone();
    extended.push(0);
    assert!(matches!(
        ring.open(&CTX, &extended),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn other_contexts_fail() {
    let ring = single();
    let cases = [
        (
            "other account",
            SecretContext {
                account_id: "acct_02",
                ..CTX
            },
        ),
        (
            "other secret",
            SecretContext {
                secret_id: "sec_02",
                ..CTX
            },
        ),
        ("other version", SecretContext { version: 2, ..CTX }),
        ("negative version", SecretContext { version: -1, ..CTX }),
        (
            "empty account",
            SecretContext {
                account_id: "",
                ..CTX
            },
        ),
        (
            "account and secret swapped",
            SecretContext {
                account_id: CTX.secret_id,
                secret_id: CTX.account_id,
                ..CTX
            },
        ),
        (
            "boundary shifted",
            SecretContext {
                account_id: "acct_01s",
                secret_id: "ec_01",
                ..CTX
            },
        ),
    ];
    let sealed = ring.seal(&CTX, PLAINTEXT).unwrap();
    assert!(ring.open(&CTX, &sealed).is_ok());
    for (name, other) in cases {
        assert!(
            matches!(ring.open(&other, &sealed), Err(CryptoError::Decrypt)),
            "{name}"
        );
        assert!(
            matches!(ring.rewrap(&other, &sealed), Ok(None)),
            "{name}: the active key's blobs are left alone"
        );
    }
}

#[test]
fn swapping_two_rows_ciphertexts_fails() {
    let ring = single();
    let row_a = SecretContext {
        secret_id: "sec_a",
        ..CTX
    };
    let row_b = SecretContext {
        secret_id: "sec_b",
        ..CTX
    };
    let sealed_a = ring.seal(&row_a, b"value a").unwrap();
    let sealed_b = ring.seal(&row_b, b"value b").unwrap();
    assert!(matches!(
        ring.open(&row_a, &sealed_b),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(
        ring.open(&row_b, &sealed_a),
        Err(CryptoError::Decrypt)
    ));

    // Splicing one row's wrapped data key onto the other row's value fails too.
    let mut spliced = sealed_a[..65].to_vec();
    spliced.extend_from_slice(&sealed_b[65..]);
    assert!(matches!(
        ring.open(&row_a, &spliced),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn relabelling_a_blob_with_another_loaded_key_id_fails() {
    let (a, b) = (key(), key());
    let ring = ring_of(&[&a, &b]);
    let sealed = ring.seal(&CTX, PLAINTEXT).unwrap();
    let mut relabelled = sealed.clone();
    relabelled[1..5].copy_from_slice(&b.id().0.to_be_bytes());
    assert!(matches!(
        ring.open(&CTX, &relabelled),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn rotation_rewraps_and_retirement_locks_out_the_old_key() {
    let (a, b) = (key(), key());
    let sealed_a = ring_of(&[&a]).seal(&CTX, PLAINTEXT).unwrap();
    assert_eq!(Keyring::key_id_of(&sealed_a).unwrap(), a.id());

    // Rotation: B is active, A still decrypts.
    let rotating = ring_of(&[&b, &a]);
    assert!(rotating.open(&CTX, &sealed_a).unwrap().ct_eq(PLAINTEXT));
    let sealed_b = rotating
        .rewrap(&CTX, &sealed_a)
        .unwrap()
        .expect("moved to B");
    assert_eq!(Keyring::key_id_of(&sealed_b).unwrap(), b.id());
    assert_eq!(sealed_b.len(), sealed_a.len());
    assert_eq!(sealed_b[65..], sealed_a[65..], "value ciphertext untouched");
    assert_ne!(sealed_b[5..65], sealed_a[5..65], "data key re-wrapped");
    assert!(rotating.open(&CTX, &sealed_b).unwrap().ct_eq(PLAINTEXT));
    assert!(rotating.rewrap(&CTX, &sealed_b).unwrap().is_none());

    // Retirement: B alone opens the re-wrapped blob, A alone does not.
    assert!(ring_of(&[&b])
        .open(&CTX, &sealed_b)
        .unwrap()
        .ct_eq(PLAINTEXT));
    let error = ring_of(&[&a]).open(&CTX, &sealed_b).unwrap_err();
    assert!(matches!(error, CryptoError::UnknownKey(id) if id == b.id()));
    let error = ring_of(&[&b]).open(&CTX, &sealed_a).unwrap_err();
    assert!(matches!(error, CryptoError::UnknownKey(id) if id == a.id()));
}

#[test]
fn rewrap_checks_the_context_and_the_key() {
    let (a, b, c) = (key(), key(), key());
    let sealed_a = ring_of(&[&a]).seal(&CTX, PLAINTEXT).unwrap();
    let rotating = ring_of(&[&b, &a]);
    let other = SecretContext { version: 9, ..CTX };
    assert!(matches!(
        rotating.rewrap(&other, &sealed_a),
        Err(CryptoError::Decrypt)
    ));
    let mut flipped = sealed_a.clone();
    flipped[40] ^= 1;
    assert!(matches!(
        rotating.rewrap(&CTX, &flipped),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(
        ring_of(&[&c, &b]).rewrap(&CTX, &sealed_a),
        Err(CryptoError::UnknownKey(id)) if id == a.id()
    ));
    assert!(matches!(
        rotating.rewrap(&CTX, &sealed_a[..OVERHEAD - 1]),
        Err(CryptoError::Truncated)
    ));
}

#[test]
fn key_id_of_reads_the_header_only() {
    let cases: [(&[u8], Result<KeyId, &str>); 5] = [
        (&[], Err("ciphertext is truncated")),
        (&[1, 0xde, 0xad], Err("ciphertext is truncated")),
        (&[7, 0, 0, 0, 1], Err("unsupported ciphertext version 7")),
        (&[1, 0xde, 0xad, 0xbe, 0xef], Ok(KeyId(0xdead_beef))),
        (&[1, 0, 0, 0, 1, 0xff, 0xff], Ok(KeyId(1))),
    ];
    for (input, expected) in cases {
        let got = Keyring::key_id_of(input).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "{input:?}");
    }
}

#[test]
fn unknown_key_error_names_the_id() {
    let ring = single();
    let mut sealed = ring.seal(&CTX, PLAINTEXT).unwrap();
    sealed[1..5].copy_from_slice(&0x1a2b_3c4du32.to_be_bytes());
    let error = ring.open(&CTX, &sealed).unwrap_err();
    assert_eq!(
        error.to_string(),
        "no master key with id 1a2b3c4d is loaded"
    );
}

#[test]
fn error_messages_are_the_documented_ones() {
    let cases = [
        (CryptoError::Truncated, "ciphertext is truncated"),
        (
            CryptoError::UnsupportedVersion(7),
            "unsupported ciphertext version 7",
        ),
        (
            CryptoError::UnknownKey(KeyId(0x1a2b3c4d)),
            "no master key with id 1a2b3c4d is loaded",
        ),
        (
            CryptoError::Decrypt,
            "decryption failed: the ciphertext does not match its context or was altered",
        ),
        (CryptoError::Rng, "random number generator failed"),
        (
            CryptoError::TooLarge,
            "value or context is too large to encrypt",
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn garbage_never_panics() {
    let ring = single();
    let id = ring.active_id().0.to_be_bytes();
    // A fixed xorshift stream keeps the test reproducible.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    for len in (0..300).chain([511, 1024, 4096]) {
        for round in 0..4 {
            let mut blob: Vec<u8> = (0..len).map(|_| next()).collect();
            // Half the rounds carry a valid header so the decryption paths are reached too.
            if round % 2 == 1 && len >= 5 {
                blob[0] = 1;
                blob[1..5].copy_from_slice(&id);
            }
            assert!(ring.open(&CTX, &blob).is_err(), "length {len}");
            let _ = ring.rewrap(&CTX, &blob);
            let _ = Keyring::key_id_of(&blob);
        }
    }
}

#[test]
fn opens_a_vector_made_by_an_independent_implementation() {
    // Made with Python's `cryptography` (AESGCM) following the documented format: master key
    // bytes 0..32, data key 0x40..0x60, wrap nonce 0xa0..0xac, value nonce 0xb0..0xbc.
    // If this fails, the stored format changed and old databases no longer open.
    let ring = Keyring::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    assert_eq!(ring.active_id().to_string(), "fb502193");
    let sealed = hex(concat!(
        "01fb502193a0a1a2a3a4a5a6a7a8a9aaaba6593e6e018e44f82a2ccd984b378e",
        "9120fd0b43c6e2143bc4577cdd23f62b5ebf45d9f21ab87ffa02f639f4f809c3",
        "c8b0b1b2b3b4b5b6b7b8b9babb706badf1a4399fb44d8b448c8284d7c233e89c",
        "205959f304aed0fcea919f",
    ));
    let ctx = SecretContext {
        account_id: "acct_1",
        secret_id: "sec_1",
        version: 3,
    };
    assert!(ring.open(&ctx, &sealed).unwrap().ct_eq(b"sk-test-vector"));
    assert!(matches!(
        ring.open(&SecretContext { version: 4, ..ctx }, &sealed),
        Err(CryptoError::Decrypt)
    ));
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
