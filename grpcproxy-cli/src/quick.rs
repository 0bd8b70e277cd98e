//! Quick mode: `grpcproxy --listen ADDR --to URL` forwards every call to one backend. It
//! runs as a configuration of one listener, one route (`quick`) and one cluster (`backend`)
//! of one endpoint, so it has what config mode has: metrics and `/clusters` with
//! `--admin`, an access log with `--access-log`, passive health, the drain.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::Context;
use grpcproxy::Upstream;

use crate::config::{self, LoadedConfig};

/// What quick mode was asked for on the command line.
#[derive(Debug)]
pub(crate) struct QuickArgs<'a> {
    pub(crate) listen: &'a str,
    pub(crate) to: &'a str,
    pub(crate) admin: Option<&'a str>,
    pub(crate) access_log: Option<&'a str>,
    /// Serve gRPC-Web, any origin.
    pub(crate) grpc_web: bool,
}

/// The configuration quick mode runs: checked like a file's.
pub(crate) fn config(args: &QuickArgs<'_>) -> anyhow::Result<LoadedConfig> {
    let to = args.to;
    Upstream::new(to).with_context(|| format!("--to {to}"))?;
    let uri: http::Uri = to.parse().with_context(|| format!("--to {to}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().with_context(|| format!("--to {to}: no host"))?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let listen = resolve("--listen", args.listen)?;
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let mut text = format!(
        "[[listeners]]\naddress = {}\n{}[[routes]]\nname = \"quick\"\ncluster = \"backend\"\n\
         [clusters.backend]\nendpoints = [{}]\n",
        quoted(&listen.to_string()),
        if args.grpc_web {
            "grpc_web = true\ncors = { allow_origins = [\"*\"] }\n"
        } else {
            ""
        },
        quoted(&format!("{host}:{port}")),
    );
    if https {
        text.push_str("tls = {}\n"); // the system's roots, SNI from the host
    }
    if let Some(admin) = args.admin {
        let admin = resolve("--admin", admin)?;
        text.push_str(&format!(
            "[admin]\naddress = {}\n",
            quoted(&admin.to_string())
        ));
    }
    if let Some(path) = args.access_log {
        text.push_str(&format!("[access_log]\npath = {}\n", quoted(path)));
    }
    let config =
        config::parse(Path::new("(quick mode)"), &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(LoadedConfig {
        path: PathBuf::from(format!("--to {to}")),
        config,
        warnings: Vec::new(),
        from_file: false,
    })
}

/// `host:port`, a name resolved to its first address.
fn resolve(flag: &str, address: &str) -> anyhow::Result<SocketAddr> {
    address
        .to_socket_addrs()
        .with_context(|| format!("{flag} {address}: expected host:port"))?
        .next()
        .with_context(|| format!("{flag} {address}: the name has no address"))
}
