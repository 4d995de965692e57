mod support;

mod provider;

mod backchannel;
mod demo_api;
mod fake_op;
mod layers;
mod login;
mod proxy;
mod resilience;
mod serving;
mod store_contract;
