//! HTTP/1.1 spoken by hand over a plain TCP socket, for what awc will not do: send a
//! path byte for byte, promise a body and stall, wait for `100 Continue`, send a huge
//! head. Blocking sockets run on the blocking pool ([`blocking`]); every read has a
//! timeout, so a server that never answers fails the test instead of hanging it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response read off the socket (or `status` 0 when the server closed without one).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
}

/// Runs blocking socket work off the test's runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    actix_web::rt::task::spawn_blocking(f)
        .await
        .expect("blocking task")
}

/// A connection to `base` (`http://127.0.0.1:port`) whose reads give up after `timeout`.
pub fn connect(base: &str, timeout: Duration) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// Reads one response head (skipping interim 1xx ones unless `keep_interim`) and then
/// its body by `Content-Length`, or until the server closes.
pub fn read_response(reader: &mut BufReader<TcpStream>, keep_interim: bool) -> RawResponse {
    loop {
        let mut status_line = String::new();
        if reader.read_line(&mut status_line).unwrap_or(0) == 0 {
            return RawResponse {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
            };
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("header");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        if (100..200).contains(&status) && !keep_interim {
            continue;
        }
        let mut res = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) {
            return res;
        }
        match res
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            Some(len) => {
                res.body.resize(len, 0);
                reader.read_exact(&mut res.body).expect("body");
            }
            None if res.header("transfer-encoding").is_some() => {
                res.body = read_chunked(reader);
            }
            None => {
                let _ = reader.read_to_end(&mut res.body);
            }
        }
        return res;
    }
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; n + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
        if n == 0 {
            return body;
        }
    }
}

/// Sends `request` as is and reads the response.
pub async fn exchange(base: &str, request: Vec<u8>) -> RawResponse {
    let base = base.to_string();
    blocking(move || {
        let mut s = connect(&base, Duration::from_secs(20));
        s.write_all(&request).unwrap();
        read_response(&mut BufReader::new(s), false)
    })
    .await
}

/// A request head with `headers` (each `Name: value`) and an empty line.
pub fn head(method: &str, target: &str, headers: &[String]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}
