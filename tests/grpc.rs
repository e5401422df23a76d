//! gRPC through the proxy (docs/reference/protocols.md; SPEC §12): real tonic
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
            r#"slotproxy_instance_up{{address="127.0.0.1:{inst}",site="shop",slot="production"}}"#
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
        format!(r#"slotproxy_instance_up{{address="127.0.0.1:{a}",site="shop",slot="staging"}}"#);
    sync(|| {
        wait_for(20, "the NOT_SERVING instance to be marked down", || {
            (sample(&scrape(&proxy), &down) == Some(0.0)).then_some(())
        })
    });
}

/// A gRPC server over TLS (ALPN h2) serving the health service ("" and
/// `name` SERVING), its certificate (`tests/fixtures/upstream-cert.pem`,
/// valid for 127.0.0.1, localhost and app.test) issued by the test CA
/// `upstream-ca.pem` — made with `openssl req -x509` for the CA and
/// `openssl x509 -req -CA` for the server, both for 100 years.
async fn grpc_tls_server(name: &str) -> u16 {
    let (mut reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(name, ServingStatus::Serving)
        .await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(format!("{fixtures}/upstream-cert.pem")).unwrap(),
        std::fs::read(format!("{fixtures}/upstream-key.pem")).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(service)
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_to_instances_checks_their_certificate() {
    let tls = grpc_tls_server("slot-tls").await;
    let other = grpc_tls_server("slot-tls").await;
    let ca = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/upstream-ca.pem"
    );
    // production trusts the test CA; staging, a server with the same
    // certificate, trusts only the system's roots, which do not know it
    let config = format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["grpc.test"]
[[sites.slots]]
name = "production"
build_version = "a"
instances = ["127.0.0.1:{tls}"]
instances_protocol = "h2"
instances_tls_ca = "{ca}"
health_check = "grpc"
[[sites.slots]]
name = "staging"
build_version = "b"
instances = ["127.0.0.1:{other}"]
traffic_percent = 0
instances_protocol = "h2"
health_check = "grpc"
"#
    );
    let proxy = sync(|| Proxy::start(&config));
    let up = |slot: &str| {
        let port = if slot == "production" { tls } else { other };
        format!(r#"slotproxy_instance_up{{address="127.0.0.1:{port}",site="shop",slot="{slot}"}}"#)
    };
    sync(|| {
        wait_for(20, "both health verdicts over TLS", || {
            let m = scrape(&proxy);
            (sample(&m, &up("production")) == Some(1.0) && sample(&m, &up("staging")) == Some(0.0))
                .then_some(())
        })
    });

    // a unary call reaches the TLS server through HTTP/2 over TLS
    let mut c = client(proxy.port).await;
    let r = c
        .check(check("slot-tls", None))
        .await
        .expect("answered over TLS");
    assert_eq!(r.get_ref().status, Answer::Serving as i32);
    // trailers pass: an unknown service is the server's NOT_FOUND
    let e = c.check(check("nope", None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // a pin to staging, whose instance is down, is served by production
    let r = c.check(check("slot-tls", Some("staging"))).await.unwrap();
    assert_eq!(r.get_ref().status, Answer::Serving as i32);
    drop(proxy);

    // and the proxied path checks the certificate too, not only the health
    // check: with health checks that never mark staging down, a call pinned
    // to it fails (502 → UNAVAILABLE) and the server never answers it
    let lenient =
        |text: String| text.replace("unhealthy_threshold = 2", "unhealthy_threshold = 1000000");
    let proxy = sync(|| Proxy::start_edited(&config, 1, lenient));
    let mut c = client(proxy.port).await;
    let r = c
        .check(check("slot-tls", None))
        .await
        .expect("production answers");
    assert_eq!(r.get_ref().status, Answer::Serving as i32);
    let e = c
        .check(check("slot-tls", Some("staging")))
        .await
        .unwrap_err();
    // a gRPC error the client can act on (Trailers-Only, UNAVAILABLE),
    // counted as the 502 it stands for
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message()
            .contains("502 Bad Gateway: no instance of slot staging"),
        "{e:?}"
    );
    let bad = r#"slotproxy_requests_total{code="502",site="shop",slot="staging"}"#;
    assert_eq!(series(&proxy, bad), Some(1.0));
    let log = proxy.log();
    assert!(
        log.contains("UnknownIssuer") || log.contains("invalid peer certificate"),
        "the proxy's log names the untrusted certificate:\n{log}"
    );
}

/// A client of the proxy's TLS listener (ALPN h2), which serves the test
/// instances' certificate (`upstream-cert.pem`, issued by the test CA),
/// for host `host`.
async fn tls_client(tls_port: u16, host: &str) -> HealthClient<Channel> {
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/upstream-ca.pem"
    ))
    .unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{tls_port}"))
        .unwrap()
        .origin(format!("https://{host}").parse().unwrap())
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("an HTTP/2 connection over TLS to the proxy");
    HealthClient::new(channel)
}

/// A client of the proxy's plain listener (h2c) for host `host`.
async fn h2c_client(port: u16, host: &str) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .origin(format!("http://{host}").parse().unwrap())
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("an h2c connection to the proxy");
    HealthClient::new(channel)
}

/// Issue 23 item 2: the answers the proxy makes itself reach gRPC clients
/// as gRPC codes (Trailers-Only: HEADERS with END_STREAM, no DATA, no
/// RST_STREAM), over h2c and over TLS h2: an unknown host is NOT_FOUND; a
/// slot with no deployment, and a dead instance, UNAVAILABLE. Each is
/// counted as the HTTP status it stands for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_answers_are_grpc_codes_over_h2c_and_tls() {
    let dead = free_port();
    let tls_port = free_port();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let config = format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["grpc.test"]
[[sites.slots]]
name = "production"
[[sites.slots]]
name = "staging"
traffic_percent = 0
instances = ["127.0.0.1:{dead}"]
instances_protocol = "h2c"
health_check = "grpc"
"#
    );
    let keys = format!(
        "threads = 1\ntls_listen = [\"127.0.0.1:{tls_port}\"]\ntls_cert_path = \"{fixtures}/upstream-cert.pem\"\ntls_key_path = \"{fixtures}/upstream-key.pem\"\n"
    );
    // health checks that never mark the dead instance down: it is tried
    let edit = |t: String| {
        t.replacen("threads = 1\n", &keys, 1)
            .replace("unhealthy_threshold = 2", "unhealthy_threshold = 1000000")
    };
    let proxy = sync(|| Proxy::start_edited(&config, 1, edit));
    for tls in [false, true] {
        let connect = |host: &'static str| async move {
            match tls {
                true => tls_client(tls_port, host).await,
                false => h2c_client(proxy.port, host).await,
            }
        };
        let mut nowhere = connect("nowhere.test").await;
        let e = nowhere.check(check("", None)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "tls {tls}: {e:?}");
        assert!(e.message().contains("no site is configured"), "{e:?}");

        let mut c = connect("grpc.test").await;
        let e = c.check(check("", None)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "tls {tls}: {e:?}");
        assert!(e.message().contains("has no deployment"), "{e:?}");
        let e = c.check(check("", Some("staging"))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "tls {tls}: {e:?}");
        assert!(e.message().contains("502 Bad Gateway"), "{e:?}");
    }
    // on the wire (h2c): one HEADERS frame with END_STREAM, grpc-status in
    // it; pingora-proxy sent HEADERS, then an empty DATA with END_STREAM
    // (or RST_STREAM), which grpcio reads as UNKNOWN / CANCELLED
    for (host, pin, want) in [
        ("nowhere.test", None, "5"),
        ("grpc.test", None, "14"),
        ("grpc.test", Some("staging"), "14"),
    ] {
        let (headers, ended) = raw_grpc_call(proxy.port, host, pin).await;
        assert_eq!(headers.get(":status").map(String::as_str), Some("200"));
        assert_eq!(headers["grpc-status"], want, "{host} {pin:?}: {headers:?}");
        assert!(ended, "{host} {pin:?}: END_STREAM on the HEADERS frame");
    }
    let m = sync(|| scrape(&proxy));
    let code = |c: &str, slot: &str| {
        sample(
            &m,
            &format!(r#"slotproxy_requests_total{{code="{c}",site="shop",slot="{slot}"}}"#),
        )
    };
    assert_eq!(code("503", "production"), Some(3.0), "{m}");
    assert_eq!(code("502", "staging"), Some(3.0), "{m}");
}

/// A gRPC health check sent with the `h2` crate over h2c: the response
/// head's fields (`:status` among them), and whether its HEADERS frame
/// ended the stream.
async fn raw_grpc_call(
    port: u16,
    host: &str,
    pin: Option<&str>,
) -> (std::collections::HashMap<String, String>, bool) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let mut req = http::Request::post(format!("http://{host}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(slot) = pin {
        req = req.header("cookie", format!("x-ms-routing-name={slot}"));
    }
    let (resp, mut body) = send.send_request(req.body(()).unwrap(), false).unwrap();
    // an empty HealthCheckRequest: flag 0, length 0
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let resp = resp.await.unwrap();
    let mut fields: std::collections::HashMap<String, String> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    fields.insert(":status".into(), resp.status().as_u16().to_string());
    (fields, resp.body().is_end_stream())
}
