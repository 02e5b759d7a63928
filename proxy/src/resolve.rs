//! Upstream addresses, resolved off the request path.
//!
//! An upstream named by a host name (`api.openai.com`) is resolved when the gateway starts
//! and again every [`REFRESH`] by a thread of its own; a request takes the last address
//! found, a copy under a read lock. Handing pingora the name instead made every request call
//! the system resolver (`getaddrinfo`, blocking, uncached) on its worker thread, and a name
//! that failed to resolve panicked the request (the client's connection closed with no
//! answer). Now:
//!
//! - a name that resolved keeps its last address while a later lookup fails (a DNS outage
//!   does not take the upstream down), and the failure is said once on stderr;
//! - a name that never resolved fails its requests with a clear `502` naming the host and
//!   the resolver's error ([`Unresolved`]), which a route with other candidates retries on
//!   them;
//! - an address literal (`127.0.0.1`, `[::1]`) is never looked up.
//!
//! The address used is the first the system resolver answers, as before: its order
//! (RFC 6724) already prefers what this host can reach.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

/// How often host names are looked up again.
pub const REFRESH: Duration = Duration::from_secs(30);

/// A host name that has not resolved (yet): the resolver's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The host and port looked up.
    pub host: String,
    /// What the resolver said.
    pub error: String,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} did not resolve: {}", self.host, self.error)
    }
}

/// One upstream's address: fixed for an address literal, refreshed for a host name.
///
/// ```
/// use llmtrace_proxy::resolve::UpstreamAddr;
///
/// let literal = UpstreamAddr::new("127.0.0.1", 8080);
/// assert_eq!(literal.get().unwrap().to_string(), "127.0.0.1:8080");
/// let v6 = UpstreamAddr::new("::1", 443);
/// assert_eq!(v6.get().unwrap().to_string(), "[::1]:443");
/// ```
#[derive(Debug)]
pub struct UpstreamAddr {
    host: String,
    port: u16,
    /// The address in use, or why there is none.
    current: RwLock<Result<SocketAddr, Unresolved>>,
}

impl UpstreamAddr {
    /// An address literal as it is; a host name looked up now, with the system resolver.
    pub fn new(host: &str, port: u16) -> Self {
        Self::with_lookup(host, port, system_lookup)
    }

    /// [`new`](Self::new) with another resolver (tests).
    pub fn with_lookup(
        host: &str,
        port: u16,
        lookup: impl FnOnce(&str, u16) -> io::Result<Vec<SocketAddr>>,
    ) -> Self {
        let current = match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SocketAddr::new(ip, port)),
            Err(_) => Err(Unresolved {
                host: format!("{host}:{port}"),
                error: "not looked up yet".to_owned(),
            }),
        };
        let addr = Self {
            host: host.to_owned(),
            port,
            current: RwLock::new(current),
        };
        if addr.is_name() {
            addr.refresh_with(lookup);
        }
        addr
    }

    /// Whether the host is a name (looked up), not an address literal.
    pub fn is_name(&self) -> bool {
        self.host.parse::<IpAddr>().is_err()
    }

    /// The address to connect to, or why there is none.
    pub fn get(&self) -> Result<SocketAddr, Unresolved> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Looks the name up again with the system resolver (blocking); see
    /// [`refresh_with`](Self::refresh_with).
    pub fn refresh(&self) -> Option<Unresolved> {
        self.refresh_with(system_lookup)
    }

    /// Looks the name up again with `lookup`: its first address replaces the one in use. A
    /// failed lookup keeps the address in use, when there is one; the failure is returned
    /// either way, for the caller to report.
    pub fn refresh_with(
        &self,
        lookup: impl FnOnce(&str, u16) -> io::Result<Vec<SocketAddr>>,
    ) -> Option<Unresolved> {
        let found = lookup(&self.host, self.port).and_then(|addrs| {
            addrs
                .into_iter()
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"))
        });
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        match found {
            Ok(addr) => {
                *current = Ok(addr);
                None
            }
            Err(error) => {
                let failure = Unresolved {
                    host: format!("{}:{}", self.host, self.port),
                    error: error.to_string(),
                };
                if current.is_err() {
                    *current = Err(failure.clone());
                }
                Some(failure)
            }
        }
    }
}

fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    (host, port).to_socket_addrs().map(Iterator::collect)
}

/// Starts the thread that looks `names` up again every `every`, while any of them is still
/// in use (it holds them weakly, and ends when none is left). A failure is reported on
/// stderr when it starts, and the recovery when it ends, not at every lookup.
pub fn spawn_refresher(
    names: Vec<Weak<UpstreamAddr>>,
    every: Duration,
) -> Option<std::thread::JoinHandle<()>> {
    spawn_refresher_with(names, every, system_lookup)
}

fn spawn_refresher_with(
    names: Vec<Weak<UpstreamAddr>>,
    every: Duration,
    lookup: fn(&str, u16) -> io::Result<Vec<SocketAddr>>,
) -> Option<std::thread::JoinHandle<()>> {
    if names.is_empty() {
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("llmtrace-resolver".into())
        .spawn(move || {
            let mut failing = vec![false; names.len()];
            loop {
                std::thread::sleep(every);
                let mut alive = false;
                for (addr, failing) in names.iter().zip(failing.iter_mut()) {
                    let Some(addr) = addr.upgrade() else {
                        continue;
                    };
                    alive = true;
                    report(&addr, addr.refresh_with(lookup), failing);
                }
                if !alive {
                    return;
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            eprintln!("llmtrace-proxy: upstream names will not be looked up again: {error}");
            None
        }
    }
}

/// Says on stderr when a name starts or stops failing to resolve.
fn report(addr: &Arc<UpstreamAddr>, failure: Option<Unresolved>, failing: &mut bool) {
    match (failure, *failing) {
        (Some(failure), false) => {
            let kept = match addr.get() {
                Ok(addr) => format!("keeping {addr}"),
                Err(_) => "its requests fail with 502".to_owned(),
            };
            eprintln!("llmtrace-proxy: upstream {failure}; {kept}");
            *failing = true;
        }
        (None, true) => {
            if let Ok(found) = addr.get() {
                eprintln!(
                    "llmtrace-proxy: upstream {}:{} resolves again: {found}",
                    addr.host, addr.port
                );
            }
            *failing = false;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn literals_are_never_looked_up() {
        let lookup = |_: &str, _: u16| -> io::Result<Vec<SocketAddr>> { panic!("looked up") };
        let v4 = UpstreamAddr::with_lookup("10.0.0.7", 80, lookup);
        assert_eq!(v4.get(), Ok(addr("10.0.0.7:80")));
        assert!(!v4.is_name());
        let v6 = UpstreamAddr::with_lookup("::1", 8443, lookup);
        assert_eq!(v6.get(), Ok(addr("[::1]:8443")));
    }

    #[test]
    fn a_name_takes_the_first_address_and_follows_changes() {
        let up = UpstreamAddr::with_lookup("api.example", 443, |host, port| {
            assert_eq!((host, port), ("api.example", 443));
            Ok(vec![addr("192.0.2.1:443"), addr("192.0.2.2:443")])
        });
        assert!(up.is_name());
        assert_eq!(up.get(), Ok(addr("192.0.2.1:443")));
        assert_eq!(
            up.refresh_with(|_, _| Ok(vec![addr("192.0.2.9:443")])),
            None
        );
        assert_eq!(up.get(), Ok(addr("192.0.2.9:443")));
    }

    #[test]
    fn a_failed_lookup_keeps_the_last_address_and_says_why() {
        let up =
            UpstreamAddr::with_lookup("api.example", 443, |_, _| Ok(vec![addr("192.0.2.1:443")]));
        let failure = up.refresh_with(|_, _| Err(io::Error::other("SERVFAIL")));
        assert_eq!(
            failure,
            Some(Unresolved {
                host: "api.example:443".into(),
                error: "SERVFAIL".into()
            })
        );
        assert_eq!(up.get(), Ok(addr("192.0.2.1:443")));
        // No addresses at all is a failure too, and also keeps the last one.
        assert!(up.refresh_with(|_, _| Ok(Vec::new())).is_some());
        assert_eq!(up.get(), Ok(addr("192.0.2.1:443")));
    }

    #[test]
    fn a_name_that_never_resolved_says_so_until_it_does() {
        let up = UpstreamAddr::with_lookup("down.example", 80, |_, _| {
            Err(io::Error::other("Name or service not known"))
        });
        let error = up.get().unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"down.example:80\" did not resolve: Name or service not known"
        );
        up.refresh_with(|_, _| Ok(vec![addr("192.0.2.3:80")]));
        assert_eq!(up.get(), Ok(addr("192.0.2.3:80")));
    }

    #[test]
    fn the_system_resolver_finds_localhost() {
        let up = UpstreamAddr::new("localhost", 80);
        assert!(up.get().unwrap().ip().is_loopback());
    }

    #[test]
    fn the_refresher_follows_the_name_and_ends_when_it_is_gone() {
        fn moved(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
            Ok(vec!["192.0.2.44:80".parse().unwrap()])
        }
        let up = Arc::new(UpstreamAddr::with_lookup("api.example", 80, |_, _| {
            Ok(vec![addr("192.0.2.1:80")])
        }));
        let thread =
            spawn_refresher_with(vec![Arc::downgrade(&up)], Duration::from_millis(1), moved)
                .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while up.get() != Ok(addr("192.0.2.44:80")) {
            assert!(std::time::Instant::now() < deadline, "not refreshed");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(up);
        while !thread.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the refresher did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
