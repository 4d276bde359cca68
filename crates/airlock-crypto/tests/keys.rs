//! Loading master keys, building keyrings, and what `Debug` and error messages are allowed to
//! show (SECURITY.md row 20: nothing secret in logs, errors or `Debug`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use airlock_crypto::{KeyError, KeyId, Keyring, MasterKey, SecretContext, SecretValue};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// Standard base64 of `len` bytes, each `fill`.
fn b64(fill: u8, len: usize) -> String {
    STANDARD.encode(vec![fill; len])
}

fn key_text() -> String {
    MasterKey::generate().unwrap().to_base64().to_string()
}

/// Asserts that `text` contains `secret` in none of the forms a leak usually takes.
fn assert_no_leak(text: &str, secret: &[u8]) {
    let hex_lower: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let forms = [
        hex_lower.clone(),
        hex_lower.to_uppercase(),
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        format!("{secret:?}"),
        String::from_utf8_lossy(secret).into_owned(),
    ];
    for form in forms {
        assert!(!text.contains(&form), "{text:?} leaks {form:?}");
    }
    assert!(
        !text.as_bytes().windows(secret.len()).any(|w| w == secret),
        "{text:?} leaks the raw bytes"
    );
}

#[test]
fn master_key_round_trips_through_base64() {
    let key = MasterKey::generate().unwrap();
    let text = key.to_base64();
    assert_eq!(text.len(), 44);
    let again = MasterKey::from_base64(&format!("  {}\n", &*text)).unwrap();
    assert_eq!(again.id(), key.id());
    assert_eq!(*again.to_base64(), *text);
    assert_ne!(MasterKey::generate().unwrap().id(), key.id());
}

#[test]
fn key_id_is_the_documented_hash_prefix() {
    // SHA-256("airlock.kek-id.v1" || key), first 4 bytes, computed with Python's hashlib.
    let cases = [
        (b64(0, 32), "0747d498"),
        (
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
            "fb502193",
        ),
    ];
    for (text, expected) in cases {
        let id = MasterKey::from_base64(&text).unwrap().id();
        assert_eq!(id.to_string(), expected);
        assert_eq!(format!("{:08x}", id.0), expected);
    }
    assert_eq!(KeyId(0x1a).to_string(), "0000001a");
}

#[test]
fn from_base64_rejects_bad_input_without_echoing_it() {
    let cases = [
        (String::new(), "no master key given"),
        ("   \n".to_owned(), "no master key given"),
        ("not base64!!".to_owned(), "master key is not valid base64"),
        // Padding is required: the key must be copied whole.
        (
            b64(7, 32).trim_end_matches('=').to_owned(),
            "master key is not valid base64",
        ),
        (
            b64(7, 32).replace('B', "-"),
            "master key is not valid base64",
        ),
        (b64(7, 16), "master key is 16 bytes, need 32"),
        (b64(7, 33), "master key is 33 bytes, need 32"),
        (b64(7, 64), "master key is 64 bytes, need 32"),
    ];
    for (input, message) in cases {
        let error = MasterKey::from_base64(&input).unwrap_err();
        assert_eq!(error.to_string(), message, "input {input:?}");
        let trimmed = input.trim();
        if !trimmed.is_empty() {
            assert!(!error.to_string().contains(trimmed));
            assert!(!format!("{error:?}").contains(trimmed));
        }
    }
}

#[test]
fn keyring_parse_accepts_lists_and_comments() {
    let (k1, k2, k3) = (key_text(), key_text(), key_text());
    let ids = |text: &str| MasterKey::from_base64(text).unwrap().id();
    let (i1, i2, i3) = (ids(&k1), ids(&k2), ids(&k3));
    let cases = [
        (k1.clone(), vec![i1]),
        (format!("{k1},{k2}"), vec![i1, i2]),
        (format!(" {k1} , {k2} ,"), vec![i1, i2]),
        (format!("{k1}\n{k2}\n{k3}\n"), vec![i1, i2, i3]),
        (format!("{k2}\r\n{k1}\r\n"), vec![i2, i1]),
        (format!("{k1}\t{k2} {k3}"), vec![i1, i2, i3]),
        (
            format!("# active first\n{k1}\n  # old keys, retire after the sweep\n{k2}, {k3}\n"),
            vec![i1, i2, i3],
        ),
        (
            format!("{k3}  # new\n{k1} # old, keep until rewrap is done\n"),
            vec![i3, i1],
        ),
    ];
    for (text, expected) in cases {
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.ids(), expected, "{text:?}");
        assert_eq!(ring.active_id(), expected[0]);
    }
}

#[test]
fn keyring_parse_rejects_bad_lists_without_echoing_them() {
    let good = key_text();
    let bad = "c2VjcmV0LXRoYXQtaXMtbm90LTMyLWJ5dGVz".to_owned(); // 27 bytes
    let cases = [
        (String::new(), "no master key given"),
        (" \n\n, ,\n".to_owned(), "no master key given"),
        (
            "# only a comment\n   # and another\n".to_owned(),
            "no master key given",
        ),
        (
            format!("{good},{bad}"),
            "master key #2 in the list is 27 bytes, need 32",
        ),
        (
            format!("{bad}\n{good}"),
            "master key #1 in the list is 27 bytes, need 32",
        ),
        (
            format!("# c\n{good}\n# c\n{good}x!"),
            "master key #2 in the list is not valid base64",
        ),
        (
            "%%%%".to_owned(),
            "master key #1 in the list is not valid base64",
        ),
        (b64(1, 31), "master key #1 in the list is 31 bytes, need 32"),
    ];
    for (text, message) in cases {
        let error = Keyring::parse(&text).unwrap_err();
        assert_eq!(error.to_string(), message, "{text:?}");
        for entry in text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| e.len() > 3)
        {
            assert!(
                !error.to_string().contains(entry),
                "{error} echoes {entry:?}"
            );
            assert!(
                !format!("{error:?}").contains(entry),
                "{error:?} echoes {entry:?}"
            );
        }
    }
}

#[test]
fn duplicate_keys_are_refused() {
    let text = key_text();
    let id = MasterKey::from_base64(&text).unwrap().id();
    let error = Keyring::parse(&format!("{text}\n{}\n{text}", key_text())).unwrap_err();
    assert!(matches!(error, KeyError::Duplicate { id: dup } if dup == id));
    assert_eq!(
        error.to_string(),
        format!("master key {id} is listed more than once")
    );
    let twice = vec![
        MasterKey::from_base64(&text).unwrap(),
        MasterKey::from_base64(&text).unwrap(),
    ];
    assert!(matches!(
        Keyring::new(twice),
        Err(KeyError::Duplicate { .. })
    ));
    assert!(matches!(Keyring::new(Vec::new()), Err(KeyError::Empty)));
}

#[test]
fn debug_of_keys_shows_ids_only() {
    let (a, b) = (
        MasterKey::generate().unwrap(),
        MasterKey::generate().unwrap(),
    );
    let raw = |k: &MasterKey| STANDARD.decode(k.to_base64().as_bytes()).unwrap();
    let (raw_a, raw_b) = (raw(&a), raw(&b));
    let (id_a, id_b) = (a.id(), b.id());

    let key_debug = format!("{a:?} {a:#?}");
    assert_eq!(format!("{a:?}"), format!("MasterKey {{ id: {id_a}, .. }}"));
    assert_no_leak(&key_debug, &raw_a);

    let ring = Keyring::new(vec![a, b]).unwrap();
    let ring_debug = format!("{ring:?} {ring:#?}");
    assert_eq!(
        format!("{ring:?}"),
        format!("Keyring {{ active: {id_a}, keys: [{id_a}, {id_b}] }}")
    );
    assert_no_leak(&ring_debug, &raw_a);
    assert_no_leak(&ring_debug, &raw_b);
}

#[test]
fn secret_value_debug_is_redacted_and_clone_is_deep() {
    let plaintext = b"sk-ant-api03-sentinel-0123456789";
    let value = SecretValue::new(plaintext.to_vec());
    assert_eq!(format!("{value:?}"), "SecretValue(<redacted, 32 bytes>)");
    assert_no_leak(&format!("{value:?} {value:#?}"), plaintext);

    let copy = value.clone();
    assert_ne!(copy.expose().as_ptr(), value.expose().as_ptr());
    drop(value);
    assert!(copy.ct_eq(plaintext));
    assert_eq!(copy.len(), 32);
    assert!(!copy.is_empty());
    assert!(SecretValue::new(Vec::new()).is_empty());
}

#[test]
fn secret_value_ct_eq() {
    let value = SecretValue::new(b"abc".to_vec());
    let cases: [(&[u8], bool); 6] = [
        (b"abc", true),
        (b"abd", false),
        (b"ab", false),
        (b"abcd", false),
        (b"", false),
        (b"ABC", false),
    ];
    for (other, expected) in cases {
        assert_eq!(value.ct_eq(other), expected, "{other:?}");
    }
    assert!(SecretValue::new(Vec::new()).ct_eq(b""));
}

#[test]
fn errors_from_open_never_contain_the_plaintext_or_key() {
    let key = MasterKey::generate().unwrap();
    let raw = STANDARD.decode(key.to_base64().as_bytes()).unwrap();
    let ring = Keyring::new(vec![key]).unwrap();
    let ctx = SecretContext {
        account_id: "acct",
        secret_id: "sec",
        version: 1,
    };
    let plaintext = b"sentinel-secret-value-42";
    let mut sealed = ring.seal(&ctx, plaintext).unwrap();
    sealed[80] ^= 1;
    let error = ring.open(&ctx, &sealed).unwrap_err();
    for text in [error.to_string(), format!("{error:?}")] {
        assert_no_leak(&text, plaintext);
        assert_no_leak(&text, &raw);
    }
}
