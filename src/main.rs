use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a proxied request makes a few hundred
/// small allocations, and glibc's malloc and free were a sixth of its instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use spa_bff::app::App;
use spa_bff::config::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

/// spa-bff: a backend-for-frontend for single-page apps. It logs users in with
/// OpenID Connect, keeps their tokens server-side in Redis behind an encrypted
/// HttpOnly cookie, and serves the SPA.
///
/// Every configuration key can be overridden by an environment variable
/// SPA_BFF__<SECTION>__<KEY>, e.g. SPA_BFF__OIDC__CLIENT_SECRET.
#[derive(Parser)]
#[command(name = "spa-bff", version)]
struct Cli {
    /// The TOML configuration file (optional when everything comes from the environment).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Load and validate the configuration; print every problem (exit 1) or `ok` (exit 0).
    CheckConfig {
        /// Also reach the provider (discovery: issuer, endpoints) and Redis (mode,
        /// version, authentication, TLS) and report what was found.
        #[arg(long)]
        online: bool,
    },
    /// Print the public JWKS of oidc.client_key_file (client_auth = private_key_jwt), to
    /// register at the provider; the key id is its RFC 7638 thumbprint.
    Keys,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("spa-bff: invalid configuration:");
            for e in &errors.0 {
                eprintln!("  - {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Some(Command::CheckConfig { online: false }) => {
            println!("ok");
            return ExitCode::SUCCESS;
        }
        Some(Command::CheckConfig { online: true }) => {
            let report =
                actix_web::rt::System::new().block_on(spa_bff::app::check_online(settings));
            for line in &report.lines {
                println!("{line}");
            }
            return match report.ok {
                true => ExitCode::SUCCESS,
                false => ExitCode::FAILURE,
            };
        }
        Some(Command::Keys) => return print_public_keys(&settings),
        Some(Command::Serve) | None => {}
    }
    // Held until the end of main: dropping it writes out the buffered log lines.
    let _log = spa_bff::telemetry::init();
    let listen = settings.server.listen.clone();
    let public_url = settings.server.public_url.clone();
    let result = actix_web::rt::System::new().block_on(async move {
        let app = App::build(settings)?;
        tracing::info!(%listen, %public_url, "spa-bff listening");
        app.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spa-bff: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `spa-bff keys`: the public JWKS of the client key (never the private part).
fn print_public_keys(settings: &Settings) -> ExitCode {
    let Some(key) = &settings.oidc.client_key else {
        eprintln!(
            "spa-bff: no client key: set oidc.client_auth = \"private_key_jwt\" and oidc.client_key_file"
        );
        return ExitCode::FAILURE;
    };
    match serde_json::to_string_pretty(&key.public_jwks()) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spa-bff: {e}");
            ExitCode::FAILURE
        }
    }
}
