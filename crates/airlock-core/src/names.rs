//! Names: environment-variable names (secret names and gateway prefixes) and free-form labels.

use std::fmt;

use crate::error::InvalidInput;

/// Longest environment-variable name accepted. Shells accept more, but no real credential needs it
/// and a bound keeps rows and environment blocks small.
pub const MAX_ENV_NAME: usize = 128;
/// Longest label (gateway config and devbox names, descriptions are separate).
pub const MAX_LABEL: usize = 256;

/// An environment-variable name: `[A-Za-z_][A-Za-z0-9_]*`. Secret names and the `PREFIX` of a
/// devbox's gateway map are both put into a sandbox's environment, so both must be one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        let mut chars = text.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if text.is_empty() {
            return Err(InvalidInput::new(field, "must not be empty"));
        }
        if text.len() > MAX_ENV_NAME {
            return Err(InvalidInput::new(
                field,
                format!("must be at most {MAX_ENV_NAME} characters"),
            ));
        }
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InvalidInput::new(
                field,
                "must be an environment variable name: a letter or underscore, then letters, digits or underscores",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn from_trusted(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A human-readable label: not empty, at most [`MAX_LABEL`] characters, no control characters
/// (they would garble logs and terminals).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Label(String);

impl Label {
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        Self::parse_bounded(field, text, MAX_LABEL)
    }

    /// Like [`Label::parse`] with another bound (descriptions are longer).
    pub fn parse_bounded(field: &str, text: &str, max: usize) -> Result<Self, InvalidInput> {
        if text.trim().is_empty() {
            return Err(InvalidInput::new(field, "must not be empty"));
        }
        if text.chars().count() > max {
            return Err(InvalidInput::new(
                field,
                format!("must be at most {max} characters"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(InvalidInput::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn from_trusted(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        for ok in ["A", "_", "OPENAI_API_KEY", "a1_b2", "_9"] {
            assert!(EnvName::parse("name", ok).is_ok(), "{ok}");
        }
        for (bad, msg) in [
            ("", "must not be empty"),
            ("1ABC", "environment variable name"),
            ("A-B", "environment variable name"),
            ("A B", "environment variable name"),
            ("Ä", "environment variable name"),
            ("A=B", "environment variable name"),
        ] {
            let err = EnvName::parse("name", bad).unwrap_err();
            assert_eq!(err.field, "name");
            assert!(err.message.contains(msg), "{bad}: {}", err.message);
        }
        let long = "A".repeat(MAX_ENV_NAME + 1);
        assert!(EnvName::parse("name", &long)
            .unwrap_err()
            .message
            .contains("at most"));
    }

    #[test]
    fn labels() {
        assert!(Label::parse("name", "anthropic prod").is_ok());
        for bad in ["", "   ", "a\nb", "a\u{7}"] {
            assert!(Label::parse("name", bad).is_err(), "{bad:?}");
        }
        assert!(Label::parse("name", &"x".repeat(MAX_LABEL + 1)).is_err());
    }
}
