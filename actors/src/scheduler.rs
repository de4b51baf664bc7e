//! The Scheduler actor: one timer for the earliest due job.
//!
//! It owns a [`Timetable`], sleeps until the earliest fire (no polling),
//! and carries out what each due tick leads to: an execution record and a
//! run for the pool, a skipped tick recorded with its reason, the job's
//! last handled tick persisted. Edits re-arm the timer at once. On a
//! (re)start it rebuilds from the store: jobs, last ticks (so missed ticks
//! meet the misfire policy), and runs still in flight (for overlap).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use crate::AbortOnDrop;
use crate::handles::{PoolHandle, StoreHandle};
use crate::health::{
    Health, LEASE_FRESH, LeaseClock, LeaseTiming, Mode, NETWORK_DELAY, PEER_TTL, PING_EVERY,
    Standing, owner,
};
use crate::job::{JobId, JobSpec};
use crate::ledger::{ClaimEpoch, DeliveryLedger};
use crate::record::{ExecutionRecord, RunId, SkipReason, SkippedTicks, Trigger};
use crate::redis_backend::{BackendError, RedisStore};
use crate::telemetry;
use crate::timetable::{Action, Timetable, claimed_stretches, skipped_ticks};
use crate::won_claims::WonClaims;
use crate::worker_pool::RunRequest;

/// The timer never sleeps longer than this, so a jump of the wall clock
/// (NTP, suspend) is noticed within a minute. One wake a minute is not a
/// polling loop: idle cost is nil.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Retry interval for runs the pool could not take (it was restarting).
const RESUBMIT_AFTER: Duration = Duration::from_millis(200);
/// After Redis returns, wait this long before re-reading job state, so the
/// other daemons have flushed what they did while offline (last ticks,
/// claims of the ticks they ran) and their ticks are not run again here.
const RESYNC_SETTLE: Duration = Duration::from_secs(1);
/// How often ticks held for peers are looked at (see `track_held`).
const CHECK_HELD_EVERY: Duration = Duration::from_secs(1);
/// How often a tick held by queue_one checks whether its job is idle.
const QUEUED_RECHECK: Duration = Duration::from_secs(1);
/// Pause before sending again an enqueue whose outcome was lost.
const REENQUEUE_AFTER: Duration = Duration::from_millis(500);
/// Ticks of one skipped-tick entry claimed one by one at most (a day of
/// a per-second job); the rest of a longer entry is recorded unclaimed.
const MAX_GUARDED_SKIP: usize = 86_400;
/// At most this many ticks left to one silent peer are remembered (and
/// recorded skipped, one entry each, so the peer can withdraw the ones it
/// ran, if its lease runs out).
const MAX_HELD: usize = 100_000;
/// Enqueues awaiting confirmation kept at most; past it the oldest is
/// given up (logged). Bounds memory through a long Redis outage.
const MAX_UNCONFIRMED: usize = 100_000;

pub enum SchedulerMsg {
    /// The timer fired.
    Wake,
    Upsert(Box<JobSpec>, RpcReplyPort<Option<DateTime<Utc>>>),
    Remove(String, RpcReplyPort<bool>),
    SetEnabled(String, bool, RpcReplyPort<Option<Option<DateTime<Utc>>>>),
    RunNow(String, RpcReplyPort<Option<RunId>>),
    /// Runs ended: one job id per run.
    RunSettled {
        job_ids: Vec<String>,
    },
    Resubmit,
    /// Send again the enqueues whose outcome was lost.
    Reenqueue,
    /// Redis lost its data: write back what this daemon knows, then wait
    /// for the live peers to have done so too.
    Restore,
    Jobs(RpcReplyPort<Vec<JobView>>),
    StopFiring(RpcReplyPort<()>),
    /// Redis reachability or the set of live daemons changed.
    Health(Health),
    /// Ticks are held for peers: forget those the peers have accounted
    /// for, take over those of peers whose lease is over.
    CheckHeld,
    /// Re-read jobs from Redis: after an outage every job resumes from
    /// its last tick in Redis (ticks nobody handled meet the misfire
    /// policy); otherwise (a job was written, maybe through another daemon)
    /// only changed jobs are re-armed, from now, as an edit here would be.
    Resync {
        after_outage: bool,
    },
}

/// A job as the scheduler sees it now.
#[derive(Debug, Clone)]
pub struct JobView {
    pub spec: Arc<JobSpec>,
    pub next_fire: Option<DateTime<Utc>>,
    pub in_flight: u32,
}

/// What a scheduler sharing Redis with other daemons needs.
#[derive(Clone)]
pub struct Cluster {
    pub redis: RedisStore,
    pub daemon_id: String,
    pub health: watch::Receiver<Health>,
    /// This daemon's lease: offline, it fires shared jobs only while it
    /// holds one.
    pub lease: Arc<LeaseClock>,
    /// The tick claims this daemon won (and the ticks it ran), written
    /// back if Redis loses them.
    pub won: WonClaims,
    /// The message parts this daemon knows were sent, written back too:
    /// without them a run a peer took over and sent would be sent again
    /// by a daemon that held it through the loss.
    pub ledger: DeliveryLedger,
}

#[derive(Clone)]
pub struct SchedulerArgs {
    pub misfire_grace: Duration,
    pub store: StoreHandle,
    pub pool: PoolHandle,
    /// None: a single daemon without Redis; every tick is its own.
    pub cluster: Option<Cluster>,
}

pub struct Scheduler;

pub struct SchedulerState {
    args: SchedulerArgs,
    timetable: Timetable,
    timer: Option<(DateTime<Utc>, AbortOnDrop)>,
    /// Runs recorded but not yet accepted by the pool.
    unsubmitted: Vec<RunRequest>,
    resubmit_timer: Option<AbortOnDrop>,
    /// Runs whose enqueue got no answer: they may or may not be on the
    /// queue. Enqueuing is idempotent, so they are sent again until Redis
    /// confirms; never run here, which could run them twice.
    unconfirmed: Vec<ExecutionRecord>,
    reenqueue_timer: Option<AbortOnDrop>,
    resync_timer: Option<AbortOnDrop>,
    held_timer: Option<AbortOnDrop>,
    health: Option<Health>,
    stopped: bool,
    /// Skips being executed come from the resync after an outage
    /// (counted with reason `offline`).
    skips_after_outage: bool,
    /// Back from an outage, until the resync after it.
    returning: Option<Returning>,
    /// Skips decided offline while a peer may have claimed the ticks (see
    /// [`Standing::Uncertain`]): recorded, claim-guarded, once Redis is back.
    uncertain_skips: Vec<SkippedTicks>,
    /// Per job, the entry of `uncertain_skips` its ticks unfired for a
    /// lease that ran out are added to (one entry per stretch).
    lease_over_skip: HashMap<String, usize>,
    /// Per peer whose lease is not being renewed, the ticks of its jobs
    /// this daemon left to it (job id, tick): recorded skipped if its
    /// lease runs out, forgotten if it renews it.
    held: HashMap<String, HeldFor>,
    /// The Redis epoch last seen (see [`Health::epoch`]).
    epoch: Option<String>,
    /// Redis lost its data and not every live daemon has written back
    /// what it knew yet: no tick is claimed late meanwhile.
    restoring: Option<Restoring>,
}

/// After Redis lost its data. Every daemon writes back the claims it won
/// and its jobs' last ticks. Until every live peer has (or its lease is
/// over), this daemon claims no tick late (unconfirmed enqueues, skips
/// decided while its lease was uncertain, a dead peer's ticks, the resync
/// after an outage): the claim it would find free may be one a peer won
/// before the loss, and the tick would run twice.
struct Restoring {
    epoch: String,
    /// This daemon's own write-back is done.
    restored: bool,
    /// Peers whose lease ended meanwhile: taken over once restored.
    taken_over: Vec<(String, Vec<HeldTick>)>,
    timer: Option<AbortOnDrop>,
}

/// Back from an outage. Peers see Redis again later (a ping later, or
/// much later if only their link failed) and, until they do, still run
/// their own ticks offline; so until the resync this daemon fires only
/// the jobs it owned through the outage (claiming them in Redis as usual)
/// and leaves the rest to their owners.
struct Returning {
    /// The daemons seen alive before the outage: who owned which job.
    peers: BTreeSet<String>,
    /// When Redis came back (last, if it went again meanwhile).
    since: tokio::time::Instant,
    /// The heartbeats (each by its daemon's own clock) first read after
    /// that: a peer is back once its heartbeat changed since, which needs
    /// no agreement between clocks.
    first_beats: Option<HashMap<String, i64>>,
    /// Peers neither back nor heard from for [`PEER_TTL`] since the
    /// return: presumed dead, their jobs are this daemon's to look after.
    presumed_dead: BTreeSet<String>,
    /// Jobs added, or enabled from disabled, here meanwhile: their owner,
    /// still offline, does not know they run, so they fire here.
    local: HashSet<String>,
    /// Of `local`, those added while Redis was away again and not written
    /// since: only these fire here offline. One written (Redis seen since)
    /// may be known to its owner, which fires it offline itself; firing it
    /// here too would run its ticks twice.
    unwritten: HashSet<String>,
}

impl Returning {
    /// Does this job fire here whoever owns it (see `local`)?
    fn fires_here(&self, job_id: &str, mode: Mode) -> bool {
        self.local.contains(job_id) && (mode == Mode::Online || self.unwritten.contains(job_id))
    }
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
                args.store.set_last_tick(job.id.clone(), now);
            }
            timetable.upsert(job.clone(), last, now);
            publish_job(job, snapshot.jobs.len(), now);
            timetable.set_in_flight(&job.id, in_flight.get(&*job.id).copied().unwrap_or(0));
        }
        timetable.shrink_to_fit();
        tracing::info!(jobs = timetable.len(), "scheduler started");
        let health = args.cluster.as_ref().map(|c| c.health.borrow().clone());
        let epoch = health.as_ref().and_then(|h| h.epoch.clone());
        let mut state = SchedulerState {
            args,
            timetable,
            timer: None,
            unsubmitted: Vec::new(),
            resubmit_timer: None,
            unconfirmed: Vec::new(),
            reenqueue_timer: None,
            resync_timer: None,
            held_timer: None,
            health,
            stopped: false,
            skips_after_outage: false,
            returning: None,
            uncertain_skips: Vec::new(),
            lease_over_skip: HashMap::new(),
            held: HashMap::new(),
            epoch,
            restoring: None,
        };
        publish_claim_epoch(&state);
        // Ticks missed while down are due now.
        fire_due(&myself, &mut state).await;
        rearm(&myself, &mut state);
        Ok(state)
    }

    /// Settled runs (a message every few runs) are handled here; every
    /// other message goes through one box. ractor (0.16) moves a
    /// message's handler future a few times before polling it, so its
    /// size is copied per message, and a Redis call's future is ~7 KB:
    /// unboxed, each settled message copied ~15 KB for a few hundred
    /// bytes of work.
    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::RunSettled { job_ids } => {
                let mut actions = Vec::new();
                for job_id in &job_ids {
                    actions.extend(state.timetable.run_settled(job_id));
                }
                if !state.stopped && !actions.is_empty() {
                    Box::pin(execute(&myself, state, actions)).await;
                }
                rearm(&myself, state);
                Ok(())
            }
            msg => Box::pin(handle_other(myself, msg, state)).await,
        }
    }
}

/// Every message but [`SchedulerMsg::RunSettled`] (see `handle`).
async fn handle_other(
    myself: ActorRef<SchedulerMsg>,
    msg: SchedulerMsg,
    state: &mut SchedulerState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        SchedulerMsg::Wake => {
            state.timer = None;
            fire_due(&myself, state).await;
        }
        SchedulerMsg::Upsert(spec, reply) => {
            let spec = Arc::new(*spec);
            state.args.store.put_job(spec.clone());
            let id = spec.id.clone();
            if spec.enabled && !state.timetable.job(&id).is_some_and(|j| j.enabled) {
                fire_here_until_resync(state, &id);
            }
            publish_job(&spec, state.timetable.len() + 1, Utc::now());
            let actions = state.timetable.upsert(spec, None, Utc::now());
            execute(&myself, state, actions).await;
            let _ = reply.send(state.timetable.next_fire(&id));
        }
        SchedulerMsg::Remove(id, reply) => {
            let existed = state.timetable.remove(&id);
            if existed {
                telemetry::job_gone(&id);
                state.args.store.remove_job(id);
            }
            let _ = reply.send(existed);
        }
        SchedulerMsg::SetEnabled(id, enabled, reply) => {
            if enabled && state.timetable.job(&id).is_some_and(|j| !j.enabled) {
                fire_here_until_resync(state, &id);
            }
            let actions = state.timetable.set_enabled(&id, enabled, Utc::now());
            let jobs = state.timetable.len();
            let answer = state.timetable.job(&id).cloned().map(|spec| {
                publish_job(&spec, jobs, Utc::now());
                state.args.store.put_job(spec);
                state.timetable.next_fire(&id)
            });
            execute(&myself, state, actions).await;
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
        // Handled in `handle`, unboxed.
        SchedulerMsg::RunSettled { .. } => {}
        SchedulerMsg::Resubmit => {
            state.resubmit_timer = None;
            for run in std::mem::take(&mut state.unsubmitted) {
                submit(&myself, state, run);
            }
        }
        SchedulerMsg::Reenqueue => {
            state.reenqueue_timer = None;
            // Back from an outage, the resync after it sends them (see
            // there): a peer may have run one of these ticks offline.
            if state.returning.is_none() && state.restoring.is_none() {
                let records = std::mem::take(&mut state.unconfirmed);
                enqueue(&myself, state, records, true).await;
                record_uncertain_skips(state).await;
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
            execute(&myself, state, actions).await;
            let _ = reply.send(());
        }
        SchedulerMsg::Health(health) => {
            let was_offline = state
                .health
                .as_ref()
                .is_some_and(|h| h.mode == Mode::Offline);
            let edited_elsewhere = state.health.as_ref().is_some_and(|h| {
                h.mode == Mode::Online
                    && health.mode == Mode::Online
                    && h.jobs_version != health.jobs_version
            });
            let going_offline = state
                .health
                .as_ref()
                .is_some_and(|h| h.mode == Mode::Online)
                && health.mode == Mode::Offline;
            if going_offline {
                count_local_runs(state).await;
            }
            if was_offline && health.mode == Mode::Online {
                let since = tokio::time::Instant::now();
                match &mut state.returning {
                    // Redis went and came back within the grace: ownership
                    // stays that of the first outage (the peers seen since
                    // may leave out those still away).
                    Some(returning) => {
                        returning.since = since;
                        returning.first_beats = None;
                        // Written now (the store flushes on return).
                        returning.unwritten.clear();
                    }
                    None => {
                        state.returning = state.health.as_ref().map(|h| Returning {
                            peers: h.peers.clone(),
                            since,
                            first_beats: None,
                            presumed_dead: BTreeSet::new(),
                            local: HashSet::new(),
                            unwritten: HashSet::new(),
                        });
                    }
                }
                let timer = myself.send_after(RESYNC_SETTLE, || SchedulerMsg::Resync {
                    after_outage: true,
                });
                state.resync_timer = Some(AbortOnDrop::from(timer));
            } else if edited_elsewhere && state.resync_timer.is_none() {
                // A job was written (maybe through another daemon):
                // take the jobs from Redis now.
                let _ = myself.cast(SchedulerMsg::Resync {
                    after_outage: false,
                });
            }
            let taken_over = track_held(state, &health);
            let epoch = health.epoch.clone().filter(|_| health.mode == Mode::Online);
            state.health = Some(health);
            if let Some(epoch) = epoch
                && state.epoch.as_ref() != Some(&epoch)
            {
                let lost = state.epoch.is_some();
                state.epoch = Some(epoch.clone());
                if lost {
                    state.restoring = Some(Restoring {
                        epoch,
                        restored: false,
                        taken_over: Vec::new(),
                        timer: None,
                    });
                }
                publish_claim_epoch(state);
                if lost {
                    restore(&myself, state).await;
                }
            }
            hand_over(state, taken_over).await;
        }
        SchedulerMsg::CheckHeld => {
            state.held_timer = None;
            if let Some(health) = state.health.clone() {
                let taken_over = track_held(state, &health);
                hand_over(state, taken_over).await;
            }
        }
        SchedulerMsg::Restore => restore(&myself, state).await,
        SchedulerMsg::Resync { after_outage } => {
            state.resync_timer = None;
            // A resync asked for before the outage and handled after the
            // return replaces the one after it (whose timer was just
            // dropped): it must do that one's work.
            let after_outage = after_outage || state.returning.is_some();
            if after_outage && (state.restoring.is_some() || !peers_settled(state).await) {
                // A peer not back may still be running its ticks offline,
                // and records them only once it is back.
                let timer =
                    myself.send_after(PING_EVERY, || SchedulerMsg::Resync { after_outage: true });
                state.resync_timer = Some(AbortOnDrop::from(timer));
            } else {
                resync_now(&myself, state, after_outage).await;
            }
        }
    }
    rearm(&myself, state);
    Ok(())
}

/// Takes jobs (and, after an outage, last ticks) from Redis once this
/// daemon's own writes are there; tries again later if they are not.
async fn resync_now(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    after_outage: bool,
) {
    // This daemon's own offline writes (last ticks, claims of
    // ticks it ran) must be in Redis first, or its ticks would
    // look missed; its own edits too, or they would look
    // deleted.
    match state.args.store.flush().await {
        Ok(0) => match resync(state, after_outage).await {
            Ok(actions) => {
                let resend = if after_outage {
                    let resend = resend_after_outage(state);
                    state.returning = None;
                    resend
                } else {
                    Vec::new()
                };
                // Ticks found unhandled after an outage were
                // lost with their offline owner.
                state.skips_after_outage = after_outage;
                execute(myself, state, actions).await;
                state.skips_after_outage = false;
                enqueue(myself, state, resend, true).await;
                if after_outage {
                    record_uncertain_skips(state).await;
                }
                fire_due(myself, state).await;
            }
            Err(e) => {
                // The version seen is already stored: without a
                // retry this edit would be missed until the next.
                tracing::warn!(error = %e, "resync: cannot read jobs from redis; trying again");
                resync_later(myself, state, after_outage);
            }
        },
        _ => resync_later(myself, state, after_outage),
    }
}

fn resync_later(myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState, after_outage: bool) {
    let timer = myself.send_after(RESYNC_SETTLE, move || SchedulerMsg::Resync { after_outage });
    state.resync_timer = Some(AbortOnDrop::from(timer));
}

async fn fire_due(myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState) {
    if state.stopped {
        return;
    }
    let now = Utc::now();
    let released = sync_in_flight(state, now).await;
    execute(myself, state, released).await;
    let actions = state.timetable.due(now);
    execute(myself, state, actions).await;
}

/// Online with Redis, runs of a job may be going on any daemon: take the
/// in-flight counts of the jobs whose overlap policy is about to be
/// applied from Redis, and start queued ticks whose job is now idle.
async fn sync_in_flight(state: &mut SchedulerState, now: DateTime<Utc>) -> Vec<Action> {
    let (Some(cluster), Some(health)) = (&state.args.cluster, &state.health) else {
        return Vec::new();
    };
    if health.mode != Mode::Online {
        return Vec::new();
    }
    let ids = state.timetable.overlap_candidates(now);
    if ids.is_empty() {
        return Vec::new();
    }
    match cluster.redis.inflight_counts(&ids).await {
        Ok(counts) => {
            for (id, n) in ids.iter().zip(counts) {
                state
                    .timetable
                    .set_in_flight(id, u32::try_from(n).unwrap_or(u32::MAX));
            }
            state.timetable.release_queued()
        }
        Err(e) => {
            // Most often Redis is going away. The count last read from it
            // holds runs of this daemon's enqueues that a peer took, whose
            // end nothing here hears of: kept, it would skip (overlap) a
            // tick whose job is idle. This daemon's own runs it can see.
            tracing::debug!(error = %e, "cannot read in-flight runs; counting this daemon's own");
            count_local_runs(state).await;
            state.timetable.release_queued()
        }
    }
}

/// Going offline: from now on only this daemon's runs can be seen ending,
/// so the overlap policy counts those alone. Online the count came from
/// Redis and held the peers' runs too (and this daemon's queued runs that
/// a peer took): kept, a run counted just before the outage would hold
/// back (overlap `skip`) every tick of it, since nothing here hears of its
/// end.
async fn count_local_runs(state: &mut SchedulerState) {
    let counts = match state.args.pool.runs_by_job().await {
        Ok(counts) => counts,
        Err(e) => {
            // A restarting pool re-queues what it held: it is counted as
            // the runs are fired again, not here.
            tracing::warn!(error = %e, "cannot count this daemon's runs going offline; counting none");
            HashMap::new()
        }
    };
    state.timetable.reset_in_flight(&counts);
}

/// Back from an outage, a job added, or enabled from disabled, here fires
/// here until the resync: its owner, offline, does not know it runs.
/// (An edit of a job that runs stays with its owner.)
fn fire_here_until_resync(state: &mut SchedulerState, job_id: &str) {
    let offline = state
        .health
        .as_ref()
        .is_some_and(|h| h.mode == Mode::Offline);
    if let Some(returning) = &mut state.returning {
        returning.local.insert(job_id.to_string());
        if offline {
            returning.unwritten.insert(job_id.to_string());
        }
    }
}

/// Back from an outage: is every daemon seen before it back (its
/// heartbeat changed since the first read after this daemon's return), or
/// gone for [`PEER_TTL`] since that return and so presumed dead (noted in
/// `presumed_dead`)? Not while Redis cannot say.
async fn peers_settled(state: &mut SchedulerState) -> bool {
    let (Some(cluster), Some(health), Some(returning)) =
        (&state.args.cluster, &state.health, &mut state.returning)
    else {
        return true;
    };
    // Offline again: no Redis calls (they could block the timer's fires).
    if health.mode != Mode::Online {
        return false;
    }
    let Ok(beats) = cluster.redis.heartbeats().await else {
        return false;
    };
    let others = returning.peers.iter().filter(|p| **p != cluster.daemon_id);
    let Some(first) = &returning.first_beats else {
        let alone = others.count() == 0;
        returning.first_beats = Some(beats);
        return alone;
    };
    let away: BTreeSet<String> = others
        .filter(|p| beats.get(*p).is_none_or(|ms| first.get(*p) == Some(ms)))
        .cloned()
        .collect();
    // A peer whose lease may still be alive may still be firing its jobs
    // offline: it is not presumed dead before its lease is over.
    let lease_over = away.iter().all(|p| !health.peers.contains(p));
    if away.is_empty() || (returning.since.elapsed() >= PEER_TTL && lease_over) {
        if !away.is_empty() {
            tracing::warn!(daemons = ?away, "daemons not back since the outage: presumed dead, their jobs taken over");
        }
        returning.presumed_dead = away;
        return true;
    }
    false
}

/// Back from an outage, is this job's tick another daemon's to run and
/// record? Yes if a peer owned it through the outage and is back: it ran
/// the job's ticks offline (or holds its own unconfirmed enqueue of them)
/// and records them itself, maybe after this daemon's resync.
fn left_to_live_owner(state: &SchedulerState, job_id: &str) -> bool {
    let (Some(cluster), Some(returning)) = (&state.args.cluster, &state.returning) else {
        return false;
    };
    !returning.local.contains(job_id)
        && owner(job_id, &returning.peers)
            .is_some_and(|o| o != cluster.daemon_id && !returning.presumed_dead.contains(o))
}

/// The unconfirmed enqueues to send again after an outage: those of the
/// jobs a live peer owned through it are its to run, not this daemon's
/// (its claim of a tick it ran offline may reach Redis after this).
fn resend_after_outage(state: &mut SchedulerState) -> Vec<ExecutionRecord> {
    let mut records = std::mem::take(&mut state.unconfirmed);
    let before = records.len();
    records.retain(|r| !left_to_live_owner(state, &r.job_id));
    if records.len() < before {
        tracing::info!(
            runs = before - records.len(),
            "unconfirmed runs left to the daemons that owned their jobs through the outage"
        );
    }
    records
}

/// After an outage: take the jobs (other daemons' edits) and last ticks
/// from Redis. Ticks of jobs whose offline owner died were never handled,
/// so they are due now and meet the misfire policy.
/// Returns what the timetable asks for (skips of queued ticks of jobs
/// disabled meanwhile).
async fn resync(
    state: &mut SchedulerState,
    after_outage: bool,
) -> Result<Vec<Action>, BackendError> {
    let Some(cluster) = state.args.cluster.clone() else {
        return Ok(Vec::new());
    };
    let stored = cluster.redis.jobs().await?;
    let removed = cluster.redis.removed_jobs().await?;
    // Only a resync after an outage resumes jobs from their last ticks,
    // and only the jobs no live peer owned through it.
    let last_ticks = if after_outage {
        let ids: Vec<JobId> = stored
            .iter()
            .map(|j| JobId::from(j.definition.id.as_str()))
            .filter(|id| !left_to_live_owner(state, id))
            .collect();
        cluster.redis.last_ticks(&ids).await.unwrap_or_default()
    } else {
        HashMap::new()
    };
    let now = Utc::now();
    let current: HashMap<JobId, Arc<JobSpec>> = state
        .timetable
        .jobs()
        .into_iter()
        .map(|(spec, _)| (spec.id.clone(), spec))
        .collect();
    let mut in_redis = std::collections::HashSet::new();
    let mut changed = 0;
    let mut actions = Vec::new();
    for job in stored {
        let id = job.definition.id.clone();
        in_redis.insert(id.clone());
        if job.orphaned {
            if state.timetable.remove(&id) {
                telemetry::job_gone(&id);
                state.args.store.forget_job(id);
                changed += 1;
            }
            continue;
        }
        match job.effective() {
            Ok(spec) => {
                let resume_after = if after_outage {
                    last_ticks.get(id.as_str()).copied()
                } else if current.get(id.as_str()).is_some_and(|c| **c == spec) {
                    // Unchanged: its timer stands.
                    continue;
                } else {
                    None
                };
                let spec = Arc::new(spec);
                publish_job(&spec, current.len(), now);
                state.args.store.cache_job(spec.clone());
                actions.extend(state.timetable.upsert(spec, resume_after, now));
                changed += 1;
            }
            // Kept as it runs here (a newer daemon may have written what
            // this one cannot read).
            Err(e) => {
                tracing::warn!(error = %e, "resync: keeping this daemon's copy of a job redis holds in a form it cannot read")
            }
        }
    }
    for (id, spec) in &current {
        if in_redis.contains(&**id) {
            continue;
        }
        if removed.contains(&**id) {
            // Deleted through another daemon.
            state.timetable.remove(id);
            telemetry::job_gone(id);
            state.args.store.forget_job(id.to_string());
            changed += 1;
        } else {
            // Redis lost it (restarted empty, flushed) or never had it
            // (added to the config while Redis was down): write it back.
            state.args.store.put_job(spec.clone());
        }
    }
    if changed > 0 {
        tracing::info!(jobs = changed, "took job changes from redis");
    }
    Ok(actions)
}

/// The job's per-job metric series, at zero, and when its next success is
/// due (its next fire; none when disabled). Not for more than
/// [`telemetry::JOB_SERIES_UP_TO`] jobs: past that the series appear with
/// their first event.
fn publish_job(spec: &JobSpec, jobs: usize, now: DateTime<Utc>) {
    if jobs > telemetry::JOB_SERIES_UP_TO {
        return;
    }
    let next = spec
        .enabled
        .then(|| spec.schedule.next_after(now))
        .flatten();
    telemetry::job_known(&spec.id, next);
}

/// Does this daemon fire and record this job's ticks? Online every
/// daemon does (claims decide), except for the jobs of a peer whose lease
/// is not being renewed: it may be running them offline, until its lease
/// is over. Offline, and back from an outage until the resync, only the
/// job's rendezvous owner (over the peers whose lease is alive, while
/// back from one: `still_leased`), and offline only while its lease
/// lasts, unless it is alone.
fn owns(state: &SchedulerState, job_id: &str) -> bool {
    let (Some(cluster), Some(health)) = (&state.args.cluster, &state.health) else {
        return true;
    };
    let me = cluster.daemon_id.as_str();
    let leased = |peers: &BTreeSet<String>| {
        health.mode == Mode::Online
            || peers.iter().all(|p| p == me)
            || cluster.lease.standing() != Standing::Expired
    };
    match (&state.returning, health.mode) {
        (Some(returning), mode) if returning.fires_here(job_id, mode) => leased(&returning.peers),
        (Some(_), _) => {
            let peers = still_leased(health, me);
            owner(job_id, &peers).is_none_or(|o| o == me) && leased(&peers)
        }
        (None, Mode::Offline) => {
            owner(job_id, &health.peers).is_none_or(|o| o == me) && leased(&health.peers)
        }
        (None, Mode::Online) => {
            owner(job_id, &health.peers).is_none_or(|o| o == me || !health.stale.contains(o))
        }
    }
}

/// The peers a daemon back from an outage judges ownership over: those
/// whose lease is not over (by the last heartbeat), and this daemon. A
/// peer seen before the outage and still away keeps its jobs while its
/// lease lasts (it may be firing them offline); one whose lease is over
/// fires nothing, and its peers, online all along, have already handed
/// its jobs on: counting it would leave them to no one. A peer that
/// joined since counts too: it judges by a set holding this daemon, and
/// owns some of this daemon's jobs of before; left out, this daemon cut
/// off again before its resync fired them as well (the Jepsen run sent
/// two jobs' ticks twice, a daemon started between two outages).
fn still_leased(health: &Health, me: &str) -> BTreeSet<String> {
    let mut peers = health.peers.clone();
    peers.insert(me.to_string());
    peers
}

/// Offline with peers: ticks before this instant may have been claimed
/// (and run) by a peer that still saw this daemon's lease fresh; None
/// when none can be (online, or alone).
fn uncertain_before(state: &SchedulerState) -> Option<DateTime<Utc>> {
    let (Some(cluster), Some(health)) = (&state.args.cluster, &state.health) else {
        return None;
    };
    let peers = state.returning.as_ref().map_or(&health.peers, |r| &r.peers);
    if health.mode != Mode::Offline || peers.iter().all(|p| *p == cluster.daemon_id) {
        return None;
    }
    Some(cluster.lease.uncertain_until())
}

/// A tick left to a silent peer: job id, tick.
type HeldTick = (String, DateTime<Utc>);

/// The ticks left to one peer.
#[derive(Default)]
struct HeldFor {
    ticks: Vec<HeldTick>,
    /// Since when every heartbeat read has seen the peer renewing its
    /// lease (None while it is stale; see `track_held`).
    fresh_since: Option<DateTime<Utc>>,
}

/// The peer a job's tick is left to, if any. Online (not back from an
/// outage): a job whose owner's lease is not being renewed. Offline, or
/// back from an outage: a job owned by a peer, over the peers this daemon
/// saw last (before the outage, while back from one). Peers seen later
/// may have left that tick to this daemon (the owner it deferred to died
/// meanwhile, and this daemon is the owner by their count, silent to
/// them): back online, this daemon records it if the owner's lease is over.
/// Back from an outage, the owner may have stopped just then (paused or
/// killed, its lease still alive): its peers, online all along, still
/// saw it renew and fire the job themselves; this daemon alone left the
/// tick to it, and records it once its lease is over.
fn left_to(state: &SchedulerState, job_id: &str) -> Option<String> {
    let (Some(cluster), Some(health)) = (&state.args.cluster, &state.health) else {
        return None;
    };
    let me = cluster.daemon_id.as_str();
    if let Some(returning) = &state.returning {
        if returning.fires_here(job_id, health.mode) {
            return None;
        }
        return owner(job_id, &still_leased(health, me))
            .filter(|o| *o != me)
            .map(str::to_string);
    }
    if health.mode == Mode::Offline {
        return owner(job_id, &health.peers)
            .filter(|o| *o != me)
            .map(str::to_string);
    }
    if health.stale.is_empty() {
        return None;
    }
    owner(job_id, &health.peers)
        .filter(|o| *o != me && health.stale.contains(*o))
        .map(str::to_string)
}

/// For a tick this daemon does not own and leaves to no peer: is it
/// unfired only because this daemon's lease ran out? Offline, that is the
/// one reason left (`owns`: the job is its own, by the peers it judges
/// ownership over, but it has peers and its lease is over). Peers take
/// the job over after the lease if they are online; if they are not
/// either, nobody runs the tick, and it must still be recorded.
fn lease_ran_out(state: &SchedulerState) -> bool {
    state
        .health
        .as_ref()
        .is_some_and(|h| h.mode == Mode::Offline)
}

/// A tick unfired for a lease that ran out: recorded skipped (`offline`)
/// once Redis is back, claim-guarded (a peer may have taken the job over
/// and run it). Consecutive ticks of a job share one entry.
fn note_lease_over(state: &mut SchedulerState, job_id: &str, tick: DateTime<Utc>) {
    if let Some(skip) = state
        .lease_over_skip
        .get(job_id)
        .and_then(|i| state.uncertain_skips.get_mut(*i))
        && skip.job_id == job_id
        && skip.reason == SkipReason::Offline
        && skip.last < tick
    {
        skip.last = tick;
        skip.count += 1;
        return;
    }
    state
        .lease_over_skip
        .insert(job_id.to_string(), state.uncertain_skips.len());
    state.uncertain_skips.push(SkippedTicks {
        job_id: job_id.to_string(),
        reason: SkipReason::Offline,
        first: tick,
        last: tick,
        count: 1,
        recorded_at: Utc::now(),
    });
}

/// Notes ticks left to a peer (see `held`), at most [`MAX_HELD`] per peer.
fn note_held(state: &mut SchedulerState, peer: String, job_id: &str, ticks: &[DateTime<Utc>]) {
    let held = &mut state.held.entry(peer).or_default().ticks;
    for tick in ticks {
        if held.len() >= MAX_HELD {
            return;
        }
        held.push((job_id.to_string(), *tick));
    }
}

/// Forgets the ticks left to peers that renew their lease again (they were
/// online all along, or are back, and run or record them themselves);
/// returns those left to peers whose lease is now over.
fn track_held(state: &mut SchedulerState, health: &Health) -> Vec<(String, Vec<HeldTick>)> {
    if health.mode != Mode::Online {
        return Vec::new();
    }
    let Some(cluster) = &state.args.cluster else {
        return Vec::new();
    };
    let now = Utc::now();
    let handled_before = handled_before(now, cluster.lease.timing());
    let mut over = Vec::new();
    state.held.retain(|peer, held| {
        if !health.peers.contains(peer) {
            over.push((peer.clone(), std::mem::take(&mut held.ticks)));
            return false;
        }
        if health.stale.contains(peer) {
            held.fresh_since = None;
        } else if *held.fresh_since.get_or_insert(now) <= handled_before {
            held.ticks.retain(|(_, tick)| *tick >= handled_before);
        }
        !held.ticks.is_empty()
    });
    over
}

/// How long a peer back from an outage may take to account for the ticks
/// it kept: its resync (at most [`PEER_TTL`] after its return, then
/// [`RESYNC_SETTLE`]) claims them, with a little time for the claims to
/// land.
const RESYNC_WITHIN: Duration =
    Duration::from_secs(PEER_TTL.as_secs() + RESYNC_SETTLE.as_secs() + 2);

/// Held ticks before this instant are the peer's own again, if it has
/// been seen renewing its lease since then without a break: it renewed
/// after them (fresh means renewed within [`LEASE_FRESH`] of the read;
/// the renewal may have been sent [`NETWORK_DELAY`] before it landed;
/// the clocks differ by the skew, twice for the read's own lag), and it
/// had the time to resync since, which claims the ticks it kept back and
/// records those it skipped. A peer killed, or stopped, before that
/// leaves them unaccounted for: they stay held, and are taken over once
/// its lease is over (claim-guarded: those it did claim stay its own).
fn handled_before(now: DateTime<Utc>, timing: LeaseTiming) -> DateTime<Utc> {
    let since = LEASE_FRESH + NETWORK_DELAY + 2 * timing.clock_skew + RESYNC_WITHIN;
    now - TimeDelta::from_std(since).unwrap_or(TimeDelta::MAX)
}

/// Tells the delivery ledger the epoch its claims are fenced by: none
/// while restoring after a data loss (every part is held), else the one
/// this daemon last saw.
fn publish_claim_epoch(state: &SchedulerState) {
    let Some(cluster) = &state.args.cluster else {
        return;
    };
    cluster
        .ledger
        .set_epoch(match (&state.restoring, &state.epoch) {
            (Some(_), _) => ClaimEpoch::Restoring,
            (None, Some(epoch)) => ClaimEpoch::Settled(epoch.clone()),
            (None, None) => ClaimEpoch::Unknown,
        });
}

/// The ticks held for peers whose lease is now over are taken over
/// (after the write-back, while Redis is being restored).
async fn hand_over(state: &mut SchedulerState, taken_over: Vec<(String, Vec<HeldTick>)>) {
    if taken_over.is_empty() {
        return;
    }
    match &mut state.restoring {
        Some(restoring) => restoring.taken_over.extend(taken_over),
        None => take_over(state, taken_over).await,
    }
}

/// A peer's lease is over: its jobs are the others' again. The ticks this
/// daemon left to it it did not run after its lease; any it ran before,
/// it claims when it is back (and withdraws these skips). Each is recorded
/// skipped (`offline`), tick by tick, claim-guarded, so every daemon that
/// left it ticks can try and one records each.
async fn take_over(state: &mut SchedulerState, over: Vec<(String, Vec<HeldTick>)>) {
    if state.stopped {
        return;
    }
    let now = Utc::now();
    let mut skips = Vec::new();
    for (peer, ticks) in over {
        tracing::warn!(daemon = %peer, ticks = ticks.len(), "a peer's lease is over: taking its jobs over");
        for (job_id, tick) in ticks {
            skips.push(SkippedTicks {
                job_id,
                reason: SkipReason::Offline,
                first: tick,
                last: tick,
                count: 1,
                recorded_at: now,
            });
        }
    }
    for skip in claim_skips(state, skips).await {
        record_skip(state, skip);
    }
}

/// Redis lost its data: writes back the claims this daemon won and its
/// jobs' last ticks (once), then waits until every live peer has written
/// back too (or its lease is over), looking again every [`PING_EVERY`];
/// then does what it held back.
async fn restore(myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState) {
    let (Some(cluster), Some(health), Some(restoring)) =
        (&state.args.cluster, &state.health, &state.restoring)
    else {
        return;
    };
    let again = |state: &mut SchedulerState| {
        let timer = myself.send_after(PING_EVERY, || SchedulerMsg::Restore);
        if let Some(r) = &mut state.restoring {
            r.timer = Some(AbortOnDrop::from(timer));
        }
    };
    if health.mode != Mode::Online {
        again(state);
        return;
    }
    let epoch = restoring.epoch.clone();
    if !restoring.restored {
        let last_ticks: Vec<(JobId, DateTime<Utc>)> = match state.args.store.snapshot().await {
            Ok(snapshot) => snapshot.last_ticks.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this daemon's last ticks to write back; trying again");
                again(state);
                return;
            }
        };
        let claims = cluster.won.all();
        let sent = cluster.ledger.sent_keys();
        match cluster
            .redis
            .restore(&claims, &last_ticks, &sent, &cluster.daemon_id, &epoch)
            .await
        {
            Ok(()) => {
                tracing::info!(
                    claims = claims.len(),
                    jobs = last_ticks.len(),
                    sent = sent.len(),
                    "wrote back this daemon's tick claims and last ticks"
                );
                if let Some(r) = &mut state.restoring {
                    r.restored = true;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write back this daemon's claims; trying again");
                again(state);
                return;
            }
        }
    }
    let restored = match cluster.redis.restored(&epoch).await {
        Ok(restored) => restored,
        Err(_) => {
            again(state);
            return;
        }
    };
    let waiting: Vec<&String> = health
        .peers
        .iter()
        .filter(|p| **p != cluster.daemon_id && !restored.contains(*p))
        .collect();
    if !waiting.is_empty() {
        again(state);
        return;
    }
    tracing::info!("every live daemon wrote back what it knew: claiming late ticks again");
    let Some(restoring) = state.restoring.take() else {
        return;
    };
    publish_claim_epoch(state);
    if !restoring.taken_over.is_empty() {
        take_over(state, restoring.taken_over).await;
    }
    if state.returning.is_none() {
        let records = std::mem::take(&mut state.unconfirmed);
        enqueue(myself, state, records, true).await;
        record_uncertain_skips(state).await;
    }
}

/// The skips decided while uncertain of the lease, now claim-guarded.
async fn record_uncertain_skips(state: &mut SchedulerState) {
    let online = state
        .health
        .as_ref()
        .is_some_and(|h| h.mode == Mode::Online);
    if state.uncertain_skips.is_empty() || !online {
        return;
    }
    let skips = std::mem::take(&mut state.uncertain_skips);
    state.lease_over_skip.clear();
    for skip in claim_skips(state, skips).await {
        record_skip(state, skip);
    }
}

type Fire = (Arc<JobSpec>, DateTime<Utc>, Trigger);

/// Offline with Redis configured: keeps the fires of the jobs this daemon
/// owns, and queues a claim of each tick, written on return, so no other
/// daemon runs it again. (Online, the claim-guarded enqueue claims.)
fn claim_offline(state: &mut SchedulerState, fires: Vec<Fire>) -> Vec<Fire> {
    let (Some(cluster), Some(_)) = (&state.args.cluster, &state.health) else {
        return fires;
    };
    let daemon = cluster.daemon_id.clone();
    let won = cluster.won.clone();
    let kept = owned_fires(state, fires);
    for (job, at, _) in &kept {
        won.push(&job.id, *at, &daemon);
        state
            .args
            .store
            .put_claim(job.id.to_string(), *at, daemon.clone());
    }
    kept
}

/// The fires of the jobs this daemon owns; the others are left to their
/// owners.
fn owned_fires(state: &mut SchedulerState, fires: Vec<Fire>) -> Vec<Fire> {
    let mut kept = Vec::with_capacity(fires.len());
    for fire in fires {
        if owns(state, &fire.0.id) {
            kept.push(fire);
        } else {
            if let Some(peer) = left_to(state, &fire.0.id) {
                note_held(state, peer, &fire.0.id, &[fire.1]);
            } else if lease_ran_out(state) {
                note_lease_over(state, &fire.0.id, fire.1);
            }
            state.timetable.not_started(&fire.0.id);
        }
    }
    kept
}

/// Sets the one timer for the earliest due job, if it changed; and, online,
/// the one that claims skips whose claim got no answer again.
fn rearm(myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState) {
    let online = state
        .health
        .as_ref()
        .is_some_and(|h| h.mode == Mode::Online);
    if online && !state.uncertain_skips.is_empty() && state.reenqueue_timer.is_none() {
        let handle = myself.send_after(REENQUEUE_AFTER, || SchedulerMsg::Reenqueue);
        state.reenqueue_timer = Some(AbortOnDrop::from(handle));
    }
    // Health changes alone would leave held ticks unlooked at while the
    // peers stay the same.
    if !state.held.is_empty() && state.held_timer.is_none() {
        let handle = myself.send_after(CHECK_HELD_EVERY, || SchedulerMsg::CheckHeld);
        state.held_timer = Some(AbortOnDrop::from(handle));
    }
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
    // A tick held by queue_one may be freed by a run ending on another
    // daemon, which sends no message here: look again every second.
    let cap = if state.args.cluster.is_some() && state.timetable.has_queued() {
        QUEUED_RECHECK
    } else {
        MAX_SLEEP
    };
    let delay = (next - Utc::now()).to_std().unwrap_or_default().min(cap);
    let handle = myself.send_after(delay, || SchedulerMsg::Wake);
    // Replacing the old timer aborts it.
    state.timer = Some((next, AbortOnDrop::from(handle)));
}

async fn execute(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    actions: Vec<Action>,
) {
    let mut fires = Vec::new();
    let mut skips = Vec::new();
    for action in actions {
        match action {
            Action::Fire {
                job,
                scheduled_at,
                trigger,
            } => fires.push((job, scheduled_at, trigger)),
            Action::Skip {
                job_id,
                reason,
                first,
                last,
                count,
            } => {
                let skip = SkippedTicks {
                    job_id,
                    reason,
                    first,
                    last,
                    count,
                    recorded_at: Utc::now(),
                };
                if owns(state, &skip.job_id) {
                    skips.push(skip);
                } else if let Some(peer) = left_to(state, &skip.job_id) {
                    let ticks = state
                        .timetable
                        .job(&skip.job_id)
                        .map(|job| skipped_ticks(&job.schedule, first, last, MAX_GUARDED_SKIP))
                        .unwrap_or_else(|| vec![first]);
                    note_held(state, peer, &skip.job_id, &ticks);
                } else if lease_ran_out(state) {
                    state.uncertain_skips.push(skip);
                }
            }
            Action::Handled { ref job_id, .. } if !owns(state, job_id) => {}
            Action::Handled { job_id, at } => {
                state.args.store.set_last_tick(job_id, at);
            }
        }
    }
    let online = state.args.cluster.is_some()
        && state
            .health
            .as_ref()
            .is_some_and(|h| h.mode == Mode::Online);
    if online {
        skips = claim_skips(state, skips).await;
    } else if let Some(before) = uncertain_before(state) {
        // Ticks a peer may have claimed (at their time: a tick held by
        // `queue_one` and fired late counts by its own instant): claimed
        // once Redis is back (run then, or left to the peer that ran
        // them). The rest run offline.
        let (uncertain, sure): (Vec<_>, Vec<_>) = skips.into_iter().partition(|s| s.first < before);
        state.uncertain_skips.extend(uncertain);
        skips = sure;
        let (uncertain, sure): (Vec<_>, Vec<_>) =
            fires.into_iter().partition(|(_, at, _)| *at < before);
        fires = sure;
        let records = queued_runs(owned_fires(state, uncertain));
        if !records.is_empty() {
            tracing::info!(
                runs = records.len(),
                "offline, ticks a peer may have claimed: runs kept to claim once Redis is back"
            );
            keep_unconfirmed(myself, state, records, true);
        }
    }
    for skip in skips {
        record_skip(state, skip);
    }
    if !online {
        for (job, scheduled_at, trigger) in claim_offline(state, fires) {
            let run_id = RunId::for_tick(&job.id, scheduled_at);
            start_run(myself, state, job, run_id, scheduled_at, trigger);
        }
        return;
    }
    let holding = state.health.as_ref().is_some_and(|h| !h.stale.is_empty());
    if state.returning.is_some() || holding {
        fires = owned_fires(state, fires);
    }
    // Online: one script per tick claims it and, if the claim is (or
    // already was) this daemon's, writes the PENDING record and queues the
    // run, all at once; one pipeline for all ticks due. Claim and enqueue
    // in one step: a daemon killed between the two would otherwise hold a
    // claim no run ever follows, and the tick would be lost.
    let records = queued_runs(fires);
    enqueue(myself, state, records, false).await;
}

/// Logs, counts and stores a skipped-tick entry.
fn record_skip(state: &SchedulerState, skip: SkippedTicks) {
    tracing::info!(job = %skip.job_id, reason = skip.reason.as_str(), first = %skip.first, last = %skip.last, count = skip.count, "ticks skipped");
    telemetry::ticks_skipped(
        &skip.job_id,
        skip.reason,
        skip.count,
        state.skips_after_outage,
    );
    state.args.store.put_skipped(skip);
}

/// Online, a tick is decided once for every daemon: by the claim of its
/// tick key. A skip, like a run, first claims each of its ticks (marked
/// `{daemon}:skipped`), and only the ticks this daemon won are recorded as
/// skipped: a tick another daemon claimed ran there (or was skipped
/// there, and recorded by it). Without this a daemon that lost a tick's
/// claim would count the winner's run of that very tick as an overlap.
/// Returns the entries to record, split where ticks were lost. Ticks past
/// [`MAX_GUARDED_SKIP`] in one entry are recorded unclaimed. Entries whose
/// claims got no answer are kept (`uncertain_skips`) and claimed again
/// once Redis answers.
async fn claim_skips(state: &mut SchedulerState, skips: Vec<SkippedTicks>) -> Vec<SkippedTicks> {
    let Some(cluster) = state.args.cluster.clone() else {
        return skips;
    };
    if skips.is_empty() {
        return skips;
    }
    if state.restoring.is_some() {
        // Redis lost its data: a peer's claims from before are gone until
        // it writes them back. Claimed once every live daemon has.
        state.uncertain_skips.extend(skips);
        return Vec::new();
    }
    let mut ticks: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut spans = Vec::with_capacity(skips.len());
    for skip in &skips {
        let of_skip = state
            .timetable
            .job(&skip.job_id)
            .map(|job| skipped_ticks(&job.schedule, skip.first, skip.last, MAX_GUARDED_SKIP))
            .unwrap_or_else(|| vec![skip.first]);
        let start = ticks.len();
        ticks.extend(of_skip.into_iter().map(|t| (skip.job_id.clone(), t)));
        spans.push(start..ticks.len());
    }
    let mark = skip_mark(&cluster.daemon_id);
    let started = tokio::time::Instant::now();
    // Claimed and recorded in one step per entry: the store's write of
    // the entries below repeats Redis's (same ids, added once) and keeps
    // them in memory.
    let per_skip: Vec<Vec<DateTime<Utc>>> = spans
        .iter()
        .map(|span| ticks[span.clone()].iter().map(|(_, t)| *t).collect())
        .collect();
    let calls: Vec<(&SkippedTicks, &[DateTime<Utc>])> = skips
        .iter()
        .zip(&per_skip)
        .map(|(skip, t)| (skip, t.as_slice()))
        .collect();
    let claimed = cluster
        .redis
        .claim_and_skip(&calls, &mark, state.epoch.as_deref())
        .await;
    telemetry::redis_round_trip("claim_skips", started.elapsed(), claimed.is_ok());
    let won = match claimed {
        Ok(won) => {
            let won = won.concat();
            for ((job_id, tick), _) in ticks.iter().zip(&won).filter(|(_, w)| **w) {
                cluster.won.push(job_id, *tick, &mark);
            }
            won
        }
        Err(BackendError::EpochChanged) => {
            tracing::info!(
                skips = skips.len(),
                "Redis lost its data since the last heartbeat: claiming skipped ticks once every live daemon wrote back what it knew"
            );
            state.uncertain_skips.extend(skips);
            return Vec::new();
        }
        Err(e) => {
            // A peer may have claimed (and run) these ticks meanwhile:
            // recorded only once claimed, when Redis answers again.
            tracing::warn!(error = %e, skips = skips.len(), "cannot claim skipped ticks; claiming them again once Redis answers");
            state.uncertain_skips.extend(skips);
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (skip, span) in skips.into_iter().zip(spans) {
        let won = &won[span.clone()];
        if won.iter().all(|w| *w) {
            out.push(skip);
            continue;
        }
        tracing::debug!(job = %skip.job_id, lost = won.iter().filter(|w| !**w).count(),
            "skipped ticks claimed by another daemon (run or skipped there)");
        let listed: Vec<DateTime<Utc>> = ticks[span].iter().map(|(_, t)| *t).collect();
        for (first, last, count) in claimed_stretches(&listed, won) {
            out.push(SkippedTicks {
                first,
                last,
                count,
                ..skip.clone()
            });
        }
        // Past the ticks claimed one by one: recorded unclaimed.
        let rest = skip.count.saturating_sub(listed.len() as u64);
        if let (true, Some(after)) = (rest > 0, listed.last())
            && let Some(first) = state
                .timetable
                .job(&skip.job_id)
                .and_then(|j| j.schedule.next_after(*after))
        {
            out.push(SkippedTicks {
                first,
                count: rest,
                ..skip
            });
        }
    }
    out
}

/// The first records of fires bound for the shared queue.
fn queued_runs(fires: Vec<Fire>) -> Vec<ExecutionRecord> {
    fires
        .into_iter()
        .map(|(job, scheduled_at, trigger)| {
            let mut record = new_run(
                &job,
                RunId::for_tick(&job.id, scheduled_at),
                scheduled_at,
                trigger,
            );
            record.queued = true;
            record
        })
        .collect()
}

/// The claim value of a tick this daemon decided to skip.
pub fn skip_mark(daemon_id: &str) -> String {
    format!("{daemon_id}:skipped")
}

/// Puts runs on the shared queue. Without an answer from Redis the runs
/// may or may not be queued: they are kept and sent again (the enqueue is
/// idempotent) until Redis answers, once it is reachable again. `again`:
/// these were kept from an earlier attempt (and no longer counted here).
async fn enqueue(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    records: Vec<ExecutionRecord>,
    again: bool,
) {
    let Some(cluster) = state.args.cluster.clone() else {
        return;
    };
    if records.is_empty() {
        return;
    }
    let online = state
        .health
        .as_ref()
        .is_some_and(|h| h.mode == Mode::Online);
    if !online || state.restoring.is_some() {
        // Sent again once Redis is back; after it lost its data, once every
        // live daemon wrote back the claims it knew of.
        keep_unconfirmed(myself, state, records, !again);
        return;
    }
    let started = tokio::time::Instant::now();
    let enqueued = cluster
        .redis
        .enqueue(&records, &cluster.daemon_id, state.epoch.as_deref())
        .await;
    let queued_mark = format!("{}:queued", cluster.daemon_id);
    telemetry::redis_round_trip("enqueue", started.elapsed(), enqueued.is_ok());
    match enqueued {
        Ok(queued) => {
            for (record, queued) in records.into_iter().zip(queued) {
                if queued {
                    cluster
                        .won
                        .push(&record.job_id, record.scheduled_at, &queued_mark);
                    // The script wrote it to Redis; memory learns of it.
                    state.args.store.cache_record(record);
                } else {
                    // Another daemon holds the tick and runs it.
                    tracing::debug!(run = %record.run_id, "tick claimed by another daemon");
                    if !again {
                        state.timetable.not_started(&record.job_id);
                    }
                }
            }
        }
        Err(BackendError::EpochChanged) => {
            tracing::info!(
                runs = records.len(),
                "Redis lost its data since the last heartbeat: enqueueing once every live daemon wrote back what it knew"
            );
            keep_unconfirmed(myself, state, records, !again);
        }
        Err(e) => {
            tracing::warn!(error = %e, runs = records.len(), "enqueue not confirmed; sending it again");
            keep_unconfirmed(myself, state, records, !again);
        }
    }
}

/// Keeps runs whose enqueue is unconfirmed. `newly`: they were just
/// fired, so they stop counting as in flight here: during a long outage an
/// unconfirmed run must not hold back (overlap `skip`) the ticks this
/// daemon fires offline. Once queued, Redis's in-flight set counts them.
fn keep_unconfirmed(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    records: Vec<ExecutionRecord>,
    newly: bool,
) {
    if newly {
        for r in &records {
            state.timetable.not_started(&r.job_id);
        }
    }
    state.unconfirmed.extend(records);
    if state.unconfirmed.len() > MAX_UNCONFIRMED {
        let over = state.unconfirmed.len() - MAX_UNCONFIRMED;
        for lost in state.unconfirmed.drain(..over) {
            tracing::error!(run = %lost.run_id, "gave up confirming the enqueue of this run (too many waiting); it may not run");
        }
    }
    if state.reenqueue_timer.is_none() {
        let handle = myself.send_after(REENQUEUE_AFTER, || SchedulerMsg::Reenqueue);
        state.reenqueue_timer = Some(AbortOnDrop::from(handle));
    }
}

/// Creates a run's PENDING record and writes it (first: a run the pool
/// never took is still found, and re-queued, from its record).
fn pending_record(
    state: &SchedulerState,
    job: &JobSpec,
    run_id: RunId,
    scheduled_at: DateTime<Utc>,
    trigger: Trigger,
) -> ExecutionRecord {
    let record = new_run(job, run_id, scheduled_at, trigger);
    state.args.store.put_record(record.clone());
    record
}

/// A run's first record, PENDING.
fn new_run(
    job: &JobSpec,
    run_id: RunId,
    scheduled_at: DateTime<Utc>,
    trigger: Trigger,
) -> ExecutionRecord {
    ExecutionRecord::pending(
        run_id,
        &job.id,
        trigger,
        scheduled_at,
        job.retry.max_attempts,
        Utc::now(),
    )
}

fn start_run(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    job: Arc<JobSpec>,
    run_id: RunId,
    scheduled_at: DateTime<Utc>,
    trigger: Trigger,
) {
    let record = pending_record(state, &job, run_id, scheduled_at, trigger);
    submit(
        myself,
        state,
        RunRequest {
            record,
            job,
            entry_id: None,
        },
    );
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
