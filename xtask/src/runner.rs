//! Runs the selected stages in order, stops at the first failure, reports.

use std::process::ExitCode;
use std::time::Instant;

use crate::report::{Outcome, Report, Status};
use crate::stage::Stage;
use crate::workspace::Workspace;

/// Runs `stages` in order and prints the report; fails on the first red stage.
pub fn run(stages: &[Stage]) -> ExitCode {
    let started = Instant::now();
    let workspace = match Workspace::load() {
        Ok(workspace) => workspace,
        Err(message) => {
            eprintln!("xtask: {message}");
            return ExitCode::FAILURE;
        }
    };
    let libraries: Vec<&str> = workspace
        .libraries
        .iter()
        .map(|library| library.package.as_str())
        .collect();
    println!("xtask: workspace {}", workspace.root.display());
    println!("xtask: library crates: {}", libraries.join(" "));

    let mut report = Report::default();
    let mut failure = None;
    for &stage in stages {
        if failure.is_some() {
            report.push(Outcome {
                stage,
                status: Status::NotRun,
                seconds: None,
            });
            continue;
        }
        println!("\n==> {}", stage.name());
        let stage_started = Instant::now();
        let result = stage.run(&workspace);
        let seconds = Some(stage_started.elapsed().as_secs_f64());
        let status = if result.is_ok() {
            Status::Ok
        } else {
            Status::Failed
        };
        report.push(Outcome {
            stage,
            status,
            seconds,
        });
        if let Err(message) = result {
            failure = Some((stage, message));
        }
    }

    println!();
    print!("{}", report.table(started.elapsed().as_secs_f64()));
    match failure {
        None => ExitCode::SUCCESS,
        Some((stage, message)) => {
            eprintln!("\nxtask: stage `{}` failed: {message}", stage.name());
            ExitCode::FAILURE
        }
    }
}
