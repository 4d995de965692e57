//! The Redis connection: one multiplexed connection that reconnects by itself,
//! created lazily so spa-bff starts (and reports not-ready) while Redis is down,
//! and every command bounded by a timeout so a hung Redis becomes a 503, not a stall.

use crate::error::Error;
use crate::secret::Sensitive;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::time::Duration;
use tokio::sync::OnceCell;

pub struct RedisHandle {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl RedisHandle {
    /// Parses the URL (validated with the rest of the config at start-up).
    pub fn client(url: &Sensitive) -> Result<redis::Client, Error> {
        redis::Client::open(url.expose()).map_err(|_| Error::Internal("invalid Redis URL".into()))
    }

    /// A handle that connects on first use.
    pub fn from_client(client: redis::Client, timeout: Duration) -> Self {
        Self {
            client,
            manager: OnceCell::new(),
            timeout,
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, Error> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(500);
        self.manager
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    self.timeout * 2,
                    self.client.get_connection_manager_with_config(config),
                )
                .await
                .map_err(|_| Error::StoreUnavailable("connecting to Redis timed out".into()))?
                .map_err(store_error)
            })
            .await
            .cloned()
    }

    /// Runs `f` on a connection, bounded by the configured timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(result) => result.map_err(store_error),
            Err(_) => Err(Error::StoreUnavailable("Redis command timed out".into())),
        }
    }

    pub async fn ping(&self) -> Result<(), Error> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }
}

fn store_error(e: redis::RedisError) -> Error {
    Error::StoreUnavailable(format!("Redis: {}", e.category()))
}
