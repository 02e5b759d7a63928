//! Sockets for tests, without races: a server the test starts gets a listener that is
//! already bound ([`serve`]); a server that binds its own (pingora) gets a port that stays
//! reserved until it has bound ([`reserve_port`]); and a test waits for an address to
//! accept connections ([`wait_until_ready`]) instead of sleeping.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};

/// How long [`wait_until_ready`] callers usually give a server to start listening: far more
/// than it needs on an idle machine, enough on a loaded CI runner.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on an ephemeral loopback port. The listener is bound before this returns, so
/// the address accepts connections at once.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// A loopback port held for a server that binds its own listener from a configured address
/// (pingora, or a child process).
///
/// Binding a listener to port 0, reading the port and dropping the listener before the server
/// binds leaves a window in which anything else may take the port. A [`ReservedPort`] closes
/// it: the socket is bound with `SO_REUSEADDR` but never listens. While it is held the kernel
/// gives the port to no `bind(…:0)` and to no outgoing connection, yet a server that binds
/// the same address with `SO_REUSEADDR` (pingora, std and tokio listeners all set it) binds
/// and listens normally, and connections go to that listener. Keep the reservation until the
/// server is listening ([`wait_until_ready`]); dropping it afterwards changes nothing.
///
/// While nothing listens on it, a connection to the port is refused, so a reservation is also
/// an upstream that refuses connections.
#[derive(Debug)]
pub struct ReservedPort {
    // Held for its effect on the port; never listens.
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl ReservedPort {
    /// The reserved loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reserves a free loopback port (see [`ReservedPort`]).
pub fn reserve_port() -> ReservedPort {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("a free loopback port");
    let addr = socket.local_addr().expect("the bound address");
    ReservedPort {
        _socket: socket,
        addr,
    }
}

/// Waits until `addr` accepts a TCP connection, polling every 10 ms; fails once `timeout` has
/// passed with the last connection error.
pub async fn wait_until_ready(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{addr} did not accept a connection within {timeout:?}: {e}"),
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reserved_port_refuses_connections_until_a_server_binds_it() {
        let port = reserve_port();
        assert!(TcpStream::connect(port.addr()).await.is_err());
        assert!(
            wait_until_ready(port.addr(), Duration::from_millis(50))
                .await
                .is_err()
        );
        // A server binding the reserved address itself (as pingora does) gets it.
        let listener = tokio::net::TcpListener::bind(port.addr()).await.unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        wait_until_ready(port.addr(), READY_TIMEOUT).await.unwrap();
        accept.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_ephemeral_bind_never_lands_on_a_reserved_port() {
        let reserved: Vec<ReservedPort> = (0..64).map(|_| reserve_port()).collect();
        for _ in 0..512 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            assert!(reserved.iter().all(|r| r.addr().port() != port));
        }
    }
}
