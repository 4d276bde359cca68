//! Built-in provider presets (`GET /v1/providers`): where each provider's API lives, how its key
//! is presented, and which dialect it speaks.
//!
//! A preset's `endpoint` is the base URL that the provider's own SDK uses by default, because the
//! data plane forwards to endpoint + request path: a sandbox gives the SDK `$PREFIX_URL` as its base
//! URL and the SDK appends the same path it would append to the real base URL. So Anthropic's
//! endpoint has no `/v1` (its SDK requests `/v1/messages`), OpenAI's has one (its SDK requests
//! `/chat/completions`), and Google's is the bare host (its SDK requests
//! `/v1beta/models/{model}:generateContent`).
//!
//! Presets whose endpoint depends on the operator's own cloud resource (Azure OpenAI, Vertex AI,
//! Bedrock) carry a representative endpoint with upper-case placeholders and
//! `endpoint_required: true`: a gateway config naming them must give its own endpoint.

use crate::api::Api;

/// How a preset's credential is presented upstream; the gateway config's `auth_mechanism`
/// defaults from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresetAuth {
    /// `Authorization: Bearer <secret>`. Local servers use it too: a gateway always binds a
    /// secret, and Ollama, vLLM and LM Studio ignore or check it as a bearer key.
    Bearer,
    /// `<header>: <secret>`, with a lower-case header name.
    Header(&'static str),
}

impl PresetAuth {
    /// The `auth_mechanism.type` wire name.
    pub fn kind(self) -> &'static str {
        match self {
            PresetAuth::Bearer => "bearer",
            PresetAuth::Header(_) => "header",
        }
    }

    /// The `auth_mechanism.key` wire value (the header name), for `header` only.
    pub fn key(self) -> Option<&'static str> {
        match self {
            PresetAuth::Bearer => None,
            PresetAuth::Header(key) => Some(key),
        }
    }
}

/// One built-in provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    /// The id a gateway config names in `provider`.
    pub id: &'static str,
    /// A display name.
    pub name: &'static str,
    /// The default base URL (see the module docs for why it is the SDK's base URL).
    pub endpoint: &'static str,
    /// The endpoint is only an example: the operator must give their own resource's endpoint.
    pub endpoint_required: bool,
    /// The endpoint is a server on the operator's own machine or network (`http://localhost`),
    /// reachable only through `AIRLOCK_ALLOW_PRIVATE_UPSTREAMS`.
    pub local: bool,
    pub auth: PresetAuth,
    pub api: Api,
    /// Headers the provider requires on every request: a gateway config made from the preset
    /// gets them as literal custom headers (so they replace a value the client sent).
    pub headers: &'static [(&'static str, &'static str)],
    /// A few well-known model ids, for listings; never a restriction.
    pub models: &'static [&'static str],
    /// The provider's id in the bundled price table (genai-prices), where it has one.
    pub price_provider: Option<&'static str>,
    /// Chat Completions streams: the provider honours `stream_options.include_usage`, so the
    /// data plane may turn it on to read a stream's exact usage (and drops the usage chunk the
    /// client did not ask for). Off where a provider might refuse the field.
    pub stream_usage_option: bool,
}

/// A cloud preset or a hosted OpenAI-compatible one, without the rarely differing fields.
const fn hosted(
    id: &'static str,
    name: &'static str,
    endpoint: &'static str,
    price_provider: Option<&'static str>,
    models: &'static [&'static str],
) -> Preset {
    Preset {
        id,
        name,
        endpoint,
        endpoint_required: false,
        local: false,
        auth: PresetAuth::Bearer,
        api: Api::OpenaiCompletions,
        headers: &[],
        models,
        price_provider,
        stream_usage_option: false,
    }
}

/// An OpenAI-compatible server on the operator's machine; it has no price (the cost is null).
const fn local(id: &'static str, name: &'static str, endpoint: &'static str) -> Preset {
    Preset {
        local: true,
        ..hosted(id, name, endpoint, None, &[])
    }
}

static PRESETS: [Preset; 24] = [
    Preset {
        auth: PresetAuth::Header("x-api-key"),
        api: Api::AnthropicMessages,
        headers: &[("anthropic-version", "2023-06-01")],
        ..hosted(
            "anthropic",
            "Anthropic",
            "https://api.anthropic.com",
            Some("anthropic"),
            &["claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"],
        )
    },
    Preset {
        stream_usage_option: true,
        ..hosted(
            "openai",
            "OpenAI",
            "https://api.openai.com/v1",
            Some("openai"),
            &["gpt-5", "gpt-5-mini", "gpt-4.1", "gpt-4o-mini"],
        )
    },
    // Google AI Studio (the Gemini API). The google-genai SDK appends `/v1beta/models/...`.
    Preset {
        auth: PresetAuth::Header("x-goog-api-key"),
        api: Api::Gemini,
        ..hosted(
            "google",
            "Google AI Studio",
            "https://generativelanguage.googleapis.com",
            Some("google"),
            &[
                "gemini-2.5-pro",
                "gemini-2.5-flash",
                "gemini-2.5-flash-lite",
            ],
        )
    },
    // Vertex AI: the host names the region; the SDK appends `/v1/projects/{project}/locations/
    // {region}/publishers/google/models/...`. The secret is an OAuth 2 access token, which
    // expires within an hour: the operator rotates it (a secret update reaches every replica).
    Preset {
        endpoint_required: true,
        api: Api::Gemini,
        ..hosted(
            "vertex",
            "Google Vertex AI",
            "https://us-central1-aiplatform.googleapis.com",
            Some("google"),
            &["gemini-2.5-pro", "gemini-2.5-flash"],
        )
    },
    // Azure OpenAI's v1 API (OpenAI's paths, no api-version), on the operator's resource.
    Preset {
        endpoint_required: true,
        auth: PresetAuth::Header("api-key"),
        stream_usage_option: true,
        ..hosted(
            "azure-openai",
            "Azure OpenAI",
            "https://your-resource.openai.azure.com/openai/v1",
            Some("azure"),
            &[],
        )
    },
    // Bedrock's OpenAI-compatible Chat Completions endpoint with a Bedrock API key; the host
    // names the region.
    Preset {
        endpoint_required: true,
        ..hosted(
            "bedrock",
            "Amazon Bedrock",
            "https://bedrock-runtime.us-east-1.amazonaws.com/openai/v1",
            Some("aws"),
            &[],
        )
    },
    Preset {
        stream_usage_option: true,
        ..hosted(
            "xai",
            "xAI",
            "https://api.x.ai/v1",
            Some("x-ai"),
            &["grok-4-0709", "grok-code-fast-1", "grok-3-mini"],
        )
    },
    hosted(
        "openrouter",
        "OpenRouter",
        "https://openrouter.ai/api/v1",
        Some("openrouter"),
        &[],
    ),
    hosted(
        "groq",
        "Groq",
        "https://api.groq.com/openai/v1",
        Some("groq"),
        &[
            "llama-3.3-70b-versatile",
            "llama-3.1-8b-instant",
            "openai/gpt-oss-120b",
        ],
    ),
    hosted(
        "mistral",
        "Mistral AI",
        "https://api.mistral.ai/v1",
        Some("mistral"),
        &[
            "mistral-large-latest",
            "mistral-small-latest",
            "codestral-latest",
        ],
    ),
    hosted(
        "cerebras",
        "Cerebras",
        "https://api.cerebras.ai/v1",
        Some("cerebras"),
        &["llama-3.3-70b", "gpt-oss-120b"],
    ),
    Preset {
        stream_usage_option: true,
        ..hosted(
            "deepseek",
            "DeepSeek",
            "https://api.deepseek.com",
            Some("deepseek"),
            &["deepseek-chat", "deepseek-reasoner"],
        )
    },
    Preset {
        stream_usage_option: true,
        ..hosted(
            "together",
            "Together AI",
            "https://api.together.xyz/v1",
            Some("together"),
            &[],
        )
    },
    Preset {
        stream_usage_option: true,
        ..hosted(
            "fireworks",
            "Fireworks AI",
            "https://api.fireworks.ai/inference/v1",
            Some("fireworks"),
            &[],
        )
    },
    hosted(
        "sambanova",
        "SambaNova",
        "https://api.sambanova.ai/v1",
        None,
        &[],
    ),
    hosted(
        "minimax",
        "MiniMax",
        "https://api.minimax.io/v1",
        Some("minimax"),
        &["MiniMax-M2"],
    ),
    // Hugging Face Inference Providers: one router in front of many providers.
    hosted(
        "huggingface",
        "Hugging Face",
        "https://router.huggingface.co/v1",
        None,
        &[],
    ),
    hosted(
        "perplexity",
        "Perplexity",
        "https://api.perplexity.ai",
        Some("perplexity"),
        &["sonar", "sonar-pro", "sonar-reasoning-pro"],
    ),
    // Cohere's OpenAI compatibility API (its native v2 chat API is another dialect).
    hosted(
        "cohere",
        "Cohere",
        "https://api.cohere.ai/compatibility/v1",
        Some("cohere"),
        &["command-a-03-2025", "command-r-plus", "command-r"],
    ),
    hosted(
        "moonshot",
        "Moonshot AI",
        "https://api.moonshot.ai/v1",
        Some("moonshotai"),
        &["kimi-k2-0905-preview", "kimi-k2-turbo-preview"],
    ),
    // Meta's Llama API, through its OpenAI-compatible surface.
    hosted(
        "meta",
        "Meta Llama API",
        "https://api.llama.com/compat/v1",
        Some("meta"),
        &[],
    ),
    local("ollama", "Ollama", "http://localhost:11434/v1"),
    Preset {
        stream_usage_option: true,
        ..local("vllm", "vLLM", "http://localhost:8000/v1")
    },
    local("lmstudio", "LM Studio", "http://localhost:1234/v1"),
];

/// Every built-in preset, in listing order.
pub fn presets() -> &'static [Preset] {
    &PRESETS
}

/// The preset with this id.
pub fn preset(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.id == id)
}

/// Model ids (matched as a prefix, after any `vendor/` part) that take no tool definitions,
/// though their provider's other chat models do: OpenAI's first reasoning previews, its search
/// previews, `chatgpt-4o-latest` and the completion-only `-instruct` model. The bundled price
/// table has no such flag, so this short list is the default.
const NO_TOOLS: [&str; 6] = [
    "o1-mini",
    "o1-preview",
    "gpt-4o-search-preview",
    "gpt-4o-mini-search-preview",
    "chatgpt-4o-latest",
    "gpt-3.5-turbo-instruct",
];

/// Whether a model takes tool (function) definitions, when the operator's model list does not
/// say (its `tools` flag wins). Every hosted preset's chat models do, but Perplexity's (search
/// models without function calling) and the few listed in [`NO_TOOLS`]; a local server (Ollama, vLLM, LM Studio) and a gateway without a preset are
/// assumed to, since whether they do depends on the model the operator loaded: set `tools:
/// false` in the model list for one that does not.
pub fn supports_tools(provider: Option<&str>, model: &str) -> bool {
    if provider == Some("perplexity") {
        return false;
    }
    let bare = model.rsplit('/').next().unwrap_or(model);
    !NO_TOOLS.iter().any(|p| bare.starts_with(p))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The contract's list: every one of these must exist.
    const REQUIRED: [&str; 24] = [
        "anthropic",
        "openai",
        "google",
        "vertex",
        "azure-openai",
        "bedrock",
        "xai",
        "openrouter",
        "groq",
        "mistral",
        "cerebras",
        "deepseek",
        "together",
        "fireworks",
        "sambanova",
        "minimax",
        "huggingface",
        "perplexity",
        "cohere",
        "moonshot",
        "meta",
        "ollama",
        "vllm",
        "lmstudio",
    ];

    #[test]
    fn every_required_preset_exists_once() {
        assert!(presets().len() >= 24);
        let ids: HashSet<_> = presets().iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), presets().len(), "ids are unique");
        for id in REQUIRED {
            assert_eq!(preset(id).map(|p| p.id), Some(id));
        }
        assert_eq!(preset("nope"), None);
    }

    /// The shape `airlock_core::Endpoint::parse` accepts: an absolute URL with a lower-case host,
    /// an optional port and base path, no user info, query, fragment or trailing slash; `https`
    /// unless the server is local.
    #[test]
    fn endpoints_are_well_formed() {
        for p in presets() {
            let (scheme, rest) = p.endpoint.split_once("://").unwrap();
            assert_eq!(scheme, if p.local { "http" } else { "https" }, "{}", p.id);
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.split(':').next().unwrap();
            assert!(!host.is_empty(), "{}", p.id);
            assert!(
                host.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'.'
                    || b == b'-'),
                "{}: host {host}",
                p.id
            );
            assert!(!p.endpoint.ends_with('/'), "{}", p.id);
            assert!(
                !p.endpoint.contains(['?', '#', '@', ' ', '{', '}']),
                "{}",
                p.id
            );
            assert!(!path.contains("//") && !path.contains("/."), "{}", p.id);
            if p.local {
                assert_eq!(host, "localhost", "{}", p.id);
            }
        }
    }

    #[test]
    fn presets_are_internally_consistent() {
        for p in presets() {
            assert!(!p.name.is_empty() && p.name.trim() == p.name, "{}", p.id);
            assert!(p.api.is_metered(), "{}: a preset is an LLM API", p.id);
            if let PresetAuth::Header(key) = p.auth {
                assert_eq!(key, key.to_ascii_lowercase(), "{}", p.id);
                assert_eq!(p.auth.kind(), "header");
                assert_eq!(p.auth.key(), Some(key));
            } else {
                assert_eq!((p.auth.kind(), p.auth.key()), ("bearer", None));
            }
            for (name, _) in p.headers {
                assert_eq!(*name, name.to_ascii_lowercase(), "{}", p.id);
            }
            let models: HashSet<_> = p.models.iter().collect();
            assert_eq!(models.len(), p.models.len(), "{}: duplicate model", p.id);
            if p.local {
                assert!(
                    p.price_provider.is_none(),
                    "{}: local servers are not priced",
                    p.id
                );
            }
        }
    }

    /// Table: the provider facts a reviewer would check against each provider's documentation.
    #[test]
    fn documented_auth_and_dialects() {
        let cases = [
            (
                "anthropic",
                PresetAuth::Header("x-api-key"),
                Api::AnthropicMessages,
            ),
            ("google", PresetAuth::Header("x-goog-api-key"), Api::Gemini),
            ("vertex", PresetAuth::Bearer, Api::Gemini),
            (
                "azure-openai",
                PresetAuth::Header("api-key"),
                Api::OpenaiCompletions,
            ),
            ("openai", PresetAuth::Bearer, Api::OpenaiCompletions),
            ("ollama", PresetAuth::Bearer, Api::OpenaiCompletions),
        ];
        for (id, auth, api) in cases {
            let p = preset(id).unwrap();
            assert_eq!((p.auth, p.api), (auth, api), "{id}");
        }
        let anthropic = preset("anthropic").unwrap();
        assert_eq!(anthropic.headers, &[("anthropic-version", "2023-06-01")]);
        let required: Vec<_> = presets()
            .iter()
            .filter(|p| p.endpoint_required)
            .map(|p| p.id)
            .collect();
        assert_eq!(required, ["vertex", "azure-openai", "bedrock"]);
    }

    #[test]
    fn tool_support_defaults() {
        assert!(supports_tools(Some("openai"), "gpt-4o-mini"));
        assert!(supports_tools(Some("anthropic"), "claude-sonnet-4-5"));
        assert!(supports_tools(None, "llama3.1"));
        assert!(!supports_tools(Some("openai"), "o1-mini-2024-09-12"));
        assert!(!supports_tools(
            Some("openrouter"),
            "openai/gpt-4o-search-preview"
        ));
        assert!(!supports_tools(Some("perplexity"), "sonar-pro"));
    }
}
