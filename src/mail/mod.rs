//! Talking to mail servers with a token: where they are, the SASL mechanisms, the bounded
//! line connection (`wire.rs`), and the IMAP, POP, SMTP and Microsoft Graph clients behind
//! `check`, `send-test` and the proxy's upstream logins.

pub mod graph;
pub mod imap;
pub mod pop;
pub mod sasl;
pub mod servers;
pub mod smtp;
pub mod wire;
