//! Who the client is, from the TCP peer and `X-Forwarded-For`.
//!
//! Anyone can send `X-Forwarded-For: 1.2.3.4`. A hop is believed only when the
//! address that reported it is a trusted proxy (`server.trusted_proxies`): starting
//! from the TCP peer, walk the chain from the right while the hop is trusted; the
//! first untrusted hop is the client. When the peer itself is not trusted, the peer
//! is the client and whatever chain it sent is dropped. The proxy's outgoing
//! `X-Forwarded-For` keeps only what was believed: the client, then the trusted hops.

use super::Edge;
use crate::config::Cidr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The client as spa-bff believes it to be; in every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's IP: the rightmost hop that is not a trusted proxy.
    pub ip: IpAddr,
    /// The believed chain, client first, then each trusted hop up to the peer.
    pub chain: Vec<IpAddr>,
}

impl ClientAddr {
    /// The `X-Forwarded-For` value to send upstream.
    pub fn forwarded_for(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(self.chain.len() * 17);
        for (i, ip) in self.chain.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}{ip}");
        }
        out
    }
}

/// The client of a request whose TCP peer is `peer` and whose `X-Forwarded-For`
/// headers are in `headers`.
pub fn identify(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> ClientAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let peer = peer.to_canonical();
    // Right to left: the peer, then each hop a trusted address reported.
    let mut believed = vec![peer];
    if is_trusted(peer) {
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        for hop in hops.iter().rev() {
            // An unreadable hop: the last trusted one is as far as anyone can see.
            let Some(ip) = parse_hop(hop) else { break };
            believed.push(ip);
            if !is_trusted(ip) {
                break;
            }
        }
    }
    believed.reverse();
    ClientAddr {
        ip: believed[0],
        chain: believed,
    }
}

/// A hop as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })?;
    Some(ip.to_canonical())
}

/// The client [`identify`] found for `req` (the unspecified address when the
/// middleware did not run, e.g. in unit tests).
pub fn client_of(req: &HttpRequest) -> ClientAddr {
    req.extensions()
        .get::<ClientAddr>()
        .cloned()
        .unwrap_or_else(|| ClientAddr {
            ip: Ipv4Addr::UNSPECIFIED.into(),
            chain: Vec::new(),
        })
}

/// Middleware (outermost): identifies the client once, for everything after it.
pub async fn identify_client(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let peer = req
        .peer_addr()
        .map_or(Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
    let trusted = req
        .app_data::<Edge>()
        .map_or(&[][..], |e| &e.trusted_proxies[..]);
    let client = identify(peer, req.headers(), trusted);
    req.extensions_mut().insert(client);
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_hop_that_is_not_a_trusted_proxy() {
        let lb = ["10.0.0.0/8", "2001:db8::/32"].map(|c| Cidr::parse(c).unwrap());
        let none: [Cidr; 0] = [];
        /// (trusted, peer, X-Forwarded-For headers, client, outgoing X-Forwarded-For)
        type Case<'a> = (&'a [Cidr], &'a str, &'a [&'a str], &'a str, &'a str);
        let cases: &[Case] = &[
            // Nobody trusted: the peer is the client, whatever it claims.
            (&none, "203.0.113.9", &[], "203.0.113.9", "203.0.113.9"),
            (
                &none,
                "203.0.113.9",
                &["1.1.1.1"],
                "203.0.113.9",
                "203.0.113.9",
            ),
            // An untrusted peer's chain is dropped entirely.
            (
                &lb,
                "203.0.113.9",
                &["10.1.1.1"],
                "203.0.113.9",
                "203.0.113.9",
            ),
            // Behind one load balancer.
            (
                &lb,
                "10.0.0.2",
                &["198.51.100.7"],
                "198.51.100.7",
                "198.51.100.7, 10.0.0.2",
            ),
            // A spoofed hop left of the real client is not believed.
            (
                &lb,
                "10.0.0.2",
                &["6.6.6.6, 198.51.100.7"],
                "198.51.100.7",
                "198.51.100.7, 10.0.0.2",
            ),
            // Two trusted hops, across two headers, IPv6 and ports.
            (
                &lb,
                "10.0.0.2",
                &["6.6.6.6, [2001:db9::5]:4711", "2001:db8::1, 10.0.0.3:80"],
                "2001:db9::5",
                "2001:db9::5, 2001:db8::1, 10.0.0.3, 10.0.0.2",
            ),
            // Only trusted hops: the leftmost of them is as far as we can see.
            (
                &lb,
                "10.0.0.2",
                &["10.0.0.3"],
                "10.0.0.3",
                "10.0.0.3, 10.0.0.2",
            ),
            (&lb, "10.0.0.2", &[], "10.0.0.2", "10.0.0.2"),
            // Garbage reported by a trusted hop stops the walk at that hop.
            (
                &lb,
                "10.0.0.2",
                &["1.2.3.4, unknown"],
                "10.0.0.2",
                "10.0.0.2",
            ),
            // IPv4-mapped peers (a dual-stack listener) count as IPv4.
            (
                &lb,
                "::ffff:10.0.0.2",
                &["198.51.100.7"],
                "198.51.100.7",
                "198.51.100.7, 10.0.0.2",
            ),
        ];
        for (trusted, peer, headers, client, outgoing) in cases {
            let got = identify(peer.parse().unwrap(), &xff(headers), trusted);
            assert_eq!(got.ip.to_string(), *client, "{peer} {headers:?}");
            assert_eq!(got.forwarded_for(), *outgoing, "{peer} {headers:?}");
        }
    }
}
