//! The report: the figures in the order measured, the ratios between them, and `bench.md`.

use crate::BenchArgs;
use crate::sandbox::{DEV_SAVES, LANGUAGES};
use handler_host::stats::percentile;
use serde::Serialize;
use std::time::Duration;

/// One reported figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub id: &'static str,
    pub what: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// Every run's value, for judging the spread.
    pub runs: Vec<f64>,
    /// Other statistics (percentiles) as (name, value).
    pub detail: Vec<(String, f64)>,
    pub conditions: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) command: String,
    pub(crate) machine: String,
    pub(crate) runs: usize,
    pub(crate) seconds_per_run: f64,
    pub(crate) concurrency: usize,
    pub(crate) figures: Vec<Figure>,
    pub(crate) ratios: Vec<(String, f64)>,
    pub(crate) peak_rss_mib: f64,
}

/// The ratios reported, as (name, figure over, figure under).
pub(crate) const RATIOS: &[(&str, &str, &str)] = &[
    ("P1 / B0-FULL", "P1", "B0-FULL"),
    ("P1 / B2", "P1", "B2"),
    ("P1-HTTP / B0-FULL", "P1-HTTP", "B0-FULL"),
    ("P1 / P2-native (WASM tax)", "P1", "P2-native"),
    (
        "P1-kept / P2-native (WASM tax, instances kept)",
        "P1-kept",
        "P2-native",
    ),
    ("P3 / B1", "P3", "B1"),
    ("P4-backlog / B0-FULL", "P4-backlog", "B0-FULL"),
    ("H1 / P4-backlog", "H1", "P4-backlog"),
    ("P4-sched / P4-backlog", "P4-sched", "P4-backlog"),
    ("P4-stream / B0-FULL", "P4-stream", "B0-FULL"),
    ("P4-stream / P1", "P4-stream", "P1"),
    ("P1-pg / B0-pg", "P1-pg", "B0-pg"),
    ("P4-pg / B0-pg", "P4-pg", "B0-pg"),
    ("P1-pg-3 / P1-pg", "P1-pg-3", "P1-pg"),
    ("P4-pg-3 / P4-pg", "P4-pg-3", "P4-pg"),
    ("S1 / P1", "S1", "P1"),
    ("S1-pg / P1-pg", "S1-pg", "P1-pg"),
];

/// The ids of every figure `host bench` measures, in the order it measures them.
pub(crate) fn figure_ids() -> impl Iterator<Item = &'static str> {
    [
        "B0-FULL",
        "B0-NORMAL",
        "B1",
        "P1",
        "P1-kept",
        "P1-HTTP",
        "P2-native",
        "P3",
        "P4-backlog",
        "H1",
        "P4-sched",
        "P4-stream",
        "B2",
        "B0-pg",
        "P1-pg",
        "P4-pg",
        "P1-pg-3",
        "P4-pg-3",
        "P5",
        "S1",
        "S1-pg",
        "R1",
        "R1-run",
    ]
    .into_iter()
    .chain(DEV_SAVES.iter().map(|save| save.id))
    .chain(["P8"])
    .chain(LANGUAGES.iter().map(|language| language.id))
}

/// The figures measured against another of the same run, as (figure, the one it needs): P5
/// runs at half of P1, S1 and S1-pg bisect the rate up to P1 and P1-pg.
const DEPENDENCIES: &[(&str, &str)] = &[("P5", "P1"), ("S1", "P1"), ("S1-pg", "P1-pg")];

/// `only` with the figures its figures are measured against (see [`DEPENDENCIES`]).
pub(crate) fn with_dependencies(mut only: Vec<String>) -> Vec<String> {
    for (figure, needed) in DEPENDENCIES {
        let names = |id: &str| only.iter().any(|o| o.eq_ignore_ascii_case(id));
        if names(figure) && !names(needed) {
            only.push((*needed).to_owned());
        }
    }
    only
}

/// The figures measured so far, in the order of the report.
#[derive(Default)]
pub(crate) struct Table {
    pub(crate) figures: Vec<Figure>,
}

impl Table {
    /// The median of figure `id`, when it was measured.
    pub(crate) fn median(&self, id: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.id == id).map(|f| f.value)
    }
}

/// The values of one figure across runs (each run may carry percentiles).
pub(crate) struct Samples {
    pub(crate) values: Vec<f64>,
    pub(crate) detail: Vec<Vec<(String, f64)>>,
}

impl Samples {
    pub(crate) fn median(&self) -> f64 {
        median(&self.values)
    }

    pub(crate) fn figure(
        &self,
        id: &'static str,
        what: &'static str,
        unit: &'static str,
        conditions: &str,
    ) -> Figure {
        let names: Vec<String> = self
            .detail
            .first()
            .map(|d| d.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        let detail = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    median(&self.detail.iter().map(|d| d[i].1).collect::<Vec<_>>()),
                )
            })
            .collect();
        Figure {
            id,
            what,
            value: self.median(),
            unit,
            runs: self.values.clone(),
            detail,
            conditions: conditions.to_owned(),
        }
    }
}

/// One run's result: the headline value and its percentiles.
pub(crate) struct Run {
    pub(crate) value: f64,
    pub(crate) detail: Vec<(String, f64)>,
}

pub(crate) fn percentiles_us(mut timings: Vec<Duration>) -> Run {
    timings.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Run {
        value: us(percentile(&timings, 50.0)),
        detail: vec![("p99 µs".into(), us(percentile(&timings, 99.0)))],
    }
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if !n.is_multiple_of(2) => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A memory figure of this process from `/proc/self/status`, in MiB: `VmHWM` (the peak
/// resident set) or `VmRSS` (the resident set now); 0 where the file does not exist.
pub(crate) fn process_memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| {
                    l.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with(':'))
                })
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), {}", std::env::consts::ARCH)
}

pub(crate) fn reproduce_command(args: &BenchArgs) -> String {
    format!(
        "host bench --out {} --runs {} --seconds {} --concurrency {}{}{}",
        args.out.display(),
        args.runs,
        args.seconds,
        args.concurrency,
        if args.quick { " --quick" } else { "" },
        if args.only.is_empty() {
            String::new()
        } else {
            format!(" --only {}", args.only.join(","))
        }
    )
}

pub(crate) fn render_markdown(report: &Report) -> String {
    let mut md = String::new();
    md.push_str(&format!("Reproduce: `{}`\n\nMachine: {}; {} run(s) per figure, median shown; throughput runs last {} s.\n\n", report.command, report.machine, report.runs, report.seconds_per_run));
    md.push_str("| id | what | median | unit | runs | detail | conditions |\n|---|---|---:|---|---|---|---|\n");
    for f in &report.figures {
        let runs: Vec<String> = f.runs.iter().map(|v| format!("{v:.1}")).collect();
        let detail: Vec<String> = f
            .detail
            .iter()
            .map(|(n, v)| format!("{n} {v:.2}"))
            .collect();
        md.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |\n",
            f.id,
            f.what,
            f.value,
            f.unit,
            runs.join(", "),
            detail.join("; "),
            f.conditions
        ));
    }
    md.push_str("\n| ratio | value |\n|---|---:|\n");
    for (name, value) in &report.ratios {
        md.push_str(&format!("| {name} | {value:.2} |\n"));
    }
    md.push_str(&format!(
        "\nPeak RSS of the host process during the run: {:.1} MiB\n",
        report.peak_rss_mib
    ));
    md
}

/// Writes `NAME.md` and `NAME.json` into `out` and prints the markdown.
pub(crate) fn write(
    out: &std::path::Path,
    name: &str,
    markdown: &str,
    report: &impl Serialize,
) -> anyhow::Result<()> {
    std::fs::write(out.join(format!("{name}.md")), markdown)?;
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(report)?,
    )?;
    println!("{markdown}");
    Ok(())
}
