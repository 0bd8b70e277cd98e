//! `grpcproxy-bench compare`: every scenario against every target, interleaved, repeated;
//! medians, ratios to direct, grpcproxy against each peer paired by round, proxy CPU per
//! operation, peak memory, an h2load cross-check.

pub(crate) mod paired;
mod procfs;
mod report;
mod stats;
mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::load::{self, LoadArgs, Shape};
use report::{H2load, Results, Sample};
use targets::Kind;

/// `grpcproxy-bench compare`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// A short run that proves the harness works (under a minute); figures mean little.
    #[arg(long)]
    quick: bool,
    /// Rounds; each runs every scenario on every target, in a rotated order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured time per run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured load before each run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// The grpcproxy binary (default: the one beside this binary, i.e. the same build).
    #[arg(long)]
    grpcproxy: Option<PathBuf>,
    /// Where BENCHMARKS.md's results section, compare.json and ratios.svg are written.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

/// One load shape of the comparison.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    shape: Shape,
    size: usize,
    connections: usize,
    streams: usize,
    rate: Option<f64>,
    /// The ratio to direct grpcproxy aims for (from the benchmark issue).
    pub(crate) goal: Option<f64>,
}

const fn scenario(
    name: &'static str,
    shape: Shape,
    size: usize,
    connections: usize,
    streams: usize,
    goal: Option<f64>,
) -> Scenario {
    Scenario {
        name,
        shape,
        size,
        connections,
        streams,
        rate: None,
        goal,
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        scenario("unary 1×1 16 B", Shape::Unary, 16, 1, 1, Some(0.70)),
        scenario("unary 8×32 16 B", Shape::Unary, 16, 8, 32, Some(0.75)),
        scenario("ping-pong 1×1 16 B", Shape::PingPong, 16, 1, 1, Some(0.75)),
        scenario("push 1×1 16 B", Shape::Push, 16, 1, 1, Some(0.60)),
        scenario("unary 1×8 1 KiB", Shape::Unary, 1024, 1, 8, None),
        scenario("unary 1×4 64 KiB", Shape::Unary, 64 << 10, 1, 4, None),
        scenario("unary 1×2 1 MiB", Shape::Unary, 1 << 20, 1, 2, None),
        Scenario {
            rate: Some(2000.0),
            ..scenario(
                "unary open loop 2000/s 1 KiB",
                Shape::Unary,
                1024,
                4,
                1,
                None,
            )
        },
    ]
}

/// Runs the comparison and writes its outputs.
pub(crate) async fn run(mut args: CompareArgs) -> anyhow::Result<()> {
    if args.quick {
        args.rounds = 1;
        args.duration = Duration::from_millis(500);
        args.warmup = Duration::from_millis(200);
    }
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let grpcproxy = match args.grpcproxy.clone() {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("grpcproxy"),
    };
    anyhow::ensure!(
        grpcproxy.is_file(),
        "{} not found: build it first (cargo build --release -p grpcproxy-cli) or pass --grpcproxy",
        grpcproxy.display()
    );
    let scenarios: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| {
            args.only
                .as_ref()
                .is_none_or(|only| s.name.contains(only.as_str()))
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let backend = targets::backend()?;
    let backend_addr = backend.addr;
    let mut running = Vec::new();
    for kind in Kind::ALL {
        running.push(targets::start(kind, backend_addr, &grpcproxy, dir.path())?);
    }
    eprintln!(
        "backend {backend_addr}; targets: {}",
        running
            .iter()
            .map(|r| format!("{} {}", r.kind.name(), r.addr))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut samples = Vec::new();
    for round in 0..args.rounds {
        for (s, scenario) in scenarios.iter().enumerate() {
            // Rotate the order so no target always runs first (or after the same one).
            let order = (0..running.len()).map(|i| (i + round + s) % running.len());
            for target in order.map(|i| &running[i]) {
                let sample = measure(scenario, target, round, &args).await?;
                eprintln!(
                    "round {} {:<30} {:<14} {:>10.0} ops/s  p50 {:>6} µs  p99 {:>6} µs  cpu {}  switches {}",
                    round + 1,
                    scenario.name,
                    target.kind.name(),
                    sample.report.ops_per_sec,
                    sample.report.latency_us.p50,
                    sample.report.latency_us.p99,
                    sample
                        .cpu_us_per_op
                        .map_or("—".into(), |c| format!("{c:.1} µs/op")),
                    sample
                        .switches_per_op
                        .map_or("—".into(), |c| format!("{c:.2}/op"))
                );
                samples.push(sample);
            }
        }
    }
    let mut h2load = Vec::new();
    for scenario in scenarios
        .iter()
        .filter(|s| s.shape == Shape::Unary && s.size == 16)
    {
        for target in &running {
            h2load.push(cross_check(scenario, target, dir.path(), &args)?);
        }
    }
    let peak_rss_kib = running
        .iter()
        .filter(|r| r.kind != Kind::Direct)
        .map(|r| (r.kind.name(), procfs::peak_rss_kib(&r.pids())))
        .collect();
    drop(running);
    drop(backend);

    let results = Results {
        machine: machine(&grpcproxy),
        quick: args.quick,
        rounds: args.rounds,
        duration_s: args.duration.as_secs_f64(),
        scenarios,
        samples,
        h2load,
        peak_rss_kib,
    };
    write_outputs(&results, &args.out)
}

async fn measure(
    scenario: &Scenario,
    target: &targets::Running,
    round: usize,
    args: &CompareArgs,
) -> anyhow::Result<Sample> {
    let mut load = LoadArgs {
        target: target.addr,
        shape: scenario.shape,
        size: scenario.size,
        connections: scenario.connections,
        streams: scenario.streams,
        rate: scenario.rate,
        duration: args.warmup,
        warmup: Duration::ZERO,
    };
    load::run(&load).await?;
    load.duration = args.duration;
    let pids = target.pids();
    let (before, switched) = (procfs::cpu_seconds(&pids), procfs::context_switches(&pids));
    let report = load::run(&load).await?;
    let cpu = procfs::cpu_seconds(&pids) - before;
    let switches = procfs::context_switches(&pids) - switched;
    anyhow::ensure!(
        report.ops > 0,
        "{} on {}: no operation succeeded ({})",
        scenario.name,
        target.kind.name(),
        report.first_error.as_deref().unwrap_or("no error either")
    );
    Ok(Sample {
        scenario: scenario.name,
        target: target.kind,
        round,
        cpu_us_per_op: (!pids.is_empty()).then(|| cpu * 1e6 / report.ops as f64),
        switches_per_op: (!pids.is_empty()).then(|| switches as f64 / report.ops as f64),
        report,
    })
}

/// The same unary scenario measured by h2load instead of our generator.
fn cross_check(
    scenario: &Scenario,
    target: &targets::Running,
    dir: &Path,
    args: &CompareArgs,
) -> anyhow::Result<H2load> {
    let body = dir.join("h2load-request.bin");
    std::fs::write(&body, load::request_frame(Shape::Unary, scenario.size))?;
    let output = Command::new(targets::find("h2load")?)
        .arg(format!(
            "--duration={}",
            args.duration.as_secs_f64().ceil() as u64
        ))
        .arg(format!(
            "--warm-up-time={}",
            args.warmup.as_secs_f64().ceil() as u64
        ))
        .args(["-c", &scenario.connections.to_string()])
        .args(["-m", &scenario.streams.to_string()])
        .args(["-t", "1", "-d"])
        .arg(&body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!(
            "http://{}/helloworld.Greeter/SayHello",
            target.addr
        ))
        .output()
        .context("cannot run h2load")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let parse = || -> Option<H2load> {
        // "finished in 5.00s, 12345.67 req/s, 1.23MB/s"
        let finished = text.lines().find(|l| l.starts_with("finished in"))?;
        let rps = finished
            .split(", ")
            .nth(1)?
            .strip_suffix(" req/s")?
            .parse()
            .ok()?;
        // "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, ..."
        let requests = text.lines().find(|l| l.starts_with("requests:"))?;
        let count = |label: &str| -> Option<u64> {
            requests
                .split(", ")
                .find(|p| p.ends_with(label))?
                .split_whitespace()
                .rev()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(H2load {
            scenario: scenario.name,
            target: target.kind,
            requests_per_sec: rps,
            succeeded: count(" succeeded")?,
            failed: count(" failed")?,
        })
    };
    parse().with_context(|| {
        format!(
            "unexpected h2load output:\n{text}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn machine(grpcproxy: &Path) -> BTreeMap<&'static str, String> {
    let first_line = |program: &str, arg: &str| -> String {
        let output = Command::new(program).arg(arg).output();
        output
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|_| "not found".into())
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let mut machine = BTreeMap::new();
    machine.insert(
        "cpu",
        format!(
            "{model}, {} logical cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
    );
    machine.insert(
        "kernel",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    );
    machine.insert(
        "grpcproxy",
        first_line(&grpcproxy.display().to_string(), "--version"),
    );
    machine.insert(
        "nginx",
        first_line("nginx", "-v").replace("nginx version: ", ""),
    );
    machine.insert("haproxy", first_line("haproxy", "-v"));
    machine.insert("h2load", first_line("h2load", "--version"));
    machine
}

const BEGIN: &str = "<!-- results:begin (written by grpcproxy-bench compare) -->";
const END: &str = "<!-- results:end -->";

/// BENCHMARKS.md (only its results section is replaced; the analysis around it stays),
/// compare.json, ratios.svg.
fn write_outputs(results: &Results, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out.join("bench/results"))?;
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(out.join("bench/results/compare.json"), json)?;
    std::fs::write(out.join("bench/results/ratios.svg"), results.svg())?;
    let path = out.join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        format!("# Benchmarks\n\n{BEGIN}\n{END}\n\n![ratio to direct](bench/results/ratios.svg)\n")
    });
    let (Some(begin), Some(end)) = (existing.find(BEGIN), existing.find(END)) else {
        anyhow::bail!("{} has no {BEGIN} … {END} section", path.display());
    };
    let mut text = existing[..begin + BEGIN.len()].to_owned();
    text.push('\n');
    if results.quick {
        text.push_str("\n**Quick run (`--quick`): a check that the harness works; these figures are not measurements.**\n\n");
    }
    text.push_str(&results.markdown());
    text.push_str(&existing[end..]);
    std::fs::write(&path, text)?;
    println!(
        "wrote {}, bench/results/compare.json and bench/results/ratios.svg under {}",
        path.display(),
        out.display()
    );
    Ok(())
}
