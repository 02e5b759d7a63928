//! What the gateway's tests share: starting `llmtrace-proxy` in-process in front of an
//! upstream URL, and checking that the upstream received the client's bytes.
//!
//! These need `llmtrace-proxy` types, so they live here rather than in `llmtrace-test-support`
//! (see its crate docs); the socket and span helpers come from there.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use llmtrace_proxy::Config;
use llmtrace_proxy::admin::AdminState;
use llmtrace_test_support::{READY_TIMEOUT, reserve_port, wait_until_ready};

/// Starts the gateway for `Config::single(listen, url)` edited by `edit`, on its own thread;
/// returns its address and admin state once it accepts connections.
///
/// pingora binds its listener itself from the configured address, so the port is reserved
/// ([`llmtrace_test_support::ReservedPort`]) until the gateway listens on it: no other test
/// can take it in between.
pub async fn start_gateway(
    telemetry: &llmtrace_proxy::Telemetry,
    url: &str,
    edit: impl FnOnce(&mut Config),
) -> (SocketAddr, AdminState) {
    let port = reserve_port();
    let listen = port.addr();
    let mut config = Config::single(&listen.to_string(), url, None).expect("a valid upstream");
    edit(&mut config);
    config.validate().expect("a valid configuration");
    let built = llmtrace_proxy::build_server(Arc::new(config), telemetry).expect("the server");
    let state = built.state.clone();
    let server = built.server;
    std::thread::spawn(move || server.run_forever());
    wait_until_ready(listen, READY_TIMEOUT)
        .await
        .expect("the gateway listens");
    (listen, state)
}

/// The member the gateway splices into a streamed OpenAI chat body that did not ask for usage.
pub const SPLICED: &str = r#","stream_options":{"include_usage":true}"#;

/// `got` is `sent`, or — when `splice` — `sent` with exactly the usage member inserted (or
/// an `include_usage` of `false`/`null` turned `true`) and nothing else changed.
#[track_caller]
pub fn assert_forwarded(sent: &[u8], got: &[u8], splice: bool) {
    if got == sent {
        return;
    }
    assert!(
        splice,
        "the upstream received {} bytes that differ from the client's {} bytes",
        got.len(),
        sent.len()
    );
    let prefix = sent.iter().zip(got).take_while(|(a, b)| a == b).count();
    let room = sent.len().min(got.len()) - prefix;
    let suffix = sent
        .iter()
        .rev()
        .zip(got.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let removed = &sent[prefix..sent.len() - suffix];
    let inserted = std::str::from_utf8(&got[prefix..got.len() - suffix]).unwrap();
    let rotation_of = |member: &str| {
        member.len() == inserted.len() && format!("{member}{member}").contains(inserted)
    };
    let ok = match removed {
        b"" => {
            rotation_of(SPLICED)
                || rotation_of(r#""include_usage":true,"#)
                || rotation_of(r#""include_usage":true"#)
        }
        // `false` → `true` share their last byte.
        b"false" | b"null" => inserted == "true",
        b"fals" => inserted == "tru",
        _ => false,
    };
    assert!(
        ok,
        "the upstream body differs beyond the usage splice: removed {:?}, inserted {inserted:?}",
        String::from_utf8_lossy(removed)
    );
    // Where the bytes went is the gateway's validator's business (it accepts every JSON
    // number, as the grammar does, where serde_json refuses 1E310): the contiguous difference
    // checked above is the whole claim.
}

/// A gateway started from a whole TOML configuration (`${LISTEN}` and `${MOCK_URL}` filled
/// in), with the head and tail sampling it configures, exporting spans as JSON lines to a file
/// of its own (removed on drop).
pub struct TomlGateway {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its telemetry (tracer provider to flush, Prometheus registry to render).
    pub telemetry: llmtrace_proxy::Telemetry,
    dir: std::path::PathBuf,
}

impl TomlGateway {
    /// Starts it in front of `mock_url`; `name` keeps its spans file apart from other tests'.
    pub async fn start(text: &str, mock_url: &str, name: &str) -> Self {
        Self::start_with(text, &[("MOCK_URL", mock_url)], name).await
    }

    /// The same with `${NAME}` variables of its own (`${LISTEN}` is always filled in).
    pub async fn start_with(text: &str, vars: &[(&str, &str)], name: &str) -> Self {
        use llmtrace_proxy::telemetry::{Export, Sampling, Telemetry};

        let port = reserve_port();
        let listen = port.addr();
        let config = Config::parse(text, |var| match var {
            "LISTEN" => Some(listen.to_string()),
            _ => vars
                .iter()
                .find(|(name, _)| *name == var)
                .map(|(_, value)| (*value).to_owned()),
        })
        .expect("a valid configuration");
        let dir = std::env::temp_dir().join(format!("llmtrace-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spans_file = dir.join("spans.jsonl");
        let _ = std::fs::remove_file(&spans_file);
        let telemetry = Telemetry::new(
            &Export::File(spans_file),
            &Sampling {
                head: config.sampling.clone(),
                tail: config.tail.clone(),
            },
        )
        .expect("the telemetry");
        let built = llmtrace_proxy::build_server(Arc::new(config), &telemetry).expect("the server");
        std::thread::spawn(move || built.server.run_forever());
        wait_until_ready(listen, READY_TIMEOUT)
            .await
            .expect("the gateway listens");
        Self {
            listen,
            telemetry,
            dir,
        }
    }

    /// Every span exported so far, after `settle` (tail decisions wait) and a flush.
    pub async fn spans(&self, settle: std::time::Duration) -> Vec<serde_json::Value> {
        tokio::time::sleep(settle).await;
        self.telemetry.tracer_provider.force_flush().unwrap();
        std::fs::read_to_string(self.dir.join("spans.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON span"))
            .collect()
    }
}

impl Drop for TomlGateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The content tokens (`tok0`, ` tok1`, ...) of the mock's streamed answer: counted where the
/// delta's `content` holds them, since the chunks' random `obfuscation` strings can contain
/// `tok` too.
pub fn content_tokens(answer: &str) -> usize {
    answer.matches("\"content\":\"tok").count() + answer.matches("\"content\":\" tok").count()
}
