//! Reading semantic-convention attributes off `http` types.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderName};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use opentelemetry::{Array, Key, KeyValue, StringValue, Value};

use crate::limits::{
    MAX_ADDRESS_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADER_VALUES, MAX_NAME_BYTES, MAX_URL_BYTES,
    bounded,
};
use crate::semconv::{self, REDACTED};

/// The normalised method for `http.request.method`, and the original when it is `_OTHER`.
pub(crate) fn method(method: &Method) -> (&'static str, Option<String>) {
    let known = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => {
            let original = bounded(method.as_str(), MAX_NAME_BYTES).into_owned();
            return ("_OTHER", Some(original));
        }
    };
    (known, None)
}

/// Pushes `http.request.method` (and the original when unknown).
pub(crate) fn push_method(attributes: &mut Vec<KeyValue>, m: &Method) -> &'static str {
    let (name, original) = method(m);
    attributes.push(KeyValue::new(semconv::http::REQUEST_METHOD, name));
    if let Some(original) = original {
        attributes.push(KeyValue::new(
            semconv::http::REQUEST_METHOD_ORIGINAL,
            original,
        ));
    }
    name
}

/// `network.protocol.version` for an HTTP version.
pub(crate) fn protocol_version(version: Version) -> Option<&'static str> {
    Some(match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

/// A status code as the `error.type` string.
pub(crate) fn status_code_str(status: StatusCode) -> String {
    status.as_u16().to_string()
}

/// `true` for gRPC requests and responses (`application/grpc`, `application/grpc+proto`, ...).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Splits a gRPC path `/package.Service/Method` into service and method.
pub(crate) fn grpc_service_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// Pushes the `rpc.*` request attributes and returns the span name `service/method`, each
/// part at most [`MAX_NAME_BYTES`] (the path is the client's).
pub(crate) fn push_grpc(attributes: &mut Vec<KeyValue>, path: &str) -> Option<String> {
    let (service, method) = grpc_service_method(path)?;
    let service = bounded(service, MAX_NAME_BYTES);
    let method = bounded(method, MAX_NAME_BYTES);
    attributes.push(KeyValue::new(semconv::rpc::SYSTEM, "grpc"));
    attributes.push(KeyValue::new(
        semconv::rpc::SERVICE,
        service.clone().into_owned(),
    ));
    attributes.push(KeyValue::new(
        semconv::rpc::METHOD,
        method.clone().into_owned(),
    ));
    Some(format!("{service}/{method}"))
}

/// The canonical name of a gRPC status code.
pub(crate) fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

/// The logical server host and port: the URI's authority (HTTP/2 `:authority`, absolute-form
/// requests) or else the `Host` header. The host is at most [`MAX_ADDRESS_BYTES`].
fn server_address<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<(Cow<'a, str>, Option<u16>)> {
    if let Some(authority) = uri.authority() {
        return Some((
            bounded(authority.host(), MAX_ADDRESS_BYTES),
            authority.port_u16(),
        ));
    }
    let header = headers.get(header::HOST)?.to_str().ok()?;
    if let Some((name, port)) = plain_host_port(header) {
        return Some((Cow::Borrowed(name), port));
    }
    let authority: http::uri::Authority = header.parse().ok()?;
    let host = bounded(authority.host(), MAX_ADDRESS_BYTES).into_owned();
    Some((Cow::Owned(host), authority.port_u16()))
}

/// [`server_address`] with the host as a shared attribute value. Read from the `Host` header,
/// the answer is remembered for the thread's last header value (nearly every request names
/// the same host): the next request with the same value skips the reading.
fn server_address_value(uri: &Uri, headers: &HeaderMap) -> Option<(StringValue, Option<u16>)> {
    let header = match uri.authority() {
        Some(_) => None,
        None => headers.get(header::HOST),
    };
    if let Some(header) = header {
        let known = RECENT_HOST
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                let (value, host, port) = recent.as_ref()?;
                (**value == *header.as_bytes()).then(|| (host.clone(), *port))
            })
            .ok()
            .flatten();
        if let Some((host, port)) = known {
            return Some((host.into(), port));
        }
    }
    let (host, port) = server_address(uri, headers)?;
    let host = recent_arc(Recent::ServerAddress, &host);
    if let Some(header) = header {
        let _ = RECENT_HOST.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                *recent = Some((header.as_bytes().into(), host.clone(), port));
            }
        });
    }
    Some((host.into(), port))
}

/// Texts a span records on nearly every request that are most often the previous request's
/// too (the route, the path, the server's address, the user agent), each with a slot in
/// [`recent_text`]'s cache.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Recent {
    Route,
    Path,
    ServerAddress,
    UserAgent,
}

/// A `Host` header value, and the host and port read from it.
type HostReading = (Box<[u8]>, Arc<str>, Option<u16>);

thread_local! {
    /// The last text of each [`Recent`] kind made on this thread.
    static RECENT: RefCell<[Option<Arc<str>>; 4]> =
        const { RefCell::new([None, None, None, None]) };
    /// The last `Host` header value read on this thread, with its host and port.
    static RECENT_HOST: RefCell<Option<HostReading>> = const { RefCell::new(None) };
    /// The last peer address written on this thread, with its text.
    static RECENT_IP: RefCell<Option<(IpAddr, Arc<str>)>> = const { RefCell::new(None) };
}

/// `text` as an attribute value, sharing the text the thread made last for `kind` when it
/// is the same, rather than a copy of its own. A copy costs an allocation here and a free on
/// the export thread, for every request; a shared one, a reference count.
pub(crate) fn recent_text(kind: Recent, text: &str) -> StringValue {
    recent_arc(kind, text).into()
}

/// [`recent_text`]'s shared text.
fn recent_arc(kind: Recent, text: &str) -> Arc<str> {
    let fresh = || -> Arc<str> { Arc::from(text) };
    RECENT
        .try_with(|recent| {
            let Ok(mut recent) = recent.try_borrow_mut() else {
                return fresh();
            };
            let slot = &mut recent[kind as usize];
            match slot {
                Some(last) if **last == *text => last.clone(),
                _ => slot.insert(fresh()).clone(),
            }
        })
        .unwrap_or_else(|_| fresh())
}

/// [`ip_text`] as an attribute value, shared like [`recent_text`]'s (the peer is most often
/// the previous request's: a client's keep-alive connections, a load balancer).
pub(crate) fn recent_ip_text(ip: IpAddr) -> StringValue {
    let fresh = || -> Arc<str> { Arc::from(ip_text(ip)) };
    RECENT_IP
        .try_with(|recent| {
            let Ok(mut recent) = recent.try_borrow_mut() else {
                return fresh();
            };
            match &*recent {
                Some((last, text)) if *last == ip => text.clone(),
                _ => recent.insert((ip, fresh())).1.clone(),
            }
        })
        .unwrap_or_else(|_| fresh())
        .into()
}

/// The common `Host` values, `name` or `name:port` with a name of letters, digits, `.` and
/// `-` (at most [`MAX_ADDRESS_BYTES`]) and a port that fits a `u16`, split without parsing
/// an `Authority` (which copies the value); `None` for anything else, which the parse reads.
fn plain_host_port(value: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match value.split_once(':') {
        Some((name, port)) => {
            let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            (name, Some(port.parse::<u16>().ok().filter(|_| digits)?))
        }
        None => (value, None),
    };
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    (!name.is_empty() && name.len() <= MAX_ADDRESS_BYTES && name.bytes().all(plain))
        .then_some((name, port))
}

/// Pushes `server.address` and `server.port` (the scheme's default port when the authority
/// names none), from the URI's authority or else the `Host` header.
pub(crate) fn push_server_address(attributes: &mut Vec<KeyValue>, uri: &Uri, headers: &HeaderMap) {
    let Some((host, port)) = server_address_value(uri, headers) else {
        return;
    };
    attributes.push(KeyValue::new(semconv::http::SERVER_ADDRESS, host));
    let default_port = match uri.scheme_str().unwrap_or("http") {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    if let Some(port) = port.or(default_port) {
        attributes.push(KeyValue::new(semconv::http::SERVER_PORT, i64::from(port)));
    }
}

/// `ip` as `Display` writes it (`127.0.0.1`, `::1`), IPv4 without the formatting machinery:
/// it is written for every recorded server span.
pub(crate) fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// The original client address: the first `for=` of `Forwarded`, else the first entry of
/// `X-Forwarded-For`; at most [`MAX_ADDRESS_BYTES`] (the headers are the client's).
pub(crate) fn forwarded_client(headers: &HeaderMap) -> Option<String> {
    if let Some(forwarded) = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        let first = forwarded.split(',').next().unwrap_or_default();
        for pair in first.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("for") {
                let value = value.trim().trim_matches('"');
                // `for="[2001:db8::1]:4711"` → `2001:db8::1`
                let host = if let Some(rest) = value.strip_prefix('[') {
                    rest.split(']').next().unwrap_or(rest)
                } else {
                    value.split(':').next().unwrap_or(value)
                };
                if !host.is_empty() {
                    return Some(bounded(host, MAX_ADDRESS_BYTES).into_owned());
                }
            }
        }
    }
    // A name built once: a `&str` name is parsed (and, not being a standard one, hashed
    // with a fresh `HeaderName`) on every lookup.
    static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    let xff = headers.get(&X_FORWARDED_FOR)?.to_str().ok()?;
    let first = xff.split(',').next()?.trim();
    (!first.is_empty()).then(|| bounded(first, MAX_ADDRESS_BYTES).into_owned())
}

/// `url.full` for a client request, without userinfo and with the values of
/// credential-bearing query parameters replaced; at most [`MAX_URL_BYTES`].
pub(crate) fn redacted_url(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, hp)| hp);
    let mut url = format!("{scheme}://{host_port}{}", uri.path());
    if let Some(query) = uri.query() {
        url.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                url.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_sensitive_query_param(name) => {
                    url.push_str(name);
                    url.push_str("=REDACTED");
                }
                _ => url.push_str(pair),
            }
        }
    }
    if url.len() > MAX_URL_BYTES {
        url = bounded(&url, MAX_URL_BYTES).into_owned();
    }
    Some(url)
}

fn is_sensitive_query_param(name: &str) -> bool {
    const SENSITIVE: &[&str] = &[
        "key",
        "api-key",
        "api_key",
        "apikey",
        "token",
        "access_token",
        "sig",
        "signature",
        "x-goog-signature",
        "awsaccesskeyid",
        "x-amz-signature",
        "x-amz-credential",
    ];
    SENSITIVE.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// Headers whose values never reach a span, whatever the configuration says.
pub const ALWAYS_REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-security-token",
];

/// A configured set of headers to record as attributes, with secrets redacted.
#[derive(Debug, Clone)]
pub(crate) struct HeaderCapture {
    headers: Vec<(HeaderName, Key, bool)>,
}

impl HeaderCapture {
    /// `names`: headers to capture, `extra_redacted`: more headers whose values are secret.
    pub(crate) fn new(prefix: &str, names: &[HeaderName], extra_redacted: &[HeaderName]) -> Self {
        let headers = names
            .iter()
            .map(|name| {
                let redacted =
                    ALWAYS_REDACTED.contains(&name.as_str()) || extra_redacted.contains(name);
                (
                    name.clone(),
                    Key::from(format!("{prefix}{}", name.as_str())),
                    redacted,
                )
            })
            .collect();
        Self { headers }
    }

    /// The captured headers: the first [`MAX_HEADER_VALUES`] values of each, each at most
    /// [`MAX_HEADER_VALUE_BYTES`].
    pub(crate) fn attributes(&self, headers: &HeaderMap) -> Vec<KeyValue> {
        let mut out = Vec::new();
        for (name, key, redacted) in &self.headers {
            let values: Vec<StringValue> = headers
                .get_all(name)
                .iter()
                .take(MAX_HEADER_VALUES)
                .map(|v| {
                    if *redacted {
                        StringValue::from(REDACTED)
                    } else {
                        let value = String::from_utf8_lossy(v.as_bytes());
                        StringValue::from(bounded(&value, MAX_HEADER_VALUE_BYTES).into_owned())
                    }
                })
                .collect();
            if !values.is_empty() {
                out.push(KeyValue::new(
                    key.clone(),
                    Value::Array(Array::String(values)),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast split of a `Host` value agrees with the `Authority` parse wherever it
    /// answers.
    #[test]
    fn plain_host_ports_split_as_the_authority_parse_does() {
        let values = [
            "example.com",
            "example.com:8080",
            "127.0.0.1:46391",
            "localhost:0",
            "a-b.c:65535",
            "a:65536",
            "a:",
            ":80",
            "a:+1",
            "a:08",
            "[::1]:80",
            "user@host:1",
            "EXAMPLE.com",
            "a b",
            "h\u{e9}",
        ];
        for value in values {
            let Some((name, port)) = plain_host_port(value) else {
                continue;
            };
            let authority: http::uri::Authority = value.parse().unwrap();
            assert_eq!(
                (name, port),
                (authority.host(), authority.port_u16()),
                "{value}"
            );
        }
        assert_eq!(
            plain_host_port("example.com:443"),
            Some(("example.com", Some(443)))
        );
        assert_eq!(plain_host_port("a:65536"), None);
        assert_eq!(plain_host_port("[::1]:80"), None);
        assert_eq!(plain_host_port(&"a".repeat(MAX_ADDRESS_BYTES + 1)), None);
    }

    #[test]
    fn ip_text_is_what_display_writes() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let mut ips: Vec<IpAddr> = [0u8, 1, 9, 10, 99, 100, 109, 110, 199, 200, 255]
            .iter()
            .flat_map(|&a| [0u8, 7, 42, 250].map(move |b| Ipv4Addr::new(a, b, 255 - b, a).into()))
            .collect();
        ips.extend([
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            "2001:db8::1".parse().unwrap(),
            "::ffff:10.0.0.1".parse().unwrap(),
        ]);
        for ip in ips {
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    proptest::proptest! {
        /// The shared texts are the texts asked for, whatever came before on the thread.
        #[test]
        fn recent_texts_are_the_texts_asked_for(
            asks in proptest::collection::vec(
                (0..4usize, proptest::sample::select(vec!["", "a", "ab", "b", "/v1/chat"])),
                0..40,
            ),
            ips in proptest::collection::vec((0..3u8, proptest::bool::ANY), 0..20),
        ) {
            let kinds = [Recent::Route, Recent::Path, Recent::ServerAddress, Recent::UserAgent];
            for (kind, text) in asks {
                let shared = recent_text(kinds[kind], text);
                proptest::prop_assert_eq!(shared.as_str(), text);
            }
            for (last, v6) in ips {
                let ip: IpAddr = match v6 {
                    false => std::net::Ipv4Addr::new(10, 0, 0, last).into(),
                    true => std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, u16::from(last)).into(),
                };
                let shared = recent_ip_text(ip);
                proptest::prop_assert_eq!(shared.as_str(), ip.to_string());
            }
        }
    }

    proptest::proptest! {
        /// The remembered reading of a `Host` value is the reading of the value at hand.
        #[test]
        fn server_addresses_read_as_without_the_memory(
            asks in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "example.com", "example.com:8080", "127.0.0.1:46391", "[::1]:80",
                        "a:65536", "a:", "h\u{e9}", "EXAMPLE.com:443",
                    ]),
                    proptest::sample::select(vec![
                        "/v1/x", "https://api.example.com/v1/x", "http://b:81/",
                    ]),
                ),
                0..30,
            ),
        ) {
            for (host, uri) in asks {
                let uri: Uri = uri.parse().unwrap();
                let mut headers = HeaderMap::new();
                let value = http::HeaderValue::from_bytes(host.as_bytes()).unwrap();
                headers.insert(header::HOST, value);
                let mut ours = Vec::new();
                push_server_address(&mut ours, &uri, &headers);
                let reading = server_address(&uri, &headers)
                    .map(|(host, port)| (host.into_owned(), port));
                let theirs = server_address_value(&uri, &headers)
                    .map(|(host, port)| (host.as_str().to_owned(), port));
                proptest::prop_assert_eq!(&theirs, &reading);
                if let Some((host, _)) = reading {
                    proptest::prop_assert_eq!(ours[0].value.as_str(), host.as_str());
                }
            }
        }
    }

    #[test]
    fn methods_are_normalised() {
        assert_eq!(method(&Method::GET), ("GET", None));
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method(&custom), ("_OTHER", Some("PURGE".to_owned())));
    }

    #[test]
    fn grpc_paths() {
        assert_eq!(
            grpc_service_method("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(grpc_service_method("/only"), None);
        assert_eq!(grpc_service_method("/a/b/c"), None);
        assert_eq!(grpc_service_method("//m"), None);
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        assert_eq!(forwarded_client(&h).as_deref(), Some("203.0.113.7"));
        h.insert(
            header::FORWARDED,
            "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.2"
                .parse()
                .unwrap(),
        );
        assert_eq!(forwarded_client(&h).as_deref(), Some("2001:db8::1"));
        h.insert(
            header::FORWARDED,
            "proto=https;for=192.0.2.60:80".parse().unwrap(),
        );
        assert_eq!(forwarded_client(&h).as_deref(), Some("192.0.2.60"));
    }

    #[test]
    fn urls_lose_credentials() {
        let uri: Uri = "https://user:pw@api.example.com:8443/v1/x?key=sekrit&a=1"
            .parse()
            .unwrap();
        assert_eq!(
            redacted_url(&uri).unwrap(),
            "https://api.example.com:8443/v1/x?key=REDACTED&a=1"
        );
        let relative: Uri = "/v1/x".parse().unwrap();
        assert_eq!(redacted_url(&relative), None);
    }

    #[test]
    fn client_strings_are_bounded() {
        use crate::limits::{MAX_HEADER_VALUE_BYTES, MAX_HEADER_VALUES, TRUNCATED_MARKER};

        let long = "a".repeat(5000);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            format!("{long}, 10.0.0.1").parse().unwrap(),
        );
        let client = forwarded_client(&h).unwrap();
        assert!(client.len() <= MAX_ADDRESS_BYTES && client.ends_with(TRUNCATED_MARKER));
        h.insert(header::FORWARDED, format!("for={long}").parse().unwrap());
        assert!(forwarded_client(&h).unwrap().len() <= MAX_ADDRESS_BYTES);

        h.insert(header::HOST, format!("{long}:8080").parse().unwrap());
        let root = Uri::from_static("/");
        let (host, port) = server_address(&root, &h).unwrap();
        assert!(host.len() <= MAX_ADDRESS_BYTES);
        assert_eq!(port, Some(8080));
        let uri: Uri = format!("http://{long}/x").parse().unwrap();
        assert!(server_address(&uri, &HeaderMap::new()).unwrap().0.len() <= MAX_ADDRESS_BYTES);

        let uri: Uri = format!("https://api.example.com/{long}?key=s&q={long}")
            .parse()
            .unwrap();
        let url = redacted_url(&uri).unwrap();
        assert!(url.len() <= MAX_URL_BYTES && url.ends_with(TRUNCATED_MARKER));
        assert!(!url.contains("key=s"));

        let custom = Method::from_bytes(long.as_bytes()).unwrap();
        assert!(method(&custom).1.unwrap().len() <= MAX_NAME_BYTES);

        let mut attributes = Vec::new();
        let name = push_grpc(&mut attributes, &format!("/{long}/{long}")).unwrap();
        assert!(name.len() <= 2 * MAX_NAME_BYTES + 1);
        assert!(
            attributes
                .iter()
                .all(|kv| kv.value.as_str().len() <= MAX_NAME_BYTES)
        );

        let capture = HeaderCapture::new("p.", &[HeaderName::from_static("x-tenant")], &[]);
        let mut h = HeaderMap::new();
        for _ in 0..100 {
            h.append("x-tenant", long.parse().unwrap());
        }
        let attrs = capture.attributes(&h);
        let Value::Array(Array::String(values)) = &attrs[0].value else {
            panic!("{attrs:?}");
        };
        assert_eq!(values.len(), MAX_HEADER_VALUES);
        assert!(
            values
                .iter()
                .all(|v| v.as_str().len() <= MAX_HEADER_VALUE_BYTES)
        );
    }

    #[test]
    fn secrets_are_redacted_even_when_asked_for() {
        let capture = HeaderCapture::new(
            "http.request.header.",
            &[
                HeaderName::from_static("authorization"),
                HeaderName::from_static("x-tenant"),
                HeaderName::from_static("x-custom-secret"),
            ],
            &[HeaderName::from_static("x-custom-secret")],
        );
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-123".parse().unwrap());
        h.insert("x-tenant", "acme".parse().unwrap());
        h.insert("x-custom-secret", "hunter2".parse().unwrap());
        let attrs = capture.attributes(&h);
        let text = format!("{attrs:?}");
        assert!(
            !text.contains("sk-123") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.contains("acme"));
        assert_eq!(attrs.len(), 3);
    }
}
