//! `GenAiLayer` end to end over tower services that stream like providers do: timing,
//! untouched bytes, aborts, errors, metrics for every request sampled or not.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use llmtrace::layer::GenAiLayer;
use llmtrace_test_support::*;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::Sampler;
use tower::{ServiceBuilder, ServiceExt};

/// One OpenAI chat stream: `tokens` content chunks, the first after `ttft`, then `gap` apart,
/// a finish chunk, a usage chunk and `[DONE]`.
fn openai_events(tokens: usize) -> Vec<Bytes> {
    let chunk = |delta: &str, finish: &str| {
        Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
        ))
    };
    let mut events = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
    for i in 0..tokens {
        events.push(chunk(&format!(r#"{{"content":" tok{i}"}}"#), "null"));
    }
    events.push(chunk("{}", r#""stop""#));
    events.push(Bytes::from_static(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":10,\"total_tokens\":19}}\n\n"));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// A provider stand-in: streams `events`, the second one (first content) after `ttft` and
/// the rest `gap` apart; records the request it got.
fn provider(
    events: Vec<Bytes>,
    ttft: Duration,
    gap: Duration,
    seen: Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>,
) -> impl tower::Service<
    Request<llmtrace::layer::RequestBody<Body>>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send {
    tower::service_fn(move |req: Request<llmtrace::layer::RequestBody<Body>>| {
        let events = events.clone();
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push((parts.headers, body));
            let stream = futures::stream::unfold((0usize, events), move |(i, events)| async move {
                if i >= events.len() {
                    return None;
                }
                let wait = match i {
                    0 => Duration::ZERO,
                    1 => ttft,
                    _ => gap,
                };
                tokio::time::sleep(wait).await;
                Some((Ok::<_, Infallible>(events[i].clone()), (i + 1, events)))
            });
            Ok(Response::builder()
                .header("content-type", "text/event-stream; charset=utf-8")
                .body(Body::from_stream(stream))
                .unwrap())
        }
    })
}

fn chat_request(stream: bool) -> Request<Body> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-secret")
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"model":"gpt-4o","stream":{stream},"stream_options":{{"include_usage":true}},"max_tokens":100,"messages":[{{"role":"user","content":"hi"}}]}}"#
        )))
        .unwrap()
}

fn f64_attr(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> f64 {
    match attr(span, key) {
        Some(opentelemetry::Value::F64(v)) => *v,
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test]
async fn streamed_chat_is_measured_whole_and_passes_through_unchanged() {
    let rec = Recorder::new();
    let seen = Arc::default();
    let events = openai_events(10);
    let expected: Vec<u8> = events.iter().flat_map(|b| b.to_vec()).collect();
    let ttft = Duration::from_millis(120);
    let gap = Duration::from_millis(25);
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(provider(events, ttft, gap, Arc::clone(&seen)));

    let started = std::time::Instant::now();
    let response = client.oneshot(chat_request(true)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let elapsed = started.elapsed();
    assert_eq!(
        body.as_ref(),
        expected.as_slice(),
        "bytes must pass through unchanged"
    );

    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.name, "chat gpt-4o");
    assert_eq!(s.span_kind, SpanKind::Client);
    assert_eq!(s.status, Status::Unset);
    assert_eq!(
        attr_str(s, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        attr_str(s, "gen_ai.response.model").as_deref(),
        Some("gpt-4o-2024-08-06")
    );
    assert_eq!(attr_i64(s, "gen_ai.usage.output_tokens"), Some(10));
    assert_eq!(attr_i64(s, "llmtrace.stream.chunks"), Some(10));
    assert_eq!(
        attr_str(s, "server.address").as_deref(),
        Some("api.openai.com")
    );
    // Timing within a few ms of the provider's real delays.
    let measured_ttft = f64_attr(s, "gen_ai.response.time_to_first_chunk");
    assert!(
        (measured_ttft - ttft.as_secs_f64()).abs() < 0.015,
        "ttft {measured_ttft} vs {ttft:?}"
    );
    let p50 = f64_attr(s, "llmtrace.stream.gap.p50");
    assert!(
        (p50 - gap.as_secs_f64()).abs() < 0.010,
        "gap p50 {p50} vs {gap:?}"
    );
    let max = f64_attr(s, "llmtrace.stream.gap.max");
    assert!(
        max >= gap.as_secs_f64() - 0.001 && max < gap.as_secs_f64() + 0.030,
        "gap max {max}"
    );
    let d = duration(s);
    assert!(d >= ttft + gap * 9, "span {d:?} shorter than the stream");
    assert!(d <= elapsed, "span {d:?} outlived the client's {elapsed:?}");
    // The first-token event sits at TTFT.
    let first = s
        .events
        .iter()
        .find(|e| e.name == "llmtrace.first_token")
        .expect("first token event");
    let offset = first.timestamp.duration_since(s.start_time).unwrap();
    assert!(
        (offset.as_secs_f64() - measured_ttft).abs() < 0.005,
        "{offset:?}"
    );

    // The upstream got the request body unchanged and our span as its parent, never a leak.
    let seen = seen.lock().unwrap();
    let (headers, body) = &seen[0];
    assert!(body.starts_with(br#"{"model":"gpt-4o""#));
    let tp = headers["traceparent"].to_str().unwrap();
    assert!(tp.contains(&s.span_context.span_id().to_string()));
    assert!(!format!("{:?}", s.attributes).contains("sk-secret"));
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_closes_the_span_as_aborted() {
    let rec = Recorder::new();
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(provider(
            openai_events(50),
            Duration::from_millis(5),
            Duration::from_millis(5),
            Arc::default(),
        ));
    let response = client.oneshot(chat_request(true)).await.unwrap();
    let mut body = response.into_body();
    for _ in 0..4 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert!(is_error(s));
    assert_eq!(
        attr(s, "llmtrace.aborted"),
        Some(&opentelemetry::Value::Bool(true))
    );
    assert_eq!(
        attr(s, "llmtrace.stream.complete"),
        Some(&opentelemetry::Value::Bool(false))
    );
    assert_eq!(attr_i64(s, "llmtrace.stream.chunks"), Some(3));
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn a_stream_cut_before_its_final_event_is_an_error_with_finish_reason_error() {
    let rec = Recorder::new();
    let mut events = openai_events(5);
    events.truncate(4); // role + 3 tokens, then the connection "closes" cleanly
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(provider(
            events,
            Duration::ZERO,
            Duration::ZERO,
            Arc::default(),
        ));
    let response = client.oneshot(chat_request(true)).await.unwrap();
    response.into_body().collect().await.unwrap();
    let spans = rec.spans();
    let s = &spans[0];
    assert!(is_error(s));
    assert_eq!(
        attr_str(s, "error.type").as_deref(),
        Some("stream_truncated")
    );
    assert!(format!("{:?}", attr(s, "gen_ai.response.finish_reasons")).contains("error"));
    assert!(s.events.iter().any(|e| e.name == "exception"));
}

#[tokio::test]
async fn provider_error_bodies_become_error_type() {
    let rec = Recorder::new();
    let upstream = tower::service_fn(|_req: Request<llmtrace::layer::RequestBody<Body>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(429)
                .header("content-type", "application/json")
                .body(Body::from(r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#))
                .unwrap(),
        )
    });
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(upstream);
    let response = client.oneshot(chat_request(false)).await.unwrap();
    assert_eq!(response.status(), 429);
    response.into_body().collect().await.unwrap();
    let s = &rec.spans()[0];
    assert!(is_error(s));
    assert_eq!(
        attr_str(s, "error.type").as_deref(),
        Some("rate_limit_exceeded")
    );
    assert_eq!(attr_i64(s, "http.response.status_code"), Some(429));
}

#[tokio::test]
async fn garbage_with_an_sse_content_type_is_forwarded_untouched() {
    let rec = Recorder::new();
    let garbage = Bytes::from_static(
        b"<html>\r\n<body>502 Bad Gateway\x00\xff\xfe</body></html>\n\n{not json",
    );
    let g = garbage.clone();
    let upstream = tower::service_fn(move |_req: Request<llmtrace::layer::RequestBody<Body>>| {
        let g = g.clone();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from(g))
                    .unwrap(),
            )
        }
    });
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(upstream);
    let response = client.oneshot(chat_request(true)).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, garbage);
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(attr_i64(&spans[0], "llmtrace.stream.chunks"), Some(0));
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn broken_request_json_is_forwarded_and_the_span_says_so() {
    let rec = Recorder::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(provider(
            openai_events(1),
            Duration::ZERO,
            Duration::ZERO,
            Arc::clone(&seen),
        ));
    let broken = r#"{"model":"gpt-4o","messages":[{"#;
    let request = Request::post("http://localhost/v1/chat/completions")
        .body(Body::from(broken))
        .unwrap();
    client
        .oneshot(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap()[0].1,
        broken.as_bytes(),
        "the upstream decides"
    );
    let s = &rec.spans()[0];
    assert_eq!(s.name, "chat");
    assert!(
        attr_str(s, "llmtrace.parse_error")
            .unwrap()
            .contains("not JSON")
    );
}

#[tokio::test]
async fn other_paths_pass_through_untraced() {
    let rec = Recorder::new();
    let upstream = tower::service_fn(|_req: Request<llmtrace::layer::RequestBody<Body>>| async {
        Ok::<_, Infallible>(Response::new(Body::from("{\"data\":[]}")))
    });
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(upstream);
    let response = client
        .oneshot(
            Request::get("http://localhost/v1/models")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "{\"data\":[]}"
    );
    assert!(rec.spans().is_empty());
}

/// A meter provider whose metrics land in the returned exporter on `force_flush`.
fn metrics_to_memory() -> (InMemoryMetricExporter, SdkMeterProvider) {
    let exporter = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    (exporter, meters)
}

fn histogram_count(exporter: &InMemoryMetricExporter, name: &str) -> u64 {
    let mut count = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for metric in sm.metrics().filter(|m| m.name() == name) {
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        count += h.data_points().map(|p| p.count()).sum::<u64>()
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        count += h.data_points().map(|p| p.count()).sum::<u64>()
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
        }
    }
    count
}

#[tokio::test]
async fn metrics_are_recorded_for_every_request_even_unsampled() {
    let rec = Recorder::with_sampler(Sampler::AlwaysOff);
    let (exporter, meters) = metrics_to_memory();
    let layer = GenAiLayer::client()
        .with_tracer(rec.tracer())
        .with_meter(&meters.meter("test"));
    let client = ServiceBuilder::new().layer(layer).service(provider(
        openai_events(4),
        Duration::ZERO,
        Duration::from_millis(1),
        Arc::default(),
    ));
    for _ in 0..7 {
        let response = client.clone().oneshot(chat_request(true)).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    meters.force_flush().unwrap();
    assert!(rec.spans().is_empty(), "nothing sampled");
    assert_eq!(
        histogram_count(&exporter, "gen_ai.client.operation.duration"),
        7
    );
    assert_eq!(
        histogram_count(&exporter, "gen_ai.client.operation.time_to_first_chunk"),
        7
    );
    // input and output per request
    assert_eq!(histogram_count(&exporter, "gen_ai.client.token.usage"), 14);
    // 3 gaps between 4 content chunks, per request
    assert_eq!(
        histogram_count(&exporter, "gen_ai.client.operation.time_per_output_chunk"),
        21
    );
}

#[tokio::test]
async fn the_server_side_continues_the_callers_trace() {
    let rec = Recorder::new();
    let service = ServiceBuilder::new()
        .layer(GenAiLayer::server().with_tracer(rec.tracer()))
        .service(provider(
            openai_events(3),
            Duration::ZERO,
            Duration::ZERO,
            Arc::default(),
        ));
    let mut request = chat_request(true);
    request.headers_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    service
        .oneshot(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let s = &rec.spans()[0];
    assert_eq!(s.span_kind, SpanKind::Server);
    assert_eq!(
        s.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        attr_str(s, "llmtrace.measured_at").as_deref(),
        Some("server")
    );
}

#[tokio::test]
async fn the_layer_bounds_model_labels() {
    let rec = Recorder::new();
    let (exporter, meters) = metrics_to_memory();
    let layer = GenAiLayer::client()
        .with_tracer(rec.tracer())
        .with_max_model_labels(2)
        .with_meter(&meters.meter("test"));
    let client = ServiceBuilder::new().layer(layer).service(provider(
        openai_events(1),
        Duration::ZERO,
        Duration::ZERO,
        Arc::default(),
    ));
    for model in ["a", "b", "c", "d", "a"] {
        let request = Request::post("https://api.openai.com/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(format!(
                r#"{{"model":"{model}","stream":true,"messages":[]}}"#
            )))
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    meters.force_flush().unwrap();
    let mut models = std::collections::BTreeSet::new();
    for resource in exporter.get_finished_metrics().unwrap() {
        for scope in resource.scope_metrics() {
            for metric in scope
                .metrics()
                .filter(|m| m.name() == "gen_ai.client.operation.duration")
            {
                let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() else {
                    panic!("not a histogram");
                };
                for point in h.data_points() {
                    for kv in point.attributes() {
                        if kv.key.as_str() == "gen_ai.request.model" {
                            models.insert(kv.value.as_str().into_owned());
                        }
                    }
                }
            }
        }
    }
    // The response model (`gpt-4o-2024-08-06`) takes one of the two places.
    assert_eq!(
        models.into_iter().collect::<Vec<_>>(),
        ["_OTHER", "a"],
        "request models"
    );
}

#[tokio::test]
async fn with_tracer_provider_keeps_the_llmtrace_scope() {
    let rec = Recorder::new();
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer_provider(&rec.provider))
        .service(provider(
            openai_events(3),
            Duration::ZERO,
            Duration::ZERO,
            Arc::default(),
        ));
    let response = client.oneshot(chat_request(true)).await.unwrap();
    response.into_body().collect().await.unwrap();
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "chat gpt-4o");
    assert_eq!(spans[0].instrumentation_scope.name(), "llmtrace");
    assert_eq!(
        spans[0].instrumentation_scope.version(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn transport_errors_are_named_by_known_types_or_the_users_classifier() {
    use llmtrace::layer::ErrorRef;
    let rec = Recorder::new();
    // The first call fails before the response; the second fails mid-body.
    let upstream = tower::service_fn(
        |req: Request<llmtrace::layer::RequestBody<Body>>| async move {
            if req.headers().contains_key("x-fail-call") {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
            }
            let stream = futures::stream::iter(vec![
                Ok(Bytes::from_static(b"data: {\"id\":\"x\"}\n\n")),
                Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            ]);
            Ok(Response::new(Body::from_stream(stream)))
        },
    );
    let client = ServiceBuilder::new()
        .layer(
            GenAiLayer::client()
                .with_tracer(rec.tracer())
                .with_error_classifier(|e: &ErrorRef<'_>| {
                    let io = e.downcast_ref::<std::io::Error>()?;
                    (io.kind() == std::io::ErrorKind::ConnectionRefused)
                        .then_some(std::borrow::Cow::Borrowed("refused"))
                }),
        )
        .service(upstream);
    let mut failing = chat_request(true);
    failing
        .headers_mut()
        .insert("x-fail-call", http::HeaderValue::from_static("1"));
    assert!(client.clone().oneshot(failing).await.is_err());
    let response = client.oneshot(chat_request(true)).await.unwrap();
    assert!(response.into_body().collect().await.is_err());

    let spans = rec.spans();
    let types: Vec<_> = spans.iter().map(|s| attr_str(s, "error.type")).collect();
    assert_eq!(
        types,
        [
            Some("refused".to_owned()),
            Some("connection_reset".to_owned())
        ]
    );
    assert!(spans.iter().all(is_error));
    rec.assert_each_ended_once();
}

/// Business context read by the server layer travels in the request's context to the GenAI
/// span of a provider call made while the handler runs.
#[tokio::test]
async fn the_server_layers_business_context_reaches_the_genai_span_of_a_call_inside() {
    use llmtrace::ServerLayer;
    use llmtrace::driver::BusinessContext;

    let rec = Recorder::new();
    let business = BusinessContext::builder()
        .header("x-user-id", "user.id")
        .header("x-session-id", "session.id")
        .baggage("experiment", "llmtrace.experiment")
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(provider(
            openai_events(2),
            Duration::ZERO,
            Duration::ZERO,
            Arc::default(),
        ));
    let handler = tower::service_fn(move |_req: Request<Body>| {
        let client = client.clone();
        async move {
            let answer = client.oneshot(chat_request(true)).await.unwrap();
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            Ok::<_, Infallible>(Response::new(Body::from(body)))
        }
    });
    let service = ServiceBuilder::new()
        .layer(
            ServerLayer::new()
                .with_tracer(rec.tracer())
                .business_context(business),
        )
        .service(handler);
    let request = Request::post("/ask")
        .header("x-user-id", "u-1")
        .header("x-session-id", "s-1")
        .header("baggage", "experiment=B")
        .body(Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    response.into_body().collect().await.unwrap();
    let spans = rec.wait_for(2).await;
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    let genai = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(genai.parent_span_id, server.span_context.span_id());
    for span in [server, genai] {
        assert_eq!(attr_str(span, "user.id").as_deref(), Some("u-1"));
        assert_eq!(attr_str(span, "session.id").as_deref(), Some("s-1"));
        assert_eq!(attr_str(span, "llmtrace.experiment").as_deref(), Some("B"));
    }
    assert_eq!(
        attr_str(genai, "gen_ai.conversation.id").as_deref(),
        Some("s-1")
    );
    assert_eq!(attr_str(server, "gen_ai.conversation.id"), None);
}

/// A server of an LLM API reads the business context itself; the opted-in dimension labels
/// its metrics, capped in distinct values.
#[tokio::test]
async fn the_server_side_labels_metrics_with_opted_in_dimensions_capped() {
    use llmtrace::driver::BusinessContext;

    let rec = Recorder::new();
    let (exporter, meters) = metrics_to_memory();
    let business = BusinessContext::builder()
        .header("x-tenant", "tenant.id")
        .header("x-user-id", "user.id")
        .metric_dimension("tenant.id")
        .max_dimension_values(2)
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(
            GenAiLayer::server()
                .with_tracer(rec.tracer())
                .with_meter(&meters.meter("test"))
                .business_context(business),
        )
        .service(provider(
            openai_events(2),
            Duration::ZERO,
            Duration::ZERO,
            Arc::default(),
        ));
    for tenant in ["a", "b", "c", "a"] {
        let mut request = chat_request(true);
        request
            .headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        request
            .headers_mut()
            .insert("x-user-id", "someone".parse().unwrap());
        let response = service.clone().oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    meters.force_flush().unwrap();
    let mut by_tenant = std::collections::BTreeMap::new();
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for metric in sm
                .metrics()
                .filter(|m| m.name() == "gen_ai.server.request.duration")
            {
                let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() else {
                    panic!("{metric:?}");
                };
                for point in h.data_points() {
                    let keys: Vec<&str> = point.attributes().map(|kv| kv.key.as_str()).collect();
                    assert!(!keys.contains(&"user.id"), "not a dimension: {keys:?}");
                    let tenant = point
                        .attributes()
                        .find(|kv| kv.key.as_str() == "tenant.id")
                        .map(|kv| kv.value.to_string());
                    *by_tenant.entry(tenant).or_insert(0) += point.count();
                }
            }
        }
    }
    let want: std::collections::BTreeMap<Option<String>, u64> = [
        (Some("a".to_owned()), 2),
        (Some("b".to_owned()), 1),
        (Some("_OTHER".to_owned()), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_tenant, want);
    let spans = rec.spans();
    assert_eq!(spans.len(), 4);
    assert!(
        spans
            .iter()
            .all(|s| attr_str(s, "user.id").as_deref() == Some("someone"))
    );
}

fn counter_sum(exporter: &InMemoryMetricExporter, name: &str) -> f64 {
    let mut sum = 0.0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for metric in sm.metrics().filter(|m| m.name() == name) {
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Sum(s)) => {
                        sum += s.data_points().map(|p| p.value()).sum::<f64>()
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
        }
    }
    sum
}

/// The cost of each exchange from its reported usage and the answering model's price, on the
/// span and in a counter whose total is the sum of the spans' costs; a model without a price
/// gets no cost, and its span says why.
#[tokio::test]
async fn each_exchange_costs_its_usage_at_the_models_price_and_the_counter_adds_up() {
    use llmtrace::genai::{ModelPrice, PriceTable};

    let rec = Recorder::new();
    let (exporter, meters) = metrics_to_memory();
    let client = ServiceBuilder::new()
        .layer(
            GenAiLayer::client()
                .with_tracer(rec.tracer())
                .with_meter(&meters.meter("test"))
                .with_prices(PriceTable::bundled()),
        )
        .service(provider(
            openai_events(3),
            Duration::ZERO,
            Duration::ZERO,
            Arc::default(),
        ));
    for _ in 0..5 {
        let response = client.clone().oneshot(chat_request(true)).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    // The stand-in answers as `gpt-4o-2024-08-06` with 9 prompt and 10 completion tokens:
    // gpt-4o at $2.50 and $10 per million.
    let each = (9.0 * 2.5 + 10.0 * 10.0) / 1e6;
    let spans = rec.wait_for(5).await;
    let costs: Vec<f64> = spans
        .iter()
        .map(|s| f64_attr(s, "gen_ai.usage.cost"))
        .collect();
    for cost in &costs {
        assert!((cost - each).abs() < 1e-15, "{cost} != {each}");
    }
    meters.force_flush().unwrap();
    let total = counter_sum(&exporter, "llmtrace.gen_ai.cost");
    assert!((total - costs.iter().sum::<f64>()).abs() < 1e-12, "{total}");

    // Unknown to the table: no cost, no counter, and the span says why.
    let mut table = PriceTable::empty();
    table.insert(
        "some-other-model",
        ModelPrice {
            input: 1.0,
            output: 1.0,
            cache_read: None,
            cache_write: None,
        },
    );
    let rec = Recorder::new();
    let unknown = ServiceBuilder::new()
        .layer(
            GenAiLayer::client()
                .with_tracer(rec.tracer())
                .with_prices(table),
        )
        .service(provider(
            openai_events(3),
            Duration::ZERO,
            Duration::ZERO,
            Arc::default(),
        ));
    let response = unknown.oneshot(chat_request(true)).await.unwrap();
    response.into_body().collect().await.unwrap();
    let span = &rec.wait_for(1).await[0];
    assert_eq!(attr(span, "gen_ai.usage.cost"), None);
    assert_eq!(
        attr_str(span, "llmtrace.cost.missing").as_deref(),
        Some("unknown_model")
    );
}

#[tokio::test]
async fn a_prompt_watch_records_which_matchers_matched_and_nothing_of_the_prompt() {
    use llmtrace::genai::{GenAiConfig, PromptWatch};
    let rec = Recorder::new();
    let seen: Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>> = Arc::default();
    let watch = PromptWatch::builder()
        .keywords("legal", ["lawsuit"])
        .keywords("billing", ["invoice"])
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(
            GenAiLayer::client()
                .with_tracer(rec.tracer())
                .with_config(GenAiConfig {
                    prompt_watch: Some(watch),
                    ..GenAiConfig::default()
                }),
        )
        .service(provider(
            openai_events(1),
            Duration::ZERO,
            Duration::ZERO,
            Arc::clone(&seen),
        ));
    let sent = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"about the La\u0077suit"}]}"#;
    let request = Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(sent))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].1, sent.as_bytes());
    let spans = rec.spans();
    let span = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    match attr(span, "llmtrace.prompt.matched") {
        Some(opentelemetry::Value::Array(opentelemetry::Array::String(ids))) => {
            assert_eq!(
                ids.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
                ["legal"]
            );
        }
        other => panic!("llmtrace.prompt.matched: {other:?}"),
    }
    let recorded = format!("{:?}", span.attributes);
    assert!(!recorded.contains("about the"), "{recorded}");
}

/// An adapter that starts the GenAI span before the body arrives (the gateway) and names it
/// once the body is read: every attribute is recorded once.
#[tokio::test]
async fn a_span_named_after_its_body_records_each_attribute_once() {
    use llmtrace::driver::{BusinessContext, GenAiSpan};
    use llmtrace::genai::{End, Endpoint, Exchange, RequestInfo};

    let rec = Recorder::new();
    let recorder = GenAiLayer::gateway()
        .with_tracer(rec.tracer())
        .business_context(
            BusinessContext::builder()
                .header("x-user-id", "user.id")
                .build()
                .unwrap(),
        )
        .into_recorder();
    let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
    let (parts, ()) = Request::post("/v1/chat/completions")
        .header("x-user-id", "u-1")
        .body(())
        .unwrap()
        .into_parts();
    let exchange = Exchange::new(
        recorder.config().clone(),
        endpoint.clone(),
        RequestInfo::parse(&endpoint, b"", false),
        std::time::Instant::now(),
    );
    let mut span = GenAiSpan::start(&recorder, exchange, &parts, &opentelemetry::Context::new());
    let body = br#"{"model":"gpt-4o","max_tokens":5,"messages":[]}"#;
    span.set_request(RequestInfo::parse(&endpoint, body, false));
    span.finish(End::Complete);
    let spans = rec.wait_for(1).await;
    assert_eq!(spans[0].name, "chat gpt-4o");
    let mut keys: Vec<&str> = spans[0]
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    let all = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), all, "{:?}", spans[0].attributes);
    for key in [
        "gen_ai.request.model",
        "gen_ai.request.max_tokens",
        "user.id",
        "gen_ai.operation.name",
    ] {
        assert!(keys.contains(&key), "{key}: {keys:?}");
    }
}

/// `with_spans(false)` (tracing off): no span of the layer's own, nothing recorded on or
/// renamed in the caller's span, which is not ended either; the caller's context is what
/// goes upstream, and the metrics are still recorded.
#[tokio::test]
async fn without_spans_the_callers_span_is_left_alone_and_metrics_still_land() {
    use opentelemetry::trace::{FutureExt as _, TraceContextExt as _, Tracer as _};

    let rec = Recorder::new();
    let (exporter, meters) = metrics_to_memory();
    let layer = GenAiLayer::client()
        .with_tracer(rec.tracer())
        .with_spans(false)
        .with_meter(&meters.meter("test"));
    let seen = Arc::default();
    let client = ServiceBuilder::new().layer(layer).service(provider(
        openai_events(3),
        Duration::ZERO,
        Duration::from_millis(1),
        Arc::clone(&seen),
    ));
    let caller = rec.tracer().start("caller");
    let cx = opentelemetry::Context::current_with_span(caller);
    let caller_sc = cx.span().span_context().clone();
    let response = client
        .oneshot(chat_request(true))
        .with_context(cx.clone())
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        body.ends_with(b"data: [DONE]\n\n"),
        "the stream passed whole"
    );
    assert!(
        rec.spans().is_empty(),
        "no span of the layer's, the caller's not ended"
    );
    cx.span().end();

    let spans = rec.wait_for(1).await;
    assert_eq!(spans.len(), 1, "only the caller's span");
    assert_eq!(spans[0].name, "caller");
    assert!(
        spans[0]
            .attributes
            .iter()
            .all(|kv| !kv.key.as_str().starts_with("gen_ai.")),
        "nothing recorded on the caller's span: {:?}",
        spans[0].attributes
    );
    rec.assert_each_ended_once();
    let (headers, _) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        headers.get("traceparent").unwrap().to_str().unwrap(),
        format!("00-{}-{}-01", caller_sc.trace_id(), caller_sc.span_id())
    );
    meters.force_flush().unwrap();
    assert_eq!(
        histogram_count(&exporter, "gen_ai.client.operation.duration"),
        1
    );
    assert_eq!(histogram_count(&exporter, "gen_ai.client.token.usage"), 2);
}
