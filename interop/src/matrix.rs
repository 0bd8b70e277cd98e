//! The matrix: which client talks to which backend over which path, how each check's
//! result is judged, and the table the suite prints.

use std::fmt::Write as _;

use crate::peers::Runtime;
use crate::{CheckResult, CHECKS};

/// How a client reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// No proxy: shows the check itself holds between the two peers.
    Direct,
    /// The `grpcproxy` binary in quick mode (`--listen ADDR --to URL`).
    Quick,
    /// A tonic server with grpcproxy's transparent handler as its fallback.
    Library,
}

impl Path {
    /// All three, in table order.
    pub const ALL: [Path; 3] = [Path::Direct, Path::Quick, Path::Library];

    /// Its name in target labels and the table.
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Quick => "quick",
            Path::Library => "library",
        }
    }
}

/// The label every client reports results under for `backend` reached over `path`.
///
/// ```
/// use grpcproxy_interop::{matrix::{target_label, Path}, peers::Runtime};
/// assert_eq!(target_label(Runtime::GrpcJs, Path::Quick), "grpc-js/quick");
/// ```
pub fn target_label(backend: Runtime, path: Path) -> String {
    format!("{}/{}", backend.name(), path.name())
}

/// One check in one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Passed.
    Pass,
    /// Failed, with what went wrong.
    Fail(String),
    /// Cannot apply to these peers, with why.
    NotApplicable(&'static str),
}

/// Judges one result of `client` against `backend`: beyond the client's own verdict,
/// tonic tells whether frames arrived compressed, so a tonic peer on the receiving side
/// must have seen gzip; and grpc-js servers never compress responses.
pub fn judge(client: Runtime, backend: Runtime, result: &CheckResult) -> Verdict {
    if !result.ok
        && client.is_web()
        && backend == Runtime::Grpcio
        && result.check == "large_8mib"
        && result.detail.contains("Error in parsing response body")
    {
        return Verdict::NotApplicable("grpcio (server-wide gzip) compresses large answers even to a client that accepts only identity, as the proxy says for gRPC-Web clients; they cannot decompress");
    }
    if !result.ok {
        return Verdict::Fail(result.detail.clone());
    }
    match result.check.as_str() {
        "gzip_server" if backend == Runtime::GrpcJs => {
            Verdict::NotApplicable("grpc-js servers do not compress responses (grpc-js 1.14)")
        }
        "gzip_server" if client == Runtime::Tonic && result.seen != "yes" => Verdict::Fail(
            format!("the response arrived uncompressed ({})", result.detail),
        ),
        "gzip_client" if backend == Runtime::Tonic && result.seen != "yes" => Verdict::Fail(
            format!("the backend saw no compressed frame ({})", result.detail),
        ),
        _ => Verdict::Pass,
    }
}

/// Why `check` cannot apply to `client` reaching a backend over `path`, if it cannot:
/// gRPC-Web clients reach backends only through the proxy, and do only what browsers can.
///
/// ```
/// use grpcproxy_interop::{matrix::{not_applicable, Path}, peers::Runtime};
/// assert!(not_applicable(Runtime::GrpcWeb, Path::Quick, "bidi").is_some());
/// assert!(not_applicable(Runtime::GrpcWeb, Path::Quick, "server_stream").is_none());
/// assert!(not_applicable(Runtime::Grpcio, Path::Direct, "bidi").is_none());
/// ```
pub fn not_applicable(client: Runtime, path: Path, check: &str) -> Option<&'static str> {
    if !client.is_web() {
        return None;
    }
    if path == Path::Direct {
        return Some("gRPC-Web clients need the proxy: backends speak gRPC only");
    }
    match check {
        "client_stream" | "bidi" | "empty_client_stream" | "empty_bidi" | "reflection" => {
            Some("gRPC-Web (what browsers can do) has no request streams")
        }
        "gzip_client" | "gzip_server" => {
            Some("the grpc-web client neither compresses nor decompresses messages")
        }
        _ => None,
    }
}

/// One row: a client, a backend and a path, with a verdict per check.
#[derive(Debug, Clone)]
pub struct Row {
    /// The client's implementation.
    pub client: Runtime,
    /// The backend's implementation.
    pub backend: Runtime,
    /// How the client reached the backend.
    pub path: Path,
    /// One verdict per [`CHECKS`] entry, in order.
    pub verdicts: Vec<Verdict>,
}

/// Every cell's verdicts, from every client's results.
#[derive(Debug, Clone)]
pub struct Report {
    rows: Vec<Row>,
    /// Results that belong to no cell (a crashed client, say): each one is a failure.
    stray: Vec<CheckResult>,
}

impl Report {
    /// Builds the report for every client × backend × path, from each client's results.
    /// A check with no result fails.
    pub fn new(results: &[(Runtime, Vec<CheckResult>)]) -> Self {
        let mut rows = Vec::new();
        for client in Runtime::CLIENTS {
            for backend in Runtime::ALL {
                for path in Path::ALL {
                    let label = target_label(backend, path);
                    let verdicts = CHECKS
                        .iter()
                        .map(|check| {
                            if let Some(why) = not_applicable(client, path, check) {
                                return Verdict::NotApplicable(why);
                            }
                            results
                                .iter()
                                .filter(|(runtime, _)| *runtime == client)
                                .flat_map(|(_, results)| results)
                                .find(|r| r.target == label && r.check == *check)
                                .map_or_else(
                                    || Verdict::Fail("no result".into()),
                                    |r| judge(client, backend, r),
                                )
                        })
                        .collect();
                    rows.push(Row {
                        client,
                        backend,
                        path,
                        verdicts,
                    });
                }
            }
        }
        let known = |r: &CheckResult| {
            CHECKS.contains(&r.check.as_str())
                && Runtime::ALL
                    .iter()
                    .any(|b| Path::ALL.iter().any(|p| target_label(*b, *p) == r.target))
        };
        let stray = results
            .iter()
            .flat_map(|(_, results)| results)
            .filter(|r| !known(r))
            .cloned()
            .collect();
        Self { rows, stray }
    }

    /// The rows, client by client.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Every failure, one line each (empty when everything passed).
    pub fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> = self
            .rows
            .iter()
            .flat_map(|row| {
                CHECKS
                    .iter()
                    .zip(&row.verdicts)
                    .filter_map(move |(check, verdict)| match verdict {
                        Verdict::Fail(detail) => Some(format!(
                            "{} → {} via {}: {check}: {detail}",
                            row.client.name(),
                            row.backend.name(),
                            row.path.name()
                        )),
                        _ => None,
                    })
            })
            .collect();
        failures.extend(
            self.stray
                .iter()
                .map(|r| format!("{}: {}", r.target, r.detail)),
        );
        failures
    }

    /// The table: a row per cell, a column per check, then totals, what does not apply
    /// and every failure.
    pub fn table(&self) -> String {
        const WIDTH: usize = 38;
        let mut out = String::new();
        let _ = write!(out, "{:<WIDTH$}", "client → backend via path");
        for check in CHECKS {
            let _ = write!(out, " {}", column(check));
        }
        out.push('\n');
        let (mut pass, mut fail, mut not_applicable) = (0, 0, Vec::new());
        for row in &self.rows {
            let name = format!(
                "{} → {} via {}",
                row.client.name(),
                row.backend.name(),
                row.path.name()
            );
            let _ = write!(out, "{name:<WIDTH$}");
            for (check, verdict) in CHECKS.iter().zip(&row.verdicts) {
                let mark = match verdict {
                    Verdict::Pass => {
                        pass += 1;
                        "ok"
                    }
                    Verdict::Fail(_) => {
                        fail += 1;
                        "FAIL"
                    }
                    Verdict::NotApplicable(why) => {
                        if !not_applicable.contains(why) {
                            not_applicable.push(*why);
                        }
                        "n/a"
                    }
                };
                let _ = write!(
                    out,
                    " {mark:<width$}",
                    width = column(check).chars().count()
                );
            }
            out.push('\n');
        }
        let cells = self.rows.len() * CHECKS.len();
        let _ = writeln!(
            out,
            "{} rows × {} checks = {cells}: {pass} ok, {fail} failed, {} n/a",
            self.rows.len(),
            CHECKS.len(),
            cells - pass - fail
        );
        for why in not_applicable {
            let _ = writeln!(out, "n/a: {why}");
        }
        for failure in self.failures() {
            let _ = writeln!(out, "FAIL {failure}");
        }
        out
    }
}

/// A check's column heading: short, so a row fits a terminal.
fn column(check: &str) -> &'static str {
    match check {
        "unary" => "unary",
        "client_stream" => "c-str",
        "server_stream" => "s-str",
        "bidi" => "bidi",
        "empty_client_stream" => "e-cstr",
        "empty_bidi" => "e-bidi",
        "metadata" => "meta",
        "status" => "status",
        "large_8mib" => "8MiB",
        "gzip_client" => "gz-cli",
        "gzip_server" => "gz-srv",
        "deadline" => "deadline",
        "cancel" => "cancel",
        "health" => "health",
        "reflection" => "reflect",
        "concurrent_100" => "100x",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(target: &str, check: &str, ok: bool, seen: &str) -> CheckResult {
        CheckResult {
            target: target.into(),
            check: check.into(),
            ok,
            detail: "detail".into(),
            seen: seen.into(),
        }
    }

    #[test]
    fn compression_must_be_seen_where_tonic_can_tell() {
        let seen_unknown = result("tonic/quick", "gzip_client", true, "unknown");
        assert!(matches!(
            judge(Runtime::Grpcio, Runtime::Tonic, &seen_unknown),
            Verdict::Fail(_)
        ));
        assert_eq!(
            judge(Runtime::Tonic, Runtime::Grpcio, &seen_unknown),
            Verdict::Pass
        );
        let gzip_server = result("grpc-js/quick", "gzip_server", true, "no");
        assert!(matches!(
            judge(Runtime::Tonic, Runtime::GrpcJs, &gzip_server),
            Verdict::NotApplicable(_)
        ));
        let failed = result("grpc-js/quick", "gzip_server", false, "");
        assert!(matches!(
            judge(Runtime::Tonic, Runtime::GrpcJs, &failed),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn missing_and_stray_results_fail() {
        let report = Report::new(&[(Runtime::Grpcio, vec![result("-", "client", false, "")])]);
        let failures = report.failures();
        // Every check that applies to a cell has no result, plus the stray crash report:
        // all 16 in the 27 gRPC rows, 9 in the 12 proxied gRPC-Web rows.
        let applicable = 27 * CHECKS.len() + 12 * 9;
        assert_eq!(failures.len(), applicable + 1);
        assert!(report
            .table()
            .contains(&format!("0 ok, {applicable} failed")));
    }
}
