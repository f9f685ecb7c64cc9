//! Plugins bundled into the binary (built by `host/build.rs`), loadable as `bundled:NAME`,
//! granted by default the capabilities they declare; and the one place that reads a
//! plugin's wasm, from the binary or from a file.

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
    PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The names of the bundled plugins.
pub fn names() -> Vec<&'static str> {
    PLUGINS.iter().map(|(n, _)| *n).collect()
}

/// Whether `path` names a bundled plugin (`bundled:NAME`): one whose config need not say
/// what it is granted, since it comes with the server.
pub fn is_bundled(path: &Path) -> bool {
    path.to_string_lossy().starts_with("bundled:")
}

/// What a bundled plugin's `http` may call when its config has no `http_allow`: the URL
/// its own config names (`config.url`, as `bundled:rspamd` has). None for other plugins.
pub fn default_http_allow(p: &crate::config::Plugin) -> Vec<String> {
    match p.config.get("url").and_then(toml::Value::as_str) {
        Some(url) if is_bundled(&p.path) => vec![url.to_string()],
        _ => Vec::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::super::capability::declared;

    /// Each bundled plugin's README says what it declares: its `Capabilities:` line.
    #[test]
    fn readmes_name_what_the_plugins_declare() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        for (name, wasm) in super::PLUGINS {
            let readme = std::fs::read_to_string(root.join(name).join("README.md")).unwrap();
            let line = readme
                .lines()
                .find_map(|l| l.strip_prefix("Capabilities:"))
                .unwrap_or_else(|| panic!("{name}: README has no `Capabilities:` line"));
            let list = line.split('(').next().unwrap_or_default();
            let said: Vec<&str> = list
                .split(',')
                .map(|c| c.trim().trim_end_matches('.'))
                .filter(|c| !c.is_empty() && *c != "none")
                .collect();
            let declared = declared(wasm)
                .unwrap()
                .expect("the SDK writes a declaration");
            let declared: Vec<&str> = declared.iter().map(|c| c.name()).collect();
            assert_eq!(said, declared, "{name}: README and declaration differ");
        }
    }
}
