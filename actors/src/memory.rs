//! The in-memory backend: job table, last handled tick per job, execution
//! records and skipped ticks, bounded in every dimension.
//!
//! It is what herald runs on without Redis, and (from the Redis issue on)
//! what it falls back to while Redis is unreachable. It lives behind an
//! `Arc<Mutex<_>>` owned by the tree, not inside an actor, so a restarted
//! actor finds every record where it was.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::{JobId, JobSpec};
use crate::record::{ExecutionRecord, RunId, RunStatus, SkippedTicks};

/// Bounds on what the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Records kept in all; past it the oldest is dropped (and counted).
    pub max_records: usize,
    /// Records kept per job; past it the job's oldest is dropped.
    pub history_per_job: usize,
    /// Records older than this (by creation) expire.
    pub record_ttl: Duration,
    /// Skipped-tick entries kept.
    pub max_skipped: usize,
}

/// 100,000 records of ~300 bytes is ~30 MB: ample history for a day of
/// busy schedules, small next to a machine's memory.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;
/// As many runs per job as the admin page shows and then some.
pub const DEFAULT_HISTORY_PER_JOB: usize = 100;
/// Execution records expire after 7 days (DESIGN.md).
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(7 * 86_400);
pub const DEFAULT_MAX_SKIPPED: usize = 10_000;

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_records: DEFAULT_MAX_RECORDS,
            history_per_job: DEFAULT_HISTORY_PER_JOB,
            record_ttl: DEFAULT_RECORD_TTL,
            max_skipped: DEFAULT_MAX_SKIPPED,
        }
    }
}

/// A query over execution records, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordQuery {
    pub job_id: Option<String>,
    pub status: Option<RunStatus>,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    limits: StoreLimits,
    jobs: BTreeMap<JobId, Arc<JobSpec>>,
    last_tick: HashMap<JobId, DateTime<Utc>>,
    records: HashMap<RunId, (u64, ExecutionRecord)>,
    /// Creation sequence -> run, oldest first.
    order: BTreeMap<u64, RunId>,
    next_seq: u64,
    /// Per job, oldest first.
    history: HashMap<String, VecDeque<RunId>>,
    skipped: VecDeque<SkippedTicks>,
    dropped_records: u64,
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> Self {
        MemoryStore {
            limits,
            ..MemoryStore::default()
        }
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    // --- jobs -----------------------------------------------------------

    pub fn put_job(&mut self, spec: Arc<JobSpec>) {
        self.jobs.insert(spec.id.clone(), spec);
    }

    pub fn remove_job(&mut self, id: &str) -> Option<Arc<JobSpec>> {
        self.jobs.remove(id)
    }

    pub fn job(&self, id: &str) -> Option<Arc<JobSpec>> {
        self.jobs.get(id).cloned()
    }

    pub fn jobs(&self) -> Vec<Arc<JobSpec>> {
        self.jobs.values().cloned().collect()
    }

    /// The last tick the scheduler handled for a job (ran or skipped).
    pub fn last_tick(&self, job_id: &str) -> Option<DateTime<Utc>> {
        self.last_tick.get(job_id).copied()
    }

    /// Only moves forward, so a late write cannot rewind a job.
    pub fn set_last_tick(&mut self, job_id: &str, at: DateTime<Utc>) {
        if let Some(last) = self.last_tick.get_mut(job_id) {
            if at > *last {
                *last = at;
            }
            return;
        }
        // Keyed by the job's own id where the job is known (no copy).
        let key = self
            .jobs
            .get_key_value(job_id)
            .map_or_else(|| JobId::from(job_id), |(id, _)| id.clone());
        self.last_tick.insert(key, at);
    }

    // --- records --------------------------------------------------------

    /// Inserts or updates a record. A record only moves forward (see
    /// [`ExecutionRecord::progress`]): a late RUNNING after CANCELLED, or a
    /// PENDING after RUNNING, is ignored. Returns whether it took effect.
    pub fn put_record(&mut self, record: ExecutionRecord) -> bool {
        if let Some((_, existing)) = self.records.get_mut(&record.run_id) {
            if record.progress() < existing.progress() {
                return false;
            }
            *existing = record;
            return true;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let job_history = match self.history.get_mut(&record.job_id) {
            Some(history) => history,
            None => self.history.entry(record.job_id.clone()).or_default(),
        };
        job_history.push_back(record.run_id.clone());
        let evicted = if job_history.len() > self.limits.history_per_job {
            job_history.pop_front()
        } else {
            None
        };
        self.order.insert(seq, record.run_id.clone());
        self.records.insert(record.run_id.clone(), (seq, record));
        if let Some(old) = evicted {
            // Already out of its job's history.
            self.forget_record(&old);
        }
        while self.records.len() > self.limits.max_records {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.remove_record(&oldest);
            self.dropped_records += 1;
        }
        true
    }

    /// Drops a record from the record map and the age order, not from its
    /// job's history.
    fn forget_record(&mut self, run_id: &RunId) -> Option<ExecutionRecord> {
        let (seq, record) = self.records.remove(run_id)?;
        self.order.remove(&seq);
        Some(record)
    }

    fn remove_record(&mut self, run_id: &RunId) {
        let Some(record) = self.forget_record(run_id) else {
            return;
        };
        if let Some(h) = self.history.get_mut(&record.job_id) {
            // Records leave oldest first, so this one is nearly always the
            // front of its job's history: no scan then.
            if h.front() == Some(run_id) {
                h.pop_front();
            } else {
                h.retain(|id| id != run_id);
            }
            if h.is_empty() {
                self.history.remove(&record.job_id);
            }
        }
    }

    pub fn record(&self, run_id: &RunId) -> Option<ExecutionRecord> {
        self.records.get(run_id).map(|(_, r)| r.clone())
    }

    /// The newest record of a job.
    pub fn latest(&self, job_id: &str) -> Option<ExecutionRecord> {
        let id = self.history.get(job_id)?.back()?;
        self.record(id)
    }

    pub fn query(&self, q: &RecordQuery) -> Vec<ExecutionRecord> {
        let matches = |r: &ExecutionRecord| {
            q.job_id.as_deref().is_none_or(|j| r.job_id == j)
                && q.status.is_none_or(|s| r.status == s)
        };
        let newest_first: Box<dyn Iterator<Item = &RunId>> = match &q.job_id {
            Some(job) => match self.history.get(job) {
                Some(h) => Box::new(h.iter().rev()),
                None => Box::new(std::iter::empty()),
            },
            None => Box::new(self.order.values().rev()),
        };
        newest_first
            .filter_map(|id| self.records.get(id).map(|(_, r)| r))
            .filter(|r| matches(r))
            .skip(q.offset)
            .take(q.limit)
            .cloned()
            .collect()
    }

    /// Records not yet finished (PENDING or RUNNING), oldest first.
    pub fn unfinished(&self) -> Vec<ExecutionRecord> {
        self.order
            .values()
            .filter_map(|id| self.records.get(id).map(|(_, r)| r))
            .filter(|r| !r.status.is_terminal())
            .cloned()
            .collect()
    }

    /// Drops records created before `now - ttl`; returns how many.
    /// Unfinished records are kept whatever their age.
    pub fn expire(&mut self, now: DateTime<Utc>) -> usize {
        let ttl =
            chrono::TimeDelta::from_std(self.limits.record_ttl).unwrap_or(chrono::TimeDelta::MAX);
        let Some(cutoff) = now.checked_sub_signed(ttl) else {
            return 0;
        };
        let expired: Vec<RunId> = self
            .order
            .values()
            .filter_map(|id| self.records.get(id).map(|(_, r)| r))
            .take_while(|r| r.created_at < cutoff)
            .filter(|r| r.status.is_terminal())
            .map(|r| r.run_id.clone())
            .collect();
        for id in &expired {
            self.remove_record(id);
        }
        self.skipped.retain(|s| s.recorded_at >= cutoff);
        expired.len()
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Records dropped to stay under `max_records`.
    pub fn dropped_records(&self) -> u64 {
        self.dropped_records
    }

    // --- skipped ticks --------------------------------------------------

    pub fn put_skipped(&mut self, skipped: SkippedTicks) {
        self.skipped.push_back(skipped);
        while self.skipped.len() > self.limits.max_skipped {
            self.skipped.pop_front();
        }
    }

    /// Skipped ticks, newest first, optionally of one job.
    pub fn skipped(&self, job_id: Option<&str>, limit: usize) -> Vec<SkippedTicks> {
        self.skipped
            .iter()
            .rev()
            .filter(|s| job_id.is_none_or(|j| s.job_id == j))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Trigger;
    use chrono::TimeDelta;

    fn rec(job: &str, n: i64, status: RunStatus, created: DateTime<Utc>) -> ExecutionRecord {
        let at = DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap();
        let mut r = ExecutionRecord::pending(
            RunId::for_tick(job, at),
            job,
            Trigger::Schedule,
            at,
            3,
            created,
        );
        r.status = status;
        r
    }

    fn limits(max_records: usize, history_per_job: usize) -> StoreLimits {
        StoreLimits {
            max_records,
            history_per_job,
            ..StoreLimits::default()
        }
    }

    #[test]
    fn caps_drop_the_oldest_and_count_it() {
        let now = Utc::now();
        let mut s = MemoryStore::new(limits(3, 10));
        for n in 0..5 {
            s.put_record(rec("a", n, RunStatus::Success, now));
        }
        assert_eq!(s.record_count(), 3);
        assert_eq!(s.dropped_records(), 2);
        let ids: Vec<_> = s
            .query(&RecordQuery {
                limit: 10,
                ..Default::default()
            })
            .into_iter()
            .map(|r| r.run_id.0)
            .collect();
        assert_eq!(ids, ["a@1700000004", "a@1700000003", "a@1700000002"]);
    }

    #[test]
    fn the_overall_cap_keeps_each_jobs_history_in_step() {
        let now = Utc::now();
        let mut s = MemoryStore::new(limits(3, 2));
        for n in 0..4 {
            s.put_record(rec("a", n, RunStatus::Success, now));
            s.put_record(rec("b", n, RunStatus::Success, now));
        }
        let ids = |job: &str| -> Vec<String> {
            s.query(&RecordQuery {
                job_id: Some(job.into()),
                limit: 10,
                ..Default::default()
            })
            .into_iter()
            .map(|r| r.run_id.0)
            .collect()
        };
        // 8 written, 3 kept overall: b@3, a@3, b@2 (the newest)
        assert_eq!(ids("a"), ["a@1700000003"]);
        assert_eq!(ids("b"), ["b@1700000003", "b@1700000002"]);
        assert_eq!(s.record_count(), 3);
    }

    #[test]
    fn history_per_job_is_capped_without_touching_other_jobs() {
        let now = Utc::now();
        let mut s = MemoryStore::new(limits(100, 2));
        for n in 0..4 {
            s.put_record(rec("a", n, RunStatus::Success, now));
        }
        s.put_record(rec("b", 0, RunStatus::Failed, now));
        let a = s.query(&RecordQuery {
            job_id: Some("a".into()),
            limit: 10,
            ..Default::default()
        });
        assert_eq!(a.len(), 2);
        assert_eq!(s.latest("a").unwrap().run_id.0, "a@1700000003");
        assert_eq!(s.latest("b").unwrap().status, RunStatus::Failed);
        assert_eq!(s.record_count(), 3);
        assert_eq!(s.dropped_records(), 0, "per-job eviction is not a drop");
    }

    #[test]
    fn queries_filter_by_status_and_page() {
        let now = Utc::now();
        let mut s = MemoryStore::new(StoreLimits::default());
        for n in 0..6 {
            let status = if n % 2 == 0 {
                RunStatus::Success
            } else {
                RunStatus::Failed
            };
            s.put_record(rec("a", n, status, now));
        }
        let failed = s.query(&RecordQuery {
            status: Some(RunStatus::Failed),
            offset: 1,
            limit: 5,
            ..Default::default()
        });
        let ids: Vec<_> = failed.iter().map(|r| r.run_id.0.as_str()).collect();
        assert_eq!(ids, ["a@1700000003", "a@1700000001"]);
    }

    #[test]
    fn a_late_pending_does_not_undo_running_but_a_retry_moves_on() {
        let now = Utc::now();
        let mut s = MemoryStore::new(StoreLimits::default());
        let running = rec("a", 0, RunStatus::Running, now);
        s.put_record(running.clone());
        assert!(!s.put_record(rec("a", 0, RunStatus::Pending, now)));
        let mut retry = running.clone();
        retry.status = RunStatus::Pending;
        retry.attempt = 2;
        assert!(s.put_record(retry));
        assert_eq!(s.record(&running.run_id).unwrap().attempt, 2);
    }

    #[test]
    fn terminal_records_are_not_revived() {
        let now = Utc::now();
        let mut s = MemoryStore::new(StoreLimits::default());
        let cancelled = rec("a", 0, RunStatus::Cancelled, now);
        s.put_record(cancelled.clone());
        let mut late = cancelled.clone();
        late.status = RunStatus::Running;
        assert!(!s.put_record(late));
        assert_eq!(
            s.record(&cancelled.run_id).unwrap().status,
            RunStatus::Cancelled
        );
    }

    #[test]
    fn records_expire_after_the_ttl_but_unfinished_ones_stay() {
        let now = Utc::now();
        let old = now - TimeDelta::days(8);
        let mut s = MemoryStore::new(StoreLimits::default());
        s.put_record(rec("a", 0, RunStatus::Success, old));
        s.put_record(rec("a", 1, RunStatus::Running, old));
        s.put_record(rec("a", 2, RunStatus::Success, now));
        assert_eq!(s.expire(now), 1);
        assert_eq!(s.record_count(), 2);
        assert_eq!(s.unfinished().len(), 1);
    }

    #[test]
    fn last_tick_only_moves_forward() {
        let mut s = MemoryStore::new(StoreLimits::default());
        let t = Utc::now();
        s.set_last_tick("a", t);
        s.set_last_tick("a", t - TimeDelta::seconds(5));
        assert_eq!(s.last_tick("a"), Some(t));
    }
}
