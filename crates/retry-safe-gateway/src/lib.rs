//! A reverse proxy that puts the retry-safe layers — `Idempotency-Key`, rate limits, concurrency
//! caps, priority load shedding, webhook signatures, W3C trace context and the problem+json
//! envelope — in front of an API written in any language, from one TOML file.
//!
//! ```
//! use retry_safe_gateway::Config;
//!
//! let config = Config::parse(r#"
//!     [[listener]]
//!     address = "127.0.0.1:8080"
//!
//!     [upstreams.orders]
//!     address = "127.0.0.1:8000"
//!
//!     [[route]]
//!     methods = ["POST"]
//!     path = "/orders"
//!     upstream = "orders"
//!     idempotency = { required = true }
//!     rate_limit = [{ key = "client_ip", rate = 10, burst = 20 }]
//! "#).unwrap();
//! assert_eq!(config.routes.len(), 1);
//!
//! // A mistake is located: line, column, key and why.
//! let err = Config::parse("[[listener]]\naddress = \"127.0.0.1:8080\"\nport = 1\n").unwrap_err();
//! assert_eq!((err.line, err.key.as_str()), (3, "listener[0].port"));
//! assert!(err.reason.contains("unknown field"), "{err}");
//! ```
//!
//! The binary (`retry-safe-gateway CONFIG`, `--check CONFIG`, `hash-key`) runs [`run`];
//! docs/gateway.md is the config reference.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod admin;
mod config;
mod events;
mod front;
mod keys;
mod metrics;
mod proxy;
mod retry;
mod routes;
mod server;
mod stack;
mod tls;

pub use config::{
    Admin, ApiKeys, ClassName, Concurrency, Config, ConfigError, Dur, Idempotency, KeyBy, Listener,
    Plan, RateLimit, RequestLimits, Retry, Route, Shedding, StoreConfig, StoreKind, Tls, Upstream,
    Webhook, WebhookScheme,
};
pub use keys::{hash_key, Principal};
pub use server::{check, run, StartError};

/// The body of every request and response inside the gateway.
pub type Body = axum_core::body::Body;

pub(crate) type BoxError = retry_safe_core::BoxError;

/// Why a config that parsed could not be made into a running gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A file the config names (keys file, TLS files) is unusable.
    #[error(transparent)]
    File(ConfigError),
    /// A value the parser could not check (a secret's environment variable, a quota).
    #[error("{0}")]
    Config(String),
    /// A store did not answer.
    #[error("store unavailable: {0}")]
    Backend(String),
}
