//! Which LLM API a request is for: provider, operation and wire format.

use std::borrow::Cow;

/// The wire format of an LLM API: decides how request and response bodies are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiFormat {
    /// OpenAI Chat Completions (`/v1/chat/completions`) and compatible servers.
    OpenAiChat,
    /// OpenAI Completions (`/v1/completions`, legacy).
    OpenAiCompletions,
    /// OpenAI Embeddings (`/v1/embeddings`).
    OpenAiEmbeddings,
    /// OpenAI Responses API (`/v1/responses`).
    OpenAiResponses,
    /// Anthropic Messages (`/v1/messages`).
    AnthropicMessages,
}

impl ApiFormat {
    /// `gen_ai.operation.name` for this format.
    pub fn operation(self) -> &'static str {
        match self {
            ApiFormat::OpenAiChat | ApiFormat::OpenAiResponses | ApiFormat::AnthropicMessages => {
                "chat"
            }
            ApiFormat::OpenAiCompletions => "text_completion",
            ApiFormat::OpenAiEmbeddings => "embeddings",
        }
    }
}

/// The provider behind an endpoint, as `gen_ai.provider.name` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// `openai`
    OpenAi,
    /// `anthropic`
    Anthropic,
    /// `azure.ai.openai`
    AzureOpenAi,
    /// Any other name, e.g. `vllm`, `ollama` for OpenAI-compatible servers.
    Other(Cow<'static, str>),
}

impl Provider {
    /// The `gen_ai.provider.name` value.
    pub fn name(&self) -> &str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::AzureOpenAi => "azure.ai.openai",
            Provider::Other(name) => name,
        }
    }
}

/// One recognised LLM API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Who serves it.
    pub provider: Provider,
    /// How its bodies look.
    pub format: ApiFormat,
    /// The Azure deployment name, which stands in for the model when the body names none.
    pub deployment: Option<String>,
}

impl Endpoint {
    /// The route template for span names and `http.route`: the API path with ids (the Azure
    /// deployment) left out, e.g. `/v1/chat/completions` or
    /// `/openai/deployments/{deployment}/chat/completions`.
    ///
    /// ```
    /// use llmtrace::genai::Endpoint;
    ///
    /// let e = Endpoint::detect("/openai/deployments/prod-gpt4o/chat/completions", None).unwrap();
    /// assert_eq!(e.route(), "/openai/deployments/{deployment}/chat/completions");
    /// ```
    pub fn route(&self) -> String {
        let operation = match self.format {
            ApiFormat::OpenAiChat => "chat/completions",
            ApiFormat::OpenAiCompletions => "completions",
            ApiFormat::OpenAiEmbeddings => "embeddings",
            ApiFormat::OpenAiResponses => "responses",
            ApiFormat::AnthropicMessages => "messages",
        };
        if self.deployment.is_some() {
            format!("/openai/deployments/{{deployment}}/{operation}")
        } else {
            format!("/v1/{operation}")
        }
    }

    /// Recognises an endpoint from the request path (query ignored) and host.
    ///
    /// - `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses` (also
    ///   without the `/v1` prefix, as OpenAI-compatible servers mount them) → OpenAI formats;
    /// - `/v1/messages` → Anthropic;
    /// - `/openai/deployments/{name}/chat/completions` (and `completions`, `embeddings`) →
    ///   Azure OpenAI, with the deployment name kept;
    /// - a host under `openai.azure.com` → Azure OpenAI, `anthropic.com` → Anthropic.
    ///
    /// Returns `None` for anything else (model listings, files, health checks).
    ///
    /// ```
    /// use llmtrace::genai::{ApiFormat, Endpoint, Provider};
    ///
    /// let e = Endpoint::detect("/v1/chat/completions", Some("api.openai.com")).unwrap();
    /// assert_eq!((e.provider, e.format), (Provider::OpenAi, ApiFormat::OpenAiChat));
    /// let e = Endpoint::detect("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", None).unwrap();
    /// assert_eq!(e.provider, Provider::AzureOpenAi);
    /// assert_eq!(e.deployment.as_deref(), Some("gpt4o"));
    /// assert!(Endpoint::detect("/v1/models", None).is_none());
    /// ```
    pub fn detect(path: &str, host: Option<&str>) -> Option<Endpoint> {
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            let (name, operation) = rest.split_once('/')?;
            let format = openai_format(&format!("/{operation}"))?;
            return Some(Endpoint {
                provider: Provider::AzureOpenAi,
                format,
                deployment: Some(name.to_owned()),
            });
        }
        let host = host.map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
        let host_is = |suffix: &str| {
            host.as_deref()
                .is_some_and(|h| h == suffix || h.ends_with(&format!(".{suffix}")))
        };
        let unversioned = path.strip_prefix("/v1").unwrap_or(path);
        let format = if unversioned == "/messages" {
            ApiFormat::AnthropicMessages
        } else {
            openai_format(unversioned)?
        };
        let provider = if format == ApiFormat::AnthropicMessages || host_is("anthropic.com") {
            Provider::Anthropic
        } else if host_is("openai.azure.com") {
            Provider::AzureOpenAi
        } else {
            Provider::OpenAi
        };
        Some(Endpoint {
            provider,
            format,
            deployment: None,
        })
    }
}

fn openai_format(path: &str) -> Option<ApiFormat> {
    Some(match path {
        "/chat/completions" => ApiFormat::OpenAiChat,
        "/completions" => ApiFormat::OpenAiCompletions,
        "/embeddings" => ApiFormat::OpenAiEmbeddings,
        "/responses" => ApiFormat::OpenAiResponses,
        _ => return None,
    })
}
