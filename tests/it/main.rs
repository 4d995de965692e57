mod support;

mod provider;

mod app;
mod backchannel;
mod bench;
mod demo_api;
mod fake_op;
mod login;
mod proxy;
mod resilience;
mod serving;
