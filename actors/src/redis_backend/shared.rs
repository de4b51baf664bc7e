//! One multiplexed connection, taken from the pool and shared.
//!
//! deadpool checks a connection (`UNWATCH` + `PING`, a round trip) every
//! time it hands one out. redis-rs's multiplexed connection carries
//! concurrent requests on one socket, so the store takes one from the pool
//! and shares it instead: a request costs one round trip, not two. A
//! request that fails on the connection itself (I/O error, timeout,
//! dropped) discards it, and the next request takes a fresh one from the
//! pool, with the pool's connect timeout.

use std::sync::{Arc, Mutex};

use deadpool_redis::Pool;
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::store::BackendError;

/// The slot holding the shared connection, if one is established.
#[derive(Clone, Default)]
pub(super) struct SharedConnection(Arc<Mutex<Option<MultiplexedConnection>>>);

impl SharedConnection {
    pub(super) async fn get(&self, pool: &Pool) -> Result<Conn, BackendError> {
        let cached = self.0.lock().ok().and_then(|slot| slot.clone());
        let inner = match cached {
            Some(c) => c,
            None => {
                let fresh = deadpool_redis::Connection::take(pool.get().await?);
                if let Ok(mut slot) = self.0.lock() {
                    *slot = Some(fresh.clone());
                }
                fresh
            }
        };
        Ok(Conn {
            inner,
            slot: self.clone(),
        })
    }

    fn discard(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }
}

/// A handle on the shared connection for one request.
pub(super) struct Conn {
    inner: MultiplexedConnection,
    slot: SharedConnection,
}

impl Conn {
    fn check<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(e) = &result
            && (e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error())
        {
            self.slot.discard();
        }
        result
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            self.check(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.check(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
