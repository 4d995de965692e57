mod support;

mod provider;
mod refresh;

mod backchannel;
mod bench;
mod demo_api;
mod edge;
mod fake_op;
mod layers;
mod login;
mod long_lived;
mod metrics;
mod proxy;
mod redis_deployments;
mod resilience;
mod serving;
mod store_contract;
