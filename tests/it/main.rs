mod support;

mod provider;
mod refresh;

mod audiences;
mod backchannel;
mod bench;
mod demo_api;
mod edge;
mod fake_op;
mod layers;
mod login;
mod long_lived;
mod metadata;
mod proxy;
mod refreshed_id_token;
mod resilience;
mod serving;
mod store_contract;
