mod support;

mod provider;

mod app;
mod login;
mod proxy;
mod resilience;
mod serving;
mod fake_op;
