//! The translation's fuzz target body, as a plain function: the property tests (and a
//! cargo-fuzz target, when one is added) call [`fuzz_translate`] with arbitrary bytes, and it
//! panics if a promise of SECURITY #30 is broken.

use super::{
    anthropic_to_openai_request, anthropic_to_openai_response, openai_to_anthropic_request,
    openai_to_anthropic_response, translate_error_body, translate_gemini_error_body,
    translate_gemini_response, translate_request_to_gemini, Dialect, RequestOptions, StreamOptions,
    StreamTranslator, MAX_EVENT_BYTES,
};

/// Reads the first byte as a choice of direction and a seed for where to cut, then runs every
/// translation on the rest and checks:
/// - nothing panics; every result is either an error or JSON;
/// - an error body is always JSON in the target dialect;
/// - a whole answer or a stream event read the typed way gives the same result as read by way
///   of a `Value`;
/// - a stream translated whole and cut into pieces of 1 to 64 bytes gives the same bytes, the
///   same flags, and never holds more than [`MAX_EVENT_BYTES`] of partial event.
pub fn fuzz_translate(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let from = if control & 1 == 0 {
        Dialect::OpenaiChat
    } else {
        Dialect::AnthropicMessages
    };
    let opts = RequestOptions::new("model-x");
    // The typed reading of an answer gives what the `Value` reading gives, or defers to it.
    assert_eq!(
        anthropic_to_openai_response(body, 1).map_err(|e| e.message),
        super::response::anthropic_to_openai_by_value(body, 1).map_err(|e| e.message),
    );
    assert_eq!(
        openai_to_anthropic_response(body).map_err(|e| e.message),
        super::response::openai_to_anthropic_by_value(body).map_err(|e| e.message),
    );
    // So does the typed reading of a request, in either dialect, when it reads it.
    let mut request_opts = opts;
    for reasoning in [true, false] {
        request_opts.reasoning = reasoning;
        request_opts.max_tokens_field = if control & 8 == 0 {
            super::MaxTokensField::MaxCompletionTokens
        } else {
            super::MaxTokensField::MaxTokens
        };
        let o = &request_opts;
        same_request(
            super::chat_request::openai_to_anthropic_typed(body, o),
            || super::request::openai_to_anthropic(&super::json::parse_object(body)?, o),
        );
        same_request(
            super::messages_request::anthropic_to_openai_typed(body, o),
            || super::request::anthropic_to_openai(&super::json::parse_object(body)?, o),
        );
    }
    let results = [
        openai_to_anthropic_request(body, &opts),
        anthropic_to_openai_request(body, &opts),
        anthropic_to_openai_response(body, 1),
        openai_to_anthropic_response(body),
        translate_request_to_gemini(from, body, &opts),
        translate_gemini_response(from, body, 1),
    ];
    for result in results {
        match result {
            Ok(out) => assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok()),
            Err(error) => assert!(!error.message.is_empty()),
        }
    }
    let error = translate_error_body(from, 500, body);
    assert!(serde_json::from_slice::<serde_json::Value>(&error).is_ok());
    let error = translate_gemini_error_body(from, 500, body);
    assert!(serde_json::from_slice::<serde_json::Value>(&error).is_ok());

    let stream_opts = StreamOptions {
        created: 1,
        include_usage: control & 2 != 0,
    };
    // A Gemini stream into `from` (as the client's dialect) when the fourth bit is set.
    let gemini = control & 4 != 0;
    let make = || {
        if gemini {
            StreamTranslator::from_gemini(from, stream_opts)
        } else {
            StreamTranslator::new(from, stream_opts)
        }
    };
    let mut whole = make();
    let mut whole_out = Vec::new();
    whole.feed(body, &mut whole_out);
    whole.finish(&mut whole_out);

    let mut cut = make();
    let mut cut_out = Vec::new();
    let mut seed = u64::from(control >> 3) ^ 0x9e37_79b9_7f4a_7c15;
    let mut rest = body;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (1 + (seed % 64) as usize).min(rest.len());
        cut.feed(&rest[..n], &mut cut_out);
        assert!(cut.buffered_bytes() <= MAX_EVENT_BYTES + 64);
        rest = &rest[n..];
    }
    cut.finish(&mut cut_out);
    assert_eq!(whole_out, cut_out, "cutting the stream changed the output");
    assert_eq!(whole.is_content_started(), cut.is_content_started());
    assert_eq!(whole.upstream_error(), cut.upstream_error());
    assert!(whole.is_done(), "a finished stream is done");

    // Events read typed give the bytes that events read as `Value`s give.
    let mut by_value = make().value_only();
    let mut by_value_out = Vec::new();
    by_value.feed(body, &mut by_value_out);
    by_value.finish(&mut by_value_out);
    assert_eq!(
        whole_out, by_value_out,
        "the typed reading changed the output"
    );
}

/// A typed reading of a request, when it reads it, gives the bytes of the `Value` reading.
fn same_request(
    typed: Option<Vec<u8>>,
    by_value: impl FnOnce() -> Result<Vec<u8>, super::TranslateError>,
) {
    if let Some(typed) = typed {
        let by_value = by_value();
        assert_eq!(
            Ok(String::from_utf8_lossy(&typed)),
            by_value
                .as_ref()
                .map(|b| String::from_utf8_lossy(b))
                .map_err(|e| &e.message),
            "the typed reading of a request changed the output"
        );
    }
}
