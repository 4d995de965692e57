//! `TCP_NODELAY` on every socket spa-bff accepts or opens (issue 9).
//!
//! Without it, a response written in two parts (head, then body) waits for the peer's
//! delayed ACK: Nagle's algorithm holds the second part back, and a proxied request takes
//! about 40 ms instead of well under one. The app runs in this test process, so its
//! sockets are this process's: each one is found in `/proc/self/fd` by its addresses and
//! asked for its `TCP_NODELAY` option directly.

use crate::support::app::{spawn_app_with, AppOptions};
use crate::support::upstream::Upstream;
use crate::support::{self, api, Browser, RedisServer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A TCP socket of this process.
#[derive(Debug)]
struct Socket {
    local: SocketAddr,
    peer: SocketAddr,
    nodelay: bool,
}

type AddrCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// The local or peer address of socket `fd` (`getsockname` or `getpeername`).
fn address(fd: libc::c_int, call: AddrCall) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is valid; the call writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let ptr = std::ptr::addr_of_mut!(storage).cast::<libc::sockaddr>();
    // SAFETY: `ptr` points to `len` writable bytes.
    if unsafe { call(fd, ptr, &mut len) } != 0 {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*std::ptr::addr_of!(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*std::ptr::addr_of!(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// Every connected TCP socket this process holds, with its `TCP_NODELAY` setting.
fn tcp_sockets() -> Vec<Socket> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let fd = entry.file_name().to_string_lossy().parse::<libc::c_int>();
        let (true, Ok(fd)) = (is_socket, fd) else {
            continue;
        };
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let ptr = std::ptr::addr_of_mut!(value).cast::<libc::c_void>();
        // SAFETY: `ptr` points to a c_int and `len` says so; a socket that is not TCP
        // (or an fd closed meanwhile) answers an error and is skipped.
        let rc =
            unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, ptr, &mut len) };
        if rc != 0 {
            continue;
        }
        if let (Some(local), Some(peer)) = (
            address(fd, libc::getsockname),
            address(fd, libc::getpeername),
        ) {
            found.push(Socket {
                local,
                peer,
                nodelay: value != 0,
            });
        }
    }
    found
}

fn port_of(url: &str) -> u16 {
    url::Url::parse(url)
        .unwrap()
        .port()
        .expect("a URL with a port")
}

#[actix_web::test]
async fn every_socket_spa_bff_accepts_or_opens_has_nagle_off() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let provider = support::shared_provider();
    let app = spawn_app_with(
        AppOptions {
            redis_url: redis.url(),
            issuer: provider.issuer(),
            extra_toml: format!(
                "\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        provider,
    )
    .await;
    let browser = Browser::new();
    let user = support::unique("nodelay");
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    assert_eq!(api(&browser, &app, "/api/orders").await.status, 201);

    // The browser's connection, the pooled upstream connection and the Redis
    // connections are all kept open (keep-alive, the pool, the store).
    let (app_port, upstream_port, redis_port) =
        (port_of(&app.url), port_of(&upstream.url), redis.port);
    let sockets = tcp_sockets();
    let accepted: Vec<&Socket> = sockets
        .iter()
        .filter(|s| s.local.port() == app_port)
        .collect();
    let to_upstream: Vec<&Socket> = sockets
        .iter()
        .filter(|s| s.peer.port() == upstream_port)
        .collect();
    let to_redis: Vec<&Socket> = sockets
        .iter()
        .filter(|s| s.peer.port() == redis_port)
        .collect();
    for (what, group) in [
        ("accepted from the browser", &accepted),
        ("opened to the upstream", &to_upstream),
        ("opened to Redis", &to_redis),
    ] {
        assert!(!group.is_empty(), "no socket {what} found in {sockets:#?}");
        let delayed: Vec<&&Socket> = group.iter().filter(|s| !s.nodelay).collect();
        assert!(
            delayed.is_empty(),
            "sockets {what} without TCP_NODELAY: {delayed:#?}"
        );
    }
}
