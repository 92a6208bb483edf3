//! The main job's output: a table a person reads at a glance, the same
//! figures as JSON, and memory over time as an SVG plot.

use std::fmt::Write as _;

use crate::scenario::{Config, Policy, PolicyReport};

/// What a policy's run produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It ran.
    Ran(Box<PolicyReport>),
    /// It cannot run yet (the reason).
    Unavailable(Policy, &'static str),
}

fn pct(per_mille: u64) -> String {
    format!("{}.{}%", per_mille / 10, per_mille % 10)
}

fn mib(pages: u64) -> String {
    format!("{} MiB", pages / 256)
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The rows of the table: label and one cell per policy.
fn rows(outcomes: &[Outcome]) -> Vec<(&'static str, Vec<String>)> {
    type Cell = fn(&PolicyReport) -> String;
    let metrics: [(&'static str, Cell); 14] = [
        ("memory utilization (working set / guest RAM)", |r| {
            pct(r.utilization_per_mille)
        }),
        ("memory held by guests", |r| pct(r.allocated_per_mille)),
        ("guest page-fault (miss) rate", |r| pct(r.miss_per_mille())),
        ("swap-to-disk avoided (pages to frontswap)", |r| {
            if r.policy.uses_tmem() {
                count(r.swap_avoided)
            } else {
                "n/a (no tmem)".to_string()
            }
        }),
        ("tmem hit rate (hits / gets)", |r| {
            r.tmem_hit_per_mille().map_or_else(
                || "n/a (no tmem)".to_string(),
                |h| {
                    format!(
                        "{} ({} / {})",
                        pct(h),
                        count(r.tmem_hits),
                        count(r.tmem_gets)
                    )
                },
            )
        }),
        ("disk I/O: swap writes / page reads", |r| {
            format!(
                "{} / {}",
                count(r.stats.swap_disk_writes),
                count(r.stats.disk_reads)
            )
        }),
        ("tmem frames at the end", |r| count(r.final_tmem)),
        ("balloon traffic (in + out)", |r| {
            mib(r.stats.ballooned_in + r.stats.ballooned_out)
        }),
        ("split-driver I/O through grants: writes / reads", |r| {
            format!("{} / {}", count(r.io.writes), count(r.io.reads))
        }),
        ("packets by page flipping: received / dropped", |r| {
            format!("{} / {}", count(r.io.flips), count(r.io.flips_dropped))
        }),
        ("processes created (page-table trees)", |r| {
            count(r.stats.processes)
        }),
        ("hypercalls per second (wall clock)", |r| {
            count(r.hypercalls_per_sec() as u64)
        }),
        ("invariant checks: counters / audits", |r| {
            format!("{} / {}", count(r.counter_checks), r.audits)
        }),
        ("guest pages verified intact (+ in frontswap)", |r| {
            format!("{} + {}", count(r.data_checks), count(r.tmem_checks))
        }),
    ];
    metrics
        .iter()
        .map(|(label, cell)| {
            let cells = outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Ran(r) => cell(r),
                    Outcome::Unavailable(..) => "not offered".to_string(),
                })
                .collect();
            (*label, cells)
        })
        .collect()
}

fn policy_of(o: &Outcome) -> Policy {
    match o {
        Outcome::Ran(r) => r.policy,
        Outcome::Unavailable(p, _) => *p,
    }
}

/// The text report.
#[must_use]
pub fn text(config: &Config, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hvmem-sim: {} scenario, host {} MiB, {} guests overcommitting {:.2}x, {} simulated seconds, seed {}",
        config.scenario.name(),
        config.host_mib,
        config.guests,
        config.overcommit,
        config.steps,
        config.seed
    );
    let _ = writeln!(out);
    let headers: Vec<&str> = outcomes.iter().map(|o| policy_of(o).name()).collect();
    let rows = rows(outcomes);
    let label_w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|(_, c)| c.get(i).map(String::len))
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let _ = write!(out, "{:label_w$}", "");
    for (h, w) in headers.iter().zip(&widths) {
        let _ = write!(out, " | {h:>w$}");
    }
    let _ = writeln!(out);
    let _ = write!(out, "{}", "-".repeat(label_w));
    for w in &widths {
        let _ = write!(out, "-+-{}", "-".repeat(*w));
    }
    let _ = writeln!(out);
    for (label, cells) in &rows {
        let _ = write!(out, "{label:label_w$}");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(out, " | {c:>w$}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    for o in outcomes {
        match o {
            Outcome::Unavailable(p, why) => {
                let _ = writeln!(out, "{}: {why}.", p.name());
            }
            Outcome::Ran(r) => {
                let guests: u64 = r.final_pages.iter().sum();
                let _ = writeln!(
                    out,
                    "{}: at the end guests hold {} + free {} + tmem {} + hypervisor {} = {} frames (host has {}); wall time {:.2} s",
                    r.policy.name(),
                    guests,
                    r.final_free,
                    r.final_tmem,
                    r.host_frames,
                    guests + r.final_free + r.final_tmem + r.host_frames,
                    r.total_frames,
                    r.wall_secs
                );
            }
        }
    }
    out
}

/// `s` as a JSON string literal.
#[must_use]
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(values: impl Iterator<Item = u64>) -> String {
    let items: Vec<String> = values.map(|v| v.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// The JSON report: the same figures, plus the timeline.
#[must_use]
pub fn json(config: &Config, outcomes: &[Outcome]) -> String {
    let mut policies = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Unavailable(p, why) => policies.push(format!(
                "{{\"policy\":{},\"available\":false,\"reason\":{}}}",
                json_string(p.name()),
                json_string(why)
            )),
            Outcome::Ran(r) => {
                let timeline: Vec<String> = r
                    .timeline
                    .iter()
                    .map(|s| {
                        format!(
                            "{{\"second\":{},\"free\":{},\"tmem\":{},\"pages\":{}}}",
                            s.second,
                            s.free,
                            s.tmem,
                            json_list(s.pages.iter().copied())
                        )
                    })
                    .collect();
                policies.push(format!(
                    concat!(
                        "{{\"policy\":{},\"available\":true,\"guest_frames\":{},",
                        "\"utilization_per_mille\":{},\"allocated_per_mille\":{},",
                        "\"accesses\":{},\"misses\":{},\"miss_per_mille\":{},",
                        "\"swap_to_disk_avoided\":{},\"tmem_hits\":{},\"tmem_gets\":{},",
                        "\"tmem_checks\":{},\"disk_reads\":{},\"swap_disk_writes\":{},\"final_tmem\":{},",
                        "\"io_writes\":{},\"io_reads\":{},\"io_flips\":{},\"io_flips_dropped\":{},",
                        "\"ballooned_in_pages\":{},\"ballooned_out_pages\":{},",
                        "\"processes\":{},\"hypercalls\":{},\"hypercalls_per_sec\":{:.0},",
                        "\"counter_checks\":{},\"audits\":{},\"data_checks\":{},",
                        "\"wall_secs\":{:.3},\"final_pages\":{},\"final_free\":{},",
                        "\"host_frames\":{},\"total_frames\":{},\"timeline\":[{}]}}"
                    ),
                    json_string(r.policy.name()),
                    r.guest_frames,
                    r.utilization_per_mille,
                    r.allocated_per_mille,
                    r.stats.accesses,
                    r.stats.misses,
                    r.miss_per_mille(),
                    r.swap_avoided,
                    r.tmem_hits,
                    r.tmem_gets,
                    r.tmem_checks,
                    r.stats.disk_reads,
                    r.stats.swap_disk_writes,
                    r.final_tmem,
                    r.io.writes,
                    r.io.reads,
                    r.io.flips,
                    r.io.flips_dropped,
                    r.stats.ballooned_in,
                    r.stats.ballooned_out,
                    r.stats.processes,
                    r.stats.hypercalls,
                    r.hypercalls_per_sec(),
                    r.counter_checks,
                    r.audits,
                    r.data_checks,
                    r.wall_secs,
                    json_list(r.final_pages.iter().copied()),
                    r.final_free,
                    r.host_frames,
                    r.total_frames,
                    timeline.join(",")
                ));
            }
        }
    }
    format!(
        "{{\"scenario\":{},\"host_mib\":{},\"guests\":{},\"overcommit\":{},\"seed\":{},\"steps\":{},\"policies\":[{}]}}\n",
        json_string(config.scenario.name()),
        config.host_mib,
        config.guests,
        config.overcommit,
        config.seed,
        config.steps,
        policies.join(",")
    )
}

/// A colour per guest (and grey for free memory).
fn colour(i: usize) -> &'static str {
    const C: [&str; 10] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    C.get(i % C.len()).copied().unwrap_or("#000000")
}

/// Memory over time, one panel per policy that ran: each guest's pages as
/// a line, the host's free memory dashed, tmem's frames dotted (policies
/// with tmem).
#[must_use]
pub fn svg(config: &Config, outcomes: &[Outcome]) -> String {
    let ran: Vec<&PolicyReport> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Ran(r) => Some(&**r),
            Outcome::Unavailable(..) => None,
        })
        .collect();
    let (w, panel_h, left, top, gap) = (900.0, 260.0, 70.0, 50.0, 60.0);
    let plot_w = w - left - 160.0;
    let plot_h = panel_h - 40.0;
    let height = top + (panel_h + gap) * ran.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"24\" font-size=\"16\">hvmem-sim: memory per domain over time ({} MiB host, {} guests, {:.2}x overcommit, seed {})</text>",
        config.host_mib, config.guests, config.overcommit, config.seed
    );
    for (p, r) in ran.iter().enumerate() {
        let y0 = top + (panel_h + gap) * p as f64;
        let max_pages = r
            .timeline
            .iter()
            .flat_map(|x| x.pages.iter().copied().chain([x.free, x.tmem]))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let last = r.timeline.last().map_or(1, |x| x.second).max(1) as f64;
        let x = |sec: u64| left + plot_w * sec as f64 / last;
        let y = |pages: u64| y0 + 20.0 + plot_h * (1.0 - pages as f64 / max_pages);
        let _ = writeln!(
            s,
            "<text x=\"{left}\" y=\"{}\" font-size=\"14\">{}</text>",
            y0 + 12.0,
            r.policy.name()
        );
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#888\"/>",
            y0 + 20.0
        );
        for frac in [0.0, 0.5, 1.0] {
            let pages = (max_pages * frac) as u64;
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{} MiB</text>",
                left - 6.0,
                y(pages) + 4.0,
                pages / 256
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">simulated seconds (0..{})</text>",
            left + plot_w / 2.0,
            y0 + 20.0 + plot_h + 16.0,
            last as u64
        );
        let guests = r.timeline.first().map_or(0, |x| x.pages.len());
        let lines = guests + 1 + usize::from(r.policy.uses_tmem());
        for g in 0..lines {
            let points: Vec<String> = r
                .timeline
                .iter()
                .map(|t| {
                    let v = match g.checked_sub(guests) {
                        Some(0) => t.free,
                        Some(_) => t.tmem,
                        None => t.pages.get(g).copied().unwrap_or(0),
                    };
                    format!("{:.1},{:.1}", x(t.second), y(v))
                })
                .collect();
            let (stroke, dash, label) = match g.checked_sub(guests) {
                Some(0) => ("#444", " stroke-dasharray=\"5,3\"", "host free".to_string()),
                Some(_) => ("#000", " stroke-dasharray=\"1,2\"", "tmem".to_string()),
                None => (colour(g), "", format!("guest d{}", g + 1)),
            };
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{stroke}\" stroke-width=\"1.5\"{dash} points=\"{}\"/>",
                points.join(" ")
            );
            let ly = y0 + 30.0 + 14.0 * g as f64;
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{stroke}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
                left + plot_w + 10.0,
                left + plot_w + 30.0,
                left + plot_w + 36.0,
                ly + 4.0
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(1_234_567), "1 234 567");
        assert_eq!(count(12), "12");
    }
}
