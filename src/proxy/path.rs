//! Which proxied paths may reach an upstream: the rest of the path after a route's
//! prefix must mean one thing to every server that might read it.
//!
//! Upstreams and the gateways in front of them disagree about paths: Tomcat, Jetty
//! and Spring drop `;params` before normalising (`/api/..;/admin` is `/admin` to
//! them), some decode `%2f` into a separator or decode twice (`%252e%252e`), Windows
//! servers read `\` as `/` and ignore trailing dots and spaces. Any of these can turn a
//! path under the route's base into one outside it, with the user's token attached.
//! So spa-bff does not normalise (that would be one more opinion) but refuses, with
//! 400 `bad_path`, every rest-of-path that is ambiguous. The rule, on the raw path,
//! segment by segment, after percent-decoding once:
//!
//! - `;` anywhere (raw or `%3b`): no path parameters;
//! - `\` raw or `%5c`, and `%2f`: no encoded or alternative separators;
//! - `%25`: no double encoding; a `%` not followed by two hex digits: no malformed escape;
//! - control characters, NUL, space and non-ASCII bytes raw, and controls encoded;
//! - a segment made only of dots and spaces (`.`, `..`, `%2e%2e`, `.%2e`, `...`, `.. `,
//!   `%20`): no dot segments in any spelling (Windows trims trailing dots and spaces);
//! - a segment that is not UTF-8 once decoded (overlong `%c0%ae` and the like);
//! - an empty segment (`//`) except a trailing `/`: servers disagree on merging slashes.
//!
//! Ordinary paths pass unchanged, byte for byte: names with percent-encoded characters
//! (`/files/caf%C3%A9`, `%20`), `.well-known`, `a..b`, a trailing slash. The query
//! string is not part of the path and is passed on as it came.

use crate::config::RouteSettings;
use crate::error::Error;

/// The path to append to the upstream URL: the rest after the prefix, or the whole
/// path when the route keeps its prefix. 400 `bad_path` when it is ambiguous.
pub fn upstream_path(route: &RouteSettings, raw_path: &str) -> Result<String, Error> {
    let rest = raw_path
        .strip_prefix(route.prefix.as_str())
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .ok_or(Error::BadPath("the route's prefix is not written plainly"))?;
    check_rest(rest).map_err(Error::BadPath)?;
    Ok(if route.strip_prefix {
        rest.to_string()
    } else {
        raw_path.to_string()
    })
}

/// Why `rest` (empty, or starting with `/`) is ambiguous, if it is.
fn check_rest(rest: &str) -> Result<(), &'static str> {
    for b in rest.bytes() {
        match b {
            b';' => return Err("';' path parameters are not allowed"),
            b'\\' => return Err("'\\' is not allowed"),
            0..=0x20 | 0x7f.. => return Err("control, space or non-ASCII characters"),
            _ => {}
        }
    }
    let Some(segments) = rest.strip_prefix('/') else {
        return Ok(()); // the prefix itself
    };
    let segments: Vec<&str> = segments.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            if i == last {
                continue; // a trailing slash
            }
            return Err("empty path segments ('//') are not allowed");
        }
        let decoded = decode_once(segment)?;
        for &b in &decoded {
            match b {
                b'/' | b'\\' => return Err("encoded '/' or '\\' is not allowed"),
                b';' => return Err("';' path parameters are not allowed"),
                0..=0x1f | 0x7f => return Err("encoded control characters are not allowed"),
                _ => {}
            }
        }
        let Ok(text) = std::str::from_utf8(&decoded) else {
            return Err("percent-encoded bytes must be UTF-8");
        };
        if text.chars().all(|c| c == '.' || c == ' ') {
            return Err("dot segments ('.', '..' in any spelling) are not allowed");
        }
    }
    Ok(())
}

/// `segment` percent-decoded once; a malformed escape or `%25` is refused.
fn decode_once(segment: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |b: u8| (b as char).to_digit(16);
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) else {
            return Err("malformed percent-encoding");
        };
        let byte = (hi * 16 + lo) as u8;
        if byte == b'%' {
            return Err("'%25' (double encoding) is not allowed");
        }
        out.push(byte);
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenRequirement;
    use proptest::prelude::*;
    use std::time::Duration;

    fn route(prefix: &str, upstream: &str, strip: bool) -> RouteSettings {
        RouteSettings {
            prefix: prefix.into(),
            upstream: upstream.parse().unwrap(),
            token: TokenRequirement::Required,
            strip_prefix: strip,
            timeout: Duration::from_secs(1),
            methods: None,
            allow_set_cookie: false,
            max_body: 1 << 20,
            allow_shared_cache: false,
            allow_plain_http: false,
            websocket_idle_timeout: Duration::from_secs(60),
            resource: None,
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let r = route("/api", "http://up/v1", true);
        for bad in [
            // dot segments, every spelling
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2E/admin",
            "/api/.%2e/admin",
            "/api/%2e./admin",
            "/api/%2e",
            "/api/x/..",
            "/api/...",
            "/api/..%20",
            "/api/%20..",
            // path parameters (Tomcat, Jetty, Spring drop them before normalising)
            "/api/..;/admin",
            "/api/x;jsessionid=1",
            "/api/x%3b/..",
            "/api/%3B",
            // encoded or alternative separators
            "/api/a\\..\\b",
            "/api/%5c",
            "/api/..%5c..%5cadmin",
            "/api/a%2f..%2f..%2fadmin",
            "/api/%2F",
            // double encoding, malformed escapes
            "/api/%252e%252e/admin",
            "/api/%25",
            "/api/%2",
            "/api/%zz",
            // control characters, NUL, spaces, non-ASCII
            "/api/a%00b",
            "/api/a%0d%0aX-Injected:%201",
            "/api/a%7f",
            "/api/a b",
            "/api/caf\u{e9}",
            // overlong UTF-8 dots and other bytes that are not UTF-8
            "/api/%c0%ae%c0%ae/admin",
            "/api/%ff",
            // empty segments
            "/api//admin",
            "/api/x//y",
            "//api",
            // the prefix not written plainly, or another path
            "/apix",
            "/other",
            "/%61pi/x",
        ] {
            assert!(
                matches!(upstream_path(&r, bad), Err(Error::BadPath(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ordinary_paths_pass_byte_for_byte() {
        let r = route("/api", "http://up/v1", true);
        for (path, rest) in [
            ("/api", ""),
            ("/api/", "/"),
            ("/api/orders/7", "/orders/7"),
            ("/api/orders/7/", "/orders/7/"),
            ("/api/files/caf%C3%A9", "/files/caf%C3%A9"),
            ("/api/files/a%20b.txt", "/files/a%20b.txt"),
            ("/api/a..b/.well-known", "/a..b/.well-known"),
            ("/api/v1.2/x.json", "/v1.2/x.json"),
            ("/api/q%3Fx%23y", "/q%3Fx%23y"),
            ("/api/~user/a-b_c+d@e:f", "/~user/a-b_c+d@e:f"),
        ] {
            assert_eq!(
                upstream_path(&r, path).ok().as_deref(),
                Some(rest),
                "{path}"
            );
        }
        let keep = route("/api", "http://up", false);
        assert_eq!(upstream_path(&keep, "/api/x").unwrap(), "/api/x");
    }

    // ------------------------------------------------------------------------------
    // Property: whatever path spa-bff lets through, no upstream's reading of it leaves
    // the route's base. `PROPTEST_CASES=100000 cargo test --lib proxy::path` runs long.

    /// How the most lenient upstream reads a path: decode until nothing changes (double
    /// decoding), NUL ends the path (C strings), `\` is `/`, `;params` dropped from
    /// segments, empty segments merged, trailing dots and spaces trimmed (Windows; a
    /// segment of only dots and spaces becomes `..`), then dot segments resolved.
    fn upstream_view(path: &str) -> Vec<String> {
        let mut s = path.as_bytes().to_vec();
        for _ in 0..4 {
            let next = lenient_decode(&s);
            if next == s {
                break;
            }
            s = next;
        }
        if let Some(nul) = s.iter().position(|&b| b == 0) {
            s.truncate(nul);
        }
        let text = String::from_utf8_lossy(&s).replace('\\', "/");
        let mut out: Vec<String> = Vec::new();
        for seg in text.split('/') {
            let seg = seg.split(';').next().unwrap_or("");
            let trimmed = seg.trim_end_matches(['.', ' ']);
            let seg = match (seg, trimmed) {
                ("", _) | (".", _) => continue,
                ("..", _) => "..",
                (_, "") => "..",
                (_, t) => t,
            };
            if seg == ".." {
                out.pop();
            } else {
                out.push(seg.to_string());
            }
        }
        out
    }

    fn lenient_decode(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
            match (s[i], hex(s.get(i + 1)), hex(s.get(i + 2))) {
                (b'%', Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                // overlong UTF-8 for '.', '/' and '\' as old decoders read them
                (0xc0, _, _) if matches!(s.get(i + 1), Some(0xae | 0xaf)) => {
                    out.push(if s[i + 1] == 0xae { b'.' } else { b'/' });
                    i += 2;
                }
                (0xc1, _, _) if s.get(i + 1) == Some(&0x9c) => {
                    out.push(b'\\');
                    i += 2;
                }
                (b, _, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }

    const PIECES: &[&str] = &[
        "a",
        "admin",
        "v1",
        "..",
        ".",
        "...",
        ".. ",
        "..%20",
        "%2e",
        "%2E%2e",
        ".%2e",
        "%2e.",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "\\",
        ";",
        ";x=1",
        "..;",
        "%3b",
        "%3B..",
        "%25",
        "%252e",
        "%252e%252e",
        "%252f",
        "%00",
        "%0a",
        "%c0%ae",
        "%c0%af",
        "%c1%9c",
        "%20",
        "caf%C3%A9",
        "%e2%80%a8",
        "",
        "%",
        "%2",
        "%zz",
        "a..b",
        ".well-known",
        "%3f",
        "%23",
    ];

    fn segment() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 1..4).prop_map(|p| p.concat())
    }

    fn hostile_rest() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 0..7)
            .prop_map(|segs| segs.iter().map(|s| format!("/{s}")).collect::<String>())
    }

    fn base_segments(r: &RouteSettings) -> Vec<String> {
        let mut base = r.upstream.path().trim_end_matches('/').to_string();
        if !r.strip_prefix {
            base.push_str(&r.prefix);
        }
        upstream_view(&base)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
            ..ProptestConfig::default()
        })]

        #[test]
        fn no_accepted_path_leaves_the_route_base_in_any_upstream_view(
            rest in hostile_rest(),
            strip in any::<bool>(),
            base in prop::sample::select(&["http://up", "http://up/v1", "http://up/v1/inner/"][..]),
        ) {
            let r = route("/api", base, strip);
            let raw = format!("/api{rest}");
            if let Ok(path) = upstream_path(&r, &raw) {
                let url = format!("{}{path}", r.upstream.path().trim_end_matches('/'));
                let view = upstream_view(&url);
                let base = base_segments(&r);
                prop_assert!(
                    view.starts_with(&base),
                    "{raw:?} -> {url:?} is read as {view:?}, outside {base:?}"
                );
            }
        }

        #[test]
        fn any_input_is_answered_without_a_panic(raw in "\\PC*", tail in "[/.;%\\\\a-f0-9]{0,16}") {
            let r = route("/api", "http://up/v1", true);
            let _ = upstream_path(&r, &raw);
            let _ = upstream_path(&r, &format!("/api{tail}{raw}"));
        }

        #[test]
        fn plain_names_and_encoded_characters_pass_unchanged(
            names in prop::collection::vec("[A-Za-z0-9_~-]{1,8}|[^\\x00-\\x20\\x7f/\\\\;%.]{1,4}", 1..6),
        ) {
            let rest: String = names
                .iter()
                .map(|n| format!("/{}", percent_encoding::utf8_percent_encode(n, percent_encoding::NON_ALPHANUMERIC)))
                .collect();
            let r = route("/api", "http://up/v1", true);
            prop_assert_eq!(upstream_path(&r, &format!("/api{rest}")).ok(), Some(rest));
        }
    }
}
