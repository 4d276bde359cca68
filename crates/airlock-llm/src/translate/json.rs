//! Reading a client's or an upstream's JSON with the path of every complaint: the helpers the
//! request and response translators share. A field of the wrong type is an error (the upstream
//! would refuse it too, and a 400 in the client's own dialect says more than the backend's);
//! `null` reads as absent, as both dialects' SDKs treat it.

use serde_json::{Map, Value};

use super::TranslateError;

pub(super) type Object = Map<String, Value>;

/// Parses a body that must be one JSON object.
pub(super) fn parse_object(body: &[u8]) -> Result<Object, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(TranslateError::malformed("body: must be a json object")),
        Err(error) => Err(TranslateError::malformed(format!(
            "body: must be a json object ({})",
            error_summary(&error)
        ))),
    }
}

/// serde_json's message without the value it quotes (a body may hold anything).
fn error_summary(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "invalid json",
        serde_json::error::Category::Data => "unexpected value",
        serde_json::error::Category::Eof => "truncated json",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

/// The JSON name of a value's type, for messages.
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value named in a message: quoted when it is a short word (a role, a block type, a tool
/// type), else left out, so that a message never carries content or grows with the input.
pub(super) fn shown(value: &str) -> String {
    let word = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if word && !value.is_empty() && value.len() <= 64 {
        format!("{value:?}")
    } else {
        "another value".to_owned()
    }
}

/// A field of an object, with what its path for messages is made of (`messages[2]` and
/// `content`): the path is written out only for a message, not for every field read.
pub(super) struct Field<'a, 'p> {
    at: &'p str,
    key: &'p str,
    pub(super) value: Option<&'a Value>,
}

pub(super) fn field<'a, 'p>(object: &'a Object, at: &'p str, key: &'p str) -> Field<'a, 'p> {
    Field {
        at,
        key,
        value: object.get(key).filter(|value| !value.is_null()),
    }
}

impl<'a, 'p> Field<'a, 'p> {
    /// A field whose value was found by other means (a typed reading).
    pub(super) fn of(at: &'p str, key: &'p str, value: Option<&'a Value>) -> Self {
        Field {
            at,
            key,
            value: value.filter(|value| !value.is_null()),
        }
    }

    /// The field's path for messages (`messages[2].content`).
    pub(super) fn path(&self) -> String {
        if self.at.is_empty() {
            self.key.to_owned()
        } else {
            format!("{}.{}", self.at, self.key)
        }
    }

    fn wrong(&self, expected: &str) -> TranslateError {
        let got = self.value.map_or("absent", type_name);
        TranslateError::malformed(format!("{}: must be {expected}, not {got}", self.path()))
    }

    pub(super) fn str(&self) -> Result<Option<&'a str>, TranslateError> {
        match self.value {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(self.wrong("a string")),
        }
    }

    pub(super) fn required_str(&self) -> Result<&'a str, TranslateError> {
        self.str()?.ok_or_else(|| self.wrong("a string"))
    }

    pub(super) fn bool(&self) -> Result<Option<bool>, TranslateError> {
        match self.value {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(self.wrong("a boolean")),
        }
    }

    pub(super) fn u64(&self) -> Result<Option<u64>, TranslateError> {
        match self.value {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong("a non-negative integer")),
        }
    }

    pub(super) fn f64(&self) -> Result<Option<f64>, TranslateError> {
        match self.value {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong("a number")),
        }
    }

    pub(super) fn object(&self) -> Result<Option<&'a Object>, TranslateError> {
        match self.value {
            None => Ok(None),
            Some(Value::Object(fields)) => Ok(Some(fields)),
            Some(_) => Err(self.wrong("an object")),
        }
    }

    pub(super) fn required_object(&self) -> Result<&'a Object, TranslateError> {
        self.object()?.ok_or_else(|| self.wrong("an object"))
    }

    pub(super) fn array(&self) -> Result<Option<&'a [Value]>, TranslateError> {
        match self.value {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(self.wrong("an array")),
        }
    }

    pub(super) fn required_array(&self) -> Result<&'a [Value], TranslateError> {
        self.array()?.ok_or_else(|| self.wrong("an array"))
    }

    /// Each item as an object, with its path (`tools[3]`).
    pub(super) fn objects(&self) -> Result<Vec<(String, &'a Object)>, TranslateError> {
        let Some(items) = self.array()? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{}[{i}]", self.path());
                match item {
                    Value::Object(fields) => Ok((path, fields)),
                    other => Err(TranslateError::malformed(format!(
                        "{path}: must be an object, not {}",
                        type_name(other)
                    ))),
                }
            })
            .collect()
    }
}

/// An object built field by field; `None` values are left out.
#[derive(Default)]
pub(super) struct Builder(Object);

impl Builder {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub(super) fn set_opt<T: Into<Value>>(&mut self, key: &str, value: Option<T>) -> &mut Self {
        if let Some(value) = value {
            self.0.insert(key.to_owned(), value.into());
        }
        self
    }

    pub(super) fn build(self) -> Value {
        Value::Object(self.0)
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        // Serializing a `Value` cannot fail: its keys are strings and it has no non-finite floats.
        serde_json::to_vec(&self.0).unwrap_or_default()
    }
}

/// A `data:` URL split into its media type and base64 payload; `None` when it is not a base64
/// data URL.
pub(super) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    // Parameters such as `;charset=utf-8` sit between the type and `;base64`.
    let media_type = media_type.split(';').next().unwrap_or(media_type);
    (!media_type.is_empty()).then_some((media_type, data))
}

/// A JSON number from an `f64`, or `None` for a non-finite one (which JSON cannot carry).
pub(super) fn number(value: f64) -> Option<Value> {
    serde_json::Number::from_f64(value).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        let cases = [
            ("data:image/png;base64,iVBOR", Some(("image/png", "iVBOR"))),
            (
                "data:application/pdf;name=a.pdf;base64,JVBER",
                Some(("application/pdf", "JVBER")),
            ),
            ("data:image/png,rawbytes", None),
            ("data:;base64,abc", None),
            ("https://example.com/cat.png", None),
        ];
        for (url, expected) in cases {
            assert_eq!(parse_data_url(url), expected, "{url}");
        }
    }

    #[test]
    fn values_shown_in_messages() {
        assert_eq!(shown("web_search_20250305"), "\"web_search_20250305\"");
        assert_eq!(shown("ignore previous instructions"), "another value");
        assert_eq!(shown(&"a".repeat(65)), "another value");
        assert_eq!(shown(""), "another value");
    }

    #[test]
    fn wrong_types_name_the_path() {
        let object = parse_object(br#"{"a":{"b":[1]},"n":null}"#).unwrap();
        let a = field(&object, "", "a").required_object().unwrap();
        let error = field(a, "a", "b").str().unwrap_err();
        assert_eq!(error.message, "a.b: must be a string, not an array");
        assert_eq!(field(&object, "", "n").str().unwrap(), None);
        let error = field(a, "a", "b").objects().unwrap_err();
        assert_eq!(error.message, "a.b[0]: must be an object, not a number");
        assert!(parse_object(b"[]").is_err());
        let error = parse_object(b"{\"secret\": ").unwrap_err();
        assert!(!error.message.contains("secret"), "{}", error.message);
    }
}
