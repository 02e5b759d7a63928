//! Starting and stopping what is measured: the mock upstreams and the OTLP sink (helpers of
//! the run), and the targets in front of the mock (the proxy with and without tracing, nginx,
//! LiteLLM), each as child processes on loopback ports.
//!
//! Every target serves three endpoints: `fast`, in front of the mock whose timing the latency
//! and rate phases use, `slow`, in front of the mock whose streams last minutes, for the
//! open-streams memory phase, and `instant`, in front of a mock that answers at once, for the
//! max-rate phase. nginx and LiteLLM serve all three from one process tree (three `server`
//! blocks, three models); the proxy and bare pingora take one upstream on their command line,
//! so they run as three processes, and each phase measures the one it uses.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One child process, in a process group of its own so that stopping it stops its children.
pub struct Child {
    name: String,
    child: std::process::Child,
    stop_signal: i32,
    /// Where its stderr goes (a gateway says there what became of its spans when it stops).
    stderr: PathBuf,
}

impl Child {
    /// Starts `command` with stdout to `stdout` (`None`: discarded) and stderr to `stderr`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        stdout: Option<&Path>,
        stderr: &Path,
        stop_signal: i32,
    ) -> Result<Child, String> {
        use std::os::unix::process::CommandExt;
        let out = match stdout {
            Some(path) => Stdio::from(create(path)?),
            None => Stdio::null(),
        };
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::from(create(stderr)?))
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {name} ({:?}): {e}", command.get_program()))?;
        Ok(Child {
            name: name.to_owned(),
            child,
            stop_signal,
            stderr: stderr.to_owned(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if it has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("{} exited: {status}", self.name)),
            _ => Ok(()),
        }
    }

    /// Sends its stop signal to the group, waits up to 10 s, then kills the group.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) on a process group we created; no memory is involved.
        unsafe { libc::kill(group, self.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Children of the group may outlive the leader briefly.
                // SAFETY: as above.
                unsafe { libc::kill(group, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("  {} did not stop in 10 s; killing it", self.name);
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

fn create(path: &Path) -> Result<fs::File, String> {
    fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

/// A free loopback port (bound, read, released: another process could take it in between,
/// which on a test machine is rare enough).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Waits until `port` accepts TCP connections, checking that `child` is still alive.
pub fn wait_listening(child: &mut Child, port: u16, limit: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    loop {
        child.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} is not listening on {addr} after {limit:?}",
                child.name
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where the harness finds the programs it runs.
#[derive(Clone, Debug)]
pub struct Programs {
    /// This harness's own binary (for the `mock`, `sink` and `bare-pingora` subcommands).
    pub harness: PathBuf,
    /// `llmtrace-proxy` (release build).
    pub proxy: PathBuf,
    /// `nginx` (`None`: nginx is skipped).
    pub nginx: Option<PathBuf>,
    /// LiteLLM's `litellm` entry point (`None`: LiteLLM is skipped).
    pub litellm: Option<PathBuf>,
}

/// Timing of a mock upstream (fixed for the whole run, so every target sees the same).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MockTiming {
    /// Time to first token, ms.
    pub ttft_ms: u64,
    /// Gap between tokens, ms.
    pub gap_ms: u64,
    /// Tokens per answer.
    pub tokens: usize,
}

impl MockTiming {
    /// How long an answer takes at the mock: TTFT plus the gaps.
    pub fn answer_ms(&self) -> u64 {
        self.ttft_ms + self.gap_ms * self.tokens.saturating_sub(1) as u64
    }
}

/// The helpers every target shares: the three mocks and the OTLP sink.
pub struct Upstreams {
    /// The mock of the latency and rate phases.
    pub fast: Child,
    /// Its port.
    pub fast_port: u16,
    /// The mock of the open-streams phase.
    pub slow: Child,
    /// Its port.
    pub slow_port: u16,
    /// The mock of the max-rate phase (no TTFT, no gaps).
    pub instant: Child,
    /// Its port.
    pub instant_port: u16,
    /// The OTLP/gRPC sink.
    pub sink: Child,
    /// Its port.
    pub sink_port: u16,
    /// Where the sink writes its counts.
    pub sink_counts: PathBuf,
}

impl Upstreams {
    /// Starts the mocks and the sink as processes of their own (their CPU is not the
    /// target's), with `mock_threads` runtime threads per mock.
    pub fn start(
        programs: &Programs,
        scratch: &Path,
        [fast, slow, instant]: [MockTiming; 3],
        mock_threads: usize,
    ) -> Result<Upstreams, String> {
        let mock = |name: &str, timing: MockTiming| -> Result<(Child, u16), String> {
            let port = free_port()?;
            let mut command = Command::new(&programs.harness);
            command.args([
                "mock",
                "--port",
                &port.to_string(),
                "--ttft-ms",
                &timing.ttft_ms.to_string(),
                "--gap-ms",
                &timing.gap_ms.to_string(),
                "--tokens",
                &timing.tokens.to_string(),
                "--threads",
                &mock_threads.to_string(),
            ]);
            let mut child = Child::spawn(
                name,
                command,
                None,
                &scratch.join(format!("{name}.log")),
                libc::SIGTERM,
            )?;
            wait_listening(&mut child, port, Duration::from_secs(10))?;
            Ok((child, port))
        };
        let (fast, fast_port) = mock("mock-fast", fast)?;
        let (slow, slow_port) = mock("mock-slow", slow)?;
        let (instant, instant_port) = mock("mock-instant", instant)?;
        let sink_port = free_port()?;
        let sink_counts = scratch.join("sink-counts.json");
        let _ = fs::remove_file(&sink_counts);
        let mut command = Command::new(&programs.harness);
        command.args(["sink", "--port", &sink_port.to_string(), "--counts-file"]);
        command.arg(&sink_counts);
        let mut sink = Child::spawn(
            "otlp-sink",
            command,
            None,
            &scratch.join("otlp-sink.log"),
            libc::SIGTERM,
        )?;
        wait_listening(&mut sink, sink_port, Duration::from_secs(10))?;
        Ok(Upstreams {
            fast,
            fast_port,
            slow,
            slow_port,
            instant,
            instant_port,
            sink,
            sink_port,
            sink_counts,
        })
    }
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// The mock itself: the baseline every other target is compared with.
    Direct,
    /// `llmtrace-proxy`, every request traced and exported over OTLP/gRPC to the sink.
    ProxyTracing,
    /// `llmtrace-proxy` with `OTEL_SDK_DISABLED=true`.
    ProxyNoTracing,
    /// `llmtrace-proxy` as `ProxyTracing`, every request also mirrored (`[routes.shadow]`) to
    /// the slow mock (a token a second): what shadow traffic costs the client. Not measured
    /// unless named in `--targets`.
    ProxyShadow,
    /// A `ProxyHttp` whose only method is `upstream_peer`, with the gateway's pingora
    /// settings (`llmtrace-load bare-pingora`): pingora's own cost.
    Pingora,
    /// nginx as a plain reverse proxy, `proxy_buffering off`.
    Nginx,
    /// LiteLLM's proxy server.
    Litellm,
}

impl TargetKind {
    /// Every kind, in the order they are measured (the baseline first).
    pub const ALL: [TargetKind; 7] = [
        TargetKind::Direct,
        TargetKind::Pingora,
        TargetKind::ProxyTracing,
        TargetKind::ProxyNoTracing,
        TargetKind::ProxyShadow,
        TargetKind::Nginx,
        TargetKind::Litellm,
    ];

    /// The short name used in tables, file names and `--targets`.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::ProxyTracing => "proxy-tracing",
            TargetKind::ProxyNoTracing => "proxy-no-tracing",
            TargetKind::ProxyShadow => "proxy-shadow",
            TargetKind::Pingora => "pingora",
            TargetKind::Nginx => "nginx",
            TargetKind::Litellm => "litellm",
        }
    }

    /// Parses a short name.
    pub fn parse(name: &str) -> Result<TargetKind, String> {
        TargetKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown target {name:?}; expected one of {}",
                    TargetKind::ALL.map(TargetKind::name).join(", ")
                )
            })
    }
}

/// One base URL of a running target and the processes that serve it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT` (the load generator appends `/v1/chat/completions`).
    pub base_url: String,
    /// The `model` to ask for.
    pub model: String,
    /// The processes to measure (with their descendants).
    pub pids: Vec<u32>,
}

/// A running target; dropping it stops its processes.
pub struct Running {
    /// What it is.
    pub kind: TargetKind,
    /// In front of the fast mock.
    pub fast: Endpoint,
    /// In front of the slow mock.
    pub slow: Endpoint,
    /// In front of the instant mock.
    pub instant: Endpoint,
    /// A sentence on how it was run (version, threads, settings), for the report.
    pub description: String,
    children: Vec<Child>,
}

impl Running {
    /// An error if one of its processes has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        self.children.iter_mut().try_for_each(Child::check_running)
    }

    /// Every process it started (empty for the direct baseline, which is the mocks).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::pid).collect()
    }

    /// Stops its processes. A gateway that exported spans says, as it stops, what became of
    /// them ([`SpanSummary`]); a target that lost any (queue full, export failed) did less
    /// work than tracing asks: said here, and in the report ([`span_summaries`]).
    pub fn stop(mut self) {
        for child in self.children.iter_mut().rev() {
            child.stop();
            let said = std::fs::read_to_string(&child.stderr).unwrap_or_default();
            let summary = SpanSummary::last_in(&said).or_else(|| {
                // A gateway that exported spans and stopped without a count (killed): what
                // it lost is unknown, and the report says so.
                SpanSummary::exports(&said).then(|| {
                    eprintln!(
                        "  {} stopped without counting its spans: their fate is unknown",
                        child.name
                    );
                    SpanSummary {
                        unreported: 1,
                        ..SpanSummary::default()
                    }
                })
            });
            if let Some(summary) = summary {
                let mut seen = SPAN_SUMMARIES.lock().unwrap_or_else(|e| e.into_inner());
                seen.push((child.name.clone(), summary));
                if summary.lost() > 0 {
                    eprintln!(
                        "  {} lost {} of its {} spans ({} dropped, queue full; {} failed to \
                         export): it did less work than tracing asks",
                        child.name,
                        summary.lost(),
                        summary.queued,
                        summary.dropped,
                        summary.failed
                    );
                }
            }
        }
    }
}

/// What a gateway says of its spans when it stops (`llmtrace-proxy: spans: N queued, N
/// exported, N dropped (queue full), N failed (...)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SpanSummary {
    /// Spans ended and handed to the export queue.
    pub queued: u64,
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// Spans in batches that failed to export.
    pub failed: u64,
    /// Processes that exported spans but stopped without saying this (killed).
    pub unreported: u64,
}

impl SpanSummary {
    /// The last summary line in a gateway's stderr, if it wrote one.
    pub fn last_in(stderr: &str) -> Option<SpanSummary> {
        let line = stderr
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("llmtrace-proxy: spans: "))?;
        let mut numbers = line
            .split(", ")
            .map(|part| part.split(' ').next()?.parse::<u64>().ok());
        let mut next = || numbers.next().flatten();
        Some(SpanSummary {
            queued: next()?,
            exported: next()?,
            dropped: next()?,
            failed: next()?,
            unreported: 0,
        })
    }

    /// Whether a gateway's stderr says it exports spans (its start line names an exporter),
    /// so that it has a count to give when it stops.
    pub fn exports(stderr: &str) -> bool {
        stderr.lines().any(|line| {
            line.starts_with("llmtrace-proxy: listening on ")
                && line.contains(" spans → ")
                && !line.ends_with(" spans → Disabled")
        })
    }

    /// Spans that did not reach the collector.
    pub fn lost(&self) -> u64 {
        self.dropped + self.failed
    }
}

static SPAN_SUMMARIES: std::sync::Mutex<Vec<(String, SpanSummary)>> =
    std::sync::Mutex::new(Vec::new());

/// Every gateway process stopped so far that summarized its spans, by process name, with
/// what it said.
pub fn span_summaries() -> Vec<(String, SpanSummary)> {
    SPAN_SUMMARIES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The gateway's configuration for the `proxy-shadow` target: one route to `upstream`,
/// every LLM request mirrored to `shadow`.
fn shadow_config(upstream: &str, shadow: &str) -> String {
    format!(
        "[telemetry]\n\
         [[upstreams]]\nname = \"primary\"\nurl = \"{upstream}\"\nprovider = \"openai\"\n\
         [[upstreams]]\nname = \"shadow\"\nurl = \"{shadow}\"\nprovider = \"openai\"\n\
         [[routes]]\nupstream = \"primary\"\n\
         [routes.shadow]\nupstream = \"shadow\"\nshare = 1.0\nmax_in_flight = 32\n"
    )
}

/// Starts `kind` in front of `upstreams`; logs and configuration go to `scratch`.
pub fn start(
    kind: TargetKind,
    programs: &Programs,
    upstreams: &Upstreams,
    scratch: &Path,
) -> Result<Running, String> {
    let fast_url = format!("http://127.0.0.1:{}", upstreams.fast_port);
    let slow_url = format!("http://127.0.0.1:{}", upstreams.slow_port);
    let instant_url = format!("http://127.0.0.1:{}", upstreams.instant_port);
    let endpoint = |port: u16, pid: u32| Endpoint {
        base_url: format!("http://127.0.0.1:{port}"),
        model: "bench".to_owned(),
        pids: vec![pid],
    };
    match kind {
        TargetKind::Direct => Ok(Running {
            kind,
            fast: Endpoint {
                base_url: fast_url,
                model: "bench".to_owned(),
                pids: vec![upstreams.fast.pid()],
            },
            slow: Endpoint {
                base_url: slow_url,
                model: "bench".to_owned(),
                pids: vec![upstreams.slow.pid()],
            },
            instant: endpoint(upstreams.instant_port, upstreams.instant.pid()),
            description: "the mock upstream itself (llmtrace-mock, axum), no hop".to_owned(),
            children: Vec::new(),
        }),
        TargetKind::ProxyTracing | TargetKind::ProxyNoTracing | TargetKind::ProxyShadow => {
            let tracing = kind != TargetKind::ProxyNoTracing;
            let shadow = kind == TargetKind::ProxyShadow;
            let proxy = |role: &str, upstream: &str| -> Result<(Child, u16), String> {
                let port = free_port()?;
                let mut command = Command::new(&programs.proxy);
                command.args(["--listen", &format!("127.0.0.1:{port}")]);
                if shadow {
                    let config = scratch.join(format!("proxy-shadow-{role}.toml"));
                    std::fs::write(&config, shadow_config(upstream, &slow_url))
                        .map_err(|e| format!("writing {}: {e}", config.display()))?;
                    command.arg("--config").arg(config);
                } else {
                    command.args(["--upstream", upstream, "--provider", "openai"]);
                }
                // One worker, as nginx gets one worker process: the same share of the two
                // cores the generator and the mock also use.
                command.args(["--threads", "1", "--admin", "off"]);
                for var in [
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    "OTEL_SDK_DISABLED",
                    "LLMTRACE_CONFIG",
                ] {
                    command.env_remove(var);
                }
                if tracing {
                    command
                        .env(
                            "OTEL_EXPORTER_OTLP_ENDPOINT",
                            format!("http://127.0.0.1:{}", upstreams.sink_port),
                        )
                        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
                } else {
                    command.env("OTEL_SDK_DISABLED", "true");
                }
                // One JSON access-log line per request goes to stderr, kept in a file like
                // nginx's access log; span JSON lines (no OTLP endpoint) would go to stdout.
                spawn_listening(&format!("{}-{role}", kind.name()), command, port, scratch)
            };
            let (fast, fast_port) = proxy("fast", &fast_url)?;
            let (slow, slow_port) = proxy("slow", &slow_url)?;
            let (instant, instant_port) = proxy("instant", &instant_url)?;
            Ok(Running {
                kind,
                fast: endpoint(fast_port, fast.pid()),
                slow: endpoint(slow_port, slow.pid()),
                instant: endpoint(instant_port, instant.pid()),
                description: if shadow {
                    "llmtrace-proxy (release, --threads 1), every request traced, OTLP/gRPC \
                     to a local sink, and mirrored to the slow mock (a token a second; \
                     [routes.shadow] share 1.0, max_in_flight 32)"
                        .to_owned()
                } else if tracing {
                    "llmtrace-proxy (release, --threads 1), every request \
                     traced, OTLP/gRPC to a local sink"
                        .to_owned()
                } else {
                    "llmtrace-proxy (release, --threads 1), OTEL_SDK_DISABLED=true".to_owned()
                },
                children: vec![fast, slow, instant],
            })
        }
        TargetKind::Pingora => {
            let bare = |role: &str, upstream_port: u16| -> Result<(Child, u16), String> {
                let port = free_port()?;
                let mut command = Command::new(&programs.harness);
                command.args([
                    "bare-pingora",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--upstream",
                    &format!("127.0.0.1:{upstream_port}"),
                    "--threads",
                    "1",
                ]);
                spawn_listening(&format!("pingora-{role}"), command, port, scratch)
            };
            let (fast, fast_port) = bare("fast", upstreams.fast_port)?;
            let (slow, slow_port) = bare("slow", upstreams.slow_port)?;
            let (instant, instant_port) = bare("instant", upstreams.instant_port)?;
            Ok(Running {
                kind,
                fast: endpoint(fast_port, fast.pid()),
                slow: endpoint(slow_port, slow.pid()),
                instant: endpoint(instant_port, instant.pid()),
                description: "bare pingora 0.9 (`llmtrace-load bare-pingora`: a ProxyHttp with \
                              only upstream_peer; the gateway's server settings and allocator \
                              (mimalloc), 1 thread)"
                    .to_owned(),
                children: vec![fast, slow, instant],
            })
        }
        TargetKind::Nginx => {
            let nginx = programs
                .nginx
                .as_ref()
                .ok_or("nginx was not found (install the Debian package nginx)")?;
            let dir = scratch.join("nginx");
            fs::create_dir_all(dir.join("tmp"))
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let (fast_port, slow_port, instant_port) = (free_port()?, free_port()?, free_port()?);
            let conf = nginx_config(
                &dir,
                &[
                    (fast_port, upstreams.fast_port),
                    (slow_port, upstreams.slow_port),
                    (instant_port, upstreams.instant_port),
                ],
            );
            let conf_path = dir.join("nginx.conf");
            fs::write(&conf_path, conf)
                .map_err(|e| format!("writing {}: {e}", conf_path.display()))?;
            let mut command = Command::new(nginx);
            command
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"));
            let mut child = Child::spawn(
                "nginx",
                command,
                None,
                &scratch.join("nginx.log"),
                libc::SIGTERM,
            )?;
            wait_listening(&mut child, fast_port, Duration::from_secs(10))?;
            wait_listening(&mut child, slow_port, Duration::from_secs(10))?;
            wait_listening(&mut child, instant_port, Duration::from_secs(10))?;
            let version = Command::new(nginx)
                .arg("-v")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                .unwrap_or_default();
            let pid = child.pid();
            Ok(Running {
                kind,
                fast: endpoint(fast_port, pid),
                slow: endpoint(slow_port, pid),
                instant: endpoint(instant_port, pid),
                description: format!(
                    "{version}, 1 worker process, proxy_buffering off, HTTP/1.1 keep-alive \
                     upstream pool, access log on"
                ),
                children: vec![child],
            })
        }
        TargetKind::Litellm => {
            let litellm = programs
                .litellm
                .as_ref()
                .ok_or("litellm was not found (run benches/load/run.sh, which installs it)")?;
            let port = free_port()?;
            let conf_path = scratch.join("litellm.yaml");
            fs::write(
                &conf_path,
                litellm_config(&fast_url, &slow_url, &instant_url),
            )
            .map_err(|e| format!("writing {}: {e}", conf_path.display()))?;
            let mut command = Command::new(litellm);
            command
                .arg("--config")
                .arg(&conf_path)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--num_workers",
                    "1",
                ])
                .env("LITELLM_LOG", "ERROR")
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .env("LITELLM_TELEMETRY", "False")
                .env("NO_DOCS", "True");
            let mut child = Child::spawn(
                "litellm",
                command,
                Some(&scratch.join("litellm.out")),
                &scratch.join("litellm.log"),
                libc::SIGTERM,
            )?;
            // It imports a lot before it listens.
            wait_listening(&mut child, port, Duration::from_secs(180))?;
            let version = litellm
                .parent()
                .map(|bin| bin.join("pip"))
                .and_then(|pip| Command::new(pip).args(["show", "litellm"]).output().ok())
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .find_map(|l| l.strip_prefix("Version: ").map(str::to_owned))
                })
                .unwrap_or_else(|| "unknown version".to_owned());
            let pid = child.pid();
            Ok(Running {
                kind,
                fast: Endpoint {
                    base_url: format!("http://127.0.0.1:{port}"),
                    model: "bench".to_owned(),
                    pids: vec![pid],
                },
                slow: Endpoint {
                    base_url: format!("http://127.0.0.1:{port}"),
                    model: "bench-slow".to_owned(),
                    pids: vec![pid],
                },
                instant: Endpoint {
                    base_url: format!("http://127.0.0.1:{port}"),
                    model: "bench-instant".to_owned(),
                    pids: vec![pid],
                },
                description: format!(
                    "LiteLLM proxy {version} (PyPI litellm[proxy]), 1 uvicorn worker, no database"
                ),
                children: vec![child],
            })
        }
    }
}

/// Starts a gateway process (output to `<scratch>/<name>.log`, stopped with SIGINT) and waits
/// until it listens on `port`.
fn spawn_listening(
    name: &str,
    command: Command,
    port: u16,
    scratch: &Path,
) -> Result<(Child, u16), String> {
    let mut child = Child::spawn(
        name,
        command,
        None,
        &scratch.join(format!("{name}.log")),
        libc::SIGINT,
    )?;
    wait_listening(&mut child, port, Duration::from_secs(20))?;
    Ok((child, port))
}

/// nginx as a plain streaming reverse proxy: one worker process (the proxy runs one worker
/// thread), no response buffering, keep-alive to the upstream; one `server` per
/// `(listen port, upstream port)`. Its access log is written in batches (`buffer=64k`), as the
/// gateway's is, rather than one `write` a request.
pub fn nginx_config(dir: &Path, servers: &[(u16, u16)]) -> String {
    let d = dir.display();
    let server = |listen: u16, upstream: &str| {
        format!(
            "    server {{
        listen 127.0.0.1:{listen} backlog=4096;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
"
        )
    };
    format!(
        "# Generated by llmtrace-load.
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 16384;
}}
http {{
    access_log {d}/access.log combined buffer=64k flush=1s;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    tcp_nodelay on;
{}}}
",
        servers
            .iter()
            .enumerate()
            .map(|(i, &(listen, upstream))| format!(
                "    upstream u{i} {{
        server 127.0.0.1:{upstream};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
{}",
                server(listen, &format!("u{i}"))
            ))
            .collect::<String>(),
    )
}

/// LiteLLM's configuration (JSON, which YAML reads): model `bench` on the fast mock,
/// `bench-slow` on the slow one, `bench-instant` on the instant one, all as OpenAI-compatible
/// upstreams with a dummy key.
pub fn litellm_config(fast_url: &str, slow_url: &str, instant_url: &str) -> String {
    let model = |name: &str, url: &str| {
        serde_json::json!({
            "model_name": name,
            "litellm_params": {
                "model": format!("openai/{name}"),
                "api_base": format!("{url}/v1"),
                "api_key": "sk-mock",
                "timeout": 600,
            },
        })
    };
    serde_json::json!({
        "model_list": [
            model("bench", fast_url),
            model("bench-slow", slow_url),
            model("bench-instant", instant_url),
        ],
        "litellm_settings": {
            "telemetry": false,
            "request_timeout": 600,
        },
        "general_settings": {
            "master_key": crate::client::API_KEY,
        },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_span_summary_of_a_gateway_is_read() {
        // The line `ExportStats::summary` writes (proxy/src/export_queue.rs), after others.
        let stderr = "llmtrace-proxy: listening on http://127.0.0.1:1\n\
                      llmtrace-proxy: spans: 3 queued, 3 exported, 0 dropped (queue full), 0 \
                      failed (0 failed export calls)\n\
                      {\"route\":\"/\"}\n\
                      llmtrace-proxy: spans: 9000 queued, 8000 exported, 808 dropped (queue \
                      full), 192 failed (2 failed export calls)\n";
        let summary = SpanSummary::last_in(stderr).unwrap();
        assert_eq!(
            summary,
            SpanSummary {
                queued: 9000,
                exported: 8000,
                dropped: 808,
                failed: 192,
                unreported: 0,
            }
        );
        assert_eq!(summary.lost(), 1000);
        assert_eq!(SpanSummary::last_in("llmtrace-proxy: listening\n"), None);
        assert_eq!(SpanSummary::last_in("llmtrace-proxy: spans: many\n"), None);
        // The gateway's start line (proxy/src/main.rs) says whether it exports.
        assert!(SpanSummary::exports(
            "llmtrace-proxy: listening on http://127.0.0.1:1 (1 upstreams, 1 routes), admin \
             off, spans → Otlp { protocol: \"grpc\" }\n"
        ));
        assert!(!SpanSummary::exports(
            "llmtrace-proxy: listening on http://127.0.0.1:1 (1 upstreams, 1 routes), admin \
             off, spans → Disabled\n"
        ));
    }

    #[test]
    fn nginx_config_streams_without_buffering() {
        let conf = nginx_config(Path::new("/tmp/x"), &[(1, 2), (3, 4), (5, 6)]);
        assert!(conf.contains("worker_processes 1;"));
        assert_eq!(conf.matches("proxy_buffering off;").count(), 3);
        assert!(conf.contains("listen 127.0.0.1:1 ") && conf.contains("server 127.0.0.1:2;"));
        assert!(conf.contains("listen 127.0.0.1:3 ") && conf.contains("server 127.0.0.1:4;"));
        assert!(conf.contains("listen 127.0.0.1:5 ") && conf.contains("proxy_pass http://u2;"));
        assert!(conf.contains("pid /tmp/x/nginx.pid;"));
    }

    #[test]
    fn litellm_config_names_both_models() {
        let conf: serde_json::Value =
            serde_json::from_str(&litellm_config("http://a:1", "http://b:2", "http://c:3"))
                .unwrap();
        let models = conf["model_list"].as_array().unwrap();
        assert_eq!(models[0]["model_name"], "bench");
        assert_eq!(models[0]["litellm_params"]["api_base"], "http://a:1/v1");
        assert_eq!(models[1]["litellm_params"]["model"], "openai/bench-slow");
        assert_eq!(models[2]["litellm_params"]["api_base"], "http://c:3/v1");
    }

    #[test]
    fn target_names_round_trip() {
        for kind in TargetKind::ALL {
            assert_eq!(TargetKind::parse(kind.name()), Ok(kind));
        }
        assert!(TargetKind::parse("haproxy").unwrap_err().contains("nginx"));
    }

    #[test]
    fn answer_time() {
        let t = MockTiming {
            ttft_ms: 20,
            gap_ms: 5,
            tokens: 32,
        };
        assert_eq!(t.answer_ms(), 175);
    }
}
