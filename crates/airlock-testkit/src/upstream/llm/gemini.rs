//! Gemini (`generativelanguage.googleapis.com` and Vertex's publisher paths): the model in the
//! path, `GenerateContentResponse` with `usageMetadata` (`promptTokenCount` counts the cached
//! tokens too, `candidatesTokenCount` leaves the thoughts out), streams as SSE (`?alt=sse`) or as
//! a JSON array written piece by piece, each chunk with the running `usageMetadata`.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use super::{
    joined, next_id, pieces, prompt_words, CacheWrites, Tokens, Turn, ERROR_MODEL, PROMPT_OVERHEAD,
    REASONING_SUMMARY, TOOL_INPUT,
};
use crate::upstream::{RecordedRequest, Reply, Responder};

/// Answers `POST …/models/{model}:generateContent`, `:streamGenerateContent` and `:countTokens`
/// like the Gemini API; 404 for anything else. See the [module docs](super) for what it says and
/// counts.
pub fn gemini() -> Responder {
    Arc::new(reply)
}

fn error(code: u16, status: &str, message: &str) -> Reply {
    Reply::json(
        code,
        &json!({"error": {"code": code, "message": message, "status": status}}),
    )
    .with_header("x-should-retry", "false")
}

/// The model and method of a path: `…/models/{model}:{method}`.
fn model_and_method(path: &str) -> Option<(&str, &str)> {
    let (_, rest) = path.rsplit_once("/models/")?;
    rest.split_once(':')
}

/// `usageMetadata` after `candidates` visible output tokens (a stream's running count; the
/// thoughts and the prompt are counted from the first chunk on).
fn usage_metadata(t: &Tokens, candidates: u64) -> Value {
    let mut usage = json!({
        "promptTokenCount": t.input,
        "candidatesTokenCount": candidates,
        "totalTokenCount": t.input + candidates + t.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": t.input}],
    });
    if t.cache_read > 0 {
        usage["cachedContentTokenCount"] = json!(t.cache_read);
        usage["cacheTokensDetails"] = json!([{"modality": "TEXT", "tokenCount": t.cache_read}]);
    }
    if t.reasoning > 0 {
        usage["thoughtsTokenCount"] = json!(t.reasoning);
    }
    usage
}

fn reply(req: &RecordedRequest) -> Reply {
    let path = req.path();
    let Some((model, method)) = model_and_method(path).filter(|_| req.method == Method::POST)
    else {
        return error(
            404,
            "NOT_FOUND",
            &format!("The requested URL {path} was not found on this server."),
        );
    };
    let Some(body) = req.body_json() else {
        return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
    };
    if model == ERROR_MODEL {
        return error(
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted: the recording upstream always refuses error-model.",
        );
    }
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let words = prompt_words(&body["systemInstruction"]["parts"], &contents, "parts");
    let streaming = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        "countTokens" => {
            return Reply::json(
                200,
                &json!({"totalTokens": PROMPT_OVERHEAD + words,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_OVERHEAD + words}]}),
            )
        }
        _ => {
            return error(
                404,
                "NOT_FOUND",
                &format!("The requested URL {path} was not found on this server."),
            )
        }
    };
    // The last user turn (a turn without a role is the user's).
    let last_user = contents
        .iter()
        .rev()
        .find(|c| c["role"].is_null() || c["role"] == "user")
        .map(|c| joined(&c["parts"]))
        .unwrap_or_default();
    let tool = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|t| t["functionDeclarations"][0]["name"].as_str())
        .map(str::to_owned);
    let turn = Turn::new(model, words, &last_user, tool, false, CacheWrites::Never);
    let show_thoughts =
        turn.reasoning && body["generationConfig"]["thinkingConfig"]["includeThoughts"] == true;
    let response_id = format!("airlock{}", next_id());
    let chunk = |parts: Vec<Value>, finished: bool, candidates: u64| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if finished {
            candidate["finishReason"] = json!("STOP");
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": usage_metadata(&turn.tokens, candidates),
            "modelVersion": turn.model,
            "responseId": response_id,
        })
    };
    let thought = json!({"text": REASONING_SUMMARY, "thought": true});
    let call = |name: &str| {
        json!({"functionCall": {"name": name,
            "args": serde_json::from_str::<Value>(TOOL_INPUT).unwrap_or_default()}})
    };
    let visible = turn.tokens.visible_output();

    if !streaming {
        let mut parts = Vec::new();
        if show_thoughts {
            parts.push(thought);
        }
        parts.push(match &turn.tool {
            Some(name) => call(name),
            None => json!({"text": turn.text}),
        });
        return Reply::json(200, &chunk(parts, true, visible));
    }

    // Chunks: the thoughts (when shown), then the answer piece by piece; each chunk's usage
    // counts the output so far.
    let mut chunks = Vec::new();
    if show_thoughts {
        chunks.push(chunk(vec![thought], false, 0));
    }
    match &turn.tool {
        Some(name) => chunks.push(chunk(vec![call(name)], true, visible)),
        None => {
            let pieces = pieces(&turn.text, 6);
            let last = pieces.len() - 1;
            let mut so_far = 0;
            for (i, piece) in pieces.into_iter().enumerate() {
                so_far += super::count_words(&piece);
                chunks.push(chunk(vec![json!({"text": piece})], i == last, so_far));
            }
        }
    }
    if req
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"))
    {
        let events = chunks
            .iter()
            .map(|c| format!("data: {c}\r\n\r\n"))
            .collect();
        return Reply::sse(turn.spaced(events));
    }
    // Without `alt=sse`: one JSON array, its elements written as they are made.
    let last = chunks.len() - 1;
    let pieces = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let open = if i == 0 { "[" } else { ",\r\n" };
            let close = if i == last { "]" } else { "" };
            format!("{open}{c}{close}")
        })
        .collect();
    Reply::Stream {
        status: 200,
        headers: vec![(
            "content-type".into(),
            "application/json; charset=UTF-8".into(),
        )],
        chunks: turn
            .spaced(pieces)
            .into_iter()
            .map(|(delay, piece)| (delay, Bytes::from(piece)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_model_and_method() {
        for (path, expected) in [
            (
                "/v1beta/models/gemini-test:generateContent",
                Some(("gemini-test", "generateContent")),
            ),
            (
                "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent",
                Some(("gemini-2.5-pro", "streamGenerateContent")),
            ),
            ("/v1beta/models/gemini-test", None),
            ("/v1beta/chat/completions", None),
        ] {
            assert_eq!(model_and_method(path), expected, "{path}");
        }
    }
}
