//! The integration tests, one binary: each module is a theme, each test runs the built
//! `mailtoken` as a separate process against fake servers on 127.0.0.1 (support/), in its own
//! temporary directory, so they run in parallel.

mod support;

mod cli;
mod crash;
mod fake_server_selftest;
mod faults;
mod flows;
mod habits;
mod hygiene;
mod local_input;
mod mailcheck;
mod man;
mod newcomer;
mod parsers;
mod proxy;
mod proxy_guard;
mod quick;
mod stores;
mod survival;
