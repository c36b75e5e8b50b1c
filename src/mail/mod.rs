//! Talking to mail servers with a token: where they are, the SASL mechanisms, and the IMAP,
//! POP, SMTP and Microsoft Graph clients behind `check` and `send-test`.

pub mod graph;
pub mod imap;
pub mod pop;
pub mod sasl;
pub mod servers;
pub mod smtp;
pub mod wire;
