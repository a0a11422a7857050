//! A stream of a test's own on NATS JetStream (`NATS_URL`, default 127.0.0.1:4222), deleted at
//! the end, and a private nats-server a test can kill.
#![allow(dead_code)]

use outbox::async_nats::{self, jetstream};
use std::time::Duration;

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub struct TestStream {
    pub js: jetstream::Context,
    pub name: String,
    /// The subject prefix the stream captures (`<prefix>>`).
    pub prefix: String,
}

impl TestStream {
    pub async fn new(url: &str, name: &str) -> Self {
        let client = async_nats::connect(url).await.unwrap_or_else(|e| {
            panic!("NATS is not reachable at {url} ({e}); run `cargo xtask test`, which starts it")
        });
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        let name = testkit::unique("T", name).replace([':', '.'], "_");
        let prefix = format!("{}.", name.to_lowercase());
        let stream = Self { js, name, prefix };
        stream.create().await;
        stream
    }

    pub async fn create(&self) {
        self.js
            .create_stream(jetstream::stream::Config {
                name: self.name.clone(),
                subjects: vec![format!("{}>", self.prefix)],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    pub async fn messages(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// A durable pull consumer with `ack_wait`.
    pub async fn consumer(
        &self,
        durable: &str,
        ack_wait: Duration,
    ) -> jetstream::consumer::PullConsumer {
        let stream = self.js.get_stream(&self.name).await.unwrap();
        stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some(durable.into()),
                ack_wait,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// Up to `max` messages, waiting at most `wait` for them.
    pub async fn fetch(
        consumer: &jetstream::consumer::PullConsumer,
        max: usize,
        wait: Duration,
    ) -> Vec<jetstream::Message> {
        use futures_util::StreamExt;
        let mut batch = consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            out.push(m.unwrap());
        }
        out
    }

    pub async fn delete(self) {
        let _ = self.js.delete_stream(&self.name).await;
    }
}

/// The `Nats-Msg-Id` and `Outbox-Aggregate` of a message.
pub fn ids_of(m: &jetstream::Message) -> (String, Option<String>) {
    let h = m.headers.as_ref().expect("headers");
    let id = h
        .get("Nats-Msg-Id")
        .expect("Nats-Msg-Id")
        .as_str()
        .to_owned();
    let agg = h
        .get(outbox::AGGREGATE_HEADER)
        .map(|v| v.as_str().to_owned());
    (id, agg)
}

/// A nats-server of the test's own (its own port and store directory), so that killing it
/// touches nothing else; started again on the same port and store it keeps its streams.
pub struct PrivateNats {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl PrivateNats {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("outbox-nats-{}-{port}", std::process::id()));
        let mut nats = Self {
            child: None,
            port,
            dir,
        };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is not installed (`apt-get install nats-server`; `cargo xtask test` does)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private nats-server did not listen on {}", self.port);
    }

    /// SIGKILL, by the PID this test started.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
