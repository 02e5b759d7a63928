//! Head sampling: [`RuleSampler`], rules over what is known when a span starts.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, Key, KeyValue, StringValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};
use serde::Deserialize;

use super::pattern::Pattern;
use super::{ConfigError, check_ratio, sampled_by_ratio};
use crate::semconv;

/// What a matching rule, or the default, decides for a span.
///
/// In configuration: `"always"`, `"never"`, or a number from 0 to 1 (`sample = 0.25`).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(try_from = "SampleRepr")]
pub enum Sample {
    /// Record and export the span.
    Always,
    /// Drop the span (and, through parent-based sampling, its local children).
    Never,
    /// Keep this fraction of traces, decided by the trace id ([`sampled_by_ratio`]).
    Ratio(f64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SampleRepr {
    Word(String),
    Ratio(f64),
}

impl TryFrom<SampleRepr> for Sample {
    type Error = ConfigError;

    fn try_from(repr: SampleRepr) -> Result<Self, ConfigError> {
        match repr {
            SampleRepr::Word(word) => match word.as_str() {
                "always" => Ok(Sample::Always),
                "never" => Ok(Sample::Never),
                other => Err(ConfigError::new(format!(
                    "sample must be \"always\", \"never\" or a ratio from 0 to 1, got {other:?}"
                ))),
            },
            SampleRepr::Ratio(ratio) => check_ratio("sample", ratio).map(Sample::Ratio),
        }
    }
}

impl Sample {
    fn keeps(self, trace_id: TraceId) -> bool {
        match self {
            Sample::Always => true,
            Sample::Never => false,
            Sample::Ratio(ratio) => sampled_by_ratio(trace_id, ratio),
        }
    }

    fn check(self) -> Result<Self, ConfigError> {
        if let Sample::Ratio(ratio) = self {
            check_ratio("sample", ratio)?;
        }
        Ok(self)
    }
}

/// What a rule matches. Every condition given must hold; an empty `Match` matches every span.
///
/// Values are patterns: `"gpt-4o"` matches exactly, `"gpt-4o*"` matches a prefix, `"*"` only
/// asks that the value be present. A string-array attribute (captured headers) matches when
/// one of its elements does.
///
/// The sampler sees only the attributes a span *starts* with. The layers of this crate start
/// their spans with `http.request.method`, `http.route` and the captured request headers
/// ([`ServerLayer::capture_request_headers`](crate::ServerLayer::capture_request_headers)),
/// and GenAI spans with `gen_ai.request.model`, `gen_ai.operation.name` and
/// `gen_ai.provider.name`. A header that is not captured cannot be matched. Baggage is read
/// from the parent context: the W3C `baggage` header the server layer extracted. Business
/// attributes ([`BusinessContext`](crate::driver::BusinessContext), the gateway's
/// `[telemetry.attributes]`: `user.id`, `session.id`, a tier, an experiment) are start
/// attributes of both spans, matched with `attributes`.
///
/// ```toml
/// match = { route = "/v1/chat/completions", headers = { x-user-tier = "enterprise" } }
/// match = { model = "gpt-4o-experimental*" }
/// match = { baggage = { experiment = "*" } }
/// match = { span_name = "GET /healthz", kind = "server" }
/// match = { attributes = { "gen_ai.provider.name" = "anthropic" } }
/// match = { attributes = { "user.tier" = "free" } }   # mapped by [telemetry.attributes]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Match {
    /// `http.route`, the route template (`/v1/chat/completions`).
    pub route: Option<String>,
    /// `http.request.method` (`POST`).
    pub method: Option<String>,
    /// `gen_ai.request.model`, on GenAI spans.
    pub model: Option<String>,
    /// The span's name (`POST /v1/chat/completions`, `chat gpt-4o`).
    pub span_name: Option<String>,
    /// The span's kind: `server`, `client`, `internal`, `producer` or `consumer`.
    pub kind: Option<String>,
    /// Captured request headers (`http.request.header.<name>`), by lowercase name.
    #[serde(alias = "header")]
    pub headers: BTreeMap<String, String>,
    /// W3C baggage entries of the parent context (`user_id`, `session_id`, `experiment`).
    pub baggage: BTreeMap<String, String>,
    /// Any other start attribute, by its full key.
    #[serde(alias = "attribute")]
    pub attributes: BTreeMap<String, String>,
}

impl Match {
    /// Matches every span; narrow it with the methods below.
    pub fn new() -> Self {
        Self::default()
    }

    /// `http.route` matches `pattern`.
    pub fn route(mut self, pattern: impl Into<String>) -> Self {
        self.route = Some(pattern.into());
        self
    }

    /// `http.request.method` matches `pattern`.
    pub fn method(mut self, pattern: impl Into<String>) -> Self {
        self.method = Some(pattern.into());
        self
    }

    /// `gen_ai.request.model` matches `pattern`.
    pub fn model(mut self, pattern: impl Into<String>) -> Self {
        self.model = Some(pattern.into());
        self
    }

    /// The span name matches `pattern`.
    pub fn span_name(mut self, pattern: impl Into<String>) -> Self {
        self.span_name = Some(pattern.into());
        self
    }

    /// The span is of this kind.
    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = Some(kind_name(&kind).to_owned());
        self
    }

    /// The captured request header `name` matches `pattern`.
    pub fn header(mut self, name: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.headers.insert(name.into(), pattern.into());
        self
    }

    /// The baggage entry `key` matches `pattern`.
    pub fn baggage(mut self, key: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.baggage.insert(key.into(), pattern.into());
        self
    }

    /// The start attribute `key` matches `pattern`.
    pub fn attribute(mut self, key: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), pattern.into());
        self
    }
}

/// One head-sampling rule: when [`matches`](Self::matches), [`sample`](Self::sample).
///
/// ```toml
/// [[sampling.rules]]
/// name = "experiment"          # optional: recorded on sampled spans as llmtrace.sampling.rule
/// match = { model = "gpt-4o-experimental" }
/// sample = "always"            # "always", "never" or a ratio such as 0.25
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Recorded as `llmtrace.sampling.rule` on the spans this rule samples, so a tail policy
    /// (or a query) can find them.
    #[serde(default)]
    pub name: Option<String>,
    /// The conditions.
    #[serde(rename = "match", default)]
    pub matches: Match,
    /// The decision.
    pub sample: Sample,
}

impl Rule {
    /// A rule without a name.
    pub fn new(matches: Match, sample: Sample) -> Self {
        Self {
            name: None,
            matches,
            sample,
        }
    }

    /// Names the rule (`llmtrace.sampling.rule` on the spans it samples).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// The head-sampling configuration: `[sampling]` in the gateway's TOML.
///
/// ```toml
/// [sampling]
/// default_ratio = 0.01     # new traces no rule matches (default 1.0)
/// parent_based = true      # follow the parent's decision when no rule matches (default)
/// [[sampling.rules]]
/// match = { route = "/healthz" }
/// sample = "never"
/// [[sampling.rules]]
/// match = { baggage = { user_id = "u-1234" } }
/// sample = "always"
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// The ratio of new traces (no parent) sampled when no rule matches.
    pub default_ratio: f64,
    /// When no rule matches a span that has a parent, follow the parent's sampled flag (local
    /// or remote). Off: such spans get `default_ratio` too.
    pub parent_based: bool,
    /// Tried in order; the first that matches decides.
    pub rules: Vec<Rule>,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            default_ratio: 1.0,
            parent_based: true,
            rules: Vec::new(),
        }
    }
}

impl HeadConfig {
    /// Builds the sampler, or says what is wrong.
    pub fn build(&self) -> Result<RuleSampler, ConfigError> {
        RuleSampler::new(self)
    }
}

/// A head sampler for the OpenTelemetry SDK: rules over a span's start attributes, its name
/// and kind, and the parent context's baggage; the first matching rule decides. When none
/// matches, a span with a parent follows the parent (parent-based), and a new trace is sampled
/// at the default ratio. Ratios are decided by the trace id ([`sampled_by_ratio`]), so every
/// service of a trace, and the [`TailSampler`](super::TailSampler)'s ratios, agree.
///
/// A rule decides even against the parent: `never` under a sampled parent leaves a gap, and
/// `always` under an unsampled local parent makes a span whose parent is not exported. Rules
/// are meant for the first span a process starts for a request (the server span) and for the
/// spans of an experiment that must be seen whole; see the module docs on combining head and
/// tail sampling.
///
/// ```
/// use llmtrace::sampling::{Match, RuleSampler, Sample};
/// use opentelemetry_sdk::trace::SdkTracerProvider;
///
/// let sampler = RuleSampler::builder()
///     .rule(Match::new().route("/healthz"), Sample::Never)
///     .named_rule("experiment", Match::new().model("gpt-4o-experimental"), Sample::Always)
///     .rule(Match::new().header("x-user-tier", "enterprise"), Sample::Ratio(0.5))
///     .default_ratio(0.01)
///     .build();
/// let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
/// # drop(provider);
/// ```
#[derive(Clone)]
pub struct RuleSampler {
    compiled: Arc<Compiled>,
}

struct Compiled {
    rules: Vec<CompiledRule>,
    default_ratio: f64,
    parent_based: bool,
    config: HeadConfig,
}

struct CompiledRule {
    conditions: Vec<Condition>,
    sample: Sample,
    /// `llmtrace.sampling.rule = <name>`, when the rule is named.
    label: Option<KeyValue>,
}

enum Condition {
    Attribute(Key, Pattern),
    SpanName(Pattern),
    Kind(SpanKind),
    Baggage(String, Pattern),
}

impl fmt::Debug for RuleSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSampler")
            .field("config", &self.compiled.config)
            .finish()
    }
}

impl RuleSampler {
    /// Builds a sampler from its configuration, or says what is wrong.
    pub fn new(config: &HeadConfig) -> Result<Self, ConfigError> {
        let default_ratio = check_ratio("default_ratio", config.default_ratio)?;
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| compile(rule).map_err(|e| ConfigError::new(format!("rule {i}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            compiled: Arc::new(Compiled {
                rules,
                default_ratio,
                parent_based: config.parent_based,
                config: config.clone(),
            }),
        })
    }

    /// A builder, starting from the defaults (no rules, parent-based, default ratio 1.0).
    pub fn builder() -> RuleSamplerBuilder {
        RuleSamplerBuilder {
            config: HeadConfig::default(),
        }
    }

    /// The configuration this sampler was built from.
    pub fn config(&self) -> &HeadConfig {
        &self.compiled.config
    }
}

/// Builds a [`RuleSampler`] from Rust. See [`RuleSampler::builder`].
#[derive(Clone, Debug)]
pub struct RuleSamplerBuilder {
    config: HeadConfig,
}

impl RuleSamplerBuilder {
    /// Adds a rule, tried after those added before.
    pub fn rule(mut self, matches: Match, sample: Sample) -> Self {
        self.config.rules.push(Rule::new(matches, sample));
        self
    }

    /// Adds a named rule: its name is recorded as `llmtrace.sampling.rule` on the spans it
    /// samples.
    pub fn named_rule(mut self, name: impl Into<String>, matches: Match, sample: Sample) -> Self {
        self.config
            .rules
            .push(Rule::new(matches, sample).named(name));
        self
    }

    /// The ratio of new traces sampled when no rule matches (default 1.0).
    pub fn default_ratio(mut self, ratio: f64) -> Self {
        self.config.default_ratio = ratio;
        self
    }

    /// Whether a span with a parent follows the parent when no rule matches (default true).
    pub fn parent_based(mut self, enabled: bool) -> Self {
        self.config.parent_based = enabled;
        self
    }

    /// Builds the sampler.
    ///
    /// # Panics
    ///
    /// When a ratio is outside 0 to 1 or a rule's kind is unknown; use [`RuleSampler::new`]
    /// to get the error instead.
    pub fn build(self) -> RuleSampler {
        match RuleSampler::new(&self.config) {
            Ok(sampler) => sampler,
            Err(error) => panic!("invalid sampling rules: {error}"),
        }
    }
}

fn compile(rule: &Rule) -> Result<CompiledRule, ConfigError> {
    let m = &rule.matches;
    let mut conditions = Vec::new();
    for (key, value) in [
        (semconv::http::ROUTE, &m.route),
        (semconv::http::REQUEST_METHOD, &m.method),
        (semconv::gen_ai::REQUEST_MODEL, &m.model),
    ] {
        if let Some(value) = value {
            conditions.push(Condition::Attribute(
                Key::from_static_str(key),
                Pattern::new(value),
            ));
        }
    }
    if let Some(name) = &m.span_name {
        conditions.push(Condition::SpanName(Pattern::new(name)));
    }
    if let Some(kind) = &m.kind {
        conditions.push(Condition::Kind(parse_kind(kind)?));
    }
    for (name, value) in &m.headers {
        let key = format!(
            "{}{}",
            semconv::http::REQUEST_HEADER_PREFIX,
            name.to_ascii_lowercase()
        );
        conditions.push(Condition::Attribute(Key::from(key), Pattern::new(value)));
    }
    for (key, value) in &m.attributes {
        conditions.push(Condition::Attribute(
            Key::from(key.clone()),
            Pattern::new(value),
        ));
    }
    for (key, value) in &m.baggage {
        conditions.push(Condition::Baggage(key.clone(), Pattern::new(value)));
    }
    let label = rule.name.as_ref().map(|name| {
        KeyValue::new(
            semconv::sampling::RULE,
            StringValue::from(Arc::<str>::from(name.as_str())),
        )
    });
    Ok(CompiledRule {
        conditions,
        sample: rule.sample.check()?,
        label,
    })
}

fn parse_kind(kind: &str) -> Result<SpanKind, ConfigError> {
    Ok(match kind.to_ascii_lowercase().as_str() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "internal" => SpanKind::Internal,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        other => {
            return Err(ConfigError::new(format!(
                "kind must be server, client, internal, producer or consumer, got {other:?}"
            )));
        }
    })
}

fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Internal => "internal",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

impl CompiledRule {
    fn matches(
        &self,
        parent: Option<&Context>,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
    ) -> bool {
        self.conditions.iter().all(|condition| match condition {
            Condition::Attribute(key, pattern) => attributes
                .iter()
                .any(|kv| kv.key == *key && pattern.matches_value(&kv.value)),
            Condition::SpanName(pattern) => pattern.matches_str(name),
            Condition::Kind(wanted) => wanted == kind,
            Condition::Baggage(key, pattern) => parent
                .and_then(|cx| cx.baggage().get(key))
                .is_some_and(|value| pattern.matches_str(value.as_str())),
        })
    }
}

impl ShouldSample for RuleSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let compiled = &*self.compiled;
        let parent_span = parent_context
            .filter(|cx| cx.has_active_span())
            .map(|cx| cx.span());
        let parent_sc = parent_span
            .as_ref()
            .map(|span| span.span_context())
            .filter(|sc| sc.is_valid());

        let rule = compiled
            .rules
            .iter()
            .find(|rule| rule.matches(parent_context, name, span_kind, attributes));
        let (keep, label) = match (rule, parent_sc) {
            (Some(rule), _) => (rule.sample.keeps(trace_id), rule.label.as_ref()),
            (None, Some(parent)) if compiled.parent_based => (parent.is_sampled(), None),
            (None, _) => (sampled_by_ratio(trace_id, compiled.default_ratio), None),
        };
        SamplingResult {
            decision: if keep {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: match (keep, label) {
                (true, Some(label)) => vec![label.clone()],
                _ => Vec::new(),
            },
            trace_state: parent_sc
                .map(|sc| sc.trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};

    fn decide(
        sampler: &RuleSampler,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        attributes: &[KeyValue],
    ) -> SamplingResult {
        sampler.should_sample(parent, trace_id, name, &SpanKind::Server, attributes, &[])
    }

    fn sampled(result: &SamplingResult) -> bool {
        result.decision == SamplingDecision::RecordAndSample
    }

    fn id(i: u64) -> TraceId {
        TraceId::from(u128::from(i).wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15))
    }

    fn remote_parent(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            id(7),
            SpanId::from(1u64),
            flags,
            true,
            TraceState::from_key_value([("vendor", "x")]).unwrap(),
        ))
    }

    #[test]
    fn first_matching_rule_wins() {
        let sampler = RuleSampler::builder()
            .rule(Match::new().route("/healthz"), Sample::Never)
            .named_rule("exp", Match::new().model("gpt-4o-exp*"), Sample::Always)
            .rule(Match::new().model("*"), Sample::Never)
            .default_ratio(0.0)
            .build();
        let health = [KeyValue::new("http.route", "/healthz")];
        assert!(!sampled(&decide(
            &sampler,
            None,
            id(1),
            "GET /healthz",
            &health
        )));
        let exp = [KeyValue::new("gen_ai.request.model", "gpt-4o-exp-2")];
        let result = decide(&sampler, None, id(1), "chat", &exp);
        assert!(sampled(&result));
        assert_eq!(
            result.attributes,
            vec![KeyValue::new("llmtrace.sampling.rule", "exp")]
        );
        let other = [KeyValue::new("gen_ai.request.model", "gpt-4o")];
        assert!(!sampled(&decide(&sampler, None, id(1), "chat", &other)));
        assert!(!sampled(&decide(&sampler, None, id(1), "x", &[])));
    }

    #[test]
    fn headers_baggage_method_kind_and_name() {
        let sampler = RuleSampler::builder()
            .rule(
                Match::new()
                    .header("X-User-Tier", "enterprise")
                    .method("POST"),
                Sample::Always,
            )
            .rule(Match::new().baggage("user_id", "u-42"), Sample::Always)
            .rule(
                Match::new()
                    .span_name("GET /v1/models")
                    .kind(SpanKind::Client),
                Sample::Always,
            )
            .default_ratio(0.0)
            .build();
        let tier = |tier: &str| {
            vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new(
                    "http.request.header.x-user-tier",
                    opentelemetry::Value::Array(vec![StringValue::from(tier.to_owned())].into()),
                ),
            ]
        };
        assert!(sampled(&decide(
            &sampler,
            None,
            id(2),
            "POST",
            &tier("enterprise")
        )));
        assert!(!sampled(&decide(
            &sampler,
            None,
            id(2),
            "POST",
            &tier("free")
        )));

        let cx = Context::new().with_baggage([KeyValue::new("user_id", "u-42")]);
        assert!(sampled(&decide(&sampler, Some(&cx), id(3), "POST", &[])));
        let cx = Context::new().with_baggage([KeyValue::new("user_id", "u-43")]);
        assert!(!sampled(&decide(&sampler, Some(&cx), id(3), "POST", &[])));

        let client =
            sampler.should_sample(None, id(4), "GET /v1/models", &SpanKind::Client, &[], &[]);
        assert!(sampled(&client));
        assert!(!sampled(&decide(
            &sampler,
            None,
            id(4),
            "GET /v1/models",
            &[]
        )));
    }

    #[test]
    fn parent_based_unless_a_rule_matches() {
        let sampler = RuleSampler::builder()
            .rule(Match::new().route("/always"), Sample::Always)
            .rule(Match::new().route("/never"), Sample::Never)
            .default_ratio(0.0)
            .build();
        let sampled_parent = remote_parent(true);
        let unsampled_parent = remote_parent(false);
        let result = decide(&sampler, Some(&sampled_parent), id(7), "x", &[]);
        assert!(sampled(&result));
        assert_eq!(result.trace_state.get("vendor"), Some("x"));
        assert!(!sampled(&decide(
            &sampler,
            Some(&unsampled_parent),
            id(7),
            "x",
            &[]
        )));
        let never = [KeyValue::new("http.route", "/never")];
        assert!(!sampled(&decide(
            &sampler,
            Some(&sampled_parent),
            id(7),
            "x",
            &never
        )));
        let always = [KeyValue::new("http.route", "/always")];
        assert!(sampled(&decide(
            &sampler,
            Some(&unsampled_parent),
            id(7),
            "x",
            &always
        )));

        let ignoring = RuleSampler::builder()
            .parent_based(false)
            .default_ratio(0.0)
            .build();
        assert!(!sampled(&decide(
            &ignoring,
            Some(&sampled_parent),
            id(7),
            "x",
            &[]
        )));
    }

    #[test]
    fn ratio_is_deterministic_by_trace_id() {
        let sampler = RuleSampler::builder().default_ratio(0.1).build();
        let n = 100_000;
        let kept = (0..n)
            .filter(|i| {
                let a = sampled(&decide(&sampler, None, id(*i), "x", &[]));
                let b = sampled(&decide(&sampler, None, id(*i), "y", &[]));
                assert_eq!(a, b);
                a
            })
            .count();
        // 10 % of 100 000, ± 5 standard deviations (σ ≈ 95).
        assert!((9_525..=10_475).contains(&kept), "{kept}");
    }

    #[test]
    fn deserializes_from_toml() {
        let config: HeadConfig = toml::from_str(
            r#"
            default_ratio = 0.01
            [[rules]]
            match = { model = "gpt-4o-experimental" }
            sample = "always"
            [[rules]]
            name = "tier"
            match = { headers = { x-user-tier = "enterprise" }, baggage = { session_id = "*" } }
            sample = 0.5
            [[rules]]
            match = { route = "/healthz", kind = "server" }
            sample = 0
            "#,
        )
        .unwrap();
        assert_eq!(config.default_ratio, 0.01);
        assert!(config.parent_based);
        assert_eq!(config.rules.len(), 3);
        assert_eq!(config.rules[0].sample, Sample::Always);
        assert_eq!(config.rules[1].sample, Sample::Ratio(0.5));
        assert_eq!(config.rules[1].name.as_deref(), Some("tier"));
        assert_eq!(config.rules[1].matches.headers["x-user-tier"], "enterprise");
        assert_eq!(config.rules[2].sample, Sample::Ratio(0.0));
        config.build().unwrap();

        for bad in [
            "[[rules]]\nsample = \"sometimes\"",
            "[[rules]]\nsample = 1.5",
            "[[rules]]\nmatch = { modle = \"x\" }\nsample = \"always\"",
            "[[rules]]\nmatch = { kind = \"sideways\" }\nsample = \"always\"",
        ] {
            let parsed: Result<HeadConfig, _> = toml::from_str(bad);
            let built = parsed
                .map_err(|e| e.to_string())
                .and_then(|c| c.build().map(drop).map_err(|e| e.to_string()));
            assert!(built.is_err(), "{bad}");
        }
        assert!(
            HeadConfig {
                default_ratio: 2.0,
                ..HeadConfig::default()
            }
            .build()
            .is_err()
        );
    }
}
