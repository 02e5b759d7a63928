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
