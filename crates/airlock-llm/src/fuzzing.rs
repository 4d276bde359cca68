//! The meter's fuzz target body, as a plain function: `fuzz/` (cargo-fuzz) and the property
//! tests call [`fuzz_meter`] with arbitrary bytes, and it panics if a promise of SECURITY #28 is
//! broken.

use crate::api::Api;
use crate::meter::Meter;
use crate::usage::{Reading, MAX_MODEL_LEN, MAX_TOKENS};

/// The most state a meter may hold, whatever it is fed.
pub const MAX_STATE_BYTES: usize = 16 * 1024;

/// Reads the first byte as the dialect (low 3 bits), SSE or not (bit 3) and a seed for where to
/// cut (the rest), then meters the remaining bytes twice, whole and cut into pieces of 1 to 64
/// bytes, and checks:
/// - the cuts change nothing (the same result, error mark and completeness);
/// - the state stays the same size, under [`MAX_STATE_BYTES`], at every step;
/// - the result keeps [`crate::usage`]'s invariants (counts bounded, cached input within input,
///   reasoning within output, a model name of printable ASCII), and is never exact unless the
///   usage was complete;
/// - with the request size given, the input of an unfinished answer is never zero.
pub fn fuzz_meter(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let api = Api::ALL[usize::from(control & 7) % Api::ALL.len()];
    let sse = control & 8 != 0;

    let mut whole = Meter::new(api, sse);
    let size = whole.state_bytes();
    assert!(size <= MAX_STATE_BYTES, "{size} bytes of state");
    whole.feed(body);
    assert_eq!(whole.state_bytes(), size);

    let mut cut = Meter::new(api, sse);
    let mut seed = u64::from(control >> 4) ^ 0x9e37_79b9_7f4a_7c15;
    let mut rest = body;
    while !rest.is_empty() {
        // xorshift64: cheap, and the same input always cuts the same way.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (1 + (seed % 64) as usize).min(rest.len());
        cut.feed(&rest[..n]);
        assert_eq!(cut.state_bytes(), size);
        rest = &rest[n..];
    }

    let metered = whole.finish();
    assert_eq!(metered, cut.finish(), "cutting the body changed the result");
    assert_eq!(
        whole.usage(),
        metered.usage,
        "the usage alone is the reading's"
    );
    assert_eq!(whole.saw_error(), cut.saw_error());
    assert_eq!(whole.is_complete(), cut.is_complete());
    assert_eq!(whole.content_bytes(), cut.content_bytes());
    assert_sane(&metered);
    assert!(
        !metered.usage.exact || whole.is_complete(),
        "exact but incomplete"
    );

    let request_bytes = 1 + body.len() as u64;
    let estimated = whole.finish_estimated(request_bytes);
    assert_eq!(estimated, cut.finish_estimated(request_bytes));
    assert_sane(&estimated);
    if api == Api::None {
        assert_eq!(estimated, Reading::default());
    } else {
        if !whole.is_complete() {
            assert!(
                estimated.usage.input_tokens > 0,
                "a request was billed nothing"
            );
        }
        if metered.usage.exact {
            assert_eq!(estimated, metered, "an estimate replaced exact usage");
        }
    }
}

fn assert_sane(metered: &Reading) {
    let usage = &metered.usage;
    for count in [
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    ] {
        assert!(count <= MAX_TOKENS, "count {count} over the bound");
    }
    assert!(usage.cache_read_tokens + usage.cache_write_tokens <= usage.input_tokens);
    assert!(usage.reasoning_tokens <= usage.output_tokens);
    if let Some(model) = &metered.model {
        assert!(!model.is_empty() && model.len() <= MAX_MODEL_LEN);
        assert!(model.bytes().all(|b| (b' '..=b'~').contains(&b)));
    }
}
