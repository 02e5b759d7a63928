//! The max-rate phase's load generator: `wrk` (one thread, closed loop over keep-alive
//! connections), which saturates a target on one core where this harness's own generator does
//! not. The harness writes a Lua script for the POST body, runs wrk and parses its report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// What one wrk run reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WrkReport {
    /// Requests completed (any status).
    pub requests: u64,
    /// Length of the run as wrk measured it, s.
    pub duration_s: f64,
    /// `Requests/sec`.
    pub rps: f64,
    /// Answers with a status outside 2xx and 3xx.
    pub non_2xx: u64,
    /// Socket errors: connect + read + write + timeout.
    pub socket_errors: u64,
    /// Latency percentiles (from `--latency`), ms.
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
}

impl WrkReport {
    /// Requests answered with a 2xx/3xx status (wrk does not read the body).
    pub fn ok(&self) -> u64 {
        self.requests.saturating_sub(self.non_2xx)
    }

    /// Non-2xx answers and socket errors.
    pub fn errors(&self) -> u64 {
        self.non_2xx + self.socket_errors
    }
}

/// A wrk time (`324.00us`, `2.11ms`, `1.02s`, `1.00m`, `2.00h`) in ms.
fn time_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(value * scale)
}

/// Parses wrk's report (run with `--latency`).
pub fn parse(output: &str) -> Result<WrkReport, String> {
    let mut report = WrkReport::default();
    let mut rps = None;
    let mut requests = None;
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = value.trim().parse().ok();
        } else if line.contains(" requests in ") {
            requests = words.first().and_then(|n| n.parse().ok());
            report.duration_s = words
                .get(3)
                .and_then(|t| time_ms(t.trim_end_matches(',')))
                .map_or(0.0, |ms| ms / 1000.0);
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.non_2xx = value.trim().parse().unwrap_or(0);
        } else if let Some(value) = line.strip_prefix("Socket errors:") {
            // `connect 0, read 0, write 0, timeout 12`
            report.socket_errors = value
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let [percent, time] = words.as_slice() {
            let slot = match *percent {
                "50%" => &mut report.p50_ms,
                "90%" => &mut report.p90_ms,
                "99%" => &mut report.p99_ms,
                _ => continue,
            };
            *slot = time_ms(time);
        }
    }
    match (requests, rps) {
        (Some(requests), Some(rps)) => Ok(WrkReport {
            requests,
            rps,
            ..report
        }),
        _ => Err(format!(
            "no `requests in` / `Requests/sec` in wrk's output: {}",
            output.trim()
        )),
    }
}

/// The Lua script that makes wrk send `body` as an OpenAI chat POST with the harness's key.
pub fn script(body: &str, api_key: &str) -> String {
    format!(
        "-- Written by llmtrace-load for wrk: the max-rate phase's request.\n\
         wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {api_key}\"\n\
         wrk.body = [==[{body}]==]\n"
    )
}

/// The `wrk` program on `PATH` (or in /usr/bin, /usr/local/bin).
pub fn find() -> Option<PathBuf> {
    crate::find_program("wrk", &["/usr/bin", "/usr/local/bin"])
}

/// wrk's `-d`: whole seconds, at least one.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs_f64().ceil().max(1.0) as u64
}

/// Runs wrk (`-t1`, `connections`, `duration` rounded up to whole seconds, `--latency`)
/// with `script` against `url`; the child inherits this thread's CPU affinity.
pub async fn run(
    wrk: &Path,
    script: &Path,
    url: &str,
    connections: usize,
    duration: Duration,
) -> Result<WrkReport, String> {
    let output = tokio::process::Command::new(wrk)
        .arg("-t1")
        .arg(format!("-c{}", connections.max(1)))
        .arg(format!("-d{}s", whole_seconds(duration)))
        .args(["--latency", "--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{} exited with {}: {}{}",
            wrk.display(),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    parse(&stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_report() {
        let report = parse(include_str!("testdata/wrk.txt")).unwrap();
        assert_eq!(
            report,
            WrkReport {
                requests: 29460,
                duration_s: 2.0,
                rps: 14721.0,
                non_2xx: 0,
                socket_errors: 0,
                p50_ms: Some(2.11),
                p90_ms: Some(3.0),
                p99_ms: Some(3.82),
            }
        );
        assert_eq!((report.ok(), report.errors()), (29460, 0));
    }

    #[test]
    fn parses_errors_and_microseconds() {
        let report = parse(include_str!("testdata/wrk-non-2xx.txt")).unwrap();
        assert_eq!((report.requests, report.non_2xx), (22839, 22839));
        assert_eq!(report.ok(), 0);
        assert!((report.p50_ms.unwrap() - 0.324).abs() < 1e-9);
        assert_eq!(report.p99_ms, Some(2.59));
        let with_sockets = "  10 requests in 1.00m, 1.00KB read\n  Socket errors: connect 1, \
                            read 2, write 0, timeout 4\nRequests/sec:      0.17\n";
        let report = parse(with_sockets).unwrap();
        assert_eq!((report.socket_errors, report.duration_s), (7, 60.0));
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn times_and_scripts() {
        assert_eq!(time_ms("1.5s"), Some(1500.0));
        assert_eq!(time_ms("12"), None);
        assert_eq!(whole_seconds(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(2100)), 3);
        let lua = script(r#"{"a":"b"}"#, "sk-1");
        assert!(lua.contains(r#"wrk.body = [==[{"a":"b"}]==]"#), "{lua}");
        assert!(lua.contains("Bearer sk-1"));
    }
}
