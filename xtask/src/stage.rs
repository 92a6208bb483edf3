//! The stages of `cargo xtask test`, in the order they run, and what each runs.

use std::path::Path;

use crate::child::Step;
use crate::toolchain::{self, NIGHTLY};
use crate::workspace::Workspace;

/// Bare-metal targets every library crate must build for.
const NO_STD_TARGETS: [&str; 2] = ["x86_64-unknown-none", "aarch64-unknown-none"];

/// One check of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `cargo fmt --check` over the workspace.
    Fmt,
    /// Clippy over every target, warnings denied.
    Clippy,
    /// Unit, doc and property tests of the workspace.
    Test,
    /// Rustdoc of the workspace, warnings denied.
    Doc,
    /// Each library crate built for the bare-metal targets.
    NoStd,
    /// The loom model checks of the crates that use loom.
    Loom,
    /// The library unit tests under miri.
    Miri,
    /// Each fuzz target replayed over its checked-in corpus.
    FuzzReplay,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Self; 8] = [
        Self::Fmt,
        Self::Clippy,
        Self::Test,
        Self::Doc,
        Self::NoStd,
        Self::Loom,
        Self::Miri,
        Self::FuzzReplay,
    ];

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fmt => "fmt",
            Self::Clippy => "clippy",
            Self::Test => "test",
            Self::Doc => "doc",
            Self::NoStd => "no_std",
            Self::Loom => "loom",
            Self::Miri => "miri",
            Self::FuzzReplay => "fuzz-replay",
        }
    }

    /// One line saying what the stage checks.
    pub fn summary(self) -> &'static str {
        match self {
            Self::Fmt => "cargo fmt --all -- --check",
            Self::Clippy => "cargo clippy --workspace --all-targets -- -D warnings",
            Self::Test => {
                "cargo test --workspace (unit, doc and property tests), then every bench once as a test"
            }
            Self::Doc => "cargo doc --workspace --no-deps, RUSTDOCFLAGS=-D warnings",
            Self::NoStd => "each library crate built for x86_64- and aarch64-unknown-none",
            Self::Loom => "loom model checks (--cfg loom) of the crates that use loom",
            Self::Miri => "library unit tests under miri (nightly)",
            Self::FuzzReplay => "fuzz targets replayed over their corpora (hvmem-fuzz)",
        }
    }

    /// The stage with this command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.name() == name)
    }

    /// Runs the stage; the error says which command failed.
    pub fn run(self, workspace: &Workspace) -> Result<(), String> {
        let root = workspace.root.as_path();
        match self {
            Self::Fmt => Step::cargo(root)
                .args(["fmt", "--all", "--", "--check"])
                .run(),
            Self::Clippy => Step::cargo(root)
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])
                .run(),
            // The fuzz crate holds only the corpus replay, which its own stage
            // runs optimised: unoptimised here it took three minutes.
            Self::Test => Step::cargo(root)
                .args(["test", "--workspace", "--exclude", "hvmem-fuzz"])
                .run()
                .and_then(|()| bench_quick_mode(root)),
            Self::Doc => Step::cargo(root)
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings")
                .run(),
            Self::NoStd => no_std(workspace),
            Self::Loom => loom(workspace),
            Self::Miri => miri(workspace),
            Self::FuzzReplay => Step::cargo(root)
                .args([
                    "test",
                    "--release",
                    "-p",
                    "hvmem-fuzz",
                    "--test",
                    "corpus_replay",
                ])
                .run(),
        }
    }
}

/// The benches' quick mode: every criterion bench function runs once, as a
/// test, unoptimised and untimed, so that a bench cannot rot (a workload that
/// panics, a peer that refuses its setup) without failing the checks.
fn bench_quick_mode(root: &Path) -> Result<(), String> {
    Step::cargo(root)
        .args(["test", "-p", "hvmem-benches", "--benches"])
        .run()
}

/// Fails when the workspace has no library crate: the member list was misread.
fn require_libraries(workspace: &Workspace) -> Result<(), String> {
    if workspace.libraries.is_empty() {
        Err("no library crate found among the workspace members".to_owned())
    } else {
        Ok(())
    }
}

/// Builds each library crate alone for each bare-metal target.
fn no_std(workspace: &Workspace) -> Result<(), String> {
    require_libraries(workspace)?;
    let root = workspace.root.as_path();
    toolchain::ensure_targets(root, &NO_STD_TARGETS)?;
    for target in NO_STD_TARGETS {
        for library in &workspace.libraries {
            Step::cargo(root)
                .args(["build", "-p", &library.package, "--target", target])
                .run()?;
        }
    }
    Ok(())
}

/// Runs the tests whose path contains `loom` with `--cfg loom`, in their own
/// target directory so the ordinary build cache stays valid.
fn loom(workspace: &Workspace) -> Result<(), String> {
    require_libraries(workspace)?;
    let root = workspace.root.as_path();
    let looms: Vec<_> = workspace
        .libraries
        .iter()
        .filter(|lib| lib.has_loom)
        .collect();
    if looms.is_empty() {
        println!("no library crate depends on loom; nothing to model-check");
    }
    for library in looms {
        Step::cargo(root)
            .args(["test", "--release", "-p", &library.package, "--lib", "loom"])
            .env("RUSTFLAGS", "--cfg loom")
            .env("CARGO_TARGET_DIR", "target/loom")
            .env_default("LOOM_MAX_PREEMPTIONS", "3")
            .run()?;
    }
    Ok(())
}

/// Variables the miri stage sets for the tests, forwarded into the
/// interpreter: with isolation on, miri hides the host environment otherwise.
const MIRI_TEST_ENV: [(&str, &str); 3] = [
    ("PROPTEST_CASES", "8"),
    ("HVMEM_MIRI", "1"),
    // Persisting failures needs the working directory, which isolation denies.
    ("PROPTEST_DISABLE_FAILURE_PERSISTENCE", "1"),
];

/// Runs each library crate's unit tests under miri, isolation on.
fn miri(workspace: &Workspace) -> Result<(), String> {
    require_libraries(workspace)?;
    let root = workspace.root.as_path();
    toolchain::ensure_miri(root)?;
    let plus_nightly = format!("+{NIGHTLY}");
    Step::cargo(root)
        .args([plus_nightly.as_str(), "miri", "setup"])
        .run()?;
    let forward: Vec<String> = MIRI_TEST_ENV
        .iter()
        .map(|(key, _)| format!("-Zmiri-env-forward={key}"))
        .collect();
    for library in &workspace.libraries {
        let mut step = Step::cargo(root)
            .args([
                plus_nightly.as_str(),
                "miri",
                "test",
                "-p",
                &library.package,
                "--lib",
            ])
            .env("CARGO_TARGET_DIR", "target/miri")
            .env_append("MIRIFLAGS", &forward.join(" "));
        for (key, value) in MIRI_TEST_ENV {
            step = step.env(key, value);
        }
        step.run()?;
    }
    Ok(())
}
