//! Which LLM API a request is for: provider, operation and wire format.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::limits::{MAX_NAME_BYTES, bounded};

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

    /// Whether a stream of this format reports usage only when the request asks for it
    /// (`stream_options.include_usage`), so that a gateway may ask on the client's behalf with
    /// [`request_with_usage`](super::request_with_usage) and remove the extra chunk with
    /// [`UsageChunkFilter`](super::UsageChunkFilter): OpenAI Chat Completions and Completions.
    ///
    /// ```
    /// use llmtrace::genai::ApiFormat;
    ///
    /// assert!(ApiFormat::OpenAiChat.accepts_stream_usage());
    /// assert!(!ApiFormat::AnthropicMessages.accepts_stream_usage());
    /// ```
    pub fn accepts_stream_usage(self) -> bool {
        matches!(self, ApiFormat::OpenAiChat | ApiFormat::OpenAiCompletions)
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

// === impl Provider ===

impl Provider {
    /// The providers known by name. With [`known_name`](Self::known_name) it is the one
    /// table behind [`as_str`](Self::as_str), [`FromStr`] and [`Display`](fmt::Display);
    /// a new provider is a variant, a name in `known_name` and an entry here.
    pub const KNOWN: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::AzureOpenAi];

    /// The response header that carries the provider's own id of the request: Anthropic's
    /// `request-id`; `x-request-id` for OpenAI, Azure OpenAI and the OpenAI-compatible
    /// servers that send one (vLLM, LiteLLM, ...).
    ///
    /// ```
    /// use llmtrace::genai::Provider;
    ///
    /// assert_eq!(Provider::Anthropic.request_id_header(), "request-id");
    /// assert_eq!(Provider::OpenAi.request_id_header(), "x-request-id");
    /// ```
    pub fn request_id_header(&self) -> &'static str {
        match self {
            Provider::Anthropic => "request-id",
            Provider::OpenAi | Provider::AzureOpenAi | Provider::Other(_) => "x-request-id",
        }
    }

    /// [`request_id_header`](Self::request_id_header) as a parsed header name, for lookups
    /// without parsing the name each time.
    pub(crate) fn request_id_name(&self) -> &'static http::HeaderName {
        static REQUEST_ID: http::HeaderName = http::HeaderName::from_static("request-id");
        static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
        match self {
            Provider::Anthropic => &REQUEST_ID,
            Provider::OpenAi | Provider::AzureOpenAi | Provider::Other(_) => &X_REQUEST_ID,
        }
    }

    /// The request header in which the provider keeps the caller's own id of a request, when
    /// it has one (OpenAI's `x-client-request-id`): sending the trace id there lets a
    /// provider-side request be found from its trace, and back.
    ///
    /// ```
    /// use llmtrace::genai::Provider;
    ///
    /// assert_eq!(Provider::OpenAi.client_request_id_header(), Some("x-client-request-id"));
    /// assert_eq!(Provider::Anthropic.client_request_id_header(), None);
    /// ```
    pub fn client_request_id_header(&self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("x-client-request-id"),
            Provider::Anthropic | Provider::AzureOpenAi | Provider::Other(_) => None,
        }
    }

    /// The `gen_ai.provider.name` of a known provider; `None` for [`Provider::Other`].
    pub fn known_name(&self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("openai"),
            Provider::Anthropic => Some("anthropic"),
            Provider::AzureOpenAi => Some("azure.ai.openai"),
            Provider::Other(_) => None,
        }
    }

    /// The `gen_ai.provider.name` value.
    pub fn as_str(&self) -> &str {
        match self {
            Provider::Other(name) => name,
            known => known.known_name().unwrap_or_default(),
        }
    }

    /// The `gen_ai.provider.name` value (the same as [`as_str`](Self::as_str)).
    pub fn name(&self) -> &str {
        self.as_str()
    }

    /// The provider with this name: a known one (any case), or [`Provider::Other`] carrying
    /// the name as given, e.g. `vllm` or `ollama` for an OpenAI-compatible server.
    ///
    /// ```
    /// use llmtrace::genai::Provider;
    ///
    /// assert_eq!(Provider::named("Anthropic"), Provider::Anthropic);
    /// assert_eq!(Provider::named("vllm").as_str(), "vllm");
    /// ```
    pub fn named(name: impl Into<String>) -> Provider {
        let name = name.into();
        match name.parse() {
            Ok(known) => known,
            Err(UnknownProvider { .. }) => Provider::Other(Cow::Owned(name)),
        }
    }
}

impl FromStr for Provider {
    type Err = UnknownProvider;

    /// A known provider by its `gen_ai.provider.name`, without regard to case.
    ///
    /// ```
    /// use llmtrace::genai::Provider;
    ///
    /// assert_eq!("azure.ai.openai".parse(), Ok(Provider::AzureOpenAi));
    /// assert_eq!("OpenAI".parse(), Ok(Provider::OpenAi));
    /// let err = "cohere".parse::<Provider>().unwrap_err();
    /// assert_eq!(err.to_string(), "unknown provider `cohere`: expected one of openai, anthropic, azure.ai.openai");
    /// ```
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::KNOWN
            .into_iter()
            .find(|known| known.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownProvider {
                name: bounded(name, MAX_NAME_BYTES).into_owned(),
            })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Provider::KNOWN`]; its message lists the accepted names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProvider {
    /// The name given (at most [`MAX_NAME_BYTES`]).
    pub name: String,
}

impl fmt::Display for UnknownProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown provider `{}`: expected one of ", self.name)?;
        for (i, known) in Provider::KNOWN.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            write!(f, "{comma}{known}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownProvider {}

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
    pub fn route(&self) -> &'static str {
        let azure = self.deployment.is_some();
        match (self.format, azure) {
            (ApiFormat::OpenAiChat, false) => "/v1/chat/completions",
            (ApiFormat::OpenAiCompletions, false) => "/v1/completions",
            (ApiFormat::OpenAiEmbeddings, false) => "/v1/embeddings",
            (ApiFormat::OpenAiResponses, false) => "/v1/responses",
            (ApiFormat::AnthropicMessages, false) => "/v1/messages",
            (ApiFormat::OpenAiChat, true) => "/openai/deployments/{deployment}/chat/completions",
            (ApiFormat::OpenAiCompletions, true) => "/openai/deployments/{deployment}/completions",
            (ApiFormat::OpenAiEmbeddings, true) => "/openai/deployments/{deployment}/embeddings",
            (ApiFormat::OpenAiResponses, true) => "/openai/deployments/{deployment}/responses",
            (ApiFormat::AnthropicMessages, true) => "/openai/deployments/{deployment}/messages",
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
            let (name, _) = rest.split_once('/')?;
            // The operation with its leading `/`.
            let format = openai_format(&rest[name.len()..])?;
            return Some(Endpoint {
                provider: Provider::AzureOpenAi,
                format,
                deployment: Some(name.to_owned()),
            });
        }
        let host = host.map(|h| h.split(':').next().unwrap_or(h));
        // `h` is `suffix` or a subdomain of it, in any case, without allocating.
        let host_is = |suffix: &str| {
            host.is_some_and(|h| {
                let Some(head) = h.len().checked_sub(suffix.len()) else {
                    return false;
                };
                h.get(head..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
                    && (head == 0 || h.as_bytes()[head - 1] == b'.')
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The parsed name the lookups use is the header the docs name, for every provider.
    #[test]
    fn request_id_name_is_the_request_id_header() {
        for provider in [
            Provider::Anthropic,
            Provider::OpenAi,
            Provider::AzureOpenAi,
            Provider::Other(Cow::Borrowed("vllm")),
        ] {
            assert_eq!(provider.request_id_name(), provider.request_id_header());
        }
    }

    /// The provider from the host: the domain itself or a subdomain, in any case, with or
    /// without a port; a look-alike that only ends with the same letters is not it.
    #[test]
    fn providers_are_recognised_by_host_domain() {
        let provider =
            |host: &str| Endpoint::detect("/v1/chat/completions", Some(host)).map(|e| e.provider);
        assert_eq!(provider("anthropic.com"), Some(Provider::Anthropic));
        assert_eq!(provider("API.Anthropic.COM:443"), Some(Provider::Anthropic));
        assert_eq!(provider("my.openai.azure.com"), Some(Provider::AzureOpenAi));
        assert_eq!(provider("MY.OPENAI.AZURE.COM"), Some(Provider::AzureOpenAi));
        for other in [
            "evilanthropic.com",
            "anthropic.com.evil",
            "openai.azure.co",
            "",
            ":80",
        ] {
            assert_eq!(provider(other), Some(Provider::OpenAi), "{other}");
        }
    }

    #[test]
    fn every_known_provider_round_trips_by_name_in_any_case() {
        for (provider, name) in [
            (Provider::OpenAi, "openai"),
            (Provider::Anthropic, "anthropic"),
            (Provider::AzureOpenAi, "azure.ai.openai"),
        ] {
            assert_eq!(provider.as_str(), name);
            assert_eq!(provider.name(), name);
            assert_eq!(provider.known_name(), Some(name));
            assert_eq!(provider.to_string(), name);
            assert_eq!(name.parse::<Provider>(), Ok(provider.clone()));
            assert_eq!(
                name.to_ascii_uppercase().parse::<Provider>(),
                Ok(provider.clone())
            );
            assert_eq!(Provider::named(name), provider);
        }
        assert_eq!(Provider::KNOWN.len(), 3);
        for known in Provider::KNOWN {
            assert_eq!(known.as_str().parse::<Provider>(), Ok(known.clone()));
        }
    }

    #[test]
    fn other_names_are_kept_as_given() {
        let vllm = Provider::named("vLLM");
        assert_eq!(vllm, Provider::Other("vLLM".into()));
        assert_eq!((vllm.as_str(), vllm.known_name()), ("vLLM", None));
        assert_eq!(vllm.to_string(), "vLLM");
    }

    #[test]
    fn unknown_names_are_errors_that_list_the_known_ones() {
        for name in ["", "azure", "open ai", "cohere"] {
            let err = name.parse::<Provider>().unwrap_err();
            assert_eq!(err.name, name);
            assert_eq!(
                err.to_string(),
                format!(
                    "unknown provider `{name}`: expected one of openai, anthropic, azure.ai.openai"
                )
            );
        }
        let err: Box<dyn std::error::Error> = Box::new("x".parse::<Provider>().unwrap_err());
        assert!(err.to_string().starts_with("unknown provider `x`"));
        let long = "p".repeat(10 * MAX_NAME_BYTES);
        assert!(long.parse::<Provider>().unwrap_err().name.len() <= MAX_NAME_BYTES);
    }
}
