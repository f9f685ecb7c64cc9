//! wasmtp: an SMTP/ESMTP gateway whose mail policy runs as sandboxed WebAssembly components.
//!
//! `proto` is the protocol core (no I/O); `session` drives it over a stream; `plugin` runs
//! the policy components; `mailauth` verifies senders (SPF, DKIM, ARC, DMARC) and signs; `spool` keeps messages durably; `delivery` moves them on;
//! `config` is the configuration as data, `resources` loads what it names (TLS, plugins);
//! `server` ties listeners, reloads and shutdown together.
// Unsafe is denied everywhere but the one audited call that loads cached compiled code.
#![deny(unsafe_code)]

pub mod changes;
pub mod clients;
pub mod config;
pub mod control;
pub mod delivery;
pub mod dns;
pub mod mailauth;
pub mod metrics;
pub mod mta_sts;
pub mod plugin;
pub mod proto;
pub mod proxy;
pub mod queue;
pub mod resources;
pub mod scaffold;
pub mod server;
pub mod session;
pub mod spool;
pub mod tls;
