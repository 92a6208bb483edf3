//! Child processes: build a command, echo it, run it with its output streamed.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

/// Environment variable capping cargo's parallelism in every child.
const JOBS_VAR: &str = "CARGO_BUILD_JOBS";

/// The cap used when the caller has not set [`JOBS_VAR`]: CI has two cores.
const JOBS_DEFAULT: &str = "2";

/// One command a stage runs, in the workspace root, never reading stdin.
#[derive(Debug)]
pub struct Step {
    /// The process to run.
    command: Command,
}

impl Step {
    /// A `cargo` invocation (through the rustup proxy, so `+nightly` works).
    pub fn cargo(root: &Path) -> Self {
        Self::new("cargo", root)
    }

    /// A `rustup` invocation.
    pub fn rustup(root: &Path) -> Self {
        Self::new("rustup", root)
    }

    /// A command running `program` in `root`, with the parallelism cap applied.
    fn new(program: &str, root: &Path) -> Self {
        let mut command = Command::new(program);
        command.current_dir(root).stdin(Stdio::null());
        if std::env::var_os(JOBS_VAR).is_none() {
            command.env(JOBS_VAR, JOBS_DEFAULT);
        }
        Self { command }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable on the child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    /// Sets an environment variable on the child unless the caller already set it.
    pub fn env_default(self, key: &str, value: &str) -> Self {
        if std::env::var_os(key).is_some() {
            self
        } else {
            self.env(key, value)
        }
    }

    /// Sets an environment variable on the child to the caller's value (if
    /// any) followed by `extra`, space-separated, as flag variables expect.
    pub fn env_append(self, key: &str, extra: &str) -> Self {
        match std::env::var(key) {
            Ok(current) if !current.trim().is_empty() => {
                let value = format!("{current} {extra}");
                self.env(key, &value)
            }
            _ => self.env(key, extra),
        }
    }

    /// Echoes the command, runs it with inherited output and checks its status.
    pub fn run(mut self) -> Result<(), String> {
        let line = self.to_string();
        println!("$ {line}");
        let status = self
            .command
            .status()
            .map_err(|error| format!("cannot start `{line}`: {error}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{line}` failed ({status})"))
        }
    }

    /// Runs the command with its standard output and error written
    /// together, in the order written, to the file `log` (created or
    /// truncated), then reads them back: for a stage that runs several
    /// commands at once and prints each one's output as a block.
    pub fn run_captured(mut self, log: &Path) -> Captured {
        let line = self.to_string();
        let (output, result) = match self.capture_into(&line, log) {
            Ok((output, status)) if status.success() => (output, Ok(())),
            Ok((output, status)) => (output, Err(format!("`{line}` failed ({status})"))),
            Err(message) => (String::new(), Err(message)),
        };
        Captured {
            line,
            output,
            result,
        }
    }

    /// Runs the command with both output streams into `log` and returns
    /// what it wrote with its exit status.
    fn capture_into(&mut self, line: &str, log: &Path) -> Result<(String, ExitStatus), String> {
        let cannot = |error: std::io::Error| format!("`{line}` (log {}): {error}", log.display());
        let file = File::create(log).map_err(cannot)?;
        let errors = file.try_clone().map_err(cannot)?;
        let status = self
            .command
            .stdout(file)
            .stderr(errors)
            .status()
            .map_err(cannot)?;
        let output = std::fs::read(log).map_err(cannot)?;
        Ok((String::from_utf8_lossy(&output).into_owned(), status))
    }

    /// Runs the command quietly and returns its standard output.
    pub fn capture(mut self) -> Result<String, String> {
        let line = self.to_string();
        let output = self
            .command
            .stderr(Stdio::inherit())
            .output()
            .map_err(|error| format!("cannot start `{line}`: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("`{line}` failed ({})", output.status))
        }
    }
}

/// What [`Step::run_captured`] saw: the echoed command line, everything the
/// command wrote, and whether it succeeded.
#[derive(Debug)]
pub struct Captured {
    /// The command as a shell line.
    pub line: String,
    /// Standard output and error, interleaved as written.
    pub output: String,
    /// `Err` with a message when the command could not run or failed.
    pub result: Result<(), String>,
}

impl fmt::Display for Step {
    /// Shows the command as a shell line, with the variables a stage set in front.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in self.command.get_envs() {
            if key == JOBS_VAR {
                continue;
            }
            if let Some(value) = value {
                write!(f, "{}={} ", key.to_string_lossy(), quoted(value))?;
            }
        }
        write!(f, "{}", quoted(self.command.get_program()))?;
        for arg in self.command.get_args() {
            write!(f, " {}", quoted(arg))?;
        }
        Ok(())
    }
}

/// A word as it would be typed in a shell: single-quoted if it holds a space
/// (the echoed lines can then be pasted to rerun a step).
fn quoted(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if word.is_empty() || word.contains(char::is_whitespace) {
        format!("'{}'", word.replace('\'', "'\\''"))
    } else {
        word.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_quotes_words_with_spaces() {
        let step = Step::cargo(Path::new("."))
            .args(["doc", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            step.to_string(),
            "RUSTDOCFLAGS='-D warnings' cargo doc --no-deps"
        );
    }
}
