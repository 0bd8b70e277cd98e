//! A real browser through the gRPC-Web listener: headless Chromium (Debian `chromium`)
//! loads the example page (`examples/web/`) from a static site on one origin, and the
//! page calls the tonic interop backend through the `grpcproxy` binary on another
//! (`grpc_web = true`, CORS allowing the page's origin): a greeting echoed, a server stream
//! of 100 messages, an error with rich details, a deadline, a cancelled stream. The test
//! reads the page's results from its DOM, asserts each exactly, and keeps a screenshot in
//! its output directory (`target/tmp/grpc-web-page.png`).
//!
//! Chromium comes from `bash scripts/test.sh` (and the driver, puppeteer-core, from
//! `bash interop/install.sh`, which it runs); without them this test fails, it does not skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use grpcproxy_testing::site::StaticSite;

/// Loads `url` in headless Chromium (driven by `interop/node/browser.js`, puppeteer-core
/// on Debian's `chromium`) until the page says it is done; the page's results, and a
/// screenshot written to `screenshot`.
fn browse(url: &str, screenshot: &Path) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/node/browser.js");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is missing: install it (`apt-get install chromium`; scripts/test.sh does)"
    );
    let output = Command::new("node")
        .arg(&script)
        .arg(url)
        .arg(screenshot)
        .output()
        .expect("node runs (bash interop/install.sh installs the browser driver)");
    assert!(
        output.status.success(),
        "the browser run failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    line["results"].as_array().expect("results").clone()
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/web")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_calls_through_the_grpc_web_listener() {
    let backend = grpcproxy_interop::backend::serve().await;
    let site = StaticSite::serve(example_dir()).await;
    let listener = format!(
        "grpc_web = true\ncors = {{ allow_origins = [\"http://{}\"], max_age = \"10m\" }}",
        site.addr()
    );
    let config = format!(
        r#"{head}
[[routes]]
cluster = "interop"

[clusters.interop]
endpoints = ["{backend}"]
"#,
        head = support::admin_and_listener(&listener),
        backend = backend.addr(),
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let url = format!(
        "http://{}/index.html?proxy=http://{}",
        site.addr(),
        proxy.listening[0]
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("grpc-web-page.png");
    let _ = std::fs::remove_file(&shot);
    let started = Instant::now();
    let (url_for_browser, shot_for_browser) = (url.clone(), shot.clone());
    let results = tokio::task::spawn_blocking(move || browse(&url_for_browser, &shot_for_browser))
        .await
        .unwrap();
    let took = started.elapsed();
    let got: Vec<(String, bool, String)> = results
        .iter()
        .map(|r| {
            (
                r["call"].as_str().unwrap().to_owned(),
                r["ok"].as_bool().unwrap(),
                r["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("unary", "echoed \"Hello from the browser ✓\""),
        ("server_stream", "100 messages in order, status OK"),
        (
            "error_details",
            "code 9, \"no greeting today ✓\", detail interop.v1.Request \"why\"",
        ),
        ("deadline", "DEADLINE_EXCEEDED within 2.5 s"),
        ("cancel", "cancelled after 2 messages; the backend saw it"),
    ];
    let expected: Vec<(String, bool, String)> = expected
        .iter()
        .map(|(call, detail)| ((*call).to_owned(), true, (*detail).to_owned()))
        .collect();
    assert_eq!(got, expected, "the page's results (in {took:?})");

    // Preflights went through the proxy's CORS policy: the page's calls carry
    // x-grpc-web and x-user-agent, which a cross-origin request may not send unasked.
    let admin = proxy.admin.unwrap();
    let metrics = support::http_get(admin, "/metrics").1;
    assert!(
        metrics
            .contains("grpcproxy_grpc_web_requests_total{kind=\"preflight\",result=\"allowed\"}"),
        "no preflight counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("grpc_web"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!(
        "Chromium: 5 calls through the proxy in {took:?}; screenshot {}",
        shot.display()
    );
}
