//! The scheduler's bookkeeping, without actors or clocks: each enabled
//! job's next fire in a min-heap, and the decisions a due tick leads to
//! under the job's misfire and overlap policies.
//!
//! The Scheduler actor owns one [`Timetable`], asks it when to wake
//! ([`Timetable::next_wake`]), and carries out the [`Action`]s that
//! [`Timetable::due`] returns.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use crate::job::{JobId, JobSpec, MisfirePolicy, OverlapPolicy};
use crate::record::{SkipReason, Trigger};
use crate::schedule::Schedule;

/// Most missed ticks enumerated for one job when catching up. A per-second
/// job down for 11 days reaches it; past it the rest are skipped unnamed.
pub const MAX_MISSED_TICKS: u64 = 1_000_000;

/// How long before its tick a run of a job with overlap `allow` is
/// claimed and queued: the run then waits in the pool and starts on the
/// dot, with the Redis round trips behind it (as Quartz acquires triggers
/// ahead of their fire time). Jobs with `skip` or `queue_one` decide at the
/// tick itself, since only then is it known whether the previous run is
/// over. Not a whole number of seconds: the work of queueing ahead then
/// falls between whole seconds, where most ticks are, instead of on them,
/// where it would compete with the runs being started.
pub const FIRE_AHEAD: TimeDelta = TimeDelta::milliseconds(1_500);

/// How far ahead of its tick a job is woken for.
fn lead(spec: &JobSpec) -> TimeDelta {
    if spec.overlap == OverlapPolicy::Allow {
        FIRE_AHEAD
    } else {
        TimeDelta::zero()
    }
}

/// What a due tick (or a finished run) leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a run of `job` for the tick at `scheduled_at`.
    Fire {
        job: Arc<JobSpec>,
        scheduled_at: DateTime<Utc>,
        trigger: Trigger,
    },
    /// Ticks that will not run, and why.
    Skip {
        job_id: String,
        reason: SkipReason,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        count: u64,
    },
    /// Every tick of the job up to `at` has been dealt with (persist it, so
    /// a restart resumes from here).
    Handled { job_id: JobId, at: DateTime<Utc> },
}

#[derive(Debug)]
struct Entry {
    spec: Arc<JobSpec>,
    /// Bumped whenever the job's heap entry is replaced; older heap entries
    /// carrying a smaller generation are stale and ignored.
    generation: u64,
    next: Option<DateTime<Utc>>,
    /// Runs started and not yet settled (including ones waiting to retry).
    in_flight: u32,
    /// A tick held back by `queue_one`.
    queued: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct Timetable {
    entries: HashMap<JobId, Entry>,
    /// (wake time, generation, job id): the wake time is the job's next
    /// tick, less [`FIRE_AHEAD`] for jobs that fire ahead.
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64, JobId)>>,
    next_generation: u64,
    /// A tick later than this is a misfire rather than a late fire.
    grace: TimeDelta,
}

impl Timetable {
    pub fn new(misfire_grace: std::time::Duration) -> Self {
        Timetable {
            entries: HashMap::new(),
            heap: BinaryHeap::new(),
            next_generation: 0,
            grace: TimeDelta::from_std(misfire_grace).unwrap_or(TimeDelta::MAX),
        }
    }

    /// Adds or replaces a job. `resume_after` is the last tick handled for
    /// it (from the store), so ticks missed since then are due at once and
    /// meet the misfire policy; `None` starts from `now`. Runs in flight and
    /// a queued tick survive a replacement, unless the job is now disabled:
    /// then the queued tick is dropped (the skip is returned), as
    /// [`Timetable::set_enabled`] does.
    pub fn upsert(
        &mut self,
        spec: Arc<JobSpec>,
        resume_after: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Vec<Action> {
        let from = resume_after.unwrap_or(now);
        let (in_flight, mut queued) = self
            .entries
            .remove(&spec.id)
            .map_or((0, None), |e| (e.in_flight, e.queued));
        let mut actions = Vec::new();
        if !spec.enabled
            && let Some(tick) = queued.take()
        {
            actions.push(skip(&spec.id, SkipReason::Disabled, tick, tick, 1));
        }
        let id = spec.id.clone();
        self.entries.insert(
            id.clone(),
            Entry {
                spec,
                generation: 0,
                next: None,
                in_flight,
                queued,
            },
        );
        self.arm(&id, from);
        actions
    }

    /// Removes a job; its queued tick, if any, is dropped with it.
    pub fn remove(&mut self, id: &str) -> bool {
        self.entries.remove(id).is_some()
    }

    /// Enables or disables a job. Disabling drops a queued tick (reported).
    pub fn set_enabled(&mut self, id: &str, enabled: bool, now: DateTime<Utc>) -> Vec<Action> {
        let Some(entry) = self.entries.get_mut(id) else {
            return Vec::new();
        };
        let mut spec = (*entry.spec).clone();
        spec.enabled = enabled;
        entry.spec = Arc::new(spec);
        let mut actions = Vec::new();
        if !enabled && let Some(tick) = entry.queued.take() {
            actions.push(skip(id, SkipReason::Disabled, tick, tick, 1));
        }
        self.arm(id, now);
        actions
    }

    /// Sets the count of unsettled runs (when rebuilding from the store).
    pub fn set_in_flight(&mut self, id: &str, in_flight: u32) {
        if let Some(e) = self.entries.get_mut(id) {
            e.in_flight = in_flight;
        }
    }

    /// Sets every job's count of unsettled runs at once; jobs absent from
    /// `counts` have none.
    pub fn reset_in_flight(&mut self, counts: &HashMap<String, u32>) {
        for (id, e) in self.entries.iter_mut() {
            e.in_flight = counts.get(&**id).copied().unwrap_or(0);
        }
    }

    pub fn job(&self, id: &str) -> Option<&Arc<JobSpec>> {
        self.entries.get(id).map(|e| &e.spec)
    }

    /// The next fire of a job (None: disabled or never again).
    pub fn next_fire(&self, id: &str) -> Option<DateTime<Utc>> {
        self.entries.get(id).and_then(|e| e.next)
    }

    pub fn in_flight(&self, id: &str) -> u32 {
        self.entries.get(id).map_or(0, |e| e.in_flight)
    }

    /// Every job with its next fire.
    pub fn jobs(&self) -> Vec<(Arc<JobSpec>, Option<DateTime<Utc>>)> {
        self.entries
            .values()
            .map(|e| (e.spec.clone(), e.next))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the earliest job is due; the only timer the scheduler needs.
    pub fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, generation, id))) = self.heap.peek() {
            if self.is_current(id, *generation) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Pops every tick due at `now` (or, for jobs that fire ahead, due
    /// within [`FIRE_AHEAD`] of it) and decides what each leads to.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(Reverse((wake, generation, _))) = self.heap.peek() {
            if *wake > now {
                break;
            }
            let generation = *generation;
            let Some(Reverse((_, _, id))) = self.heap.pop() else {
                break;
            };
            if !self.is_current(&id, generation) {
                continue;
            }
            let Some(at) = self.entries.get(&id).and_then(|e| e.next) else {
                continue;
            };
            if now - at > self.grace {
                self.misfire(&id, at, now, &mut actions);
            } else {
                self.on_time(&id, at, &mut actions);
            }
        }
        actions
    }

    /// A run of `id` settled (succeeded, failed for good, or was
    /// cancelled). A tick queued behind it starts now.
    pub fn run_settled(&mut self, id: &str) -> Vec<Action> {
        let Some(entry) = self.entries.get_mut(id) else {
            return Vec::new();
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if entry.in_flight == 0
            && let Some(tick) = entry.queued.take()
        {
            entry.in_flight += 1;
            return vec![Action::Fire {
                job: entry.spec.clone(),
                scheduled_at: tick,
                trigger: Trigger::Queued,
            }];
        }
        Vec::new()
    }

    /// A Fire this timetable issued did not start here (another daemon
    /// claimed the tick): take it out of the in-flight count.
    pub fn not_started(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    /// Jobs whose in-flight count matters now: due by `now` with an
    /// overlap policy other than `allow`, or holding a queued tick.
    pub fn overlap_candidates(&self, now: DateTime<Utc>) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| {
                e.queued.is_some()
                    || (e.spec.overlap != OverlapPolicy::Allow && e.next.is_some_and(|n| n <= now))
            })
            .map(|(id, _)| id.to_string())
            .collect()
    }

    pub fn has_queued(&self) -> bool {
        self.entries.values().any(|e| e.queued.is_some())
    }

    /// Starts queued ticks of jobs with nothing in flight any more.
    pub fn release_queued(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for e in self.entries.values_mut() {
            if e.in_flight == 0
                && let Some(tick) = e.queued.take()
            {
                e.in_flight += 1;
                actions.push(Action::Fire {
                    job: e.spec.clone(),
                    scheduled_at: tick,
                    trigger: Trigger::Queued,
                });
            }
        }
        actions
    }

    /// Drops every queued tick (on shutdown), reporting each.
    pub fn drain_queued(&mut self) -> Vec<Action> {
        self.entries
            .iter_mut()
            .filter_map(|(id, e)| {
                e.queued
                    .take()
                    .map(|t| skip(id, SkipReason::Shutdown, t, t, 1))
            })
            .collect()
    }

    fn is_current(&self, id: &str, generation: u64) -> bool {
        self.entries
            .get(id)
            .is_some_and(|e| e.generation == generation && e.spec.enabled)
    }

    /// Computes the job's next fire after `after` and pushes it.
    fn arm(&mut self, id: &str, after: DateTime<Utc>) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.generation = generation;
        entry.next = if entry.spec.enabled {
            entry.spec.schedule.next_after(after)
        } else {
            None
        };
        if let Some(next) = entry.next {
            let wake = next - lead(&entry.spec);
            self.heap
                .push(Reverse((wake, generation, entry.spec.id.clone())));
        }
        self.compact_if_stale();
    }

    /// Replaced entries stay in the heap until popped, which for a yearly
    /// job is a year away: rebuild the heap from the live entries when the
    /// stale ones outnumber them, so memory stays proportional to the jobs.
    fn compact_if_stale(&mut self) {
        if self.heap.len() <= 2 * self.entries.len() + 1_024 {
            return;
        }
        self.heap = self
            .entries
            .iter()
            .filter(|(_, e)| e.spec.enabled)
            .filter_map(|(id, e)| {
                e.next
                    .map(|n| Reverse((n - lead(&e.spec), e.generation, id.clone())))
            })
            .collect();
    }

    /// Gives back the room the tables grew into while loading (a heap
    /// that doubled to 131,072 for 100,000 jobs).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.heap.shrink_to_fit();
    }

    /// Heap entries, live and stale (for tests of compaction).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    fn on_time(&mut self, id: &str, tick: DateTime<Utc>, actions: &mut Vec<Action>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        actions.push(Action::Handled {
            job_id: entry.spec.id.clone(),
            at: tick,
        });
        let busy = entry.in_flight > 0;
        match (entry.spec.overlap, busy) {
            (OverlapPolicy::Allow, _) | (_, false) => {
                entry.in_flight += 1;
                actions.push(Action::Fire {
                    job: entry.spec.clone(),
                    scheduled_at: tick,
                    trigger: Trigger::Schedule,
                });
            }
            (OverlapPolicy::QueueOne, true) if entry.queued.is_none() => {
                entry.queued = Some(tick);
            }
            (OverlapPolicy::Skip | OverlapPolicy::QueueOne, true) => {
                actions.push(skip(id, SkipReason::Overlap, tick, tick, 1));
            }
        }
        self.arm(id, tick);
    }

    /// `first` is more than the grace late: gather every missed tick up to
    /// `now` and apply the misfire policy. Catch-up runs are started
    /// whatever the overlap policy: it governs ticks on time.
    fn misfire(
        &mut self,
        id: &str,
        first: DateTime<Utc>,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let spec = entry.spec.clone();
        let keep = match spec.misfire {
            MisfirePolicy::FireAll => u64::from(spec.misfire_limit),
            _ => 0,
        };
        let mut kept = Vec::new();
        let mut count = 0u64;
        let mut last = first;
        let mut before_last = None;
        let mut tick = Some(first);
        while let Some(t) = tick.filter(|t| *t <= now) {
            if count == MAX_MISSED_TICKS {
                break;
            }
            if count < keep {
                kept.push(t);
            }
            count += 1;
            before_last = Some(last).filter(|_| count > 1);
            last = t;
            tick = spec.schedule.next_after(t);
        }
        let capped = count == MAX_MISSED_TICKS;
        actions.push(Action::Handled {
            job_id: spec.id.clone(),
            at: if capped { now } else { last },
        });
        let fire = |at| Action::Fire {
            job: spec.clone(),
            scheduled_at: at,
            trigger: Trigger::Misfire,
        };
        let mut fired = 0u32;
        match spec.misfire {
            MisfirePolicy::Skip => actions.push(skip(id, SkipReason::Misfire, first, last, count)),
            MisfirePolicy::FireOnce => {
                if let Some(prev) = before_last {
                    actions.push(skip(id, SkipReason::Misfire, first, prev, count - 1));
                }
                actions.push(fire(last));
                fired = 1;
            }
            MisfirePolicy::FireAll => {
                for &t in &kept {
                    actions.push(fire(t));
                }
                fired = kept.len() as u32;
                if count > keep {
                    let from = spec
                        .schedule
                        .next_after(*kept.last().unwrap_or(&first))
                        .unwrap_or(last);
                    actions.push(skip(id, SkipReason::MisfireLimit, from, last, count - keep));
                }
            }
        }
        entry.in_flight += fired;
        self.arm(id, if capped { now } else { last });
    }
}

/// The ticks of `schedule` from `first` to `last`, both included, at most
/// `cap` of them: the ticks one skipped-tick entry stands for.
pub fn skipped_ticks(
    schedule: &Schedule,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    cap: usize,
) -> Vec<DateTime<Utc>> {
    let mut ticks = Vec::new();
    let mut tick = Some(first);
    while let Some(t) = tick.filter(|t| *t <= last) {
        if ticks.len() == cap {
            break;
        }
        ticks.push(t);
        tick = schedule.next_after(t);
    }
    ticks
}

/// The stretches of consecutive ticks whose claim was won, as (first,
/// last, count): where another daemon took a tick, an entry is split.
pub fn claimed_stretches(
    ticks: &[DateTime<Utc>],
    won: &[bool],
) -> Vec<(DateTime<Utc>, DateTime<Utc>, u64)> {
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>, u64)> = Vec::new();
    let mut open = false;
    for (tick, won) in ticks.iter().zip(won) {
        match (won, open, out.last_mut()) {
            (true, true, Some(stretch)) => {
                stretch.1 = *tick;
                stretch.2 += 1;
            }
            (true, _, _) => {
                out.push((*tick, *tick, 1));
                open = true;
            }
            (false, _, _) => open = false,
        }
    }
    out
}

fn skip(
    id: &str,
    reason: SkipReason,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    count: u64,
) -> Action {
    Action::Skip {
        job_id: id.to_string(),
        reason,
        first,
        last,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobKind;
    use std::time::Duration;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn job(id: &str, expr: &str, f: impl FnOnce(&mut JobSpec)) -> Arc<JobSpec> {
        let mut spec = JobSpec::new(
            id,
            Schedule::parse(expr, chrono_tz::UTC).unwrap(),
            JobKind::Coded {
                handler: "noop".into(),
            },
        );
        f(&mut spec);
        Arc::new(spec)
    }

    fn fires(actions: &[Action]) -> Vec<(String, Trigger)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fire {
                    scheduled_at,
                    trigger,
                    ..
                } => Some((scheduled_at.format("%H:%M").to_string(), *trigger)),
                _ => None,
            })
            .collect()
    }

    fn skips(actions: &[Action]) -> Vec<(SkipReason, String, String, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Skip {
                    reason,
                    first,
                    last,
                    count,
                    ..
                } => Some((
                    *reason,
                    first.format("%H:%M").to_string(),
                    last.format("%H:%M").to_string(),
                    *count,
                )),
                _ => None,
            })
            .collect()
    }

    fn table() -> Timetable {
        Timetable::new(Duration::from_secs(5))
    }

    /// Hourly job, last handled tick 01:00, back at 05:30: ticks 02:00,
    /// 03:00, 04:00 and 05:00 were missed.
    fn after_downtime(policy: MisfirePolicy, limit: u32) -> Vec<Action> {
        let mut t = table();
        t.upsert(
            job("j", "0 * * * *", |s| {
                s.misfire = policy;
                s.misfire_limit = limit;
            }),
            Some(at("2021-01-01T01:00:00Z")),
            at("2021-01-01T05:30:00Z"),
        );
        assert_eq!(t.next_wake(), Some(at("2021-01-01T02:00:00Z")));
        let actions = t.due(at("2021-01-01T05:30:00Z"));
        assert_eq!(t.next_wake(), Some(at("2021-01-01T06:00:00Z")));
        assert!(actions.contains(&Action::Handled {
            job_id: "j".into(),
            at: at("2021-01-01T05:00:00Z")
        }));
        actions
    }

    #[test]
    fn misfire_skip_runs_nothing_and_records_the_missed_ticks() {
        let a = after_downtime(MisfirePolicy::Skip, 100);
        assert!(fires(&a).is_empty());
        assert_eq!(
            skips(&a),
            [(SkipReason::Misfire, "02:00".into(), "05:00".into(), 4)]
        );
    }

    #[test]
    fn misfire_fire_once_runs_the_latest_missed_tick() {
        let a = after_downtime(MisfirePolicy::FireOnce, 100);
        assert_eq!(fires(&a), [("05:00".into(), Trigger::Misfire)]);
        assert_eq!(
            skips(&a),
            [(SkipReason::Misfire, "02:00".into(), "04:00".into(), 3)]
        );
    }

    #[test]
    fn misfire_fire_all_runs_each_missed_tick_up_to_the_bound() {
        let a = after_downtime(MisfirePolicy::FireAll, 100);
        let expected: Vec<(String, Trigger)> = ["02:00", "03:00", "04:00", "05:00"]
            .iter()
            .map(|t| (t.to_string(), Trigger::Misfire))
            .collect();
        assert_eq!(fires(&a), expected);
        assert!(skips(&a).is_empty());

        let a = after_downtime(MisfirePolicy::FireAll, 2);
        assert_eq!(fires(&a), expected[..2]);
        assert_eq!(
            skips(&a),
            [(SkipReason::MisfireLimit, "04:00".into(), "05:00".into(), 2)]
        );
    }

    #[test]
    fn a_tick_within_the_grace_fires_on_time() {
        let mut t = table();
        t.upsert(
            job("j", "0 * * * *", |_| {}),
            Some(at("2021-01-01T01:00:00Z")),
            at("2021-01-01T02:00:03Z"),
        );
        let a = t.due(at("2021-01-01T02:00:03Z"));
        assert_eq!(fires(&a), [("02:00".into(), Trigger::Schedule)]);
    }

    #[test]
    fn overlap_skip_drops_ticks_while_a_run_is_going() {
        let mut t = table();
        t.upsert(
            job("j", "* * * * *", |_| {}),
            None,
            at("2021-01-01T00:00:30Z"),
        );
        assert_eq!(fires(&t.due(at("2021-01-01T00:01:00Z"))).len(), 1);
        let a = t.due(at("2021-01-01T00:02:00Z"));
        assert!(fires(&a).is_empty());
        assert_eq!(
            skips(&a),
            [(SkipReason::Overlap, "00:02".into(), "00:02".into(), 1)]
        );
        assert!(t.run_settled("j").is_empty());
        assert_eq!(fires(&t.due(at("2021-01-01T00:03:00Z"))).len(), 1);
    }

    #[test]
    fn overlap_allow_starts_alongside() {
        let mut t = table();
        t.upsert(
            job("j", "* * * * *", |s| s.overlap = OverlapPolicy::Allow),
            None,
            at("2021-01-01T00:00:30Z"),
        );
        t.due(at("2021-01-01T00:01:00Z"));
        assert_eq!(fires(&t.due(at("2021-01-01T00:02:00Z"))).len(), 1);
        assert_eq!(t.in_flight("j"), 2);
    }

    #[test]
    fn allow_jobs_wake_ahead_of_their_tick_and_others_at_it() {
        let mut t = table();
        t.upsert(
            job("ahead", "* * * * *", |s| s.overlap = OverlapPolicy::Allow),
            None,
            at("2021-01-01T00:00:30Z"),
        );
        t.upsert(
            job("on-time", "* * * * *", |_| {}),
            None,
            at("2021-01-01T00:00:30Z"),
        );
        assert_eq!(t.next_wake(), Some(at("2021-01-01T00:00:58.5Z")));
        assert!(t.due(at("2021-01-01T00:00:58.499Z")).is_empty());
        // 1.5 s ahead: the allow job's 00:01 tick, not yet the other's
        let early = t.due(at("2021-01-01T00:00:58.5Z"));
        assert_eq!(
            fires(&early),
            vec![("00:01".to_string(), Trigger::Schedule)]
        );
        assert!(matches!(&early[..], [Action::Handled { job_id, .. }, ..] if &**job_id == "ahead"));
        assert_eq!(t.next_fire("ahead"), Some(at("2021-01-01T00:02:00Z")));
        assert_eq!(t.next_wake(), Some(at("2021-01-01T00:01:00Z")));
        let on_time = t.due(at("2021-01-01T00:01:00Z"));
        assert_eq!(
            fires(&on_time),
            vec![("00:01".to_string(), Trigger::Schedule)]
        );
        assert_eq!(t.next_wake(), Some(at("2021-01-01T00:01:58.5Z")));
    }

    #[test]
    fn overlap_queue_one_holds_one_tick_and_starts_it_when_the_run_ends() {
        let mut t = table();
        t.upsert(
            job("j", "* * * * *", |s| s.overlap = OverlapPolicy::QueueOne),
            None,
            at("2021-01-01T00:00:30Z"),
        );
        t.due(at("2021-01-01T00:01:00Z"));
        assert!(
            t.due(at("2021-01-01T00:02:00Z"))
                .iter()
                .all(|a| !matches!(a, Action::Fire { .. } | Action::Skip { .. }))
        );
        let a = t.due(at("2021-01-01T00:03:00Z"));
        assert_eq!(
            skips(&a),
            [(SkipReason::Overlap, "00:03".into(), "00:03".into(), 1)]
        );
        assert_eq!(
            fires(&t.run_settled("j")),
            [("00:02".into(), Trigger::Queued)]
        );
        assert_eq!(t.in_flight("j"), 1);
    }

    #[test]
    fn an_edit_that_disables_a_job_drops_its_queued_tick() {
        let mut t = table();
        let queue_one = |s: &mut JobSpec| s.overlap = OverlapPolicy::QueueOne;
        t.upsert(
            job("j", "* * * * *", queue_one),
            None,
            at("2021-01-01T00:00:30Z"),
        );
        t.due(at("2021-01-01T00:01:00Z"));
        t.due(at("2021-01-01T00:02:00Z")); // held: the 00:01 run goes on
        let disabled = job("j", "* * * * *", |s| {
            queue_one(s);
            s.enabled = false;
        });
        let a = t.upsert(disabled, None, at("2021-01-01T00:02:10Z"));
        assert_eq!(
            skips(&a),
            [(SkipReason::Disabled, "00:02".into(), "00:02".into(), 1)]
        );
        assert!(
            fires(&t.run_settled("j")).is_empty(),
            "a disabled job's queued tick does not start"
        );
    }

    #[test]
    fn edits_and_enable_rearm_the_heap() {
        let mut t = table();
        let now = at("2021-01-01T00:00:30Z");
        t.upsert(job("a", "0 * * * *", |_| {}), None, now);
        t.upsert(job("b", "0 0 * * *", |_| {}), None, now);
        assert_eq!(t.next_wake(), Some(at("2021-01-01T01:00:00Z")));
        t.upsert(job("a", "*/5 * * * *", |_| {}), None, now);
        assert_eq!(t.next_wake(), Some(at("2021-01-01T00:05:00Z")));
        t.set_enabled("a", false, now);
        assert_eq!(t.next_wake(), Some(at("2021-01-02T00:00:00Z")));
        assert!(
            t.due(at("2021-01-01T00:05:00Z")).is_empty(),
            "a disabled job does not fire"
        );
        t.set_enabled("a", true, now);
        assert_eq!(t.next_wake(), Some(at("2021-01-01T00:05:00Z")));
        t.remove("a");
        assert_eq!(t.next_wake(), Some(at("2021-01-02T00:00:00Z")));
    }

    #[test]
    fn repeated_edits_do_not_grow_the_heap_without_bound() {
        let mut t = table();
        let now = at("2021-01-01T00:00:30Z");
        for i in 0..100 {
            t.upsert(job(&format!("y{i}"), "0 0 1 1 *", |_| {}), None, now);
        }
        for _ in 0..200 {
            for i in 0..100 {
                t.upsert(job(&format!("y{i}"), "0 0 1 1 *", |_| {}), None, now);
            }
        }
        assert!(t.heap_len() <= 2 * 100 + 1_024 + 1, "{}", t.heap_len());
        assert_eq!(t.next_wake(), Some(at("2022-01-01T00:00:00Z")));
        assert_eq!(fires(&t.due(at("2022-01-01T00:00:00Z"))).len(), 100);
    }

    #[test]
    fn many_jobs_due_at_once_each_fire_once() {
        let mut t = table();
        let now = at("2021-01-01T00:00:30Z");
        for i in 0..1000 {
            t.upsert(job(&format!("j{i}"), "0 * * * *", |_| {}), None, now);
        }
        let a = t.due(at("2021-01-01T01:00:00.400Z"));
        assert_eq!(fires(&a).len(), 1000);
        assert!(t.due(at("2021-01-01T01:00:00.900Z")).is_empty());
        assert_eq!(t.next_wake(), Some(at("2021-01-01T02:00:00Z")));
    }

    #[test]
    fn a_skip_lists_its_ticks_up_to_a_cap() {
        let every_second = Schedule::parse("* * * * * *", chrono_tz::UTC).unwrap();
        let ticks = skipped_ticks(
            &every_second,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:04Z"),
            10,
        );
        assert_eq!(ticks.len(), 5);
        assert_eq!(ticks[4], at("2026-01-01T00:00:04Z"));
        let capped = skipped_ticks(
            &every_second,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:04Z"),
            3,
        );
        assert_eq!(capped.len(), 3);
    }

    #[test]
    fn ticks_won_split_into_stretches() {
        let t: Vec<DateTime<Utc>> = (0..6)
            .map(|i| at("2026-01-01T00:00:00Z") + TimeDelta::seconds(i))
            .collect();
        let won = [true, true, false, true, false, false];
        assert_eq!(
            claimed_stretches(&t, &won),
            vec![(t[0], t[1], 2), (t[3], t[3], 1)]
        );
        assert!(claimed_stretches(&t, &[false; 6]).is_empty());
        assert_eq!(claimed_stretches(&t, &[true; 6]), vec![(t[0], t[5], 6)]);
    }
}
