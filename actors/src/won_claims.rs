//! The tick claims a daemon won, kept in memory so it can write them back
//! if Redis loses its data (restarted without persistence, flushed).
//! Without them a peer holding an unconfirmed enqueue of a tick that ran
//! here would find the claim free and run the tick again.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Claims kept at most (the oldest go first): a few minutes of a
/// thousand every-second jobs, more than the late claims of any outage
/// the leases let a daemon make.
pub const MAX_WON: usize = 200_000;

/// One claim: job id, tick (unix seconds), the claim's value.
pub type WonClaim = (String, i64, String);

/// Shared by the scheduler (the claims it wins: enqueues, skips, offline
/// runs) and the worker pool (the scheduled runs it takes from the queue:
/// an enqueue whose answer was lost may have landed and run, and only the
/// daemon that ran it knows). Outlives actor restarts.
#[derive(Debug, Clone)]
pub struct WonClaims {
    inner: Arc<Mutex<Claims>>,
}

#[derive(Debug)]
struct Claims {
    claims: VecDeque<WonClaim>,
    /// The same claims, to keep each once: the scheduler and the pool
    /// both note a run this daemon queued and took itself.
    kept: HashSet<WonClaim>,
    cap: usize,
}

impl WonClaims {
    pub fn new(cap: usize) -> WonClaims {
        WonClaims {
            inner: Arc::new(Mutex::new(Claims {
                claims: VecDeque::new(),
                kept: HashSet::new(),
                cap: cap.max(1),
            })),
        }
    }

    /// A poisoned lock only means a panic elsewhere mid-push: the list is
    /// still a list.
    fn lock(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a claim; one already kept is not kept twice.
    pub fn push(&self, job_id: &str, tick: DateTime<Utc>, value: &str) {
        let claim = (job_id.to_string(), tick.timestamp(), value.to_string());
        let mut c = self.lock();
        if c.kept.contains(&claim) {
            return;
        }
        if c.claims.len() >= c.cap
            && let Some(oldest) = c.claims.pop_front()
        {
            c.kept.remove(&oldest);
        }
        c.kept.insert(claim.clone());
        c.claims.push_back(claim);
    }

    pub fn len(&self) -> usize {
        self.lock().claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().claims.is_empty()
    }

    /// Every claim kept, oldest first.
    pub fn all(&self) -> Vec<WonClaim> {
        self.lock().claims.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_oldest_claims_go_first_past_the_cap() {
        let won = WonClaims::new(2);
        let t = |s| Utc.timestamp_opt(s, 0).single().unwrap_or_default();
        won.push("a", t(1), "d:queued");
        won.push("b", t(2), "d:skipped");
        won.push("c", t(3), "d");
        assert_eq!(won.len(), 2);
        assert_eq!(
            won.all(),
            vec![
                ("b".to_string(), 2, "d:skipped".to_string()),
                ("c".to_string(), 3, "d".to_string())
            ]
        );
    }

    #[test]
    fn a_claim_noted_twice_is_kept_once() {
        let won = WonClaims::new(2);
        let t = |s| Utc.timestamp_opt(s, 0).single().unwrap_or_default();
        won.push("a", t(1), "d:queued");
        won.push("a", t(1), "d:queued");
        won.push("b", t(2), "d:queued");
        assert_eq!(won.len(), 2, "the duplicate took no room");
        // Once dropped past the cap, it can be kept again.
        won.push("c", t(3), "d");
        won.push("a", t(1), "d:queued");
        assert_eq!(
            won.all(),
            vec![
                ("c".to_string(), 3, "d".to_string()),
                ("a".to_string(), 1, "d:queued".to_string())
            ]
        );
    }
}
