//! TLS termination (and its certificate reload), HTTP/2 and WebSocket upgrades through the binary.

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn write_cert(dir: &std::path::Path) -> CertificateDer<'static> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
    made.cert.der().clone()
}

fn tls_config(upstream: u16, dir: &std::path::Path) -> String {
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    config(upstream, dir, "").replacen(
        "address = \"127.0.0.1:0\"\n",
        &format!("address = \"127.0.0.1:0\"\n{tls}"),
        1,
    )
}

/// A GET over TLS trusting only `root`; `Err` when the handshake fails.
async fn get_over_tls(port: u16, root: &CertificateDer<'static>) -> Result<(u16, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /slow?ms=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes).await;
    let res = parse(&bytes);
    Ok((res.status, res.body))
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_terminates_with_a_generated_certificate_and_sighup_loads_a_new_one() {
    let up = Upstream::start();
    let dir = scratch("tls");
    let first = write_cert(&dir);
    let gw = Gateway::start(&dir, &tls_config(up.port, &dir));
    let (status, body) = get_over_tls(gw.port, &first).await.unwrap();
    assert_eq!((status, body), (200, br#"{"slept_ms": 1}"#.to_vec()));
    let second = write_cert(&dir);
    gw.reload(&tls_config(up.port, &dir));
    gw.wait_event("\"reloaded\"", Duration::from_secs(5));
    assert_eq!(
        get_over_tls(gw.port, &second).await.unwrap().0,
        200,
        "new handshakes present the new certificate"
    );
    assert!(
        get_over_tls(gw.port, &first).await.is_err(),
        "the old certificate is gone"
    );
    // Plain HTTP on the TLS port is not served.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_are_proxied_to_the_http1_upstream() {
    let up = Upstream::start();
    let dir = scratch("h2");
    let gw = Gateway::start(&dir, &config(up.port, &dir, ""));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let req = http::Request::get(format!("http://127.0.0.1:{}/slow?ms=1", gw.port))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        answers.push(send.send_request(req));
    }
    for answer in answers {
        let res = answer.await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["via"], "1.1 retry-safe-gateway");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"slept_ms": 1}"#);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_upgrade_is_tunnelled_both_ways() {
    // An upstream that switches protocols, then echoes what it reads, upper-cased.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(String::from_utf8_lossy(&head)
            .to_ascii_lowercase()
            .contains("upgrade: websocket"));
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf.to_ascii_uppercase()).await.unwrap();
    });
    let dir = scratch("websocket");
    let gw = Gateway::start(&dir, &config(port, &dir, ""));
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 101") && head.contains("upgrade: websocket"),
        "{head}"
    );
    s.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"HELLO");
}
