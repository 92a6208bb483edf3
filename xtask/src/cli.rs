//! The command line: subcommands and the stage selection of `test`.

use crate::stage::Stage;

/// Usage text shown by `help` and after a command-line error.
pub const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test                      run every stage in order; stop at the first failure
  test --only <s>[,<s>...]  run only the named stages (in the usual order)
  test --skip <s>[,<s>...]  run every stage except the named ones
  stages                    list the stages
  bench-summary             turn criterion's last results into benches/RESULTS.md
  help                      show this text";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Cli {
    /// `test`: run the selected stages.
    Test(Vec<Stage>),
    /// `stages`: list the stages.
    Stages,
    /// `bench-summary`: criterion's results as one markdown table.
    BenchSummary,
    /// `help`: show the usage.
    Help,
}

impl Cli {
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let Some((command, rest)) = args.split_first() else {
            return Ok(Self::Help);
        };
        match command.as_str() {
            "test" => parse_selection(rest).map(Self::Test),
            "stages" if rest.is_empty() => Ok(Self::Stages),
            "bench-summary" if rest.is_empty() => Ok(Self::BenchSummary),
            "help" | "--help" | "-h" => Ok(Self::Help),
            "stages" => Err(format!(
                "`stages` takes no arguments, got `{}`",
                rest.join(" ")
            )),
            other => Err(format!("unknown command `{other}`")),
        }
    }
}

/// Parses `--only` / `--skip` options into the stages to run, in pipeline order.
fn parse_selection(args: &[String]) -> Result<Vec<Stage>, String> {
    let mut only: Option<Vec<Stage>> = None;
    let mut skip: Vec<Stage> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        if flag != "--only" && flag != "--skip" {
            return Err(format!("unknown option `{arg}` for `test`"));
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .cloned()
                .ok_or_else(|| format!("`{flag}` needs a stage list"))?,
        };
        let stages = parse_stage_list(&value)?;
        if flag == "--only" {
            only.get_or_insert_with(Vec::new).extend(stages);
        } else {
            skip.extend(stages);
        }
    }
    let selected: Vec<Stage> = Stage::ALL
        .into_iter()
        .filter(|stage| only.as_ref().is_none_or(|only| only.contains(stage)))
        .filter(|stage| !skip.contains(stage))
        .collect();
    if selected.is_empty() {
        return Err("the selection leaves no stage to run".to_owned());
    }
    Ok(selected)
}

/// Parses a comma-separated list of stage names.
fn parse_stage_list(list: &str) -> Result<Vec<Stage>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Stage::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Stage::ALL.iter().map(|stage| stage.name()).collect();
                format!("unknown stage `{name}` (stages: {})", known.join(", "))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns string literals into owned arguments.
    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn plain_test_runs_every_stage() {
        assert_eq!(
            Cli::parse(&args(&["test"])),
            Ok(Cli::Test(Stage::ALL.to_vec()))
        );
    }

    #[test]
    fn only_keeps_pipeline_order() {
        let cli = Cli::parse(&args(&["test", "--only", "no_std,fmt"]));
        assert_eq!(cli, Ok(Cli::Test(vec![Stage::Fmt, Stage::NoStd])));
    }

    #[test]
    fn skip_and_inline_values() {
        let cli = Cli::parse(&args(&["test", "--only=fmt,miri,loom", "--skip=miri"]));
        assert_eq!(cli, Ok(Cli::Test(vec![Stage::Fmt, Stage::Loom])));
    }

    #[test]
    fn rejects_unknown_stage_and_empty_selection() {
        assert!(Cli::parse(&args(&["test", "--only", "lint"])).is_err());
        assert!(Cli::parse(&args(&["test", "--only", "fmt", "--skip", "fmt"])).is_err());
        assert!(Cli::parse(&args(&["test", "--only"])).is_err());
        assert!(Cli::parse(&args(&["frobnicate"])).is_err());
    }
}
