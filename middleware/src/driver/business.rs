//! [`BusinessContext`]: who and what a request is for (a user, a session, a tenant, an
//! experiment, a prompt template's version), read from request headers and baggage into span
//! attributes and, opt-in, metric dimensions.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::{Context, Key, KeyValue, StringValue, Value};
use serde::Deserialize;

use super::attrs::ALWAYS_REDACTED;
use crate::genai::metrics::LabelSet;
use crate::limits::{MAX_LABEL_BYTES, OTHER_LABEL, bounded};
use crate::semconv;

/// Default cap on each business attribute value, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 256;
/// Default number of distinct values a metric dimension keeps before new ones become `_OTHER`.
pub const DEFAULT_MAX_DIMENSION_VALUES: usize = 100;

/// Attribute keys a mapping may not write: the spans set these themselves, and a client
/// header must not be able to overwrite them. `gen_ai.conversation.id` is the one GenAI key a
/// mapping may target.
const RESERVED_PREFIXES: &[&str] = &[
    "http.",
    "url.",
    "server.",
    "client.",
    "network.",
    "rpc.",
    "error.",
    "gen_ai.",
    "exception.",
    "otel.",
];

/// The configuration of a [`BusinessContext`]; in the gateway's TOML, `[telemetry.attributes]`:
///
/// ```toml
/// [telemetry.attributes]
/// headers = { "x-user-id" = "user.id", "x-session-id" = "session.id" }
/// baggage = { "experiment" = "llmtrace.experiment" }
/// metric_dimensions = ["llmtrace.experiment"]   # opt-in, capped
/// max_value_bytes = 256
/// max_dimension_values = 100
/// ```
///
/// A value comes from the request header when it has one, else from the baggage entry mapped
/// to the same attribute. `session.id` (or a direct `gen_ai.conversation.id` mapping) also
/// becomes the GenAI span's `gen_ai.conversation.id`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusinessContextConfig {
    /// Request header name (any case) → span attribute key. Credential headers
    /// (`authorization`, `x-api-key`, `cookie`, ...) are refused.
    pub headers: BTreeMap<String, String>,
    /// Baggage key (exact) → span attribute key.
    pub baggage: BTreeMap<String, String>,
    /// Attribute keys (of those mapped above) that also become dimensions of the GenAI
    /// metrics. Off by default: each dimension multiplies the series. Each keeps its first
    /// `max_dimension_values` distinct values; later new values are recorded as `_OTHER`.
    pub metric_dimensions: Vec<String>,
    /// Cap on each attribute value, in bytes (default 256); longer values are cut to it,
    /// ending with a `…[truncated]` marker. Metric dimension values are cut to 64 bytes.
    pub max_value_bytes: usize,
    /// Distinct values per metric dimension (default 100).
    pub max_dimension_values: usize,
}

impl Default for BusinessContextConfig {
    fn default() -> Self {
        Self {
            headers: BTreeMap::new(),
            baggage: BTreeMap::new(),
            metric_dimensions: Vec::new(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_dimension_values: DEFAULT_MAX_DIMENSION_VALUES,
        }
    }
}

impl BusinessContextConfig {
    /// Checks the configuration and builds the extractor.
    ///
    /// ```
    /// use llmtrace::driver::BusinessContextConfig;
    ///
    /// let config: BusinessContextConfig = serde_json::from_str(
    ///     r#"{"headers": {"Authorization": "user.id"}}"#,
    /// ).unwrap();
    /// let error = config.build().unwrap_err();
    /// assert!(error.to_string().contains("credentials"), "{error}");
    /// ```
    pub fn build(&self) -> Result<BusinessContext, BusinessContextError> {
        let mut builder = BusinessContext::builder()
            .max_value_bytes(self.max_value_bytes)
            .max_dimension_values(self.max_dimension_values);
        for (header, key) in &self.headers {
            builder = builder.header(header, key);
        }
        for (entry, key) in &self.baggage {
            builder = builder.baggage(entry, key);
        }
        for key in &self.metric_dimensions {
            builder = builder.metric_dimension(key);
        }
        builder.build()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.baggage.is_empty()
    }
}

/// A [`BusinessContextConfig`] that cannot work; the message names the offending entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessContextError(String);

impl fmt::Display for BusinessContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BusinessContextError {}

/// Reads business context from a request: mapped request headers and baggage entries become
/// span attributes, set when the spans start (so head sampling rules can match them), each
/// value capped in length. Build it once and share it; [`extract`](Self::extract) it per
/// request.
///
/// ```
/// use llmtrace::driver::BusinessContext;
/// use opentelemetry::Context;
///
/// let business = BusinessContext::builder()
///     .header("x-user-id", "user.id")
///     .header("x-session-id", "session.id")
///     .baggage("experiment", "llmtrace.experiment")
///     .metric_dimension("llmtrace.experiment")
///     .build()
///     .unwrap();
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-user-id", "u-42".parse().unwrap());
/// headers.insert("x-session-id", "s-7".parse().unwrap());
/// headers.insert("baggage", "experiment=B".parse().unwrap());
/// let cx = llmtrace::propagation::extract(&headers);
///
/// let found = business.extract(&headers, &cx).unwrap();
/// assert_eq!(found.get("user.id").unwrap().as_str(), "u-42");
/// assert_eq!(found.conversation_id(), Some("s-7"));
/// assert_eq!(found.metric_dimensions()[0].value.as_str(), "B");
/// ```
#[derive(Clone)]
pub struct BusinessContext {
    inner: Arc<Inner>,
}

struct Inner {
    headers: Vec<(HeaderName, Key)>,
    baggage: Vec<(String, Key)>,
    dimensions: Vec<(Key, LabelSet)>,
    max_value_bytes: usize,
}

impl fmt::Debug for BusinessContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("BusinessContext")
            .field("headers", &inner.headers)
            .field("baggage", &inner.baggage)
            .field(
                "metric_dimensions",
                &inner.dimensions.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("max_value_bytes", &inner.max_value_bytes)
            .finish()
    }
}

impl BusinessContext {
    /// A builder; see the type's example.
    pub fn builder() -> BusinessContextBuilder {
        BusinessContextBuilder {
            headers: Vec::new(),
            baggage: Vec::new(),
            dimensions: Vec::new(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_dimension_values: DEFAULT_MAX_DIMENSION_VALUES,
        }
    }

    /// The business attributes of a request, from its `headers` and the baggage of `cx` (the
    /// extracted caller context). `None` when no mapped value is present, which costs no
    /// allocation.
    pub fn extract(&self, headers: &HeaderMap, cx: &Context) -> Option<Arc<BusinessAttributes>> {
        let inner = &*self.inner;
        let mut attributes: Vec<KeyValue> = Vec::new();
        let mut push = |key: &Key, value: &str| {
            let value = value.trim();
            if value.is_empty() || attributes.iter().any(|kv| kv.key == *key) {
                return;
            }
            let value: Arc<str> = bounded(value, inner.max_value_bytes).into();
            attributes.push(KeyValue::new(key.clone(), StringValue::from(value)));
        };
        for (name, key) in &inner.headers {
            if let Some(value) = headers.get(name) {
                push(key, &String::from_utf8_lossy(value.as_bytes()));
            }
        }
        if !inner.baggage.is_empty() {
            let baggage = cx.baggage();
            for (entry, key) in &inner.baggage {
                if let Some(value) = baggage.get(entry.as_str()) {
                    push(key, value.as_str());
                }
            }
        }
        if attributes.is_empty() {
            return None;
        }
        let dimensions = inner
            .dimensions
            .iter()
            .filter_map(|(key, labels)| {
                let value = attributes.iter().find(|kv| kv.key == *key)?.value.clone();
                Some(KeyValue::new(key.clone(), dimension_value(value, labels)))
            })
            .collect();
        let conversation_id = [semconv::gen_ai::CONVERSATION_ID, SESSION_ID]
            .into_iter()
            .find_map(|name| attributes.iter().find(|kv| kv.key.as_str() == name))
            .map(|kv| kv.value.clone());
        Some(Arc::new(BusinessAttributes {
            attributes,
            dimensions,
            conversation_id,
        }))
    }
}

/// The attribute that names a session (OpenTelemetry's general `session.id`).
const SESSION_ID: &str = "session.id";

/// A dimension's value as recorded: bounded in length, and `_OTHER` once its set is full.
fn dimension_value(value: Value, labels: &LabelSet) -> Value {
    let text = value.as_str();
    let text = bounded(&text, MAX_LABEL_BYTES);
    let value = Value::from(text.into_owned());
    if labels.admit(&value) {
        value
    } else {
        Value::from(OTHER_LABEL)
    }
}

/// Builds a [`BusinessContext`]; [`build`](Self::build) checks every mapping.
#[derive(Debug, Clone)]
pub struct BusinessContextBuilder {
    headers: Vec<(String, String)>,
    baggage: Vec<(String, String)>,
    dimensions: Vec<String>,
    max_value_bytes: usize,
    max_dimension_values: usize,
}

impl BusinessContextBuilder {
    /// Records request header `name` (any case) as attribute `key`.
    pub fn header(mut self, name: impl Into<String>, key: impl Into<String>) -> Self {
        self.headers.push((name.into(), key.into()));
        self
    }

    /// Records baggage entry `entry` as attribute `key`.
    pub fn baggage(mut self, entry: impl Into<String>, key: impl Into<String>) -> Self {
        self.baggage.push((entry.into(), key.into()));
        self
    }

    /// Makes attribute `key` (one of those mapped) a dimension of the GenAI metrics.
    pub fn metric_dimension(mut self, key: impl Into<String>) -> Self {
        self.dimensions.push(key.into());
        self
    }

    /// Caps each value at `max` bytes (default [`DEFAULT_MAX_VALUE_BYTES`], from 32 to 4096; the cut keeps a 14-byte marker).
    pub fn max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// Keeps `max` distinct values per metric dimension (default
    /// [`DEFAULT_MAX_DIMENSION_VALUES`], at most 10 000).
    pub fn max_dimension_values(mut self, max: usize) -> Self {
        self.max_dimension_values = max;
        self
    }

    /// Checks the mappings: valid header names and no credential header, attribute keys
    /// that our spans do not set themselves, each key mapped from one header and at most one
    /// baggage entry, dimensions among the mapped keys, caps in range.
    pub fn build(self) -> Result<BusinessContext, BusinessContextError> {
        let fail = |message: String| Err(BusinessContextError(message));
        if !(32..=4096).contains(&self.max_value_bytes) {
            return fail(format!(
                "max_value_bytes must be from 32 to 4096, got {}",
                self.max_value_bytes
            ));
        }
        if !(1..=10_000).contains(&self.max_dimension_values) {
            return fail(format!(
                "max_dimension_values must be from 1 to 10000, got {}",
                self.max_dimension_values
            ));
        }
        let headers = self
            .headers
            .iter()
            .map(|(name, key)| Ok((header_name(name)?, attribute_key(key)?)))
            .collect::<Result<Vec<_>, BusinessContextError>>()?;
        let baggage = self
            .baggage
            .iter()
            .map(|(entry, key)| {
                if entry.is_empty() {
                    return Err(BusinessContextError("an empty baggage key".to_owned()));
                }
                Ok((entry.clone(), attribute_key(key)?))
            })
            .collect::<Result<Vec<_>, BusinessContextError>>()?;
        check_unique(&headers, "header")?;
        check_unique(&baggage, "baggage entry")?;
        let dimensions = self
            .dimensions
            .iter()
            .map(|key| {
                let mapped = headers.iter().map(|(_, k)| k).chain(baggage.iter().map(|(_, k)| k));
                match mapped.into_iter().find(|k| k.as_str() == key) {
                    Some(key) => Ok((key.clone(), LabelSet::new(self.max_dimension_values))),
                    None => Err(BusinessContextError(format!(
                        "metric dimension {key:?} is not an attribute mapped from a header or baggage"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, BusinessContextError>>()?;
        Ok(BusinessContext {
            inner: Arc::new(Inner {
                headers,
                baggage,
                dimensions,
                max_value_bytes: self.max_value_bytes,
            }),
        })
    }
}

fn header_name(name: &str) -> Result<HeaderName, BusinessContextError> {
    let header = HeaderName::try_from(name.to_ascii_lowercase())
        .map_err(|_| BusinessContextError(format!("{name:?} is not a valid HTTP header name")))?;
    if ALWAYS_REDACTED.contains(&header.as_str()) {
        return Err(BusinessContextError(format!(
            "header {name:?} carries credentials and is never recorded"
        )));
    }
    Ok(header)
}

fn attribute_key(key: &str) -> Result<Key, BusinessContextError> {
    let valid = !key.is_empty()
        && key.len() <= 255
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(BusinessContextError(format!(
            "attribute key {key:?} must be 1 to 255 characters of letters, digits, '.', '_' and '-'"
        )));
    }
    let reserved = key != semconv::gen_ai::CONVERSATION_ID
        && RESERVED_PREFIXES.iter().any(|p| key.starts_with(p));
    if reserved {
        return Err(BusinessContextError(format!(
            "attribute key {key:?} is one the spans set themselves (http.*, gen_ai.*, ...); pick \
             another (gen_ai.conversation.id is allowed)"
        )));
    }
    Ok(Key::from(Arc::<str>::from(key)))
}

/// Each attribute key mapped from at most one source of a kind: two headers for one key
/// would make the value depend on which the client sent.
fn check_unique<T>(mappings: &[(T, Key)], what: &str) -> Result<(), BusinessContextError> {
    for (i, (_, key)) in mappings.iter().enumerate() {
        if mappings[..i].iter().any(|(_, k)| k == key) {
            return Err(BusinessContextError(format!(
                "attribute {:?} is mapped from more than one {what}",
                key.as_str()
            )));
        }
    }
    Ok(())
}

/// What [`BusinessContext::extract`] found in one request: the span attributes, the metric
/// dimensions (bounded in cardinality) and the conversation id. It travels in the request's
/// [`Context`] (see [`attach`](Self::attach)), so the GenAI spans of the request, in the
/// gateway or under [`GenAiLayer`](crate::GenAiLayer), carry it too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BusinessAttributes {
    attributes: Vec<KeyValue>,
    dimensions: Vec<KeyValue>,
    conversation_id: Option<Value>,
}

impl BusinessAttributes {
    /// The span attributes, each value capped.
    pub fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }

    /// The value of attribute `key`, when the request carried it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// The opted-in metric dimensions: values cut to 64 bytes, `_OTHER` past the cap of
    /// distinct values.
    pub fn metric_dimensions(&self) -> &[KeyValue] {
        &self.dimensions
    }

    /// `session.id` or a mapped `gen_ai.conversation.id`: the GenAI span's
    /// `gen_ai.conversation.id`.
    pub fn conversation_id(&self) -> Option<&str> {
        match &self.conversation_id {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    /// These attributes and `key = value` (replacing a value of that key), also a metric
    /// dimension when `dimension`. For values the caller bounds itself, such as a configured
    /// canary cohort's name: nothing is capped here.
    ///
    /// ```
    /// use llmtrace::driver::BusinessAttributes;
    ///
    /// let cohort = BusinessAttributes::default().with("llmtrace.cohort", "canary", true);
    /// assert_eq!(cohort.get("llmtrace.cohort").unwrap().as_str(), "canary");
    /// assert_eq!(cohort.metric_dimensions().len(), 1);
    /// ```
    pub fn with(
        &self,
        key: &'static str,
        value: impl Into<opentelemetry::StringValue>,
        dimension: bool,
    ) -> Self {
        let value = Value::String(value.into());
        let mut next = self.clone();
        next.attributes.retain(|kv| kv.key.as_str() != key);
        next.attributes.push(KeyValue::new(key, value.clone()));
        if dimension {
            next.dimensions.retain(|kv| kv.key.as_str() != key);
            next.dimensions.push(KeyValue::new(key, value));
        }
        next
    }

    /// `cx` carrying these attributes, for the spans started under it.
    pub fn attach(self: &Arc<Self>, cx: &Context) -> Context {
        cx.with_value(Carried(self.clone()))
    }

    /// The attributes carried by `cx`, when [`attach`](Self::attach) put some there.
    pub fn of(cx: &Context) -> Option<Arc<BusinessAttributes>> {
        cx.get::<Carried>().map(|c| c.0.clone())
    }
}

/// The [`Context`] value [`BusinessAttributes::attach`] sets.
#[derive(Debug)]
struct Carried(Arc<BusinessAttributes>);

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::try_from(*name).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn context() -> BusinessContext {
        BusinessContext::builder()
            .header("X-User-Id", "user.id")
            .header("x-session-id", "session.id")
            .baggage("experiment", "llmtrace.experiment")
            .baggage("user", "user.id")
            .metric_dimension("llmtrace.experiment")
            .max_value_bytes(32)
            .max_dimension_values(2)
            .build()
            .unwrap()
    }

    #[test]
    fn headers_win_over_baggage_and_values_are_capped() {
        let business = context();
        let h = headers(&[
            ("x-user-id", "  a-very-long-user-identifier-indeed  "),
            ("baggage", "user=from-baggage,experiment=B"),
        ]);
        let cx = crate::propagation::extract(&h);
        let found = business.extract(&h, &cx).unwrap();
        let user = found.get("user.id").unwrap().as_str();
        assert!(user.starts_with("a-very"), "{user}");
        assert!(user.len() <= 32 && user.ends_with("[truncated]"), "{user}");
        assert_eq!(found.get("llmtrace.experiment").unwrap().as_str(), "B");
        assert_eq!(found.conversation_id(), None);
        // Baggage alone fills what the headers do not.
        let h = headers(&[("baggage", "user=u1")]);
        let cx = crate::propagation::extract(&h);
        let found = business.extract(&h, &cx).unwrap();
        assert_eq!(found.get("user.id").unwrap().as_str(), "u1");
        assert!(found.metric_dimensions().is_empty());
    }

    #[test]
    fn nothing_mapped_present_is_none() {
        let business = context();
        let h = headers(&[("x-other", "1"), ("x-user-id", "   ")]);
        assert_eq!(business.extract(&h, &Context::new()), None);
    }

    #[test]
    fn dimensions_keep_their_first_values_then_say_other() {
        let business = context();
        let values: Vec<String> = ["A", "B", "C", "A", "D"]
            .iter()
            .map(|v| {
                let h = headers(&[("baggage", &format!("experiment={v}"))]);
                let cx = crate::propagation::extract(&h);
                let found = business.extract(&h, &cx).unwrap();
                found.metric_dimensions()[0].value.as_str().into_owned()
            })
            .collect();
        assert_eq!(values, ["A", "B", "_OTHER", "A", "_OTHER"]);
    }

    #[test]
    fn the_session_is_the_conversation_and_travels_in_the_context() {
        let business = context();
        let h = headers(&[("x-session-id", "s-1")]);
        let found = business.extract(&h, &Context::new()).unwrap();
        assert_eq!(found.conversation_id(), Some("s-1"));
        let cx = found.attach(&Context::new());
        assert_eq!(BusinessAttributes::of(&cx), Some(found));
        assert_eq!(BusinessAttributes::of(&Context::new()), None);
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        let cases: Vec<(BusinessContextBuilder, &str)> = vec![
            (
                BusinessContext::builder().header("x-api-key", "k"),
                "credentials",
            ),
            (
                BusinessContext::builder().header("Cookie", "k"),
                "credentials",
            ),
            (
                BusinessContext::builder().header("bad header", "k"),
                "valid HTTP header",
            ),
            (
                BusinessContext::builder().header("x-a", "http.route"),
                "set themselves",
            ),
            (
                BusinessContext::builder().header("x-a", "gen_ai.request.model"),
                "set themselves",
            ),
            (
                BusinessContext::builder().header("x-a", "user id"),
                "letters",
            ),
            (BusinessContext::builder().header("x-a", ""), "letters"),
            (BusinessContext::builder().baggage("", "k"), "empty baggage"),
            (
                BusinessContext::builder()
                    .header("x-a", "k")
                    .header("x-b", "k"),
                "more than one header",
            ),
            (
                BusinessContext::builder()
                    .header("x-a", "k")
                    .metric_dimension("other"),
                "not an attribute mapped",
            ),
            (
                BusinessContext::builder().max_value_bytes(0),
                "max_value_bytes",
            ),
            (
                BusinessContext::builder().max_dimension_values(0),
                "max_dimension_values",
            ),
        ];
        for (builder, expected) in cases {
            let error = builder.clone().build().unwrap_err().to_string();
            assert!(error.contains(expected), "{builder:?}: {error}");
        }
        let ok = BusinessContext::builder()
            .header("x-conversation", "gen_ai.conversation.id")
            .build();
        assert!(ok.is_ok());
    }

    #[test]
    fn the_configuration_reads_from_toml_shaped_data() {
        let config: BusinessContextConfig = serde_json::from_str(
            r#"{"headers": {"x-user-id": "user.id"}, "baggage": {"experiment": "llmtrace.experiment"},
                "metric_dimensions": ["llmtrace.experiment"]}"#,
        )
        .unwrap();
        assert_eq!(config.max_value_bytes, DEFAULT_MAX_VALUE_BYTES);
        assert!(!config.is_empty());
        config.build().unwrap();
        let unknown = serde_json::from_str::<BusinessContextConfig>(r#"{"header": {}}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn non_utf8_header_values_are_read_lossily_never_dropped_silently() {
        let business = context();
        let mut h = HeaderMap::new();
        h.insert(
            "x-user-id",
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        let found = business.extract(&h, &Context::new()).unwrap();
        assert_eq!(found.get("user.id").unwrap().as_str(), "caf\u{fffd}");
    }
}
