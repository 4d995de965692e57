//! Outgoing TCP connections for awc clients, with `TCP_NODELAY` set.
//!
//! awc's own connector leaves Nagle's algorithm on. A proxied request is written in
//! two parts (head, then body or the next pipelined request), and Nagle holding the
//! second part back until the first is acknowledged meets the peer's delayed ACK:
//! about 40 ms added to a request now and then, which is the latency tail of an
//! unoptimised proxy. Every socket spa-bff opens or accepts sets `TCP_NODELAY`
//! (accepted ones through `HttpServer::tcp_nodelay`, Redis through the redis crate's
//! `tcp_nodelay` feature).

use actix_service::{Service, ServiceExt};
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, Connector, Resolver};
use awc::http::Uri;
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

/// An awc connector with [`nodelay_connector`] and at most `limit` connections
/// (0: no limit).
pub fn awc_connector(
    limit: usize,
) -> awc::Connector<
    impl Service<ConnectInfo<Uri>, Response = Connection<Uri, TcpStream>, Error = ConnectError> + Clone,
> {
    awc::Connector::new()
        .connector(nodelay_connector())
        .limit(limit)
}
