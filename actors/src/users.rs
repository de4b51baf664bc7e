//! Users, packs and targeting.
//!
//! A user is a Telegram chat id with a display name and an active flag; a
//! pack is a named set of users. A job's targets are include ∪ members of
//! its packs, minus exclude; no targets at all means every active user.
//! Inactive users (blocked the bot, sent /stop) are never messaged.
//!
//! [`resolve_targets`] is the pure rule. [`UserDirectory`] keeps users and
//! packs: in Redis when it is online (shared by every daemon), always also
//! in memory, so targeting keeps working offline from what was last seen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::health::{Health, Mode};
use crate::redis_backend::{BackendError, RedisStore};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub chat_id: i64,
    pub name: String,
    pub active: bool,
    /// Packs the user belongs to.
    #[serde(default)]
    pub packs: BTreeSet<String>,
}

/// Who a job messages directly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    #[serde(default)]
    pub include: Vec<i64>,
    #[serde(default)]
    pub exclude: Vec<i64>,
    #[serde(default)]
    pub packs: Vec<String>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.packs.is_empty() && self.exclude.is_empty()
    }
}

/// The chats a job's targets reach, in ascending order. Chats included by
/// id that herald has no user for (a group, say) are reached; users it
/// knows as inactive never are.
pub fn resolve_targets(targets: &Targets, users: &BTreeMap<i64, User>) -> Vec<i64> {
    let active = |id: &i64| users.get(id).is_none_or(|u| u.active);
    let mut chosen: BTreeSet<i64> = BTreeSet::new();
    if targets.include.is_empty() && targets.packs.is_empty() {
        // No targets (an exclude list alone counts as none): everyone active.
        chosen.extend(users.values().filter(|u| u.active).map(|u| u.chat_id));
    } else {
        chosen.extend(targets.include.iter().copied());
        for u in users.values() {
            if targets.packs.iter().any(|p| u.packs.contains(p)) {
                chosen.insert(u.chat_id);
            }
        }
    }
    for id in &targets.exclude {
        chosen.remove(id);
    }
    chosen.into_iter().filter(active).collect()
}

/// A pack name: short and plain (it is part of Redis keys and URLs).
pub fn check_pack_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "pack name {name:?} must be 1-64 characters of a-z, A-Z, 0-9, '_', '-', '.'"
        ));
    }
    Ok(())
}

/// Users and packs, in Redis when online and always in memory.
#[derive(Clone)]
pub struct UserDirectory {
    redis: Option<(RedisStore, watch::Receiver<Health>)>,
    memory: Arc<Mutex<BTreeMap<i64, User>>>,
}

impl UserDirectory {
    pub fn new(redis: Option<(RedisStore, watch::Receiver<Health>)>) -> Self {
        UserDirectory {
            redis,
            memory: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn online(&self) -> Option<&RedisStore> {
        self.redis
            .as_ref()
            .filter(|(_, h)| h.borrow().mode == Mode::Online)
            .map(|(s, _)| s)
    }

    fn remember(&self, users: &[User]) {
        if let Ok(mut m) = self.memory.lock() {
            for u in users {
                m.insert(u.chat_id, u.clone());
            }
        }
    }

    /// Every user: from Redis when online (and remembered), else as last
    /// seen.
    pub async fn all(&self) -> BTreeMap<i64, User> {
        if let Some(store) = self.online() {
            match store.users().await {
                Ok(users) => {
                    let map: BTreeMap<i64, User> =
                        users.into_iter().map(|u| (u.chat_id, u)).collect();
                    if let Ok(mut m) = self.memory.lock() {
                        *m = map.clone();
                    }
                    return map;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read users from redis; using the last known")
                }
            }
        }
        self.memory.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// One user: from Redis when online (one read, remembered), else as
    /// last seen.
    pub async fn get(&self, chat_id: i64) -> Option<User> {
        if let Some(store) = self.online() {
            match store.user(chat_id).await {
                Ok(user) => {
                    if let Ok(mut m) = self.memory.lock() {
                        match &user {
                            Some(u) => m.insert(chat_id, u.clone()),
                            None => m.remove(&chat_id),
                        };
                    }
                    return user;
                }
                Err(e) => {
                    tracing::warn!(error = %e, chat_id, "cannot read a user from redis; using the last known")
                }
            }
        }
        self.memory
            .lock()
            .ok()
            .and_then(|m| m.get(&chat_id).cloned())
    }

    /// Adds or replaces a user (name, active flag, packs).
    pub async fn put(&self, user: User) -> Result<(), BackendError> {
        for p in &user.packs {
            check_pack_name(p).map_err(BackendError::Command)?;
        }
        self.remember(std::slice::from_ref(&user));
        if let Some((store, _)) = &self.redis {
            store.put_user(&user).await?;
        }
        Ok(())
    }

    /// Changes some fields of a known user, writing only those (a
    /// deactivation that lands meanwhile is not undone by a rename).
    /// Returns the user as changed, or None if herald has no such user.
    pub async fn update(
        &self,
        chat_id: i64,
        name: Option<String>,
        active: Option<bool>,
        packs: Option<BTreeSet<String>>,
    ) -> Result<Option<User>, BackendError> {
        for p in packs.iter().flatten() {
            check_pack_name(p).map_err(BackendError::Command)?;
        }
        let Some(mut user) = self.get(chat_id).await else {
            return Ok(None);
        };
        let mut fields: Vec<(&str, String)> = Vec::new();
        if let Some(name) = name {
            fields.push(("name", name.clone()));
            user.name = name;
        }
        if let Some(active) = active {
            fields.push(("active", if active { "1" } else { "0" }.to_string()));
            user.active = active;
        }
        if let Some(packs) = packs {
            let json = serde_json::to_string(&packs)
                .map_err(|e| BackendError::Command(format!("cannot encode packs: {e}")))?;
            fields.push(("packs", json));
            user.packs = packs;
        }
        self.remember(std::slice::from_ref(&user));
        if let Some((store, _)) = &self.redis {
            store.set_user_fields(chat_id, &fields).await?;
        }
        Ok(Some(user))
    }

    pub async fn remove(&self, chat_id: i64) -> Result<bool, BackendError> {
        let known = self
            .memory
            .lock()
            .map(|mut m| m.remove(&chat_id).is_some())
            .unwrap_or(false);
        match &self.redis {
            Some((store, _)) => store.remove_user(chat_id).await,
            None => Ok(known),
        }
    }

    /// Marks a user inactive (Telegram said 403, or the user sent /stop).
    /// A chat herald has no user for is recorded as an inactive user.
    pub async fn deactivate(&self, chat_id: i64, reason: &str) {
        // Redis sets the flag in place; no need to read the user first.
        if let Ok(mut m) = self.memory.lock() {
            m.entry(chat_id)
                .or_insert_with(|| User {
                    chat_id,
                    name: String::new(),
                    active: false,
                    packs: BTreeSet::new(),
                })
                .active = false;
        }
        if let Some((store, _)) = &self.redis
            && let Err(e) = store.set_user_active(chat_id, false, reason).await
        {
            tracing::warn!(error = %e, chat_id, "could not mark the user inactive in redis");
        }
    }

    /// The chats `targets` reach now.
    pub async fn resolve(&self, targets: &Targets) -> Vec<i64> {
        resolve_targets(targets, &self.all().await)
    }

    /// Packs and their members.
    pub async fn packs(&self) -> BTreeMap<String, BTreeSet<i64>> {
        let mut packs: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for u in self.all().await.into_values() {
            for p in u.packs {
                packs.entry(p).or_default().insert(u.chat_id);
            }
        }
        packs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, active: bool, packs: &[&str]) -> (i64, User) {
        (
            id,
            User {
                chat_id: id,
                name: format!("user {id}"),
                active,
                packs: packs.iter().map(|p| p.to_string()).collect(),
            },
        )
    }

    fn users() -> BTreeMap<i64, User> {
        BTreeMap::from([
            user(1, true, &["ops"]),
            user(2, true, &["ops", "eng"]),
            user(3, false, &["ops"]),
            user(4, true, &[]),
            user(5, true, &["eng"]),
        ])
    }

    #[test]
    fn no_targets_reach_every_active_user() {
        assert_eq!(
            resolve_targets(&Targets::default(), &users()),
            vec![1, 2, 4, 5]
        );
        let only_exclude = Targets {
            exclude: vec![4],
            ..Targets::default()
        };
        assert_eq!(resolve_targets(&only_exclude, &users()), vec![1, 2, 5]);
    }

    #[test]
    fn include_and_packs_minus_exclude_never_inactive() {
        let t = Targets {
            include: vec![4, 3, 99],
            exclude: vec![2],
            packs: vec!["ops".into()],
        };
        // ops = {1, 2, 3}; + {4, 3, 99}; - {2}; 3 is inactive; 99 unknown
        assert_eq!(resolve_targets(&t, &users()), vec![1, 4, 99]);
        let eng = Targets {
            packs: vec!["eng".into(), "nobody".into()],
            ..Targets::default()
        };
        assert_eq!(resolve_targets(&eng, &users()), vec![2, 5]);
    }

    #[test]
    fn pack_names_are_plain() {
        assert!(check_pack_name("ops-team.1").is_ok());
        assert!(check_pack_name("").is_err());
        assert!(check_pack_name("a b").is_err());
    }
}
