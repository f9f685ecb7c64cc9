//! The SMTP protocol core of the `wasmtp` host crate, compiled straight from its sources so
//! that the fuzz targets need neither wasmtime nor tokio. `host/src/proto` uses only
//! `crate::proto`/`super::` paths, `serde` (derive) and `thiserror`.

#[path = "../../src/proto/mod.rs"]
pub mod proto;
