//! Every Redis key herald uses, under one prefix. The README's key table is
//! the documentation of this file.

/// Key names under a prefix (default `herald`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Shared: every handle holding a store clones its keys.
    prefix: std::sync::Arc<str>,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into().into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Set of every job id herald knows (defined or orphaned).
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    /// Counter raised by every job write: daemons watch it (in their
    /// heartbeat) to pick up edits made through another daemon.
    pub fn jobs_version(&self) -> String {
        format!("{}:jobs:version", self.prefix)
    }

    /// Ids of jobs deleted through the API (set): a resync drops these
    /// only, never a job Redis merely lost. An id leaves it when a job of
    /// that id is written again.
    pub fn jobs_removed(&self) -> String {
        format!("{}:jobs:removed", self.prefix)
    }

    /// A job: its definition, operator overrides, orphaned flag (JSON).
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    /// The last tick handled for a job (unix seconds). No TTL.
    pub fn last_run(&self, job_id: &str) -> String {
        format!("{}:last_run:{job_id}", self.prefix)
    }

    /// An execution record (JSON). TTL: record TTL (7 days).
    pub fn execution(&self, run_id: &str) -> String {
        format!("{}:exec:{run_id}", self.prefix)
    }

    /// A job's runs by creation time (sorted set), capped; the top is the
    /// latest record. TTL: record TTL, refreshed on each write.
    pub fn history(&self, job_id: &str) -> String {
        format!("{}:exec:history:{job_id}", self.prefix)
    }

    /// Every run by creation time (sorted set), capped at `max_records`.
    pub fn recent(&self) -> String {
        format!("{}:exec:recent", self.prefix)
    }

    /// Counter of records dropped by the `max_records` cap.
    pub fn dropped(&self) -> String {
        format!("{}:exec:dropped", self.prefix)
    }

    /// Skipped ticks: entry ids by time recorded (sorted set), capped.
    pub fn skipped(&self) -> String {
        format!("{}:skips", self.prefix)
    }

    /// Skipped ticks: entry id -> JSON (hash), trimmed with the index.
    pub fn skipped_data(&self) -> String {
        format!("{}:skips:data", self.prefix)
    }

    /// Daemons alive: id -> last heartbeat (unix ms), sorted set.
    pub fn daemons(&self) -> String {
        format!("{}:daemons", self.prefix)
    }

    /// A daemon's lease: a key with a TTL, renewed by its heartbeat.
    pub fn daemon_lease(&self, daemon_id: &str) -> String {
        format!("{}:daemon_lease:{daemon_id}", self.prefix)
    }

    /// A token set once per Redis data set (`SET NX` by the first
    /// heartbeat that finds it missing): when it changes, Redis lost its
    /// data (restarted without persistence, flushed). No TTL.
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// The daemons that wrote back what they knew after Redis lost its
    /// data, in the epoch named (set). TTL: a day.
    pub fn restored(&self, epoch: &str) -> String {
        format!("{}:restored:{epoch}", self.prefix)
    }

    /// The run queue: a stream read by one consumer group shared by every
    /// daemon. Entries are deleted once acknowledged.
    pub fn runs(&self) -> String {
        format!("{}:runs", self.prefix)
    }

    /// Runs of a job in flight on any daemon (enqueued, not yet final):
    /// what the overlap policy looks at.
    pub fn inflight(&self, job_id: &str) -> String {
        format!("{}:inflight:{job_id}", self.prefix)
    }

    /// Retries waiting for their time: run JSON by due time (unix ms).
    pub fn retries(&self) -> String {
        format!("{}:retries", self.prefix)
    }

    /// One message part of one run to one recipient: `sending:<daemon>`
    /// while it goes out, `sent` after. TTL: record TTL.
    pub fn delivery(&self, key: &str) -> String {
        format!("{}:delivery:{key}", self.prefix)
    }

    /// A lease one daemon holds at a time (e.g. Telegram polling).
    pub fn lease(&self, name: &str) -> String {
        format!("{}:lease:{name}", self.prefix)
    }

    /// Ids of every user (set).
    pub fn users(&self) -> String {
        format!("{}:users", self.prefix)
    }

    /// A Telegram user (hash: id, name, active "1"/"0", packs as a JSON
    /// list, inactive_reason).
    pub fn user(&self, chat_id: i64) -> String {
        format!("{}:user:{chat_id}", self.prefix)
    }

    /// A digest profile's inbox: a stream producers `XADD` items to (`*`
    /// ids), trimmed by age at each digest run.
    pub fn digest_inbox(&self, profile: &str) -> String {
        format!("{}:digest:inbox:{profile}", self.prefix)
    }

    /// The end of the last window a profile's schedule collected (unix ms;
    /// items up to it are digested). No TTL.
    pub fn digest_last_run(&self, profile: &str, schedule: &str) -> String {
        format!("{}:digest:last_run:{profile}:{schedule}", self.prefix)
    }

    /// The window one digest run owns ("start end", unix ms), so a retried
    /// or reclaimed run collects the same items. TTL: record TTL.
    pub fn digest_window(&self, run_id: &str) -> String {
        format!("{}:digest:window:{run_id}", self.prefix)
    }

    /// Claim of one tick by one daemon: `SET NX` with expiry.
    pub fn tick_claim(&self, job_id: &str, unix_seconds: i64) -> String {
        format!("{}:tick:{job_id}:{unix_seconds}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let k = Keys::new("herald");
        assert_eq!(k.job("digest"), "herald:job:digest");
        assert_eq!(k.last_run("digest"), "herald:last_run:digest");
        assert_eq!(
            k.execution("digest@1700000000"),
            "herald:exec:digest@1700000000"
        );
        assert_eq!(k.history("digest"), "herald:exec:history:digest");
        assert_eq!(
            k.tick_claim("digest", 1_700_000_000),
            "herald:tick:digest:1700000000"
        );
        let other = Keys::new("staging:herald");
        assert!(other.recent().starts_with("staging:herald:"));
    }
}
