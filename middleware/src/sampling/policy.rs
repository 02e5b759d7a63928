//! Tail-sampling policies: what makes a finished trace worth keeping.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{Status, TraceId};
use opentelemetry::{Array, Key, StringValue, Value};
use opentelemetry_sdk::trace::SpanData;
use serde::Deserialize;

use super::pattern::Pattern;
use super::{ConfigError, check_ratio, is_local_root, sampled_by_ratio};
use crate::genai::PromptWatch;
use crate::semconv::{self, sampling as names};

/// A reason to keep a trace. A policy matches a trace when one of its spans (any span, not
/// only the root) shows what the policy looks for; [`Any`](Policy::Any) and
/// [`All`](Policy::All) combine policies. The [`TailSampler`](super::TailSampler) keeps a
/// trace when one of its policies matches and records the policy's reason on the root span as
/// `llmtrace.sampling.reason`.
///
/// In configuration each policy is a table with one of these keys (and optionally `name`,
/// which replaces the reason):
///
/// ```toml
/// policies = [
///   { error = true },                     # reason "error"
///   { duration_ms = 5000 },               # "slow"
///   { ttft_ms = 2000 },                   # "ttft"
///   { gap_p99_ms = 1000 },                # "stall"
///   { stalls = 1 },                       # "stall"
///   { attribute = { key = "gen_ai.response.finish_reasons", value = "content_filter" } },
///   { attribute = { key = "http.request.header.x-user-tier", value = "enterprise" }, name = "tier" },
///   { aborted = true },                   # "aborted"
///   { prompt = { keywords = ["refund", "lawsuit"] } },                 # "prompt"
///   { prompt = { regex = '(?i)\bcancel\s+my\s+account\b' }, name = "churn" },
///   { ratio = 0.05 },                     # "ratio"
///   { all = [ { model = "gpt-4o*" }, { duration_ms = 1000 } ] },   # see below
///   { any = [ { stalls = 3 }, { gap_p99_ms = 500 } ], name = "choppy" },
/// ]
/// ```
///
/// (`model = ...` is short for `attribute = { key = "gen_ai.request.model", value = ... }`.)
///
/// A `prompt` policy is looked for while the request body is read, not on the finished
/// spans: see [`Policy::Prompt`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "PolicyRepr")]
pub enum Policy {
    /// A span failed: error status or an `error.type` attribute. Spans of a client that went
    /// away (`llmtrace.aborted`) are not errors here; see [`Aborted`](Policy::Aborted).
    /// Reason `error`.
    Error,
    /// The trace's local root span lasted at least this long (any span, when the trace was
    /// decided before its root ended). Reason `slow`.
    Duration(Duration),
    /// `gen_ai.response.time_to_first_chunk` at least this long. Reason `ttft`.
    TimeToFirstChunk(Duration),
    /// The estimated 99th percentile gap between streamed chunks (`llmtrace.stream.gap.p99`)
    /// at least this long. Reason `stall`.
    GapP99(Duration),
    /// At least this many stalls (`llmtrace.stream.stalls`, gaps over the GenAI layer's stall
    /// threshold). Reason `stall`.
    Stalls(u64),
    /// An attribute matches (model, user tier, provider, finish reason, ...). Reason
    /// `attribute:<key>`.
    Attribute(AttributeMatch),
    /// The client went away before the response ended (`llmtrace.aborted`). Reason `aborted`.
    Aborted,
    /// This fraction of traces, by trace id (the same test as the head sampler's ratios).
    /// Reason `ratio`.
    Ratio(f64),
    /// The request's prompt contains one of the keywords (ignoring ASCII case) or matches the
    /// regular expression. Reason `prompt`, or the policy's name.
    ///
    /// The prompt is not on the spans, so the match is made while the request body is read,
    /// by the [`PromptWatch`] that [`TailConfig::prompt_watch`](super::TailConfig::prompt_watch)
    /// builds from the policies; the GenAI span records the ids of the matchers that matched
    /// in `llmtrace.prompt.matched` (an unnamed policy's id is `prompt`, a named one's its
    /// name, so two prompt policies need different names) and this policy looks for its id
    /// there. Nothing of the prompt is kept. The gateway sets the watch itself; with the
    /// tower [`GenAiLayer`](crate::GenAiLayer), set it on
    /// [`GenAiConfig::prompt_watch`](crate::genai::GenAiConfig::prompt_watch). What is
    /// scanned and what it costs: [`PromptWatch`].
    Prompt(PromptMatch),
    /// One of these matches; the reason is the first match's.
    Any(Vec<Policy>),
    /// All of these match; the reason is theirs joined by `+` (`slow+attribute:gen_ai.request.model`).
    All(Vec<Policy>),
    /// The policy, with this reason instead of its own.
    Named(String, Box<Policy>),
}

impl Policy {
    /// [`Policy::Attribute`]: `key` matches `pattern` (`"x"` exactly, `"x*"` a prefix, `"*"`
    /// present).
    pub fn attribute(key: impl Into<String>, pattern: impl Into<String>) -> Self {
        Policy::Attribute(AttributeMatch {
            key: key.into(),
            value: Some(pattern.into()),
        })
    }

    /// This policy, recorded with `name` as the reason.
    pub fn named(self, name: impl Into<String>) -> Self {
        Policy::Named(name.into(), Box::new(self))
    }

    /// The [`Prompt`](Policy::Prompt) policies in this one, in order, each with its matcher
    /// id: the name of a `Named` directly around it, else `prompt`.
    pub(crate) fn prompt_matchers<'a>(&'a self, out: &mut Vec<(&'a str, &'a PromptMatch)>) {
        match self {
            Policy::Prompt(m) => out.push((names::REASON_PROMPT, m)),
            Policy::Named(name, inner) => match &**inner {
                Policy::Prompt(m) => out.push((name, m)),
                inner => inner.prompt_matchers(out),
            },
            Policy::Any(members) | Policy::All(members) => {
                members.iter().for_each(|m| m.prompt_matchers(out));
            }
            _ => {}
        }
    }
}

/// What a [`Policy::Prompt`] looks for: at least one keyword, or a regex, or both.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptMatch {
    /// Matched anywhere in the prompt's text, ignoring ASCII case; none may be empty.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// A regular expression (the `regex` crate's syntax, linear time; `(?i)` for
    /// case-insensitive, `\b` for word boundaries), matched against each string of the
    /// prompt.
    #[serde(default)]
    pub regex: Option<String>,
}

impl PromptMatch {
    /// Matches a prompt containing one of `keywords`.
    pub fn keywords<I: IntoIterator<Item = S>, S: Into<String>>(keywords: I) -> Self {
        PromptMatch {
            keywords: keywords.into_iter().map(Into::into).collect(),
            regex: None,
        }
    }

    /// Matches a prompt one of whose strings matches `regex`.
    pub fn regex(regex: impl Into<String>) -> Self {
        PromptMatch {
            keywords: Vec::new(),
            regex: Some(regex.into()),
        }
    }

    /// Checks it alone (no keywords and no regex, an empty keyword, a bad regex).
    fn check(&self, id: &str) -> Result<(), ConfigError> {
        PromptWatch::builder()
            .matcher(id, self.keywords.iter().cloned(), self.regex.as_deref())
            .build()
            .map(drop)
            .map_err(|e| ConfigError::new(e.to_string()))
    }
}

/// An attribute that must be present, with a value matching a pattern when one is given.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// The attribute key, e.g. `gen_ai.response.finish_reasons`.
    pub key: String,
    /// `"x"` exactly, `"x*"` a prefix, `"*"` or absent: any value. String arrays match when one
    /// element does.
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRepr {
    name: Option<String>,
    error: Option<bool>,
    duration_ms: Option<u64>,
    ttft_ms: Option<u64>,
    gap_p99_ms: Option<u64>,
    stalls: Option<u64>,
    attribute: Option<AttributeMatch>,
    model: Option<String>,
    aborted: Option<bool>,
    ratio: Option<f64>,
    prompt: Option<PromptMatch>,
    any: Option<Vec<Policy>>,
    all: Option<Vec<Policy>>,
}

impl TryFrom<PolicyRepr> for Policy {
    type Error = ConfigError;

    fn try_from(r: PolicyRepr) -> Result<Self, ConfigError> {
        let flag = |name: &str, value: bool, policy: Policy| {
            if value {
                Ok(policy)
            } else {
                Err(ConfigError::new(format!(
                    "`{name} = false` is not a policy: leave it out"
                )))
            }
        };
        let mut found = Vec::new();
        if let Some(v) = r.error {
            found.push(flag("error", v, Policy::Error));
        }
        if let Some(ms) = r.duration_ms {
            found.push(Ok(Policy::Duration(Duration::from_millis(ms))));
        }
        if let Some(ms) = r.ttft_ms {
            found.push(Ok(Policy::TimeToFirstChunk(Duration::from_millis(ms))));
        }
        if let Some(ms) = r.gap_p99_ms {
            found.push(Ok(Policy::GapP99(Duration::from_millis(ms))));
        }
        if let Some(n) = r.stalls {
            found.push(Ok(Policy::Stalls(n)));
        }
        if let Some(m) = r.attribute {
            found.push(Ok(Policy::Attribute(m)));
        }
        if let Some(model) = r.model {
            found.push(Ok(Policy::attribute(semconv::gen_ai::REQUEST_MODEL, model)));
        }
        if let Some(v) = r.aborted {
            found.push(flag("aborted", v, Policy::Aborted));
        }
        if let Some(ratio) = r.ratio {
            found.push(check_ratio("ratio", ratio).map(Policy::Ratio));
        }
        if let Some(m) = r.prompt {
            let id = r.name.as_deref().unwrap_or(names::REASON_PROMPT);
            found.push(m.check(id).map(|()| Policy::Prompt(m)));
        }
        if let Some(policies) = r.any {
            found.push(Ok(Policy::Any(policies)));
        }
        if let Some(policies) = r.all {
            found.push(Ok(Policy::All(policies)));
        }
        if found.len() != 1 {
            return Err(ConfigError::new(
                "a policy has exactly one of error, duration_ms, ttft_ms, gap_p99_ms, stalls, \
                 attribute, model, aborted, ratio, prompt, any, all (and optionally name)",
            ));
        }
        let policy = found.pop().expect("one policy")?;
        Ok(match r.name {
            Some(name) => policy.named(name),
            None => policy,
        })
    }
}

// === impl CompiledPolicy ===

/// A policy ready to evaluate: reasons built once, thresholds in the attributes' units.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    test: Test,
    /// `None` only for an unnamed `Any`, whose reason is its matching member's.
    reason: Option<StringValue>,
}

#[derive(Debug)]
enum Test {
    Error,
    Duration(Duration),
    Ttft(f64),
    GapP99(f64),
    Stalls(i64),
    Attribute(Key, Pattern),
    Aborted,
    Ratio(f64),
    /// The matcher's id, looked for in `llmtrace.prompt.matched`.
    Prompt(StringValue),
    Any(Vec<CompiledPolicy>),
    All(Vec<CompiledPolicy>),
}

fn reason(text: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(text))
}

impl CompiledPolicy {
    pub(crate) fn new(policy: &Policy) -> Result<Self, ConfigError> {
        let leaf = |test: Test, text: &'static str| {
            Ok(CompiledPolicy {
                test,
                reason: Some(StringValue::from(text)),
            })
        };
        match policy {
            Policy::Error => leaf(Test::Error, names::REASON_ERROR),
            Policy::Duration(d) => leaf(Test::Duration(*d), names::REASON_SLOW),
            Policy::TimeToFirstChunk(d) => leaf(Test::Ttft(d.as_secs_f64()), names::REASON_TTFT),
            Policy::GapP99(d) => leaf(Test::GapP99(d.as_secs_f64()), names::REASON_STALL),
            Policy::Stalls(n) => leaf(
                Test::Stalls(i64::try_from(*n).unwrap_or(i64::MAX)),
                names::REASON_STALL,
            ),
            Policy::Aborted => leaf(Test::Aborted, names::REASON_ABORTED),
            Policy::Ratio(r) => leaf(Test::Ratio(check_ratio("ratio", *r)?), names::REASON_RATIO),
            Policy::Prompt(m) => {
                m.check(names::REASON_PROMPT)?;
                let id = StringValue::from(names::REASON_PROMPT);
                leaf(Test::Prompt(id), names::REASON_PROMPT)
            }
            Policy::Attribute(m) => Ok(CompiledPolicy {
                test: Test::Attribute(
                    Key::from(m.key.clone()),
                    Pattern::new(m.value.as_deref().unwrap_or("*")),
                ),
                reason: Some(reason(&format!("attribute:{}", m.key))),
            }),
            Policy::Any(members) | Policy::All(members) => {
                if members.is_empty() {
                    return Err(ConfigError::new("`any` and `all` need at least one policy"));
                }
                let members = members
                    .iter()
                    .map(CompiledPolicy::new)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if matches!(policy, Policy::Any(_)) {
                    CompiledPolicy {
                        test: Test::Any(members),
                        reason: None,
                    }
                } else {
                    let joined = members
                        .iter()
                        .map(|m| m.reason.as_ref().map_or("any", |r| r.as_str()))
                        .collect::<Vec<_>>()
                        .join("+");
                    CompiledPolicy {
                        test: Test::All(members),
                        reason: Some(reason(&joined)),
                    }
                })
            }
            Policy::Named(name, inner) => {
                let mut compiled = CompiledPolicy::new(inner)?;
                compiled.reason = Some(reason(name));
                // A named prompt policy's matcher is known by the name (see `prompt_matchers`).
                if let (Test::Prompt(id), Policy::Prompt(_)) = (&mut compiled.test, &**inner) {
                    *id = reason(name);
                }
                Ok(compiled)
            }
        }
    }

    /// The reason to keep the trace made of `spans`, when this policy matches it.
    pub(crate) fn evaluate(&self, trace_id: TraceId, spans: &[SpanData]) -> Option<StringValue> {
        let matched = match &self.test {
            Test::Any(members) => {
                let inner = members.iter().find_map(|m| m.evaluate(trace_id, spans))?;
                return Some(self.reason.clone().unwrap_or(inner));
            }
            Test::All(members) => members
                .iter()
                .all(|m| m.evaluate(trace_id, spans).is_some()),
            Test::Ratio(ratio) => sampled_by_ratio(trace_id, *ratio),
            // The request's duration is its root's: a background child that outlives the
            // request does not make it slow. Without an ended root (decided early), the
            // longest span stands in.
            test @ Test::Duration(_) => {
                let mut roots = spans.iter().filter(|s| is_local_root(s)).peekable();
                if roots.peek().is_some() {
                    roots.any(|span| test.matches_span(span))
                } else {
                    spans.iter().any(|span| test.matches_span(span))
                }
            }
            test => spans.iter().any(|span| test.matches_span(span)),
        };
        matched.then(|| self.reason.clone().expect("named or a leaf"))
    }
}

impl Test {
    fn matches_span(&self, span: &SpanData) -> bool {
        match self {
            Test::Error => is_error(span),
            Test::Duration(threshold) => {
                span.end_time
                    .duration_since(span.start_time)
                    .unwrap_or_default()
                    >= *threshold
            }
            Test::Ttft(threshold) => number(span, semconv::gen_ai::RESPONSE_TIME_TO_FIRST_CHUNK)
                .is_some_and(|v| v >= *threshold),
            Test::GapP99(threshold) => {
                number(span, semconv::llmtrace::GAP_P99).is_some_and(|v| v >= *threshold)
            }
            Test::Stalls(threshold) => {
                number(span, semconv::llmtrace::STALLS).is_some_and(|v| v >= *threshold as f64)
            }
            Test::Attribute(key, pattern) => span
                .attributes
                .iter()
                .any(|kv| kv.key == *key && pattern.matches_value(&kv.value)),
            Test::Aborted => is_aborted(span),
            Test::Prompt(id) => matches!(
                attribute(span, semconv::llmtrace::PROMPT_MATCHED),
                Some(Value::Array(Array::String(ids))) if ids.contains(id)
            ),
            Test::Ratio(_) | Test::Any(_) | Test::All(_) => false,
        }
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn number(span: &SpanData, key: &str) -> Option<f64> {
    match attribute(span, key)? {
        Value::F64(v) => Some(*v),
        Value::I64(v) => Some(*v as f64),
        _ => None,
    }
}

fn is_aborted(span: &SpanData) -> bool {
    matches!(
        attribute(span, semconv::llmtrace::ABORTED),
        Some(Value::Bool(true))
    )
}

fn is_error(span: &SpanData) -> bool {
    let failed = matches!(span.status, Status::Error { .. })
        || attribute(span, semconv::http::ERROR_TYPE).is_some();
    failed && !is_aborted(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::time::SystemTime;

    pub(crate) fn span(duration_ms: u64, attributes: Vec<KeyValue>, status: Status) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1u128),
                SpanId::from(1u64),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "x".into(),
            start_time: start,
            end_time: start + Duration::from_millis(duration_ms),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: Default::default(),
        }
    }

    fn eval(policy: Policy, spans: &[SpanData]) -> Option<String> {
        CompiledPolicy::new(&policy)
            .unwrap()
            .evaluate(TraceId::from(1u128), spans)
            .map(|r| r.as_str().to_owned())
    }

    #[test]
    fn leaves() {
        let ok = span(10, vec![], Status::Unset);
        let failed = span(10, vec![], Status::error("boom"));
        let typed = span(10, vec![KeyValue::new("error.type", "500")], Status::Unset);
        let aborted = span(
            10,
            vec![
                KeyValue::new("llmtrace.aborted", true),
                KeyValue::new("error.type", "aborted"),
            ],
            Status::error("gone"),
        );
        assert_eq!(eval(Policy::Error, std::slice::from_ref(&ok)), None);
        assert_eq!(
            eval(Policy::Error, &[ok.clone(), failed]).as_deref(),
            Some("error")
        );
        assert_eq!(eval(Policy::Error, &[typed]).as_deref(), Some("error"));
        assert_eq!(eval(Policy::Error, std::slice::from_ref(&aborted)), None);
        assert_eq!(
            eval(Policy::Aborted, &[aborted]).as_deref(),
            Some("aborted")
        );

        let slow = span(6000, vec![], Status::Unset);
        let five = Policy::Duration(Duration::from_secs(5));
        assert_eq!(eval(five.clone(), std::slice::from_ref(&ok)), None);
        assert_eq!(
            eval(five.clone(), &[ok.clone(), slow.clone()]).as_deref(),
            Some("slow")
        );
        // A child that outlives a quick root does not make the request slow...
        let mut late_child = slow.clone();
        late_child.parent_span_id = opentelemetry::trace::SpanId::from(7u64);
        assert_eq!(eval(five.clone(), &[ok.clone(), late_child.clone()]), None);
        // ...but without a root (decided early) the longest span stands in.
        assert_eq!(eval(five, &[late_child]).as_deref(), Some("slow"));

        let stream = span(
            10,
            vec![
                KeyValue::new("gen_ai.response.time_to_first_chunk", 2.5),
                KeyValue::new("llmtrace.stream.gap.p99", 0.2),
                KeyValue::new("llmtrace.stream.stalls", 2i64),
                KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    Value::Array(vec![StringValue::from("content_filter")].into()),
                ),
            ],
            Status::Unset,
        );
        let s = std::slice::from_ref(&stream);
        let ms = Duration::from_millis;
        assert_eq!(
            eval(Policy::TimeToFirstChunk(ms(2000)), s).as_deref(),
            Some("ttft")
        );
        assert_eq!(eval(Policy::TimeToFirstChunk(ms(3000)), s), None);
        assert_eq!(eval(Policy::GapP99(ms(100)), s).as_deref(), Some("stall"));
        assert_eq!(eval(Policy::GapP99(ms(300)), s), None);
        assert_eq!(eval(Policy::Stalls(2), s).as_deref(), Some("stall"));
        assert_eq!(eval(Policy::Stalls(3), s), None);
        let filter = Policy::attribute("gen_ai.response.finish_reasons", "content_filter");
        assert_eq!(
            eval(filter.clone(), s).as_deref(),
            Some("attribute:gen_ai.response.finish_reasons")
        );
        assert_eq!(
            eval(filter.named("filtered"), s).as_deref(),
            Some("filtered")
        );
        assert_eq!(
            eval(
                Policy::attribute("gen_ai.response.finish_reasons", "length"),
                s
            ),
            None
        );
        assert_eq!(eval(Policy::Ratio(1.0), &[]).as_deref(), Some("ratio"));
        assert_eq!(eval(Policy::Ratio(0.0), &[]), None);
    }

    #[test]
    fn combinators() {
        let spans = [
            span(
                6000,
                vec![KeyValue::new("gen_ai.request.model", "gpt-4o")],
                Status::Unset,
            ),
            span(10, vec![], Status::Unset),
        ];
        let slow = Policy::Duration(Duration::from_secs(5));
        let model = Policy::attribute("gen_ai.request.model", "gpt-4o*");
        let mini = Policy::attribute("gen_ai.request.model", "gpt-4o-mini");
        assert_eq!(
            eval(Policy::All(vec![slow.clone(), model.clone()]), &spans).as_deref(),
            Some("slow+attribute:gen_ai.request.model")
        );
        assert_eq!(
            eval(Policy::All(vec![slow.clone(), mini.clone()]), &spans),
            None
        );
        assert_eq!(
            eval(Policy::Any(vec![mini.clone(), slow.clone()]), &spans).as_deref(),
            Some("slow")
        );
        assert_eq!(
            eval(Policy::Any(vec![mini, slow]).named("x"), &spans).as_deref(),
            Some("x")
        );
        assert!(CompiledPolicy::new(&Policy::Any(vec![])).is_err());
    }

    #[test]
    fn deserializes() {
        #[derive(Deserialize)]
        struct P {
            policies: Vec<Policy>,
        }
        let p: P = toml::from_str(
            r#"policies = [
                { error = true }, { duration_ms = 5000 }, { ttft_ms = 2000 },
                { gap_p99_ms = 800 }, { stalls = 2 }, { aborted = true }, { ratio = 0.5 },
                { attribute = { key = "gen_ai.response.finish_reasons", value = "length" } },
                { attribute = { key = "x" }, name = "has-x" },
                { model = "gpt-4o*" },
                { all = [ { error = true }, { duration_ms = 1 } ] },
                { any = [ { stalls = 1 } ], name = "choppy" },
            ]"#,
        )
        .unwrap();
        assert_eq!(p.policies[0], Policy::Error);
        assert_eq!(p.policies[1], Policy::Duration(Duration::from_secs(5)));
        assert_eq!(p.policies[4], Policy::Stalls(2));
        assert_eq!(p.policies[6], Policy::Ratio(0.5));
        assert_eq!(
            p.policies[8],
            Policy::Attribute(AttributeMatch {
                key: "x".into(),
                value: None
            })
            .named("has-x")
        );
        assert_eq!(
            p.policies[9],
            Policy::attribute("gen_ai.request.model", "gpt-4o*")
        );
        assert!(matches!(&p.policies[10], Policy::All(v) if v.len() == 2));
        assert!(matches!(&p.policies[11], Policy::Named(n, _) if n == "choppy"));
        for bad in [
            "policies = [ { error = false } ]",
            "policies = [ { error = true, aborted = true } ]",
            "policies = [ { } ]",
            "policies = [ { ratio = 2.0 } ]",
            "policies = [ { slow = true } ]",
        ] {
            assert!(toml::from_str::<P>(bad).is_err(), "{bad}");
        }
    }

    #[derive(Debug)]
    struct NoOp;

    impl opentelemetry_sdk::trace::SpanProcessor for NoOp {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
        fn on_end(&self, _: SpanData) {}
        fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn prompt_policies() {
        let matched = |ids: &[&'static str]| {
            span(
                10,
                vec![KeyValue::new(
                    "llmtrace.prompt.matched",
                    Value::Array(
                        ids.iter()
                            .map(|id| StringValue::from(*id))
                            .collect::<Vec<_>>()
                            .into(),
                    ),
                )],
                Status::Unset,
            )
        };
        let legal = Policy::Prompt(PromptMatch::keywords(["refund"])).named("legal");
        let unnamed = Policy::Prompt(PromptMatch::regex("(?i)lawsuit"));
        let s = [matched(&["legal"])];
        assert_eq!(eval(legal.clone(), &s).as_deref(), Some("legal"));
        assert_eq!(eval(unnamed.clone(), &s), None);
        assert_eq!(
            eval(unnamed.clone(), &[matched(&["x", "prompt"])]).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            eval(legal.clone(), &[span(10, vec![], Status::Unset)]),
            None
        );
        // Named around something else: the name is the reason, not the matcher's id.
        let wrapped = Policy::Any(vec![unnamed.clone()]).named("w");
        assert_eq!(
            eval(wrapped.clone(), &[matched(&["prompt"])]).as_deref(),
            Some("w")
        );
        assert_eq!(eval(wrapped.clone(), &[matched(&["w"])]), None);

        // The ids the watch records are the ones the policies look for.
        let tail = super::super::TailConfig {
            policies: vec![legal.clone(), Policy::All(vec![wrapped, Policy::Error])],
            ..Default::default()
        };
        let watch = tail.prompt_watch().unwrap().unwrap();
        assert_eq!(watch.ids().collect::<Vec<_>>(), ["legal", "prompt"]);
        assert_eq!(watch.max_scan_bytes(), 1024 * 1024);
        assert!(
            super::super::TailConfig::default()
                .prompt_watch()
                .unwrap()
                .is_none()
        );
        // Two prompt policies with one id cannot be told apart.
        let twice = super::super::TailConfig {
            policies: vec![
                unnamed.clone(),
                Policy::Prompt(PromptMatch::keywords(["x"])),
            ],
            ..Default::default()
        };
        let error = twice.prompt_watch().unwrap_err().to_string();
        assert!(
            error.contains("two prompt matchers are named `prompt`"),
            "{error}"
        );
        assert!(twice.build(NoOp).is_err());
    }

    #[test]
    fn prompt_policies_deserialize_and_bad_ones_say_why() {
        #[derive(Debug, Deserialize)]
        struct P {
            #[allow(dead_code)]
            policies: Vec<Policy>,
        }
        let p: P = toml::from_str(
            r#"policies = [
                { prompt = { keywords = ["refund", "lawsuit"] }, name = "legal" },
                { prompt = { regex = '(?i)\bcancel\b', keywords = ["churn"] } },
            ]"#,
        )
        .unwrap();
        assert_eq!(
            p.policies[0],
            Policy::Prompt(PromptMatch::keywords(["refund", "lawsuit"])).named("legal")
        );
        assert_eq!(
            p.policies[1],
            Policy::Prompt(PromptMatch {
                keywords: vec!["churn".into()],
                regex: Some(r"(?i)\bcancel\b".into()),
            })
        );
        for (bad, says) in [
            (
                "policies = [ { prompt = { } } ]",
                "needs keywords or a regex",
            ),
            (
                "policies = [ { prompt = { keywords = [] } } ]",
                "needs keywords or a regex",
            ),
            (
                "policies = [ { prompt = { keywords = [\"a\", \"\"] }, name = \"n\" } ]",
                "prompt matcher `n` has an empty keyword",
            ),
            (
                "policies = [ { prompt = { regex = \"(\" } } ]",
                "invalid regex",
            ),
            (
                "policies = [ { prompt = { keyword = [\"a\"] } } ]",
                "unknown field `keyword`",
            ),
            (
                "policies = [ { prompt = { keywords = [\"a\"] }, error = true } ]",
                "exactly one of",
            ),
        ] {
            let error = toml::from_str::<P>(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
