//! Data-driven: every fixture in `tests/data/genai/` (real provider wire formats) is replayed
//! through the sans-IO observer whole, split at every byte position, and byte by byte; every
//! replay must give the same observations, and they must equal the fixture's `expect`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmtrace::genai::{End, Endpoint, Exchange, GenAiConfig, RequestInfo};
use opentelemetry::{Array, Value};
use serde_json::Value as Json;

/// The keys a fixture's `expect` speaks for: present there means "must equal", absent means
/// "must not be set".
const OBSERVED_KEYS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.request.stream",
    "gen_ai.request.max_tokens",
    "gen_ai.request.temperature",
    "gen_ai.request.top_p",
    "gen_ai.request.top_k",
    "gen_ai.request.stop_sequences",
    "gen_ai.request.seed",
    "gen_ai.request.choice.count",
    "gen_ai.request.frequency_penalty",
    "gen_ai.request.presence_penalty",
    "llmtrace.request.tool_count",
    "gen_ai.response.id",
    "gen_ai.response.model",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "llmtrace.usage.source",
    "llmtrace.stream.chunks",
    "llmtrace.stream.complete",
    "error.type",
    "llmtrace.guardrail",
];

/// Attributes that depend on the clock, left out of the split comparison.
const TIMING_KEYS: &[&str] = &[
    "llmtrace.response.time_to_first_byte",
    "gen_ai.response.time_to_first_chunk",
    "llmtrace.stream.gap.mean",
    "llmtrace.stream.gap.p50",
    "llmtrace.stream.gap.p99",
    "llmtrace.stream.gap.max",
    "llmtrace.usage.output_tokens_per_second",
    "llmtrace.stream.chunk_offsets_ms",
];

struct Fixture {
    name: String,
    case: Json,
    body: Vec<u8>,
}

fn fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/genai");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 20,
        "expected the fixture set, found {}",
        dirs.len()
    );
    dirs.into_iter()
        .map(|d| Fixture {
            name: d.file_name().unwrap().to_string_lossy().into_owned(),
            case: serde_json::from_slice(&std::fs::read(d.join("case.json")).unwrap()).unwrap(),
            body: std::fs::read(d.join("response.body")).unwrap(),
        })
        .collect()
}

/// Replays `fixture`, feeding the body in the given pieces; returns the observations.
fn replay(fixture: &Fixture, pieces: &[&[u8]]) -> BTreeMap<String, Value> {
    let case = &fixture.case;
    let mut endpoint = Endpoint::detect(case["path"].as_str().unwrap(), None).expect("endpoint");
    // OpenAI-compatible servers (vLLM, Ollama) are named by configuration, as a user would.
    if case["provider"] == "openai-compatible" {
        endpoint.provider = llmtrace::genai::Provider::Other("openai-compatible".into());
    }
    let request = serde_json::to_vec(&case["request"]).unwrap();
    let request = RequestInfo::parse(&endpoint, &request, false);
    let t0 = Instant::now();
    let mut exchange = Exchange::new(Arc::new(GenAiConfig::default()), endpoint, request, t0);
    let mut head = http::HeaderMap::new();
    head.insert(
        "content-type",
        case["content_type"].as_str().unwrap().parse().unwrap(),
    );
    let status = case["status"].as_u64().unwrap() as u16;
    exchange.on_response_head(status, &head, t0);
    for (i, piece) in pieces.iter().enumerate() {
        exchange.on_response_data(piece, t0 + Duration::from_millis(i as u64));
    }
    let start = exchange.start_attributes();
    let report = exchange.finish(End::Complete, t0 + Duration::from_secs(1));
    start
        .into_iter()
        .chain(report.attributes)
        .filter(|kv| !TIMING_KEYS.contains(&kv.key.as_str()))
        .map(|kv| (kv.key.as_str().to_owned(), kv.value))
        .collect()
}

fn matches(expected: &Json, actual: &Value) -> bool {
    match (expected, actual) {
        (Json::Bool(e), Value::Bool(a)) => e == a,
        (Json::String(e), Value::String(a)) => e == a.as_str(),
        (Json::Number(e), Value::I64(a)) => e.as_i64() == Some(*a),
        (Json::Number(e), Value::F64(a)) => e.as_f64().is_some_and(|e| (e - a).abs() < 1e-9),
        (Json::Array(e), Value::Array(Array::String(a))) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| e.as_str() == Some(a.as_str()))
        }
        _ => false,
    }
}

#[test]
fn every_fixture_gives_the_expected_observations() {
    let mut failures = Vec::new();
    for fixture in fixtures() {
        let observed = replay(&fixture, &[&fixture.body]);
        let expect = fixture.case["expect"].as_object().unwrap();
        for key in OBSERVED_KEYS {
            match (expect.get(*key), observed.get(*key)) {
                (None, None) => {}
                (Some(e), Some(a)) if matches(e, a) => {}
                (e, a) => failures.push(format!(
                    "{}: {key}: expected {e:?}, observed {a:?}",
                    fixture.name
                )),
            }
        }
        for key in expect.keys() {
            assert!(
                OBSERVED_KEYS.contains(&key.as_str()),
                "{}: unknown expect key {key}",
                fixture.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_split_position_gives_identical_observations() {
    for fixture in fixtures() {
        let whole = replay(&fixture, &[&fixture.body]);
        let body = &fixture.body;
        for at in 0..=body.len() {
            let split = replay(&fixture, &[&body[..at], &body[at..]]);
            assert_eq!(split, whole, "{} split at byte {at}", fixture.name);
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            replay(&fixture, &bytes),
            whole,
            "{} byte by byte",
            fixture.name
        );
    }
}
