//! `llmtrace-proxy`: the LLM API gateway.
//!
//! ```text
//! llmtrace-proxy demo [--exit]                          # mock provider + proxy + traffic + waterfall + viewer
//! llmtrace-proxy --listen 127.0.0.1:8080 --upstream https://api.openai.com [--provider openai]
//! ```

use std::sync::Arc;

use clap::{Parser, Subcommand};
use llmtrace_proxy::Telemetry;
use llmtrace_proxy::telemetry::Export;

/// mimalloc instead of the system allocator: a request allocates (and frees) a few hundred
/// small objects across pingora, the OTel SDK and the core, and glibc's malloc/free were a
/// quarter of the gateway's instructions per request (docs/performance.md). Built with
/// `no_thp`: mimalloc otherwise asks for transparent huge pages on its segments, and each
/// open stream's sparsely touched 64 KiB buffers then became resident whole (RSS per open
/// stream 85 → 161 KiB in the load harness).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// The upstream's kind (openai, anthropic, azure, openai-compatible; chroma, qdrant,
    /// weaviate for a vector database), or gen_ai.provider.name for an OpenAI-compatible
    /// upstream (vllm, ollama, ...); by default told from the path and host.
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
    /// Start the bundled mock provider and the proxy, send a little traffic, print the trace
    /// waterfall, then serve the trace viewer until Ctrl-C.
    Demo {
        /// Stop after printing the waterfall instead of serving the viewer (scripts, CI).
        #[arg(long, env = "LLMTRACE_DEMO_EXIT")]
        exit: bool,
    },
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
        Some(Command::Demo { exit }) => demo::demo(exit, cli.admin.as_deref()),
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
    let mut config = config_from(cli)?;
    config.validate()?;
    choose_admin(&mut config)?;
    if let Some(path) = &cli.spans_file {
        config.telemetry.spans_file = Some(path.display().to_string());
    }
    let export = choose_export(&config);
    let sampling = llmtrace_proxy::telemetry::Sampling {
        head: match config.sampling.clone() {
            Some(head) => Some(head),
            None => llmtrace_proxy::config::sampler_from_env(|name| std::env::var(name).ok())?,
        },
        tail: config.tail.clone(),
    };
    // The viewer is served on the admin listener: without one, no store to fill.
    let admin = config.server.admin.clone().filter(|a| a != "off");
    let store = admin
        .as_ref()
        .and_then(|_| llmtrace_proxy::telemetry::trace_store(&config.telemetry));
    let telemetry = Telemetry::new_with_store(&export, &sampling, store)?;
    eprintln!(
        "llmtrace-proxy: listening on http://{} ({} upstreams, {} routes), admin {}, spans → {:?}",
        config.server.listen,
        config.upstreams.len(),
        config.routes.len(),
        config.server.admin.as_deref().unwrap_or("off"),
        export
    );
    if let (Some(admin), Some(_)) = (&admin, &telemetry.store) {
        eprintln!("llmtrace-proxy: trace viewer on http://{admin}/ui");
    }
    let server = llmtrace_proxy::build_server(Arc::new(config), &telemetry)?;
    // Returns after SIGTERM (in-flight streams drained, for the grace period at most) or
    // SIGINT; then the access log's last lines, the queued spans and metrics are flushed
    // before the process exits.
    server.run();
    llmtrace_proxy::access_log::flush();
    telemetry.shutdown();
    Ok(())
}

/// The configuration: the file, or one upstream from the flags; then the flags that override it.
fn config_from(cli: &Cli) -> Result<llmtrace_proxy::Config, Box<dyn std::error::Error>> {
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
    Ok(config)
}

/// An admin address asked for must be free; the default one is used only when it is.
fn choose_admin(config: &mut llmtrace_proxy::Config) -> Result<(), Box<dyn std::error::Error>> {
    match config.server.admin.as_deref() {
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
    Ok(())
}

/// Where spans go: the standard OTel variables first, then the file's telemetry section.
fn choose_export(config: &llmtrace_proxy::Config) -> Export {
    match Export::from_env() {
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
    }
}

#[cfg(feature = "demo")]
mod demo;

/// Without the `demo` feature: say how to get it.
#[cfg(not(feature = "demo"))]
mod demo {
    pub fn demo(_exit: bool, _admin: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
        Err(
            "this build has no demo (the `demo` feature carries the mock provider): run \
         `bash scripts/run.sh`, or `cargo run -p llmtrace-proxy --features demo -- demo`"
                .into(),
        )
    }
}
