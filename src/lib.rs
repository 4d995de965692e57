//! spa-bff: a backend-for-frontend session proxy for single-page apps.
//!
//! The browser only ever holds an encrypted, HttpOnly cookie; the tokens live
//! server-side in Redis, encrypted under a per-session secret the cookie carries.
//! `main.rs` is a thin shell over [`app::App`].

pub mod app;
pub mod config;
pub mod csrf;
pub mod edge;
pub mod error;
pub mod flows;
pub mod metrics;
pub mod net;
pub mod oidc;
pub mod paths;
pub mod proxy;
pub mod routes;
pub mod secret;
pub mod session;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod time;
