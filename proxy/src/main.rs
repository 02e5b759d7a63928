//! `llmtrace-proxy`: the LLM API gateway.
//!
//! ```text
//! llmtrace-proxy demo                                   # mock provider + proxy + traffic + waterfall
//! llmtrace-proxy --listen 127.0.0.1:8080 --upstream https://api.openai.com [--provider openai]
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use llmtrace_proxy::Telemetry;
use llmtrace_proxy::telemetry::Export;
use opentelemetry_sdk::trace::SdkTracerProvider;

#[derive(Parser, Debug)]
#[command(
    name = "llmtrace-proxy",
    version,
    about = "An LLM API gateway that traces every request"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A TOML configuration file (routes, upstreams, telemetry); see the README.
    #[arg(long, env = "LLMTRACE_CONFIG", conflicts_with = "upstream")]
    config: Option<std::path::PathBuf>,
    /// Address to listen on (overrides the file's `server.listen`).
    #[arg(long, env = "LLMTRACE_LISTEN")]
    listen: Option<String>,
    /// The upstream base URL (e.g. https://api.openai.com, http://127.0.0.1:8000 for vLLM).
    #[arg(long, env = "LLMTRACE_UPSTREAM")]
    upstream: Option<String>,
    /// gen_ai.provider.name for an OpenAI-compatible upstream (vllm, ollama, ...); by default
    /// told from the path and host.
    #[arg(long, env = "LLMTRACE_PROVIDER")]
    provider: Option<String>,
    /// With no OTLP endpoint configured, write spans as JSON lines to this file instead of
    /// stdout.
    #[arg(long)]
    spans_file: Option<std::path::PathBuf>,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`), or `off` (overrides the file's
    /// `server.admin`; default 127.0.0.1:9464).
    #[arg(long, env = "LLMTRACE_ADMIN")]
    admin: Option<String>,
    /// Worker threads (overrides the file's `server.threads`; default one per CPU).
    #[arg(long, env = "LLMTRACE_THREADS")]
    threads: Option<usize>,
}

/// The admin listener when neither the file nor `--admin` names one.
const DEFAULT_ADMIN: &str = "127.0.0.1:9464";

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the bundled mock provider and the proxy, send a little traffic, and print the
    /// trace waterfall.
    Demo,
    /// Check a configuration file and exit: 0 when valid, 2 with the field at fault.
    Check {
        /// The file.
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Demo) => demo(),
        Some(Command::Check { config }) => llmtrace_proxy::Config::load(&config)
            .map(|c| {
                println!(
                    "{}: valid ({} upstreams, {} routes)",
                    config.display(),
                    c.upstreams.len(),
                    c.routes.len()
                )
            })
            .map_err(Into::into),
        None => serve(&cli),
    };
    if let Err(error) = result {
        eprintln!("llmtrace-proxy: {error}");
        std::process::exit(2);
    }
}

fn serve(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match (&cli.config, &cli.upstream) {
        (Some(path), _) => llmtrace_proxy::Config::load(path)?,
        (None, Some(upstream)) => llmtrace_proxy::Config::single(
            cli.listen.as_deref().unwrap_or("127.0.0.1:8080"),
            upstream,
            cli.provider.as_deref(),
        )?,
        (None, None) => {
            return Err(
                "--upstream URL or --config FILE is required (or run `llmtrace-proxy demo`)".into(),
            );
        }
    };
    if let Some(listen) = &cli.listen {
        config.server.listen = listen.clone();
    }
    if cli.threads.is_some() {
        config.server.threads = cli.threads;
    }
    if let Some(admin) = &cli.admin {
        config.server.admin = Some(admin.clone());
    }
    config.validate()?;
    match config.server.admin.as_deref() {
        // Asked for: it must be available.
        Some(addr) if addr != "off" => {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                return Err(format!("admin listener {addr}: {e} (set --admin ADDR or off)").into());
            }
        }
        Some(_) => {}
        // The default: a second gateway on the machine goes on without one.
        None => match std::net::TcpListener::bind(DEFAULT_ADMIN) {
            Ok(_) => config.server.admin = Some(DEFAULT_ADMIN.to_owned()),
            Err(e) => eprintln!(
                "llmtrace-proxy: no admin listener: {DEFAULT_ADMIN}: {e} (set --admin ADDR)"
            ),
        },
    }
    if let Some(path) = &cli.spans_file {
        config.telemetry.spans_file = Some(path.display().to_string());
    }
    let export = match Export::from_env() {
        env @ (Export::Otlp { .. } | Export::Disabled) => env,
        _ => match (
            &config.telemetry.otlp_endpoint,
            &config.telemetry.spans_file,
        ) {
            (Some(endpoint), _) => {
                // The exporters read the standard variable; the file's value stands in for it.
                // SAFETY: single-threaded here, before any thread that reads the environment.
                unsafe { std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint) };
                Export::Otlp {
                    protocol: config
                        .telemetry
                        .otlp_protocol
                        .clone()
                        .unwrap_or_else(|| "http/protobuf".to_owned()),
                }
            }
            (None, Some(path)) => Export::File(path.into()),
            (None, None) => Export::Stdout,
        },
    };
    let sampling = llmtrace_proxy::telemetry::Sampling {
        head: match config.sampling.clone() {
            Some(head) => Some(head),
            None => llmtrace_proxy::config::sampler_from_env(|name| std::env::var(name).ok())?,
        },
        tail: config.tail.clone(),
    };
    let telemetry = Telemetry::new(&export, &sampling)?;
    eprintln!(
        "llmtrace-proxy: listening on http://{} ({} upstreams, {} routes), admin {}, spans → {:?}",
        config.server.listen,
        config.upstreams.len(),
        config.routes.len(),
        config.server.admin.as_deref().unwrap_or("off"),
        export
    );
    let server = llmtrace_proxy::build_server(Arc::new(config), &telemetry)?;
    // Returns after SIGTERM (in-flight streams drained, for the grace period at most) or
    // SIGINT; then the queued spans and metrics are flushed before the process exits.
    server.run();
    telemetry.shutdown();
    Ok(())
}

fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The mock provider, the proxy in front of it, a little traffic, and the waterfall.
fn demo() -> Result<(), Box<dyn std::error::Error>> {
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
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let listen = free_port()?;
    let mut config = llmtrace_proxy::Config::single(&listen.to_string(), &mock.url(), None)?;
    // The demo prints its own summary; the access log would interleave with it.
    config.telemetry.access_log = false;
    let telemetry = Telemetry::with_tracer_provider(provider.clone());
    let server = llmtrace_proxy::build_server(Arc::new(config), &telemetry)?;
    std::thread::spawn(move || server.server.run_forever());
    let provider = Arc::new(provider);

    println!(
        "mock provider on {}, llmtrace-proxy on http://{listen}\n",
        mock.url()
    );
    runtime.block_on(async {
        wait_for(listen).await;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        let requests: [DemoRequest; 4] = [
            ("stream chat", "/v1/chat/completions", &[], r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello"}]}"#),
            ("chat", "/v1/chat/completions", &[], r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#),
            ("stream messages", "/v1/messages", &[("anthropic-version", "2023-06-01")], r#"{"model":"claude-sonnet-4-6","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}"#),
            ("rate limited", "/v1/chat/completions", &[("x-mock-fault", "429")], r#"{"model":"gpt-4o","messages":[{"role":"user","content":"again"}]}"#),
        ];
        for (label, path, headers, body) in requests {
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
            let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
            println!(
                "{label:<16} {path:<22} → {status} in {:>7.1} ms, {:>5} bytes, trace {trace}",
                started.elapsed().as_secs_f64() * 1000.0,
                body.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let finished = spans.get_finished_spans()?;
    println!("\n{}", llmtrace_proxy::waterfall::render(&finished));
    for span in finished
        .iter()
        .filter(|s| s.span_kind == opentelemetry::trace::SpanKind::Client)
    {
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
        println!(
            "{:<24} ttft {:>9}  tokens in/out {}/{}  finish {:<12} usage {:<8} gateway: request {}, per chunk max {}",
            span.name,
            ms("gen_ai.response.time_to_first_chunk"),
            get("gen_ai.usage.input_tokens"),
            get("gen_ai.usage.output_tokens"),
            get("gen_ai.response.finish_reasons"),
            get("llmtrace.usage.source"),
            us("llmtrace.gateway.request_us"),
            us("llmtrace.gateway.chunk_latency.max_us"),
        );
    }
    println!(
        "\nNext: run the proxy in front of a real provider and point your client at it:\n  \
         llmtrace-proxy --listen 127.0.0.1:8080 --upstream https://api.openai.com\n  \
         OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python your_app.py\n\
         Spans go to stdout as JSON lines; set OTEL_EXPORTER_OTLP_ENDPOINT to send them to a collector."
    );
    let _ = provider.shutdown();
    std::process::exit(0);
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
