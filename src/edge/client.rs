//! Who the client is, from the TCP peer and `X-Forwarded-For`.
//!
//! Anyone can send `X-Forwarded-For: 1.2.3.4`. A hop is believed only when the
//! address that reported it is a trusted proxy (`server.trusted_proxies`): starting
//! from the TCP peer, walk the chain from the right while the hop is trusted; the
//! first untrusted hop is the client. When the peer itself is not trusted, the peer
//! is the client and whatever chain it sent is dropped. The proxy's outgoing
//! `X-Forwarded-For` keeps only what was believed: the client, then the trusted hops;
//! its `X-Forwarded-Proto` and `X-Forwarded-Host` ([`Forwarding`]) say what the
//! browser used, from `server.public_url`.

use super::Edge;
use crate::config::Cidr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
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
        let mut out = String::with_capacity(self.chain.len() * 17);
        for (i, ip) in self.chain.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_ip(&mut out, *ip);
        }
        out
    }

    /// [`Self::forwarded_for`] as a header value; `None` when no client is known.
    pub fn forwarded_for_header(&self) -> Option<HeaderValue> {
        if self.chain.is_empty() {
            return None;
        }
        HeaderValue::from_maybe_shared(Bytes::from(self.forwarded_for())).ok()
    }
}

/// Appends `ip` as its `Display` writes it (an IPv4 address digit by digit, without
/// the formatting machinery: this runs for every proxied request).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The `X-Forwarded-Proto` and `X-Forwarded-Host` values, the same for every request:
/// made once from `server.public_url`, not per request.
#[derive(Debug, Clone)]
pub struct Forwarding {
    proto: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

impl Forwarding {
    /// The values for an application served at `public_url` (`host[:port]`, as a
    /// browser sends it in `Host`).
    pub fn new(public_url: &url::Url) -> Self {
        let host = public_url.host_str().unwrap_or_default();
        let host = match public_url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Self {
            proto: HeaderValue::from_str(public_url.scheme()).ok(),
            host: HeaderValue::from_str(&host).ok(),
        }
    }

    /// Adds the forwarding headers to `headers`: `forwarded_for` is the believed
    /// chain (nothing when no client is known).
    pub fn add_to(&self, headers: &mut HeaderMap, forwarded_for: Option<HeaderValue>) {
        if let Some(chain) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, chain);
        }
        if let Some(proto) = &self.proto {
            headers.insert(X_FORWARDED_PROTO, proto.clone());
        }
        if let Some(host) = &self.host {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
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

    /// `push_ip` writes what `Display` writes: every octet value in every position,
    /// and IPv6 addresses (which go through `Display` itself).
    #[test]
    fn push_ip_writes_what_display_writes() {
        let mut checked = 0;
        for octet in 0..=255u8 {
            for position in 0..4 {
                let mut octets = [192, 0, 2, 7];
                octets[position] = octet;
                for ip in [IpAddr::from(octets), IpAddr::from([octet; 4])] {
                    let mut out = String::from("x");
                    push_ip(&mut out, ip);
                    assert_eq!(out, format!("x{ip}"));
                    checked += 1;
                }
            }
        }
        for ip in ["::1", "2001:db8::1", "::ffff:192.0.2.1", "fe80::1:2:3:4"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
        assert_eq!(checked, 2048);
    }

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
