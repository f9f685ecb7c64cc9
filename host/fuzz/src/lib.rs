//! The SMTP protocol core and the config of the `wasmtp` host crate, compiled straight from
//! their sources so that the fuzz targets need neither wasmtime nor tokio. `host/src/proto`
//! uses only `crate::proto`/`super::` paths, `serde` (derive) and `thiserror`;
//! `host/src/config` adds toml, serde_path_to_error, ipnet, argon2 and wasmtp-units, and
//! the `Capability` of `host/src/plugin/capability.rs` (wasmparser).

#[path = "../../src/proto/mod.rs"]
pub mod proto;

#[path = "../../src/config/mod.rs"]
pub mod config;

#[path = "../../src/plugin/capability.rs"]
pub mod capability;

/// The one plugin file the config uses, where the config looks for it.
pub mod plugin {
    pub use crate::capability;
}
