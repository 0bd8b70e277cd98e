//! The tap of many replicas on a NATS JetStream cluster: 3 real `nats-server` nodes routed
//! to each other on loopback, an R3 stream (`tap.replicas = 3`), 3 grpcproxy replicas
//! given every node (`nats_url` comma-separated). One node is killed mid-run: every call
//! still succeeds and every event is published. Replicas are then restarted (one under a
//! fixed `tap.instance`, so its call ids start again under the same name), and `grpcproxy
//! replay` reads the stream from the surviving nodes: every call of every instance
//! replays with MATCH, none mixed with another's. (Events whose acknowledgement was lost
//! with the node are published again and land late in the stream, even after a later
//! start's events; replay puts each publisher's events back in order by their event id.)

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grpcproxy_testing::nats::NatsCluster;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};

/// Events the tap publishes per unary call: started, the request, the response, ended.
const EVENTS_PER_CALL: u64 = 4;

fn replica_config(backend: SocketAddr, urls: &str, instance: Option<&str>) -> String {
    let instance = instance
        .map(|i| format!("instance = \"{i}\"\n"))
        .unwrap_or_default();
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\ncluster = \"ping\"\n[clusters.ping]\nendpoints = [\"{backend}\"]\n\
         [tap]\nnats_url = \"{urls}\"\nstream = \"TAP\"\nreplicas = 3\n{instance}"
    )
}

/// A replica and the instance it logged at start.
struct Replica {
    proxy: support::Proxy,
    instance: String,
    _config: tempfile::NamedTempFile,
}

fn start_replica(backend: SocketAddr, urls: &str, instance: Option<&str>) -> Replica {
    let (proxy, config) = support::start_with_config(&replica_config(backend, urls, instance), 1);
    let line = proxy
        .startup
        .iter()
        .find(|l| l.contains("tap publishing to NATS"))
        .expect("the tap's start is logged");
    let instance = support::field(line, "instance").to_owned();
    Replica {
        proxy,
        instance,
        _config: config,
    }
}

/// `calls` calls through `replica`, each `{label}-{n}`; counts them in `done` as they
/// succeed. Any failure fails the test.
async fn call_loop(replica: SocketAddr, label: String, calls: u64, done: Arc<AtomicU64>) {
    let mut client = ping_client(replica).await;
    for n in 0..calls {
        let request = PingRequest {
            value: format!("{label}-{n}"),
            ..Default::default()
        };
        let answer = client.ping(request).await;
        let answer = answer.unwrap_or_else(|e| panic!("call {label}-{n} failed: {e:?}"));
        assert_eq!(answer.get_ref().value, format!("{label}-{n}"));
        done.fetch_add(1, Ordering::Relaxed);
        // Paced, so that the node's loss falls in the middle of the run.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A JetStream client of the cluster's running nodes.
async fn jetstream(urls: &str) -> async_nats::jetstream::Context {
    let servers: Vec<&str> = urls.split(',').collect();
    let client = async_nats::connect(servers).await.unwrap();
    async_nats::jetstream::new(client)
}

/// Stops `replica` with SIGTERM and returns (published, dropped, failed) from its "tap
/// flushed" line.
fn stop(mut replica: Replica) -> (String, [u64; 3]) {
    support::sigterm(&replica.proxy);
    let status = support::wait_exit(&mut replica.proxy, Duration::from_secs(40));
    assert!(status.success(), "{status:?}");
    let logs: Vec<String> = replica.proxy.logs.try_iter().collect();
    let flushed = logs
        .iter()
        .find(|l| l.contains("tap flushed"))
        .unwrap_or_else(|| panic!("no flush line: {logs:#?}"));
    let number = |name: &str| -> u64 {
        let key = format!("\"{name}\":");
        let start = flushed.find(&key).expect(name) + key.len();
        let digits: String = flushed[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    let counts = [number("published"), number("dropped"), number("failed")];
    (replica.instance.clone(), counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_tap_into_a_jetstream_cluster_that_loses_a_node() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let (backend, _service) = ping_backend().await;
    let backend = backend.addr();
    // Two replicas named by default (host, pid, start time), one by `tap.instance`.
    let replicas = vec![
        start_replica(backend, &urls, None),
        start_replica(backend, &urls, None),
        start_replica(backend, &urls, Some("edge-fixed")),
    ];
    assert_ne!(replicas[0].instance, replicas[1].instance);
    for replica in &replicas[..2] {
        let parts: Vec<&str> = replica.instance.rsplitn(3, '-').collect();
        assert_eq!(parts.len(), 3, "{}", replica.instance);
        assert_eq!(parts[1], replica.proxy.child.id().to_string());
        assert!(
            parts[0].len() == 16 && parts[0].ends_with('Z') && parts[0].contains('T'),
            "host-pid-YYYYMMDDTHHMMSSZ: {}",
            replica.instance
        );
    }

    // The stream (R3) exists once the cluster has a leader and a replica created it; each
    // replica's tap publishes before the node goes.
    let js = jetstream(&urls).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while js.get_stream("TAP").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no stream TAP in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One call through each replica, and its 4 events acknowledged: every tap publishes.
    let done = Arc::new(AtomicU64::new(0));
    for (i, replica) in replicas.iter().enumerate() {
        call_loop(replica.proxy.listening[0], format!("w{i}"), 1, done.clone()).await;
    }
    for replica in &replicas {
        let admin = replica.proxy.admin.unwrap();
        let published = || support::baseline::metric(admin, "grpcproxy_tap_events_published_total");
        while published() < EVENTS_PER_CALL as i64 {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: not publishing",
                replica.instance
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    done.store(0, Ordering::Relaxed);

    // 3 × 200 calls; the first node is killed once a third of them are done.
    const CALLS: u64 = 200;
    let loops: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let label = format!("r{i}");
            tokio::spawn(call_loop(r.proxy.listening[0], label, CALLS, done.clone()))
        })
        .collect();
    while done.load(Ordering::Relaxed) < CALLS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.nodes[0].stop();
    eprintln!(
        "killed NATS node n0 after {} calls",
        done.load(Ordering::Relaxed)
    );
    for call_loop in loops {
        call_loop.await.unwrap();
    }
    assert_eq!(
        done.load(Ordering::Relaxed),
        3 * CALLS,
        "every call succeeded"
    );

    // Restarts: the first replica under a new default name, the third under its fixed
    // one (its call ids count from 1 again); 30 more calls each.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut flushed = Vec::new();
    let mut replicas = replicas.into_iter();
    let (first, second, third) = (
        replicas.next().unwrap(),
        replicas.next().unwrap(),
        replicas.next().unwrap(),
    );
    for replica in [&first, &second, &third] {
        expected.insert(replica.instance.clone(), 1 + CALLS);
    }
    let first_name = first.instance.clone();
    flushed.push(stop(first));
    flushed.push(stop(third));
    let restarted = [
        start_replica(backend, &urls, None),
        start_replica(backend, &urls, Some("edge-fixed")),
    ];
    assert_ne!(restarted[0].instance, first_name, "a new start, a new name");
    assert_eq!(restarted[1].instance, "edge-fixed");
    const MORE: u64 = 30;
    for (i, replica) in restarted.iter().enumerate() {
        let label = format!("again{i}");
        call_loop(replica.proxy.listening[0], label, MORE, done.clone()).await;
        *expected.entry(replica.instance.clone()).or_default() += MORE;
    }
    flushed.push(stop(second));
    for replica in restarted {
        flushed.push(stop(replica));
    }
    // Every event of every call was published (none dropped, none failed), node loss
    // or not: 4 per call.
    let mut published_by: BTreeMap<String, u64> = BTreeMap::new();
    for (instance, [published, dropped, failed]) in &flushed {
        eprintln!("{instance}: published {published}, dropped {dropped}, failed {failed}");
        assert_eq!((*dropped, *failed), (0, 0), "{instance}");
        *published_by.entry(instance.clone()).or_default() += published;
    }
    let events: BTreeMap<String, u64> = expected
        .iter()
        .map(|(i, calls)| (i.clone(), calls * EVENTS_PER_CALL))
        .collect();
    assert_eq!(published_by, events);

    // The stream: R3, and each message names its instance in a header too.
    let survivors = cluster.urls();
    let mut stream = jetstream(&survivors).await.get_stream("TAP").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(
        info.state.messages,
        events.values().sum::<u64>(),
        "each event stored once"
    );
    let first_message = stream.get_raw_message(1).await.unwrap();
    let header = first_message
        .headers
        .get(grpcproxy::mq::INSTANCE_HEADER)
        .expect("the instance header")
        .to_string();
    assert!(expected.contains_key(&header), "{header}");
    let event_id = first_message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID);
    let event_id = event_id.expect("the message id header").to_string();
    assert!(
        event_id.ends_with("-1"),
        "the first event its publisher published: {event_id}"
    );

    // Replay from the surviving nodes: every call of every instance matches.
    let replay = |more: &'static [&'static str]| {
        let target = format!("http://{backend}");
        let survivors = survivors.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
                .args(["replay", "--target", &target, "--nats", &survivors])
                .args(["--stream", "TAP", "--concurrency", "8"])
                .args(more)
                .output()
                .unwrap()
        })
    };
    let output = replay(&[]).await.unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let total: u64 = expected.values().sum();
    assert!(
        out.ends_with(&format!(
            "summary: {total} match, 0 differ, 0 skipped, 0 failed\n"
        )),
        "{}\n{}",
        out.lines()
            .filter(|l| !l.starts_with("MATCH"))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut matched: BTreeMap<String, u64> = BTreeMap::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("MATCH  call ") {
            let (instance, _) = rest.split_once('/').expect("instance/id");
            *matched.entry(instance.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(matched, expected, "calls per instance");
    eprintln!("replayed per instance: {matched:?}");

    // One instance's calls: the fixed name's, both of its starts.
    let output = replay(&["--instance", "edge-fixed"]).await.unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    let fixed = expected["edge-fixed"];
    assert!(
        out.ends_with(&format!(
            "summary: {fixed} match, 0 differ, 0 skipped, 0 failed\n"
        )),
        "{out}"
    );
}
