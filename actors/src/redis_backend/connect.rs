//! Redis connections: a deadpool pool with explicit timeouts everywhere.

use std::time::Duration;

use deadpool_redis::redis::AsyncConnectionConfig;
use deadpool_redis::{Manager, Pool, Runtime};

/// A local Redis answers in well under a millisecond; a second means it is
/// unreachable or stuck, and herald should go offline rather than wait.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Waiting for a free pooled connection longer than this means the pool is
/// exhausted by stuck commands: fail instead of piling up.
pub const DEFAULT_POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_POOL_SIZE: usize = 16;

#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_wait_timeout: Duration,
    pub pool_size: usize,
}

/// `Debug` leaves the password out of the URL.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted_url(&self.url))
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("pool_wait_timeout", &self.pool_wait_timeout)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// A Redis URL fit for logs: any password replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl RedisSettings {
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        RedisSettings {
            url: url.into(),
            prefix: prefix.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            pool_wait_timeout: DEFAULT_POOL_WAIT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_debug_output() {
        let s = super::RedisSettings::new("redis://:s3cret@db.internal:6380/2", "herald");
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://***@db.internal:6380/2"), "{shown}");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("redis: cannot set up a connection pool for the configured URL: {0}")]
pub struct RedisSetupError(String);

/// Builds the pool. No connection is made here: a Redis that is down at
/// start-up is found by the first command (and herald starts offline).
pub fn connect(settings: &RedisSettings) -> Result<Pool, RedisSetupError> {
    let connection = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout));
    let manager = Manager::new_with_config(settings.url.as_str(), connection)
        .map_err(|e| RedisSetupError(e.to_string()))?;
    Pool::builder(manager)
        .max_size(settings.pool_size.max(1))
        .wait_timeout(Some(settings.pool_wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.response_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| RedisSetupError(e.to_string()))
}
