mod support;

mod provider;
mod refresh;

mod audiences;
mod backchannel;
mod client_auth;
mod client_routes;
mod demo_api;
mod dpop;
mod edge;
mod fake_op;
mod keep_alive;
mod layers;
mod login;
mod long_lived;
mod metadata;
mod metrics;
mod par;
mod prompt;
mod proxy;
mod redis_deployments;
mod refreshed_id_token;
mod resilience;
mod serving;
mod session_cache;
mod store_contract;
