//! Endpoints given by name: every address is an endpoint, refreshed periodically. Where
//! `localhost` also resolves to ::1 (the backend listens on 127.0.0.1 only), the address
//! that does not answer costs no call: calls fail over, then it is ejected.

mod support;

use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use support::http_get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_endpoint_serves_through_every_address_it_resolves_to() {
    let (backend, service) = ping_backend().await;
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"named\"\n\
         [clusters.named]\nendpoints = [\"localhost:{}\"]\ndns_refresh = \"100ms\"\n",
        backend.addr().port()
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let mut client = ping_client(proxy.listening[0]).await;
    for i in 0..30 {
        let reply = client
            .ping(PingRequest {
                value: format!("{i}"),
                ..Default::default()
            })
            .await;
        assert_eq!(
            reply.expect("every call succeeds").into_inner().value,
            format!("{i}")
        );
        if i == 10 {
            std::thread::sleep(std::time::Duration::from_millis(300)); // a few DNS refreshes
        }
    }
    assert!(service.events().last_metadata().is_some());
    let (_, metrics) = http_get(proxy.admin.unwrap(), "/metrics");
    let endpoint = format!(
        r#"grpcproxy_endpoint_healthy{{cluster="named",endpoint="127.0.0.1:{}"}} 1"#,
        backend.addr().port()
    );
    assert!(metrics.lines().any(|l| l == endpoint), "{metrics}");
}
