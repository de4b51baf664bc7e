//! What a run hands to the Notifier, and what comes back: messages to
//! destinations, how one send ended, and the per-destination tally that
//! lands in the run's execution record. Pure data and rules, no I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::{Counts, RunId};

/// Where a Telegram message goes, as the record counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatRole {
    /// A targeted user's private chat.
    Dm,
    /// The configured owner chat (`telegram.save_chat`).
    Save,
}

/// One message to one destination.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Telegram {
        chat_id: i64,
        role: ChatRole,
        /// Rendered HTML (variables escaped); split by the Notifier if long.
        html: String,
        /// `disable_notification`: delivered without a sound.
        silent: bool,
    },
    Webhook {
        /// The endpoint's name in the config (`[[webhooks]] name`).
        endpoint: String,
        body: serde_json::Value,
    },
}

impl Message {
    /// The destination as the record's tally names it: `dm`, `save`, or
    /// `webhook:<name>`.
    pub fn destination(&self) -> String {
        match self {
            Message::Telegram {
                role: ChatRole::Dm, ..
            } => "dm".to_string(),
            Message::Telegram {
                role: ChatRole::Save,
                ..
            } => "save".to_string(),
            Message::Webhook { endpoint, .. } => format!("webhook:{endpoint}"),
        }
    }

    /// Who receives it, for the idempotency key and logs.
    pub fn recipient(&self) -> String {
        match self {
            Message::Telegram { chat_id, .. } => chat_id.to_string(),
            Message::Webhook { endpoint, .. } => format!("webhook:{endpoint}"),
        }
    }
}

/// Messages a run produced; the worker takes them when the handler
/// returns, and they go out only if the attempt succeeded.
#[derive(Clone, Default)]
pub struct Outbox(Arc<Mutex<Vec<Message>>>);

impl Outbox {
    pub fn push(&self, message: Message) {
        if let Ok(mut messages) = self.0.lock() {
            messages.push(message);
        }
    }

    pub fn take(&self) -> Vec<Message> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How one attempt to send one message part ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    Sent,
    /// 429: wait this long, then send again.
    RetryAfter(Duration),
    /// 403: the user blocked the bot, was deactivated, or never started
    /// it. Not retried; the user is marked inactive.
    Deactivated(String),
    /// 400 or another definitive refusal: not retried.
    Rejected(String),
    /// 5xx or a network error: retried with backoff.
    Transient(String),
}

/// How one message ended, after retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    Sent,
    Failed(String),
    Deactivated(String),
    /// Not sent by this run: already delivered by an earlier attempt of
    /// it, or its outcome is unknown (a daemon died mid-send).
    Skipped(String),
}

/// Errors kept in a record at most (the first ones, each once).
const MAX_ERRORS: usize = 10;

/// A run's deliveries: counts per destination, while they go out and
/// after. Stored in the execution record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub by_destination: BTreeMap<String, Counts>,
    /// Messages not yet settled.
    pub pending: u64,
    /// The first distinct errors, each naming the recipient.
    pub errors: Vec<String>,
}

impl DeliveryReport {
    pub fn expecting(messages: &[Message]) -> Self {
        let mut report = DeliveryReport {
            pending: messages.len() as u64,
            ..DeliveryReport::default()
        };
        for m in messages {
            report.by_destination.entry(m.destination()).or_default();
        }
        report
    }

    pub fn settle(&mut self, message: &Message, outcome: &MessageOutcome) {
        self.pending = self.pending.saturating_sub(1);
        let counts = self
            .by_destination
            .entry(message.destination())
            .or_default();
        let error = match outcome {
            MessageOutcome::Sent => {
                counts.sent += 1;
                None
            }
            MessageOutcome::Failed(e) => {
                counts.failed += 1;
                Some(e)
            }
            MessageOutcome::Deactivated(_) => {
                counts.deactivated += 1;
                None
            }
            MessageOutcome::Skipped(_) => {
                counts.skipped += 1;
                None
            }
        };
        if let Some(e) = error
            && self.errors.len() < MAX_ERRORS
        {
            let line = format!("{} {}: {e}", message.destination(), message.recipient());
            if !self.errors.contains(&line) {
                self.errors.push(line);
            }
        }
    }

    /// All destinations added up.
    pub fn totals(&self) -> Counts {
        self.by_destination
            .values()
            .fold(Counts::default(), |total, c| total + *c)
    }

    /// A fan-out fails the run only when nothing at all got through and
    /// something failed; single failed recipients are counted, not fatal.
    pub fn failed_entirely(&self) -> bool {
        let t = self.totals();
        t.failed > 0 && t.sent == 0 && t.deactivated == 0 && t.skipped == 0
    }

    pub fn error_summary(&self) -> Option<String> {
        let t = self.totals();
        if t.failed == 0 {
            return None;
        }
        let settled = t.sent + t.failed + t.deactivated + t.skipped;
        Some(format!(
            "{} of {settled} deliveries failed: {}",
            t.failed,
            self.errors.join("; ")
        ))
    }
}

/// The idempotency key of one part of one message of one run. `nth`: how
/// many earlier messages of the run went to the same recipient, so two
/// messages to one chat (a DM and a save to the same chat, or a job that
/// sends twice) have keys of their own.
pub fn delivery_key(run_id: &RunId, message: &Message, nth: usize, part: usize) -> String {
    format!("{}:{}:{nth}:{part}", run_id.0, message.recipient())
}

/// For each message, how many earlier messages go to the same recipient.
pub fn occurrences(messages: &[Message]) -> Vec<usize> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    messages
        .iter()
        .map(|m| {
            let n = seen.entry(m.recipient()).or_default();
            let nth = *n;
            *n += 1;
            nth
        })
        .collect()
}

/// Sorts a Telegram error into what to do about it. teloxide parses API
/// errors from their description, and some 403 texts ("bot can't initiate
/// conversation with a user") arrive as an unknown error, so the class is
/// taken from Telegram's own words: a description starting with
/// "Forbidden" is a 403, "Bad Request" a 400.
pub fn classify_api_error(description: &str) -> SendResult {
    let d = description.trim();
    let lower = d.to_ascii_lowercase();
    if lower.starts_with("forbidden")
        || lower.contains("bot was blocked by the user")
        || lower.contains("user is deactivated")
        || lower.contains("bot can't initiate conversation")
        || lower.contains("bot was kicked")
    {
        SendResult::Deactivated(d.to_string())
    } else if lower.starts_with("internal server error")
        || lower.starts_with("bad gateway")
        || lower.starts_with("service unavailable")
        || lower.starts_with("gateway timeout")
    {
        SendResult::Transient(d.to_string())
    } else {
        SendResult::Rejected(d.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dm(chat_id: i64) -> Message {
        Message::Telegram {
            chat_id,
            role: ChatRole::Dm,
            html: "hi".into(),
            silent: false,
        }
    }

    #[test]
    fn errors_are_sorted_by_telegrams_words() {
        for text in [
            "Forbidden: bot was blocked by the user",
            "Forbidden: bot can't initiate conversation with a user",
            "Forbidden: user is deactivated",
        ] {
            assert!(matches!(
                classify_api_error(text),
                SendResult::Deactivated(_)
            ));
        }
        assert_eq!(
            classify_api_error("Bad Request: can't parse entities: x"),
            SendResult::Rejected("Bad Request: can't parse entities: x".into())
        );
        assert!(matches!(
            classify_api_error("Bad Gateway"),
            SendResult::Transient(_)
        ));
    }

    #[test]
    fn the_report_counts_per_destination_and_keeps_errors_once() {
        let messages = vec![dm(1), dm(2), dm(3)];
        let mut r = DeliveryReport::expecting(&messages);
        assert_eq!(r.pending, 3);
        r.settle(&messages[0], &MessageOutcome::Sent);
        r.settle(&messages[1], &MessageOutcome::Failed("400 nope".into()));
        r.settle(&messages[2], &MessageOutcome::Deactivated("blocked".into()));
        assert_eq!(r.pending, 0);
        let dm = r.by_destination["dm"];
        assert_eq!((dm.sent, dm.failed, dm.deactivated), (1, 1, 1));
        assert_eq!(r.errors, vec!["dm 2: 400 nope".to_string()]);
        assert!(!r.failed_entirely());
        assert_eq!(
            r.error_summary().as_deref(),
            Some("1 of 3 deliveries failed: dm 2: 400 nope")
        );
        let mut all_bad = DeliveryReport::expecting(&messages[..1]);
        all_bad.settle(&messages[0], &MessageOutcome::Failed("x".into()));
        assert!(all_bad.failed_entirely());
    }
}
