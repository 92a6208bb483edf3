//! `cargo xtask bench-summary`: criterion's output as one markdown table.
//!
//! Criterion leaves, for every function of every group it ran,
//! `target/criterion/<group>/<function>/new/benchmark.json` (names and
//! throughput) and `new/estimates.json` (the statistics). This reads the
//! median of each, sorts the functions of a group into hvmem's, its peers'
//! and the physical floors', and writes one row per hvmem function: its
//! median, the best peer's, the ratio between them, and the floor. The table
//! goes to `benches/RESULTS.md` with the machine and commit it came from.
//!
//! Names decide the roles: a function whose name starts with `hvmem` (or is
//! `frametable`) is hvmem's; one that starts with `floor`, `atomic` or
//! `memcpy` is a floor; any other is a peer. A group with no hvmem function
//! (every function is one of hvmem's workloads, as in the balloon bench) gives
//! one row per function.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One criterion function's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The group (the workload).
    pub group: String,
    /// The function (the crate or floor).
    pub function: String,
    /// Criterion's median time per iteration, in nanoseconds.
    pub median_ns: f64,
    /// Elements per iteration, when the group declared a throughput.
    pub elements: Option<u64>,
}

impl Measurement {
    /// Median time per element (per iteration without a throughput).
    fn per_element(&self) -> f64 {
        self.median_ns / self.elements.unwrap_or(1).max(1) as f64
    }
}

/// What a function is to the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// One of hvmem's crates.
    Hvmem,
    /// A peer crate from crates.io.
    Peer,
    /// A physical floor (a bare atomic, a memcpy).
    Floor,
}

/// The role a function's name gives it.
fn role(function: &str) -> Role {
    if function.starts_with("hvmem") || function == "frametable" {
        Role::Hvmem
    } else if ["floor", "atomic", "memcpy"]
        .iter()
        .any(|p| function.starts_with(p))
    {
        Role::Floor
    } else {
        Role::Peer
    }
}

/// The string value of `"key":"value"` in a small JSON document.
fn json_string(doc: &str, key: &str) -> Option<String> {
    let at = doc.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let rest = doc.get(at..)?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// The first number after `"key":` at or after the first `"section"`.
fn json_number_in(doc: &str, section: &str, key: &str) -> Option<f64> {
    let start = doc.find(&format!("\"{section}\""))?;
    let rest = doc.get(start..)?;
    let at = rest.find(&format!("\"{key}\":"))? + key.len() + 3;
    let tail = rest.get(at..)?.trim_start();
    let end = tail
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(tail.len());
    tail.get(..end)?.parse().ok()
}

/// The name of a bench inside its group: its function, its parameter
/// (`BenchmarkId::from_parameter` leaves the function null), or both.
fn function_name(benchmark: &str) -> Option<String> {
    match (
        json_string(benchmark, "function_id"),
        json_string(benchmark, "value_str"),
    ) {
        (Some(function), Some(value)) => Some(format!("{function}/{value}")),
        (Some(name), None) | (None, Some(name)) => Some(name),
        (None, None) => None,
    }
}

/// Reads one function's directory (the one holding `new/`).
fn read_measurement(dir: &Path) -> Option<Measurement> {
    let benchmark = fs::read_to_string(dir.join("new/benchmark.json")).ok()?;
    let estimates = fs::read_to_string(dir.join("new/estimates.json")).ok()?;
    Some(Measurement {
        group: json_string(&benchmark, "group_id")?,
        function: function_name(&benchmark)?,
        median_ns: json_number_in(&estimates, "median", "point_estimate")?,
        elements: json_number_in(&benchmark, "throughput", "Elements").map(|e| e as u64),
    })
}

/// Every measurement under `criterion` (criterion's output directory).
pub fn collect(criterion: &Path) -> Vec<Measurement> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = vec![criterion.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || path.file_name().is_some_and(|n| n == "report") {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some(m) = read_measurement(&dir) {
                    found.push(m);
                }
            } else {
                stack.push(path);
            }
        }
    }
    found.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    found
}

/// A time in ns, in the unit that reads best.
fn time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns >= 10.0 {
        format!("{ns:.1} ns")
    } else {
        format!("{ns:.2} ns")
    }
}

/// The markdown table of `measurements`.
pub fn table(measurements: &[Measurement]) -> String {
    let mut out = String::from(
        "| workload (criterion group) | hvmem | median per op | best peer | its median | hvmem / best peer | floor | hvmem / floor |\n\
         |---|---|---:|---|---:|---:|---|---:|\n",
    );
    let mut groups: Vec<&str> = measurements.iter().map(|m| m.group.as_str()).collect();
    groups.dedup();
    for group in groups {
        let members: Vec<&Measurement> = measurements.iter().filter(|m| m.group == group).collect();
        let best = |r: Role| {
            members
                .iter()
                .filter(|m| role(&m.function) == r)
                .min_by(|a, b| a.per_element().total_cmp(&b.per_element()))
                .copied()
        };
        let (peer, floor) = (best(Role::Peer), best(Role::Floor));
        let mut ours: Vec<&Measurement> = members
            .iter()
            .filter(|m| role(&m.function) == Role::Hvmem)
            .copied()
            .collect();
        let (peer, floor) = if ours.is_empty() {
            // Every function is one of hvmem's workloads.
            ours = members.clone();
            (None, None)
        } else {
            (peer, floor)
        };
        for m in ours {
            let ratio = |other: Option<&Measurement>| {
                other.map_or_else(
                    || "-".to_owned(),
                    |o| format!("{:.2}", m.per_element() / o.per_element()),
                )
            };
            let _ = writeln!(
                out,
                "| {group} | {} | {} | {} | {} | {} | {} | {} |",
                m.function,
                time(m.per_element()),
                peer.map_or("-", |p| p.function.as_str()),
                peer.map_or_else(|| "-".to_owned(), |p| time(p.per_element())),
                ratio(peer),
                floor.map_or_else(
                    || "-".to_owned(),
                    |f| format!("{} {}", f.function, time(f.per_element()))
                ),
                ratio(floor),
            );
        }
    }
    out
}

/// One line of a command's output, or `unknown`.
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What the numbers were measured on.
fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "{cpu}, {cores} cores; load average {load} when summarised; commit {}; {}",
        command_line("git", &["rev-parse", "--short", "HEAD"]),
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

/// Reads `root/target/criterion`, writes `root/benches/RESULTS.md`, and
/// prints the table.
pub fn run(root: &Path) -> Result<(), String> {
    let criterion = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("criterion");
    let measurements = collect(&criterion);
    if measurements.is_empty() {
        return Err(format!(
            "no criterion results under {}: run `cargo bench -p hvmem-benches` first",
            criterion.display()
        ));
    }
    let table = table(&measurements);
    let doc = format!(
        "# Bench results\n\n\
         Written by `cargo xtask bench-summary` from criterion's last run of\n\
         `cargo bench -p hvmem-benches` (median per operation: per element when the\n\
         group declares a throughput, else per iteration; a ratio below 1 means\n\
         hvmem is faster).\n\n\
         Measured on: {}.\n\n{table}",
        machine()
    );
    let out = root.join("benches/RESULTS.md");
    fs::write(&out, doc).map_err(|e| format!("{}: {e}", out.display()))?;
    print!("{table}");
    println!("\nwritten to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decide_roles() {
        assert_eq!(role("hvmem-buddy+hot"), Role::Hvmem);
        assert_eq!(role("frametable"), Role::Hvmem);
        assert_eq!(role("atomic_fetch_add_fetch_sub"), Role::Floor);
        assert_eq!(role("memcpy_4k"), Role::Floor);
        assert_eq!(role("buddy-alloc"), Role::Peer);
    }

    #[test]
    fn criterion_json_fields_are_read() {
        let benchmark = r#"{"group_id":"single_frame","function_id":"hvmem-buddy","value_str":null,"throughput":{"Elements":2},"full_id":"x"}"#;
        let estimates = r#"{"mean":{"confidence_interval":{"lower_bound":1.0},"point_estimate":9.0},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":3.0,"upper_bound":5.0},"point_estimate":4.5,"standard_error":0.1}}"#;
        assert_eq!(
            json_string(benchmark, "group_id").as_deref(),
            Some("single_frame")
        );
        assert_eq!(
            json_number_in(estimates, "median", "point_estimate"),
            Some(4.5)
        );
        let dir = std::env::temp_dir().join(format!("xtask-summary-{}", std::process::id()));
        let new = dir.join("g/f/new");
        fs::create_dir_all(&new).unwrap();
        fs::write(new.join("benchmark.json"), benchmark).unwrap();
        fs::write(new.join("estimates.json"), estimates).unwrap();
        let found = collect(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            vec![Measurement {
                group: "single_frame".into(),
                function: "hvmem-buddy".into(),
                median_ns: 4.5,
                elements: Some(2),
            }]
        );
    }

    #[test]
    fn a_bench_is_named_by_its_function_its_parameter_or_both() {
        let parameter =
            r#"{"group_id":"audit","function_id":null,"value_str":"1024","throughput":null}"#;
        let both =
            r#"{"group_id":"audit","function_id":"full","value_str":"64","throughput":null}"#;
        let function = r#"{"group_id":"get_put","function_id":"frametable","value_str":null}"#;
        assert_eq!(function_name(parameter).as_deref(), Some("1024"));
        assert_eq!(function_name(both).as_deref(), Some("full/64"));
        assert_eq!(function_name(function).as_deref(), Some("frametable"));
        assert_eq!(function_name(r#"{"group_id":"g"}"#), None);
    }

    #[test]
    fn the_table_compares_with_the_best_peer_and_the_floor() {
        let m = |f: &str, ns: f64| Measurement {
            group: "w".into(),
            function: f.into(),
            median_ns: ns,
            elements: None,
        };
        let t = table(&[
            m("hvmem-x", 10.0),
            m("peer-a", 40.0),
            m("peer-b", 20.0),
            m("floor", 5.0),
        ]);
        assert!(
            t.contains(
                "| w | hvmem-x | 10.0 ns | peer-b | 20.0 ns | 0.50 | floor 5.00 ns | 2.00 |"
            ),
            "{t}"
        );
    }
}
