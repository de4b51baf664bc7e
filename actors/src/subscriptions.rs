//! Subscriptions: `/start` registers (or reactivates) the sender as a user,
//! `/stop` deactivates them, each confirmed by a reply.
//!
//! Long polling with `getUpdates` in a loop of herald's own rather than
//! teloxide's Dispatcher, which panics at start when `getMe` fails: here a
//! Telegram or network outage is logged and retried with backoff (1 s
//! doubling to 60 s) and never takes the daemon down. With Redis, only one
//! daemon polls at a time (Telegram allows one `getUpdates` per bot): the
//! holder of a lease in Redis, renewed on its own period (not per poll).
//! Polls start at least [`MIN_POLL_GAP`] apart, so a Bot API server that
//! answers at once (no long poll, or a flood of updates) is not polled in
//! a tight loop.

use std::collections::BTreeSet;
use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::{ChatKind, UpdateKind};
use tokio::sync::watch;

use crate::health::{Health, Mode};
use crate::redis_backend::RedisStore;
use crate::users::{User, UserDirectory};

/// How long one `getUpdates` waits for updates (Telegram's long poll).
const LONG_POLL_SECS: u32 = 25;
/// The polling lease: taken over by another daemon when it lapses.
const LEASE: Duration = Duration::from_secs(60);
/// The holder renews the lease this often; the longest poll (25 s) fits
/// twice between a renewal and the lease's end.
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(10);
/// A daemon not holding the lease asks for it this often.
const LEASE_ASK_EVERY: Duration = Duration::from_secs(1);
/// Polls start at least this far apart: at most 4 a second, each bringing
/// up to 100 updates, which is more than a bot's /start traffic.
pub const MIN_POLL_GAP: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub const STARTED_REPLY: &str =
    "You are subscribed: herald will send you this bot's messages. Send /stop to unsubscribe.";
pub const STOPPED_REPLY: &str =
    "You are unsubscribed: herald will not message you any more. Send /start to subscribe again.";

/// What a message asks of the subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
}

/// `/start`, `/start@bot`, `/start payload` (deep links) and `/stop`
/// likewise; anything else is not for herald.
pub fn parse_command(text: &str) -> Option<Command> {
    let word = text.split_whitespace().next()?;
    let name = word.split('@').next()?;
    match name {
        "/start" => Some(Command::Start),
        "/stop" => Some(Command::Stop),
        _ => None,
    }
}

pub struct Subscriptions {
    pub bot: Bot,
    pub users: UserDirectory,
    /// With Redis: the lease so that one daemon polls.
    pub lease: Option<(RedisStore, watch::Receiver<Health>, String)>,
    /// Polls at most this long at a time (tests use less).
    pub long_poll: Duration,
}

impl Subscriptions {
    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut offset: i32 = 0;
        let mut backoff = Duration::from_secs(1);
        let mut lease = LeaseState::default();
        loop {
            if !self.may_poll(&mut lease).await {
                tokio::time::sleep(LEASE_ASK_EVERY).await;
                continue;
            }
            let timeout = u32::try_from(self.long_poll.as_secs())
                .unwrap_or(LONG_POLL_SECS)
                .min(LONG_POLL_SECS);
            let next_poll = tokio::time::Instant::now() + MIN_POLL_GAP;
            match self.bot.get_updates().offset(offset).timeout(timeout).await {
                Ok(updates) => {
                    backoff = Duration::from_secs(1);
                    for update in updates {
                        offset = offset.max(update.id.as_offset());
                        if let UpdateKind::Message(message) = update.kind {
                            self.handle(&message).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "telegram updates unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            tokio::time::sleep_until(next_poll).await;
        }
    }

    /// Without Redis, always; with it, while this daemon holds the lease
    /// (offline, whoever held it keeps going). The lease is renewed every
    /// [`LEASE_RENEW_EVERY`], not per poll; one Redis answer that is not
    /// "held" stops the polling until the lease is this daemon's again.
    async fn may_poll(&self, lease: &mut LeaseState) -> bool {
        let Some((store, health, owner)) = &self.lease else {
            return true;
        };
        if health.borrow().mode != Mode::Online {
            return true;
        }
        let now = tokio::time::Instant::now();
        if lease.held && lease.renewed.is_some_and(|at| now - at < LEASE_RENEW_EVERY) {
            return true;
        }
        lease.held = store
            .hold_lease("subscriptions", owner, LEASE)
            .await
            .unwrap_or(false);
        lease.renewed = lease.held.then_some(now);
        lease.held
    }

    async fn handle(&self, message: &Message) {
        let Some(command) = message.text().and_then(parse_command) else {
            return;
        };
        let chat_id = message.chat.id.0;
        let reply = match command {
            Command::Start => {
                let name = match (&message.chat.kind, message.from.as_ref()) {
                    (ChatKind::Private(_), Some(from)) => from.full_name(),
                    _ => message.chat.title().unwrap_or_default().to_string(),
                };
                let packs = self
                    .users
                    .get(chat_id)
                    .await
                    .map(|u| u.packs)
                    .unwrap_or_else(BTreeSet::new);
                let user = User {
                    chat_id,
                    name,
                    active: true,
                    packs,
                };
                if let Err(e) = self.users.put(user).await {
                    tracing::warn!(error = %e, chat_id, "could not register a subscriber");
                    return;
                }
                tracing::info!(chat_id, "subscribed (/start)");
                STARTED_REPLY
            }
            Command::Stop => {
                self.users.deactivate(chat_id, "sent /stop").await;
                tracing::info!(chat_id, "unsubscribed (/stop)");
                STOPPED_REPLY
            }
        };
        if let Err(e) = self.bot.send_message(ChatId(chat_id), reply).await {
            tracing::warn!(error = %e, chat_id, "could not confirm a subscription change");
        }
    }
}

/// Where this daemon stands with the polling lease.
#[derive(Default)]
struct LeaseState {
    held: bool,
    /// When Redis last confirmed it (by this daemon's clock).
    renewed: Option<tokio::time::Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_in_their_telegram_forms() {
        assert_eq!(parse_command("/start"), Some(Command::Start));
        assert_eq!(parse_command("/start@herald_bot"), Some(Command::Start));
        assert_eq!(parse_command("/start ref-42"), Some(Command::Start));
        assert_eq!(parse_command("  /stop  "), Some(Command::Stop));
        assert_eq!(parse_command("/starting"), None);
        assert_eq!(parse_command("hello /start"), None);
        assert_eq!(parse_command(""), None);
    }
}
