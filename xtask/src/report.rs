//! The closing table: each stage with its status and wall time.

use std::fmt::Write as _;

use crate::stage::Stage;

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The stage passed.
    Ok,
    /// The stage failed; the run stopped here.
    Failed,
    /// An earlier stage failed, so this one did not run.
    NotRun,
}

impl Status {
    /// The word shown in the table.
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "FAILED",
            Self::NotRun => "not run",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The stage.
    pub stage: Stage,
    /// How it ended.
    pub status: Status,
    /// Wall time in seconds, if it ran.
    pub seconds: Option<f64>,
}

/// The rows collected so far.
#[derive(Debug, Default)]
pub struct Report {
    /// One row per selected stage, in run order.
    outcomes: Vec<Outcome>,
}

impl Report {
    /// Adds a row.
    pub fn push(&mut self, outcome: Outcome) {
        self.outcomes.push(outcome);
    }

    /// The table, ending with the total wall time of the run.
    pub fn table(&self, total_seconds: f64) -> String {
        let mut table = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(table, "{:<12} {:<8} time", "stage", "status");
        for outcome in &self.outcomes {
            let time = outcome
                .seconds
                .map_or_else(|| "-".to_owned(), |seconds| format!("{seconds:.1}s"));
            let _ = writeln!(
                table,
                "{:<12} {:<8} {time}",
                outcome.stage.name(),
                outcome.status.label()
            );
        }
        let _ = writeln!(table, "{:<12} {:<8} {total_seconds:.1}s", "total", "");
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        let mut report = Report::default();
        report.push(Outcome {
            stage: Stage::Fmt,
            status: Status::Ok,
            seconds: Some(0.42),
        });
        report.push(Outcome {
            stage: Stage::Clippy,
            status: Status::Failed,
            seconds: Some(3.0),
        });
        report.push(Outcome {
            stage: Stage::FuzzReplay,
            status: Status::NotRun,
            seconds: None,
        });
        let expected = "\
stage        status   time
fmt          ok       0.4s
clippy       FAILED   3.0s
fuzz-replay  not run  -
total                 123.4s
";
        assert_eq!(report.table(123.4), expected);
    }
}
