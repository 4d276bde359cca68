//! Token usage as Airlock records it, whatever the provider's own convention.
//!
//! Invariants of a [`Usage`] built by this crate:
//! - `input_tokens` counts every input token, cached ones included (Anthropic reports cache reads
//!   and writes beside `input_tokens`, so they are added; OpenAI's `prompt_tokens` already
//!   includes them), so `cache_read_tokens + cache_write_tokens <= input_tokens`;
//! - `output_tokens` counts every output token, reasoning included, so
//!   `reasoning_tokens <= output_tokens`;
//! - no count exceeds [`MAX_TOKENS`]: a provider never reports more, so a larger number is a
//!   broken or hostile upstream, and is ignored (the result is then not `exact`).

/// The largest token count believed: 2^40, about 1.1 trillion tokens, far above any context
/// window, and small enough that sums and products with prices cannot overflow `u128`.
pub const MAX_TOKENS: u64 = 1 << 40;

/// The longest model name recorded, in bytes; a longer one is dropped rather than cut, because
/// a cut name would name another model.
pub const MAX_MODEL_LEN: usize = airlock_core::llm::MAX_MODEL_LEN;

pub use airlock_core::Usage;

/// Restores the invariants after counts from an upstream were put together, raising a total
/// rather than lowering a part (so nothing is under-charged). Returns whether anything had
/// to change, which means the upstream's numbers did not add up.
pub(crate) fn reconcile(usage: &mut Usage) -> bool {
    let mut changed = false;
    for count in [
        &mut usage.input_tokens,
        &mut usage.output_tokens,
        &mut usage.cache_read_tokens,
        &mut usage.cache_write_tokens,
        &mut usage.reasoning_tokens,
    ] {
        if *count > MAX_TOKENS {
            *count = MAX_TOKENS;
            changed = true;
        }
    }
    let cached = usage.cache_read_tokens + usage.cache_write_tokens;
    if cached > usage.input_tokens {
        if cached <= MAX_TOKENS {
            usage.input_tokens = cached;
        } else {
            // Only absurd counts get here; the bound wins over the parts.
            usage.input_tokens = MAX_TOKENS;
            usage.cache_write_tokens = MAX_TOKENS - usage.cache_read_tokens;
        }
        changed = true;
    }
    if usage.reasoning_tokens > usage.output_tokens {
        usage.output_tokens = usage.reasoning_tokens;
        changed = true;
    }
    changed
}

/// What a response was metered as: the model the upstream says answered, if it said (see
/// [`sanitize_model`]), and its usage, whose `exact` is true when the upstream reported it in
/// full and the numbers added up, false when any of them was estimated or adjusted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    pub model: Option<String>,
    pub usage: Usage,
}

/// A model name as recorded: at most [`MAX_MODEL_LEN`] bytes of printable ASCII, not empty. The
/// only JSON escape accepted is `\/` (some encoders escape slashes); anything else yields `None`,
/// so that a name in a record is always exactly what the upstream meant and safe to print.
pub fn sanitize_model(raw: &[u8]) -> Option<String> {
    // Most names: printable ASCII without a backslash, copied whole.
    if !raw.is_empty()
        && raw.len() <= MAX_MODEL_LEN
        && raw.iter().all(|b| matches!(b, b' '..=b'[' | b']'..=b'~'))
    {
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    sanitize_escaped(raw)
}

/// [`sanitize_model`] byte by byte: unescapes `\/`, refuses everything else it must.
fn sanitize_escaped(raw: &[u8]) -> Option<String> {
    let mut name = String::with_capacity(raw.len().min(MAX_MODEL_LEN));
    let mut bytes = raw.iter();
    while let Some(&byte) = bytes.next() {
        let byte = match byte {
            b'\\' => match bytes.next() {
                Some(b'/') => b'/',
                _ => return None,
            },
            b' '..=b'~' => byte,
            _ => return None,
        };
        if name.len() == MAX_MODEL_LEN {
            return None;
        }
        name.push(char::from(byte));
    }
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        let long = "m".repeat(MAX_MODEL_LEN);
        let too_long = "m".repeat(MAX_MODEL_LEN + 1);
        let cases: [(&[u8], Option<&str>); 10] = [
            (b"gpt-4o-2024-08-06", Some("gpt-4o-2024-08-06")),
            (b"models/gemini-2.5-flash", Some("models/gemini-2.5-flash")),
            (br"meta-llama\/Llama-3", Some("meta-llama/Llama-3")),
            (b"", None),
            (br"a\u0000b", None),
            (br"a\nb", None),
            (b"tab\there", None),
            ("caf\u{e9}".as_bytes(), None),
            (long.as_bytes(), Some(long.as_str())),
            (too_long.as_bytes(), None),
        ];
        for (raw, expected) in cases {
            assert_eq!(sanitize_model(raw).as_deref(), expected, "{raw:?}");
        }
    }

    proptest::proptest! {
        /// The whole-name copy agrees with the byte-by-byte path on every input.
        #[test]
        fn the_fast_path_agrees(raw in proptest::collection::vec(
            proptest::sample::select(b" !/AZaz09[]~\\\t\x7f\xc3\xa9".to_vec()), 0..300)) {
            proptest::prop_assert_eq!(sanitize_model(&raw), sanitize_escaped(&raw));
        }
    }

    #[test]
    fn reconcile_raises_totals_never_parts() {
        let cases = [
            // (input, output, cache_read, cache_write, reasoning) before → after, changed
            ((10, 5, 3, 2, 1), (10, 5, 3, 2, 1), false),
            ((4, 5, 3, 2, 1), (5, 5, 3, 2, 1), true),
            ((10, 1, 0, 0, 4), (10, 4, 0, 0, 4), true),
            ((MAX_TOKENS + 1, 0, 0, 0, 0), (MAX_TOKENS, 0, 0, 0, 0), true),
            (
                (0, 0, MAX_TOKENS, MAX_TOKENS, 0),
                (MAX_TOKENS, 0, MAX_TOKENS, 0, 0),
                true,
            ),
        ];
        for (before, after, changed) in cases {
            let (
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                reasoning_tokens,
            ) = before;
            let mut usage = Usage {
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                reasoning_tokens,
                exact: true,
            };
            assert_eq!(reconcile(&mut usage), changed, "{before:?}");
            let got = (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.reasoning_tokens,
            );
            assert_eq!(got, after, "{before:?}");
        }
    }

    #[test]
    fn uncached_input() {
        let usage = Usage {
            input_tokens: 100,
            cache_read_tokens: 60,
            cache_write_tokens: 30,
            ..Usage::default()
        };
        assert_eq!(usage.uncached_input_tokens(), 10);
        assert_eq!(usage.total_tokens(), 100);
    }
}
