//! Responses with the providers' headers, and their error bodies.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::ids;
use crate::json::{J, obj};

/// Whose API a path belongs to: decides the error shape and the response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    pub(crate) fn for_path(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Provider::Anthropic
        } else {
            Provider::OpenAi
        }
    }
}

pub(crate) const SSE: &str = "text/event-stream; charset=utf-8";
const JSON: &str = "application/json";

fn base(
    provider: Provider,
    status: StatusCode,
    content_type: &str,
    took: Duration,
) -> http::response::Builder {
    let b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    match provider {
        Provider::OpenAi => b
            .header("x-request-id", ids::hex("req_", 32))
            .header("openai-organization", "user-mock")
            .header("openai-processing-ms", took.as_millis().to_string())
            .header("openai-version", "2020-10-01")
            .header("x-ratelimit-limit-requests", "10000")
            .header("x-ratelimit-limit-tokens", "30000000")
            .header(
                "x-ratelimit-remaining-requests",
                if status == 429 { "0" } else { "9999" },
            )
            .header(
                "x-ratelimit-remaining-tokens",
                if status == 429 { "0" } else { "29999990" },
            )
            .header("x-ratelimit-reset-requests", "6ms")
            .header("x-ratelimit-reset-tokens", "0s"),
        Provider::Anthropic => b
            .header("request-id", ids::base62("req_011C", 20))
            .header(
                "anthropic-organization-id",
                "00000000-0000-4000-8000-000000000000",
            )
            .header("anthropic-ratelimit-requests-limit", "4000")
            .header(
                "anthropic-ratelimit-requests-remaining",
                if status == 429 { "0" } else { "3999" },
            ),
    }
}

/// A JSON answer (`content-length` set, head and body written together).
pub(crate) fn json(provider: Provider, status: StatusCode, body: &J, took: Duration) -> Response {
    base(provider, status, JSON, took)
        .body(Body::from(body.to_vec()))
        .expect("static headers are valid")
}

/// A JSON content type over a body of any kind (a cut or truncated non-streaming answer).
pub(crate) fn json_body(provider: Provider, body: Body, took: Duration) -> Response {
    base(provider, StatusCode::OK, JSON, took)
        .body(body)
        .expect("static headers are valid")
}

/// An SSE stream.
pub(crate) fn sse(provider: Provider, body: Body) -> Response {
    base(provider, StatusCode::OK, SSE, Duration::ZERO)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static headers are valid")
}

/// The `garbage` fault: 200, an SSE content type, an HTML page.
pub(crate) fn garbage(provider: Provider) -> Response {
    sse(
        provider,
        Body::from(
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
             <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>mock</center>\r\n\
             </body>\r\n</html>\r\n",
        ),
    )
}

/// The OpenAI error object for a status: `{"message", "type", "param", "code"}`.
pub(crate) fn openai_error(status: u16, message: Option<&str>, param: Option<&str>) -> J {
    let (kind, code, default) = match status {
        400 => ("invalid_request_error", None, "Invalid request."),
        401 => (
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: sk-mock. You can find your API key at https://platform.openai.com/account/api-keys.",
        ),
        403 => (
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
            "Country, region, or territory not supported",
        ),
        404 => (
            "invalid_request_error",
            Some("model_not_found"),
            "The model `mock` does not exist or you do not have access to it.",
        ),
        429 => (
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests in organization org-mock on requests per min (RPM): Limit 10000, Used 10000, Requested 1. Please try again in 6ms.",
        ),
        503 => (
            "server_error",
            None,
            "The engine is currently overloaded, please try again later.",
        ),
        500..=599 => (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        _ => ("invalid_request_error", None, "Invalid request."),
    };
    obj! {
        "message" => message.unwrap_or(default),
        "type" => kind,
        "param" => param,
        "code" => code,
    }
}

/// The Anthropic error type for a status.
pub(crate) fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

fn anthropic_message(kind: &str) -> &'static str {
    match kind {
        "authentication_error" => "invalid x-api-key",
        "permission_error" => {
            "Your API key does not have permission to use the specified resource."
        }
        "not_found_error" => "The requested resource could not be found.",
        "rate_limit_error" => {
            "This request would exceed your organization's rate limit. Please try again later."
        }
        "overloaded_error" => "Overloaded",
        "api_error" => "Internal server error",
        "timeout_error" => "Request timed out",
        _ => "Invalid request.",
    }
}

/// `{"type": "error", "error": {"type", "message"}}`, plus `request_id` on HTTP errors.
pub(crate) fn anthropic_error(kind: &str, message: Option<&str>, with_request_id: bool) -> J {
    let mut body = obj! {
        "type" => "error",
        "error" => obj! { "type" => kind, "message" => message.unwrap_or(anthropic_message(kind)) },
    };
    if with_request_id {
        body.push("request_id", ids::base62("req_011C", 20));
    }
    body
}

/// An error answer shaped as `provider`'s.
pub(crate) fn error(
    provider: Provider,
    status: u16,
    message: Option<&str>,
    param: Option<&str>,
) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match provider {
        Provider::OpenAi => obj! { "error" => openai_error(status, message, param) },
        Provider::Anthropic => anthropic_error(anthropic_error_type(status), message, true),
    };
    let mut response = json(provider, code, &body, Duration::ZERO);
    if status == 429 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if provider == Provider::Anthropic && (status == 429 || status >= 500) {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("true"));
    }
    response
}

/// A 400 for a malformed request.
pub(crate) fn invalid(provider: Provider, message: &str, param: Option<&str>) -> Response {
    error(provider, 400, Some(message), param)
}
