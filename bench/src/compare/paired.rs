//! grpcproxy against each peer, paired by round: within one round every target runs within
//! a minute or two of the others, so a ratio taken inside a round cancels what the machine
//! did to the whole round (a round where every target ran at half speed), which a ratio of
//! medians over the rounds does not. Written into the results section by `compare`, and
//! printed from a stored `compare.json` by `grpcproxy-bench paired`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use super::stats::median;
use super::targets::Kind;

/// The comparisons the latency issue's targets are stated in.
const PAIRS: [(Kind, Kind); 4] = [
    (Kind::Grpcproxy, Kind::Nginx),
    (Kind::Grpcproxy, Kind::Haproxy),
    (Kind::Grpcproxy, Kind::H2Floor),
    (Kind::GrpcproxyQuick, Kind::Grpcproxy),
];

/// A stored `compare.json`, as much of it as the pairing reads.
#[derive(Debug, Deserialize)]
struct Stored {
    scenarios: Vec<Shape>,
    samples: Vec<Run>,
}

/// A scenario: an open loop's load is fixed (it has a rate), so its figure is the p50
/// latency rather than throughput.
#[derive(Debug, Deserialize)]
struct Shape {
    name: String,
    rate: Option<f64>,
}

/// One measured run.
#[derive(Debug, Deserialize)]
struct Run {
    scenario: String,
    target: Kind,
    round: usize,
    report: Figures,
    cpu_us_per_op: Option<f64>,
}

/// What the load generator reported for a run.
#[derive(Debug, Deserialize)]
struct Figures {
    ops_per_sec: f64,
    latency_us: crate::load::Latency,
}

/// One pair's per-round figures, in round order.
#[derive(Debug, Clone, PartialEq)]
struct Paired {
    /// Throughput a / b, or for an open loop p50 a − b in µs.
    figure: Vec<f64>,
    /// CPU per operation a / b.
    cpu: Vec<f64>,
}

fn pair(runs: &[Run], shape: &Shape, a: Kind, b: Kind) -> Paired {
    let find = |target: Kind, round: usize| {
        runs.iter()
            .find(|r| r.scenario == shape.name && r.target == target && r.round == round)
    };
    let mut rounds: Vec<usize> = runs
        .iter()
        .filter(|r| r.scenario == shape.name)
        .map(|r| r.round)
        .collect();
    rounds.sort_unstable();
    rounds.dedup();
    let (mut figure, mut cpu) = (Vec::new(), Vec::new());
    for round in rounds {
        let (Some(x), Some(y)) = (find(a, round), find(b, round)) else {
            continue;
        };
        figure.push(if shape.rate.is_some() {
            x.report.latency_us.p50 as f64 - y.report.latency_us.p50 as f64
        } else {
            x.report.ops_per_sec / y.report.ops_per_sec
        });
        if let (Some(cx), Some(cy)) = (x.cpu_us_per_op, y.cpu_us_per_op) {
            cpu.push(cx / cy);
        }
    }
    Paired { figure, cpu }
}

/// `median (min–max)` of `values`, each formatted by `show`.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{} ({} to {})",
        show(median(values.to_vec())),
        show(min),
        show(max)
    )
}

/// The Markdown table: per scenario and pair, the median of the rounds' ratios, their
/// range, and in how many rounds the first of the pair was ahead.
fn markdown(shapes: &[Shape], runs: &[Run]) -> String {
    let mut md = String::from(
        "### grpcproxy against each peer, paired by round\n\n\
         Each ratio is taken within one round, where the two ran a minute or two apart; the \
         median of the rounds' ratios, their range, and in how many rounds the first was \
         ahead (more throughput; for the open loop a lower p50, the difference in µs; less \
         CPU per operation).\n\n\
         | scenario | pair | throughput (open loop: p50 difference) | ahead in | CPU per op | cheaper in |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for shape in shapes {
        for (a, b) in PAIRS {
            let paired = pair(runs, shape, a, b);
            if paired.figure.is_empty() {
                continue;
            }
            let n = paired.figure.len();
            let (figure, ahead, sign) = if shape.rate.is_some() {
                let show = |d: f64| format!("{d:+.0} µs");
                let ahead = paired.figure.iter().filter(|d| **d < 0.0).count();
                (spread(&paired.figure, show), ahead, '−')
            } else {
                let ahead = paired.figure.iter().filter(|r| **r > 1.0).count();
                (spread(&paired.figure, |r| format!("{r:.2}×")), ahead, '/')
            };
            let (cpu, cheaper) = if paired.cpu.is_empty() {
                ("—".to_owned(), "—".to_owned())
            } else {
                let cheaper = paired.cpu.iter().filter(|r| **r < 1.0).count();
                (
                    spread(&paired.cpu, |r| format!("{r:.2}×")),
                    format!("{cheaper} of {}", paired.cpu.len()),
                )
            };
            let _ = writeln!(
                md,
                "| {} | {} {sign} {} | {figure} | {ahead} of {n} | {cpu} | {cheaper} |",
                shape.name,
                a.name(),
                b.name()
            );
        }
    }
    md
}

/// `grpcproxy-bench paired FILE`: the table above, from a stored `compare.json`.
///
/// ```text
/// grpcproxy-bench paired bench/results/compare.json
/// ```
pub(crate) fn from_file(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    from_json(&text).with_context(|| format!("{} is not a compare.json", path.display()))
}

/// The table above, from a comparison's JSON: what `compare` writes into the results
/// section, and what `grpcproxy-bench paired` prints again from the file.
pub(crate) fn from_json(json: &str) -> serde_json::Result<String> {
    let stored: Stored = serde_json::from_str(json)?;
    Ok(markdown(&stored.scenarios, &stored.samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: Kind, round: usize, ops: f64, p50: u64, cpu: f64) -> Run {
        Run {
            scenario: "s".into(),
            target,
            round,
            report: Figures {
                ops_per_sec: ops,
                latency_us: crate::load::Latency {
                    p50,
                    ..Default::default()
                },
            },
            cpu_us_per_op: Some(cpu),
        }
    }

    /// Scenario `s`, closed loop or open (at some rate).
    fn shape(open_loop: bool) -> Shape {
        Shape {
            name: "s".into(),
            rate: open_loop.then_some(2000.0),
        }
    }

    /// A round where the machine ran everything at a fifth of the speed moves a ratio
    /// of medians, not the paired one.
    #[test]
    fn a_slow_round_cancels_out() {
        let runs = [
            run(Kind::Grpcproxy, 0, 100.0, 0, 10.0),
            run(Kind::Nginx, 0, 90.0, 0, 12.0),
            run(Kind::Grpcproxy, 1, 20.0, 0, 50.0),
            run(Kind::Nginx, 1, 18.0, 0, 60.0),
            run(Kind::Grpcproxy, 2, 95.0, 0, 10.0),
            run(Kind::Nginx, 2, 100.0, 0, 9.0),
        ];
        let shape = shape(false);
        let paired = pair(&runs, &shape, Kind::Grpcproxy, Kind::Nginx);
        assert_eq!(paired.figure, vec![100.0 / 90.0, 20.0 / 18.0, 0.95]);
        assert_eq!(paired.cpu, vec![10.0 / 12.0, 50.0 / 60.0, 10.0 / 9.0]);
        let md = markdown(&[shape], &runs);
        assert!(
            md.contains("| s | grpcproxy / nginx | 1.11× (0.95× to 1.11×) | 2 of 3 | 0.83× (0.83× to 1.11×) | 2 of 3 |"),
            "{md}"
        );
        // Rounds without both sides are left out, and a pair never measured has no row.
        assert!(!md.contains("HAProxy"), "{md}");
    }

    #[test]
    fn an_open_loop_pairs_its_p50_latency() {
        let runs = [
            run(Kind::Grpcproxy, 0, 2000.0, 300, 90.0),
            run(Kind::H2Floor, 0, 2000.0, 280, 70.0),
            run(Kind::Grpcproxy, 1, 2000.0, 250, 80.0),
            run(Kind::H2Floor, 1, 2000.0, 260, 80.0),
            run(Kind::H2Floor, 2, 2000.0, 260, 80.0),
        ];
        let md = markdown(&[shape(true)], &runs);
        assert!(
            md.contains("| s | grpcproxy − h2 floor | +5 µs (-10 µs to +20 µs) | 1 of 2 | 1.14× (1.00× to 1.29×) | 0 of 2 |"),
            "{md}"
        );
    }

    #[test]
    fn reads_a_stored_comparison() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compare.json");
        let sample = |target: &str, ops: f64| {
            format!(
                r#"{{"scenario":"u","target":"{target}","round":0,"cpu_us_per_op":null,"switches_per_op":null,
                "report":{{"ops_per_sec":{ops},"latency_us":{{"p50":1,"p90":1,"p99":1,"p999":1,"max":1}}}}}}"#
            )
        };
        let json = format!(
            r#"{{"scenarios":[{{"name":"u","rate":null}}],"samples":[{},{}]}}"#,
            sample("grpcproxy-quick", 99.0),
            sample("grpcproxy", 100.0)
        );
        std::fs::write(&path, json).unwrap();
        let md = from_file(&path).unwrap();
        assert!(
            md.contains(
                "| u | grpcproxy quick / grpcproxy | 0.99× (0.99× to 0.99×) | 0 of 1 | — | — |"
            ),
            "{md}"
        );
        std::fs::write(&path, "{}").unwrap();
        let error = format!("{:#}", from_file(&path).unwrap_err());
        assert!(error.contains("is not a compare.json"), "{error}");
    }
}
