//! The real `orders-api` process: SIGTERM drains requests in flight within the bound and exits
//! cleanly (defect 12); its logs are JSON when asked (defect 8).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start(addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orders-api"))
        .env("ADDR", addr.to_string())
        .env("DRAIN_SECS", "5")
        .env("HEADER_TIMEOUT_SECS", "1")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orders-api starts")
}

fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "orders-api did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_requests_in_flight_and_exits() {
    let addr = free_port();
    let mut child = start(addr);
    wait_ready(addr);

    // A request that takes 800 ms is in flight when SIGTERM arrives.
    let slow = std::thread::spawn(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(
            b"GET /reports/slow?ms=800 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        out
    });
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let answer = slow.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the request in flight finished: {answer}"
    );
    // The process exits by itself, well within the drain bound.
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "orders-api did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());

    // The shutdown was logged, as JSON lines.
    let lines: Vec<String> = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!events.is_empty(), "no JSON log lines: {lines:?}");
    assert!(
        events.iter().any(|e| e["fields"]["signal"] == "SIGTERM"),
        "{lines:?}"
    );
}

/// Defect 3 (server level): a client that trickles its request head is cut after the header
/// timeout, while other clients are served.
#[test]
fn a_trickled_request_head_is_cut_after_the_header_timeout() {
    let addr = free_port();
    let mut child = start(addr);
    wait_ready(addr);
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /orders HTTP/1.1\r\nhost: t\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out); // returns when the server closes the connection
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(4),
        "held {held:?}"
    );

    let mut ok = TcpStream::connect(addr).unwrap();
    ok.write_all(b"GET /orders HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    ok.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = child.kill();
    let _ = child.wait();
}
