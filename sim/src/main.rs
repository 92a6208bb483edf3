//! The main job: `cargo run --release -p hvmem-sim`.
//!
//! Runs a consolidation scenario under every memory policy and prints a
//! report; `attack` runs the malicious-guest campaign. `--help` lists the
//! options.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use hvmem_sim::attack::{self, Campaign};
use hvmem_sim::report::{self, Outcome};
use hvmem_sim::scenario::{self, Config, Policy, Scenario};

const USAGE: &str = "\
usage: hvmem-sim [OPTIONS]              run the consolidation scenario under every policy
       hvmem-sim attack [--seed N] [--steps M] [--host-mib N] [--guests N]
                                        run the malicious-guest campaign

options:
  --host-mib N       host memory in MiB (16..=65536, default 4096)
  --guests N         honest guests (1..=62, default 8)
  --overcommit F     sum of guests' maxima / guest memory (1.0..=8.0, default 1.5)
  --seed N           workload seed (default 1)
  --scenario NAME    consolidation | churn (default consolidation)
  --steps N          simulated seconds (default 2400; attack: hostile hypercalls, default 100000)
  --json             print the report as JSON instead of a table
  --plot FILE.svg    also write memory over time per domain and policy as SVG
  -h, --help         this text
";

#[derive(Debug, Default)]
struct Args {
    attack: bool,
    json: bool,
    plot: Option<String>,
    config: Config,
    attack_steps: Option<u64>,
}

fn value<T: std::str::FromStr>(name: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{name} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{name}: {v:?} is not a valid value"))
}

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut out = Args::default();
    let mut args = args.peekable();
    if args.peek().map(String::as_str) == Some("attack") {
        out.attack = true;
        args.next();
    }
    let mut steps = None;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut next = || inline.clone().or_else(|| args.next());
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--host-mib" => out.config.host_mib = value(&name, next())?,
            "--guests" => out.config.guests = value(&name, next())?,
            "--overcommit" => out.config.overcommit = value(&name, next())?,
            "--seed" => out.config.seed = value(&name, next())?,
            "--steps" => steps = Some(value::<u64>(&name, next())?),
            "--scenario" => {
                let v: String = value(&name, next())?;
                out.config.scenario = Scenario::ALL
                    .into_iter()
                    .find(|s| s.name() == v)
                    .ok_or_else(|| {
                        format!("--scenario: unknown scenario {v:?} (consolidation, churn)")
                    })?;
            }
            "--json" => out.json = true,
            "--plot" => out.plot = Some(value(&name, next())?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if out.attack {
        out.attack_steps = steps;
    } else if let Some(s) = steps {
        out.config.steps = s;
    }
    Ok(Some(out))
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    on: bool,
    total: u64,
    label: String,
    shown: u64,
}

impl Progress {
    fn new(total: u64, label: String) -> Self {
        Self {
            on: std::io::stderr().is_terminal(),
            total: total.max(1),
            label,
            shown: u64::MAX,
        }
    }

    fn tick(&mut self, done: u64) {
        if !self.on {
            return;
        }
        let pct = (done + 1) * 100 / self.total;
        if pct == self.shown {
            return;
        }
        self.shown = pct;
        let filled = usize::try_from(pct * 30 / 100).unwrap_or(30);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{:<24} [{}{}] {pct:>3}%",
            self.label,
            "#".repeat(filled),
            " ".repeat(30 - filled.min(30))
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r{}\r", " ".repeat(64));
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly
/// instead of panicking.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn run(args: &Args) -> Result<(), String> {
    args.config.validate().map_err(|e| e.to_string())?;
    if args.attack {
        let campaign = Campaign {
            host_mib: args.config.host_mib,
            guests: args.config.guests,
            seed: args.config.seed,
            steps: args.attack_steps.unwrap_or(100_000),
        };
        let mut bar = Progress::new(campaign.steps, "attack".to_string());
        let summary = attack::run(&campaign, &mut |i| bar.tick(i)).map_err(|e| e.to_string())?;
        bar.finish();
        emit(&summary.to_string());
        return Ok(());
    }
    let mut outcomes = Vec::new();
    for policy in Policy::ALL {
        if let Some(why) = policy.unavailable() {
            outcomes.push(Outcome::Unavailable(policy, why));
            continue;
        }
        let mut bar = Progress::new(args.config.steps, policy.name().to_string());
        let r = scenario::run(&args.config, policy, &mut |i| bar.tick(i))
            .map_err(|e| format!("{}: {e}", policy.name()))?;
        bar.finish();
        outcomes.push(Outcome::Ran(Box::new(r)));
    }
    if args.json {
        emit(&report::json(&args.config, &outcomes));
    } else {
        emit(&report::text(&args.config, &outcomes));
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report::svg(&args.config, &outcomes))
            .map_err(|e| format!("--plot {path}: {e}"))?;
        if !args.json {
            emit(&format!("plot written to {path}\n"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok(None) => {
            emit(USAGE);
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hvmem-sim: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("hvmem-sim: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>, String> {
        parse(list.iter().map(|s| (*s).to_string()))
    }

    #[test]
    fn options_set_the_config() {
        let a = args(&[
            "--host-mib",
            "512",
            "--guests=4",
            "--overcommit",
            "2",
            "--steps",
            "9",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (a.config.host_mib, a.config.guests, a.config.steps),
            (512, 4, 9)
        );
        assert!((a.config.overcommit - 2.0).abs() < f64::EPSILON);
        let a = args(&["attack", "--seed", "3", "--steps", "50"])
            .unwrap()
            .unwrap();
        assert!(a.attack);
        assert_eq!((a.config.seed, a.attack_steps), (3, Some(50)));
        assert!(args(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn bad_options_are_named_in_the_error() {
        assert!(
            args(&["--guests", "many"])
                .unwrap_err()
                .contains("--guests")
        );
        assert!(args(&["--seed"]).unwrap_err().contains("needs a value"));
        assert!(
            args(&["--frobnicate"])
                .unwrap_err()
                .contains("--frobnicate")
        );
        assert!(
            args(&["--scenario", "nope"])
                .unwrap_err()
                .contains("unknown scenario")
        );
        let a = args(&["--guests", "0"]).unwrap().unwrap();
        assert!(run(&a).unwrap_err().contains("--guests"));
    }
}
