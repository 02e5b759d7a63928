//! A mock OpenAI and Anthropic upstream on one port (see the `llmtrace-mock` crate).
//!
//! ```sh
//! cargo run --example mock_upstream -- [ADDR] [--ttft-ms N] [--gap-ms N] [--tokens N] [--fault F]
//!     [--keep-requests N]
//! ```
//!
//! ADDR defaults to `127.0.0.1:8090`; port 0 picks a free one. The first line printed is
//! `listening on http://HOST:PORT` (scripts read the port from it). Each request can override
//! the defaults with `x-mock-*` headers (`x-mock-ttft-ms`, `x-mock-fault: cut`, …).
//! `GET /__mock/requests[?request_id=ID]` lists the latest requests received (the last
//! `--keep-requests`, default 64, whole bodies included), `DELETE /__mock/requests` forgets them.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use llmtrace_mock::{Mock, MockConfig, parse_faults};

const USAGE: &str = "usage: mock_upstream [ADDR] [--ttft-ms N] [--gap-ms N] [--tokens N] \
                     [--fault F[,F...]] [--keep-requests N]";

fn parse_args() -> Result<(SocketAddr, MockConfig), String> {
    let mut addr: SocketAddr = "127.0.0.1:8090".parse().expect("valid default address");
    let mut config = MockConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("not a number: {v}"));
        match arg.as_str() {
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "--ttft-ms" => config.ttft = Duration::from_millis(number(value(&arg)?)?),
            "--gap-ms" => config.gap = Duration::from_millis(number(value(&arg)?)?),
            "--tokens" => config.tokens = number(value(&arg)?)? as usize,
            "--fault" => config.faults = parse_faults(&value(&arg)?)?,
            "--keep-requests" => config.keep_requests = number(value(&arg)?)? as usize,
            other if !other.starts_with('-') => {
                addr = other
                    .parse()
                    .map_err(|e| format!("bad address {other:?}: {e}"))?;
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok((addr, config))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (addr, config) = match parse_args() {
        Ok(v) => v,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on http://{addr}");
    println!("  OpenAI base URL:    http://{addr}/v1");
    println!("  Anthropic base URL: http://{addr}");
    println!(
        "  defaults: ttft {:?}, gap {:?}, {} tokens; override per request with x-mock-* headers",
        config.ttft, config.gap, config.tokens
    );
    println!(
        "  received requests: GET http://{addr}/__mock/requests (the last {})",
        config.keep_requests
    );
    let mock = Mock::new(config);
    tokio::select! {
        result = mock.serve(listener) => {
            if let Err(e) = result {
                eprintln!("server error: {e}");
                return ExitCode::FAILURE;
            }
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
