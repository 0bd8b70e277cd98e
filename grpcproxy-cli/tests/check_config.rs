//! `grpcproxy check-config FILE`: the example passes; bad files exit 2 naming file, line and
//! field, with the exact message.

mod support;

use std::process::Command;

const LISTENER: &str = "[[listeners]]\naddress = \"127.0.0.1:0\"\n";
const CLUSTER: &str = "[clusters.a]\nendpoints = [\"127.0.0.1:1\"]\n";

fn check(path: &str) -> (Option<i32>, String, String) {
    support::check_config(std::path::Path::new(path))
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../grpcproxy.example.toml");
    let (code, stdout, stderr) = check(example);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "", "no warning either");
    assert!(stdout.ends_with("grpcproxy.example.toml: ok\n"), "{stdout}");
}

#[test]
fn bad_files_are_rejected_with_exact_messages() {
    let cases: Vec<(String, &str)> = vec![
        (
            "listenrs = []\n".into(),
            "1:1: unknown field `listenrs`, expected one of `server`, `limits`, `listeners`, `routes`, `clusters`, `admin`, `access_log`, `tap`, `tracing`",
        ),
        ("[server]\ndrain_timeout = \"30s\"\n".into(), "1:1: missing field `listeners`"),
        ("listeners = []\n".into(), "1:13: listeners: at least one listener is needed"),
        (
            format!("{LISTENER}[server]\ndrain_timeout = \"5 parsecs\"\n"),
            "4:17: drain_timeout: \"5 parsecs\" is not a duration: write a number and a unit, such as \"250ms\", \"30s\", \"5m\" or \"1h 30m\"",
        ),
        (
            format!("{LISTENER}[server]\ndrain_timeout = 30\n"),
            "4:17: drain_timeout: invalid type: integer `30`, expected a duration in quotes: write a number and a unit, such as \"250ms\", \"30s\", \"5m\" or \"1h 30m\"",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmax_timeout = \"0s\"\n"),
            "7:15: routes[0].max_timeout: \"0s\" would end every call at once with DEADLINE_EXCEEDED; leave max_timeout out for no deadline",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\ndefault_timeout = \"0ms\"\n"),
            "7:19: routes[0].default_timeout: \"0s\" would end every call at once with DEADLINE_EXCEEDED; leave default_timeout out for no deadline",
        ),
        (format!("{LISTENER}[[listeners]]\naddress = \"localhost\"\n"), "4:11: address: invalid socket address syntax"),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"b\"\n"),
            "6:11: routes[0].cluster: no cluster named \"b\" (defined: a)",
        ),
        (
            format!("{LISTENER}[[routes]]\ncluster = \"b\"\n"),
            "4:11: routes[0].cluster: no cluster named \"b\" (none are defined)",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmatch.headers = [{{ name = \"x-a\", exact = \"1\", present = true }}]\n"),
            "7:27: routes[0].match.headers[0]: give exactly one of exact, regex, present, absent",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmatch.headers = [{{ name = \"x-a\", regex = \"(unclosed\" }}]\n"),
            "7:42: routes[0].match.headers[0].regex: invalid regex \"(unclosed\": unclosed group",
        ),
        (
            format!("{LISTENER}[clusters.a]\nendpoints = [\"backend.internal\"]\n"),
            "4:13: clusters.a.endpoints: \"backend.internal\" is not host:port",
        ),
        (
            format!("{LISTENER}{CLUSTER}balance = \"random\"\n"),
            "5:11: balance: unknown variant `random`, expected `p2c` or `round_robin`",
        ),
        (
            format!("{LISTENER}{CLUSTER}tls.cert = \"c.pem\"\n"),
            "5:1: clusters.a.tls: cert and key go together",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nrequest_metadata.set = {{ \"grpc-timeout\" = \"1S\" }}\n"),
            "7:24: routes[0].request_metadata.set: \"grpc-timeout\" = \"1S\": reserved: the proxy sends the call's deadline; set routes' max_timeout or default_timeout instead",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nresponse_metadata.set = {{ \"x-a\" = \"line\\nbreak\" }}\n"),
            "7:25: routes[0].response_metadata.set: \"x-a\" = \"line\\nbreak\": not a valid metadata value (visible ASCII)",
        ),
        (
            format!("{LISTENER}{CLUSTER}connections_per_endpoint = 4\nmax_connections_per_endpoint = 2\n"),
            "4:13: clusters.a.max_connections_per_endpoint (2) is below connections_per_endpoint (4)",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nretry = {{ on = [\"unavailble\"] }}\n"),
            "7:16: routes[0].retry.on: \"unavailble\" is not a status code that can be retried (known: cancelled, unknown, invalid_argument, deadline_exceeded, not_found, already_exists, permission_denied, resource_exhausted, failed_precondition, aborted, out_of_range, unimplemented, internal, unavailable, data_loss, unauthenticated)",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nretry = {{ on = [\"unavailable\"], attempts = 0 }}\n"),
            "7:9: routes[0].retry.attempts: 0 tries would never send the call; 1 means no retry",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmax_timeout = \"1s\"\nretry = {{ on = [\"unavailable\"], per_try_timeout = \"2s\" }}\n"),
            "8:9: routes[0].retry.per_try_timeout (2s) is longer than the route's max_timeout (1s): no try could reach it",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nrate_limit = {{ per_second = 10, key = \"tenant\" }}\n"),
            "7:14: routes[0].rate_limit.key: \"tenant\" is not \"route\", \"peer\" or \"header:NAME\"",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nrate_limit = {{ per_second = 0 }}\n"),
            "7:14: routes[0].rate_limit.per_second: 0 would refuse every call",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmax_in_flight_per_peer = 0\n"),
            "7:26: routes[0].max_in_flight_per_peer: 0 would refuse every call",
        ),
        (
            format!("{LISTENER}{CLUSTER}max_in_flight = 0\n"),
            "4:13: clusters.a.max_in_flight: 0 would shed every call",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nretry = {{ on = [\"unavailable\"] }}\nhedge = {{ delay = \"50ms\" }}\n"),
            "8:9: routes[0]: give retry or hedge, not both (a hedged call is already sent more than once)",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nhedge = {{ delay = \"p100\" }}\n"),
            "7:9: routes[0].hedge.delay: \"p100\" is not a percentile between p0 and p100 (such as \"p95\")",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmirror = {{ cluster = \"v2\", percent = 10 }}\n"),
            "7:10: routes[0].mirror.cluster: no cluster named \"v2\" (defined: a)",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmirror = {{ cluster = \"a\", percent = 150 }}\n"),
            "7:10: routes[0].mirror.percent: 150 is not a share above 0 and up to 100",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmirror = {{ cluster = \"a\", percent = 0 }}\n"),
            "7:10: routes[0].mirror.percent: 0 is not a share above 0 and up to 100",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmirror = {{ cluster = \"a\", percent = 5, max_in_flight = 0 }}\n"),
            "7:10: routes[0].mirror.max_in_flight: 0 would drop every mirrored call",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nmirror = {{ cluster = \"a\", percent = 5, sample = 1 }}\n"),
            "7:40: unknown field `sample`, expected one of `cluster`, `percent`, `compare`, `buffer_bytes`, `compare_bytes`, `max_in_flight`, `timeout`, `log_differences`, `tap`",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nfan_out = {{ clusters = [\"a\"], mode = \"all\" }}\n"),
            "7:11: routes[0].fan_out.clusters: a fan-out needs a cluster besides the route's own (\"a\")",
        ),
        (
            format!("{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\nfan_out = {{ clusters = [\"dc2\"], mode = \"all\" }}\n"),
            "7:11: routes[0].fan_out.clusters: no cluster named \"dc2\" (defined: a)",
        ),
        (
            format!("{LISTENER}{CLUSTER}[clusters.b]\nendpoints = [\"127.0.0.1:2\"]\n[[routes]]\ncluster = \"a\"\nfan_out = {{ clusters = [\"b\"], mode = \"all\", header = \"x targets\" }}\n"),
            "9:11: routes[0].fan_out.header: \"x targets\" is not a valid metadata key",
        ),
        (
            format!("{LISTENER}{CLUSTER}[clusters.b]\nendpoints = [\"127.0.0.1:2\"]\n[[routes]]\ncluster = \"a\"\nfan_out = {{ clusters = [\"b\"], mode = \"merge\" }}\n"),
            "9:11: routes[0].fan_out.mode: \"merge\" is not \"first_success\", \"all\", \"concat\" or \"interleave\"",
        ),
        (
            format!("{LISTENER}{CLUSTER}[clusters.b]\nendpoints = [\"127.0.0.1:2\"]\n[[routes]]\ncluster = \"a\"\nretry = {{ on = [\"unavailable\"] }}\nfan_out = {{ clusters = [\"b\"], mode = \"all\" }}\n"),
            "10:11: routes[0]: fan_out sends each call once to each cluster; leave out retry and hedge",
        ),
        (
            format!("{LISTENER}[server]\nmax_connection_age = \"0s\"\n"),
            "1:1: server.max_connection_age: \"0s\" would close every connection at once; leave it out to keep connections",
        ),
        (
            format!("{LISTENER}[server]\nmax_connection_age_jitter = 1.5\n"),
            "1:1: server.max_connection_age_jitter: 1.5 is not a fraction below 1 (0.1 is ±10 %)",
        ),
        (
            format!("{LISTENER}{CLUSTER}retry_budget = {{ ratio = 1.5 }}\n"),
            "5:16: clusters.a.retry_budget.ratio: 1.5 is not a share of the calls (0 to 1)",
        ),
        (
            format!("{LISTENER}{CLUSTER}panic_threshold = 101\n"),
            "4:13: clusters.a.panic_threshold: 101 is not a percentage (0 to 100)",
        ),
        (
            format!("{LISTENER}{CLUSTER}max_streams_per_connection = 0\n"),
            "4:13: clusters.a.max_streams_per_connection must be at least 1",
        ),
        (
            format!("{LISTENER}[limits]\nmax_concurrent_streams = -1\n"),
            "4:26: max_concurrent_streams: invalid value: integer `-1`, expected u32",
        ),
    ];
    for (text, expected) in cases {
        let file = support::write_config(&text);
        let path = file.path().to_str().unwrap();
        let (code, stdout, stderr) = check(path);
        assert_eq!(code, Some(2), "{text}\n{stderr}");
        assert!(stdout.is_empty());
        assert_eq!(
            stderr,
            format!("grpcproxy: {path}:{expected}\n"),
            "for:\n{text}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let (code, _, stderr) = check("/nonexistent/grpcproxy.toml");
    assert_eq!(code, Some(2));
    assert_eq!(stderr, "grpcproxy: /nonexistent/grpcproxy.toml: cannot read: No such file or directory (os error 2)\n");
}

#[test]
fn a_bad_config_given_to_run_also_exits_2() {
    let file = support::write_config("listeners = []\n");
    let output = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(["--config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn worker_threads_must_be_positive() {
    let file = support::write_config(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[server]\nworker_threads = 0\n",
    );
    let (code, _, stderr) = support::check_config(file.path());
    assert_eq!(code, Some(2));
    assert!(
        stderr.ends_with("server.worker_threads: must be at least 1\n"),
        "{stderr}"
    );
}

#[test]
fn every_problem_is_reported_each_at_its_place() {
    let text = format!(
        "{LISTENER}[clusters.a]\nendpoints = [\"backend.internal\"]\npanic_threshold = 101\n\
         [[routes]]\ncluster = \"b\"\nmax_timeout = \"0s\"\n"
    );
    let file = support::write_config(&text);
    let path = file.path().to_str().unwrap();
    let (code, stdout, stderr) = check(path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(
        stderr,
        format!(
            "grpcproxy: {path}:4:13: clusters.a.endpoints: \"backend.internal\" is not host:port\n\
             grpcproxy: {path}:4:13: clusters.a.panic_threshold: 101 is not a percentage (0 to 100)\n\
             grpcproxy: {path}:7:11: routes[0].cluster: no cluster named \"b\" (defined: a)\n\
             grpcproxy: {path}:8:15: routes[0].max_timeout: \"0s\" would end every call at once with DEADLINE_EXCEEDED; leave max_timeout out for no deadline\n"
        )
    );
}

#[test]
fn routes_that_can_never_match_are_warned_about() {
    let text = format!(
        "{LISTENER}{CLUSTER}[[routes]]\ncluster = \"a\"\n\
         [[routes]]\nmatch.service = \"shop.*\"\ncluster = \"a\"\n\
         [[routes]]\nmatch.service = \"shop.*\"\ncluster = \"a\"\n"
    );
    let file = support::write_config(&text);
    let path = file.path().to_str().unwrap();
    let (code, stdout, stderr) = check(path);
    assert_eq!(code, Some(0), "valid, if odd: {stderr}");
    assert!(stdout.ends_with(": ok\n"), "{stdout}");
    assert_eq!(
        stderr,
        format!(
            "grpcproxy: warning: {path}:9:11: routes[1] can never match: routes[0] comes first and matches every call (first match wins)\n\
             grpcproxy: warning: {path}:12:11: routes[2] can never match: routes[0] comes first and matches every call (first match wins)\n"
        )
    );
    // Specific first, then the catch-all: nothing to say.
    let text = format!(
        "{LISTENER}{CLUSTER}[[routes]]\nmatch.service = \"shop.*\"\ncluster = \"a\"\n[[routes]]\ncluster = \"a\"\n"
    );
    let file = support::write_config(&text);
    let (code, _, stderr) = check(file.path().to_str().unwrap());
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    // Two routes with the same match.
    let text = format!(
        "{LISTENER}{CLUSTER}[[routes]]\nmatch.method = \"Get\"\ncluster = \"a\"\n[[routes]]\nmatch.method = \"Get\"\ncluster = \"a\"\n"
    );
    let file = support::write_config(&text);
    let (_, _, stderr) = check(file.path().to_str().unwrap());
    assert!(
        stderr.contains("routes[1] can never match: routes[0] comes first and has the same match"),
        "{stderr}"
    );
}
