mod support;

mod provider;

mod app;
mod login;
mod resilience;
mod serving;
