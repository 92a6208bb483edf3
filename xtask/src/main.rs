//! `cargo xtask`: developer tasks for the hvmem workspace.
//!
//! `cargo xtask test` is the one command that runs every check (format,
//! lints, tests, docs, `no_std` builds, loom, miri, fuzz corpus replay), stops
//! at the first failing stage and prints a table of stage times at the end.
//! `cargo xtask stages` lists the stages; `cargo xtask bench-summary` turns
//! criterion's last results into `benches/RESULTS.md`; `cargo xtask help`
//! shows the usage.

#![deny(missing_docs)]
#![warn(clippy::missing_docs_in_private_items)]
// A developer tool, not guest-facing code: failing loudly is the right answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod bench_summary;
mod child;
mod cli;
mod report;
mod runner;
mod stage;
mod toolchain;
mod workspace;

use std::process::ExitCode;

use cli::Cli;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Cli::parse(&args) {
        Ok(Cli::Test(selection)) => runner::run(&selection),
        Ok(Cli::Stages) => {
            for stage in stage::Stage::ALL {
                println!("{:<12} {}", stage.name(), stage.summary());
            }
            ExitCode::SUCCESS
        }
        Ok(Cli::BenchSummary) => {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("xtask lives in the workspace")
                .to_path_buf();
            match bench_summary::run(&root) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("xtask: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Cli::Help) => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("xtask: {message}\n\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}
