//! The Scheduler actor: one timer for the earliest due job.
//!
//! It owns a [`Timetable`], sleeps until the earliest fire (no polling),
//! and carries out what each due tick leads to: an execution record and a
//! run for the pool, a skipped tick recorded with its reason, the job's
//! last handled tick persisted. Edits re-arm the timer at once. On a
//! (re)start it rebuilds from the store: jobs, last ticks (so missed ticks
//! meet the misfire policy), and runs still in flight (for overlap).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::AbortOnDrop;
use crate::handles::{PoolHandle, StoreHandle};
use crate::job::JobSpec;
use crate::record::{ExecutionRecord, RunId, SkippedTicks, Trigger};
use crate::timetable::{Action, Timetable};
use crate::worker_pool::RunRequest;

/// The timer never sleeps longer than this, so a jump of the wall clock
/// (NTP, suspend) is noticed within a minute. One wake a minute is not a
/// polling loop: idle cost is nil.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Retry interval for runs the pool could not take (it was restarting).
const RESUBMIT_AFTER: Duration = Duration::from_millis(200);

pub enum SchedulerMsg {
    /// The timer fired.
    Wake,
    Upsert(Box<JobSpec>, RpcReplyPort<Option<DateTime<Utc>>>),
    Remove(String, RpcReplyPort<bool>),
    SetEnabled(String, bool, RpcReplyPort<Option<Option<DateTime<Utc>>>>),
    RunNow(String, RpcReplyPort<Option<RunId>>),
    RunSettled {
        job_id: String,
    },
    Resubmit,
    Jobs(RpcReplyPort<Vec<JobView>>),
    StopFiring(RpcReplyPort<()>),
}

/// A job as the scheduler sees it now.
#[derive(Debug, Clone)]
pub struct JobView {
    pub spec: Arc<JobSpec>,
    pub next_fire: Option<DateTime<Utc>>,
    pub in_flight: u32,
}

#[derive(Clone)]
pub struct SchedulerArgs {
    pub misfire_grace: Duration,
    pub store: StoreHandle,
    pub pool: PoolHandle,
}

pub struct Scheduler;

pub struct SchedulerState {
    args: SchedulerArgs,
    timetable: Timetable,
    timer: Option<(DateTime<Utc>, AbortOnDrop)>,
    /// Runs recorded but not yet accepted by the pool.
    unsubmitted: Vec<RunRequest>,
    resubmit_timer: Option<AbortOnDrop>,
    stopped: bool,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let snapshot = args.store.snapshot().await?;
        let now = Utc::now();
        let mut timetable = Timetable::new(args.misfire_grace);
        let mut in_flight: HashMap<&str, u32> = HashMap::new();
        for record in &snapshot.unfinished {
            *in_flight.entry(record.job_id.as_str()).or_default() += 1;
        }
        for job in &snapshot.jobs {
            let last = snapshot.last_ticks.get(&job.id).copied();
            if last.is_none() {
                // From now on, ticks of this job are accounted for.
                let _ = args.store.set_last_tick(job.id.clone(), now);
            }
            timetable.upsert(job.clone(), last, now);
            timetable.set_in_flight(
                &job.id,
                in_flight.get(job.id.as_str()).copied().unwrap_or(0),
            );
        }
        tracing::info!(jobs = timetable.len(), "scheduler started");
        let mut state = SchedulerState {
            args,
            timetable,
            timer: None,
            unsubmitted: Vec::new(),
            resubmit_timer: None,
            stopped: false,
        };
        // Ticks missed while down are due now.
        fire_due(&myself, &mut state);
        rearm(&myself, &mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Wake => {
                state.timer = None;
                fire_due(&myself, state);
            }
            SchedulerMsg::Upsert(spec, reply) => {
                let spec = Arc::new(*spec);
                let _ = state.args.store.put_job(spec.clone());
                let id = spec.id.clone();
                state.timetable.upsert(spec, None, Utc::now());
                let _ = reply.send(state.timetable.next_fire(&id));
            }
            SchedulerMsg::Remove(id, reply) => {
                let existed = state.timetable.remove(&id);
                if existed {
                    let _ = state.args.store.remove_job(id);
                }
                let _ = reply.send(existed);
            }
            SchedulerMsg::SetEnabled(id, enabled, reply) => {
                let actions = state.timetable.set_enabled(&id, enabled, Utc::now());
                let answer = state.timetable.job(&id).cloned().map(|spec| {
                    let _ = state.args.store.put_job(spec);
                    state.timetable.next_fire(&id)
                });
                execute(&myself, state, actions);
                let _ = reply.send(answer);
            }
            SchedulerMsg::RunNow(id, reply) => {
                let run = state.timetable.job(&id).cloned().map(|job| {
                    let now = Utc::now();
                    let run_id = RunId::manual(&id, now);
                    state
                        .timetable
                        .set_in_flight(&id, state.timetable.in_flight(&id) + 1);
                    start_run(&myself, state, job, run_id.clone(), now, Trigger::Manual);
                    run_id
                });
                let _ = reply.send(run);
            }
            SchedulerMsg::RunSettled { job_id } => {
                let actions = state.timetable.run_settled(&job_id);
                if !state.stopped {
                    execute(&myself, state, actions);
                }
            }
            SchedulerMsg::Resubmit => {
                state.resubmit_timer = None;
                for run in std::mem::take(&mut state.unsubmitted) {
                    submit(&myself, state, run);
                }
            }
            SchedulerMsg::Jobs(reply) => {
                let views = state
                    .timetable
                    .jobs()
                    .into_iter()
                    .map(|(spec, next_fire)| JobView {
                        in_flight: state.timetable.in_flight(&spec.id),
                        spec,
                        next_fire,
                    })
                    .collect();
                let _ = reply.send(views);
            }
            SchedulerMsg::StopFiring(reply) => {
                state.stopped = true;
                state.timer = None;
                let actions = state.timetable.drain_queued();
                execute(&myself, state, actions);
                let _ = reply.send(());
            }
        }
        rearm(&myself, state);
        Ok(())
    }
}

fn fire_due(myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState) {
    if state.stopped {
        return;
    }
    let actions = state.timetable.due(Utc::now());
    execute(myself, state, actions);
}

/// Sets the one timer for the earliest due job, if it changed.
fn rearm(myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState) {
    if state.stopped {
        state.timer = None;
        return;
    }
    let Some(next) = state.timetable.next_wake() else {
        state.timer = None;
        return;
    };
    if state.timer.as_ref().is_some_and(|(at, _)| *at == next) {
        return;
    }
    let delay = (next - Utc::now())
        .to_std()
        .unwrap_or_default()
        .min(MAX_SLEEP);
    let handle = myself.send_after(delay, || SchedulerMsg::Wake);
    // Replacing the old timer aborts it.
    state.timer = Some((next, AbortOnDrop::from(handle)));
}

fn execute(myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState, actions: Vec<Action>) {
    for action in actions {
        match action {
            Action::Fire {
                job,
                scheduled_at,
                trigger,
            } => {
                let run_id = RunId::for_tick(&job.id, scheduled_at);
                start_run(myself, state, job, run_id, scheduled_at, trigger);
            }
            Action::Skip {
                job_id,
                reason,
                first,
                last,
                count,
            } => {
                tracing::info!(job = %job_id, reason = reason.as_str(), %first, %last, count, "ticks skipped");
                let _ = state.args.store.put_skipped(SkippedTicks {
                    job_id,
                    reason,
                    first,
                    last,
                    count,
                    recorded_at: Utc::now(),
                });
            }
            Action::Handled { job_id, at } => {
                let _ = state.args.store.set_last_tick(job_id, at);
            }
        }
    }
}

fn start_run(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    job: Arc<JobSpec>,
    run_id: RunId,
    scheduled_at: DateTime<Utc>,
    trigger: Trigger,
) {
    let record = ExecutionRecord::pending(
        run_id,
        &job.id,
        trigger,
        scheduled_at,
        job.retry.max_attempts,
        Utc::now(),
    );
    // Record first: a run the pool never took is still found (and
    // re-queued) from its PENDING record.
    if let Err(e) = state.args.store.put_record(record.clone()) {
        tracing::error!(run = %record.run_id, error = %e, "could not record PENDING");
    }
    submit(myself, state, RunRequest { record, job });
}

fn submit(myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState, run: RunRequest) {
    if let Err(e) = state.args.pool.submit(run.clone()) {
        tracing::warn!(run = %run.record.run_id, error = %e, "pool unavailable; will resubmit");
        state.unsubmitted.push(run);
        if state.resubmit_timer.is_none() {
            let handle = myself.send_after(RESUBMIT_AFTER, || SchedulerMsg::Resubmit);
            state.resubmit_timer = Some(AbortOnDrop::from(handle));
        }
    }
}
