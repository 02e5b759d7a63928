//! `llmtrace-load`: the load harness of issue 6. It puts `llmtrace-proxy` (tracing on and
//! off), nginx and LiteLLM in front of the same mock OpenAI upstream, one after the other on
//! loopback, drives each open-loop at fixed rates and reports what each hop adds.
//!
//! ```text
//! llmtrace-load run [--quick] --proxy target/release/llmtrace-proxy --out benches/load/results
//! llmtrace-load run --max-rate-only --nice -10 --targets pingora,proxy-tracing   # issue 12 only
//! llmtrace-load load --url http://127.0.0.1:8080 --rate 500 --duration 30   # one ad-hoc run
//! llmtrace-load mock --port 9000 --ttft-ms 20 --gap-ms 5 --tokens 32        # a mock upstream
//! llmtrace-load sink --port 4317 --counts-file counts.json                  # an OTLP sink
//! llmtrace-load bare-pingora --listen 127.0.0.1:8081 --upstream 127.0.0.1:9000  # pingora alone
//! llmtrace-load count --url http://127.0.0.1:8081 --requests 2000                # exactly N
//! ```
//!
//! `benches/load/run.sh` installs what is missing, builds, and calls `run`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

/// The allocator `llmtrace-proxy` uses: the bare-pingora target runs in this process, and
/// pingora's floor is measured on the same allocator as the gateway it is the floor of
/// (issue 12; glibc's malloc/free were a quarter of the gateway's instructions per request),
/// with the same `no_thp` build option.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod affinity;
mod bare;
mod bench;
mod client;
mod maxrate;
mod procfs;
mod report;
mod schedule;
mod sink;
mod sse;
mod stats;
mod targets;
mod wrk;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::bench::Plan;
use crate::targets::{MockTiming, Programs, TargetKind};

#[derive(Parser, Debug)]
#[command(
    name = "llmtrace-load",
    about = "Load harness: llmtrace-proxy side by side with nginx and LiteLLM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the comparison: every target, every phase; write the results.
    Run(Box<RunArgs>),
    /// One open-loop run against a URL, printed (for profiling a target by hand).
    Load(LoadArgs),
    /// Serve the mock OpenAI/Anthropic upstream on a port with fixed timing.
    Mock(MockArgs),
    /// Serve an OTLP/gRPC sink that counts spans and discards them.
    Sink(SinkArgs),
    /// Serve a bare pingora proxy (only `upstream_peer`, the gateway's server settings).
    BarePingora(BareArgs),
    /// Send exactly N non-streamed requests over a few keep-alive connections (closed loop),
    /// e.g. while callgrind counts the target's instructions; fails unless all N succeed.
    Count(CountArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The short preset (about four minutes): a smoke test that the harness works.
    #[arg(long)]
    quick: bool,
    /// Targets to measure, comma-separated (direct is always measured first).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,pingora,proxy-tracing,proxy-no-tracing,nginx,litellm"
    )]
    targets: Vec<String>,
    /// The llmtrace-proxy binary (a release build).
    #[arg(long, default_value = "target/release/llmtrace-proxy")]
    proxy: PathBuf,
    /// The nginx binary (default: found on PATH or in /usr/sbin).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// LiteLLM's `litellm` entry point (default: benches/load/.venv/bin/litellm).
    #[arg(long)]
    litellm: Option<PathBuf>,
    /// Where results.json, table.md and the plots go.
    #[arg(long, default_value = "benches/load/results")]
    out: PathBuf,
    /// Where logs and generated configurations go.
    #[arg(long, default_value = "benches/load/.scratch")]
    scratch: PathBuf,
    /// Also write BENCHMARKS.md here (plots linked relative to its directory).
    #[arg(long)]
    benchmarks_md: Option<PathBuf>,
    /// The command line to print in the report (default: this process's arguments).
    #[arg(long)]
    command_line: Option<String>,
    /// Override the latency rate (requests/s).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Override the length of the streamed latency run (s).
    #[arg(long)]
    latency_seconds: Option<f64>,
    /// Override the mock's time to first token (ms).
    #[arg(long)]
    ttft_ms: Option<u64>,
    /// Override the mock's gap between tokens (ms).
    #[arg(long)]
    gap_ms: Option<u64>,
    /// Override the mock's tokens per answer.
    #[arg(long)]
    tokens: Option<usize>,
    /// Override the prompt size (words).
    #[arg(long)]
    prompt_words: Option<usize>,
    /// Override the cap on requests in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Override the number of streams held open in the memory phase.
    #[arg(long)]
    open_streams: Option<usize>,
    /// Override the length of one sustained-rate step (s).
    #[arg(long)]
    step_seconds: Option<f64>,
    /// Override the length of the max-rate phase, per target (s; 0 leaves it out).
    #[arg(long)]
    max_rate_seconds: Option<f64>,
    /// Override the connections of the max-rate phase.
    #[arg(long)]
    max_rate_connections: Option<usize>,
    /// Only the max-rate phase and the latency at half the gateway's max rate (issue 12),
    /// without open streams, latency or sustained rate (their columns stay empty).
    #[arg(long)]
    max_rate_only: bool,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Run the harness and everything it starts at this nice value (e.g. -10 on a machine
    /// shared with other jobs; negative values need root). On Linux with autogroups (a nice
    /// value then only ranks threads of the same session), the session's autogroup gets it
    /// too, so it counts against other sessions' jobs: run it under `setsid`.
    #[arg(long, allow_hyphen_values = true)]
    nice: Option<i32>,
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// Base URL of the target (without /v1).
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Non-streamed requests instead of streamed ones.
    #[arg(long)]
    no_stream: bool,
    /// The model field.
    #[arg(long, default_value = "bench")]
    model: String,
    /// Words per prompt.
    #[arg(long, default_value_t = 200)]
    prompt_words: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 8192)]
    concurrency: usize,
    /// Also report CPU seconds per 1 000 requests of this process (and its children).
    #[arg(long)]
    pid: Option<u32>,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

#[derive(clap::Args, Debug)]
struct CountArgs {
    /// Base URL of the target (without /v1).
    #[arg(long)]
    url: String,
    /// Requests to send, in all.
    #[arg(long, default_value_t = 2000)]
    requests: u64,
    /// Keep-alive connections, each one request at a time.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The model field.
    #[arg(long, default_value = "bench")]
    model: String,
    /// Words per prompt (10: the max-rate phase's request).
    #[arg(long, default_value_t = 10)]
    prompt_words: usize,
    /// Streamed requests (`"stream": true`), each read to its `[DONE]`.
    #[arg(long)]
    stream: bool,
    /// A request not answered in this long fails, s (callgrind slows a target ~50×).
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(clap::Args, Debug)]
struct MockArgs {
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Time to first token (ms).
    #[arg(long, default_value_t = 20)]
    ttft_ms: u64,
    /// Gap between tokens (ms).
    #[arg(long, default_value_t = 5)]
    gap_ms: u64,
    /// Tokens per answer.
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Runtime threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(clap::Args, Debug)]
struct BareArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: String,
    /// Upstream `host:port` (plain HTTP).
    #[arg(long)]
    upstream: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(clap::Args, Debug)]
struct SinkArgs {
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Where the counts are written (JSON).
    #[arg(long)]
    counts_file: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    raise_fd_limit();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Load(args) => load(args),
        Command::Mock(args) => mock(args),
        Command::BarePingora(args) => bare::serve(&args.listen, &args.upstream, args.threads),
        Command::Count(args) => count(args),
        Command::Sink(args) => sink::idle_priority()
            .and_then(|()| runtime(1))
            .and_then(|rt| {
                rt.block_on(sink::serve(
                    ([127, 0, 0, 1], args.port).into(),
                    args.counts_file,
                ))
            }),
    };
    if let Err(error) = result {
        eprintln!("llmtrace-load: {error}");
        std::process::exit(1);
    }
}

/// 1 000 open streams through a proxy are 2 000+ sockets: lift the soft limit to the hard
/// one (children inherit it).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

fn mock(args: MockArgs) -> Result<(), String> {
    let config = llmtrace_mock::MockConfig {
        ttft: Duration::from_millis(args.ttft_ms),
        gap: Duration::from_millis(args.gap_ms),
        tokens: args.tokens,
        keep_requests: 0,
        ..Default::default()
    };
    runtime(args.threads)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
            .await
            .map_err(|e| format!("binding 127.0.0.1:{}: {e}", args.port))?;
        llmtrace_mock::serve(listener, config)
            .await
            .map_err(|e| format!("mock: {e}"))
    })
}

fn load(args: LoadArgs) -> Result<(), String> {
    let workload = client::Workload {
        base_url: args.url.trim_end_matches('/').to_owned(),
        model: args.model,
        stream: !args.no_stream,
        prompt_words: args.prompt_words,
        concurrency: args.concurrency,
        timeout: Duration::from_secs(30),
    };
    runtime(args.client_threads)?.block_on(async move {
        let http = client::http_client();
        let cpu = |pid: Option<u32>| pid.map(|p| procfs::cpu_seconds(&[p]));
        let before = cpu(args.pid);
        let result = client::run_open_loop(
            &http,
            &workload,
            args.rate,
            Duration::from_secs_f64(args.duration),
        )
        .await;
        let after = cpu(args.pid);
        let report = result.report();
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
        if let (Some(b), Some(a)) = (before, after) {
            println!(
                "cpu: {:.3} s per 1000 requests",
                (a - b) / result.sent.max(1) as f64 * 1000.0
            );
        }
        Ok(())
    })
}

fn count(args: CountArgs) -> Result<(), String> {
    let workload = client::Workload {
        base_url: args.url.trim_end_matches('/').to_owned(),
        model: args.model,
        stream: args.stream,
        prompt_words: args.prompt_words,
        concurrency: args.connections,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let result = runtime(1)?.block_on(client::run_fixed_count(
        &workload,
        args.connections,
        args.requests,
    ));
    println!(
        "{}",
        serde_json::json!({
            "requests": args.requests,
            "sent": result.sent,
            "ok": result.ok,
            "errors": result.errors,
            "seconds": result.duration.as_secs_f64(),
            "rate": result.rate,
        })
    );
    if result.ok == args.requests {
        Ok(())
    } else {
        Err(format!(
            "{} of {} requests answered: {:?}",
            result.ok, args.requests, result.errors
        ))
    }
}

fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Sets this thread's nice value; threads and processes started afterwards inherit it. Also
/// the session's autogroup's, where there are autogroups (Linux): without it, the value only
/// ranks this session's threads among themselves, not against other sessions' jobs.
fn set_nice(nice: i32) -> Result<(), String> {
    let autogroup = std::path::Path::new("/proc/self/autogroup");
    if autogroup.exists() {
        if let Err(error) = std::fs::write(autogroup, nice.to_string()) {
            eprintln!("llmtrace-load: --nice {nice} for the session's autogroup: {error}");
        }
    }
    // SAFETY: setpriority on the calling thread (who = 0); no memory is involved.
    let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if status == 0 {
        Ok(())
    } else {
        Err(format!(
            "--nice {nice}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    if let Some(nice) = args.nice {
        set_nice(nice)?;
    }
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let mut kinds = vec![TargetKind::Direct];
    for name in &args.targets {
        let kind = TargetKind::parse(name.trim())?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    plan.targets = kinds;
    plan.latency_rate = args.latency_rate.unwrap_or(plan.latency_rate);
    plan.latency_stream_s = args.latency_seconds.unwrap_or(plan.latency_stream_s);
    plan.fast_mock = MockTiming {
        ttft_ms: args.ttft_ms.unwrap_or(plan.fast_mock.ttft_ms),
        gap_ms: args.gap_ms.unwrap_or(plan.fast_mock.gap_ms),
        tokens: args.tokens.unwrap_or(plan.fast_mock.tokens),
    };
    plan.prompt_words = args.prompt_words.unwrap_or(plan.prompt_words);
    plan.concurrency = args.concurrency.unwrap_or(plan.concurrency);
    plan.open_streams = args.open_streams.unwrap_or(plan.open_streams);
    plan.step_s = args.step_seconds.unwrap_or(plan.step_s);
    plan.max_rate_s = args.max_rate_seconds.unwrap_or(plan.max_rate_s);
    plan.max_rate_connections = args
        .max_rate_connections
        .unwrap_or(plan.max_rate_connections);
    plan.max_rate_only = args.max_rate_only;

    let harness =
        std::env::current_exe().map_err(|e| format!("finding this program's path: {e}"))?;
    if !args.proxy.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p llmtrace-proxy` or pass --proxy",
            args.proxy.display()
        ));
    }
    let programs = Programs {
        harness,
        proxy: args.proxy.clone(),
        nginx: args
            .nginx
            .clone()
            .or_else(|| find_program("nginx", &["/usr/sbin", "/usr/local/sbin"])),
        litellm: args
            .litellm
            .clone()
            .or_else(|| Some(PathBuf::from("benches/load/.venv/bin/litellm")))
            .filter(|p| p.is_file()),
    };
    std::fs::create_dir_all(&args.scratch)
        .map_err(|e| format!("creating {}: {e}", args.scratch.display()))?;
    // nginx resolves relative paths against its prefix: hand every program absolute ones.
    let scratch = std::fs::canonicalize(&args.scratch)
        .map_err(|e| format!("resolving {}: {e}", args.scratch.display()))?;

    let command = args.command_line.clone().unwrap_or_else(|| {
        std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" ")
    });
    let started = Instant::now();
    let load_before = procfs::load_average();
    eprintln!(
        "llmtrace-load: {} run of {} (load average {load_before})",
        if plan.quick { "quick" } else { "full" },
        plan.targets
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let results = runtime(args.client_threads)?
        .block_on(bench::run(&plan, &programs, &scratch, &args.out))?;
    let context = report::Context {
        command,
        date: shell("date -u '+%Y-%m-%d %H:%M UTC'"),
        load_before,
        load_after: procfs::load_average(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: shell("uname -sr"),
        wall_s: started.elapsed().as_secs_f64(),
        spans: crate::targets::span_summaries(),
    };
    let table = report::write(&args.out, &context, &plan, &results)?;
    println!("\n{table}");
    println!(
        "load average before {}, after {}; wall time {:.0} s; results in {}",
        context.load_before,
        context.load_after,
        context.wall_s,
        args.out.display()
    );
    if let Some(path) = &args.benchmarks_md {
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let base = if base.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            base
        };
        let plots = args
            .out
            .strip_prefix(base)
            .unwrap_or(&args.out)
            .display()
            .to_string();
        let findings = std::fs::read_to_string("benches/load/FINDINGS.md").ok();
        let text = report::benchmarks_md(
            &context,
            &plan,
            &results,
            &table,
            &plots,
            findings.as_deref(),
        );
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    // The harness worked when every target produced latency numbers (max rates, with
    // `--max-rate-only`).
    let missing: Vec<&str> = results
        .iter()
        .filter(|r| match &r.max_rate {
            _ if !plan.max_rate_only => r.stream.ok == 0 || r.stream.total.p99_ms.is_none(),
            Some(m) => m.rps <= 0.0,
            None => true,
        })
        .map(|r| r.target.name())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("no numbers for: {}", missing.join(", ")))
    }
}

fn shell(command: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", command])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
