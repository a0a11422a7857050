//! Shared Redis connection settings (feature `redis`): every Redis-backed crate connects with the
//! same request-path settings, defined once here.

use redis::aio::ConnectionManagerConfig;
use std::time::Duration;

/// The time to open a connection to Redis on the request path.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The time to wait for one reply: a hung Redis becomes an error, not a hung request.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The settings of a connection used while a request waits: [`CONNECT_TIMEOUT`],
/// [`RESPONSE_TIMEOUT`], 2 reconnect retries at most 500 ms apart.
///
/// ```
/// let config = retry_safe_core::redis::request_path_config();
/// # let _ = config;
/// ```
pub fn request_path_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}
