//! Toolchain preparation: install what a stage needs only when it is missing.

use std::path::Path;

use crate::child::Step;

/// The nightly toolchain used for miri.
pub const NIGHTLY: &str = "nightly";

/// Components miri needs on the nightly toolchain.
const MIRI_COMPONENTS: [&str; 2] = ["miri", "rust-src"];

/// Adds the rustup targets among `targets` that the active toolchain lacks.
pub fn ensure_targets(root: &Path, targets: &[&str]) -> Result<(), String> {
    let installed = Step::rustup(root)
        .args(["target", "list", "--installed"])
        .capture()?;
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|target| !installed.lines().any(|line| line.trim() == *target))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Step::rustup(root)
        .args(["target", "add"])
        .args(&missing)
        .run()
}

/// Adds miri and rust-src to the nightly toolchain unless both are installed.
pub fn ensure_miri(root: &Path) -> Result<(), String> {
    let installed = Step::rustup(root)
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .capture()?;
    let missing = MIRI_COMPONENTS.iter().any(|component| {
        !installed
            .lines()
            .any(|line| is_component(line.trim(), component))
    });
    if !missing {
        return Ok(());
    }
    Step::rustup(root)
        .args(["component", "add", "--toolchain", NIGHTLY])
        .args(MIRI_COMPONENTS)
        .run()
}

/// Whether an installed-component line (`miri-x86_64-unknown-linux-gnu`,
/// `rust-src`) names `component`.
fn is_component(line: &str, component: &str) -> bool {
    line.strip_prefix(component)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::is_component;

    #[test]
    fn component_names_match_with_or_without_host() {
        assert!(is_component("miri-x86_64-unknown-linux-gnu", "miri"));
        assert!(is_component("rust-src", "rust-src"));
        assert!(!is_component(
            "rust-std-x86_64-unknown-linux-gnu",
            "rust-src"
        ));
        assert!(!is_component("miriam", "miri"));
    }
}
