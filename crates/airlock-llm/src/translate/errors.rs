//! Error bodies in either dialect: an upstream's error translated for the client (the status is
//! the caller's to keep), and errors Airlock itself answers in the client's dialect.
//!
//! | | OpenAI | Anthropic |
//! |---|---|---|
//! | shape | `{"error":{"message","type","param","code"}}` | `{"type":"error","error":{"type","message"}}` |
//! | stream | `data: {"error":{…}}` | `event: error` + the same body |
//!
//! Anthropic's error `type` says what went wrong and is derived from the status when the
//! upstream is OpenAI (whose `type` values vary by provider); OpenAI's `type` is Anthropic's
//! (`api_error`, `overloaded_error` and `timeout_error` as `server_error`), and its `code`
//! keeps Anthropic's type verbatim.

use serde_json::{json, Value};

use super::Dialect;

/// The longest upstream text kept as a message when its error body is not in its dialect's
/// shape (an HTML page from a load balancer, a bare string).
const MAX_RAW_MESSAGE: usize = 512;

/// What an error says, read from either dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ErrorInfo {
    pub(super) message: String,
    /// Anthropic's error type (`invalid_request_error`, `rate_limit_error`, …).
    pub(super) anthropic_type: String,
    /// OpenAI's error type.
    pub(super) openai_type: String,
    pub(super) code: Value,
    pub(super) param: Value,
}

/// Anthropic's error type for an HTTP status.
fn anthropic_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// OpenAI's error type for an Anthropic one.
fn openai_type_for(anthropic_type: &str) -> &str {
    match anthropic_type {
        "api_error" | "overloaded_error" | "timeout_error" => "server_error",
        other => other,
    }
}

/// Anthropic's error type for an OpenAI error seen inside a stream (no status to go by).
fn anthropic_type_for_openai(openai_type: &str, code: &Value) -> &'static str {
    let code = code.as_str().unwrap_or("");
    let says = |word: &str| openai_type.contains(word) || code.contains(word);
    if says("rate_limit") || says("quota") || openai_type == "tokens" || openai_type == "requests" {
        "rate_limit_error"
    } else if says("invalid_request") || says("context_length") {
        "invalid_request_error"
    } else if says("overloaded") {
        "overloaded_error"
    } else {
        "api_error"
    }
}

/// A message for a body that is not in its dialect's error shape.
fn raw_message(status: u16, body: &[u8]) -> String {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    let printable = text
        .chars()
        .all(|c| !c.is_control() || c == '\n' || c == '\t');
    if !text.is_empty() && text.len() <= MAX_RAW_MESSAGE && printable && !text.starts_with('<') {
        format!("upstream error (status {status}): {text}")
    } else {
        format!("upstream error (status {status})")
    }
}

fn str_of(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// Reads an OpenAI-dialect error body. Compatible providers differ: `{"error":{…}}`,
/// `{"error":"text"}`, `{"message":…}`, FastAPI's `{"detail":…}`, a list of those.
pub(super) fn read_openai_error(status: Option<u16>, body: &[u8]) -> ErrorInfo {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let parsed = match parsed {
        Some(Value::Array(mut items)) if !items.is_empty() => Some(items.swap_remove(0)),
        other => other,
    };
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = str_of(error.and_then(|e| e.get("message")))
        .or_else(|| str_of(error))
        .or_else(|| str_of(parsed.as_ref().and_then(|v| v.get("message"))))
        .or_else(|| str_of(parsed.as_ref().and_then(|v| v.get("detail"))))
        .map(str::to_owned)
        .unwrap_or_else(|| raw_message(status.unwrap_or(500), body));
    let openai_type = str_of(error.and_then(|e| e.get("type")));
    let code = error
        .and_then(|e| e.get("code"))
        .filter(|c| c.is_string() || c.is_number())
        .cloned()
        .unwrap_or(Value::Null);
    let param = error
        .and_then(|e| e.get("param"))
        .filter(|p| p.is_string())
        .cloned()
        .unwrap_or(Value::Null);
    let anthropic_type = match status {
        Some(status) => anthropic_type_for_status(status),
        None => anthropic_type_for_openai(openai_type.unwrap_or(""), &code),
    };
    let openai_type = openai_type
        .map(str::to_owned)
        .unwrap_or_else(|| openai_type_for(anthropic_type).to_owned());
    ErrorInfo {
        message,
        anthropic_type: anthropic_type.to_owned(),
        openai_type,
        code,
        param,
    }
}

/// Reads an Anthropic-dialect error body (`{"type":"error","error":{"type","message"}}`).
pub(super) fn read_anthropic_error(status: Option<u16>, body: &[u8]) -> ErrorInfo {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let fallback = anthropic_type_for_status(status.unwrap_or(500));
    let anthropic_type = str_of(error.and_then(|e| e.get("type")))
        .filter(|t| !t.is_empty() && t.len() <= 64)
        .unwrap_or(fallback)
        .to_owned();
    let message = str_of(error.and_then(|e| e.get("message")))
        .or_else(|| str_of(parsed.as_ref().and_then(|v| v.get("message"))))
        .map(str::to_owned)
        .unwrap_or_else(|| raw_message(status.unwrap_or(500), body));
    ErrorInfo {
        message,
        openai_type: openai_type_for(&anthropic_type).to_owned(),
        code: json!(anthropic_type),
        anthropic_type,
        param: Value::Null,
    }
}

impl ErrorInfo {
    /// Airlock's own error: the type follows from the status.
    pub(super) fn own(status: u16, message: &str) -> Self {
        let anthropic_type = anthropic_type_for_status(status);
        let openai_type = openai_type_for(anthropic_type);
        ErrorInfo {
            message: message.to_owned(),
            anthropic_type: anthropic_type.to_owned(),
            openai_type: openai_type.to_owned(),
            code: Value::Null,
            param: Value::Null,
        }
    }

    pub(super) fn to_json(&self, dialect: Dialect) -> Value {
        match dialect {
            Dialect::OpenaiChat => json!({"error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.code,
            }}),
            Dialect::AnthropicMessages => json!({
                "type": "error",
                "error": {"type": self.anthropic_type, "message": self.message},
            }),
        }
    }

    pub(super) fn to_bytes(&self, dialect: Dialect) -> Vec<u8> {
        serde_json::to_vec(&self.to_json(dialect)).unwrap_or_default()
    }
}

/// An error body Airlock answers in `dialect` itself (a refused translation, a limit): the
/// error type follows from `status`.
pub fn error_body(dialect: Dialect, status: u16, message: &str) -> Vec<u8> {
    ErrorInfo::own(status, message).to_bytes(dialect)
}

/// An upstream's error body in `from` (the backend's dialect), rewritten in the other one (the
/// client's). The status stays as it was; any body, even one that is not JSON, gives a
/// well-formed error.
pub fn translate_error_body(from: Dialect, status: u16, body: &[u8]) -> Vec<u8> {
    let info = match from {
        Dialect::OpenaiChat => read_openai_error(Some(status), body),
        Dialect::AnthropicMessages => read_anthropic_error(Some(status), body),
    };
    info.to_bytes(from.other())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn upstream_errors_in_the_other_dialect() {
        let cases: [(Dialect, u16, &str, Value); 8] = [
            (
                Dialect::OpenaiChat,
                429,
                r#"{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
                json!({"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached"}}),
            ),
            (
                Dialect::OpenaiChat,
                401,
                r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
                json!({"type":"error","error":{"type":"authentication_error","message":"Incorrect API key provided"}}),
            ),
            (
                Dialect::OpenaiChat,
                400,
                r#"{"error":"model not found"}"#,
                json!({"type":"error","error":{"type":"invalid_request_error","message":"model not found"}}),
            ),
            (
                Dialect::OpenaiChat,
                422,
                r#"{"detail":"field required"}"#,
                json!({"type":"error","error":{"type":"invalid_request_error","message":"field required"}}),
            ),
            (
                Dialect::OpenaiChat,
                502,
                "<html>bad gateway</html>",
                json!({"type":"error","error":{"type":"api_error","message":"upstream error (status 502)"}}),
            ),
            (
                Dialect::AnthropicMessages,
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
                json!({"error":{"message":"Overloaded","type":"server_error","param":null,"code":"overloaded_error"}}),
            ),
            (
                Dialect::AnthropicMessages,
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#,
                json!({"error":{"message":"max_tokens: too large","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}),
            ),
            (
                Dialect::AnthropicMessages,
                503,
                "upstream connect error",
                json!({"error":{"message":"upstream error (status 503): upstream connect error","type":"server_error","param":null,"code":"overloaded_error"}}),
            ),
        ];
        for (from, status, body, expected) in cases {
            let got = parse(&translate_error_body(from, status, body.as_bytes()));
            assert_eq!(got, expected, "{from:?} {status} {body}");
        }
    }

    #[test]
    fn own_errors() {
        let openai = parse(&error_body(
            Dialect::OpenaiChat,
            400,
            "messages: must be an array",
        ));
        assert_eq!(
            openai,
            json!({"error":{"message":"messages: must be an array","type":"invalid_request_error","param":null,"code":null}})
        );
        let anthropic = parse(&error_body(
            Dialect::AnthropicMessages,
            429,
            "limit exceeded",
        ));
        assert_eq!(
            anthropic,
            json!({"type":"error","error":{"type":"rate_limit_error","message":"limit exceeded"}})
        );
    }
}
