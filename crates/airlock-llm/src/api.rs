//! The dialect an upstream speaks, named as gateway configs name it (`api`).

use crate::error::InvalidInput;

/// The wire protocol spoken at a gateway's endpoint. It decides how requests are read and how
/// responses are metered; [`Api::None`] passes opaque bytes with no metering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI Chat Completions (`POST /chat/completions`), and every "OpenAI-compatible" server.
    OpenaiCompletions,
    /// OpenAI Responses (`POST /responses`).
    OpenaiResponses,
    /// Anthropic Messages (`POST /v1/messages`).
    AnthropicMessages,
    /// Google Gemini `generateContent` / `streamGenerateContent` (AI Studio and Vertex AI).
    Gemini,
    /// Not an LLM API, or one Airlock does not understand: bytes pass untouched and unmetered.
    None,
}

impl Api {
    /// Every dialect, in the order the API documents them.
    pub const ALL: [Api; 5] = [
        Api::OpenaiCompletions,
        Api::OpenaiResponses,
        Api::AnthropicMessages,
        Api::Gemini,
        Api::None,
    ];

    /// Parses the wire name; the error names the field `api`.
    pub fn parse(name: &str) -> Result<Self, InvalidInput> {
        Self::ALL
            .into_iter()
            .find(|api| api.as_str() == name)
            .ok_or_else(|| {
                InvalidInput::new(
                    "api",
                    "must be one of openai-completions, openai-responses, anthropic-messages, gemini, none",
                )
            })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenaiCompletions => "openai-completions",
            Api::OpenaiResponses => "openai-responses",
            Api::AnthropicMessages => "anthropic-messages",
            Api::Gemini => "gemini",
            Api::None => "none",
        }
    }

    /// Whether responses in this dialect carry token usage that can be metered.
    pub fn is_metered(self) -> bool {
        self != Api::None
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for api in Api::ALL {
            assert_eq!(Api::parse(api.as_str()), Ok(api));
            assert_eq!(api.to_string(), api.as_str());
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        for name in [
            "",
            "openai",
            "OpenAI-Completions",
            "anthropic",
            " gemini",
            "none ",
        ] {
            let error = Api::parse(name).unwrap_err();
            assert_eq!(error.field, "api", "{name:?}");
        }
    }
}
