//! The OTLP/HTTP exporter against a small collector on a loopback port: what it posts, how it
//! retries, and how it gives up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::SpanExporter;
use prost::Message;

use super::http::{error_message, partial_success};
use super::tests::{resource, sdk_request, span};
use super::{HttpExporter, OtlpSettings};

/// One request the collector received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, extra header lines, body.
type Answer = (u16, &'static str, Vec<u8>);

/// A collector answering its n-th request with `answers[n]` (the last one from then on).
/// Returns its `http://127.0.0.1:port` and what it received.
fn collector(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let answers = Arc::new(answers);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (log, answers) = (log.clone(), answers.clone());
            std::thread::spawn(move || serve(stream, &log, &answers));
        }
    });
    (base, received)
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, answers: &[Answer]) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let n = {
            let mut log = log.lock().unwrap();
            log.push(Received {
                path,
                headers,
                body,
            });
            log.len() - 1
        };
        let (status, extra, body) = &answers[n.min(answers.len() - 1)];
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\n{extra}content-length: {}\r\n\r\n",
            body.len()
        );
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(body).unwrap();
    }
}

fn settings(vars: &[(&str, String)]) -> OtlpSettings {
    OtlpSettings::http_from_env(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("an http:// endpoint without compression")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn batch() -> Vec<opentelemetry_sdk::trace::SpanData> {
    let scope = InstrumentationScope::builder("llmtrace")
        .with_version("0.1.0")
        .build();
    vec![
        span(
            "POST /v1/chat/completions",
            &scope,
            vec![opentelemetry::KeyValue::new(
                "gen_ai.request.model",
                "gpt-4o",
            )],
        ),
        span("chat gpt-4o", &scope, vec![]),
    ]
}

fn exporter(settings: &OtlpSettings, runtime: &tokio::runtime::Runtime) -> HttpExporter {
    with_resource(settings, runtime, &resource())
}

/// A resource's attributes come in its hash map's order: the comparison uses the same one.
fn with_resource(
    settings: &OtlpSettings,
    runtime: &tokio::runtime::Runtime,
    resource: &opentelemetry_sdk::Resource,
) -> HttpExporter {
    let mut exporter = HttpExporter::new(settings, runtime.handle().clone()).unwrap();
    exporter.set_resource(resource);
    exporter
}

/// An `ExportTraceServiceResponse` with a partial success: 1 span rejected.
fn partial_answer() -> Vec<u8> {
    let mut partial = vec![0x08, 0x01, 0x12, 0x08];
    partial.extend_from_slice(b"bad span");
    let mut body = vec![0x0a, partial.len() as u8];
    body.extend_from_slice(&partial);
    body
}

#[test]
fn a_batch_is_posted_as_protobuf_to_the_traces_path_with_the_headers() {
    let (base, received) = collector(vec![(200, "", partial_answer())]);
    let settings = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{base}/")),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20secret,x-tenant=a".to_owned(),
        ),
    ]);
    assert_eq!(settings.endpoint, format!("{base}/v1/traces"));
    let runtime = runtime();
    let resource = resource();
    let exporter = with_resource(&settings, &runtime, &resource);
    let batch = batch();
    // A partial success is logged, not a failure.
    futures::executor::block_on(exporter.export(batch.clone())).unwrap();
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/v1/traces");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(request.header("authorization"), Some("Bearer secret"));
    assert_eq!(request.header("x-tenant"), Some("a"));
    let decoded = ExportTraceServiceRequest::decode(request.body.as_slice()).unwrap();
    assert_eq!(decoded, sdk_request(&batch, &resource));
}

#[test]
fn throttling_and_unavailable_answers_are_retried_until_one_succeeds() {
    let (base, received) = collector(vec![
        (503, "retry-after: 0\r\n", Vec::new()),
        (429, "", b"slow down".to_vec()),
        (200, "", Vec::new()),
    ]);
    let settings = settings(&[(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        format!("{base}/custom"),
    )]);
    let runtime = runtime();
    let exporter = exporter(&settings, &runtime);
    futures::executor::block_on(exporter.export(batch())).unwrap();
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| r.path == "/custom"));
    assert!(received.iter().all(|r| r.body == received[0].body));
}

#[test]
fn a_client_error_is_not_retried() {
    let mut status = vec![0x08, 0x03, 0x12, 0x07];
    status.extend_from_slice(b"invalid");
    let (base, received) = collector(vec![(400, "", status), (200, "", Vec::new())]);
    let settings = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", base)]);
    let runtime = runtime();
    let exporter = exporter(&settings, &runtime);
    let error = futures::executor::block_on(exporter.export(batch())).unwrap_err();
    assert!(error.to_string().contains("400"), "{error}");
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[test]
fn a_down_collector_fails_the_export_within_its_timeout() {
    // Bound, then closed: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = settings(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "400".to_owned()),
    ]);
    let runtime = runtime();
    let exporter = exporter(&settings, &runtime);
    let started = Instant::now();
    assert!(futures::executor::block_on(exporter.export(batch())).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn http_settings_follow_the_specification_endpoints() {
    let read = |vars: &[(&str, &str)]| {
        OtlpSettings::http_from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    assert_eq!(
        read(&[]).unwrap().endpoint,
        "http://localhost:4318/v1/traces"
    );
    assert_eq!(
        read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            .unwrap()
            .endpoint,
        "http://c:4318/v1/traces"
    );
    assert_eq!(
        read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")])
            .unwrap()
            .endpoint,
        "http://c:4318/base/v1/traces"
    );
    // The traces endpoint is used as given.
    assert_eq!(
        read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/x"),
        ])
        .unwrap()
        .endpoint,
        "http://t:4318/x"
    );
    assert!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]).is_none());
    assert!(read(&[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")]).is_none());
}

#[test]
fn answers_are_read_for_their_messages() {
    assert_eq!(
        partial_success(&partial_answer()),
        Some((1, "bad span".to_owned()))
    );
    assert_eq!(partial_success(&[]), None);
    // An empty partial success: nothing to report.
    assert_eq!(partial_success(&[0x0a, 0x00]), None);
    let mut status = vec![0x08, 0x03, 0x12, 0x07];
    status.extend_from_slice(b"invalid");
    assert_eq!(error_message(&status, true), "invalid");
    assert_eq!(error_message(b"\x12\x02ok", false), "  ok");
    assert_eq!(error_message(b"plain\ntext", false), "plain text");
    assert_eq!(
        error_message("x".repeat(1000).as_bytes(), false)
            .chars()
            .count(),
        257
    );
}
