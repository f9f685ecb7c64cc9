//! wasmtp: an SMTP/ESMTP gateway whose mail policy runs as sandboxed WebAssembly components.
//!
//! `proto` is the protocol core (no I/O); `session` drives it over a stream; `spool` keeps
//! messages durably; `delivery` moves them on; `server` ties listeners, TLS and shutdown.
// Unsafe is denied everywhere but the one audited call that loads cached compiled code.
#![deny(unsafe_code)]

pub mod config;
pub mod delivery;
pub mod dns;
pub mod metrics;
pub mod plugin;
pub mod proto;
pub mod queue;
pub mod server;
pub mod session;
pub mod spool;
pub mod tls;
