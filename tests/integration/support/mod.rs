//! What the integration tests share: the test environment, fake servers on 127.0.0.1 and the
//! runner for the binary. Each test module uses what it needs, so some helpers go unused in
//! any one theme.
#![allow(dead_code)]

pub mod env;
pub mod http;
pub mod mail_servers;
pub mod oauth_server;
pub mod run;
