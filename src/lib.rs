//! mailtoken's library: everything but argument dispatch, so that tests, benchmarks and fuzz
//! targets can call the same code the binary runs.

pub mod cli;
pub mod commands;
pub mod config;
pub mod doctor;
pub mod error;
pub mod flows;
pub mod gitcred;
pub mod graph;
pub mod http;
pub mod imap;
pub mod jwt;
pub mod lock;
pub mod log;
pub mod mailcmd;
#[cfg(test)]
mod man;
pub mod mech;
pub mod oauth;
pub mod output;
pub mod pop;
pub mod provider;
pub mod sasl;
pub mod servers;
pub mod smtp;
pub mod store;
pub mod time;
pub mod token;
pub mod whoami;
pub mod wire;
