//! spa-bff's own paths, defined once.
//!
//! The route table registers them, the SPA fallback never answers under them, config
//! validation refuses `[[routes]]` prefixes that touch them, and the redirect URI is
//! built from [`CALLBACK`]. This module depends on nothing else in the crate.
//!
//! One own path is configurable, `oidc.jwks_path` (where the public client key is
//! served, none by default): config validation keeps it off these paths and off
//! every route prefix, and the route table registers it before the routes.

/// `GET`: starts a login at the provider.
pub const LOGIN: &str = "/login";
/// `GET`: the provider's redirect back after login (the registered redirect URI's path).
pub const CALLBACK: &str = "/callback";
/// `GET`: who is logged in.
pub const USER: &str = "/user";
/// `POST`: ends the session.
pub const LOGOUT: &str = "/logout";
/// `GET`: the process is up.
pub const HEALTHZ: &str = "/healthz";
/// `GET`: Redis and the provider are reachable.
pub const READYZ: &str = "/readyz";
/// `POST`: OpenID Connect back-channel logout tokens from the provider.
pub const BACKCHANNEL_LOGOUT: &str = "/backchannel-logout";
/// `GET`: Prometheus metrics (on the main listener unless `server.metrics_listen` is
/// set; reserved either way).
pub const METRICS: &str = "/metrics";

/// Every path spa-bff answers itself: nothing under them is proxied or served as a page.
pub const RESERVED: &[&str] = &[
    LOGIN,
    CALLBACK,
    USER,
    LOGOUT,
    HEALTHZ,
    READYZ,
    BACKCHANNEL_LOGOUT,
    METRICS,
];

/// Whether `path` is `base` or lies under it, segment-wise: `/api/x` is under `/api`,
/// `/apix` is not.
pub fn is_under(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether one path is the other or lies under it.
pub fn paths_overlap(a: &str, b: &str) -> bool {
    is_under(a, b) || is_under(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_under_works_segment_by_segment() {
        for (path, base, expected) in [
            ("/api", "/api", true),
            ("/api/", "/api", true),
            ("/api/orders", "/api", true),
            ("/apix", "/api", false),
            ("/ap", "/api", false),
            ("/", "/api", false),
            ("/api", "/api/orders", false),
            ("/user/data", "/user", true),
            ("/users", "/user", false),
        ] {
            assert_eq!(
                is_under(path, base),
                expected,
                "is_under({path:?}, {base:?})"
            );
        }
    }

    #[test]
    fn overlap_is_symmetric() {
        assert!(paths_overlap("/api", "/api"));
        assert!(paths_overlap("/api", "/api/admin"));
        assert!(paths_overlap("/api/admin", "/api"));
        assert!(!paths_overlap("/api", "/apix"));
        assert!(!paths_overlap("/apix", "/api"));
    }
}
