//! `ward new NAME --lang rust|python|js`: a plugin project in a new
//! directory `NAME/`, anywhere. It carries what it builds against — the WIT
//! world and the language's SDK, copied from this build of Ward — and a
//! `./build.sh` that installs its toolchain (pinned to the versions Ward's
//! tests use) and writes `dist/NAME.wasm`. The action is the hello example.
//! Owns nothing else: no network, no server.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::exit;

/// What `componentize-py` and `componentize-js` the scaffolds pin: the
/// versions `plugins/python/build.sh` and `plugins/js/build.sh` test.
const COMPONENTIZE_PY: &str = "0.25.1";
const COMPONENTIZE_JS: &str = "0.23.0";

const WIT: &str = include_str!("../../../wit/action.wit");

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The plugin's name and its directory's: 1–64 chars of `[a-z0-9_-]`,
    /// starting with a letter.
    pub name: String,
    /// The language of the action.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
}

/// The files of a scaffold, by path inside `NAME/`, with `{{name}}` and the
/// versions filled in.
fn files(name: &str, lang: Lang) -> Vec<(&'static str, String, bool)> {
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
            .replace("{{componentize_js}}", COMPONENTIZE_JS)
    };
    let mut files = vec![("wit/action.wit", WIT.to_string(), false)];
    match lang {
        Lang::Rust => files.extend([
            (
                "Cargo.toml",
                fill(include_str!("../../templates/new/rust/Cargo.toml")),
                false,
            ),
            // The versions Ward's own plugins are built and tested with.
            (
                "Cargo.lock",
                include_str!("../../../plugins/Cargo.lock").to_string(),
                false,
            ),
            (
                "src/lib.rs",
                fill(include_str!("../../templates/new/rust/lib.rs")),
                false,
            ),
            (
                "ward-sdk/Cargo.toml",
                include_str!("../../templates/new/rust/sdk.Cargo.toml").to_string(),
                false,
            ),
            (
                "ward-sdk/src/lib.rs",
                include_str!("../../../sdk/src/lib.rs").to_string(),
                false,
            ),
            (
                "build.sh",
                fill(include_str!("../../templates/new/rust/build.sh")),
                true,
            ),
            (".gitignore", "/target\n/dist\n".to_string(), false),
        ]),
        Lang::Python => files.extend([
            (
                "app.py",
                fill(include_str!("../../templates/new/python/app.py")),
                false,
            ),
            (
                "ward_sdk/__init__.py",
                include_str!("../../../sdk/python/ward_sdk/__init__.py").to_string(),
                false,
            ),
            (
                "build.sh",
                fill(include_str!("../../templates/new/python/build.sh")),
                true,
            ),
            (
                ".gitignore",
                "/.toolchain\n/dist\n__pycache__/\n".to_string(),
                false,
            ),
        ]),
        Lang::Js => files.extend([
            (
                "app.js",
                fill(include_str!("../../templates/new/js/app.js")),
                false,
            ),
            (
                "ward-sdk.js",
                include_str!("../../../sdk/js/ward-sdk.js").to_string(),
                false,
            ),
            (
                "build.sh",
                fill(include_str!("../../templates/new/js/build.sh")),
                true,
            ),
            // An ES module, so that `node --check` in build.sh parses it as one.
            (
                "package.json",
                format!("{{\n  \"name\": \"{name}\",\n  \"private\": true,\n  \"type\": \"module\"\n}}\n"),
                false,
            ),
            (".gitignore", "/.toolchain\n/dist\n".to_string(), false),
        ]),
    }
    files
}

/// Why `name` cannot name a plugin project, if it cannot.
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a plugin name: 1-64 chars of [a-z0-9_-], starting with a letter"
        ))
    }
}

/// Writes the scaffold into `dir`, which must not exist.
pub fn scaffold(dir: &Path, name: &str, lang: Lang) -> Result<(), String> {
    check_name(name)?;
    if dir.exists() {
        return Err(format!("{} exists already", dir.display()));
    }
    for (path, text, executable) in files(name, lang) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        #[cfg(unix)]
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot make {} executable: {e}", path.display()))?;
        }
    }
    Ok(())
}

pub fn main(args: NewArgs) -> u8 {
    let dir = PathBuf::from(&args.name);
    match scaffold(&dir, &args.name, args.lang) {
        Ok(()) => {
            let name = &args.name;
            let lang = match args.lang {
                Lang::Rust => "Rust",
                Lang::Python => "Python",
                Lang::Js => "JavaScript",
            };
            println!("created {name}/ ({lang}); build and run it:");
            println!("  cd {name} && ./build.sh");
            println!("  ward run dist/{name}.wasm --input '{{\"name\":\"Ada\"}}'");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("my-plugin_2").is_ok());
        for bad in ["", "2x", "My", "a/b", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_scaffold_is_written_once_with_its_name_filled_in() {
        let tmp = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let dir = tmp.path().join(format!("{lang:?}").to_lowercase());
            scaffold(&dir, "my-plugin", lang).unwrap();
            let build = std::fs::read_to_string(dir.join("build.sh")).unwrap();
            assert!(build.contains("dist/my-plugin.wasm"), "{lang:?}: {build}");
            assert!(!build.contains("{{"), "{lang:?}: {build}");
            assert!(dir.join("wit/action.wit").exists());
            let err = scaffold(&dir, "my-plugin", lang).unwrap_err();
            assert!(err.contains("exists already"), "{err}");
        }
    }
}
