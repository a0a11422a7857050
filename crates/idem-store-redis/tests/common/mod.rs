//! The conformance harness of `RedisStore`, shared by the single-node and the cluster tests.
#![allow(dead_code)]

use async_trait::async_trait;
use idem_core::conformance::Harness;
use idem_core::TimeOffset;
use idem_store_redis::RedisStore;
use std::sync::Arc;
use std::time::Duration;

/// A store whose time runs through a test offset.
pub struct RedisHarness {
    pub store: Arc<RedisStore>,
    pub offset: TimeOffset,
}

impl RedisHarness {
    /// `store` on a fresh offset, pinned at `pin` (time since the epoch) when given.
    pub fn over(store: RedisStore, pin: Option<Duration>) -> Self {
        let offset = TimeOffset::new();
        if let Some(at) = pin {
            offset.pin(at);
        }
        Self {
            store: Arc::new(store.time_offset(offset.clone())),
            offset,
        }
    }
}

#[async_trait]
impl Harness for RedisHarness {
    type Store = RedisStore;
    fn store(&self) -> Arc<RedisStore> {
        self.store.clone()
    }
    async fn advance(&self, by: Duration) {
        self.offset.advance(by);
    }
    fn scope(&self, name: &str) -> String {
        name.to_owned()
    }
    fn tolerance(&self) -> Duration {
        // Real time passes between the test's steps on the server's clock.
        Duration::from_millis(500)
    }
}
