//! `grpcproxy replay`: sends recorded calls again and reports whether each still gets the
//! recorded status and response bytes.

mod call;
mod compare;
mod recording;
mod source;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use grpcproxy::Upstream;

use recording::RecordedCall;
pub(crate) use source::Source;

/// `grpcproxy replay`'s arguments.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "nats"])))]
pub(crate) struct ReplayArgs {
    /// Where to send the calls: http://host:port (h2c) or https://host:port.
    #[arg(long)]
    target: String,
    /// A tap file (protobuf or JSON lines); repeat for rotated files, oldest first.
    #[arg(long)]
    file: Vec<PathBuf>,
    /// Read the recording from this NATS server's JetStream (with --stream); a cluster's
    /// servers comma-separated.
    #[arg(long, requires = "stream")]
    nats: Option<String>,
    /// The JetStream stream the tap published to.
    #[arg(long, requires = "nats")]
    stream: Option<String>,
    /// Only the stream's messages on this subject (wildcards allowed).
    #[arg(long, requires = "nats")]
    subject: Option<String>,
    /// Only calls whose method starts with this (`/pkg.Service/`); repeatable.
    #[arg(long)]
    filter: Vec<String>,
    /// Only calls recorded by this proxy instance (its `--instance`); repeatable.
    #[arg(long)]
    instance: Vec<String>,
    /// Start at most this many calls per second (default: as fast as they finish).
    #[arg(long)]
    rate: Option<f64>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Give up on a call after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// What a replay found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) matched: usize,
    pub(crate) differed: usize,
    pub(crate) skipped: usize,
    pub(crate) failed: usize,
}

impl Summary {
    /// Whether every replayed call matched.
    pub(crate) fn all_matched(&self) -> bool {
        self.differed == 0 && self.failed == 0
    }
}

enum Verdict {
    Match,
    Differ(Vec<String>),
    Skip(String),
    Fail(String),
}

/// Replays the recording, printing one line per call and a summary.
pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<Summary> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    if let Some(rate) = args.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        anyhow::bail!("--rate must be a positive number of calls per second, not {rate}");
    }
    let target =
        Upstream::new(&args.target).with_context(|| format!("--target {}", args.target))?;
    let source = match args.nats {
        Some(url) => Source::JetStream {
            url,
            stream: args.stream.expect("clap requires --stream with --nats"),
            subject: args.subject,
        },
        None => Source::Files(args.file),
    };
    let calls: Vec<RecordedCall> = recording::calls(source.events().await?)
        .into_iter()
        .filter(|c| args.filter.is_empty() || args.filter.iter().any(|f| c.method.starts_with(f)))
        .filter(|c| args.instance.is_empty() || args.instance.contains(&c.instance))
        .collect();
    println!(
        "replaying {} recorded calls against {}",
        calls.len(),
        args.target
    );

    let mut pacing = args.rate.map(|rate| {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let mut summary = Summary::default();
    let mut in_flight = VecDeque::new();
    for call in calls {
        if let Some(ticks) = &mut pacing {
            ticks.tick().await;
        }
        if in_flight.len() >= args.concurrency {
            report(in_flight.pop_front(), &mut summary).await;
        }
        let target = target.clone();
        let timeout = args.timeout;
        in_flight.push_back(tokio::spawn(async move {
            let verdict = match call.unreplayable() {
                Some(why) => Verdict::Skip(why),
                None => match call::replay(&target, &call, timeout).await {
                    Ok(outcome) => match compare::differences(&call, &outcome) {
                        d if d.is_empty() => Verdict::Match,
                        d => Verdict::Differ(d),
                    },
                    Err(e) => Verdict::Fail(e),
                },
            };
            (call, verdict)
        }));
    }
    while !in_flight.is_empty() {
        report(in_flight.pop_front(), &mut summary).await;
    }
    println!(
        "summary: {} match, {} differ, {} skipped, {} failed",
        summary.matched, summary.differed, summary.skipped, summary.failed
    );
    Ok(summary)
}

async fn report(
    next: Option<tokio::task::JoinHandle<(RecordedCall, Verdict)>>,
    summary: &mut Summary,
) {
    let Some(handle) = next else { return };
    let (call, verdict) = match handle.await {
        Ok(done) => done,
        Err(e) => {
            summary.failed += 1;
            return println!("FAIL   a replay task ended abnormally: {e}");
        }
    };
    let who = match call.instance.as_str() {
        "" => format!("call {} {}", call.call_id, call.method),
        instance => format!("call {instance}/{} {}", call.call_id, call.method),
    };
    match verdict {
        Verdict::Match => {
            summary.matched += 1;
            println!("MATCH  {who}");
        }
        Verdict::Differ(differences) => {
            summary.differed += 1;
            println!("DIFFER {who}");
            for d in differences {
                println!("         {d}");
            }
        }
        Verdict::Skip(why) => {
            summary.skipped += 1;
            println!("SKIP   {who}: {why}");
        }
        Verdict::Fail(why) => {
            summary.failed += 1;
            println!("FAIL   {who}: {why}");
        }
    }
}
