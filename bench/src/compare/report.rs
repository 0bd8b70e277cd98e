//! The comparison's outputs: BENCHMARKS.md, the raw JSON, and an SVG chart of ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::paired;
use super::stats::median;
use super::targets::Kind;
use super::Scenario;
use crate::load::Report;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) scenario: &'static str,
    pub(crate) target: Kind,
    pub(crate) round: usize,
    pub(crate) report: Report,
    /// Proxy CPU (user + system) per operation over the run, µs; none for direct.
    pub(crate) cpu_us_per_op: Option<f64>,
    /// The proxy's context switches (every thread, voluntary or not) per operation: its
    /// wake-ups and hand-offs; none for direct.
    pub(crate) switches_per_op: Option<f64>,
}

/// One h2load run (the independent cross-check).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct H2load {
    pub(crate) scenario: &'static str,
    pub(crate) target: Kind,
    pub(crate) requests_per_sec: f64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
}

/// Everything a comparison measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Results {
    pub(crate) machine: BTreeMap<&'static str, String>,
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) duration_s: f64,
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) h2load: Vec<H2load>,
    /// Peak RSS of each proxy over the whole comparison, KiB.
    pub(crate) peak_rss_kib: BTreeMap<&'static str, u64>,
}

/// The medians of one scenario on one target.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) ops_per_sec: f64,
    pub(crate) all: Vec<f64>,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) cpu_us: Option<f64>,
    pub(crate) switches: Option<f64>,
    pub(crate) errors: u64,
}

impl Results {
    pub(crate) fn cell(&self, scenario: &str, target: Kind) -> Option<Cell> {
        let samples: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.scenario == scenario && s.target == target)
            .collect();
        if samples.is_empty() {
            return None;
        }
        let of = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(|s| f(s)).collect());
        let cpu: Vec<f64> = samples.iter().filter_map(|s| s.cpu_us_per_op).collect();
        let switches: Vec<f64> = samples.iter().filter_map(|s| s.switches_per_op).collect();
        Some(Cell {
            ops_per_sec: of(&|s| s.report.ops_per_sec),
            all: samples.iter().map(|s| s.report.ops_per_sec).collect(),
            p50: of(&|s| s.report.latency_us.p50 as f64),
            p99: of(&|s| s.report.latency_us.p99 as f64),
            cpu_us: (!cpu.is_empty()).then(|| median(cpu)),
            switches: (!switches.is_empty()).then(|| median(switches)),
            errors: samples.iter().map(|s| s.report.errors).sum(),
        })
    }

    /// Median throughput of `target` over direct's.
    pub(crate) fn ratio(&self, scenario: &str, target: Kind) -> Option<f64> {
        let direct = self.cell(scenario, Kind::Direct)?.ops_per_sec;
        Some(self.cell(scenario, target)?.ops_per_sec / direct)
    }

    /// The Markdown tables (the analysis around them is written by hand).
    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "### Ratio to direct (median req/s or msg/s)\n");
        let _ = write!(md, "| scenario | goal |");
        for kind in &Kind::ALL[1..] {
            let _ = write!(md, " {} |", kind.name());
        }
        let _ = writeln!(
            md,
            "\n| --- | --- |{}",
            " --- |".repeat(Kind::ALL.len() - 1)
        );
        for scenario in &self.scenarios {
            let goal = scenario.goal.map_or("—".into(), |g| format!("≥ {g:.2}×"));
            let _ = write!(md, "| {} | {goal} |", scenario.name);
            for kind in &Kind::ALL[1..] {
                let cell = self
                    .ratio(scenario.name, *kind)
                    .map_or("—".into(), |r| format!("{r:.2}×"));
                let _ = write!(md, " {cell} |");
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md, "\n{}", self.paired());
        let _ = writeln!(md, "### Every figure (medians of {} rounds)\n", self.rounds);
        let _ = writeln!(
            md,
            "| scenario | target | ops/s | ratio | p50 µs | p99 µs | proxy CPU µs/op | proxy switches/op | errors | every run (ops/s) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for scenario in &self.scenarios {
            for kind in Kind::ALL {
                let Some(cell) = self.cell(scenario.name, kind) else {
                    continue;
                };
                let ratio = self.ratio(scenario.name, kind).unwrap_or(f64::NAN);
                let cpu = cell.cpu_us.map_or("—".into(), |c| format!("{c:.1}"));
                let switches = cell.switches.map_or("—".into(), |c| format!("{c:.2}"));
                let all: Vec<String> = cell.all.iter().map(|v| format!("{v:.0}")).collect();
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {ratio:.2}× | {:.0} | {:.0} | {cpu} | {switches} | {} | {} |",
                    scenario.name,
                    kind.name(),
                    cell.ops_per_sec,
                    cell.p50,
                    cell.p99,
                    cell.errors,
                    all.join(", ")
                );
            }
        }
        if !self.h2load.is_empty() {
            let _ = writeln!(
                md,
                "\n### Cross-check with h2load (one run each, after the rounds)\n\n| scenario | target | h2load req/s | ratio | succeeded | failed |\n| --- | --- | --- | --- | --- | --- |"
            );
            for run in &self.h2load {
                let direct = self
                    .h2load
                    .iter()
                    .find(|d| d.scenario == run.scenario && d.target == Kind::Direct)
                    .map_or(f64::NAN, |d| d.requests_per_sec);
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {:.2}× | {} | {} |",
                    run.scenario,
                    run.target.name(),
                    run.requests_per_sec,
                    run.requests_per_sec / direct,
                    run.succeeded,
                    run.failed
                );
            }
        }
        let _ = writeln!(
            md,
            "\n### Peak RSS over the whole comparison\n\n| target | peak RSS |\n| --- | --- |"
        );
        for (target, kib) in &self.peak_rss_kib {
            let _ = writeln!(md, "| {target} | {:.1} MiB |", *kib as f64 / 1024.0);
        }
        let _ = writeln!(md, "\n### Machine\n");
        for (key, value) in &self.machine {
            let _ = writeln!(md, "- {key}: {value}");
        }
        md
    }

    /// grpcproxy against each peer, paired by round ([`super::paired`]), from this
    /// comparison's JSON, as `grpcproxy-bench paired` reads it from the file.
    fn paired(&self) -> String {
        serde_json::to_string(self)
            .and_then(|json| paired::from_json(&json))
            .unwrap_or_else(|e| format!("(the paired table could not be made: {e})\n"))
    }

    /// Horizontal bars: each proxy's ratio to direct, per scenario.
    pub(crate) fn svg(&self) -> String {
        let kinds = &Kind::ALL[1..];
        let colors = [
            "#2b6cb0", "#90cdf4", "#63b3ed", "#dd6b20", "#38a169", "#805ad5", "#a0aec0",
        ];
        let (bar, gap, left, width): (f64, f64, f64, f64) = (14.0, 10.0, 190.0, 480.0);
        let group = bar * kinds.len() as f64 + gap;
        let height = 40.0 + group * self.scenarios.len() as f64 + 30.0;
        // The legend, a key per target, from the left edge: wider than the bars' area.
        let legend: f64 = 10.0;
        let total = (left + width + 60.0).max(legend + 100.0 * kinds.len() as f64);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"16\" font-size=\"13\">Throughput as a ratio of a direct connection (1.0 = no overhead)</text>\n"
        );
        let x = |ratio: f64| left + width * ratio.clamp(0.0, 1.2) / 1.2;
        for (i, kind) in kinds.iter().enumerate() {
            let _ = writeln!(
                svg,
                "<rect x=\"{}\" y=\"24\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"33\">{}</text>",
                legend + 100.0 * i as f64,
                colors[i],
                legend + 100.0 * i as f64 + 14.0,
                kind.name()
            );
        }
        for (s, scenario) in self.scenarios.iter().enumerate() {
            let top = 44.0 + group * s as f64;
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                left - 8.0,
                top + group / 2.0,
                scenario.name
            );
            for (k, kind) in kinds.iter().enumerate() {
                let Some(ratio) = self.ratio(scenario.name, *kind) else {
                    continue;
                };
                let y = top + bar * k as f64;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\">{ratio:.2}</text>",
                    x(ratio) - left,
                    bar - 2.0,
                    colors[k],
                    x(ratio) + 3.0,
                    y + bar - 4.0
                );
            }
        }
        let _ = writeln!(
            svg,
            "<line x1=\"{0}\" y1=\"40\" x2=\"{0}\" y2=\"{1}\" stroke=\"black\" stroke-dasharray=\"4\"/><text x=\"{0}\" y=\"{2}\" text-anchor=\"middle\">1.0</text>\n</svg>",
            x(1.0),
            height - 24.0,
            height - 10.0
        );
        svg
    }
}
