//! Users in Redis: `{p}:users` (ids) and one hash per user.

use std::collections::{BTreeSet, HashMap};

use deadpool_redis::redis::{self, AsyncCommands};

use super::scripts::HOLD_LEASE;
use super::store::{BackendError, RedisStore};
use crate::users::User;

impl RedisStore {
    /// Takes or renews the lease `name` for `owner`; true while held.
    pub async fn hold_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, BackendError> {
        let mut c = self.conn().await?;
        let held: i64 = HOLD_LEASE
            .key(self.keys.lease(name))
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(held == 1)
    }

    pub async fn put_user(&self, user: &User) -> Result<(), BackendError> {
        let packs = serde_json::to_string(&user.packs)
            .map_err(|e| BackendError::Command(format!("cannot encode packs: {e}")))?;
        let mut c = self.conn().await?;
        redis::pipe()
            .sadd(self.keys.users(), user.chat_id)
            .ignore()
            .hset_multiple(
                self.keys.user(user.chat_id),
                &[
                    ("id", user.chat_id.to_string()),
                    ("name", user.name.clone()),
                    ("active", if user.active { "1" } else { "0" }.to_string()),
                    ("packs", packs),
                ],
            )
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    pub async fn remove_user(&self, chat_id: i64) -> Result<bool, BackendError> {
        let mut c = self.conn().await?;
        let (removed,): (i64,) = redis::pipe()
            .srem(self.keys.users(), chat_id)
            .del(self.keys.user(chat_id))
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(removed > 0)
    }

    /// Sets a user's active flag (creating the user if unknown).
    pub async fn set_user_active(
        &self,
        chat_id: i64,
        active: bool,
        reason: &str,
    ) -> Result<(), BackendError> {
        let mut c = self.conn().await?;
        redis::pipe()
            .sadd(self.keys.users(), chat_id)
            .ignore()
            .hset_multiple(
                self.keys.user(chat_id),
                &[
                    ("id", chat_id.to_string()),
                    ("active", if active { "1" } else { "0" }.to_string()),
                    ("inactive_reason", reason.to_string()),
                ],
            )
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Sets some fields of a user in place (others, such as the active
    /// flag a concurrent /stop or 403 just cleared, stay as they are).
    pub async fn set_user_fields(
        &self,
        chat_id: i64,
        fields: &[(&str, String)],
    ) -> Result<(), BackendError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        redis::pipe()
            .sadd(self.keys.users(), chat_id)
            .ignore()
            .hset_multiple(self.keys.user(chat_id), fields)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Every user, one pipeline for all hashes.
    pub async fn users(&self) -> Result<Vec<User>, BackendError> {
        let mut c = self.conn().await?;
        let ids: Vec<i64> = c.smembers(self.keys.users()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for id in &ids {
            p.hgetall(self.keys.user(*id));
        }
        let hashes: Vec<HashMap<String, String>> = p.query_async(&mut c).await?;
        let mut users = Vec::with_capacity(ids.len());
        for (id, h) in ids.into_iter().zip(hashes) {
            if let Some(user) = self.user_from_hash(id, &h)? {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// One user (one round trip), None if unknown.
    pub async fn user(&self, chat_id: i64) -> Result<Option<User>, BackendError> {
        let mut c = self.conn().await?;
        let h: HashMap<String, String> = c.hgetall(self.keys.user(chat_id)).await?;
        self.user_from_hash(chat_id, &h)
    }

    fn user_from_hash(
        &self,
        id: i64,
        h: &HashMap<String, String>,
    ) -> Result<Option<User>, BackendError> {
        if h.is_empty() {
            return Ok(None);
        }
        let packs: BTreeSet<String> = match h.get("packs") {
            Some(json) => serde_json::from_str(json).map_err(|e| BackendError::Corrupt {
                key: self.keys.user(id),
                message: format!("packs: {e}"),
            })?,
            None => BTreeSet::new(),
        };
        Ok(Some(User {
            chat_id: id,
            name: h.get("name").cloned().unwrap_or_default(),
            active: h.get("active").is_none_or(|a| a != "0"),
            packs,
        }))
    }
}
