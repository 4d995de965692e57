//! Outgoing TCP connections for awc clients, with `TCP_NODELAY` set.
//!
//! awc's own connector leaves Nagle's algorithm on. A proxied request is written in
//! two parts (head, then body or the next pipelined request), and Nagle holding the
//! second part back until the first is acknowledged meets the peer's delayed ACK:
//! about 40 ms added to a request now and then, which is the latency tail of an
//! unoptimised proxy. Every socket spa-bff opens or accepts sets `TCP_NODELAY`
//! (accepted ones through `HttpServer::tcp_nodelay`, Redis through the redis crate's
//! `tcp_nodelay` feature).
//!
//! Pooled connections are not reused once idle for [`POOL_IDLE`]. A server closes idle
//! keep-alive connections on its own schedule (Node.js after 5 s, the common
//! shortest); a request written on a connection at the moment the server closes it
//! fails with "connection reset", which would be a 502 for a proxied call or a 503
//! for a refresh (measured: 5 of 750 refreshes against node-oidc-provider under
//! `bench/run refresh-workload` with awc's default of 15 s). Dropping connections
//! idle for 4 s keeps clear of that race for every server that waits at least 5 s;
//! a busy pool, the one that matters for speed, reuses its connections long before.

use actix_service::{Service, ServiceExt};
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, Connector, Resolver};
use awc::http::Uri;
use std::time::Duration;
use tokio::net::TcpStream;

/// A TCP connector for `awc::Connector::connector` whose connections have
/// `TCP_NODELAY` set.
pub fn nodelay_connector(
) -> impl Service<ConnectInfo<Uri>, Response = Connection<Uri, TcpStream>, Error = ConnectError> + Clone
{
    Connector::new(Resolver::default())
        .service()
        .map(|connection: Connection<Uri, TcpStream>| {
            // Best effort: a socket that refuses it still works, only slower.
            let _ = connection.io_ref().set_nodelay(true);
            connection
        })
}

/// How long a pooled outgoing connection may sit idle and still be reused.
pub const POOL_IDLE: Duration = Duration::from_secs(4);

/// An awc connector with [`nodelay_connector`], at most `limit` connections (0: no
/// limit), and idle connections dropped after [`POOL_IDLE`].
pub fn awc_connector(
    limit: usize,
) -> awc::Connector<
    impl Service<ConnectInfo<Uri>, Response = Connection<Uri, TcpStream>, Error = ConnectError> + Clone,
> {
    awc::Connector::new()
        .connector(nodelay_connector())
        .limit(limit)
        .conn_keep_alive(POOL_IDLE)
}
