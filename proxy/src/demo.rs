//! `llmtrace-proxy demo` (feature `demo`): the mock provider, the proxy in front of it, a
//! little traffic, and the trace waterfall; then the trace viewer on the admin listener until
//! Ctrl-C (`--exit`: stop after the waterfall, for scripts and CI).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use llmtrace::store::{StoreConfig, TraceStore};
use llmtrace_proxy::Telemetry;
use opentelemetry_sdk::trace::SdkTracerProvider;

fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The admin listener: `--admin` when given, else the usual address when it is free, else
/// any free port.
fn admin_address(asked: Option<&str>) -> Result<String, Box<dyn std::error::Error>> {
    if let Some(addr) = asked.filter(|a| *a != "off") {
        return Ok(addr.to_owned());
    }
    Ok(match std::net::TcpListener::bind("127.0.0.1:9464") {
        Ok(listener) => listener.local_addr()?,
        Err(_) => free_port()?,
    }
    .to_string())
}

/// The mock provider, the proxy in front of it, a little traffic, and the waterfall; then,
/// unless `exit`, the viewer (on `admin`, else 127.0.0.1:9464 or a free port) until Ctrl-C.
pub fn demo(exit: bool, admin: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mock = runtime.block_on(llmtrace_mock::MockServer::start(
        llmtrace_mock::MockConfig {
            ttft: Duration::from_millis(120),
            gap: Duration::from_millis(25),
            tokens: 12,
            ..Default::default()
        },
    ))?;
    let spans = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let store = TraceStore::new(StoreConfig::default());
    let provider = SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("llmtrace-proxy")
                .build(),
        )
        .with_simple_exporter(spans.clone())
        .with_span_processor(store.processor())
        .build();
    let listen = free_port()?;
    let admin = admin_address(admin)?;
    let mut config = llmtrace_proxy::Config::single(&listen.to_string(), &mock.url(), None)?;
    // The demo prints its own summary; the access log would interleave with it.
    config.telemetry.access_log = false;
    config.server.admin = Some(admin.clone());
    let telemetry = Telemetry::with_tracer_provider(provider.clone()).with_store(store);
    let server = llmtrace_proxy::build_server(Arc::new(config), &telemetry)?;
    std::thread::spawn(move || server.server.run_forever());

    println!(
        "mock provider on {}, llmtrace-proxy on http://{listen}\n",
        mock.url()
    );
    runtime.block_on(async {
        wait_for(listen).await;
        send_requests(listen).await?;
        // Each request ends a SERVER and a GenAI span once its body is done.
        wait_for_spans(&spans, 2 * DEMO_REQUESTS.len()).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let finished = spans.get_finished_spans()?;
    println!("\n{}", llmtrace_proxy::waterfall::render(&finished));
    for span in finished
        .iter()
        .filter(|s| s.span_kind == opentelemetry::trace::SpanKind::Client)
    {
        println!("{}", exchange_line(span));
    }
    println!(
        "\nNext: run the proxy in front of a real provider and point your client at it:\n  \
         llmtrace-proxy --listen 127.0.0.1:8080 --upstream https://api.openai.com\n  \
         OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python your_app.py\n\
         Spans go to stdout as JSON lines; set OTEL_EXPORTER_OTLP_ENDPOINT to send them to a collector."
    );
    if !exit {
        // Every span is in the store before its address is printed.
        let _ = provider.force_flush();
        println!(
            "\nTrace viewer: http://{admin}/ui  (the proxy keeps serving on http://{listen}; \
             Ctrl-C to stop, `demo --exit` to stop here)"
        );
        runtime.block_on(serve_until_ctrl_c(&spans))?;
    }
    let _ = provider.shutdown();
    std::process::exit(0);
}

/// Waits for Ctrl-C. The waterfall is printed: the in-memory exporter is emptied now and then,
/// so traffic sent to the demo meanwhile only fills the (bounded) trace store.
async fn serve_until_ctrl_c(
    spans: &opentelemetry_sdk::trace::InMemorySpanExporter,
) -> std::io::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            stopped = tokio::signal::ctrl_c() => return stopped,
            _ = tick.tick() => spans.reset(),
        }
    }
}

/// What the demo sends: a streamed chat, a plain chat, a streamed Anthropic message, a 429.
const DEMO_REQUESTS: [DemoRequest; 4] = [
    (
        "stream chat",
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello"}]}"#,
    ),
    (
        "chat",
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#,
    ),
    (
        "stream messages",
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        r#"{"model":"claude-sonnet-4-6","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}"#,
    ),
    (
        "rate limited",
        "/v1/chat/completions",
        &[("x-mock-fault", "429")],
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"again"}]}"#,
    ),
];

/// Sends [`DEMO_REQUESTS`] through the proxy and prints a line for each answer.
async fn send_requests(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for (label, path, headers, body) in DEMO_REQUESTS {
        let mut request = http::Request::post(format!("http://{listen}{path}"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-demo");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        let started = std::time::Instant::now();
        let response = client.request(request).await?;
        let status = response.status();
        let trace = response
            .headers()
            .get("x-llmtrace-trace-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await?
            .to_bytes();
        println!(
            "{label:<16} {path:<22} → {status} in {:>7.1} ms, {:>5} bytes, trace {trace}",
            started.elapsed().as_secs_f64() * 1000.0,
            body.len()
        );
    }
    Ok(())
}

/// One line per GenAI exchange: TTFT, tokens, finish reason, usage source, gateway latency.
fn exchange_line(span: &opentelemetry_sdk::trace::SpanData) -> String {
    let get = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let ms = |key: &str| {
        get(key)
            .parse::<f64>()
            .map_or_else(|_| "-".to_owned(), |s| format!("{:.1} ms", s * 1000.0))
    };
    let us = |key: &str| {
        get(key)
            .parse::<i64>()
            .map_or_else(|_| "-".to_owned(), |us| format!("{us} µs"))
    };
    format!(
        "{:<24} ttft {:>9}  tokens in/out {}/{}  finish {:<12} usage {:<8} gateway: request {}, per chunk max {}",
        span.name,
        ms("gen_ai.response.time_to_first_chunk"),
        get("gen_ai.usage.input_tokens"),
        get("gen_ai.usage.output_tokens"),
        get("gen_ai.response.finish_reasons"),
        get("llmtrace.usage.source"),
        us("llmtrace.gateway.request_us"),
        us("llmtrace.gateway.chunk_latency.max_us"),
    )
}

/// Waits (2 s at most) until `count` spans have ended.
async fn wait_for_spans(spans: &opentelemetry_sdk::trace::InMemorySpanExporter, count: usize) {
    for _ in 0..200 {
        if spans.get_finished_spans().map_or(0, |s| s.len()) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `(label, path, extra headers, body)` of one demo request.
type DemoRequest = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

async fn wait_for(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
