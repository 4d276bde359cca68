//! What a request body says that metering, limits and routing need: the model, the output cap,
//! whether it streams, and (Chat Completions) whether it asked for usage in the stream.
//!
//! Request bodies are capped by the caller before they get here (at megabytes: prompts are
//! large), and only the few top-level members read here are built; the rest of the body is
//! checked and skipped ([`parse_request`]). Responses are another matter (see [`crate::meter`]).

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::api::Api;
use crate::error::InvalidInput;
use crate::json::{Checked, Text};
use crate::usage::sanitize_model;

/// The parts of a request body Airlock reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// The model asked for (for Gemini it is in the URL: [`model_from_gemini_path`]); `None`
    /// when absent or not a printable name of at most 256 bytes.
    pub model: Option<String>,
    /// The most output tokens the request allows, when it says.
    pub max_tokens: Option<u64>,
    /// The response will stream (for Gemini the URL says: [`gemini_path_streams`]).
    pub stream: bool,
    /// Chat Completions only: `stream_options.include_usage` is `true`, so the client expects
    /// the usage-only chunk at the end of the stream.
    pub include_usage: bool,
}

/// Reads a request body in `api`'s dialect. Fields of the wrong type are treated as absent (the
/// upstream will refuse them); a body that is not a JSON object is an error.
pub fn parse_request(api: Api, body: &[u8]) -> Result<RequestInfo, InvalidInput> {
    let invalid = |_| InvalidInput::new("body", "must be a json object");
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = Fields::deserialize(&mut de).map_err(invalid)?;
    de.end().map_err(invalid)?;
    Ok(fields.info(api))
}

/// The top-level members a request's reading uses, in every dialect: the scalars read
/// leniently ([`Loose`]), the two rare nested ones as `Value`s. Every other member's value is
/// checked (the body must still be valid JSON) but skipped, not built: a prompt of megabytes
/// costs a scan, not a tree of strings. A repeated name keeps its last value, as a whole parse
/// into a [`Map`] does.
#[derive(Default)]
struct Fields<'de> {
    model: Option<Loose<'de>>,
    stream: Option<Loose<'de>>,
    max_tokens: Option<Loose<'de>>,
    max_completion_tokens: Option<Loose<'de>>,
    max_output_tokens: Option<Loose<'de>>,
    stream_options: Option<Value>,
    generation_config: Option<Value>,
    generation_config_snake: Option<Value>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields::default();
                // Names are borrowed from the body where they have no escapes.
                while let Some(name) = map.next_key::<Text<'de>>()? {
                    match &*name {
                        "model" => fields.model = Some(map.next_value()?),
                        "stream" => fields.stream = Some(map.next_value()?),
                        "max_tokens" => fields.max_tokens = Some(map.next_value()?),
                        "max_completion_tokens" => {
                            fields.max_completion_tokens = Some(map.next_value()?)
                        }
                        "max_output_tokens" => fields.max_output_tokens = Some(map.next_value()?),
                        "stream_options" => fields.stream_options = Some(map.next_value()?),
                        "generationConfig" => fields.generation_config = Some(map.next_value()?),
                        "generation_config" => {
                            fields.generation_config_snake = Some(map.next_value()?)
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }

        de.deserialize_map(FieldsVisitor)
    }
}

/// A member's value as the reading needs it: a string, a non-negative integer, a boolean, or
/// anything else (which every field reads as absent, as `Value::as_str`, `as_u64` and
/// `as_bool` would). Arrays and objects are checked as a `Value` parse checks them.
enum Loose<'de> {
    Str(Text<'de>),
    U64(u64),
    Bool(bool),
    Other,
}

impl<'de> Loose<'de> {
    fn str(this: Option<&Self>) -> Option<&str> {
        match this {
            Some(Loose::Str(text)) => Some(text),
            _ => None,
        }
    }

    fn u64(this: Option<&Self>) -> Option<u64> {
        match this {
            Some(Loose::U64(n)) => Some(*n),
            _ => None,
        }
    }

    fn bool(this: Option<&Self>) -> Option<bool> {
        match this {
            Some(Loose::Bool(b)) => Some(*b),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct LooseVisitor;

        impl<'de> serde::de::Visitor<'de> for LooseVisitor {
            type Value = Loose<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Loose<'de>, E> {
                Ok(Loose::Str(Text(text.into())))
            }

            fn visit_str<E>(self, text: &str) -> Result<Loose<'de>, E> {
                Ok(Loose::Str(Text(text.to_owned().into())))
            }

            fn visit_u64<E>(self, n: u64) -> Result<Loose<'de>, E> {
                Ok(Loose::U64(n))
            }

            fn visit_i64<E>(self, n: i64) -> Result<Loose<'de>, E> {
                // serde_json gives non-negative integers as `u64`; this is a negative one.
                Ok(u64::try_from(n).map_or(Loose::Other, Loose::U64))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Loose<'de>, E> {
                Ok(Loose::Other)
            }

            fn visit_bool<E>(self, b: bool) -> Result<Loose<'de>, E> {
                Ok(Loose::Bool(b))
            }

            fn visit_unit<E>(self) -> Result<Loose<'de>, E> {
                Ok(Loose::Other)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut items: A,
            ) -> Result<Loose<'de>, A::Error> {
                while items.next_element::<Checked>()?.is_some() {}
                Ok(Loose::Other)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut members: A,
            ) -> Result<Loose<'de>, A::Error> {
                while members.next_key::<Text<'de>>()?.is_some() {
                    members.next_value::<Checked>()?;
                }
                Ok(Loose::Other)
            }
        }

        de.deserialize_any(LooseVisitor)
    }
}

impl Fields<'_> {
    /// What the fields say in `api`'s dialect.
    fn info(&self, api: Api) -> RequestInfo {
        let uint = |value: Option<&Value>| value.and_then(Value::as_u64);
        let model =
            Loose::str(self.model.as_ref()).and_then(|model| sanitize_model(model.as_bytes()));
        let stream = Loose::bool(self.stream.as_ref()) == Some(true);
        match api {
            Api::OpenaiCompletions => RequestInfo {
                model,
                // `max_tokens` is deprecated in favour of `max_completion_tokens`; either may come.
                max_tokens: Loose::u64(self.max_completion_tokens.as_ref())
                    .or_else(|| Loose::u64(self.max_tokens.as_ref())),
                stream,
                include_usage: self
                    .stream_options
                    .as_ref()
                    .and_then(|options| options.get("include_usage"))
                    .and_then(Value::as_bool)
                    == Some(true),
            },
            Api::OpenaiResponses => RequestInfo {
                model,
                max_tokens: Loose::u64(self.max_output_tokens.as_ref()),
                stream,
                include_usage: false,
            },
            Api::AnthropicMessages => RequestInfo {
                model,
                max_tokens: Loose::u64(self.max_tokens.as_ref()),
                stream,
                include_usage: false,
            },
            // Protobuf's JSON mapping accepts the snake_case names too.
            Api::Gemini => {
                let config = self
                    .generation_config
                    .as_ref()
                    .or(self.generation_config_snake.as_ref());
                RequestInfo {
                    model: None,
                    max_tokens: config.and_then(|config| {
                        uint(config.get("maxOutputTokens"))
                            .or_else(|| uint(config.get("max_output_tokens")))
                    }),
                    stream: false,
                    include_usage: false,
                }
            }
            Api::None => RequestInfo::default(),
        }
    }
}

/// The model named by a Gemini request path: `/v1beta/models/gemini-2.5-flash:generateContent`
/// and Vertex AI's `/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-pro:
/// streamGenerateContent` both name it after `models/`, before the `:method`.
pub fn model_from_gemini_path(path: &str) -> Option<&str> {
    let path = path.split('?').next().unwrap_or(path);
    let (_, rest) = path.rsplit_once("/models/")?;
    let model = rest.split(':').next().unwrap_or(rest);
    let printable = model.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    (printable && !model.is_empty() && model.len() <= crate::usage::MAX_MODEL_LEN).then_some(model)
}

/// Whether a Gemini request path asks for a stream (`:streamGenerateContent`).
pub fn gemini_path_streams(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    path.ends_with(":streamGenerateContent")
}

/// A Chat Completions body that streams, with `stream_options.include_usage` set to `true` so
/// that the stream ends with the usage the meter needs; `None` when nothing needs changing (the
/// request does not stream, already asks for usage, or is not a JSON object).
///
/// Only `stream_options` changes: a missing one is inserted at the start of the object, and every
/// other byte of the body is kept as it was (key order, number spellings, whitespace). A client
/// that sent `include_usage: false` gets it turned on too; [`RequestInfo::include_usage`] keeps
/// what it asked, so the proxy can drop the usage chunk it did not want
/// ([`is_usage_only_chunk`]).
pub fn with_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let fields: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).ok()?;
    let stream: bool = serde_json::from_str(fields.get("stream")?.get()).ok()?;
    if !stream {
        return None;
    }
    let Some(raw) = fields.get("stream_options") else {
        // A streaming body has at least `stream` in it, so a comma always follows.
        let open = body.iter().position(|&b| b == b'{')?;
        let mut out = Vec::with_capacity(body.len() + 40);
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
        out.extend_from_slice(&body[open + 1..]);
        return Some(out);
    };
    let mut options = match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::Null => Map::new(),
        Value::Object(options) => options,
        // Malformed: the upstream will say so; nothing to fix here.
        _ => return None,
    };
    if options.get("include_usage") == Some(&Value::Bool(true)) {
        return None;
    }
    options.insert("include_usage".to_owned(), Value::Bool(true));
    let replacement = serde_json::to_vec(&options).ok()?;
    // The raw value borrows from `body`, so its address says where it lies.
    let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start + raw.get().len();
    if body.get(start..end) != Some(raw.get().as_bytes()) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + replacement.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(&replacement);
    out.extend_from_slice(&body[end..]);
    Some(out)
}

/// Whether an SSE event's data is a Chat Completions chunk that only carries usage: `choices`
/// is empty and `usage` is set. That is the chunk `include_usage` adds at the end of a stream.
pub fn is_usage_only_chunk(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        choices: Option<Vec<IgnoredAny>>,
        usage: Option<IgnoredAny>,
    }
    // Every other chunk of a stream lacks the key or has `"usage":null`; skip parsing most of
    // them without looking further.
    if !data.windows(7).any(|window| window == b"\"usage\"") {
        return false;
    }
    match serde_json::from_slice::<Chunk>(data) {
        Ok(chunk) => chunk.usage.is_some() && chunk.choices.is_some_and(|c| c.is_empty()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `parse_request` would say had it built the whole body as a `Map` and read it as
    /// `Value`s: the reference its typed reading is held to.
    fn whole(api: Api, body: &[u8]) -> Option<RequestInfo> {
        let fields = serde_json::from_slice::<Map<String, Value>>(body).ok()?;
        Some(info_from(api, &fields))
    }

    fn info_from(api: Api, fields: &Map<String, Value>) -> RequestInfo {
        let uint = |value: Option<&Value>| value.and_then(Value::as_u64);
        let model = fields
            .get("model")
            .and_then(Value::as_str)
            .and_then(|model| sanitize_model(model.as_bytes()));
        let stream = fields.get("stream").and_then(Value::as_bool) == Some(true);
        match api {
            Api::OpenaiCompletions => RequestInfo {
                model,
                max_tokens: uint(fields.get("max_completion_tokens"))
                    .or_else(|| uint(fields.get("max_tokens"))),
                stream,
                include_usage: fields
                    .get("stream_options")
                    .and_then(|options| options.get("include_usage"))
                    .and_then(Value::as_bool)
                    == Some(true),
            },
            Api::OpenaiResponses => RequestInfo {
                model,
                max_tokens: uint(fields.get("max_output_tokens")),
                stream,
                include_usage: false,
            },
            Api::AnthropicMessages => RequestInfo {
                model,
                max_tokens: uint(fields.get("max_tokens")),
                stream,
                include_usage: false,
            },
            Api::Gemini => {
                let config = fields
                    .get("generationConfig")
                    .or_else(|| fields.get("generation_config"));
                RequestInfo {
                    model: None,
                    max_tokens: config.and_then(|config| {
                        uint(config.get("maxOutputTokens"))
                            .or_else(|| uint(config.get("max_output_tokens")))
                    }),
                    stream: false,
                    include_usage: false,
                }
            }
            Api::None => RequestInfo::default(),
        }
    }

    /// Reading only the members used gives what a whole parse gives: the same fields, the last
    /// of a repeated name, the same refusals of what is not one valid JSON object.
    #[test]
    fn reading_only_the_members_used_gives_what_a_whole_parse_gives() {
        let bodies = [
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#,
            r#"{"messages":[{"role":"user","content":"hi \"there\" \u00e9"}],"model":"claude-x","max_tokens":7}"#,
            r#"{"model":"a","model":"b","max_tokens":1,"max_tokens":2}"#,
            r#"{"model":"first","messages":[],"model":null}"#,
            r#"{"mod\u0065l":"escaped-name","max_completion_tokens":9,"max_tokens":3}"#,
            r#"{"model":7,"stream":"yes","max_tokens":-1,"max_output_tokens":1.5}"#,
            r#"{"max_tokens":18446744073709551616,"max_output_tokens":18446744073709551615}"#,
            r#"{"generationConfig":{"maxOutputTokens":64},"generation_config":{"max_output_tokens":8}}"#,
            r#"{"generation_config":{"max_output_tokens":8},"contents":[{"parts":[{"text":"x"}]}]}"#,
            r#"{"stream_options":{"include_usage":false},"stream":true}"#,
            r#"{"tools":[{"a":{"b":[1,2,{"c":"\n"}]}}],"model":"m"}"#,
            r#"  {"model" : "spaced" }  "#,
            r#"{}"#,
            r#"[]"#,
            r#""model""#,
            r#"null"#,
            r#"{"model":"m"} trailing"#,
            r#"{"model":"m"}{}"#,
            r#"{"messages":[1,2,],"model":"m"}"#,
            r#"{"messages":"unterminated}"#,
            r#"{"model":"m","x":tru}"#,
            r#"{"model":"m""#,
            "",
        ];
        for body in bodies {
            for api in Api::ALL {
                assert_eq!(
                    parse_request(api, body.as_bytes()).ok(),
                    whole(api, body.as_bytes()),
                    "{api:?} {body}"
                );
            }
        }
    }

    proptest::proptest! {
        /// The same for bodies of JSON-shaped token soup.
        #[test]
        fn reading_only_the_members_used_agrees_on_any_input(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "{", "}", "[", "]", ":", ",", "\"", "\\", " ", "1", "-2", "3.5", "true",
                "null", "\"model\"", "\"stream\"", "\"max_tokens\"", "\"stream_options\"",
                "\"include_usage\"", "\"generationConfig\"", "\"maxOutputTokens\"",
                "\"gpt-4o\"", "\"x\"", "\"\\u0041\"",
            ]), 0..40)
        ) {
            let body = parts.concat();
            for api in Api::ALL {
                proptest::prop_assert_eq!(
                    parse_request(api, body.as_bytes()).ok(),
                    whole(api, body.as_bytes())
                );
            }
        }
    }

    #[test]
    fn request_fields_per_dialect() {
        /// (model, max_tokens, stream, include_usage)
        type Read<'a> = (Option<&'a str>, Option<u64>, bool, bool);
        let cases: [(Api, &str, Read); 12] = [
            (
                Api::OpenaiCompletions,
                r#"{"model":"gpt-4o","max_tokens":100,"stream":true}"#,
                (Some("gpt-4o"), Some(100), true, false),
            ),
            (
                Api::OpenaiCompletions,
                r#"{"model":"o3","max_completion_tokens":5,"max_tokens":9}"#,
                (Some("o3"), Some(5), false, false),
            ),
            (
                Api::OpenaiCompletions,
                r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
                (Some("m"), None, true, true),
            ),
            (
                Api::OpenaiCompletions,
                r#"{"model":"m","stream":"yes","stream_options":{"include_usage":"true"}}"#,
                (Some("m"), None, false, false),
            ),
            (
                Api::OpenaiCompletions,
                r#"{"model":7,"max_tokens":-1}"#,
                (None, None, false, false),
            ),
            (
                Api::OpenaiResponses,
                r#"{"model":"gpt-5","max_output_tokens":2048,"stream":true}"#,
                (Some("gpt-5"), Some(2048), true, false),
            ),
            (
                Api::AnthropicMessages,
                r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true}"#,
                (Some("claude-sonnet-4-5"), Some(1024), true, false),
            ),
            (
                Api::AnthropicMessages,
                r#"{"model":"claude\u0000","max_tokens":1.5}"#,
                (None, None, false, false),
            ),
            (
                Api::Gemini,
                r#"{"contents":[],"generationConfig":{"maxOutputTokens":300}}"#,
                (None, Some(300), false, false),
            ),
            (
                Api::Gemini,
                r#"{"contents":[],"generation_config":{"max_output_tokens":30}}"#,
                (None, Some(30), false, false),
            ),
            (
                Api::Gemini,
                r#"{"model":"ignored","stream":true}"#,
                (None, None, false, false),
            ),
            (
                Api::None,
                r#"{"model":"m","stream":true}"#,
                (None, None, false, false),
            ),
        ];
        for (api, body, (model, max_tokens, stream, include_usage)) in cases {
            let info = parse_request(api, body.as_bytes()).unwrap();
            let expected = RequestInfo {
                model: model.map(str::to_owned),
                max_tokens,
                stream,
                include_usage,
            };
            assert_eq!(info, expected, "{api} {body}");
        }
    }

    #[test]
    fn non_objects_are_refused() {
        for body in ["", "[]", "null", "\"x\"", "{", "{\"model\":}"] {
            let error = parse_request(Api::OpenaiCompletions, body.as_bytes()).unwrap_err();
            assert_eq!(error.field, "body", "{body:?}");
        }
    }

    #[test]
    fn gemini_paths() {
        let cases = [
            ("/v1beta/models/gemini-2.5-flash:generateContent", Some("gemini-2.5-flash"), false),
            ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", Some("gemini-2.5-flash"), true),
            ("/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent", Some("gemini-2.5-pro"), true),
            ("/v1beta/models/gemini-2.0-flash", Some("gemini-2.0-flash"), false),
            ("/v1beta/models/:generateContent", None, false),
            ("/v1beta/files/abc", None, false),
            ("/v1beta/models/a b:generateContent", None, false),
        ];
        for (path, model, streams) in cases {
            assert_eq!(model_from_gemini_path(path), model, "{path}");
            assert_eq!(gemini_path_streams(path), streams, "{path}");
        }
    }

    #[test]
    fn include_usage_is_added_byte_exactly() {
        let cases: [(&str, Option<&str>); 9] = [
            (
                r#"{"model":"gpt-4o","stream":true,"temperature":1e0}"#,
                Some(
                    r#"{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"temperature":1e0}"#,
                ),
            ),
            (
                " {\n  \"stream\": true\n}",
                Some(" {\"stream_options\":{\"include_usage\":true},\n  \"stream\": true\n}"),
            ),
            (
                r#"{"stream":true,"stream_options":{"include_obfuscation":false},"n":12345678901234567890123}"#,
                Some(
                    r#"{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true},"n":12345678901234567890123}"#,
                ),
            ),
            (
                r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
                Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
            ),
            (
                r#"{"stream":true,"stream_options":null}"#,
                Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
            ),
            (
                r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
                None,
            ),
            (r#"{"stream":false}"#, None),
            (r#"{"model":"gpt-4o"}"#, None),
            (r#"{"stream":true,"stream_options":[1]}"#, None),
        ];
        for (body, expected) in cases {
            let got = with_include_usage(body.as_bytes());
            let got = got.as_deref().map(|b| std::str::from_utf8(b).unwrap());
            assert_eq!(got, expected, "{body}");
            if let Some(got) = got {
                let info = parse_request(Api::OpenaiCompletions, got.as_bytes()).unwrap();
                assert!(info.include_usage && info.stream, "{got}");
            }
        }
        for body in ["", "[]", "not json", "{\"stream\":true"] {
            assert_eq!(with_include_usage(body.as_bytes()), None, "{body:?}");
        }
    }

    #[test]
    fn usage_only_chunks() {
        let cases = [
            (
                r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
                true,
            ),
            (
                r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#,
                false,
            ),
            (
                r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":9}}"#,
                false,
            ),
            (r#"{"id":"c","choices":[],"usage":null}"#, false),
            (r#"{"id":"c","choices":[]}"#, false),
            (r#"{"id":"c","usage":{"prompt_tokens":9}}"#, false),
            ("[DONE]", false),
            (r#"{"choices":[],"usage":{}"#, false),
        ];
        for (data, expected) in cases {
            assert_eq!(is_usage_only_chunk(data.as_bytes()), expected, "{data}");
        }
    }
}
