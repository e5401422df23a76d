//! gRPC through the proxy (README, "Protocols"; SPEC §12): real tonic
//! servers behind slots with `instances_protocol = "h2c"` and
//! `health_check = "grpc"`, a real tonic client in front. The standard gRPC
//! health service is the service under test: each server reports its own
//! service name (`slot-a`, `slot-b`) as SERVING, so an answer tells which
//! server it came from, and an unknown name is a real gRPC error
//! (`NOT_FOUND` in the trailers).

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus as Answer;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// A gRPC server on a free port serving the health service, `name` SERVING.
async fn grpc_server(name: &str) -> (u16, HealthReporter) {
    let (mut reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(name, ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    (port, reporter)
}

fn site(a: u16, b: u16) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["grpc.test"]
[[sites.slots]]
name = "production"
build_version = "a"
instances = ["127.0.0.1:{a}"]
instances_protocol = "h2c"
health_check = "grpc"
warmup_timeout_secs = 2
[[sites.slots]]
name = "staging"
build_version = "b"
instances = ["127.0.0.1:{b}"]
traffic_percent = 0
instances_protocol = "h2c"
health_check = "grpc"
warmup_timeout_secs = 2
"#
    )
}

/// A client of the proxy's plain listener, for host `grpc.test`.
async fn client(proxy_port: u16) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{proxy_port}"))
        .unwrap()
        .origin("http://grpc.test".parse().unwrap())
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("an HTTP/2 connection to the proxy");
    HealthClient::new(channel)
}

fn check(service: &str, pin: Option<&str>) -> tonic::Request<HealthCheckRequest> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    if let Some(slot) = pin {
        let cookie = format!("x-ms-routing-name={slot}").parse().unwrap();
        req.metadata_mut().insert("cookie", cookie);
    }
    req
}

/// Which server answers a unary call now: the name it reports SERVING.
async fn who(c: &mut HealthClient<Channel>, pin: Option<&str>) -> &'static str {
    for name in ["slot-a", "slot-b"] {
        if let Ok(r) = c.check(check(name, pin)).await {
            assert_eq!(r.get_ref().status, Answer::Serving as i32);
            return name;
        }
    }
    panic!("neither server answered");
}

/// The blocking helpers of `common` (reqwest's blocking client) may not
/// run on an async worker as they are.
fn sync<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn series(proxy: &Proxy, series: &str) -> Option<f64> {
    sync(|| sample(&scrape(proxy), series))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_and_follow_a_swap_while_streams_stay() {
    let (a, mut reporter_a) = grpc_server("slot-a").await;
    let (b, _reporter_b) = grpc_server("slot-b").await;
    let proxy = sync(|| Proxy::start(&site(a, b)));
    // gRPC health checks see both servers up (an HTTP/1 GET would not)
    let up = |inst: u16| {
        format!(
            r#"slotproxy_instance_up{{instance="127.0.0.1:{inst}",site="shop",slot="production"}}"#
        )
    };
    let p = &proxy;
    // instances start up, so wait past the thresholds (2 × 100 ms) first:
    // an HTTP/1 probe of these servers would have marked them down by then
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(series(p, &up(a)), Some(1.0));
    assert_eq!(
        series(p, &up(b).replace("production", "staging")),
        Some(1.0)
    );

    let mut c = client(proxy.port).await;
    // unary, production
    assert_eq!(who(&mut c, None).await, "slot-a");
    // a gRPC error passes through with its status and message intact
    let err = c.check(check("no-such-service", None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // the pin cookie works as for any request
    assert_eq!(who(&mut c, Some("staging")).await, "slot-b");

    // a server-streaming call on production, open across the swap
    let mut watch = c
        .clone()
        .watch(check("slot-a", None))
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, Answer::Serving as i32);

    let (code, body) = sync(|| {
        p.admin(
            "POST",
            "/api/v1/sites/shop/slots/staging/swap",
            Some(&json!({"target_slot": "production", "action": "swap"}).to_string()),
        )
    });
    assert_eq!(code, 202, "{body}");
    let id = body["operation_id"].as_str().unwrap().to_string();
    let op = sync(|| {
        wait_for(60, "the swap to settle", || {
            let (_, op) = p.admin("GET", &format!("/api/v1/operations/{id}"), None);
            (op["status"] != "running").then_some(op)
        })
    });
    assert_eq!(op["status"], "succeeded", "{op:#}");

    // new calls go to the new production...
    assert_eq!(who(&mut c, None).await, "slot-b");
    // ...while the open stream stays on the server it started on, and
    // still carries its updates
    reporter_a
        .set_service_status("slot-a", ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the open stream still delivers")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, Answer::NotServing as i32);

    // a server whose health service says NOT_SERVING is marked down
    reporter_a
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let down =
        format!(r#"slotproxy_instance_up{{instance="127.0.0.1:{a}",site="shop",slot="staging"}}"#);
    sync(|| {
        wait_for(20, "the NOT_SERVING instance to be marked down", || {
            (sample(&scrape(&proxy), &down) == Some(0.0)).then_some(())
        })
    });
}
