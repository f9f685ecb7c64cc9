//! `wasmtp plugin new NAME --lang rust|js|python|c`: a plugin project that builds with the
//! one command it prints and passes `wasmtp plugin test` as it is. Each is the same policy
//! (at MAIL, refuse the senders of one configured domain), the WIT it builds against
//! (this server's contract, so a JS, Python or C project needs nothing of ours), and the
//! build files of its toolchain. A Rust project depends on the SDK by path.

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
    C,
}

#[derive(Debug, clap::Args)]
pub struct New {
    /// The plugin's name: lower-case ASCII letters, digits and '-', starting with a letter
    pub name: String,
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to write it (default: ./NAME); it must not exist, or be empty
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Rust SDK: the sdk/ directory of a wasmtp checkout (default: the one this
    /// binary was built from)
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(
        "plugin name {0:?}: use lower-case ASCII letters, digits and '-', starting with a letter (at most 64)"
    )]
    Name(String),
    #[error("{}: exists and is not empty", .0.display())]
    Exists(PathBuf),
    #[error(
        "the Rust SDK is not at {}: pass --sdk PATH (the sdk/ directory of a wasmtp checkout)",
        .0.display()
    )]
    NoSdk(PathBuf),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The contract the project builds against: this server's.
const WIT: &str = include_str!("../../../wit/plugin.wit");

/// A file of a project: where, its template, whether it is a script to run.
struct File {
    path: &'static str,
    template: &'static str,
    executable: bool,
}

const fn file(path: &'static str, template: &'static str) -> File {
    File {
        path,
        template,
        executable: false,
    }
}

/// What each language's project holds, the command that builds it, and where the
/// component lands (`{{name}}`, `{{crate}}` filled in).
fn layout(lang: Lang) -> (Vec<File>, &'static str, &'static str) {
    let wit = file("wit/plugin.wit", WIT);
    match lang {
        Lang::Rust => (
            vec![
                file("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
                file("src/lib.rs", include_str!("templates/rust/lib.rs")),
            ],
            "cargo build --release --target wasm32-wasip2",
            "target/wasm32-wasip2/release/{{crate}}.wasm",
        ),
        Lang::Js => (
            vec![
                file("package.json", include_str!("templates/js/package.json")),
                file("build.mjs", include_str!("templates/js/build.mjs")),
                file("plugin.js", include_str!("templates/js/plugin.js")),
                wit,
            ],
            "npm install && npm run build",
            "{{name}}.wasm",
        ),
        Lang::Python => (
            vec![file("app.py", include_str!("templates/python/app.py")), wit],
            "componentize-py -d wit -w plugin componentize app -o {{name}}.wasm",
            "{{name}}.wasm",
        ),
        Lang::C => (
            vec![
                file("policy.c", include_str!("templates/c/policy.c")),
                File {
                    executable: true,
                    ..file("build.sh", include_str!("templates/c/build.sh"))
                },
                wit,
            ],
            "./build.sh",
            "{{name}}.wasm",
        ),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Writes the project; what to run to build and try it.
pub fn run(new: &New) -> Result<String, NewError> {
    if !valid_name(&new.name) {
        return Err(NewError::Name(new.name.clone()));
    }
    let dir = new.dir.clone().unwrap_or_else(|| PathBuf::from(&new.name));
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(NewError::Exists(dir));
    }
    let sdk = match new.lang {
        Lang::Rust => sdk_path(new.sdk.as_deref())?,
        _ => String::new(),
    };
    let (files, build, wasm) = layout(new.lang);
    let fill = |t: &str| {
        t.replace("{{wasm}}", wasm)
            .replace("{{name}}", &new.name)
            .replace("{{crate}}", &new.name.replace('-', "_"))
            .replace("\"{{sdk}}\"", &sdk)
    };
    for f in &files {
        write(&dir.join(f.path), &fill(f.template), f.executable)?;
    }
    let (build, wasm) = (fill(build), fill(wasm));
    let test = format!("wasmtp plugin test {wasm} --from a@example.com --to b@example.net");
    let readme = format!(
        "# {name}\n\nA wasmtp policy plugin: at MAIL it refuses the senders of `blocked_domain`.\n\n\
         Build it: `{build}`\n\nTry it: `{test}`\n(and `--from x@blocked.invalid` to see it refuse).\n\n\
         Serve it, in wasmtp.toml:\n\n```toml\n[[plugin]]\nname = \"{name}\"\npath = \"{wasm}\"\n\
         [plugin.config]\nblocked_domain = \"blocked.invalid\"\n```\n",
        name = new.name
    );
    write(&dir.join("README.md"), &readme, false)?;
    let shown = dir.display();
    Ok(format!(
        "created {shown}\nbuild it: cd {shown} && {build}\ntry it:   {test}\n"
    ))
}

/// The SDK's directory as a TOML string, checked to be one.
fn sdk_path(given: Option<&Path>) -> Result<String, NewError> {
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let path = given.unwrap_or(&default);
    match std::fs::canonicalize(path) {
        Ok(dir) if dir.join("Cargo.toml").is_file() => {
            Ok(toml::Value::String(dir.display().to_string()).to_string())
        }
        _ => Err(NewError::NoSdk(path.to_path_buf())),
    }
}

fn write(path: &Path, text: &str, executable: bool) -> Result<(), NewError> {
    let failed = |source| NewError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, text).map_err(failed)?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(path, mode).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["p", "my-plugin", "geo2ip"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "My", "2p", "-p", "a_b", "a/b", "../x", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
