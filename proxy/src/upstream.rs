//! The upstream a route forwards to.

use std::fmt;

use http::Uri;

/// An upstream base URL: scheme, host, port and path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `https` upstreams are reached over TLS, with the host as SNI.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (default 443 for https, 80 for http).
    pub port: u16,
    /// Path prefix prepended to every request path (`/v1` stays as the client sent it).
    pub base_path: String,
}

/// A base URL that cannot be an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError(pub String);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UpstreamError {}

impl Upstream {
    /// Parses `http://host:port/prefix` or `https://host/prefix`.
    ///
    /// ```
    /// use llmtrace_proxy::Upstream;
    ///
    /// let up = Upstream::parse("https://api.openai.com").unwrap();
    /// assert_eq!((up.tls, up.host.as_str(), up.port), (true, "api.openai.com", 443));
    /// assert!(Upstream::parse("ftp://x").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Upstream, UpstreamError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| UpstreamError(format!("upstream {url:?} is not a URL: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(UpstreamError(format!(
                    "upstream {url:?}: the scheme must be http or https"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| UpstreamError(format!("upstream {url:?} names no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Upstream {
            tls,
            host,
            port,
            base_path,
        })
    }

    /// The `Host` header value to send: an IPv6 address in brackets, the port when it is not
    /// the scheme's default.
    ///
    /// ```
    /// use llmtrace_proxy::Upstream;
    ///
    /// assert_eq!(Upstream::parse("http://[::1]:9000").unwrap().authority(), "[::1]:9000");
    /// assert_eq!(Upstream::parse("https://[2001:db8::1]").unwrap().authority(), "[2001:db8::1]");
    /// assert_eq!(Upstream::parse("http://localhost:80/v1").unwrap().authority(), "localhost");
    /// ```
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}
