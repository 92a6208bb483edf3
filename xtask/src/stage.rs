//! The stages of `cargo xtask test`, in the order they run, and what each runs.

use std::path::Path;
use std::sync::Mutex;

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

/// How many crates miri runs at once: it interprets each test binary on one
/// thread, and CI has two cores.
const MIRI_LANES: usize = 2;

/// The crates miri takes longest on, longest first (measured on the CI
/// machine), so that the two lanes finish together; crates not named here
/// run after these.
const MIRI_LONGEST_FIRST: [&str; 6] = [
    "hvmem-pagetable",
    "hvmem-balloon-proto",
    "hvmem-grant",
    "hvmem-buddy",
    "hvmem-tmem-pool",
    "hvmem-frametable",
];

/// Runs each library crate's unit tests under miri, isolation on, two crates
/// at a time. The lanes share one target directory, so each dependency is
/// built once: cargo holds the directory's lock only while it builds, so a
/// lane waits only while the other builds, never while it runs tests. Each
/// lane prints a crate's whole output when it finishes; after a failure no
/// new crate starts.
fn miri(workspace: &Workspace) -> Result<(), String> {
    require_libraries(workspace)?;
    let root = workspace.root.as_path();
    toolchain::ensure_miri(root)?;
    let plus_nightly = format!("+{NIGHTLY}");
    Step::cargo(root)
        .args([plus_nightly.as_str(), "miri", "setup"])
        .run()?;
    let mut order: Vec<&str> = workspace
        .libraries
        .iter()
        .map(|library| library.package.as_str())
        .collect();
    order.sort_by_key(|package| {
        MIRI_LONGEST_FIRST
            .iter()
            .position(|known| known == package)
            .unwrap_or(MIRI_LONGEST_FIRST.len())
    });
    std::fs::create_dir_all(root.join("target"))
        .map_err(|error| format!("cannot create target/ for the miri logs: {error}"))?;
    let queue = Mutex::new(order.into_iter());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for lane in 0..MIRI_LANES {
            let (queue, failures, plus_nightly) = (&queue, &failures, plus_nightly.as_str());
            scope.spawn(move || {
                loop {
                    let next = {
                        let stop = failures.lock().map_or(true, |f| !f.is_empty());
                        let mut queue = queue.lock().ok();
                        match queue.as_mut() {
                            Some(queue) if !stop => queue.next(),
                            _ => None,
                        }
                    };
                    let Some(package) = next else { break };
                    let log = root.join(format!("target/miri-{lane}.log"));
                    let done = miri_step(root, plus_nightly, package).run_captured(&log);
                    println!("$ {}\n{}", done.line, done.output);
                    if let Err(message) = done.result {
                        if let Ok(mut failures) = failures.lock() {
                            failures.push(message);
                        }
                    }
                }
            });
        }
    });
    let failures = failures
        .into_inner()
        .map_err(|_| "a miri lane panicked".to_owned())?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The miri run of one crate's unit tests.
fn miri_step(root: &Path, plus_nightly: &str, package: &str) -> Step {
    let forward: Vec<String> = MIRI_TEST_ENV
        .iter()
        .map(|(key, _)| format!("-Zmiri-env-forward={key}"))
        .collect();
    let mut step = Step::cargo(root)
        .args([plus_nightly, "miri", "test", "-p", package, "--lib"])
        .env("CARGO_TARGET_DIR", "target/miri")
        .env_append("MIRIFLAGS", &forward.join(" "));
    for (key, value) in MIRI_TEST_ENV {
        step = step.env(key, value);
    }
    step
}
