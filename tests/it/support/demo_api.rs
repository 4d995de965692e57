//! demo-api (src/bin/demo-api.rs) as a child process of the tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::http_client;

/// A running demo-api process; killed on drop.
pub struct DemoApi {
    child: Child,
    pub base: String,
}

impl DemoApi {
    pub fn start(issuer: &str, extra_env: &[(&str, &str)]) -> DemoApi {
        let mut child = Command::new(env!("CARGO_BIN_EXE_demo-api"))
            .env("DEMO_API_ISSUER", issuer)
            .env("DEMO_API_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn demo-api");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read demo-api's stdout");
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("demo-api did not start: {line:?}"))
            .trim()
            .to_owned();
        DemoApi {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// `(status, WWW-Authenticate, JSON body)` of a request with an optional bearer token.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => http_client().post(&url),
            _ => http_client().get(&url),
        };
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let mut res = req
            .send_body(r#"{"order":42}"#)
            .await
            .expect("request to demo-api");
        let challenge = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body: Value = res.json().await.expect("demo-api answers JSON");
        (res.status().as_u16(), challenge, body)
    }
}

impl Drop for DemoApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
