//! The workspace as the checks see it: its root and its library crates.

use std::fs;
use std::path::{Path, PathBuf};

/// Folders that hold library crates (the `no_std` ones), in dependency order.
///
/// A folder counts once it is listed in the root `members`, so a crate that is
/// added to the workspace is checked without editing xtask.
const LIBRARY_DIRS: [&str; 7] = [
    "types",
    "buddy",
    "frametable",
    "pagetable",
    "grant",
    "balloon-proto",
    "tmem-pool",
];

/// A library crate of the workspace.
#[derive(Debug, Clone)]
pub struct Library {
    /// Package name: `hvmem-` plus the folder name.
    pub package: String,
    /// Whether the manifest depends on `loom` (so it has `#[cfg(loom)]` tests).
    pub has_loom: bool,
}

/// The workspace root and the library crates found in it.
#[derive(Debug)]
pub struct Workspace {
    /// Directory holding the root `Cargo.toml`.
    pub root: PathBuf,
    /// Library crates that are workspace members, in [`LIBRARY_DIRS`] order.
    pub libraries: Vec<Library>,
}

impl Workspace {
    /// Reads the root manifest next to this crate and finds the library crates.
    pub fn load() -> Result<Self, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("xtask has no parent directory")?
            .to_path_buf();
        let manifest = read(&root.join("Cargo.toml"))?;
        let members = members(&manifest);
        let mut libraries = Vec::new();
        for dir in LIBRARY_DIRS {
            let crate_manifest = root.join(dir).join("Cargo.toml");
            if !members.iter().any(|member| member == dir) || !crate_manifest.is_file() {
                continue;
            }
            libraries.push(Library {
                package: format!("hvmem-{dir}"),
                has_loom: mentions_loom(&read(&crate_manifest)?),
            });
        }
        Ok(Self { root, libraries })
    }
}

/// Reads a file to a string, naming it in the error.
fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// Drops a `#` comment from a manifest line (no manifest here quotes a `#`).
fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(code, _)| code)
}

/// The entries of the `members = [...]` array of a workspace manifest.
///
/// Accepts the array on one line or spread over several; `default-members`
/// is not confused with it.
fn members(manifest: &str) -> Vec<String> {
    let code: Vec<&str> = manifest.lines().map(strip_comment).collect();
    let Some(start) = code.iter().position(|line| {
        line.trim_start()
            .strip_prefix("members")
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    }) else {
        return Vec::new();
    };
    let mut array = String::new();
    for line in &code[start..] {
        array.push_str(line);
        array.push('\n');
        if line.contains(']') {
            break;
        }
    }
    let body = array
        .split_once('[')
        .map_or("", |(_, rest)| rest.split(']').next().unwrap_or(""));
    body.split(',')
        .map(|entry| entry.trim().trim_matches('"').trim())
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether a crate manifest uses `loom` outside comments.
fn mentions_loom(manifest: &str) -> bool {
    manifest
        .lines()
        .any(|line| strip_comment(line).contains("loom"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_on_one_line_ignores_default_members() {
        let manifest = "[workspace]\ndefault-members = [\"types\"]\nmembers = [\"types\", \"buddy\", \"xtask\"]\n";
        assert_eq!(members(manifest), ["types", "buddy", "xtask"]);
    }

    #[test]
    fn members_over_several_lines_with_comments() {
        let manifest = "[workspace]\nmembers = [\n  \"types\", # base\n  \"grant\",\n  # \"pagetable\",\n  \"tmem-pool\",\n]\n";
        assert_eq!(members(manifest), ["types", "grant", "tmem-pool"]);
    }

    #[test]
    fn loom_in_a_comment_does_not_count() {
        assert!(mentions_loom(
            "[target.'cfg(loom)'.dependencies]\nloom.workspace = true\n"
        ));
        assert!(mentions_loom("[dev-dependencies]\nloom = \"0.7\"\n"));
        assert!(!mentions_loom("[dependencies]\n# loom later\n"));
    }

    #[test]
    fn this_workspace_has_types() {
        let workspace = Workspace::load().unwrap();
        assert!(workspace.root.join("Cargo.toml").is_file());
        assert!(
            workspace
                .libraries
                .iter()
                .any(|lib| lib.package == "hvmem-types")
        );
    }
}
