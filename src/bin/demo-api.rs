//! demo-api: the demo's resource server. It validates the JWT access tokens that the
//! provider issues for its audience (RFC 9068) and answers with what it saw. It is the
//! "API behind spa-bff" half of the demo; spa-bff itself never looks inside these tokens.
//!
//! Environment: `DEMO_API_ISSUER` (required), `DEMO_API_AUDIENCE` (default
//! `urn:spa-bff:demo-api`), `DEMO_API_LISTEN` (default `127.0.0.1:8081`; port 0 picks a
//! free port), `DEMO_API_LEEWAY_SECS` (clock skew allowed on `exp`/`nbf`, default 5),
//! `RUST_LOG`. When the server is bound, one line `listening <address>` goes to stdout;
//! logs go to stderr.

mod demo_api;

use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match demo_api::Settings::from_env(|name| std::env::var(name).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo-api: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // awc's rustls feature needs a process-level crypto provider, even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = actix_web::rt::System::new().block_on(async move {
        let server = demo_api::build(settings)?;
        println!("listening {}", server.addr);
        server.run.await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-api: {e}");
            ExitCode::FAILURE
        }
    }
}
