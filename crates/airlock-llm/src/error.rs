//! The crate's one validation error: which field, and what is wrong with it.
//!
//! It has the shape of `airlock_core::InvalidInput` (this crate does not depend on the domain
//! crate, to stay small enough to fuzz on its own), so the API crate maps one onto the other field
//! by field.

/// A value that failed to parse. `field` names the input field as the API spells it (empty when
/// the caller will name it with [`InvalidInput::within`]); `message` says what is wrong without
/// repeating the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display(.field, .message))]
pub struct InvalidInput {
    pub field: String,
    pub message: String,
}

fn display(field: &str, message: &str) -> String {
    if field.is_empty() {
        message.to_owned()
    } else {
        format!("{field}: {message}")
    }
}

impl InvalidInput {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, reported under a longer path (`models[2]` + `cost.input`).
    #[must_use]
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_within() {
        let cases = [
            (
                InvalidInput::new("", "must not be empty"),
                "must not be empty",
            ),
            (InvalidInput::new("", "bad").within("cost"), "cost: bad"),
            (
                InvalidInput::new("input", "bad").within("cost"),
                "cost.input: bad",
            ),
            (
                InvalidInput::new("[2]", "bad").within("models"),
                "models[2]: bad",
            ),
        ];
        for (error, shown) in cases {
            assert_eq!(error.to_string(), shown);
        }
    }
}
