//! `llmtrace-proxy demo`: with `--exit` it prints the waterfall and exits (what scripts and CI
//! rely on); without, it prints the viewer's address, serves the viewer with the demo's four
//! traces, and stops on Ctrl-C (SIGINT).
#![cfg(feature = "demo")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llmtrace_test_support::reserve_port;

/// The demo's process, killed when the test ends however it ends: a failed assertion must not
/// leave a demo serving forever.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo(args: &[&str], admin: &str) -> Demo {
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmtrace-proxy"));
    command
        .args(["--admin", admin, "demo"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name.starts_with("LLMTRACE_") {
            command.env_remove(name);
        }
    }
    Demo(command.spawn().unwrap())
}

/// Waits `limit` at most for the child to exit.
fn exits_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn demo_exit_prints_the_waterfall_and_exits() {
    let admin = reserve_port();
    let mut demo = demo(&["--exit"], &admin.addr().to_string());
    let status = exits_within(&mut demo.0, Duration::from_secs(60)).expect("demo --exit exits");
    assert!(status.success(), "{status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut demo.0.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("chat gpt-4o"), "{out}");
    assert!(!out.contains("Trace viewer"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_viewer_until_ctrl_c() {
    let admin_port = reserve_port();
    let admin = admin_port.addr();
    let mut demo = demo(&[], &admin.to_string());
    let stdout = demo.0.stdout.take().unwrap();
    let reading = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("Trace viewer: "))
    });
    // On timeout the guard kills the demo, which ends the read.
    let line = tokio::time::timeout(Duration::from_secs(90), reading)
        .await
        .expect("the demo printed the viewer's address within 90 s")
        .unwrap()
        .expect("the viewer's address");
    assert!(line.contains(&format!("http://{admin}/ui")), "{line}");
    drop(admin_port);

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let response = client
        .get(format!("http://{admin}/api/traces").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["data"].as_array().unwrap().len(), 4, "{json}");

    let status = Command::new("kill")
        .args(["-INT", &demo.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        exits_within(&mut demo.0, Duration::from_secs(15)).is_some(),
        "the demo keeps running after Ctrl-C"
    );
}
