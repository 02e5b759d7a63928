//! The bare-pingora target of issue 12: pingora's own cost, the floor the gateway is held to.
//!
//! A `ProxyHttp` whose only real method is `upstream_peer`, with the same pingora version and
//! features as `proxy/Cargo.toml` and the same server settings as the gateway's
//! `build_server` in `proxy/src/lib.rs`: worker threads, shutdown timing, h2c on the listener,
//! a 16 KiB client read buffer, pingora's default upstream keep-alive pool (128), and the
//! gateway's peer options (connect and read timeouts, 60 s idle keep-alive upstream), and the
//! gateway's allocator (mimalloc, set for the whole `llmtrace-load` process in `main.rs`). The
//! request and response pass through untouched: no routing, no tracing, no access log.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;

/// The gateway's defaults for an upstream (`proxy/src/config.rs`): connect timeout and the
/// idle timeout it uses as the read timeout when no first-byte timeout is set.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(10_000);
const READ_TIMEOUT: Duration = Duration::from_millis(300_000);

/// Every request goes to one plain-HTTP upstream.
pub struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.read_timeout = Some(READ_TIMEOUT);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

/// Serves `listen` → `upstream` (`host:port`, plain HTTP) with `threads` worker threads until
/// a signal (SIGINT stops at once, SIGTERM gracefully), then exits the process; returns only
/// when `upstream` is not an address.
pub fn serve(listen: &str, upstream: &str, threads: usize) -> Result<(), String> {
    let upstream: SocketAddr = upstream
        .parse()
        .map_err(|e| format!("--upstream {upstream}: {e} (expected IP:PORT)"))?;
    let conf = pingora::server::configuration::ServerConf {
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        threads: threads.max(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream });
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    if let Some(proxy) = service.app_logic_mut() {
        proxy.server_options = Some(options);
    }
    service.add_listener(
        pingora::listeners::ListenerConfig::tcp(listen)
            .l4_buffer(L4BufferSettings::default().read(16 * 1024)),
    );
    server.add_service(service);
    server.run_forever()
}
