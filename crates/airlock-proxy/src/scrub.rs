//! Finding an injected secret's bytes inside a response header value (SECURITY #12).
//!
//! An upstream that copies request headers into its response would hand the real credential to
//! the sandbox. Every response header value is therefore searched for the exact bytes of each
//! secret the request injected, and a value that contains one is dropped.
//!
//! The search runs on every response, so it must be cheap, and it must not compare secret bytes
//! with `==` (SECURITY #14). A rolling (Rabin–Karp) hash does both: one multiply-add per header
//! byte, and only a window whose hash equals the secret's hash is compared, in constant time.
//! The hash comparison reveals nothing but "this window might be the secret".

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// An odd 64-bit multiplier (the FNV prime); arithmetic is modulo 2^64.
const BASE: u64 = 0x0000_0100_0000_01b3;

/// One secret to look for: its exact bytes in header values, and its lower-cased bytes in
/// header names (which HTTP/2 and hyper lower-case, so an echoed `Sk-Key` arrives as `sk-key`).
pub(crate) struct Needle {
    exact: Pattern,
    lower: Pattern,
}

impl Needle {
    pub(crate) fn new(bytes: &[u8]) -> Needle {
        Needle {
            exact: Pattern::new(bytes.to_vec()),
            lower: Pattern::new(bytes.to_ascii_lowercase()),
        }
    }

    /// Whether the secret occurs in a header value. An empty secret occurs nowhere.
    pub(crate) fn found_in(&self, haystack: &[u8]) -> bool {
        self.exact.found_in(haystack)
    }

    /// Whether the secret occurs, in any letter case, in a (lower-case) header name.
    pub(crate) fn found_in_name(&self, name: &[u8]) -> bool {
        self.lower.found_in(name)
    }
}

struct Pattern {
    bytes: Zeroizing<Vec<u8>>,
    hash: u64,
    /// `BASE^len`, to drop the byte that leaves the window.
    drop: u64,
}

impl Pattern {
    fn new(bytes: Vec<u8>) -> Pattern {
        let hash = bytes.iter().fold(0u64, |h, &b| {
            h.wrapping_mul(BASE).wrapping_add(u64::from(b))
        });
        let drop = (0..bytes.len()).fold(1u64, |p, _| p.wrapping_mul(BASE));
        Pattern {
            bytes: Zeroizing::new(bytes),
            hash,
            drop,
        }
    }

    fn found_in(&self, haystack: &[u8]) -> bool {
        let m = self.bytes.len();
        if m == 0 || haystack.len() < m {
            return false;
        }
        let mut h = 0u64;
        for (i, &b) in haystack.iter().enumerate() {
            h = h.wrapping_mul(BASE).wrapping_add(u64::from(b));
            if i >= m {
                h = h.wrapping_sub(u64::from(haystack[i - m]).wrapping_mul(self.drop));
            }
            if i + 1 >= m && h == self.hash {
                let window = &haystack[i + 1 - m..=i];
                if bool::from(window.ct_eq(self.bytes.as_slice())) {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_secret_anywhere_and_nothing_else() {
        let needle = Needle::new(b"sk-real-secret");
        for (haystack, found) in [
            (&b"sk-real-secret"[..], true),
            (b"Bearer sk-real-secret", true),
            (b"xx sk-real-secret yy", true),
            (b"sk-real-secre", false),
            (b"sk-real-secreT", false),
            (b"", false),
            (b"ssk-real-secrett", true),
            (b"sk-real-secret-sk-real-secret", true),
        ] {
            assert_eq!(
                needle.found_in(haystack),
                found,
                "{}",
                String::from_utf8_lossy(haystack)
            );
        }
        assert!(!Needle::new(b"").found_in(b"anything"));
        // Names are searched in lower case; values exactly.
        let mixed = Needle::new(b"Sk-Real-Secret");
        assert!(mixed.found_in_name(b"x-sk-real-secret"));
        assert!(!mixed.found_in(b"x-sk-real-secret"));
        assert!(!mixed.found_in_name(b"x-sk-real-secre"));
    }

    #[test]
    fn agrees_with_a_naive_search() {
        // Deterministic pseudo-random haystacks over a tiny alphabet, so that matches and
        // near-matches are frequent.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"ab"[(x % 2) as usize]
        };
        for len in 1..6 {
            let secret: Vec<u8> = (0..len).map(|_| next()).collect();
            let needle = Needle::new(&secret);
            for _ in 0..200 {
                let hay: Vec<u8> = (0..20).map(|_| next()).collect();
                let naive = hay.windows(len).any(|w| w.ct_eq(&secret).into());
                assert_eq!(needle.found_in(&hay), naive);
            }
        }
    }
}
