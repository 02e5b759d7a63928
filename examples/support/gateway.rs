//! Starting `llmtrace-proxy` in-process for tests: a gateway on a free port in front of an
//! upstream URL, with the telemetry the test chose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use llmtrace_proxy::Config;
use llmtrace_proxy::admin::AdminState;

/// Starts the gateway for `Config::single(url)` edited by `edit`, on its own thread; returns
/// its address and admin state once it accepts connections.
pub async fn start_gateway(
    telemetry: &llmtrace_proxy::Telemetry,
    url: &str,
    edit: impl FnOnce(&mut Config),
) -> (SocketAddr, AdminState) {
    let listen = free_addr();
    let mut config = Config::single(&listen.to_string(), url, None).expect("a valid upstream");
    edit(&mut config);
    config.validate().expect("a valid configuration");
    let built = llmtrace_proxy::build_server(Arc::new(config), telemetry).expect("the server");
    let state = built.state.clone();
    let server = built.server;
    std::thread::spawn(move || server.run_forever());
    wait_listening(listen).await;
    (listen, state)
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Waits (up to 3 s) until `addr` accepts connections.
pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
