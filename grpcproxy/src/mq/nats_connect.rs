//! How the tap reaches NATS: credentials taken out of the server URL (so no log line, of
//! ours or of the NATS client, can print them), a token, a credentials file, and TLS.

/// Credentials a server URL carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UrlCredentials {
    UserPassword(String, String),
    Token(String),
}

/// The server URLs (comma-separated in `urls`), each without its userinfo, and the first
/// credentials they carried (percent-decoded).
pub(crate) fn split_credentials(urls: &str) -> (Vec<String>, Option<UrlCredentials>) {
    let mut found = None;
    let stripped: Vec<String> = urls
        .split(',')
        .map(|text| {
            let text = text.trim();
            let Ok(mut url) = url::Url::parse(text) else {
                return text.to_owned(); // host:port without a scheme: no userinfo either
            };
            if url.username().is_empty() {
                return text.to_owned();
            }
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let user = decode(url.username());
            let credentials = match url.password() {
                Some(password) => UrlCredentials::UserPassword(user, decode(password)),
                None => UrlCredentials::Token(user),
            };
            found.get_or_insert(credentials);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        })
        .filter(|text: &String| !text.is_empty())
        .collect();
    (stripped, found)
}

/// Connects (retrying in the background until the broker is up), with `options`'
/// credentials and TLS. `stats` follows the connection, and its loss and recovery are
/// logged once each, at WARN and INFO.
pub(crate) async fn connect(
    options: &super::nats_options::NatsOptions,
    stats: &std::sync::Arc<super::stats::QueueStats>,
) -> Result<async_nats::Client, String> {
    let flag = stats.clone();
    let url = super::redact::redact_url(&options.url);
    // Set while the connection is lost, so that loss and recovery are logged once each.
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connect = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| {
            std::time::Duration::from_millis((100 * 2u64.pow(attempt.min(6) as u32)).min(5_000))
        })
        .event_callback(move |event| {
            let (flag, url, lost) = (flag.clone(), url.clone(), lost.clone());
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                match event {
                    async_nats::Event::Connected => {
                        flag.set_connected(true);
                        if lost.swap(false, Relaxed) {
                            tracing::info!(%url, "the tap reconnected to NATS");
                        }
                    }
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        flag.set_connected(false);
                        if !lost.swap(true, Relaxed) {
                            tracing::warn!(%url, "the tap lost its connection to NATS; events wait in its buffer and are published again once it is back");
                        }
                    }
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            }
        });
    let (connect, urls) = apply(options, connect).await.map_err(|e| e.to_string())?;
    connect.connect(urls).await.map_err(|e| e.to_string())
}

/// Adds `options`' authentication and TLS to `connect`; returns the URLs to connect to
/// (without credentials). An explicit token or credentials file wins over a URL's
/// userinfo.
async fn apply(
    options: &super::nats_options::NatsOptions,
    mut connect: async_nats::ConnectOptions,
) -> std::io::Result<(async_nats::ConnectOptions, Vec<String>)> {
    let (urls, from_url) = split_credentials(&options.url);
    if let Some(path) = &options.credentials_file {
        connect = connect.credentials_file(path).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("credentials file {}: {e}", path.display()),
            )
        })?;
    } else if let Some(token) = &options.token {
        connect = connect.token(token.clone());
    } else {
        match from_url {
            Some(UrlCredentials::UserPassword(user, password)) => {
                connect = connect.user_and_password(user, password);
            }
            Some(UrlCredentials::Token(token)) => connect = connect.token(token),
            None => {}
        }
    }
    if let Some(tls) = &options.tls {
        connect = connect.require_tls(true);
        if let Some(ca) = &tls.ca {
            connect = connect.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok((connect, urls))
}

#[cfg(test)]
mod tests {
    use super::{split_credentials, UrlCredentials};

    #[test]
    fn credentials_leave_the_url() {
        let (urls, found) = split_credentials("nats://al%40ce:S3cret%21@127.0.0.1:4222");
        assert_eq!(urls, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            found,
            Some(UrlCredentials::UserPassword(
                "al@ce".into(),
                "S3cret!".into()
            ))
        );
        // A cluster: every server is given to the client, each on its own.
        let (urls, found) = split_credentials("nats://t0k@a:1, nats://b:2,127.0.0.1:3");
        assert_eq!(urls, ["nats://a:1", "nats://b:2", "127.0.0.1:3"]);
        assert_eq!(found, Some(UrlCredentials::Token("t0k".into())));
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            (vec!["nats://127.0.0.1:4222".to_owned()], None)
        );
    }
}
