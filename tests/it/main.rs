mod support;

mod provider;

mod backchannel;
mod bench;
mod demo_api;
mod fake_op;
mod layers;
mod login;
mod proxy;
mod redis_deployments;
mod resilience;
mod serving;
mod store_contract;
