//! The console's session: a signed cookie, so that every replica accepts it without shared
//! memory, and the CSRF token derived from it.
//!
//! The cookie carries the API key's id, its account and an expiry, never the key itself, and a
//! tag over them: an HMAC-SHA256 binding made by [`Keyring::bind`] with a key derived from the
//! active master key (purpose `airlock console session v1`). Every replica holds the master
//! keys, so every replica checks every cookie; a master key rotation keeps sessions valid while
//! the old key stays loaded. The CSRF token is a second binding, for another purpose, over the
//! same text: it cannot be made without the master key and it changes with every sign-in. On
//! every request the key is looked up again, so a revoked key's session ends at once.

use airlock_crypto::Keyring;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The cookie's name.
pub(crate) const COOKIE: &str = "airlock_console";
/// How long a session lasts after sign-in.
pub(crate) const LIFETIME_MS: i64 = 12 * 60 * 60 * 1000;

const SESSION_PURPOSE: &str = "airlock console session v1";
const CSRF_PURPOSE: &str = "airlock console csrf v1";
/// Longest cookie value considered.
const MAX_COOKIE: usize = 1024;

/// What a valid cookie says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub api_key_id: String,
    pub account_id: String,
    pub expire_time_ms: i64,
}

/// Why a cookie was refused (never shown in detail to the browser).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Malformed,
    BadSignature,
    Expired,
}

impl Session {
    fn text(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.api_key_id, self.account_id, self.expire_time_ms
        )
    }

    /// The cookie value: `base64url(text).base64url(tag)`.
    pub(crate) fn seal(&self, keyring: &Keyring) -> Option<String> {
        let text = self.text();
        let tag = keyring.bind(SESSION_PURPOSE, text.as_bytes()).ok()?;
        Some(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(text),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// Checks a cookie value's tag (in constant time) and its expiry.
    pub(crate) fn open(keyring: &Keyring, value: &str, now_ms: i64) -> Result<Session, Refused> {
        if value.len() > MAX_COOKIE {
            return Err(Refused::Malformed);
        }
        let (text, tag) = value.split_once('.').ok_or(Refused::Malformed)?;
        let text = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| Refused::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Refused::Malformed)?;
        keyring
            .verify_binding(SESSION_PURPOSE, &text, &tag)
            .map_err(|_| Refused::BadSignature)?;
        let text = String::from_utf8(text).map_err(|_| Refused::Malformed)?;
        let mut parts = text.split('\n');
        let (Some(key), Some(account), Some(expiry), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Malformed);
        };
        let expire_time_ms = expiry.parse::<i64>().map_err(|_| Refused::Malformed)?;
        if expire_time_ms <= now_ms {
            return Err(Refused::Expired);
        }
        Ok(Session {
            api_key_id: key.to_owned(),
            account_id: account.to_owned(),
            expire_time_ms,
        })
    }

    /// The CSRF token of this session, put in every form as a hidden field.
    pub(crate) fn csrf_token(&self, keyring: &Keyring) -> Option<String> {
        let tag = keyring.bind(CSRF_PURPOSE, self.text().as_bytes()).ok()?;
        Some(URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub(crate) fn check_csrf(&self, keyring: &Keyring, presented: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        keyring
            .verify_binding(CSRF_PURPOSE, self.text().as_bytes(), &tag)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn keyring(byte: u8) -> Keyring {
        Keyring::parse(&STANDARD.encode([byte; 32])).unwrap()
    }

    fn session(expire_time_ms: i64) -> Session {
        Session {
            api_key_id: "key_01".into(),
            account_id: "acc_01".into(),
            expire_time_ms,
        }
    }

    #[test]
    fn a_sealed_session_opens_until_it_expires() {
        let k = keyring(7);
        let cookie = session(2_000).seal(&k).unwrap();
        assert_eq!(Session::open(&k, &cookie, 1_000), Ok(session(2_000)));
        assert_eq!(Session::open(&k, &cookie, 2_000), Err(Refused::Expired));
        assert_eq!(Session::open(&k, &cookie, 5_000), Err(Refused::Expired));
    }

    /// Each case: a cookie value and why it is refused.
    #[test]
    fn tampered_or_foreign_cookies_are_refused() {
        let k = keyring(7);
        let cookie = session(2_000).seal(&k).unwrap();
        let (text, tag) = cookie.split_once('.').unwrap();
        let forged = |t: &str| format!("{}.{tag}", URL_SAFE_NO_PAD.encode(t));
        let mut flipped = tag.as_bytes().to_vec();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let cases: Vec<(String, Refused)> = vec![
            (
                forged("key_01\nacc_01\n9999999999999"),
                Refused::BadSignature,
            ),
            (forged("key_02\nacc_01\n2000"), Refused::BadSignature),
            (forged("key_01\nacc_02\n2000"), Refused::BadSignature),
            (
                format!("{text}.{}", String::from_utf8(flipped).unwrap()),
                Refused::BadSignature,
            ),
            (
                session(2_000).seal(&keyring(8)).unwrap(),
                Refused::BadSignature,
            ),
            (format!("{text}.{tag}!"), Refused::Malformed),
            ("no-dot".into(), Refused::Malformed),
            (String::new(), Refused::Malformed),
            ("a".repeat(2000), Refused::Malformed),
        ];
        for (value, want) in cases {
            assert_eq!(Session::open(&k, &value, 1_000), Err(want), "{value}");
        }
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let k = keyring(7);
        let a = session(2_000);
        let b = session(3_000);
        let token = a.csrf_token(&k).unwrap();
        assert!(a.check_csrf(&k, &token));
        assert!(!b.check_csrf(&k, &token));
        assert!(!a.check_csrf(&k, ""));
        assert!(!a.check_csrf(&k, "not base64 !"));
        assert!(!a.check_csrf(&keyring(8), &token));
    }
}
