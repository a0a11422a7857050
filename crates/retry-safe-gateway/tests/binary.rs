//! The gateway binary in front of the Python upstream: what a client sees, what the upstream did.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn keyed(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Authorization", format!("Bearer {DEMO_KEY}")),
        ("Idempotency-Key", key.to_owned()),
    ]
}

fn post_keyed(gw: &Gateway, key: &str, body: &str) -> Resp {
    let h = keyed(key);
    let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
    gw.request(&post("/orders", &h, body))
}

#[test]
fn a_post_retried_fifty_times_and_fifty_concurrent_duplicates_create_one_order_each() {
    let up = Upstream::start();
    let dir = scratch("retried");
    let gw = Gateway::start(&dir, &config(up.port, &dir, ""));
    let first = post_keyed(&gw, "order-retried", r#"{"item":"book"}"#);
    assert_eq!(first.status, 201, "{first:?}");
    for _ in 0..49 {
        let again = post_keyed(&gw, "order-retried", r#"{"item":"book"}"#);
        assert_eq!(
            (again.status, &again.body),
            (first.status, &first.body),
            "a replay is the first answer byte for byte"
        );
        assert_eq!(again.header("location"), first.header("location"));
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    let port = gw.port;
    let racers: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let h = keyed("order-raced");
                let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
                request(port, &post("/orders", &h, r#"{"item":"pen"}"#))
            })
        })
        .collect();
    let answers: Vec<Resp> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        answers
            .iter()
            .all(|a| a.status == 201 && a.body == answers[0].body),
        "{answers:?}"
    );
    assert_eq!(
        up.stats()["orders_created"],
        2,
        "one order per key reached the upstream"
    );
}

#[test]
fn every_refusal_is_problem_json_with_the_envelope() {
    let up = Upstream::start();
    let dir = scratch("refusals");
    let extra = r#"
[[route]]
methods = ["GET"]
path = "/limited"
upstream = "orders"
rate_limit = [{ key = "client_ip", rate = 1, burst = 1 }]
"#;
    let gw = Gateway::start(&dir, &config(up.port, &dir, extra));
    // 401: no key, then an unknown key.
    gw.request(&post("/orders", &[("Idempotency-Key", "k")], "{}"))
        .assert_problem(401, "api_key_missing");
    let unknown = gw.request(&post(
        "/orders",
        &[
            ("Idempotency-Key", "k"),
            ("Authorization", "Bearer sk_nope"),
        ],
        "{}",
    ));
    unknown.assert_problem(401, "api_key_invalid");
    assert_eq!(unknown.header("www-authenticate"), Some("Bearer"));
    // 400: the key is required.
    let h = [("Authorization", format!("Bearer {DEMO_KEY}"))];
    let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
    gw.request(&post("/orders", &h, "{}"))
        .assert_problem(400, "idempotency_key_missing");
    // 422: the same key with another body.
    assert_eq!(post_keyed(&gw, "k-422", r#"{"item":"a"}"#).status, 201);
    post_keyed(&gw, "k-422", r#"{"item":"b"}"#).assert_problem(422, "idempotency_key_reused");
    // 409: a duplicate while the first is in flight (this route does not wait).
    let port = gw.port;
    let slow = std::thread::spawn(move || {
        request(
            port,
            &post("/slow?ms=800", &[("Idempotency-Key", "k-409")], "{}"),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    gw.request(&post("/slow?ms=800", &[("Idempotency-Key", "k-409")], "{}"))
        .assert_problem(409, "idempotency_request_in_flight");
    assert_eq!(slow.join().unwrap().status, 200);
    // 429: the second within the rate.
    assert_eq!(
        gw.request(&get("/limited", &[])).status,
        404,
        "the upstream has no /limited: it answered"
    );
    let limited = gw.request(&get("/limited", &[]));
    limited.assert_problem(429, "rate_limited");
    assert!(
        limited.header("ratelimit").is_some() && limited.header("retry-after").is_some(),
        "{limited:?}"
    );
    // 504: the upstream is slower than the route's timeout (2 s).
    gw.request(&get("/slow?ms=3000", &[]))
        .assert_problem(504, "upstream_timeout");
    // 502: nothing listens at the upstream's address.
    gw.request(&get("/down", &[]))
        .assert_problem(502, "upstream_unavailable");
    // 404 and 405 of the gateway's own table.
    gw.request(&get("/nothing-here", &[]))
        .assert_problem(404, "route_not_found");
    let wrong = gw.request(&get("/orders", &[]));
    wrong.assert_problem(405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    // Every line of the access log has the envelope's fields, and no line has the API key.
    std::thread::sleep(Duration::from_millis(100));
    let log = gw.access.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.contains("\"error_code\":\"upstream_timeout\"")),
        "{log:?}"
    );
    assert!(log.iter().all(|l| !l.contains(DEMO_KEY)
        && l.contains("\"request_id\"")
        && l.contains("\"latency_ms\"")));
}

#[test]
fn a_request_over_the_shedders_capacity_is_refused_503_overloaded() {
    let up = Upstream::start();
    let dir = scratch("shed");
    let cfg = config(up.port, &dir, "").replace("capacity = 64", "capacity = 4");
    let gw = Gateway::start(&dir, &cfg);
    let port = gw.port;
    let hold: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || request(port, &get("/slow?ms=1500", &[]))))
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    gw.request(&get("/slow?ms=1", &[]))
        .assert_problem(503, "overloaded");
    // The holders themselves were admitted or shed, each with an answer (reads are shed before
    // the shedder is full).
    let held: Vec<u16> = hold.into_iter().map(|h| h.join().unwrap().status).collect();
    assert!(
        held.contains(&200) && held.iter().all(|s| [200, 503].contains(s)),
        "{held:?}"
    );
}

#[test]
fn a_forged_webhook_is_refused_and_a_signed_one_reaches_the_upstream() {
    let up = Upstream::start();
    let dir = scratch("webhook");
    let gw = Gateway::start(&dir, &config(up.port, &dir, ""));
    let body = r#"{"type":"payment.captured"}"#;
    let forged = gw.request(&post(
        "/webhooks/psp",
        &[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", "1700000000"),
            ("webhook-signature", "v1,AAAA"),
        ],
        body,
    ));
    assert!(forged.status == 400 || forged.status == 401, "{forged:?}");
    assert_eq!(
        forged.header("content-type"),
        Some("application/problem+json")
    );
    let secret = webhook_sig::Secret::from_standard(PSP_SECRET).unwrap();
    let signer = webhook_sig::Signer::new(webhook_sig::Scheme::StandardWebhooks, &secret);
    let headers = signer.headers("msg_2", body.as_bytes()).unwrap();
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    let signed = gw.request(&post("/webhooks/psp", &h, body));
    assert_eq!(signed.status, 200, "{signed:?}");
    assert_eq!(up.stats()["webhooks_received"], 1);
}

#[test]
fn sighup_applies_a_changed_limit_without_losing_a_request_in_flight_and_a_broken_reload_is_refused(
) {
    let up = Upstream::start();
    let dir = scratch("reload");
    let route = |rate: u32| {
        format!("\n[[route]]\nmethods = [\"GET\"]\npath = \"/limited\"\nupstream = \"orders\"\nrate_limit = [{{ key = \"global\", rate = {rate}, burst = {rate}, period = \"1h\" }}]\n")
    };
    let gw = Gateway::start(&dir, &config(up.port, &dir, &route(1000)));
    let port = gw.port;
    let in_flight = std::thread::spawn(move || request(port, &get("/slow?ms=1500", &[])));
    std::thread::sleep(Duration::from_millis(300));
    gw.reload(&config(up.port, &dir, &route(2)));
    gw.wait_event("\"reloaded\"", Duration::from_secs(5));
    assert_eq!(
        in_flight.join().unwrap().status,
        200,
        "the request in flight during the reload completed"
    );
    let statuses: Vec<u16> = (0..4)
        .map(|_| gw.request(&get("/limited", &[])).status)
        .collect();
    assert_eq!(
        statuses,
        [404, 404, 429, 429],
        "the new limit (2 per hour) applies"
    );
    // A broken file is refused and the running config goes on (the same limiter: still spent).
    gw.reload("[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]\n");
    let refused = gw.wait_event("reload_refused", Duration::from_secs(5));
    assert!(refused.contains("gateway.toml:3:"), "{refused}");
    assert_eq!(gw.request(&get("/limited", &[])).status, 429);
    assert_eq!(gw.request(&get("/slow?ms=1", &[])).status, 200);
    // An unchanged limit keeps its state across a good reload.
    gw.reload(&config(up.port, &dir, &route(2)));
    let reloads = || {
        gw.events
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"reloaded\""))
            .count()
    };
    let start = Instant::now();
    while reloads() < 2 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(reloads(), 2);
    assert_eq!(
        gw.request(&get("/limited", &[])).status,
        429,
        "an unchanged policy keeps its limiter"
    );
}

#[test]
fn sigterm_drains_the_requests_in_flight_then_exits() {
    let up = Upstream::start();
    let dir = scratch("drain");
    let mut gw = Gateway::start(&dir, &config(up.port, &dir, ""));
    let port = gw.port;
    let in_flight = std::thread::spawn(move || request(port, &get("/slow?ms=1000", &[])));
    std::thread::sleep(Duration::from_millis(300));
    assert!(testkit::signal(gw.pid(), "TERM"));
    assert_eq!(
        in_flight.join().unwrap().status,
        200,
        "the request in flight was answered"
    );
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(gw
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("\"stopped\"") && l.contains("\"drained\":true")));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens after the drain"
    );
}

#[test]
fn a_request_framed_two_ways_is_read_by_its_chunked_framing_alone_and_nothing_is_smuggled() {
    let up = Upstream::start();
    let dir = scratch("smuggle");
    let gw = Gateway::start(&dir, &config(up.port, &dir, ""));
    // Content-Length says the body is the rest; the chunked framing says it is empty and a second
    // request follows. Whatever the gateway answers, the hidden POST must never reach the upstream.
    let hidden = format!("POST /orders HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {DEMO_KEY}\r\nIdempotency-Key: hidden\r\nContent-Length: 2\r\n\r\n{{}}");
    let smuggled = format!("POST /slow?ms=1 HTTP/1.1\r\nHost: gw\r\nIdempotency-Key: s1\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}", 5 + hidden.len());
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(smuggled.as_bytes()).unwrap();
    let res = read_response(&mut s);
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(
        res.header("connection"),
        Some("close"),
        "RFC 9112 §6.1: the connection closes after such a request"
    );
    // Two different lengths, and a transfer coding that is not chunked: 400.
    assert_eq!(
        gw.request(
            "POST /orders HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
        )
        .status,
        400
    );
    assert_eq!(
        gw.request("POST /orders HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n")
            .status,
        400
    );
    assert_eq!(
        up.stats()["orders_created"],
        0,
        "the hidden request never reached the upstream"
    );
}

#[test]
fn a_slow_sender_is_cut_off_and_holds_no_capacity_meanwhile() {
    let up = Upstream::start();
    let dir = scratch("slowloris");
    let cfg = config(up.port, &dir, "").replace("capacity = 64", "capacity = 2");
    let gw = Gateway::start(&dir, &cfg);
    let port = gw.port;
    // Four bodies trickling a byte every 300 ms: more than the shedder's capacity.
    let tricklers: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let head = format!("POST /slow?ms=1 HTTP/1.1\r\nHost: gw\r\nIdempotency-Key: t{i}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n");
                s.write_all(head.as_bytes()).unwrap();
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(6) {
                    if s.write_all(b"x").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
                (read_response(&mut s), start.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(
            gw.request(&get("/slow?ms=1", &[])).status,
            200,
            "a trickling body holds no slot"
        );
    }
    for t in tricklers {
        let (res, took) = t.join().unwrap();
        res.assert_problem(408, "request_body_timeout");
        assert!(
            took < Duration::from_secs(5),
            "cut off by the minimum rate, not the deadline: {took:?}"
        );
    }
    assert_eq!(up.stats()["orders_created"], 0);
}

#[test]
fn server_sent_events_stream_through() {
    let up = Upstream::start();
    let dir = scratch("sse");
    let gw = Gateway::start(&dir, &config(up.port, &dir, ""));
    let res = gw.request(&get("/events", &[]));
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        String::from_utf8_lossy(&res.body),
        "data: tick 0\n\ndata: tick 1\n\ndata: tick 2\n\n"
    );
}

#[test]
fn the_admin_listener_reports_health_readiness_and_metrics() {
    let up = Upstream::start();
    let dir = scratch("admin");
    let gw = Gateway::start(&dir, &config(up.port, &dir, ""));
    assert_eq!(gw.request(&get("/slow?ms=1", &[])).status, 200);
    let admin = gw.admin.unwrap();
    assert_eq!(request(admin, &get("/healthz", &[])).status, 200);
    assert_eq!(request(admin, &get("/readyz", &[])).status, 200);
    let metrics = String::from_utf8(request(admin, &get("/metrics", &[])).body).unwrap();
    assert!(
        metrics.contains("gateway_requests_total{route=\"GET /slow\",status=\"2xx\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_upstream_sees_the_forwarding_headers_and_no_hop_by_hop_ones() {
    // A one-shot upstream that echoes the request head it got.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8192];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n\r\nok");
        head
    });
    let dir = scratch("forwarding");
    let gw = Gateway::start(&dir, &config(port, &dir, ""));
    let res = gw.request(&get(
        "/slow?ms=1",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Connection", "x-secret-hop"),
            ("X-Secret-Hop", "1"),
            ("TE", "trailers"),
        ],
    ));
    assert_eq!(res.status, 200);
    assert!(res.header("keep-alive").is_none(), "{res:?}");
    assert!(res
        .header("via")
        .is_some_and(|v| v.contains("retry-safe-gateway")));
    let head = echo.join().unwrap().to_ascii_lowercase();
    assert!(
        head.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("forwarded: for=127.0.0.1;proto=http;host=\"gw\"\r\n"),
        "{head}"
    );
    assert!(
        head.contains("via: 1.1 retry-safe-gateway\r\n") && head.contains("host: gw\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("x-secret-hop") && !head.contains("\r\nte:"),
        "{head}"
    );
}

#[test]
fn upstream_failures_are_retried_only_where_a_retry_is_safe() {
    let up = Upstream::start();
    let dir = scratch("retries");
    let extra = r#"
[[route]]
methods = ["GET", "POST"]
path = "/flaky"
upstream = "orders"
retry = { attempts = 3 }
idempotency = { required = false }

[[route]]
methods = ["GET"]
path = "/down-retried"
upstream = "nowhere"
retry = { attempts = 3 }
"#;
    let gw = Gateway::start(&dir, &config(up.port, &dir, extra));
    let calls =
        |name: &str| request(up.port, &get(&format!("/flaky/{name}"), &[])).json()["calls"].clone();
    // A GET's 500 is retried: the client sees the second call's 200.
    assert_eq!(gw.request(&get("/flaky?name=get", &[])).status, 200);
    assert_eq!(calls("get"), 2);
    // A POST without a key may have acted: its 500 is the answer, not retried.
    assert_eq!(gw.request(&post("/flaky?name=post", &[], "{}")).status, 500);
    assert_eq!(calls("post"), 1);
    // A keyed POST is retried (inside its key's lease), and a retry of it replays.
    assert_eq!(
        gw.request(&post(
            "/flaky?name=keyed",
            &[("Idempotency-Key", "flaky-1")],
            "{}"
        ))
        .status,
        200
    );
    assert_eq!(
        gw.request(&post(
            "/flaky?name=keyed",
            &[("Idempotency-Key", "flaky-1")],
            "{}"
        ))
        .status,
        200
    );
    assert_eq!(calls("keyed"), 2);
    // Nothing listening: every attempt refused, then 502.
    gw.request(&get("/down-retried", &[]))
        .assert_problem(502, "upstream_unavailable");
}
