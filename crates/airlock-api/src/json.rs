//! Request bodies: JSON with unknown fields refused and errors that name the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body the API reads. A secret value may be 64 KiB; JSON escaping can make it
/// up to six times larger.
pub(crate) const MAX_BODY: usize = 512 * 1024;

/// A JSON body. An empty body reads as `{}` so that `POST …/delete` and `…/shutdown` work with
/// clients that send nothing.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            ApiError::TooLarge(format!("the request body must be at most {MAX_BODY} bytes"))
        })?;
        parse(&bytes).map(Body)
    }
}

pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // serde reads a struct from an array too; the API takes objects only.
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::Invalid("the body must be a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json's messages describe the problem and, for values, quote at most the type, not
        // the content ("invalid type: integer `3`" quotes numbers only).
        let what = inner.to_string();
        let what = redact_strings(what.split(" at line ").next().unwrap_or(&what));
        if inner.is_syntax() || inner.is_eof() {
            ApiError::Invalid(format!("the body is not valid JSON: {what}"))
        } else if path == "." || path.is_empty() {
            ApiError::Invalid(what)
        } else {
            ApiError::Invalid(format!("{path}: {what}"))
        }
    })?;
    // One JSON object and nothing after it but whitespace: `{…}{…}` or `{…}x` is not a body
    // whose meaning is clear, so it is refused rather than read up to the first object.
    de.end().map_err(|_| {
        ApiError::Invalid("the body is not valid JSON: characters after the JSON object".into())
    })?;
    Ok(value)
}

/// serde quotes a mistyped string value (`invalid type: string "…", expected …`); that string may
/// be a secret sent in the wrong field, so the quote is cut out.
fn redact_strings(message: &str) -> String {
    const MARK: &str = "invalid type: string \"";
    match (message.find(MARK), message.rfind("\", expected")) {
        (Some(start), Some(end)) if end >= start + MARK.len() => {
            format!(
                "{}invalid type: string{}",
                &message[..start],
                &message[end + 1..]
            )
        }
        _ => message.to_owned(),
    }
}

/// A query string, with a malformed one answered in the API's error shape.
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                ApiError::Invalid(format!(
                    "the query string does not parse: {}",
                    e.body_text()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        n: u32,
        s: Option<String>,
    }

    #[test]
    fn errors_name_the_field_and_never_quote_strings() {
        for (body, expected) in [
            (&b"{"[..], "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (
                b"{\"n\": \"sk-secret-value\"}",
                "n: invalid type: string, expected u32",
            ),
            (b"{\"n\": 1, \"extra\": 2}", "unknown field `extra`"),
            (
                b"{\"n\": 1, \"s\": 5}",
                "s: invalid type: integer `5`, expected a string",
            ),
            (b"{}", "missing field `n`"),
            (b"{\"n\": 1}{\"n\": 2}", "characters after the JSON object"),
            (b"{\"n\": 1} x", "characters after the JSON object"),
            (
                b"{\"n\": 1}\"sk-secret-value\"",
                "characters after the JSON object",
            ),
        ] {
            let err = parse::<Probe>(body).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("sk-secret-value"), "{err}");
        }
        assert!(parse::<Probe>(b"  ")
            .unwrap_err()
            .to_string()
            .contains("missing field `n`"));
        // Whitespace after the object is fine.
        assert_eq!(parse::<Probe>(b"{\"n\": 7}\r\n ").unwrap().n, 7);
    }
}
