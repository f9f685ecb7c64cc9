//! Plugins bundled into the binary (built by `host/build.rs`), loadable as `bundled:NAME`,
//! with the capabilities their READMEs ask for; and the one place that reads a plugin's
//! wasm, from the binary or from a file.

use crate::config::Capability;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));

/// Why a plugin's wasm could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no bundled plugin {name:?} (bundled: {})", names().join(", "))]
    NotBundled { name: String },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The wasm of a bundled plugin.
pub fn get(name: &str) -> Option<&'static [u8]> {
    PLUGINS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, b, _)| *b)
}

/// The names of the bundled plugins.
pub fn names() -> Vec<&'static str> {
    PLUGINS.iter().map(|(n, ..)| *n).collect()
}

/// The capabilities granted to a plugin whose config does not say: for `bundled:NAME` what
/// its README needs; for any other plugin none.
pub fn default_capabilities(path: &Path) -> Vec<Capability> {
    let text = path.to_string_lossy();
    let Some(name) = text.strip_prefix("bundled:") else {
        return Vec::new();
    };
    PLUGINS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, _, caps)| {
            caps.iter()
                .map(|c| Capability::from_name(c).expect("build.rs checked the README"))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a plugin's wasm from `path`, or from the binary for `bundled:NAME`.
pub fn read_wasm(path: &Path) -> Result<Cow<'static, [u8]>, SourceError> {
    let text = path.to_string_lossy();
    if let Some(name) = text.strip_prefix("bundled:") {
        return get(name)
            .map(Cow::Borrowed)
            .ok_or_else(|| SourceError::NotBundled {
                name: name.to_string(),
            });
    }
    std::fs::read(path)
        .map(Cow::Owned)
        .map_err(|source| SourceError::Read {
            path: path.to_path_buf(),
            source,
        })
}
